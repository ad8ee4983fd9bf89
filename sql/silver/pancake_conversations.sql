-- target: silver.pancake_conversations
-- unique_key: id
-- order_by: updated_at
-- mode: merge
-- cluster_by: inserted_at
-- description: Pancake conversations, one row per conversation, latest version. Pancake's
--   zone-less times are UTC for this simulator/page setting.
SELECT
  id,
  page_id,
  type,
  snippet,
  try_cast(message_count AS BIGINT) AS message_count,
  seen,
  assignee_ids[1] AS assignee_id,
  customers,
  tags,
  to_timestamp(inserted_at) AS inserted_at,
  to_timestamp(updated_at) AS updated_at,
  _landed_at,
  _ingest_order
FROM raw.pancake_conversations
