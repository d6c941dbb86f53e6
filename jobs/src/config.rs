//! The jobs' configuration: five sections of the host's TOML file (`[evaluator]`,
//! `[notifications]`, `[pollers]`, `[integrity]`, `[retention]`), the same whether `dashboard-api serve` runs
//! the jobs or `tollgate-jobs` does. Every key is optional; docs/CONFIGURATION.md lists them.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use service_kit::config::{ClickHouseSection, Validate};
use service_kit::Secret;

/// `tollgate-jobs`' file: the jobs' four sections plus where ClickHouse is and where the
/// health and metrics endpoints listen. The sections read exactly as in `dashboard-api`'s file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsFile {
    /// Address of `GET /healthz` and `GET /metrics`. Example: `"127.0.0.1:8083"`.
    pub listen: String,
    pub clickhouse: ClickHouseSection,
    pub evaluator: EvaluatorConfig,
    pub notifications: NotificationsConfig,
    pub pollers: PollersConfig,
    pub integrity: IntegrityConfig,
    pub retention: RetentionConfig,
}

impl Default for JobsFile {
    fn default() -> Self {
        JobsFile {
            listen: "127.0.0.1:8083".into(),
            clickhouse: ClickHouseSection::default(),
            evaluator: EvaluatorConfig::default(),
            notifications: NotificationsConfig::default(),
            pollers: PollersConfig::default(),
            integrity: IntegrityConfig::default(),
            retention: RetentionConfig::default(),
        }
    }
}

impl JobsFile {
    /// The jobs' sections.
    pub fn jobs(&self) -> JobsConfig {
        JobsConfig {
            evaluator: self.evaluator.clone(),
            notifications: self.notifications.clone(),
            pollers: self.pollers.clone(),
            integrity: self.integrity.clone(),
            retention: self.retention.clone(),
        }
    }
}

impl Validate for JobsFile {
    fn validate(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        if self.listen.parse::<SocketAddr>().is_err() {
            errors.push(format!(
                "listen: `{}` is not an address like 127.0.0.1:8083",
                self.listen
            ));
        }
        self.clickhouse.check(&mut errors);
        self.jobs().check(&mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// What the jobs need to know, besides where ClickHouse is.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobsConfig {
    pub evaluator: EvaluatorConfig,
    pub notifications: NotificationsConfig,
    pub pollers: PollersConfig,
    pub integrity: IntegrityConfig,
    pub retention: RetentionConfig,
}

/// The retention job (`tollgate_clickhouse::retention`): whole monthly partitions older than
/// each family's months are dropped, by the lease holder, every `interval_secs`. A family
/// kept for N months keeps the current month and the N before it; `0` keeps it forever.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Run it. Example: `true`.
    pub enabled: bool,
    /// Seconds between passes. Example: `86400`.
    pub interval_secs: u64,
    /// `usage_events` and the collector's `ingest_batches` / `usage_rejects`. Example: `13`.
    pub raw_months: u32,
    /// `usage_hourly`. Example: `13`.
    pub hourly_months: u32,
    /// `usage_daily`; `0` keeps it forever. Example: `0`.
    pub daily_months: u32,
    /// `org_daily` and `org_model_daily`; `0` keeps them forever. Example: `0`.
    pub org_rollup_months: u32,
    /// `provider_credits`. Example: `13`.
    pub credits_months: u32,
    /// `notification_deliveries` and `integrity_repairs`. Example: `13`.
    pub job_log_months: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        let p = tollgate_clickhouse::retention::RetentionPolicy::default();
        let months = |m: Option<u32>| m.unwrap_or(0);
        RetentionConfig {
            enabled: true,
            interval_secs: 86_400,
            raw_months: months(p.raw_months),
            hourly_months: months(p.hourly_months),
            daily_months: months(p.daily_months),
            org_rollup_months: months(p.org_rollup_months),
            credits_months: months(p.credits_months),
            job_log_months: months(p.job_log_months),
        }
    }
}

impl RetentionConfig {
    /// The policy these keys stand for (`0`: kept forever).
    pub fn policy(&self) -> tollgate_clickhouse::retention::RetentionPolicy {
        let months = |m: u32| (m > 0).then_some(m);
        tollgate_clickhouse::retention::RetentionPolicy {
            raw_months: months(self.raw_months),
            hourly_months: months(self.hourly_months),
            daily_months: months(self.daily_months),
            org_rollup_months: months(self.org_rollup_months),
            credits_months: months(self.credits_months),
            job_log_months: months(self.job_log_months),
        }
    }
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

/// The alert evaluator ([`crate::evaluator`]) and the lease that lets one instance of several
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
    /// Give every org the default alert rules ([`crate::default_rules`]: spend anomaly, error
    /// rate, unpriced calls, credit runway, budgets without thresholds) the first time it is
    /// seen. Rules already created stay when this is turned off. Example: `true`.
    pub default_rules: bool,
}

