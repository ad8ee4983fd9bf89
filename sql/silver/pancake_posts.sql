-- target: silver.pancake_posts
-- unique_key: id
-- order_by: inserted_at
-- mode: merge
SELECT id, page_id, message, type, try_cast(comment_count AS BIGINT) AS comment_count,
  try_cast(reactions['like'] AS BIGINT) AS likes, try_cast(reactions['love'] AS BIGINT) AS loves,
  to_timestamp(inserted_at) AS inserted_at, _ingest_order
FROM raw.pancake_posts
