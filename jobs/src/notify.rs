//! Alert notifications: what a rule's channels receive when one of its alerts opens or is
//! resolved by the evaluator, and a test send.
//!
//! - [`Channel`] — a rule's channel string read: `webhook:<url>` gets the generic JSON body
//!   ([`generic_body`]), `slack:<url>` a Slack incoming-webhook body with `text` and `blocks`
//!   ([`slack_body`]), `slack:#channel` the same blocks through Slack's `chat.postMessage` with
//!   the bot token `notifications.slack_bot_token`, and `email:<address>` a plain-text email
//!   ([`email_text`]) through the SMTP server `notifications.smtp_url` (lettre). `dashboard`
//!   needs no delivery (alerts show there). A channel the configuration cannot deliver (an
//!   email without SMTP, a Slack channel without a token) is refused when the rule is written
//!   ([`crate::rules::validate_channels`]); one stored earlier is logged as `skipped`.
//! - [`deliver`] — sends one [`Notice`] to every channel of a rule at once. Each body is
//!   signed when `notifications.signing_secret` is set: header `x-tollgate-signature:
//!   t=<unix>,v1=<hex hmac-sha256(secret, t + "." + body)>` (`usage_core::wire::sign`, the
//!   scheme of the edge's batches; verify with `usage_core::wire::verify`), re-signed on each
//!   attempt so a receiver's replay window holds.
//! - [`Outcome`] — the retry decision, in one place: 2xx is delivered; no answer, 408, 429 and
//!   5xx are retried after `backoff_ms`, doubling (3 attempts by default: now, +0.5 s, +1 s);
//!   any other answer (a 404, a 400 for a malformed hook) and a refused target are final —
//!   retrying cannot fix them.
//! - Every attempt is a row of `notification_deliveries` ([`DeliveryRow`], migration 0007),
//!   written as it happens, with the channel reduced to its kind and host (hook paths are
//!   secrets). A failure to write that log is logged and does not stop the delivery.
//! - `POST /api/v1/alert-rules/{id}/test` ([`test_send`]) sends a sample to the rule's channels
//!   and answers each channel's [`DeliveryResult`].

use chrono::{DateTime, Utc};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tollgate_clickhouse::clickhouse::Client;
use uuid::Uuid;

use lettre::transport::smtp::Error as SmtpError;
use lettre::{AsyncTransport, Message};

use crate::config::NotificationsConfig;
use crate::outbound::{self, OutboundError, Request, Target};
use crate::Context;
use tollgate_clickhouse::alerts::{write_delivery, AlertRow, DeliveryRow, NewAlert, RuleRow};
use tollgate_clickhouse::now_second;

/// Why a notification is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Event {
    #[serde(rename = "alert.opened")]
    Opened,
    #[serde(rename = "alert.resolved")]
    Resolved,
    #[serde(rename = "alert.test")]
    Test,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Opened => "alert.opened",
            Event::Resolved => "alert.resolved",
            Event::Test => "alert.test",
        }
    }
}

/// A rule's channel, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Channel {
    /// Shown in the dashboard; nothing to deliver.
    Dashboard,
    /// Generic JSON to a URL.
    Webhook(String),
    /// A Slack incoming webhook.
    Slack(String),
    /// A Slack channel (`#alerts`, or an id), posted to with the bot token.
    SlackChannel(String),
    /// An email address.
    Email(String),
    /// A channel this version cannot deliver to, and why.
    Unsupported { channel: String, why: &'static str },
}

impl Channel {
    pub fn parse(text: &str) -> Channel {
        match text.split_once(':') {
            None if text == "dashboard" => Channel::Dashboard,
            Some(("webhook", url)) => Channel::Webhook(url.to_string()),
            Some(("slack", url)) if url.starts_with("https://") || url.starts_with("http://") => {
                Channel::Slack(url.to_string())
            }
            Some(("slack", name))
                if name.len() <= 80
                    && !name.trim_start_matches('#').is_empty()
                    && name
                        .trim_start_matches('#')
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) =>
            {
                Channel::SlackChannel(name.to_string())
            }
            Some(("slack", _)) => Channel::Unsupported {
                channel: text.to_string(),
                why: "give an incoming-webhook URL (slack:https://hooks.slack.com/…) or a channel (slack:#alerts)",
            },
            Some(("email", address)) if address.parse::<lettre::Address>().is_ok() => {
                Channel::Email(address.to_string())
            }
            Some(("email", _)) => Channel::Unsupported {
                channel: text.to_string(),
                why: "not an email address (email:ops@example.com)",
            },
            _ => Channel::Unsupported {
                channel: text.chars().take(60).collect(),
                why: "unknown channel kind",
            },
        }
    }

    /// How the channel appears in logs and delivery records: kind and host only.
    pub fn display(&self) -> String {
        match self {
            Channel::Dashboard => "dashboard".into(),
            Channel::Webhook(url) => format!("webhook:{}", outbound::redact(url)),
            Channel::Slack(url) => format!("slack:{}", outbound::redact(url)),
            Channel::SlackChannel(name) => format!("slack:{name}"),
            Channel::Email(address) => format!("email:{address}"),
            Channel::Unsupported { channel, .. } => channel.clone(),
        }
    }
}

