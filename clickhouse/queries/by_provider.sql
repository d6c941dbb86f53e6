-- by_provider: per provider over [from_day, to_day) for a scope — where the money goes.
-- daily: org_model_daily, usage_daily
-- params: {scope}, from_day, to_day
-- row: ProviderRow
SELECT
    provider,
    n_requests AS requests,
    n_errors AS errors,
    n_unpriced AS unpriced_requests,
    n_input AS input_tokens,
    n_output AS output_tokens,
    n_cost AS cost_usd
FROM
(
    SELECT
        provider,
        sum(requests) AS n_requests,
        sum(errors) AS n_errors,
        sum(unpriced_requests) AS n_unpriced,
        sum(total_input_tokens) AS n_input,
        sum(total_output_tokens) AS n_output,
        sum(total_cost_nusd) AS n_cost
    FROM {daily}
    WHERE {scope} AND day >= toDate(?) AND day < toDate(?)
    GROUP BY provider
)
ORDER BY cost_usd DESC, provider
