-- target: silver.pancake_conversation_customers
-- mode: replace
-- description: One row per (conversation, customer) of each conversation's latest version.
SELECT conversation_id, page_id, c['id'] AS customer_id, c['name'] AS customer_name, c['fb_id'] AS fb_id
FROM (SELECT id AS conversation_id, page_id, unnest(customers) AS c FROM silver.pancake_conversations)
