-- target: silver.pancake_engagement_statistics
-- unique_key: page_id, window_start, name
-- mode: merge
-- description: Engagement series per page and day: `data` holds one count per hour.
SELECT page_id, _window_start AS window_start, name, data, _ingest_order
FROM raw.pancake_engagement_statistics
