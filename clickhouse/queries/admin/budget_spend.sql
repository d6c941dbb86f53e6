-- budget_spend: what one budget scope spent over the UTC days [from_day, to_day), from the daily rollup.
-- params: {scope} (org_id = ?, org_id = ? AND user_id = ? or org_id = ? AND app_id = ?), from_day, to_day
-- row: SpendRow (dashboard-api/src/budgets.rs)
SELECT
    n_cost AS cost_usd,
    n_requests AS requests
FROM
(
    SELECT
        sum(total_cost_nusd) AS n_cost,
        sum(requests) AS n_requests
    FROM usage_daily
    WHERE {scope} AND day >= toDate(?) AND day < toDate(?)
)
