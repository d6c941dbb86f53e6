//! dashboard-api's configuration: `dashboard.toml` (all keys optional) overridden by
//! `TOLLGATE_*` variables (`[clickhouse] url` → `TOLLGATE_CLICKHOUSE_URL`), validated before
//! anything connects.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use service_kit::config::Validate;
use service_kit::Secret;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server binds. Example: `"0.0.0.0:8080"`.
    pub listen: String,
    pub clickhouse: ClickHouseConfig,
    pub api: ApiConfig,
    pub internal: InternalConfig,
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
            clickhouse: ClickHouseConfig::default(),
            api: ApiConfig::default(),
            internal: InternalConfig::default(),
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
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
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

    fn leaves(prefix: &str, v: &toml::Value, out: &mut Vec<String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    leaves(&path, v, out);
                }
            }
            _ => out.push(prefix.to_string()),
        }
    }

    #[test]
    fn every_key_is_documented() {
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/CONFIGURATION.md"
        ))
        .unwrap();
        let section = doc
            .split("## dashboard-api")
            .nth(1)
            .unwrap()
            .split("\n## ")
            .next()
            .unwrap();
        let mut keys = Vec::new();
        leaves(
            "",
            &toml::Value::try_from(super::Config::default()).unwrap(),
            &mut keys,
        );
        for k in &keys {
            let env = format!("TOLLGATE_{}", k.replace('.', "_").to_ascii_uppercase());
            assert!(
                section.contains(&format!("| `{k}` | `{env}` |")),
                "docs/CONFIGURATION.md lacks dashboard-api key `{k}`"
            );
        }
        let documented = section.lines().filter(|l| l.starts_with("| `")).count();
        assert_eq!(
            documented,
            keys.len(),
            "docs/CONFIGURATION.md lists keys dashboard-api does not have"
        );
    }
}