/// What a notification is about.
#[derive(Clone, Debug)]
pub struct Notice<'a> {
    pub event: Event,
    pub rule_name: &'a str,
    pub alert: &'a AlertRow,
}

fn rfc(t: DateTime<Utc>) -> String {
    usage_core::rfc3339::format(&t).unwrap_or_default()
}

/// The generic webhook body: `event`, `delivery_id`, `sent_at`, `test` and the `alert` (ids,
/// rule name, kind, severity, state, title, details, opened/resolved times, who resolved it).
pub fn generic_body(n: &Notice<'_>, delivery_id: Uuid, sent_at: DateTime<Utc>) -> Value {
    let a = n.alert;
    json!({
        "event": n.event.as_str(),
        "delivery_id": delivery_id,
        "sent_at": rfc(sent_at),
        "test": n.event == Event::Test,
        "alert": {
            "alert_id": a.alert_id,
            "org_id": a.org_id,
            "rule_id": a.rule_id,
            "rule_name": n.rule_name,
            "kind": a.kind,
            "severity": a.severity,
            "state": a.state,
            "title": a.title,
            "details": serde_json::from_str::<Value>(&a.details).unwrap_or(Value::String(a.details.clone())),
            "opened_at": rfc(a.opened_at),
            "resolved_at": a.resolved_at.map(rfc),
            "resolved_by": (!a.resolved_by.is_empty()).then_some(a.resolved_by.as_str()),
        },
    })
}

/// A Slack incoming-webhook body: `text` (the fallback and the notification line) and
/// `blocks`.
pub fn slack_body(n: &Notice<'_>) -> Value {
    let a = n.alert;
    let what = match n.event {
        Event::Opened => "Alert",
        Event::Resolved => "Resolved",
        Event::Test => "Test",
    };
    let severity = a.severity.to_ascii_uppercase();
    let text = format!("[{severity}] {what}: {}", a.title);
    let mut facts = vec![
        format!("*Rule:* {}", n.rule_name),
        format!("*Kind:* `{}`", a.kind),
        format!("*Org:* {}", a.org_id),
    ];
    if let Some(t) = a.resolved_at {
        facts.push(format!("*Resolved:* {} by {}", rfc(t), a.resolved_by));
    }
    json!({
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": format!("*{}*", text)}},
            {"type": "section", "text": {"type": "mrkdwn", "text": facts.join("\n")}},
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": format!("Tollgate · alert {} · opened {}", a.alert_id, rfc(a.opened_at))}
            ]},
        ],
    })
}

/// An alert email's subject and plain-text body.
pub fn email_text(n: &Notice<'_>) -> (String, String) {
    let a = n.alert;
    let what = match n.event {
        Event::Opened => "Alert",
        Event::Resolved => "Resolved",
        Event::Test => "Test",
    };
    let subject = format!(
        "[Tollgate {}] {what}: {}",
        a.severity.to_ascii_uppercase(),
        a.title
    );
    let mut body = format!(
        "{what}: {}\n\nRule:     {}\nKind:     {}\nSeverity: {}\nOrg:      {}\nOpened:   {}\n",
        a.title,
        n.rule_name,
        a.kind,
        a.severity,
        a.org_id,
        rfc(a.opened_at)
    );
    if let Some(t) = a.resolved_at {
        body.push_str(&format!("Resolved: {} by {}\n", rfc(t), a.resolved_by));
    }
    body.push_str(&format!(
        "\nDetails:  {}\nAlert id: {}\n",
        a.details, a.alert_id
    ));
    (subject, body)
}

