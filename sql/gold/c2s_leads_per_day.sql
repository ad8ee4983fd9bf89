-- target: gold.c2s_leads_per_day
-- mode: replace
-- description: Leads created per day (UTC) by current status and source.
SELECT CAST(created_at AS DATE) AS day, status, source_name, count(*) AS leads
FROM silver.c2s_leads
GROUP BY 1, 2, 3
