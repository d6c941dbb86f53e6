//! dashboard-api's configuration: `dashboard.toml` (all keys optional) overridden by
//! `TOLLGATE_*` variables (`[clickhouse] url` → `TOLLGATE_CLICKHOUSE_URL`), validated before
//! anything connects.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use service_kit::config::Validate;
use service_kit::Secret;

/// Days of history the forecast is fitted on by default (`api.forecast_history_days`).
pub const DEFAULT_FORECAST_HISTORY_DAYS: u32 = 56;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server binds. Example: `"0.0.0.0:8080"`.
    pub listen: String,
    pub clickhouse: ClickHouseConfig,
    pub api: ApiConfig,
    pub internal: InternalConfig,
    pub evaluator: EvaluatorConfig,
    pub notifications: NotificationsConfig,
    pub pollers: PollersConfig,
    pub integrity: IntegrityConfig,
}

/// The integrity job (`tollgate_clickhouse::integrity`): rollups rebuilt where they differ
/// from the raw rows, events stored twice kept once. Runs under the jobs lease.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntegrityConfig {
    /// Run it in `serve`. Example: `true`.
    pub enabled: bool,
    /// Seconds between passes. Example: `600`.
    pub interval_secs: u64,
    /// Hours back each pass checks (rollup buckets and duplicate events). Example: `48`.
    pub lookback_hours: u32,
}

impl Default for IntegrityConfig {
    fn default() -> Self {
        IntegrityConfig {
            enabled: true,
            interval_secs: 600,
            lookback_hours: 48,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickHouseConfig {
    pub url: String,
    pub database: String,
    pub user: String,
    pub password: Secret<String>,
}

/// Limits and vocabulary of the public API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Providers a `provider` filter may name (others are a 400).
    pub providers: Vec<String>,
    /// Longest time range a query may span, in days.
    pub max_range_days: u32,
    /// Longest range for hourly granularity, in days.
    pub max_hourly_range_days: u32,
    /// Most rows an export returns.
    pub export_row_cap: u64,
    /// Trailing complete days the forecast is fitted on (14 or more: weekly seasonality needs
    /// two weeks).
    pub forecast_history_days: u32,
}

/// The signed internal endpoints the edge worker calls (key lookup, budget state).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InternalConfig {
    /// HMAC secrets the edge signs its internal requests with (same format as the collector's).
    /// Empty: the internal endpoints answer 404.
    pub signing_secrets: Vec<Secret<String>>,
}

/// The alert evaluator (`crate::evaluator`) and the lease that lets one instance of several
/// run the background jobs (evaluation, credit polls, reconciliation).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvaluatorConfig {
    /// Evaluate alert rules in `serve`. Example: `true`.
    pub enabled: bool,
    /// Seconds between evaluations. Example: `60`.
    pub interval_secs: u64,
    /// How long the background-jobs lease lasts without renewal, in seconds; at least twice
    /// `interval_secs`. After an instance dies, another takes over within this time.
    pub lease_secs: u64,
    /// How long an instance that writes itself into a free lease waits before reading it back
    /// to see whether another instance wrote at the same moment, in milliseconds.
    pub lease_settle_ms: u64,
    /// Orgs whose rules also watch deployment-wide provider data: balances recorded without an
    /// org (the pollers', and admins' manual entries for the deployment) and the daily
    /// reconciliation (`cost_drift`). Other orgs' rules see only their own org's balances, and
    /// their `cost_drift` rules never fire. Example: `["ops"]`.
    pub operator_orgs: Vec<String>,
}

/// How alert notifications are delivered (`crate::notify`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationsConfig {
    /// HMAC secret of the `x-tollgate-signature` header on every webhook (same scheme as the
    /// edge's batches: `t=<unix>,v1=<hex hmac-sha256(secret, t + "." + body)>`). Empty: not
    /// signed. At least 16 characters.
    pub signing_secret: Secret<String>,
    /// Attempts per notification and channel (1–10). Example: `3`.
    pub attempts: u32,
    /// Wait before the first retry, in milliseconds; doubles for each further one. Example: `500`.
    pub backoff_ms: u64,
    /// Time limit of one attempt, in milliseconds. Example: `5000`.
    pub timeout_ms: u64,
    /// Let webhooks target loopback, private and link-local addresses. Off by default: a
    /// webhook URL is chosen by org admins, and must not reach services inside the network
    /// (ClickHouse's HTTP interface, for one).
    pub allow_private_targets: bool,
}

