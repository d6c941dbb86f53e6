-- model_performance: per provider and model over [from_day, to_day) for a scope — calls,
-- the provider's errors by class (Tollgate's own budget refusals apart, as refused_by_gateway), latency and time-to-first-token (mean and percentiles 50/90/95/99), output
-- speed and cost.
-- daily: org_model_daily, usage_daily
-- params: {scope}, from_day, to_day
-- row: ModelPerformanceRow
SELECT
    provider,
    model,
    n_requests AS requests,
    toUInt64(n_errors - n_refused) AS errors,
    n_refused AS refused_by_gateway,
    n_client AS errors_client,
    n_rate_limited AS errors_rate_limited,
    n_upstream_5xx AS errors_upstream_5xx,
    n_timeout AS errors_timeout,
    n_aborted AS errors_aborted,
    n_streamed AS streamed_requests,
    n_input AS input_tokens,
    n_output AS output_tokens,
    n_reasoning AS reasoning_tokens,
    n_cost AS cost_usd,
    if(n_requests = 0, 0, toFloat64(n_latency) / toFloat64(n_requests)) AS avg_latency_ms,
    lq AS latency_quantiles_ms,
    n_ttft_count AS ttft_count,
    if(n_ttft_count = 0, 0, toFloat64(n_ttft) / toFloat64(n_ttft_count)) AS avg_ttft_ms,
    if(n_ttft_count = 0, [0., 0., 0., 0.], tq) AS ttft_quantiles_ms,
    if(n_latency = 0, 0, toFloat64(n_output) * 1000 / toFloat64(n_latency)) AS output_tokens_per_second,
    n_network AS errors_network,
    n_internal AS errors_internal
FROM
(
    SELECT
        provider,
        model,
        sum(requests) AS n_requests,
        sum(errors) AS n_errors,
        sum(errors_budget_blocked) AS n_refused,
        sum(errors_client) AS n_client,
        sum(errors_rate_limited) AS n_rate_limited,
        sum(errors_upstream_5xx) AS n_upstream_5xx,
        sum(errors_timeout) AS n_timeout,
        sum(errors_aborted) AS n_aborted,
        sum(errors_network) AS n_network,
        sum(errors_internal) AS n_internal,
        sum(streamed_requests) AS n_streamed,
        sum(total_input_tokens) AS n_input,
        sum(total_output_tokens) AS n_output,
        sum(total_reasoning_tokens) AS n_reasoning,
        sum(total_cost_nusd) AS n_cost,
        sum(total_latency_ms) AS n_latency,
        sum(total_ttft_ms) AS n_ttft,
        sum(ttft_count) AS n_ttft_count,
        arrayMap(x -> toFloat64(x), {latency_quantiles}) AS lq,
        arrayMap(x -> toFloat64(x), {ttft_quantiles}) AS tq
    FROM {daily}
    WHERE {scope} AND day >= toDate(?) AND day < toDate(?)
    GROUP BY provider, model
)
ORDER BY cost_usd DESC, requests DESC, provider, model
