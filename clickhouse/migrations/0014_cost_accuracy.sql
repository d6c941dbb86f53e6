-- 0014 cost accuracy (#20): what a call's cost depends on beyond its token classes.
--
-- Audio and image tokens (parts of input_tokens / output_tokens, as cached and reasoning tokens
-- are), the web and file searches a call made (each priced at the model's fee), and the
-- service tier the request asked for and the one the provider says it ran in (flex, priority
-- and batch have their own rates). The columns go before the collector's bookkeeping
-- (batch_id, inserted_at) so that a row's RowBinary stays "the record, then the batch"; the
-- collector's spool entries written before this migration (payload format 2) are re-encoded
-- with zero / empty values when read.
--
-- The rollups keep summing cost_usd: their numbers do not change shape, only get right.

-- unless-column: usage_events.audio_input_tokens
ALTER TABLE usage_events ADD COLUMN audio_input_tokens UInt32 DEFAULT 0 AFTER response_bytes;

-- unless-column: usage_events.image_input_tokens
ALTER TABLE usage_events ADD COLUMN image_input_tokens UInt32 DEFAULT 0 AFTER audio_input_tokens;

-- unless-column: usage_events.audio_output_tokens
ALTER TABLE usage_events ADD COLUMN audio_output_tokens UInt32 DEFAULT 0 AFTER image_input_tokens;

-- unless-column: usage_events.image_output_tokens
ALTER TABLE usage_events ADD COLUMN image_output_tokens UInt32 DEFAULT 0 AFTER audio_output_tokens;

-- unless-column: usage_events.web_search_calls
ALTER TABLE usage_events ADD COLUMN web_search_calls UInt32 DEFAULT 0 AFTER image_output_tokens;

-- unless-column: usage_events.file_search_calls
ALTER TABLE usage_events ADD COLUMN file_search_calls UInt32 DEFAULT 0 AFTER web_search_calls;

-- unless-column: usage_events.service_tier_requested
ALTER TABLE usage_events ADD COLUMN service_tier_requested LowCardinality(String) DEFAULT '' AFTER file_search_calls;

-- unless-column: usage_events.service_tier
ALTER TABLE usage_events ADD COLUMN service_tier LowCardinality(String) DEFAULT '' AFTER service_tier_requested;

-- On a cluster, usage_events_distributed takes the new columns by being re-created: 18.16
-- refuses ALTER ON CLUSTER of a Distributed table over replicated shards, and the table holds
-- no data of its own (the collector inserts through it synchronously).
-- cluster-only
DROP TABLE IF EXISTS usage_events_distributed;

-- cluster-only
CREATE TABLE IF NOT EXISTS usage_events_distributed AS usage_events
ENGINE = Distributed(${cluster}, ${database}, usage_events, cityHash64(org_id));

-- Prices set by an admin in the dashboard (`PUT /api/v1/prices`), over the price file built
-- into dashboard-api: one row per (provider, model, effective_from); a change is a new row with
-- a higher version, a removal a row with deleted = 1 (read with FINAL, as 0003's tables). The
-- price book the edge fetches is the built-in file with these entries added or replacing the
-- entry of the same key; its content hash is the records' pricing_version. `entry` is the
-- usage-core ModelPrice as JSON (rates, tiers, fees), so a new kind of rate needs no migration.
CREATE TABLE IF NOT EXISTS price_overrides
(
    provider       LowCardinality(String),
    model          String,
    effective_from Date,
    entry          String,
    created_by     String,
    updated_at     DateTime('UTC'),
    deleted        UInt8,
    version        UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (provider, model, effective_from);

-- Every reprice run (`POST /api/v1/admin/reprice`, `tollgate-jobs reprice`): what it covered,
-- with which price book, and what it changed. The audit trail of costs that moved.
CREATE TABLE IF NOT EXISTS reprice_runs
(
    run_id          UUID,
    started_at      DateTime('UTC'),
    finished_at     DateTime('UTC'),
    requested_by    String,
    from_ts         DateTime('UTC'),
    to_ts           DateTime('UTC'),
    provider        String,
    model           String,
    pricing_version LowCardinality(String),
    rows_seen       UInt64,
    rows_changed    UInt64,
    cost_before     Decimal(18, 9),
    cost_after      Decimal(18, 9)
)
ENGINE = MergeTree()
ORDER BY (started_at, run_id);

-- The whole entry of a price book version (tiers, modalities and fees included), beside the
-- 0003 columns that keep the common rates queryable. Written by dashboard-api for every
-- version it serves.
-- unless-column: model_prices.entry
ALTER TABLE model_prices ADD COLUMN entry String DEFAULT '';
