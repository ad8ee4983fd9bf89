-- target: silver.pancake_ads
-- unique_key: page_id, date, name
-- mode: merge
-- note: ads rows carry no id nor date (APIS.md), so the day is the window they were pulled for
SELECT page_id, CAST(_window_start AS DATE) AS date, name, status, currency,
  try_cast(reach AS BIGINT) AS reach, try_cast(impressions AS BIGINT) AS impressions,
  try_cast(spend AS BIGINT) AS spend, _ingest_order
FROM raw.pancake_ads
