-- target: silver.zoho_crm_deals
-- unique_key: id
-- order_by: modified_at
-- mode: merge
-- description: Zoho CRM deals, one row per deal, latest version.
SELECT id, "Deal_Name" AS deal_name, "Stage" AS stage, try_cast("Amount" AS DOUBLE) AS amount,
  try_cast("Closing_Date" AS DATE) AS closing_date, to_timestamp("Created_Time") AS created_at,
  to_timestamp("Modified_Time") AS modified_at, _ingest_order
FROM raw.zoho_crm_deals
