-- target: silver.zoho_crm_deal_details
-- unique_key: deal_id
-- mode: merge
-- description: the detail request of each Zoho CRM deal (one per deal version); a deal whose detail answered 404 has detail_status 404 and no fields.
SELECT _parent_key AS deal_id, _parent_cursor AS deal_modified_time, "Description" AS description,
  "Contact_Name"['name'] AS contact_name, try_cast(_detail_status AS BIGINT) AS detail_status, _ingest_order
FROM raw.zoho_crm_deal_details
