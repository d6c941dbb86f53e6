-- daily_overview_raw: daily_overview's answer computed from the raw table. For the benchmark
-- and the rollup tests only — the dashboard reads the rollup.
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
        toDate(ts) AS day,
        count() AS n_requests,
        countIf(error_class != 'none') AS n_errors,
        countIf(cost_source = 'unpriced') AS n_unpriced,
        sum(toUInt64(input_tokens)) AS n_input,
        sum(toUInt64(output_tokens)) AS n_output,
        sum(toUInt64(cached_input_tokens)) AS n_cached,
        sum(toUInt64(cache_write_tokens)) AS n_cache_write,
        sum(toUInt64(reasoning_tokens)) AS n_reasoning,
        sum(cost_nusd) AS n_cost,
        sum(toUInt64(latency_ms)) AS n_latency
    FROM usage_events
    WHERE {scope} AND ts >= toDateTime(toDate(?), 'UTC') AND ts < toDateTime(toDate(?), 'UTC')
    GROUP BY day
)
ORDER BY day
