-- window_stats: calls of one scope in the time range [from_ts, to_ts) from the raw table, for the
-- minute-window alert rules (error rate, p95 latency, unpriced requests). Calls the edge blocked
-- for budget reasons are not counted: they are decisions, not failures. Latency is of
-- successful calls only (a fast 429 would otherwise pull the percentile down).
-- params: {scope} (org_id = ?, then optional provider and model predicates), from_ts, to_ts
-- row: WindowStatsRow (jobs/src/evaluator/usage.rs)
SELECT
    n_requests AS requests,
    n_errors AS errors,
    n_unpriced AS unpriced_requests,
    n_ok AS ok_requests,
    if(n_ok = 0, 0., p95) AS latency_p95_ms
FROM
(
    SELECT
        countIf(error_class != 'budget_blocked') AS n_requests,
        countIf(error_class != 'none' AND error_class != 'budget_blocked') AS n_errors,
        countIf(cost_source = 'unpriced') AS n_unpriced,
        countIf(error_class = 'none') AS n_ok,
        toFloat64(quantileIf(0.95)(toFloat64(latency_ms), error_class = 'none')) AS p95
    FROM usage_events
    WHERE {scope} AND ts >= toDateTime(?, 'UTC') AND ts < toDateTime(?, 'UTC')
)
