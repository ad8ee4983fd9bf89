-- target: silver.pancake_tags
-- unique_key: page_id, id
-- mode: merge
SELECT page_id, try_cast(id AS BIGINT) AS id, text, color, lighten_color, _ingest_order
FROM raw.pancake_tags
