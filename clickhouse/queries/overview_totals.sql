-- overview_totals: one row of totals for a scope over [from_day, to_day) — the dashboard's
-- headline numbers (spend, calls, error rate, tokens, p95 latency, unpriced calls).
-- daily: org_daily, org_model_daily, usage_daily
-- params: {scope}, from_day, to_day
-- row: OverviewTotalsRow
SELECT
    n_requests AS requests,
    n_errors AS errors,
    n_unpriced AS unpriced_requests,
    n_streamed AS streamed_requests,
    n_input AS input_tokens,
    n_output AS output_tokens,
    n_cached AS cached_input_tokens,
    n_cache_write AS cache_write_tokens,
    n_reasoning AS reasoning_tokens,
    n_cost AS cost_usd,
    n_users AS active_users,
    n_apps AS active_apps,
    if(n_requests = 0, 0, toFloat64(n_latency) / toFloat64(n_requests)) AS avg_latency_ms,
    if(n_requests = 0, [0., 0., 0., 0.], lq) AS latency_quantiles_ms
FROM
(
    SELECT
        sum(requests) AS n_requests,
        sum(errors) AS n_errors,
        sum(unpriced_requests) AS n_unpriced,
        sum(streamed_requests) AS n_streamed,
        sum(total_input_tokens) AS n_input,
        sum(total_output_tokens) AS n_output,
        sum(total_cached_input_tokens) AS n_cached,
        sum(total_cache_write_tokens) AS n_cache_write,
        sum(total_reasoning_tokens) AS n_reasoning,
        sum(total_cost_nusd) AS n_cost,
        toUInt64({active_users}) AS n_users,
        toUInt64({active_apps}) AS n_apps,
        sum(total_latency_ms) AS n_latency,
        arrayMap(x -> toFloat64(x), {latency_quantiles}) AS lq
    FROM {daily}
    WHERE {scope} AND day >= toDate(?) AND day < toDate(?)
)
