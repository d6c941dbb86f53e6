//! OpenTelemetry export: each record the sink stored, as one OTLP span (HTTP/protobuf,
//! `POST <endpoint>/v1/traces`) with the GenAI semantic conventions' attributes and
//! Tollgate's own ([`span`] lists them), so teams that already run Grafana, Datadog or
//! Honeycomb see Tollgate's calls there. Off unless `otlp.endpoint` is set.
//!
//! # What is guaranteed, and what is not
//! Export never slows or blocks ingest, and never holds a record back from ClickHouse:
//! - The sink hands the records an insert *stored* ([`Exporter::offer`]) to a bounded queue
//!   (`otlp.queue_records`) without waiting; a full queue drops the newest records and counts
//!   them (`tollgate_collector_otlp_records_dropped_total{reason="queue_full"}`). A record the sink found
//!   already stored (a re-post) was exported with its first copy and is not offered again.
//! - One task drains the queue in batches (`otlp.batch_records`, or what arrived within
//!   `otlp.batch_delay_ms`) and posts each batch. An answer of 429, 502, 503 or 504, or no
//!   answer at all, is retried up to `otlp.attempts` times with doubling backoff from
//!   `otlp.backoff_ms` (a `Retry-After` in seconds is honoured, up to 30 s); then the batch is
//!   dropped (`reason="gave_up"`). Any other 4xx/5xx is not retried (`reason="refused"`):
//!   resending what the receiver calls malformed cannot succeed.
//! - So each stored record is exported **at most once** per collector, and exactly once when
//!   the receiver is up and the queue has room. Not covered, by design: records in the queue
//!   when the collector stops or crashes (they are in ClickHouse; the export of those is lost),
//!   a receiver that stored a batch but answered with an error or not at all (retried: the
//!   receiver sees it twice; span ids are stable, derived from `event_id`, so a backend that
//!   deduplicates spans can drop the copy), and a record that two collectors each stored in the
//!   rare race `sink` describes.
//!
//! Each case has a test in `tests/tests/otlp_e2e.rs`: a receiver decoding with the official
//! protobuf types (Python `opentelemetry-proto`), a receiver answering 503 before 200, one
//! refusing with 400, and one that never answers while ingest goes on.

pub mod proto;
pub mod span;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use service_kit::Secret;
use tokio::sync::mpsc;
use tollgate_clickhouse::EncodedEvent;

use crate::metrics::Metrics;

/// The `[otlp]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpConfig {
    /// The OTLP/HTTP receiver's base URL; spans go to `<endpoint>/v1/traces`. Empty: no export.
    /// Example: `"http://otel-collector:4318"`.
    pub endpoint: String,
    /// Headers sent with every export, each `name=value` (an API key:
    /// `["x-honeycomb-team=…"]`, as `OTEL_EXPORTER_OTLP_HEADERS` writes them); kept out of logs.
    pub headers: Vec<Secret<String>>,
    /// `service.name` of the exported resource. Example: `"tollgate"`.
    pub service_name: String,
    /// Records waiting to be exported, at most; more are dropped (and counted), never waited for.
    pub queue_records: usize,
    /// Spans per request.
    pub batch_records: usize,
    /// How long a batch waits to fill before it is sent, in milliseconds.
    pub batch_delay_ms: u64,
    /// Time limit of one request, in milliseconds.
    pub timeout_ms: u64,
    /// Tries per batch (1–10).
    pub attempts: u32,
    /// Wait before the first retry, in milliseconds; doubles for each further one.
    pub backoff_ms: u64,
    /// Also write the cost under the `gen_ai.usage.cost.*` names proposed for the GenAI
    /// semantic conventions (not yet part of them); `tollgate.cost.*` is always written.
    pub genai_cost_attributes: bool,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            endpoint: String::new(),
            headers: Vec::new(),
            service_name: "tollgate".into(),
            queue_records: 100_000,
            batch_records: 512,
            batch_delay_ms: 1_000,
            timeout_ms: 10_000,
            attempts: 5,
            backoff_ms: 500,
            genai_cost_attributes: false,
        }
    }
}

