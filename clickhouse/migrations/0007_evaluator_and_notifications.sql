-- 0007 the background jobs of dashboard-api: who runs them (job_leases), what the alert
-- notifications did (notification_deliveries) and how recorded cost compares with the
-- providers' own figures (cost_reconciliation). dashboard-api/src/evaluator/mod.rs explains
-- how they are used.

-- Which dashboard-api instance runs the background jobs (alert evaluation, credit polls,
-- reconciliation). One row per lease name and take-over or renewal; the newest version per name
-- is the lease. An instance takes the lease when it is free (expires_at in the past, by the
-- server clock) or already its own, writes a new version, waits a moment and reads back:
-- it holds the lease only if the newest version is its own. Not a strict mutex (see the
-- module docs for the race window); evaluation is idempotent per alert dedup_key, so a rare
-- overlap costs at most a duplicate notification.
CREATE TABLE IF NOT EXISTS job_leases
(
    name        String,
    holder      String,
    acquired_at DateTime('UTC'),
    expires_at  DateTime('UTC'),
    version     UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY name;

-- Every attempt to deliver an alert notification to a channel. delivery_id groups the attempts
-- of one notification to one channel; attempt counts from 1. event: 'alert.opened' |
-- 'alert.resolved' | 'alert.test'. channel: the channel kind and host only (webhook paths and
-- Slack hook URLs are secrets). status: 'delivered' | 'failed' (will retry) | 'gave_up' (last
-- attempt failed, or a failure that retrying cannot fix) | 'skipped' (a channel kind this
-- version cannot deliver to, such as email). http_status is 0 when no response arrived.
-- alert_id is the nil UUID for test sends.
CREATE TABLE IF NOT EXISTS notification_deliveries
(
    delivery_id  UUID,
    org_id       String,
    rule_id      UUID,
    alert_id     UUID,
    event        LowCardinality(String),
    channel      String,
    attempt      UInt8,
    status       LowCardinality(String),
    http_status  UInt16,
    error        String,
    duration_ms  UInt32,
    attempted_at DateTime('UTC')
)
ENGINE = MergeTree()
PARTITION BY toYYYYMM(attempted_at)
ORDER BY (org_id, attempted_at, delivery_id, attempt);

-- Recorded cost against the provider's figure, per provider and UTC day, for the deployment as a
-- whole (provider keys are the deployment's, so bills cover every org). recorded_nusd: the sum of
-- usage_daily (or usage_hourly up to checked_at for same-day snapshots). reported_nusd: the
-- provider's figure (OpenAI Costs API; OpenRouter usage_daily of the key at checked_at), NULL
-- when it could not be read. drift_percent = (reported - recorded) / reported * 100 (0 when
-- both are 0). source: 'openai_costs' | 'openrouter_key_usage_daily'. status: 'ok' | 'error'.
-- ReplacingMergeTree: a later check of the same day replaces the earlier one.
CREATE TABLE IF NOT EXISTS cost_reconciliation
(
    provider      LowCardinality(String),
    day           Date,
    recorded_nusd Decimal(18, 9),
    reported_nusd Nullable(Decimal(18, 9)),
    drift_percent Float64,
    source        LowCardinality(String),
    status        LowCardinality(String),
    error         String,
    checked_at    DateTime('UTC'),
    version       UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (provider, day);
