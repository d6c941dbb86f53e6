-- top_spenders: the users and apps of a scope that spent most over [from_day, to_day), at most
-- `limit` rows — "who spends".
-- params: {scope}, from_day, to_day, limit
-- row: SpenderRow
SELECT
    org_id,
    user_id,
    app_id,
    n_requests AS requests,
    n_tokens AS total_tokens,
    n_cost AS cost_usd
FROM
(
    SELECT
        org_id,
        user_id,
        app_id,
        sum(requests) AS n_requests,
        sum(total_input_tokens) + sum(total_output_tokens) AS n_tokens,
        sum(total_cost_nusd) AS n_cost
    FROM usage_daily
    WHERE {scope} AND day >= toDate(?) AND day < toDate(?)
    GROUP BY org_id, user_id, app_id
)
ORDER BY cost_usd DESC, requests DESC, org_id, user_id, app_id
LIMIT ?
