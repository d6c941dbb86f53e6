-- 0002 usage_hourly and usage_daily: the rollups every dashboard chart, alert and projection
-- reads, fed by materialized views on usage_events (each view reads the inserted block of raw
-- rows, so both rollups are exact and independent of each other).
--
-- Engine: SummingMergeTree. Plain counters and sums are summed when parts merge; the two
-- AggregateFunction columns (latency and time-to-first-token quantile states) are merged by
-- their function, as AggregatingMergeTree would. Parts merge whenever the server likes, so
-- READERS ALWAYS RE-AGGREGATE: sum(...) GROUP BY, quantilesMerge(0.5, 0.9, 0.95, 0.99)(...).
-- Never GROUP BY a Decimal column on 18.16 (it crashes the server); sum it.
--
-- Key (the ORDER BY is the summing key): bucket, org, user, app, provider, model, task type.
--   org_id, bucket first for the same reason as usage_events: scoped time ranges.
--   model = model_served, or model_requested when the provider named none (errors before a
--   response), so a failed call still lands on the model it was meant for.
-- Cardinality trade-off, per dimension (rows per bucket = product of distinct values seen):
--   org_id       tenants: tens to thousands. Needed for every scoped query. Cheap.
--   provider     a handful. Cheap.
--   model        tens per org. Cheap; the main axis of cost analysis.
--   task_type    a handful (chat, embedding, …, or app-defined labels bounded by the edge).
--   app_id       tens per org. Needed for app budgets and per-app charts.
--   user_id      the expensive one: up to thousands per org, and most users use few models.
--                Kept because per-user budgets and "who spends" are core questions; the
--                product with the others stays far below the raw row count (a user making
--                100 calls an hour to one model is 1 hourly row instead of 100). Should a
--                tenant ever have so many users that usage_hourly approaches the raw table,
--                the fix is a second hourly table without user_id, not dropping it here.
--   Not keyed: key_id (an app's keys are rotated, not analysed), endpoint (implied by
--   task_type), edge_region, status_code, tags (unbounded values) — read those from the raw
--   table, whose ORDER BY serves org-scoped time ranges.
-- The daily table has the same key at day grain; it exists so a year of daily charts reads
-- 365 buckets, not 8760.
--
-- Metrics (identical in both tables):
--   requests, errors (error_class != 'none') and one counter per error class, streamed
--   requests, requests whose tokens were estimated (usage_source != 'provider'), unpriced
--   requests (cost_source = 'unpriced': cost unknown, never $0), the five token classes,
--   cost (Decimal(38,9) so sums cannot overflow), request/response bytes, latency sum
--   (count = requests), upstream time sum, ttft sum and count (only calls that got a first
--   byte), and quantile states for latency and ttft (ClickHouse's reservoir `quantiles`:
--   exact up to 8192 values per state, a uniform sample beyond that).
-- Rollup column names never reuse a raw column name (18.16 resolves an aggregate's alias
-- before the column of the same name): totals are total_*.
-- Backfill after a change: INSERT INTO usage_daily SELECT … FROM usage_events WHERE ts in a
-- bounded range (never POPULATE, which 18.16 lacks for TO views).

CREATE TABLE IF NOT EXISTS usage_hourly
(
    org_id                    String,
    hour                      DateTime('UTC'),
    user_id                   String,
    app_id                    LowCardinality(String),
    provider                  LowCardinality(String),
    model                     LowCardinality(String),
    task_type                 LowCardinality(String),

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
    latency_quantiles         AggregateFunction(quantiles(0.5, 0.9, 0.95, 0.99), Float64),
    ttft_quantiles            AggregateFunction(quantiles(0.5, 0.9, 0.95, 0.99), Float64)
)
ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (org_id, hour, provider, model, app_id, task_type, user_id);

CREATE TABLE IF NOT EXISTS usage_daily
(
    org_id                    String,
    day                       Date,
    user_id                   String,
    app_id                    LowCardinality(String),
    provider                  LowCardinality(String),
    model                     LowCardinality(String),
    task_type                 LowCardinality(String),

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
    latency_quantiles         AggregateFunction(quantiles(0.5, 0.9, 0.95, 0.99), Float64),
    ttft_quantiles            AggregateFunction(quantiles(0.5, 0.9, 0.95, 0.99), Float64)
)
ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (org_id, day, provider, model, app_id, task_type, user_id);

-- The two views differ only in the bucket expression. toLowCardinality(): 18.16 refuses to
-- push a String into a LowCardinality column, and if() of two LowCardinality columns is a
-- String there.
CREATE MATERIALIZED VIEW IF NOT EXISTS usage_hourly_mv TO usage_hourly AS
SELECT
    org_id,
    toStartOfHour(ts) AS hour,
    user_id,
    app_id,
    provider,
    toLowCardinality(if(model_served = '', toString(model_requested), toString(model_served))) AS model,
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

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_daily_mv TO usage_daily AS
SELECT
    org_id,
    toDate(ts) AS day,
    user_id,
    app_id,
    provider,
    toLowCardinality(if(model_served = '', toString(model_requested), toString(model_served))) AS model,
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
