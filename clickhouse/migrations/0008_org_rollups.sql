-- 0008 org_model_daily and org_daily: the org-grain daily rollups behind the dashboard's
-- headline numbers, daily series, providers and models tabs for admins and org admins.
--
-- Why: usage_daily keeps user, app and task type, so one org-day is hundreds to thousands of
-- rows, and its latency states hold every call (reservoir quantiles are exact up to 8192 values
-- per state, and a user-grain state rarely has more). Merging them for a month of one busy org
-- costs about as much as reading the raw rows. These two tables drop the user/app/task grain:
--   org_model_daily  key (org_id, day, provider, model)   ~ tens of rows per org-day
--   org_daily        key (org_id, day)                    one row per org-day
-- Readers pick the coarsest table that can answer (tollgate_clickhouse::queries::DailyRollup):
-- org_daily when the query is org- or all-orgs-scoped and not narrowed by provider or model,
-- org_model_daily when it is narrowed or grouped by provider/model, usage_daily when the scope
-- is one user or one app.
--
-- Cardinality: org_model_daily = orgs x days x (provider, model) pairs in use; org_daily = orgs
-- x days. Neither grows with call volume or with the number of users.
--
-- Latency and time to first token are t-digest states (quantilesTDigest): a state has at most
-- a few hundred centroids however many calls it summarises, so merging a month of an org is a
-- few hundred small states; quantiles are approximate (typically within 1% of the exact value
-- around the median, a little more in the extreme tail; tested in clickhouse/tests/it). The
-- reservoir states of usage_daily stay for per-user and per-app views.
-- users_state / apps_state are exact distinct sets (uniqExact) of the org-day's user and app
-- ids, so "active users" over any range is exact.
--
-- Engine and readers: as 0002 — SummingMergeTree sums the counters and merges the
-- AggregateFunction columns; readers always re-aggregate (sum, quantilesTDigestMerge,
-- uniqExactMerge). index_granularity 256: a table this small is read for one org at a time,
-- and a coarse granule would make every org read every other org's states.
--
-- Backfill (a database that had usage before this migration): with ingestion paused,
--   INSERT INTO org_model_daily SELECT <the org_model_daily_mv query> FROM usage_events
--   INSERT INTO org_daily SELECT <the org_daily_mv query> FROM usage_events
-- (docs/OPERATIONS.md, "Upgrading"). A fresh database needs nothing.

CREATE TABLE IF NOT EXISTS org_model_daily
(
    org_id                    String,
    day                       Date,
    provider                  LowCardinality(String),
    model                     LowCardinality(String),

    requests                  UInt64,
    errors                    UInt64,
    errors_client             UInt64,
    errors_rate_limited       UInt64,
    errors_upstream_5xx       UInt64,
    errors_timeout            UInt64,
    errors_aborted            UInt64,
    errors_budget_blocked     UInt64,
    errors_network            UInt64,
    errors_internal           UInt64,
    streamed_requests         UInt64,
    estimated_usage_requests  UInt64,
    unpriced_requests         UInt64,

    total_input_tokens        UInt64,
    total_output_tokens       UInt64,
    total_cached_input_tokens UInt64,
    total_cache_write_tokens  UInt64,
    total_reasoning_tokens    UInt64,
    total_cost_nusd           Decimal(38, 9),
    total_request_bytes       UInt64,
    total_response_bytes      UInt64,

    total_latency_ms          UInt64,
    total_upstream_ms         UInt64,
    total_ttft_ms             UInt64,
    ttft_count                UInt64,
    latency_digest            AggregateFunction(quantilesTDigest(0.5, 0.9, 0.95, 0.99), Float32),
    ttft_digest               AggregateFunction(quantilesTDigest(0.5, 0.9, 0.95, 0.99), Float32),
    users_state               AggregateFunction(uniqExact, String),
    apps_state                AggregateFunction(uniqExact, String)
)
ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (org_id, day, provider, model)
SETTINGS index_granularity = 256;

CREATE TABLE IF NOT EXISTS org_daily
(
    org_id                    String,
    day                       Date,

    requests                  UInt64,
    errors                    UInt64,
    errors_client             UInt64,
    errors_rate_limited       UInt64,
    errors_upstream_5xx       UInt64,
    errors_timeout            UInt64,
    errors_aborted            UInt64,
    errors_budget_blocked     UInt64,
    errors_network            UInt64,
    errors_internal           UInt64,
    streamed_requests         UInt64,
    estimated_usage_requests  UInt64,
    unpriced_requests         UInt64,

    total_input_tokens        UInt64,
    total_output_tokens       UInt64,
    total_cached_input_tokens UInt64,
    total_cache_write_tokens  UInt64,
    total_reasoning_tokens    UInt64,
    total_cost_nusd           Decimal(38, 9),
    total_request_bytes       UInt64,
    total_response_bytes      UInt64,

    total_latency_ms          UInt64,
    total_upstream_ms         UInt64,
    total_ttft_ms             UInt64,
    ttft_count                UInt64,
    latency_digest            AggregateFunction(quantilesTDigest(0.5, 0.9, 0.95, 0.99), Float32),
    ttft_digest               AggregateFunction(quantilesTDigest(0.5, 0.9, 0.95, 0.99), Float32),
    users_state               AggregateFunction(uniqExact, String),
    apps_state                AggregateFunction(uniqExact, String)
)
ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (org_id, day)
SETTINGS index_granularity = 256;

-- The model expression is usage_daily_mv's (0002): a failed call lands on the model it asked for.
CREATE MATERIALIZED VIEW IF NOT EXISTS org_model_daily_mv TO org_model_daily AS
SELECT
    org_id,
    toDate(ts) AS day,
    provider,
    toLowCardinality(if(model_served = '', toString(model_requested), toString(model_served))) AS model,

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
    uniqExactState(user_id) AS users_state,
    uniqExactState(toString(app_id)) AS apps_state
FROM usage_events
GROUP BY org_id, day, provider, model;

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
    uniqExactState(user_id) AS users_state,
    uniqExactState(toString(app_id)) AS apps_state
FROM usage_events
GROUP BY org_id, day;
