-- 0012 ai_model_performance: errors by whose doing they were (#25, item 4), as the dashboard's
-- /providers and /models answer them (`errors_by_cause`).
--
-- The view counted Tollgate's own budget refusals as the model's errors: `error_rate` was every
-- failed call over every call, so a model behind a busy hard budget looked unreliable. Now
-- `error_rate` is the provider's failures over the calls that reached it, and the failed calls
-- are split four ways (the same split everywhere):
--   errors_provider  5xx, rate limited (429), unreachable (network)
--   errors_client    another 4xx (the request was invalid), or the app went away (aborted)
--   errors_timeout   the provider did not answer in time
--   errors_gateway   Tollgate's doing: budget refusals (also `refused_by_gateway`) and its
--                    internal errors
-- The earlier columns stay, with their meaning (rate_limited, upstream_5xx, timeouts, aborted).
-- A view holds no data: it is dropped and created again.
DROP TABLE IF EXISTS ai_model_performance;

CREATE VIEW IF NOT EXISTS ai_model_performance AS
SELECT
    day,
    org_id,
    provider,
    model,
    n_requests AS requests,
    if(n_requests = n_refused, 0,
       toFloat64(n_errors - n_refused) / toFloat64(n_requests - n_refused)) AS error_rate,
    n_rate_limited AS rate_limited,
    n_upstream_5xx AS upstream_5xx,
    n_timeout AS timeouts,
    n_aborted AS aborted,
    if(n_requests = 0, 0, toFloat64(n_latency) / toFloat64(n_requests)) AS avg_latency_ms,
    lq[1] AS p50_latency_ms,
    lq[2] AS p90_latency_ms,
    lq[3] AS p95_latency_ms,
    lq[4] AS p99_latency_ms,
    n_ttft_count AS streamed_with_ttft,
    if(n_ttft_count = 0, 0, toFloat64(n_ttft) / toFloat64(n_ttft_count)) AS avg_ttft_ms,
    tq[1] AS p50_ttft_ms,
    tq[3] AS p95_ttft_ms,
    if(n_latency = 0, 0, toFloat64(n_output) * 1000 / toFloat64(n_latency)) AS output_tokens_per_second,
    n_refused AS refused_by_gateway,
    toUInt64(n_upstream_5xx + n_rate_limited + n_network) AS errors_provider,
    toUInt64(n_client + n_aborted) AS errors_client,
    n_timeout AS errors_timeout,
    toUInt64(n_refused + n_internal) AS errors_gateway
FROM
(
    SELECT
        day, org_id, provider, model,
        sum(requests) AS n_requests,
        sum(errors) AS n_errors,
        sum(errors_budget_blocked) AS n_refused,
        sum(errors_client) AS n_client,
        sum(errors_network) AS n_network,
        sum(errors_internal) AS n_internal,
        sum(errors_rate_limited) AS n_rate_limited,
        sum(errors_upstream_5xx) AS n_upstream_5xx,
        sum(errors_timeout) AS n_timeout,
        sum(errors_aborted) AS n_aborted,
        sum(total_latency_ms) AS n_latency,
        sum(total_ttft_ms) AS n_ttft,
        sum(ttft_count) AS n_ttft_count,
        sum(total_output_tokens) AS n_output,
        arrayMap(x -> toFloat64(x), quantilesMerge(0.5, 0.9, 0.95, 0.99)(latency_quantiles)) AS lq,
        arrayMap(x -> toFloat64(x), quantilesMerge(0.5, 0.9, 0.95, 0.99)(ttft_quantiles)) AS tq
    FROM usage_daily
    GROUP BY day, org_id, provider, model
);
