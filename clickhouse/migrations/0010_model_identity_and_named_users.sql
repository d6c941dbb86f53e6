-- 0010 one model identity and named active users (#25, items 4 and 5).
--
-- Model: every rollup used to group a call under the model the provider reported serving it
-- (`model_served`), or the requested model when there was none — so a model's successful calls
-- (served `gpt-4o-2024-08-06`) and its failed ones (`gpt-4o`, nothing served) landed on two
-- rows, one with success rate 1.0 and one with 0.0. From this migration every rollup groups by
-- the model the app asked for (`model_requested`), whatever the outcome; the served variant
-- stays on every raw row (`usage_events.model_served`, the export, the analyst views).
--
-- Active users: `users_state` of the org rollups counted the empty user id (calls with no
-- user) as one more active user. From this migration it holds named users only; readers of
-- usage_daily/usage_hourly count `uniqExactIf(user_id, user_id != '')` the same way, and so does
-- the analyst view ai_usage_summary (re-created below).
--
-- ClickHouse 18.16 cannot change a view's query, so each view is dropped and created again
-- with the new query (views hold no data, their tables are untouched). A call inserted in the
-- moment between a view's DROP and CREATE misses that rollup; the integrity job's next pass
-- finds the bucket short of its raw rows and rebuilds it (with this query: it reads the latest
-- migration that creates the view). To avoid even that, stop the collectors while `migrate`
-- runs (docs/OPERATIONS.md, "Upgrading").
--
-- Rows written before this migration keep their old grouping (successful calls under the
-- served model; the empty user counted in org-grain active users). To regroup history,
-- rebuild the affected days from usage_events with ingestion paused (OPERATIONS, "Upgrading").

DROP TABLE IF EXISTS usage_hourly_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_hourly_mv TO usage_hourly AS
SELECT
    org_id,
    toStartOfHour(ts) AS hour,
    user_id,
    app_id,
    provider,
    model_requested AS model,
    task_type,

    count() AS requests,
    countIf(error_class != 'none') AS errors,
    countIf(error_class = 'client') AS errors_client,
    countIf(error_class = 'rate_limited') AS errors_rate_limited,
    countIf(error_class = 'upstream_5xx') AS errors_upstream_5xx,
    countIf(error_class = 'timeout') AS errors_timeout,
    countIf(error_class = 'aborted') AS errors_aborted,
    countIf(error_class = 'budget_blocked') AS errors_budget_blocked,
    countIf(error_class = 'network') AS errors_network,
    countIf(error_class = 'internal') AS errors_internal,
    countIf(stream = 1) AS streamed_requests,
    countIf(usage_source != 'provider') AS estimated_usage_requests,
    countIf(cost_source = 'unpriced') AS unpriced_requests,

    sum(toUInt64(input_tokens)) AS total_input_tokens,
    sum(toUInt64(output_tokens)) AS total_output_tokens,
    sum(toUInt64(cached_input_tokens)) AS total_cached_input_tokens,
    sum(toUInt64(cache_write_tokens)) AS total_cache_write_tokens,
    sum(toUInt64(reasoning_tokens)) AS total_reasoning_tokens,
    sum(cost_nusd) AS total_cost_nusd,
    sum(request_bytes) AS total_request_bytes,
    sum(response_bytes) AS total_response_bytes,

    sum(toUInt64(latency_ms)) AS total_latency_ms,
    sum(toUInt64(upstream_ms)) AS total_upstream_ms,
    sum(toUInt64(ifNull(ttft_ms, 0))) AS total_ttft_ms,
    countIf(isNotNull(ttft_ms)) AS ttft_count,
    quantilesState(0.5, 0.9, 0.95, 0.99)(toFloat64(latency_ms)) AS latency_quantiles,
    quantilesStateIf(0.5, 0.9, 0.95, 0.99)(toFloat64(ifNull(ttft_ms, 0)), isNotNull(ttft_ms)) AS ttft_quantiles
FROM usage_events
GROUP BY org_id, hour, user_id, app_id, provider, model, task_type;

DROP TABLE IF EXISTS usage_daily_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_daily_mv TO usage_daily AS
SELECT
    org_id,
    toDate(ts) AS day,
    user_id,
    app_id,
    provider,
    model_requested AS model,
    task_type,

    count() AS requests,
    countIf(error_class != 'none') AS errors,
    countIf(error_class = 'client') AS errors_client,
    countIf(error_class = 'rate_limited') AS errors_rate_limited,
    countIf(error_class = 'upstream_5xx') AS errors_upstream_5xx,
    countIf(error_class = 'timeout') AS errors_timeout,
    countIf(error_class = 'aborted') AS errors_aborted,
    countIf(error_class = 'budget_blocked') AS errors_budget_blocked,
    countIf(error_class = 'network') AS errors_network,
    countIf(error_class = 'internal') AS errors_internal,
    countIf(stream = 1) AS streamed_requests,
    countIf(usage_source != 'provider') AS estimated_usage_requests,
    countIf(cost_source = 'unpriced') AS unpriced_requests,

    sum(toUInt64(input_tokens)) AS total_input_tokens,
    sum(toUInt64(output_tokens)) AS total_output_tokens,
    sum(toUInt64(cached_input_tokens)) AS total_cached_input_tokens,
    sum(toUInt64(cache_write_tokens)) AS total_cache_write_tokens,
    sum(toUInt64(reasoning_tokens)) AS total_reasoning_tokens,
    sum(cost_nusd) AS total_cost_nusd,
    sum(request_bytes) AS total_request_bytes,
    sum(response_bytes) AS total_response_bytes,

    sum(toUInt64(latency_ms)) AS total_latency_ms,
    sum(toUInt64(upstream_ms)) AS total_upstream_ms,
    sum(toUInt64(ifNull(ttft_ms, 0))) AS total_ttft_ms,
    countIf(isNotNull(ttft_ms)) AS ttft_count,
    quantilesState(0.5, 0.9, 0.95, 0.99)(toFloat64(latency_ms)) AS latency_quantiles,
    quantilesStateIf(0.5, 0.9, 0.95, 0.99)(toFloat64(ifNull(ttft_ms, 0)), isNotNull(ttft_ms)) AS ttft_quantiles
FROM usage_events
GROUP BY org_id, day, user_id, app_id, provider, model, task_type;

DROP TABLE IF EXISTS org_model_daily_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS org_model_daily_mv TO org_model_daily AS
SELECT
    org_id,
    toDate(ts) AS day,
    provider,
    model_requested AS model,

    count() AS requests,
    countIf(error_class != 'none') AS errors,
    countIf(error_class = 'client') AS errors_client,
    countIf(error_class = 'rate_limited') AS errors_rate_limited,
    countIf(error_class = 'upstream_5xx') AS errors_upstream_5xx,
    countIf(error_class = 'timeout') AS errors_timeout,
    countIf(error_class = 'aborted') AS errors_aborted,
    countIf(error_class = 'budget_blocked') AS errors_budget_blocked,
    countIf(error_class = 'network') AS errors_network,
    countIf(error_class = 'internal') AS errors_internal,
    countIf(stream = 1) AS streamed_requests,
    countIf(usage_source != 'provider') AS estimated_usage_requests,
    countIf(cost_source = 'unpriced') AS unpriced_requests,

    sum(toUInt64(input_tokens)) AS total_input_tokens,
    sum(toUInt64(output_tokens)) AS total_output_tokens,
    sum(toUInt64(cached_input_tokens)) AS total_cached_input_tokens,
    sum(toUInt64(cache_write_tokens)) AS total_cache_write_tokens,
    sum(toUInt64(reasoning_tokens)) AS total_reasoning_tokens,
    sum(cost_nusd) AS total_cost_nusd,
    sum(request_bytes) AS total_request_bytes,
    sum(response_bytes) AS total_response_bytes,

    sum(toUInt64(latency_ms)) AS total_latency_ms,
    sum(toUInt64(upstream_ms)) AS total_upstream_ms,
    sum(toUInt64(ifNull(ttft_ms, 0))) AS total_ttft_ms,
    countIf(isNotNull(ttft_ms)) AS ttft_count,
    quantilesTDigestState(0.5, 0.9, 0.95, 0.99)(toFloat32(latency_ms)) AS latency_digest,
    quantilesTDigestStateIf(0.5, 0.9, 0.95, 0.99)(toFloat32(ifNull(ttft_ms, 0)), isNotNull(ttft_ms)) AS ttft_digest,
    uniqExactStateIf(user_id, user_id != '') AS users_state,
    uniqExactState(toString(app_id)) AS apps_state
FROM usage_events
GROUP BY org_id, day, provider, model;

DROP TABLE IF EXISTS org_daily_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS org_daily_mv TO org_daily AS
SELECT
    org_id,
    toDate(ts) AS day,

    count() AS requests,
    countIf(error_class != 'none') AS errors,
    countIf(error_class = 'client') AS errors_client,
    countIf(error_class = 'rate_limited') AS errors_rate_limited,
    countIf(error_class = 'upstream_5xx') AS errors_upstream_5xx,
    countIf(error_class = 'timeout') AS errors_timeout,
    countIf(error_class = 'aborted') AS errors_aborted,
    countIf(error_class = 'budget_blocked') AS errors_budget_blocked,
    countIf(error_class = 'network') AS errors_network,
    countIf(error_class = 'internal') AS errors_internal,
    countIf(stream = 1) AS streamed_requests,
    countIf(usage_source != 'provider') AS estimated_usage_requests,
    countIf(cost_source = 'unpriced') AS unpriced_requests,

    sum(toUInt64(input_tokens)) AS total_input_tokens,
    sum(toUInt64(output_tokens)) AS total_output_tokens,
    sum(toUInt64(cached_input_tokens)) AS total_cached_input_tokens,
    sum(toUInt64(cache_write_tokens)) AS total_cache_write_tokens,
    sum(toUInt64(reasoning_tokens)) AS total_reasoning_tokens,
    sum(cost_nusd) AS total_cost_nusd,
    sum(request_bytes) AS total_request_bytes,
    sum(response_bytes) AS total_response_bytes,

    sum(toUInt64(latency_ms)) AS total_latency_ms,
    sum(toUInt64(upstream_ms)) AS total_upstream_ms,
    sum(toUInt64(ifNull(ttft_ms, 0))) AS total_ttft_ms,
    countIf(isNotNull(ttft_ms)) AS ttft_count,
    quantilesTDigestState(0.5, 0.9, 0.95, 0.99)(toFloat32(latency_ms)) AS latency_digest,
    quantilesTDigestStateIf(0.5, 0.9, 0.95, 0.99)(toFloat32(ifNull(ttft_ms, 0)), isNotNull(ttft_ms)) AS ttft_digest,
    uniqExactStateIf(user_id, user_id != '') AS users_state,
    uniqExactState(toString(app_id)) AS apps_state
FROM usage_events
GROUP BY org_id, day;

DROP TABLE IF EXISTS ai_usage_summary;

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
        uniqExactIf(user_id, user_id != '') AS n_users,
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
