-- hourly_timeseries: per UTC hour in [from_hour, to_hour), volume, errors, tokens and cost of a
-- scope — the "today" chart and the input of short-window alerts. Gaps (hours without calls)
-- are filled by the caller. `{hourly}`: usage_hourly, or for a window of partial hours the exact
-- union of queries.rs (`Filter::query_over`).
-- params: {scope}, from_hour, to_hour
-- row: HourlyRow
SELECT
    hour,
    n_requests AS requests,
    n_errors AS errors,
    n_rate_limited AS rate_limited,
    n_input AS input_tokens,
    n_output AS output_tokens,
    n_cost AS cost_usd
FROM
(
    SELECT
        hour,
        sum(requests) AS n_requests,
        sum(errors) AS n_errors,
        sum(errors_rate_limited) AS n_rate_limited,
        sum(total_input_tokens) AS n_input,
        sum(total_output_tokens) AS n_output,
        sum(total_cost_nusd) AS n_cost
    FROM {hourly}
    WHERE {scope} AND hour >= toDateTime(?, 'UTC') AND hour < toDateTime(?, 'UTC')
    GROUP BY hour
)
ORDER BY hour
