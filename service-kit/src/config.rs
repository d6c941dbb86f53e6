//! Configuration loading: defaults → TOML file → `TOLLGATE_*` environment → validation.
//!
//! A service declares its config as a `serde` struct with `#[serde(default, deny_unknown_fields)]`
//! and a `Default`. Every leaf of the defaults can be overridden from the environment: the
//! variable name is `TOLLGATE_` plus the upper-cased path joined by `_` (`[spool] dir` →
//! `TOLLGATE_SPOOL_DIR`); its text is read as the type the default has (arrays of strings are
//! comma-separated). A typo in the file is an error that names the key; an override of a
//! value that is not a number where a number is expected names the variable.

use std::path::Path;

use serde::{de::DeserializeOwned, Serialize};

/// The `[clickhouse]` section every service shares: where Tollgate's database is.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickHouseSection {
    /// HTTP interface of the ClickHouse server. Example: `"http://127.0.0.1:8123"`.
    pub url: String,
    pub database: String,
    pub user: String,
    pub password: crate::Secret<String>,
    /// Create a ClickHouse role per org that reads only that org's rows, where the server has
    /// roles and row policies (docs/ANALYSTS.md). Default `true`.
    pub analyst_roles: bool,
}

impl Default for ClickHouseSection {
    fn default() -> Self {
        ClickHouseSection {
            url: "http://127.0.0.1:18123".into(),
            database: "tollgate".into(),
            user: "default".into(),
            password: crate::Secret::default(),
            analyst_roles: true,
        }
    }
}

impl ClickHouseSection {
    /// Adds this section's problems to `errors` (keys as `clickhouse.<key>`).
    pub fn check(&self, errors: &mut Vec<String>) {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            errors.push(format!(
                "clickhouse.url: `{}` must start with http:// or https://",
                self.url
            ));
        }
        if self.database.is_empty()
            || !self
                .database
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            errors.push("clickhouse.database: must be a plain identifier ([A-Za-z0-9_])".into());
        }
    }

    /// The user, or `None` for the server's default.
    pub fn user(&self) -> Option<String> {
        Some(self.user.clone()).filter(|u| !u.is_empty())
    }

    /// The password, or `None` when empty.
    pub fn password(&self) -> Option<String> {
        Some(self.password.expose().clone()).filter(|p| !p.is_empty())
    }
}

/// A configuration that can check itself before anything connects.
pub trait Validate {
    /// Every problem, as `field: why`.
    fn validate(&self) -> Result<(), Vec<String>>;
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
    #[error("internal: {0}")]
    Internal(String),
}

/// Loads `T` from its defaults, the optional TOML file and the process environment.
pub fn load<T>(file: Option<&Path>) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default + Validate,
{
    load_with_env(file, |k| std::env::var(k).ok())
}

/// [`load`] with an explicit environment (for tests).
pub fn load_with_env<T>(
    file: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default + Validate,
{
    let defaults =
        toml::Table::try_from(T::default()).map_err(|e| ConfigError::Internal(e.to_string()))?;
    let mut table = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            text.parse::<toml::Table>()
                .map_err(|e| ConfigError::Parse {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?
        }
        None => toml::Table::new(),
    };
    apply_env(&defaults, &mut table, "TOLLGATE", &env)?;
    let config: T = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Parse {
            path: file.map_or_else(
                || "(defaults and environment)".to_string(),
                |p| p.display().to_string(),
            ),
            message: e.to_string(),
        })?;
    config.validate().map_err(ConfigError::Invalid)?;
    Ok(config)
}

fn apply_env(
    defaults: &toml::Table,
    target: &mut toml::Table,
    prefix: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    for (key, default) in defaults {
        let var = format!("{prefix}_{}", key.to_ascii_uppercase());
        if let toml::Value::Table(sub_defaults) = default {
            let sub = target
                .entry(key.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(sub) = sub {
                apply_env(sub_defaults, sub, &var, env)?;
            }
            continue;
        }
        let Some(text) = env(&var) else { continue };
        let bad = |message: String| ConfigError::Env {
            var: var.clone(),
            message,
        };
        let value = match default {
            toml::Value::String(_) => toml::Value::String(text),
            toml::Value::Integer(_) => toml::Value::Integer(
                text.trim()
                    .parse()
                    .map_err(|_| bad(format!("`{text}` is not a whole number")))?,
            ),
            toml::Value::Float(_) => toml::Value::Float(
                text.trim()
                    .parse()
                    .map_err(|_| bad(format!("`{text}` is not a number")))?,
            ),
            toml::Value::Boolean(_) => toml::Value::Boolean(match text.trim() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                _ => return Err(bad(format!("`{text}` is not true/false"))),
            }),
            toml::Value::Array(_) => toml::Value::Array(
                text.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_string()))
                    .collect(),
            ),
            _ => return Err(bad("this setting cannot be set from the environment".into())),
        };
        target.insert(key.clone(), value);
    }
    Ok(())
}

