-- requires: 22.3
--
-- 0006 (modern servers only) column codecs and an event_id lookup index on the raw table.
--
-- Capability-gated: the runner applies this file only where `SELECT version()` is at least the
-- `requires:` version in the header (22.3 LTS has every statement below; 18.16 has none), and
-- leaves it pending elsewhere, so upgrading the server and re-running migrate applies it then.
-- A gated migration therefore only adds optional physical features (codecs, skip indexes, TTL,
-- row policies): no later migration may depend on it.
--
-- Codecs: ts is sorted within an org, so DoubleDelta shrinks it to almost nothing; the
-- millisecond and token counters are small integers (T64 drops the unused high bits); the tag
-- arrays are repetitive text. New parts use the codecs; old parts convert as they merge.
-- The bloom filter answers "find event X" (support, dispute of a charge) without a full scan;
-- it indexes new parts, and MATERIALIZE INDEX can backfill old ones off-hours.

ALTER TABLE usage_events MODIFY COLUMN ts DateTime('UTC') CODEC(DoubleDelta, ZSTD(1));

ALTER TABLE usage_events MODIFY COLUMN latency_ms UInt32 CODEC(T64, ZSTD(1));

ALTER TABLE usage_events MODIFY COLUMN upstream_ms UInt32 CODEC(T64, ZSTD(1));

ALTER TABLE usage_events MODIFY COLUMN input_tokens UInt32 CODEC(T64, ZSTD(1));

ALTER TABLE usage_events MODIFY COLUMN output_tokens UInt32 CODEC(T64, ZSTD(1));

ALTER TABLE usage_events MODIFY COLUMN tag_keys Array(String) CODEC(ZSTD(3));

ALTER TABLE usage_events MODIFY COLUMN tag_values Array(String) CODEC(ZSTD(3));

ALTER TABLE usage_events ADD INDEX IF NOT EXISTS idx_event_id event_id TYPE bloom_filter(0.001) GRANULARITY 4;