/// One email: the SMTP server's answer as an [`Outcome`] (its reply code in `http_status`).
async fn email_attempt(config: &NotificationsConfig, to: &str, notice: &Notice<'_>) -> Outcome {
    let (subject, body) = email_text(notice);
    let message = config
        .email_from
        .parse()
        .map_err(|e| format!("notifications.email_from: {e}"))
        .and_then(|from| {
            Message::builder()
                .from(from)
                .to(to.parse().map_err(|e| format!("{to}: {e}"))?)
                .subject(subject)
                .body(body)
                .map_err(|e| e.to_string())
        });
    let message = match message {
        Ok(m) => m,
        Err(error) => {
            return Outcome::Final {
                http_status: 0,
                error,
            }
        }
    };
    let transport = match config.smtp_transport() {
        Ok(t) => t,
        Err(error) => {
            return Outcome::Final {
                http_status: 0,
                error,
            }
        }
    };
    match transport.send(message).await {
        Ok(reply) => Outcome::Delivered {
            http_status: u16::from(reply.code()),
        },
        Err(e) => {
            let code = e.status().map_or(0, u16::from);
            let error = smtp_error_text(&e);
            if e.is_permanent() {
                Outcome::Final {
                    http_status: code,
                    error,
                }
            } else {
                Outcome::Retry {
                    http_status: code,
                    error,
                }
            }
        }
    }
}

/// An SMTP error without the credentials the URL may carry.
fn smtp_error_text(e: &SmtpError) -> String {
    let text = e.to_string();
    text.chars().take(300).collect()
}

/// One `chat.postMessage`: Slack answers 200 with `ok: false` for most errors.
async fn slack_api_attempt(
    config: &NotificationsConfig,
    channel: &str,
    notice: &Notice<'_>,
) -> Outcome {
    let mut body = slack_body(notice);
    body["channel"] = Value::String(channel.to_string());
    let url = format!(
        "{}/chat.postMessage",
        config.slack_api_url.trim_end_matches('/')
    );
    let mut request = Request::post(
        url.as_str(),
        serde_json::to_vec(&body).unwrap_or_default(),
        Duration::from_millis(config.timeout_ms),
    )
    .header("content-type", "application/json; charset=utf-8")
    .header(
        "authorization",
        format!("Bearer {}", config.slack_bot_token.expose()),
    );
    // The operator's configured API root (not a URL an org admin chose).
    request.target = Target::Any;
    let answer = outbound::send(request).await;
    match Outcome::of(&answer) {
        Outcome::Delivered { http_status } => {
            let reply: Value = answer
                .ok()
                .and_then(|a| serde_json::from_str(&a.body).ok())
                .unwrap_or(Value::Null);
            match (reply["ok"].as_bool(), reply["error"].as_str()) {
                (Some(true), _) => Outcome::Delivered { http_status },
                (_, Some("ratelimited")) => Outcome::Retry {
                    http_status,
                    error: "Slack: ratelimited".into(),
                },
                (_, error) => Outcome::Final {
                    http_status,
                    error: format!("Slack: {}", error.unwrap_or("an answer without `ok`")),
                },
            }
        }
        other => other,
    }
}

/// What one attempt's answer means (the retry decision).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered {
        http_status: u16,
    },
    /// Worth another attempt: no answer, 408, 429, 5xx.
    Retry {
        http_status: u16,
        error: String,
    },
    /// Retrying cannot help: another 4xx, a refused target.
    Final {
        http_status: u16,
        error: String,
    },
}

impl Outcome {
    pub fn of(result: &Result<outbound::Answer, OutboundError>) -> Outcome {
        match result {
            Ok(a) if (200..300).contains(&a.status) => Outcome::Delivered {
                http_status: a.status,
            },
            Ok(a) => {
                let error = format!(
                    "HTTP {}{}",
                    a.status,
                    if a.body.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", a.body.chars().take(200).collect::<String>())
                    }
                );
                if a.status == 408 || a.status == 429 || a.status >= 500 {
                    Outcome::Retry {
                        http_status: a.status,
                        error,
                    }
                } else {
                    Outcome::Final {
                        http_status: a.status,
                        error,
                    }
                }
            }
            Err(OutboundError::Network(e)) => Outcome::Retry {
                http_status: 0,
                error: e.clone(),
            },
            Err(e @ OutboundError::Refused(_)) => Outcome::Final {
                http_status: 0,
                error: e.to_string(),
            },
        }
    }
}

