-- target: silver.pancake_user_statistics
-- unique_key: page_id, user_id, hour
-- mode: merge
-- partition_by: page_id
-- description: Hourly statistics per staff user; `hour` is Asia/Ho_Chi_Minh local time on the wire.
SELECT page_id, user_id, to_timestamp(concat(hour, '+07:00')) AS hour,
  try_cast(inbox_count AS BIGINT) AS inbox_count, try_cast(comment_count AS BIGINT) AS comment_count,
  try_cast(average_response_time AS BIGINT) AS average_response_time,
  try_cast(phone_number_count AS BIGINT) AS phone_number_count, _ingest_order
FROM raw.pancake_user_statistics
