-- target: silver.pancake_new_customer_statistics
-- unique_key: page_id, hour
-- mode: merge
SELECT page_id, to_timestamp(hour) AS hour, try_cast(new_customer_count AS BIGINT) AS new_customer_count,
  try_cast(customer_inbox_count AS BIGINT) AS customer_inbox_count,
  try_cast(customer_comment_count AS BIGINT) AS customer_comment_count, _ingest_order
FROM raw.pancake_new_customer_statistics
