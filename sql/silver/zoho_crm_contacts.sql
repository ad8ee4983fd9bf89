-- target: silver.zoho_crm_contacts
-- unique_key: id
-- order_by: modified_at
-- mode: merge
-- description: Zoho CRM contacts, one row per contact, latest version.
SELECT id, "First_Name" AS first_name, "Last_Name" AS last_name, "Email" AS email,
  to_timestamp("Created_Time") AS created_at, to_timestamp("Modified_Time") AS modified_at, _ingest_order
FROM raw.zoho_crm_contacts
