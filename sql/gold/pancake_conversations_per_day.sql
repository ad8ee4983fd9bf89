-- target: gold.pancake_conversations_per_day
-- mode: replace
-- description: Conversations started per page per day (UTC).
SELECT page_id, CAST(inserted_at AS DATE) AS day, count(*) AS conversations
FROM silver.pancake_conversations
GROUP BY 1, 2
