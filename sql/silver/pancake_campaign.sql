-- target: silver.pancake_campaign
-- unique_key: page_id, ad_id, date
-- mode: merge
-- note: campaign rows carry no date (APIS.md), so the day is the window they were pulled for
SELECT page_id, account_id, ad_id, adset_id, CAST(_window_start AS DATE) AS date, status, currency,
  try_cast(budget_remaining AS BIGINT) AS budget_remaining, try_cast(daily_budget AS BIGINT) AS daily_budget, _ingest_order
FROM raw.pancake_campaign
