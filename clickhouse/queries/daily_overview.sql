-- daily_overview: per UTC day in [from_day, to_day), the totals of one scope — the dashboard's
-- main chart and the input of spend projections.
-- daily: org_daily, org_model_daily, usage_daily
-- params: {scope}, from_day, to_day
-- row: DailyOverviewRow
SELECT
    day,
    n_requests AS requests,
    n_errors AS errors,
    n_unpriced AS unpriced_requests,
    n_input AS input_tokens,
    n_output AS output_tokens,
    n_cached AS cached_input_tokens,
    n_cache_write AS cache_write_tokens,
    n_reasoning AS reasoning_tokens,
    n_cost AS cost_usd,
    n_latency AS total_latency_ms
FROM
(
    SELECT
        day,
        sum(requests) AS n_requests,
        sum(errors) AS n_errors,
        sum(unpriced_requests) AS n_unpriced,
        sum(total_input_tokens) AS n_input,
        sum(total_output_tokens) AS n_output,
        sum(total_cached_input_tokens) AS n_cached,
        sum(total_cache_write_tokens) AS n_cache_write,
        sum(total_reasoning_tokens) AS n_reasoning,
        sum(total_cost_nusd) AS n_cost,
        sum(total_latency_ms) AS n_latency
    FROM {daily}
    WHERE {scope} AND day >= toDate(?) AND day < toDate(?)
    GROUP BY day
)
ORDER BY day
