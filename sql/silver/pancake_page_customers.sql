-- target: silver.pancake_page_customers
-- unique_key: id
-- order_by: inserted_at
-- mode: merge
SELECT id, page_id, customer_id, psid, name, gender, phone_numbers[1] AS phone_number,
  to_timestamp(inserted_at) AS inserted_at, _ingest_order
FROM raw.pancake_page_customers