/// How a notification to one channel ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryResult {
    pub delivery_id: Uuid,
    /// The channel's kind and host (paths are not shown).
    pub channel: String,
    /// `delivered`, `gave_up` or `skipped`.
    pub status: String,
    pub attempts: u8,
    /// The last answer's status, when there was one.
    pub http_status: Option<u16>,
    pub error: Option<String>,
}

async fn log_attempt(client: &Client, row: &DeliveryRow) {
    if let Err(e) = write_delivery(client, row).await {
        tracing::warn!(error = %e, delivery_id = %row.delivery_id, "cannot record a notification delivery attempt");
    }
}

/// One POST of a webhook body (generic or Slack incoming webhook), signed when configured.
async fn webhook_attempt(
    config: &NotificationsConfig,
    notice: &Notice<'_>,
    delivery_id: Uuid,
    url: &str,
    body: &[u8],
) -> Outcome {
    let mut request = Request::post(url, body.to_vec(), Duration::from_millis(config.timeout_ms))
        .header("content-type", "application/json")
        .header("x-tollgate-event", notice.event.as_str())
        .header("x-tollgate-delivery", delivery_id.to_string());
    request.target = if config.allow_private_targets {
        Target::Any
    } else {
        Target::PublicOnly
    };
    let secret = config.signing_secret.expose();
    if !secret.is_empty() {
        let t = Utc::now().timestamp();
        request = request.header(
            usage_core::wire::SIGNATURE_HEADER,
            usage_core::wire::sign(secret.as_bytes(), t, body),
        );
    }
    Outcome::of(&outbound::send(request).await)
}

/// Delivers `notice` to one channel, with retries; every attempt is logged.
async fn deliver_one(
    client: &Client,
    config: &NotificationsConfig,
    notice: &Notice<'_>,
    channel: &Channel,
) -> Option<DeliveryResult> {
    let delivery_id = Uuid::new_v4();
    let mut row = DeliveryRow {
        delivery_id,
        org_id: notice.alert.org_id.clone(),
        rule_id: notice.alert.rule_id,
        alert_id: notice.alert.alert_id,
        event: notice.event.as_str().to_string(),
        channel: channel.display(),
        attempt: 1,
        status: String::new(),
        http_status: 0,
        error: String::new(),
        duration_ms: 0,
        attempted_at: now_second(),
    };
    // A rule written while the server could send these, read after the operator took the
    // means away: logged as skipped, with the key to set.
    let unconfigured = match channel {
        Channel::Email(_) if config.smtp_url.expose().is_empty() => {
            Some("notifications.smtp_url is not set")
        }
        Channel::SlackChannel(_) if config.slack_bot_token.expose().is_empty() => {
            Some("notifications.slack_bot_token is not set")
        }
        _ => None,
    };
    let channel = match unconfigured {
        Some(why) => &Channel::Unsupported {
            channel: channel.display(),
            why,
        },
        None => channel,
    };
    let (url, body) = match channel {
        Channel::Dashboard => return None,
        Channel::Email(_) | Channel::SlackChannel(_) => (&String::new(), Value::Null),
        Channel::Unsupported { why, .. } => {
            row.status = "skipped".into();
            row.error = (*why).to_string();
            log_attempt(client, &row).await;
            return Some(DeliveryResult {
                delivery_id,
                channel: row.channel,
                status: row.status,
                attempts: 0,
                http_status: None,
                error: Some(row.error),
            });
        }
        Channel::Webhook(url) => (url, generic_body(notice, delivery_id, now_second())),
        Channel::Slack(url) => (url, slack_body(notice)),
    };
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let attempts = config.attempts.clamp(1, 10) as u8;
    let mut backoff = Duration::from_millis(config.backoff_ms);
    for attempt in 1..=attempts {
        row.attempt = attempt;
        row.attempted_at = now_second();
        let started = Instant::now();
        let outcome = match channel {
            Channel::Email(to) => Some(email_attempt(config, to, notice).await),
            Channel::SlackChannel(name) => Some(slack_api_attempt(config, name, notice).await),
            _ => None,
        };
        let outcome = match outcome {
            Some(o) => o,
            None => webhook_attempt(config, notice, delivery_id, url, &body).await,
        };
        row.duration_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
        let (status, http_status, error, done) = match outcome {
            Outcome::Delivered { http_status } => ("delivered", http_status, String::new(), true),
            Outcome::Retry { http_status, error } if attempt < attempts => {
                ("failed", http_status, error, false)
            }
            Outcome::Retry { http_status, error } | Outcome::Final { http_status, error } => {
                ("gave_up", http_status, error, true)
            }
        };
        row.status = status.into();
        row.http_status = http_status;
        row.error = error;
        log_attempt(client, &row).await;
        if done {
            if row.status != "delivered" {
                tracing::warn!(channel = %row.channel, delivery_id = %delivery_id, error = %row.error,
                    attempts = attempt, "alert notification not delivered");
            }
            return Some(DeliveryResult {
                delivery_id,
                channel: row.channel,
                status: row.status,
                attempts: attempt,
                http_status: (http_status != 0).then_some(http_status),
                error: (!row.error.is_empty()).then_some(row.error),
            });
        }
        tokio::time::sleep(backoff).await;
        backoff = backoff.saturating_mul(2);
    }
    None
}

