-- 0003 configuration and state: budgets, alert rules, alerts, provider credits, prices, admin
-- tokens and app keys.
--
-- The small mutable tables are ReplacingMergeTree(version): a change is a new row with a
-- higher `version` (dashboard-api uses a millisecond timestamp or a counter), a delete is a new
-- row with deleted = 1. Merges keep the newest row per ORDER BY key eventually, so readers
-- always use FINAL (these tables are small) and filter deleted = 0. They are not partitioned:
-- ReplacingMergeTree only collapses rows within a partition.
-- Closed value sets are LowCardinality(String) like usage_events, with the allowed values
-- listed per column and enforced by the Rust types that write them.
-- Money is Decimal(18,9) USD (raw value = i64 nano-USD), times are DateTime('UTC').

-- A spending limit. scope: 'org' (the whole org), 'org_user' (one user of the org: user_id set),
-- 'app' (one app of the org: app_id set). period: 'daily' | 'weekly' | 'monthly' (UTC calendar
-- periods; weeks start Monday). mode: 'hard' (the edge blocks calls once spent >= limit) |
-- 'soft' (alerts only). soft_thresholds: percentages of the limit that raise an alert, e.g.
-- [50, 80, 100].
CREATE TABLE IF NOT EXISTS budgets
(
    budget_id       UUID,
    org_id          String,
    scope           LowCardinality(String),
    user_id         String,
    app_id          String,
    name            String,
    period          LowCardinality(String),
    limit_nusd      Decimal(18, 9),
    soft_thresholds Array(UInt8),
    mode            LowCardinality(String),
    enabled         UInt8,
    created_by      String,
    created_at      DateTime('UTC'),
    updated_at      DateTime('UTC'),
    deleted         UInt8,
    version         UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (org_id, budget_id);

-- What to watch. kind: 'spend_threshold' | 'spend_anomaly' | 'budget_threshold' |
-- 'error_rate' | 'latency_p95' | 'unpriced_requests' | 'credit_low' (the evaluator owns the
-- list); params: the kind's parameters as a JSON object (window, threshold, model filter, …),
-- validated by dashboard-api. severity: 'low' | 'medium' | 'high' | 'critical'.
-- channels: where a firing goes, each 'kind:target' ('dashboard', 'email:ops@example.com',
-- 'webhook:https://…', 'slack:#channel').
CREATE TABLE IF NOT EXISTS alert_rules
(
    rule_id    UUID,
    org_id     String,
    name       String,
    kind       LowCardinality(String),
    params     String,
    severity   LowCardinality(String),
    channels   Array(String),
    enabled    UInt8,
    created_by String,
    created_at DateTime('UTC'),
    updated_at DateTime('UTC'),
    deleted    UInt8,
    version    UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (org_id, rule_id);

-- A firing of a rule and its life. state: 'open' | 'acknowledged' | 'resolved'; who/when of
-- each transition is kept on the row (the newest version wins). dedup_key: the evaluator's key
-- for "the same condition still firing", so a condition opens one alert, not one per check.
-- details: JSON with the observed values.
CREATE TABLE IF NOT EXISTS alerts
(
    alert_id        UUID,
    org_id          String,
    rule_id         UUID,
    kind            LowCardinality(String),
    severity        LowCardinality(String),
    state           LowCardinality(String),
    dedup_key       String,
    title           String,
    details         String,
    opened_at       DateTime('UTC'),
    acknowledged_by String,
    acknowledged_at Nullable(DateTime('UTC')),
    resolved_by     String,
    resolved_at     Nullable(DateTime('UTC')),
    updated_at      DateTime('UTC'),
    version         UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (org_id, alert_id);

-- Provider credit/balance observations made by the pollers (OpenRouter's /credits and the
-- like). This one is an append-only history, not a Replacing table: burn-rate projections need
-- the past observations; the current state is argMax(…, observed_at) per (provider, key_label).
-- org_id is '' for a platform-wide provider key. balance_nusd is NULL when the provider reports
-- no balance (only usage). status: 'ok' | 'low' | 'exhausted' | 'error' | 'unknown'.
CREATE TABLE IF NOT EXISTS provider_credits
(
    provider           LowCardinality(String),
    key_label          String,
    org_id             String,
    balance_nusd       Nullable(Decimal(18, 9)),
    total_credits_nusd Decimal(18, 9),
    total_usage_nusd   Decimal(18, 9),
    status             LowCardinality(String),
    error              String,
    observed_at        DateTime('UTC')
)
ENGINE = MergeTree()
PARTITION BY toYYYYMM(observed_at)
ORDER BY (provider, key_label, observed_at);

-- The price table (usage-core's PriceTable), one row per entry of every table version that
-- priced a record, so analysts can recompute any cost: join usage_events.pricing_version.
-- Rates are USD per 1M tokens (Decimal(18,9)); NULL where usage-core has None (the class is
-- billed at the input or output rate); per_request_usd is a flat fee per call.
CREATE TABLE IF NOT EXISTS model_prices
(
    pricing_version       LowCardinality(String),
    provider              LowCardinality(String),
    model                 String,
    effective_from        Date,
    input_per_1m          Decimal(18, 9),
    cached_input_per_1m   Nullable(Decimal(18, 9)),
    cache_write_per_1m    Nullable(Decimal(18, 9)),
    output_per_1m         Decimal(18, 9),
    reasoning_per_1m      Nullable(Decimal(18, 9)),
    per_request_usd       Nullable(Decimal(18, 9)),
    max_output_tokens     Nullable(UInt32),
    loaded_at             DateTime('UTC')
)
ENGINE = ReplacingMergeTree(loaded_at)
ORDER BY (pricing_version, provider, model, effective_from);

-- Admin API bearer tokens, stored only as hex SHA-256 of the secret. role: 'admin' (all orgs)
-- | 'org_admin' (one org) | 'viewer' (one org, and one user when user_id is set).
-- token_id is the public handle shown in lists and logs.
CREATE TABLE IF NOT EXISTS api_tokens
(
    token_hash String,
    token_id   String,
    name       String,
    role       LowCardinality(String),
    org_id     String,
    user_id    String,
    created_by String,
    created_at DateTime('UTC'),
    expires_at Nullable(DateTime('UTC')),
    revoked    UInt8,
    revoked_at Nullable(DateTime('UTC')),
    version    UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY token_hash;

-- Edge app keys (`tg_…`), stored only as hex SHA-256. Each maps to an org and optionally a
-- user/app; budget_scope names the budget guard that meters it ('org:<org>',
-- 'org_user:<org>/<user>', 'app:<org>/<app>'). A key is live while revoked_at IS NULL.
CREATE TABLE IF NOT EXISTS app_keys
(
    key_hash     String,
    key_id       String,
    org_id       String,
    user_id      String,
    app_id       String,
    name         String,
    budget_scope String,
    created_at   DateTime('UTC'),
    revoked_at   Nullable(DateTime('UTC')),
    version      UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY key_hash;