/// Provider admin APIs: the OpenRouter credit poller and the daily reconciliation
/// (`crate::pollers`, `crate::reconcile`). Base URLs are configurable so tests use a mock.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PollersConfig {
    /// Poll provider balances in `serve` (nothing happens without a key). Example: `true`.
    pub enabled: bool,
    /// Seconds between polls. Example: `300`.
    pub interval_secs: u64,
    /// Time limit of one provider call, in milliseconds.
    pub timeout_ms: u64,
    /// OpenRouter's API root. Example: `"https://openrouter.ai"`.
    pub openrouter_base_url: String,
    /// OpenRouter management (provisioning) key: `GET /api/v1/credits`. Empty: not polled.
    pub openrouter_management_key: Secret<String>,
    /// The OpenRouter API key the edge uses: `GET /api/v1/key` (limit, usage, daily usage for
    /// reconciliation). Empty: the management key is used.
    pub openrouter_api_key: Secret<String>,
    /// OpenAI's API root. Example: `"https://api.openai.com"`.
    pub openai_base_url: String,
    /// OpenAI admin key for the Costs API (`GET /v1/organization/costs`). Empty: OpenAI is not
    /// reconciled. (OpenAI has no balance API: record balances with `POST /api/v1/credits`.)
    pub openai_admin_key: Secret<String>,
    /// Run the daily reconciliation in `serve`. Example: `true`.
    pub reconcile_enabled: bool,
    /// Seconds between reconciliations. Example: `86400`.
    pub reconcile_interval_secs: u64,
    /// Complete UTC days each reconciliation checks again (bills settle late). Example: `3`.
    pub reconcile_lookback_days: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            clickhouse: ClickHouseConfig::default(),
            api: ApiConfig::default(),
            internal: InternalConfig::default(),
            evaluator: EvaluatorConfig::default(),
            notifications: NotificationsConfig::default(),
            pollers: PollersConfig::default(),
            integrity: IntegrityConfig::default(),
        }
    }
}

impl Default for EvaluatorConfig {
    fn default() -> Self {
        EvaluatorConfig {
            enabled: true,
            interval_secs: 60,
            lease_secs: 180,
            lease_settle_ms: 1000,
            operator_orgs: Vec::new(),
        }
    }
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        NotificationsConfig {
            signing_secret: Secret::default(),
            attempts: 3,
            backoff_ms: 500,
            timeout_ms: 5000,
            allow_private_targets: false,
        }
    }
}

impl Default for PollersConfig {
    fn default() -> Self {
        PollersConfig {
            enabled: true,
            interval_secs: 300,
            timeout_ms: 10_000,
            openrouter_base_url: "https://openrouter.ai".into(),
            openrouter_management_key: Secret::default(),
            openrouter_api_key: Secret::default(),
            openai_base_url: "https://api.openai.com".into(),
            openai_admin_key: Secret::default(),
            reconcile_enabled: true,
            reconcile_interval_secs: 86_400,
            reconcile_lookback_days: 3,
        }
    }
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            url: "http://127.0.0.1:18123".into(),
            database: "tollgate".into(),
            user: "default".into(),
            password: Secret::default(),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            providers: vec!["openai".into(), "openrouter".into()],
            max_range_days: 400,
            max_hourly_range_days: 31,
            export_row_cap: 1_000_000,
            forecast_history_days: DEFAULT_FORECAST_HISTORY_DAYS,
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        if self.listen.parse::<SocketAddr>().is_err() {
            errors.push(format!(
                "listen: `{}` is not an address like 127.0.0.1:8080",
                self.listen
            ));
        }
        if !(self.clickhouse.url.starts_with("http://")
            || self.clickhouse.url.starts_with("https://"))
        {
            errors.push(format!(
                "clickhouse.url: `{}` must start with http:// or https://",
                self.clickhouse.url
            ));
        }
        if self.clickhouse.database.is_empty()
            || !self
                .clickhouse
                .database
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            errors.push("clickhouse.database: must be a plain identifier ([A-Za-z0-9_])".into());
        }
        if self.api.providers.is_empty() {
            errors.push("api.providers: name at least one provider".into());
        }
        if self.api.max_range_days == 0 || self.api.max_hourly_range_days == 0 {
            errors.push(
                "api.max_range_days / api.max_hourly_range_days: must be greater than 0".into(),
            );
        }
        if self.api.export_row_cap == 0 {
            errors.push("api.export_row_cap: must be greater than 0".into());
        }
        if !(14..=366).contains(&self.api.forecast_history_days) {
            errors.push(format!(
                "api.forecast_history_days: {} is outside 14..=366 (weekly seasonality needs two weeks)",
                self.api.forecast_history_days
            ));
        }
        if self
            .internal
            .signing_secrets
            .iter()
            .any(|s| s.expose().len() < 16)
        {
            errors.push(
                "internal.signing_secrets: each secret must be at least 16 characters".into(),
            );
        }
        self.validate_jobs(&mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

impl Config {
    /// The background jobs' sections.
    fn validate_jobs(&self, errors: &mut Vec<String>) {
        let i = &self.integrity;
        if !(10..=86_400).contains(&i.interval_secs) {
            errors.push("integrity.interval_secs: must be from 10 to 86400".into());
        }
        if !(1..=24 * 31).contains(&i.lookback_hours) {
            errors.push("integrity.lookback_hours: must be from 1 to 744 (31 days)".into());
        }
        let e = &self.evaluator;
        if e.interval_secs == 0 || e.interval_secs > 86_400 {
            errors.push("evaluator.interval_secs: must be from 1 to 86400".into());
        }
        if e.lease_secs < e.interval_secs.saturating_mul(2) {
            errors.push(format!(
                "evaluator.lease_secs: must be at least twice evaluator.interval_secs ({})",
                e.interval_secs.saturating_mul(2)
            ));
        }
        if e.lease_settle_ms > 60_000 {
            errors.push("evaluator.lease_settle_ms: must be at most 60000".into());
        }
        if e.operator_orgs.iter().any(|o| o.trim().is_empty()) {
            errors.push("evaluator.operator_orgs: org ids must not be empty".into());
        }
        let n = &self.notifications;
        let secret = n.signing_secret.expose();
        if !secret.is_empty() && secret.len() < 16 {
            errors.push("notifications.signing_secret: must be at least 16 characters".into());
        }
        if !(1..=10).contains(&n.attempts) {
            errors.push("notifications.attempts: must be from 1 to 10".into());
        }
        if n.backoff_ms > 60_000 {
            errors.push("notifications.backoff_ms: must be at most 60000".into());
        }
        if n.timeout_ms == 0 || n.timeout_ms > 120_000 {
            errors.push("notifications.timeout_ms: must be from 1 to 120000".into());
        }
        let p = &self.pollers;
        if p.interval_secs == 0 || p.reconcile_interval_secs == 0 {
            errors.push(
                "pollers.interval_secs / pollers.reconcile_interval_secs: must be greater than 0"
                    .into(),
            );
        }
        if p.timeout_ms == 0 || p.timeout_ms > 120_000 {
            errors.push("pollers.timeout_ms: must be from 1 to 120000".into());
        }
        if !(1..=31).contains(&p.reconcile_lookback_days) {
            errors.push("pollers.reconcile_lookback_days: must be from 1 to 31".into());
        }
        for (key, url) in [
            ("pollers.openrouter_base_url", &p.openrouter_base_url),
            ("pollers.openai_base_url", &p.openai_base_url),
        ] {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                errors.push(format!(
                    "{key}: `{url}` must start with http:// or https://"
                ));
            }
        }
    }
}

