-- target: silver.pancake_user_list
-- unique_key: page_id, id
-- mode: merge
SELECT page_id, id, name, email, role, _ingest_order
FROM raw.pancake_user_list