impl OtlpConfig {
    pub fn enabled(&self) -> bool {
        !self.endpoint.is_empty()
    }

    /// Problems with the section, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if !self.enabled() {
            return errors;
        }
        if !(self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://"))
            || self.endpoint.contains(char::is_whitespace)
        {
            errors.push(format!(
                "otlp.endpoint: `{}` is not an http(s) URL like http://otel-collector:4318",
                self.endpoint
            ));
        }
        for (i, header) in self.headers.iter().enumerate() {
            if split_header(header.expose()).is_none() {
                // The value is a secret: name the entry by position, not by content.
                errors.push(format!(
                    "otlp.headers[{i}]: not `name=value` with a header name of letters, digits, `-` or `_`"
                ));
            }
        }
        if self.service_name.trim().is_empty() {
            errors.push("otlp.service_name: must not be empty".into());
        }
        if self.queue_records == 0 || self.batch_records == 0 {
            errors.push("otlp.queue_records and otlp.batch_records: at least 1".into());
        }
        if !(1..=10).contains(&self.attempts) {
            errors.push("otlp.attempts: 1 to 10".into());
        }
        if self.timeout_ms == 0 {
            errors.push("otlp.timeout_ms: at least 1".into());
        }
        errors
    }

    fn header_pairs(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .filter_map(|h| split_header(h.expose()))
            .collect()
    }

    fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.endpoint.trim_end_matches('/'))
    }
}

/// `name=value` → (name, value), the name checked.
fn split_header(h: &str) -> Option<(String, String)> {
    let (name, value) = h.split_once('=')?;
    let name = name.trim();
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then(|| (name.to_string(), value.trim().to_string()))
}

/// The sink's side of the export queue. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Exporter {
    tx: mpsc::Sender<EncodedEvent>,
    metrics: Metrics,
}

impl Exporter {
    /// Starts the export task; `None` when no endpoint is configured.
    pub fn start(config: &OtlpConfig, metrics: Metrics) -> Option<Exporter> {
        if !config.enabled() {
            return None;
        }
        let (tx, rx) = mpsc::channel(config.queue_records);
        tokio::spawn(run(rx, config.clone(), metrics.clone()));
        tracing::info!(endpoint = %config.endpoint, "exporting stored records as OTLP spans");
        Some(Exporter { tx, metrics })
    }

    /// Queues stored records for export without waiting; what does not fit is dropped and
    /// counted.
    pub fn offer(&self, records: &[EncodedEvent]) {
        let mut dropped = 0u64;
        for r in records {
            if self.tx.try_send(r.clone()).is_err() {
                dropped += 1;
            }
        }
        if dropped > 0 {
            self.metrics.count_otlp_dropped("queue_full", dropped);
            tracing::warn!(
                dropped,
                "OTLP export queue full; records dropped from the export (they are stored)"
            );
        }
    }
}

/// What one export request came to.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Sent,
    /// Worth another try, after at least this long.
    Retry(Option<Duration>, String),
    Refused(String),
}

async fn run(mut rx: mpsc::Receiver<EncodedEvent>, config: OtlpConfig, metrics: Metrics) {
    let delay = Duration::from_millis(config.batch_delay_ms);
    let mut batch: Vec<EncodedEvent> = Vec::with_capacity(config.batch_records);
    loop {
        // Wait for a first record, then gather until full or the delay is over.
        match rx.recv().await {
            Some(r) => batch.push(r),
            None => return,
        }
        let deadline = tokio::time::Instant::now() + delay;
        while batch.len() < config.batch_records {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(r)) => batch.push(r),
                Ok(None) | Err(_) => break,
            }
        }
        let records = std::mem::take(&mut batch);
        let body = span::export_request(&records, &config);
        export(&config, &metrics, body, records.len() as u64).await;
    }
}

