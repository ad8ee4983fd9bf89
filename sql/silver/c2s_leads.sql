-- target: silver.c2s_leads
-- unique_key: id
-- order_by: updated_at
-- mode: merge
-- description: Contact2Sale leads, one row per lead, latest version; times in UTC.
SELECT
  id,
  attributes['customer']['name'] AS customer_name,
  attributes['customer']['email'] AS customer_email,
  attributes['customer']['phone'] AS customer_phone,
  attributes['lead_status']['alias'] AS status,
  attributes['lead_status']['name'] AS status_name,
  CAST(attributes['lead_source']['id'] AS VARCHAR) AS source_id,
  attributes['lead_source']['name'] AS source_name,
  attributes['channel']['name'] AS channel,
  attributes['company']['name'] AS company,
  CAST(attributes['seller']['id'] AS VARCHAR) AS seller_id,
  attributes['seller']['name'] AS seller_name,
  attributes['product']['prop_ref'] AS product_ref,
  to_timestamp(attributes['created_at']) AS created_at,
  to_timestamp(attributes['updated_at']) AS updated_at,
  _landed_at,
  _ingest_order
FROM raw.c2s_leads