/// Sends `notice` to every channel in `channels` at once; one result per channel that is not
/// `dashboard`.
pub async fn deliver(
    state: &Context,
    notice: &Notice<'_>,
    channels: &[String],
) -> Vec<DeliveryResult> {
    let config = &state.config().notifications;
    let parsed: Vec<Channel> = channels.iter().map(|c| Channel::parse(c)).collect();
    futures_util::future::join_all(
        parsed
            .iter()
            .map(|c| deliver_one(state.client(), config, notice, c)),
    )
    .await
    .into_iter()
    .flatten()
    .collect()
}

/// `POST /api/v1/alert-rules/{id}/test`: what the test send did.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TestSendOut {
    pub rule_id: Uuid,
    /// One per channel other than `dashboard`.
    pub results: Vec<DeliveryResult>,
}

/// Sends a sample alert of `rule` to its channels (the caller has checked that the principal
/// may change the rule's org).
pub async fn test_send(state: &Context, rule: &RuleRow) -> TestSendOut {
    let now = now_second();
    let sample = AlertRow::open(
        NewAlert {
            alert_id: Uuid::nil(),
            org_id: rule.org_id.clone(),
            rule_id: rule.rule_id,
            kind: rule.kind.clone(),
            severity: rule.severity.clone(),
            dedup_key: "test".into(),
            title: format!("Test notification for rule \"{}\"", rule.name),
            details: json!({"test": true, "note": "sent from POST /api/v1/alert-rules/{id}/test"})
                .to_string(),
        },
        now,
        0,
    );
    let notice = Notice {
        event: Event::Test,
        rule_name: &rule.name,
        alert: &sample,
    };
    TestSendOut {
        rule_id: rule.rule_id,
        results: deliver(state, &notice, &rule.channels).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_are_read_and_shown_without_secrets() {
        assert_eq!(Channel::parse("dashboard"), Channel::Dashboard);
        let slack = Channel::parse("slack:https://hooks.slack.com/services/T/B/x");
        assert_eq!(slack.display(), "slack:https://hooks.slack.com/…");
        assert_eq!(
            Channel::parse("slack:#ops"),
            Channel::SlackChannel("#ops".into())
        );
        assert_eq!(
            Channel::parse("email:ops@x.example"),
            Channel::Email("ops@x.example".into())
        );
        assert!(matches!(
            Channel::parse("email:ops"),
            Channel::Unsupported { .. }
        ));
        assert_eq!(
            Channel::parse("webhook:http://127.0.0.1:9/h").display(),
            "webhook:http://127.0.0.1:9/…"
        );
    }

    #[test]
    fn the_retry_decision() {
        let answer = |status| {
            Ok(outbound::Answer {
                status,
                body: String::new(),
            })
        };
        assert_eq!(
            Outcome::of(&answer(204)),
            Outcome::Delivered { http_status: 204 }
        );
        for s in [408, 429, 500, 503] {
            assert!(
                matches!(Outcome::of(&answer(s)), Outcome::Retry { .. }),
                "{s}"
            );
        }
        for s in [400, 401, 404, 410] {
            assert!(
                matches!(Outcome::of(&answer(s)), Outcome::Final { .. }),
                "{s}"
            );
        }
        assert!(matches!(
            Outcome::of(&Err(OutboundError::Network("timed out".into()))),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            Outcome::of(&Err(OutboundError::Refused("private".into()))),
            Outcome::Final { .. }
        ));
    }
}