/// How alert notifications are delivered ([`crate::notify`]).
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
    /// SMTP server for `email:` channels, as a URL: `smtps://user:pass@mail.example.com`
    /// (TLS), `smtp://user:pass@mail.example.com:587?tls=required` (STARTTLS) or
    /// `smtp://127.0.0.1:25` (plain, local relays only). Empty: rules may not name `email:`
    /// channels (a 400 says why).
    pub smtp_url: Secret<String>,
    /// The sender of alert emails. Example: `"Tollgate <alerts@example.com>"`.
    pub email_from: String,
    /// Slack bot token (`xoxb-…`, scope `chat:write`) for `slack:#channel` channels, posted
    /// with `chat.postMessage`. Empty: rules may not name Slack channels by name (incoming
    /// webhooks, `slack:https://hooks.slack.com/…`, need no token).
    pub slack_bot_token: Secret<String>,
    /// Slack's Web API root. Example: `"https://slack.com/api"`.
    pub slack_api_url: String,
}

/// Provider admin APIs: the OpenRouter credit poller and the daily reconciliation
/// ([`crate::pollers`], [`crate::reconcile`]). Base URLs are configurable so tests use a mock.
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

impl Default for EvaluatorConfig {
    fn default() -> Self {
        EvaluatorConfig {
            enabled: true,
            interval_secs: 60,
            lease_secs: 180,
            lease_settle_ms: 1000,
            operator_orgs: Vec::new(),
            default_rules: true,
        }
    }
}

impl NotificationsConfig {
    /// The SMTP transport `smtp_url` names (checked when the config is read).
    pub fn smtp_transport(
        &self,
    ) -> Result<lettre::AsyncSmtpTransport<lettre::Tokio1Executor>, String> {
        let builder = lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(
            self.smtp_url.expose(),
        )
        .map_err(|e| {
            format!("not an SMTP URL (smtps://user:pass@host, smtp://host:587?tls=required): {e}")
        })?;
        Ok(builder
            .timeout(Some(std::time::Duration::from_millis(self.timeout_ms)))
            .build())
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
            smtp_url: Secret::default(),
            email_from: "Tollgate <alerts@localhost>".into(),
            slack_bot_token: Secret::default(),
            slack_api_url: "https://slack.com/api".into(),
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

impl JobsConfig {
    /// Checks the five sections; each error names its key (`evaluator.lease_secs: …`).
    pub fn check(&self, errors: &mut Vec<String>) {
        let i = &self.integrity;
        if !(10..=86_400).contains(&i.interval_secs) {
            errors.push("integrity.interval_secs: must be from 10 to 86400".into());
        }
        if !(1..=24 * 31).contains(&i.lookback_hours) {
            errors.push("integrity.lookback_hours: must be from 1 to 744 (31 days)".into());
        }
        let r = &self.retention;
        if !(60..=30 * 86_400).contains(&r.interval_secs) {
            errors.push("retention.interval_secs: must be from 60 to 2592000 (30 days)".into());
        }
        for (key, months) in [
            ("raw_months", r.raw_months),
            ("hourly_months", r.hourly_months),
            ("daily_months", r.daily_months),
            ("org_rollup_months", r.org_rollup_months),
            ("credits_months", r.credits_months),
            ("job_log_months", r.job_log_months),
        ] {
            if months > 1200 {
                errors.push(format!(
                    "retention.{key}: at most 1200 (100 years); 0 keeps forever"
                ));
            }
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
        if !self.notifications.smtp_url.expose().is_empty() {
            if let Err(e) = self.notifications.smtp_transport() {
                errors.push(format!("notifications.smtp_url: {e}"));
            }
            if self
                .notifications
                .email_from
                .parse::<lettre::message::Mailbox>()
                .is_err()
            {
                errors.push(format!(
                    "notifications.email_from: `{}` is not an address like `Tollgate <alerts@example.com>`",
                    self.notifications.email_from
                ));
            }
        }
        if !(self.notifications.slack_api_url.starts_with("https://")
            || self.notifications.slack_api_url.starts_with("http://"))
        {
            errors.push("notifications.slack_api_url: must be an http(s) URL".into());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_the_jobs_file_is_documented() {
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/CONFIGURATION.md"
        ))
        .unwrap();
        let checked =
            service_kit::config::check_reference(&JobsFile::default(), &doc, "tollgate-jobs");
        assert_eq!(checked, Ok(()), "docs/CONFIGURATION.md");
    }

    #[test]
    fn the_sections_are_checked() {
        let mut errors = Vec::new();
        JobsConfig::default().check(&mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let mut c = JobsConfig::default();
        c.evaluator.interval_secs = 60;
        c.evaluator.lease_secs = 90;
        c.notifications.signing_secret = Secret::new("short".into());
        c.notifications.attempts = 0;
        c.pollers.openai_base_url = "api.openai.com".into();
        c.pollers.reconcile_lookback_days = 0;
        c.integrity.interval_secs = 1;
        c.retention.interval_secs = 5;
        c.check(&mut errors);
        for key in [
            "evaluator.lease_secs",
            "notifications.signing_secret",
            "notifications.attempts",
            "pollers.openai_base_url",
            "pollers.reconcile_lookback_days",
            "integrity.interval_secs",
            "retention.interval_secs",
        ] {
            assert!(
                errors.iter().any(|e| e.starts_with(key)),
                "{key} not reported: {errors:?}"
            );
        }
        assert!(!format!("{c:?}").contains("short"), "secrets never print");
    }
}