/// Posts one batch, retrying as the module docs say.
async fn export(config: &OtlpConfig, metrics: &Metrics, body: Vec<u8>, spans: u64) {
    let mut wait = Duration::from_millis(config.backoff_ms);
    let body = bytes::Bytes::from(body);
    for attempt in 1..=config.attempts {
        let outcome = post(config, body.clone()).await;
        match outcome {
            Outcome::Sent => {
                metrics.otlp_spans_exported.inc_by(spans);
                return;
            }
            Outcome::Refused(why) => {
                metrics.count_otlp_dropped("refused", spans);
                tracing::warn!(spans, error = %why, "the OTLP receiver refused a batch; dropped");
                return;
            }
            Outcome::Retry(after, why) => {
                if attempt == config.attempts {
                    metrics.count_otlp_dropped("gave_up", spans);
                    tracing::warn!(spans, attempts = attempt, error = %why, "OTLP export failed; batch dropped");
                    return;
                }
                let pause = after.unwrap_or(wait).min(Duration::from_secs(30));
                tracing::debug!(attempt, error = %why, retry_in_ms = pause.as_millis() as u64, "OTLP export will retry");
                tokio::time::sleep(pause).await;
                wait = wait.saturating_mul(2);
            }
        }
    }
}

async fn post(config: &OtlpConfig, body: bytes::Bytes) -> Outcome {
    let url = config.traces_url();
    let headers = config.header_pairs();
    let timeout = Duration::from_millis(config.timeout_ms);
    let joined = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .max_redirects(0)
            .build()
            .into();
        let mut req = agent
            .post(&url)
            .header("content-type", "application/x-protobuf");
        for (k, v) in &headers {
            req = req.header(k, v);
        }
        match req.send(&body[..]) {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let text = resp
                    .body_mut()
                    .with_config()
                    .limit(64 << 10)
                    .read_to_string()
                    .unwrap_or_default();
                classify(status, retry_after, &text)
            }
            Err(e) => Outcome::Retry(None, format!("no answer: {e}")),
        }
    })
    .await;
    joined.unwrap_or_else(|e| Outcome::Retry(None, format!("export task: {e}")))
}

fn classify(status: u16, retry_after: Option<Duration>, body: &str) -> Outcome {
    let why = || {
        let snippet: String = body.chars().take(200).collect();
        format!("HTTP {status}: {snippet}")
    };
    match status {
        200..=299 => Outcome::Sent,
        429 | 502 | 503 | 504 => Outcome::Retry(retry_after, why()),
        _ => Outcome::Refused(why()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_otlp_retryable_statuses_are_retried() {
        assert_eq!(classify(200, None, ""), Outcome::Sent);
        for s in [429, 502, 503, 504] {
            assert!(matches!(classify(s, None, "x"), Outcome::Retry(..)), "{s}");
        }
        assert_eq!(
            classify(503, Some(Duration::from_secs(2)), "busy"),
            Outcome::Retry(Some(Duration::from_secs(2)), "HTTP 503: busy".into())
        );
        for s in [400, 401, 404, 413, 500] {
            assert!(matches!(classify(s, None, ""), Outcome::Refused(_)), "{s}");
        }
    }

    #[test]
    fn a_configured_section_is_checked_key_by_key() {
        let mut c = OtlpConfig::default();
        assert!(c.problems().is_empty(), "off is fine");
        c.endpoint = "otel:4318".into();
        c.attempts = 0;
        c.headers = vec![
            Secret::new("x-api-key=k1".to_string()),
            Secret::new("bad header=secret-value".to_string()),
        ];
        let p = c.problems().join("\n");
        assert!(p.contains("otlp.endpoint"), "{p}");
        assert!(p.contains("otlp.attempts"), "{p}");
        assert!(p.contains("otlp.headers[1]"), "{p}");
        assert!(
            !p.contains("secret-value"),
            "a header's value is a secret: {p}"
        );
        assert_eq!(
            c.header_pairs(),
            [("x-api-key".to_string(), "k1".to_string())]
        );
        c.endpoint = "http://otel:4318/".into();
        assert_eq!(c.traces_url(), "http://otel:4318/v1/traces");
    }
}
