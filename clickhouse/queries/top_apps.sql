-- top_apps: the apps that spent most over the UTC days [from_day, to_day), most first.
-- daily: usage_daily
-- params: {scope}, from_day, to_day, limit
-- row: TopRow
SELECT
    org_id,
    app_id AS id,
    n_requests AS requests,
    n_tokens AS total_tokens,
    n_cost AS cost_usd
FROM
(
    SELECT
        org_id,
        app_id,
        sum(requests) AS n_requests,
        sum(total_input_tokens) + sum(total_output_tokens) AS n_tokens,
        sum(total_cost_nusd) AS n_cost
    FROM {daily}
    WHERE {scope} AND day >= toDate(?) AND day < toDate(?)
    GROUP BY org_id, app_id
)
ORDER BY cost_usd DESC, requests DESC, org_id, id
LIMIT ?
