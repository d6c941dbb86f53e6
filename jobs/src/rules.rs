//! Alert rule kinds, defined once: what each kind's `params` are (checked and normalized by
//! [`validate_params`] when the API writes a rule, and read back through the same function by
//! the evaluator, so a stored rule means one thing in both places) and which channels a rule
//! may name ([`validate_channels`]: exactly those [`crate::notify::Channel`] can deliver).
//!
//! `params` per kind (defaults in brackets; money is a USD decimal string; `provider` must be
//! one the API knows when a rule is written; unknown keys are refused; errors name the key as `params.<key>`):
//!
//! | kind | params |
//! |---|---|
//! | `spend_threshold` | `threshold_usd`, `window` (`hour`/`day`/`week`/`month`) [`day`], `provider`?, `model`? |
//! | `budget_threshold` | `budget_id` (a budget of the rule's org), `percent` (1–100) |
//! | `error_rate` | `threshold_percent` (0–100], `window_minutes` (1–1440) [15], `min_requests` [20], `provider`?, `model`? |
//! | `latency_p95` | `threshold_ms` (1–600000), `window_minutes` [15], `min_requests` [20], `provider`?, `model`? |
//! | `low_balance` | `provider`, `threshold_usd`, `key_label`? |
//! | `credit_runway` | `provider`, `min_days` (1–365), `key_label`? |
//! | `spend_anomaly` | `window` (`hour`/`day`) [`day`], `sensitivity` (z-score, (0, 10]) [3], `min_spend_usd` [`"0"`], `provider`? |
//! | `unpriced_requests` | `threshold_count` (≥ 1) [1], `window_minutes` [60] |
//! | `cost_drift` | `provider`, `threshold_percent` (0–1000], `days` (1–31) [1] |
//! | `records_rejected` | `threshold_count` (≥ 1) [1], `window_minutes` [60] |

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use usage_core::Nanos;
use uuid::Uuid;

use crate::notify::Channel;

/// A rule's `params` or `channels` are not acceptable: which field, and why (the API answers
/// it as a 400 naming `field`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ParamError {
    /// `params.<key>`, `params` or `channels`.
    pub field: String,
    pub message: String,
}

