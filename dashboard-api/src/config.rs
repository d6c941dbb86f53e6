//! dashboard-api's configuration: `dashboard.toml` (all keys optional) overridden by
//! `TOLLGATE_*` variables (`[clickhouse] url` → `TOLLGATE_CLICKHOUSE_URL`), validated before
//! anything connects.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use service_kit::config::Validate;
use service_kit::Secret;
pub use tollgate_jobs::config::{
    EvaluatorConfig, IntegrityConfig, JobsConfig, NotificationsConfig, PollersConfig,
    RetentionConfig,
};

/// Days of history the forecast is fitted on by default (`api.forecast_history_days`).
pub const DEFAULT_FORECAST_HISTORY_DAYS: u32 = 56;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server binds. Example: `"0.0.0.0:8080"`.
    pub listen: String,
    /// Run the timed jobs (`tollgate_jobs`) in `serve`. `false` when `tollgate-jobs` runs them
    /// beside API instances that only serve. Example: `true`.
    pub run_jobs: bool,
    pub clickhouse: ClickHouseConfig,
    pub api: ApiConfig,
    pub internal: InternalConfig,
    pub evaluator: EvaluatorConfig,
    pub notifications: NotificationsConfig,
    pub pollers: PollersConfig,
    pub integrity: IntegrityConfig,
    pub retention: RetentionConfig,
}

/// Where Tollgate's database is (the section every service shares).
pub type ClickHouseConfig = service_kit::config::ClickHouseSection;

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

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            run_jobs: true,
            clickhouse: ClickHouseConfig::default(),
            api: ApiConfig::default(),
            internal: InternalConfig::default(),
            evaluator: EvaluatorConfig::default(),
            notifications: NotificationsConfig::default(),
            pollers: PollersConfig::default(),
            integrity: IntegrityConfig::default(),
            retention: RetentionConfig::default(),
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
        self.clickhouse.check(&mut errors);
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
        self.jobs().check(&mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

impl Config {
    /// The background jobs' sections, as `tollgate_jobs` takes them.
    pub fn jobs(&self) -> JobsConfig {
        JobsConfig {
            evaluator: self.evaluator.clone(),
            notifications: self.notifications.clone(),
            pollers: self.pollers.clone(),
            integrity: self.integrity.clone(),
            retention: self.retention.clone(),
        }
    }

    /// The ClickHouse connection settings in the form the `tollgate-clickhouse` crate takes.
    pub fn clickhouse(&self) -> tollgate_clickhouse::ClickHouseConfig {
        let mut ch = tollgate_clickhouse::ClickHouseConfig::new(
            self.clickhouse.url.clone(),
            self.clickhouse.database.clone(),
        );
        ch.user = self.clickhouse.user();
        ch.password = self.clickhouse.password();
        ch.analyst_roles = self.clickhouse.analyst_roles;
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
    fn the_jobs_sections_are_checked_with_the_rest() {
        // Each key's rule is tested in tollgate_jobs::config; here only that serve checks them.
        assert!(Config::default().validate().is_ok());
        let mut c = Config::default();
        c.notifications.attempts = 0;
        let errors = c.validate().unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("notifications.attempts")),
            "{errors:?}"
        );
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
