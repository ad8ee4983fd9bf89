-- target: silver.pancake_new_customer_statistics
-- unique_key: page_id, hour
-- mode: merge
SELECT page_id, to_timestamp(hour) AS hour, CAST(new_customer_count AS BIGINT) AS new_customer_count,
  CAST(customer_inbox_count AS BIGINT) AS customer_inbox_count,
  CAST(customer_comment_count AS BIGINT) AS customer_comment_count, _ingest_order
FROM raw.pancake_new_customer_statistics
