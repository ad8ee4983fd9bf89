-- target: silver.zoho_desk_tickets
-- unique_key: id
-- order_by: modified_at
-- mode: merge
-- description: Zoho Desk tickets, one row per ticket, latest version.
SELECT id, "ticketNumber" AS ticket_number, subject, status, to_timestamp("createdTime") AS created_at,
  to_timestamp("modifiedTime") AS modified_at, _ingest_order
FROM raw.zoho_desk_tickets