/// Checks a configuration reference against a service's config: the section of `doc` that
/// starts at the heading `## {section}` must have one table row `| `key` | `TOLLGATE_KEY` |`
/// for every leaf of `defaults`, and no other rows. Every problem, for a test to print.
pub fn check_reference<T: Serialize>(
    defaults: &T,
    doc: &str,
    section: &str,
) -> Result<(), Vec<String>> {
    let heading = format!("## {section}");
    let Some(rest) = doc.split(heading.as_str()).nth(1) else {
        return Err(vec![format!("no `{heading}` section")]);
    };
    let body = rest.split("\n## ").next().unwrap_or(rest);
    let value = toml::Value::try_from(defaults).map_err(|e| vec![e.to_string()])?;
    let mut keys = Vec::new();
    leaf_keys("", &value, &mut keys);
    let mut problems: Vec<String> = keys
        .iter()
        .filter(|k| {
            let env = format!("TOLLGATE_{}", k.replace('.', "_").to_ascii_uppercase());
            !body.contains(&format!("| `{k}` | `{env}` |"))
        })
        .map(|k| format!("{section}: key `{k}` is not documented"))
        .collect();
    let rows = body.lines().filter(|l| l.starts_with("| `")).count();
    if rows != keys.len() {
        problems.push(format!(
            "{section}: {rows} keys documented, the config has {}",
            keys.len()
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn leaf_keys(prefix: &str, v: &toml::Value, out: &mut Vec<String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaf_keys(&path, v, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_check_names_missing_and_extra_keys() {
        #[derive(Serialize)]
        struct Cfg {
            listen: String,
            spool: Spool,
        }
        #[derive(Serialize)]
        struct Spool {
            dir: String,
        }
        let cfg = Cfg {
            listen: "x".into(),
            spool: Spool { dir: "y".into() },
        };
        let good = "## svc\n\n| `listen` | `TOLLGATE_LISTEN` | a |\n| `spool.dir` | `TOLLGATE_SPOOL_DIR` | b |\n\n## other\n| `z` |";
        assert_eq!(check_reference(&cfg, good, "svc"), Ok(()));
        let missing = "## svc\n| `listen` | `TOLLGATE_LISTEN` | a |\n";
        let errs = check_reference(&cfg, missing, "svc").unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.contains("`spool.dir` is not documented")),
            "{errs:?}"
        );
        let extra = good.replace("## other", "| `gone` | `TOLLGATE_GONE` | c |\n## other");
        let errs = check_reference(&cfg, &extra, "svc").unwrap_err();
        assert!(
            errs.iter().any(|e| e.contains("3 keys documented")),
            "{errs:?}"
        );
        assert!(check_reference(&cfg, good, "nope").is_err());
    }
    use crate::Secret;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Demo {
        listen: String,
        inner: Inner,
    }

    #[derive(Debug, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Inner {
        max_rows: u64,
        fsync: bool,
        secrets: Vec<Secret<String>>,
    }

    impl Default for Demo {
        fn default() -> Self {
            Demo {
                listen: "127.0.0.1:1".into(),
                inner: Inner::default(),
            }
        }
    }

    impl Default for Inner {
        fn default() -> Self {
            Inner {
                max_rows: 10,
                fsync: true,
                secrets: vec![],
            }
        }
    }

    impl Validate for Demo {
        fn validate(&self) -> Result<(), Vec<String>> {
            if self.inner.max_rows == 0 {
                return Err(vec!["inner.max_rows: must be at least 1".into()]);
            }
            Ok(())
        }
    }

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = std::env::temp_dir().join(format!("svc-kit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "listen = \"0.0.0.0:9\"\n[inner]\nmax_rows = 5\n").unwrap();
        let c: Demo = load_with_env(
            Some(&file),
            env(&[
                ("TOLLGATE_INNER_FSYNC", "false"),
                ("TOLLGATE_INNER_SECRETS", "a, b"),
            ]),
        )
        .unwrap();
        assert_eq!(c.listen, "0.0.0.0:9");
        assert_eq!(c.inner.max_rows, 5);
        assert!(!c.inner.fsync);
        assert_eq!(
            c.inner
                .secrets
                .iter()
                .map(|s| s.expose().as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(!format!("{c:?}").contains("\"a\""));
    }

    #[test]
    fn errors_name_the_key_or_variable() {
        let dir = std::env::temp_dir().join(format!("svc-kit-e-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "[inner]\nmax_rowz = 5\n").unwrap();
        let e = load_with_env::<Demo>(Some(&file), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_rowz"), "{e}");
        let e = load_with_env::<Demo>(None, env(&[("TOLLGATE_INNER_MAX_ROWS", "lots")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("TOLLGATE_INNER_MAX_ROWS") && e.contains("lots"),
            "{e}"
        );
        let e = load_with_env::<Demo>(None, env(&[("TOLLGATE_INNER_MAX_ROWS", "0")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("inner.max_rows: must be at least 1"), "{e}");
    }
}
