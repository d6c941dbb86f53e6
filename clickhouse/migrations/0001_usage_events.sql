-- 0001 usage_events: the raw table — one row per provider call attempt (UsageRecord v1).
--
-- Column names are UsageRecord's field names (usage-core/src/record.rs), in the same order,
-- plus the collector's bookkeeping (batch_id, inserted_at). Types follow CLICKHOUSE.md's
-- portable subset: UInt8 for bool, LowCardinality(String) for closed sets and small
-- dimensions, Decimal(18,9) USD whose raw value is the i64 nano-USD of `Nanos`, and two
-- parallel arrays for the tags because Map does not exist on 18.16.
--
-- ORDER BY (org_id, ts, event_id):
--   * org_id first: every dashboard query carries the caller's org as its scope predicate
--     (dashboard-api adds it from the token), so the primary index skips every other tenant's
--     granules; a big tenant never slows a small one down.
--   * ts second: within one org a time range is one contiguous key range, which is what the
--     daily/hourly charts, exports and backfills of the rollups read.
--   * event_id last: UUIDv7 sorts by time, so rows of the same second keep their real order
--     (the table stores ts to the second) and the order is total, which makes exports stable.
--   org_id is a plain String rather than LowCardinality: it leads the key, so it compresses to
--   almost nothing anyway, and 18.16's LowCardinality in sorting keys is experimental.
-- PARTITION BY toYYYYMM(ts): retention drops whole months (retention.rs), which is instant and
-- works on every version; queries bounded by time prune whole partitions.

CREATE TABLE IF NOT EXISTS usage_events
(
    -- identity
    event_id            UUID,
    schema_version      UInt16,
    -- time
    ts                  DateTime('UTC'),
    latency_ms          UInt32,
    ttft_ms             Nullable(UInt32),
    upstream_ms         UInt32,
    -- who
    org_id              String,
    user_id             String,
    app_id              LowCardinality(String),
    key_id              LowCardinality(String),
    tag_keys            Array(String),
    tag_values          Array(String),
    -- what
    provider            LowCardinality(String),
    model_requested     LowCardinality(String),
    model_served        LowCardinality(String),
    endpoint            LowCardinality(String),
    task_type           LowCardinality(String),
    stream              UInt8,
    edge_region         LowCardinality(String),
    -- outcome
    status_code         UInt16,
    error_class         LowCardinality(String),
    -- tokens (cached/cache-write are parts of input, reasoning is part of output)
    input_tokens        UInt32,
    output_tokens       UInt32,
    cached_input_tokens UInt32,
    cache_write_tokens  UInt32,
    reasoning_tokens    UInt32,
    usage_source        LowCardinality(String),
    -- money
    cost_nusd           Decimal(18, 9),
    cost_source         LowCardinality(String),
    pricing_version     LowCardinality(String),
    -- size
    request_bytes       UInt64,
    response_bytes      UInt64,
    -- collector bookkeeping: the batch these rows came in (exactly-once per batch, see
    -- ingest_batches) and when the collector wrote them.
    batch_id            String,
    inserted_at         DateTime('UTC')
)
ENGINE = MergeTree()
PARTITION BY toYYYYMM(ts)
ORDER BY (org_id, ts, event_id);

-- cluster-only
-- The table inserts and cross-shard reads go through on a cluster. Rows are sharded by org so
-- that one org's raw rows and their rollups live on one shard.
CREATE TABLE IF NOT EXISTS usage_events_distributed AS usage_events
ENGINE = Distributed(${cluster}, ${database}, usage_events, cityHash64(org_id));