impl Config {
    /// The ClickHouse connection settings in the form the `tollgate-clickhouse` crate takes.
    pub fn clickhouse(&self) -> tollgate_clickhouse::ClickHouseConfig {
        let mut ch = tollgate_clickhouse::ClickHouseConfig::new(
            self.clickhouse.url.clone(),
            self.clickhouse.database.clone(),
        );
        ch.user = Some(self.clickhouse.user.clone()).filter(|u| !u.is_empty());
        ch.password = Some(self.clickhouse.password.expose().clone()).filter(|p| !p.is_empty());
        ch
    }
}

#[cfg(test)]
mod config_doc {
    //! docs/CONFIGURATION.md lists every key of [`Config`], and only those.

    #[test]
    fn every_key_is_documented() {
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/CONFIGURATION.md"
        ))
        .unwrap();
        let checked =
            service_kit::config::check_reference(&super::Config::default(), &doc, "dashboard-api");
        assert_eq!(checked, Ok(()), "docs/CONFIGURATION.md");
    }
}

#[cfg(test)]
mod jobs_validation {
    use service_kit::config::Validate;

    use super::*;

    #[test]
    fn the_background_jobs_sections_are_checked() {
        assert!(Config::default().validate().is_ok());
        let mut c = Config::default();
        c.evaluator.interval_secs = 60;
        c.evaluator.lease_secs = 90;
        c.notifications.signing_secret = Secret::new("short".into());
        c.notifications.attempts = 0;
        c.pollers.openai_base_url = "api.openai.com".into();
        c.pollers.reconcile_lookback_days = 0;
        let errors = c.validate().unwrap_err();
        for key in [
            "evaluator.lease_secs",
            "notifications.signing_secret",
            "notifications.attempts",
            "pollers.openai_base_url",
            "pollers.reconcile_lookback_days",
        ] {
            assert!(
                errors.iter().any(|e| e.starts_with(key)),
                "{key} not reported: {errors:?}"
            );
        }
        assert!(!format!("{c:?}").contains("short"), "secrets never print");
    }

    #[test]
    fn the_forecast_window_needs_two_weeks() {
        let mut c = Config::default();
        c.api.forecast_history_days = 13;
        let errors = c.validate().unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("api.forecast_history_days: 13 is outside")),
            "{errors:?}"
        );
        c.api.forecast_history_days = 14;
        assert!(c.validate().is_ok());
    }
}
