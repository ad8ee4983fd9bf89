-- target: silver.pancake_users
-- unique_key: page_id, user_id
-- mode: merge
SELECT page_id, user_id, user_name, email, _ingest_order
FROM raw.pancake_users
