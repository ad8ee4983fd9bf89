-- target: push.retail_products
-- unique_key: erpId
-- order_by: updatedAt
-- mode: merge
-- description: what the retail portal's product batch API receives (seed 002), one row per ERP product, latest version; sent by `ingest push retail_portal.products`.
SELECT try_cast("erpId" AS BIGINT) AS "erpId", sku, name, try_cast(price AS DOUBLE) AS price,
  try_cast(stock AS BIGINT) AS stock, "updatedAt", _ingest_order
FROM raw.retail_portal_erp_products
