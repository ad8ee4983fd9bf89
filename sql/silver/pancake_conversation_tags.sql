-- target: silver.pancake_conversation_tags
-- mode: replace
-- description: One row per (conversation, tag) of each conversation's latest version.
SELECT id AS conversation_id, page_id, try_cast(tag_id AS BIGINT) AS tag_id
FROM (SELECT id, page_id, unnest(tags) AS tag_id FROM silver.pancake_conversations)
