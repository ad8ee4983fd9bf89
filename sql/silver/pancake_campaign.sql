-- target: silver.pancake_campaign
-- unique_key: page_id, ad_id, date
-- mode: merge
SELECT page_id, account_id, ad_id, adset_id, CAST(date AS DATE) AS date, status, currency,
  CAST(budget_remaining AS BIGINT) AS budget_remaining, CAST(daily_budget AS BIGINT) AS daily_budget, _ingest_order
FROM raw.pancake_campaign
