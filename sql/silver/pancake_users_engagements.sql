-- target: silver.pancake_users_engagements
-- unique_key: page_id, window_start, user_id
-- mode: merge
SELECT page_id, _window_start AS window_start, user_id, name,
  try_cast(total_engagement AS BIGINT) AS total_engagement,
  try_cast(new_customer_replied_count AS BIGINT) AS new_customer_replied_count, _ingest_order
FROM raw.pancake_users_engagements
