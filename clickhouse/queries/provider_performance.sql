-- provider_performance: per provider over the UTC days [from_day, to_day): calls, the provider's
-- errors (Tollgate's own budget refusals counted apart, as refused_by_gateway), spend and
-- latency — the Providers tab and `GET /api/v1/providers`.
-- daily: org_model_daily, usage_daily
-- params: {scope}, from_day, to_day
-- row: ProviderPerformanceRow
SELECT
    provider,
    n_requests AS requests,
    toUInt64(n_errors - n_refused) AS errors,
    n_refused AS refused_by_gateway,
    n_rate_limited AS errors_rate_limited,
    n_unpriced AS unpriced_requests,
    n_input AS input_tokens,
    n_output AS output_tokens,
    n_cost AS cost_usd,
    if(n_requests = 0, 0, toFloat64(n_latency) / toFloat64(n_requests)) AS avg_latency_ms,
    lq AS latency_quantiles_ms,
    n_client AS errors_client,
    n_upstream_5xx AS errors_upstream_5xx,
    n_timeout AS errors_timeout,
    n_aborted AS errors_aborted,
    n_network AS errors_network,
    n_internal AS errors_internal
FROM
(
    SELECT
        provider,
        sum(requests) AS n_requests,
        sum(errors) AS n_errors,
        sum(errors_budget_blocked) AS n_refused,
        sum(errors_rate_limited) AS n_rate_limited,
        sum(errors_client) AS n_client,
        sum(errors_upstream_5xx) AS n_upstream_5xx,
        sum(errors_timeout) AS n_timeout,
        sum(errors_aborted) AS n_aborted,
        sum(errors_network) AS n_network,
        sum(errors_internal) AS n_internal,
        sum(unpriced_requests) AS n_unpriced,
        sum(total_input_tokens) AS n_input,
        sum(total_output_tokens) AS n_output,
        sum(total_cost_nusd) AS n_cost,
        sum(total_latency_ms) AS n_latency,
        arrayMap(x -> toFloat64(x), {latency_quantiles}) AS lq
    FROM {daily}
    WHERE {scope} AND day >= toDate(?) AND day < toDate(?)
    GROUP BY provider
)
ORDER BY cost_usd DESC, provider
