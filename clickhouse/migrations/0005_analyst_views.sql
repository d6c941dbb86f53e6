-- 0005 analyst views: the documented SQL surface for people (the read-only `analyst` user),
-- named as users of the system Tollgate replaces know them. They read the rollups, so they are
-- fast at any raw volume, and they already re-aggregate (sum / quantilesMerge), so an analyst
-- never sees half-merged SummingMergeTree rows.
--
-- Conventions: cost_usd is Decimal(38,9) USD; rates and averages are Float64 ratio-of-sums
-- (0 when there were no calls); latency percentiles are exact up to 8192 calls per rollup row
-- and sampled beyond (see 0002). Each view aggregates in an inner query under n_* names and
-- renames outside, because 18.16 substitutes an alias into an aggregate of the column with the
-- same name.

-- Per day, per org, user, app, provider, model and task type: volume, tokens, cost, errors.
CREATE VIEW IF NOT EXISTS ai_daily_usage AS
SELECT
    day,
    org_id,
    user_id,
    app_id,
    provider,
    model,
    task_type,
    n_requests AS requests,
    n_errors AS errors,
    if(n_requests = 0, 0, toFloat64(n_errors) / toFloat64(n_requests)) AS error_rate,
    n_streamed AS streamed_requests,
    n_unpriced AS unpriced_requests,
    n_input AS input_tokens,
    n_output AS output_tokens,
    n_cached AS cached_input_tokens,
    n_cache_write AS cache_write_tokens,
    n_reasoning AS reasoning_tokens,
    n_input + n_output AS total_tokens,
    n_cost AS cost_usd,
    if(n_requests = 0, 0, toFloat64(n_latency) / toFloat64(n_requests)) AS avg_latency_ms
FROM
(
    SELECT
        day, org_id, user_id, app_id, provider, model, task_type,
        sum(requests) AS n_requests,
        sum(errors) AS n_errors,
        sum(streamed_requests) AS n_streamed,
        sum(unpriced_requests) AS n_unpriced,
        sum(total_input_tokens) AS n_input,
        sum(total_output_tokens) AS n_output,
        sum(total_cached_input_tokens) AS n_cached,
        sum(total_cache_write_tokens) AS n_cache_write,
        sum(total_reasoning_tokens) AS n_reasoning,
        sum(total_cost_nusd) AS n_cost,
        sum(total_latency_ms) AS n_latency
    FROM usage_daily
    GROUP BY day, org_id, user_id, app_id, provider, model, task_type
);

-- Per calendar month (UTC), org, provider and model: the invoice view.
CREATE VIEW IF NOT EXISTS ai_usage_summary AS
SELECT
    month,
    org_id,
    provider,
    model,
    n_requests AS requests,
    n_errors AS errors,
    if(n_requests = 0, 0, toFloat64(n_errors) / toFloat64(n_requests)) AS error_rate,
    n_unpriced AS unpriced_requests,
    n_users AS active_users,
    n_apps AS active_apps,
    n_input AS input_tokens,
    n_output AS output_tokens,
    n_cached AS cached_input_tokens,
    n_cache_write AS cache_write_tokens,
    n_reasoning AS reasoning_tokens,
    n_cost AS cost_usd
FROM
(
    SELECT
        toStartOfMonth(day) AS month, org_id, provider, model,
        sum(requests) AS n_requests,
        sum(errors) AS n_errors,
        sum(unpriced_requests) AS n_unpriced,
        uniqExact(user_id) AS n_users,
        uniqExact(app_id) AS n_apps,
        sum(total_input_tokens) AS n_input,
        sum(total_output_tokens) AS n_output,
        sum(total_cached_input_tokens) AS n_cached,
        sum(total_cache_write_tokens) AS n_cache_write,
        sum(total_reasoning_tokens) AS n_reasoning,
        sum(total_cost_nusd) AS n_cost
    FROM usage_daily
    GROUP BY month, org_id, provider, model
);

-- Per day, org, provider and model: how the model behaved — errors by class, latency and
-- time-to-first-token percentiles, output speed.
CREATE VIEW IF NOT EXISTS ai_model_performance AS
SELECT
    day,
    org_id,
    provider,
    model,
    n_requests AS requests,
    if(n_requests = 0, 0, toFloat64(n_errors) / toFloat64(n_requests)) AS error_rate,
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
    if(n_latency = 0, 0, toFloat64(n_output) * 1000 / toFloat64(n_latency)) AS output_tokens_per_second
FROM
(
    SELECT
        day, org_id, provider, model,
        sum(requests) AS n_requests,
        sum(errors) AS n_errors,
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