impl ParamError {
    pub fn new(field: &str, message: impl Into<String>) -> ParamError {
        ParamError {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// 1–`max` characters, none of them control characters.
fn text(field: &str, value: &str, max: usize) -> Result<String, ParamError> {
    let n = value.chars().count();
    if n == 0 || n > max || value.chars().any(char::is_control) || value.trim().is_empty() {
        return Err(ParamError::new(
            field,
            format!("`{field}` must be 1-{max} printable characters"),
        ));
    }
    Ok(value.to_string())
}

/// What a rule watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    SpendThreshold,
    BudgetThreshold,
    ErrorRate,
    LatencyP95,
    LowBalance,
    CreditRunway,
    SpendAnomaly,
    UnpricedRequests,
    CostDrift,
    RecordsRejected,
}

impl RuleKind {
    pub const ALL: [RuleKind; 10] = [
        RuleKind::SpendThreshold,
        RuleKind::BudgetThreshold,
        RuleKind::ErrorRate,
        RuleKind::LatencyP95,
        RuleKind::LowBalance,
        RuleKind::CreditRunway,
        RuleKind::SpendAnomaly,
        RuleKind::UnpricedRequests,
        RuleKind::CostDrift,
        RuleKind::RecordsRejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::SpendThreshold => "spend_threshold",
            RuleKind::BudgetThreshold => "budget_threshold",
            RuleKind::ErrorRate => "error_rate",
            RuleKind::LatencyP95 => "latency_p95",
            RuleKind::LowBalance => "low_balance",
            RuleKind::CreditRunway => "credit_runway",
            RuleKind::SpendAnomaly => "spend_anomaly",
            RuleKind::UnpricedRequests => "unpriced_requests",
            RuleKind::CostDrift => "cost_drift",
            RuleKind::RecordsRejected => "records_rejected",
        }
    }

    pub fn parse(s: &str) -> Option<RuleKind> {
        RuleKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// The `params` object of one rule, read key by key: each reader removes its key, checks it,
/// and writes the normalized value (or its default) to the stored object.
struct ParamReader<'a> {
    given: Map<String, Value>,
    out: Map<String, Value>,
    providers: Option<&'a [String]>,
}

fn param_err(key: &str, message: impl Into<String>) -> ParamError {
    ParamError::new(&format!("params.{key}"), message)
}

impl<'a> ParamReader<'a> {
    fn new(params: Value, providers: Option<&'a [String]>) -> Result<Self, ParamError> {
        let given = match params {
            Value::Null => Map::new(),
            Value::Object(m) => m,
            _ => return Err(ParamError::new("params", "`params` must be a JSON object")),
        };
        Ok(ParamReader {
            given,
            out: Map::new(),
            providers,
        })
    }

    fn take(&mut self, key: &str, required: bool) -> Result<Option<Value>, ParamError> {
        match self.given.remove(key) {
            Some(Value::Null) | None if required => {
                Err(param_err(key, format!("`{key}` is required for this kind")))
            }
            Some(Value::Null) | None => Ok(None),
            Some(v) => Ok(Some(v)),
        }
    }

    fn usd(&mut self, key: &str, default: Option<&str>) -> Result<(), ParamError> {
        let v = self.take(key, default.is_none())?;
        let text = match &v {
            None => default.unwrap_or("0").to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => {
                return Err(param_err(
                    key,
                    format!("`{key}` must be a USD decimal string (\"25.00\")"),
                ))
            }
        };
        let n = Nanos::parse_usd(&text).map_err(|e| param_err(key, format!("`{key}`: {e}")))?;
        if n.is_negative() || (v.is_some() && n == Nanos::ZERO && default.is_none()) {
            return Err(param_err(key, format!("`{key}` must be greater than 0")));
        }
        self.out.insert(key.into(), Value::String(n.to_string()));
        Ok(())
    }

    fn int(
        &mut self,
        key: &str,
        min: u64,
        max: u64,
        default: Option<u64>,
    ) -> Result<(), ParamError> {
        let n = match self.take(key, default.is_none())? {
            None => default.unwrap_or(min),
            Some(v) => v
                .as_u64()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| {
                    param_err(
                        key,
                        format!("`{key}` must be a whole number from {min} to {max}"),
                    )
                })?,
        };
        self.out.insert(key.into(), n.into());
        Ok(())
    }

    /// A number in `(0, max]`.
    fn positive(&mut self, key: &str, max: f64, default: Option<f64>) -> Result<(), ParamError> {
        let x = match self.take(key, default.is_none())? {
            None => default.unwrap_or(max),
            Some(v) => v
                .as_f64()
                .filter(|x| *x > 0.0 && *x <= max)
                .ok_or_else(|| {
                    param_err(
                        key,
                        format!("`{key}` must be a number greater than 0 and at most {max}"),
                    )
                })?,
        };
        self.out.insert(key.into(), Value::from(x));
        Ok(())
    }

    fn choice(&mut self, key: &str, options: &[&str], default: &str) -> Result<(), ParamError> {
        let s = match self.take(key, false)? {
            None => default.to_string(),
            Some(Value::String(s)) if options.contains(&s.as_str()) => s,
            Some(_) => {
                return Err(param_err(
                    key,
                    format!("`{key}` must be one of {}", options.join(", ")),
                ))
            }
        };
        self.out.insert(key.into(), Value::String(s));
        Ok(())
    }

    fn text(&mut self, key: &str, required: bool) -> Result<Option<String>, ParamError> {
        let s = match self.take(key, required)? {
            None => return Ok(None),
            Some(Value::String(s)) => text(&format!("params.{key}"), &s, 256)?,
            Some(_) => return Err(param_err(key, format!("`{key}` must be a string"))),
        };
        self.out.insert(key.into(), Value::String(s.clone()));
        Ok(Some(s))
    }

    fn provider(&mut self, required: bool) -> Result<(), ParamError> {
        if let (Some(p), Some(known)) = (self.text("provider", required)?, self.providers) {
            if !known.contains(&p) {
                return Err(param_err(
                    "provider",
                    format!("unknown provider `{p}` (known: {})", known.join(", ")),
                ));
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<Value, ParamError> {
        match self.given.keys().next() {
            Some(k) => Err(param_err(
                k,
                format!("`{k}` is not a parameter of this kind"),
            )),
            None => Ok(Value::Object(self.out)),
        }
    }
}

/// Checks `params` for `kind`; returns them normalized with defaults filled in, and the budget
/// a `budget_threshold` rule names (which the caller checks belongs to the rule's org).
pub fn validate_params(
    kind: RuleKind,
    params: Value,
    providers: Option<&[String]>,
) -> Result<(Value, Option<Uuid>), ParamError> {
    let mut r = ParamReader::new(params, providers)?;
    let mut budget = None;
    match kind {
        RuleKind::SpendThreshold => {
            r.usd("threshold_usd", None)?;
            r.choice("window", &["hour", "day", "week", "month"], "day")?;
            r.provider(false)?;
            r.text("model", false)?;
        }
        RuleKind::BudgetThreshold => {
            let id = r.text("budget_id", true)?.unwrap_or_default();
            budget =
                Some(Uuid::parse_str(&id).ok().ok_or_else(|| {
                    param_err("budget_id", "`budget_id` must be a budget id (UUID)")
                })?);
            r.int("percent", 1, 100, None)?;
        }
        RuleKind::ErrorRate => {
            r.positive("threshold_percent", 100.0, None)?;
            r.int("window_minutes", 1, 1440, Some(15))?;
            r.int("min_requests", 1, 1_000_000, Some(20))?;
            r.provider(false)?;
            r.text("model", false)?;
        }
        RuleKind::LatencyP95 => {
            r.int("threshold_ms", 1, 600_000, None)?;
            r.int("window_minutes", 1, 1440, Some(15))?;
            r.int("min_requests", 1, 1_000_000, Some(20))?;
            r.provider(false)?;
            r.text("model", false)?;
        }
        RuleKind::LowBalance => {
            r.provider(true)?;
            r.usd("threshold_usd", None)?;
            r.text("key_label", false)?;
        }
        RuleKind::CreditRunway => {
            r.provider(true)?;
            r.int("min_days", 1, 365, None)?;
            r.text("key_label", false)?;
        }
        RuleKind::SpendAnomaly => {
            r.choice("window", &["hour", "day"], "day")?;
            r.positive("sensitivity", 10.0, Some(3.0))?;
            r.usd("min_spend_usd", Some("0"))?;
            r.provider(false)?;
        }
        RuleKind::UnpricedRequests => {
            r.int("threshold_count", 1, 1_000_000_000, Some(1))?;
            r.int("window_minutes", 1, 1440, Some(60))?;
        }
        RuleKind::CostDrift => {
            r.provider(true)?;
            r.positive("threshold_percent", 1000.0, None)?;
            r.int("days", 1, 31, Some(1))?;
        }
        RuleKind::RecordsRejected => {
            r.int("threshold_count", 1, 1_000_000_000, Some(1))?;
            r.int("window_minutes", 1, 1440, Some(60))?;
        }
    }
    Ok((r.finish()?, budget))
}

/// The channels of a rule, checked: each is one `notify` can deliver with `config` (an email
/// needs `notifications.smtp_url`, a Slack channel `notifications.slack_bot_token`).
pub fn validate_channels(
    channels: Option<Vec<String>>,
    config: &crate::config::NotificationsConfig,
) -> Result<Vec<String>, ParamError> {
    let channels = channels.unwrap_or_else(|| vec!["dashboard".to_string()]);
    if channels.len() > 10 {
        return Err(ParamError::new("channels", "at most 10 channels"));
    }
    for (i, c) in channels.iter().enumerate() {
        let bad = |why: &str| {
            ParamError::new(
                "channels",
                format!(
                    "channel {i} (`{}`): {why}",
                    c.chars().take(60).collect::<String>()
                ),
            )
        };
        if c.len() > 512 || c.chars().any(char::is_control) {
            return Err(bad("must be at most 512 printable characters"));
        }
        // What notify can deliver is what a rule may name: a channel it would only log as
        // `skipped` is refused here, with notify's reason.
        match Channel::parse(c) {
            Channel::Unsupported { why, .. } => {
                return Err(bad(&format!(
                    "{why}; expected `dashboard`, `webhook:<http(s) URL>`, `slack:<incoming-webhook URL>`, `slack:#channel` or `email:<address>`"
                )))
            }
            Channel::Email(_) if config.smtp_url.expose().is_empty() => {
                return Err(bad(
                    "email needs an SMTP server: the operator sets notifications.smtp_url",
                ))
            }
            Channel::SlackChannel(_) if config.slack_bot_token.expose().is_empty() => {
                return Err(bad(
                    "a Slack channel by name needs a bot token: the operator sets notifications.slack_bot_token (or give an incoming-webhook URL)",
                ))
            }
            Channel::Webhook(url) if !(url.starts_with("https://") || url.starts_with("http://")) => {
                return Err(bad("a webhook needs an http(s) URL"))
            }
            Channel::Slack(url) if !url.starts_with("https://") => {
                return Err(bad("a Slack incoming-webhook URL starts with https://"))
            }
            _ => {}
        }
        if channels[..i].contains(c) {
            return Err(bad("is listed twice"));
        }
    }
    Ok(channels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(kind: RuleKind, params: Value) -> String {
        match validate_params(kind, params, Some(&["openai".to_string()])) {
            Err(ParamError { field, .. }) => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn params_are_checked_per_kind_and_normalized() {
        let (p, _) = validate_params(
            RuleKind::SpendThreshold,
            serde_json::json!({"threshold_usd": "25"}),
            None,
        )
        .unwrap();
        assert_eq!(
            p,
            serde_json::json!({"threshold_usd": "25.000000000", "window": "day"})
        );
        let (p, _) = validate_params(RuleKind::UnpricedRequests, Value::Null, None).unwrap();
        assert_eq!(
            p,
            serde_json::json!({"threshold_count": 1, "window_minutes": 60})
        );
        assert_eq!(
            field(RuleKind::SpendThreshold, serde_json::json!({})),
            "params.threshold_usd"
        );
        assert_eq!(
            field(
                RuleKind::SpendThreshold,
                serde_json::json!({"threshold_usd": 5})
            ),
            "params.threshold_usd"
        );
        assert_eq!(
            field(
                RuleKind::SpendThreshold,
                serde_json::json!({"threshold_usd": "5", "window": "year"})
            ),
            "params.window"
        );
        assert_eq!(
            field(
                RuleKind::ErrorRate,
                serde_json::json!({"threshold_percent": 0})
            ),
            "params.threshold_percent"
        );
        assert_eq!(
            field(
                RuleKind::LowBalance,
                serde_json::json!({"provider": "azure", "threshold_usd": "5"})
            ),
            "params.provider"
        );
        assert_eq!(
            field(
                RuleKind::CreditRunway,
                serde_json::json!({"provider": "openai", "min_days": 7, "x": 1})
            ),
            "params.x"
        );
        assert_eq!(
            field(
                RuleKind::BudgetThreshold,
                serde_json::json!({"budget_id": "nope", "percent": 80})
            ),
            "params.budget_id"
        );
        assert_eq!(field(RuleKind::LatencyP95, serde_json::json!([])), "params");
        // The evaluator reads stored params without the API's provider list.
        assert!(validate_params(
            RuleKind::LowBalance,
            serde_json::json!({"provider": "azure", "threshold_usd": "5"}),
            None
        )
        .is_ok());
    }

    #[test]
    fn channels() {
        use crate::config::NotificationsConfig;
        use service_kit::Secret;
        let plain = NotificationsConfig::default();
        let check = |c: &str, config: &NotificationsConfig| {
            validate_channels(Some(vec![c.into()]), config).map_err(|e| e.message)
        };
        assert_eq!(validate_channels(None, &plain).unwrap(), ["dashboard"]);
        assert!(validate_channels(
            Some(vec![
                "slack:https://hooks.slack.com/services/T/B/x".into(),
                "webhook:https://x.example/h".into()
            ]),
            &plain
        )
        .is_ok());
        for bad in [
            "slack:http://hooks.example/x",
            "webhook:ftp://x",
            "sms:123",
            "dashboard:x",
            "email:not an address",
            "slack:#",
            "",
        ] {
            assert!(check(bad, &plain).is_err(), "{bad}");
        }
        assert!(
            validate_channels(Some(vec!["dashboard".into(), "dashboard".into()]), &plain).is_err()
        );
        // Email and Slack channels by name: refused without the server's means to send them,
        // with the key the operator sets; accepted with it.
        let email = check("email:ops@example.com", &plain).unwrap_err();
        assert!(email.contains("notifications.smtp_url"), "{email}");
        let slack = check("slack:#ops", &plain).unwrap_err();
        assert!(slack.contains("notifications.slack_bot_token"), "{slack}");
        let configured = NotificationsConfig {
            smtp_url: Secret::new("smtp://127.0.0.1:2525".into()),
            slack_bot_token: Secret::new("xoxb-test".into()),
            ..NotificationsConfig::default()
        };
        assert!(check("email:ops@example.com", &configured).is_ok());
        assert!(check("slack:#ops", &configured).is_ok());
        assert!(check("slack:C0123ABC", &configured).is_ok());
    }
}
