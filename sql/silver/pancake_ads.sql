-- target: silver.pancake_ads
-- unique_key: page_id, ad_id, date
-- mode: merge
SELECT page_id, ad_id, CAST(date AS DATE) AS date, name, status, currency, CAST(reach AS BIGINT) AS reach,
  CAST(impressions AS BIGINT) AS impressions, CAST(spend AS BIGINT) AS spend, _ingest_order
FROM raw.pancake_ads
