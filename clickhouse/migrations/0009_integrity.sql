-- 0009 integrity: what the integrity job (tollgate_clickhouse::integrity, run on a schedule by
-- dashboard-api under the jobs lease) found and repaired, and the staging tables a repair
-- builds a rollup bucket in before swapping it in.
--
-- The job compares every rollup with usage_events per org and bucket over the recent hours,
-- and looks for event_ids stored twice (two collectors inserting the same re-posted record at
-- the same moment). One row per repair:
--   kind        'rollup'    a rollup bucket that differed from the raw rows, rebuilt from them
--               'duplicate' an hour of usage_events with event_ids stored twice, deduplicated
--   table_name  the rollup (or usage_events for duplicates)
--   bucket      start of the hour or day (UTC)
--   raw_* / rollup_*  requests and cost before the repair (for duplicates: rows and distinct ids)
--   outcome     'repaired' | 'still_different' (verification after the repair failed — a
--               concurrent insert raced it; the next run repairs it again)
-- Operators alert on rows here (or the dashboard's tollgate_integrity_* metrics).
CREATE TABLE IF NOT EXISTS integrity_repairs
(
    at              DateTime('UTC'),
    kind            String,
    table_name      String,
    org_id          String,
    bucket          DateTime('UTC'),
    raw_requests    UInt64,
    rollup_requests UInt64,
    raw_cost_nusd   Decimal(38, 9),
    rollup_cost_nusd Decimal(38, 9),
    outcome         String
)
ENGINE = MergeTree()
PARTITION BY toYYYYMM(at)
ORDER BY (at, table_name, org_id);

-- Staging for a bucket being rebuilt: the same columns as the rollup, in memory (a repair
-- fills, reads and empties it within one run; nothing here needs to survive a restart).
CREATE TABLE IF NOT EXISTS usage_hourly_repair AS usage_hourly ENGINE = Memory;
CREATE TABLE IF NOT EXISTS usage_daily_repair AS usage_daily ENGINE = Memory;
CREATE TABLE IF NOT EXISTS org_model_daily_repair AS org_model_daily ENGINE = Memory;
CREATE TABLE IF NOT EXISTS org_daily_repair AS org_daily ENGINE = Memory;
