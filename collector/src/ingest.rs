//! `POST /v1/records`: the accept path.
//!
//! In order: spool capacity (503 + `Retry-After` when over the high-water mark), body size
//! (413) and the time it takes to arrive (408, `ingest.body_timeout_ms`), signature and replay
//! window (401), then [`decode_body`]: `content-encoding` (415; gzip is inflated with a bound,
//! 413 past it), batch shape (400; 413 for too many records), every record decoded and
//! validated on its own: good ones are appended to the spool and acknowledged only
//! once durable; bad ones are reported by index with the field and reason, and sent to the
//! `usage_rejects` dead-letter table. `202 {accepted, duplicates, rejected:[{index, reason}]}`.

use chrono::{DateTime, Utc};
use std::ops::Range;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::json;
use usage_core::wire::{self, RecordError, SignatureError, WireError};
use uuid::Uuid;

use crate::config::IngestConfig;

use crate::spool::AppendBatch;
use crate::AppState;
use tollgate_clickhouse::EncodedEvent;

/// A record the collector refused, on its way to `usage_rejects`.
#[derive(Debug, Clone)]
pub struct Reject {
    pub received_at: DateTime<Utc>,
    /// Position of the record in its batch.
    pub index: usize,
    /// Which check failed, naming the field.
    pub reason: String,
    /// The record's text as received (bounded).
    pub raw: String,
}

/// Longest raw record kept in the dead-letter table.
const MAX_REJECT_RAW: usize = 64 << 10;

/// The 202 body.
#[derive(Debug, Serialize)]
pub struct IngestResponse {
    pub accepted: usize,
    pub duplicates: usize,
    pub rejected: Vec<RecordError>,
}

/// An ingest failure: status, a stable machine-readable code and a message safe to show.
#[derive(Debug)]
pub struct IngestError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after_secs: Option<u64>,
}

impl IngestError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        IngestError {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    fn unavailable(code: &'static str, message: impl Into<String>, retry_after_secs: u64) -> Self {
        IngestError {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }
}

impl IngestError {
    /// The HTTP status this failure answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable machine-readable code (`bad_gzip`, `too_many_records`, …).
    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": {"code": self.code, "message": self.message}}));
        let mut resp = (self.status, body).into_response();
        if let Some(secs) = self.retry_after_secs {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

impl From<SignatureError> for IngestError {
    fn from(e: SignatureError) -> Self {
        let code = match e {
            SignatureError::Missing => "missing_signature",
            SignatureError::Stale { .. } => "stale_signature",
            SignatureError::Mismatch => "bad_signature",
            _ => "malformed_signature",
        };
        IngestError::new(StatusCode::UNAUTHORIZED, code, e.to_string())
    }
}

impl From<WireError> for IngestError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::TooManyRecords { .. } => IngestError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_records",
                e.to_string(),
            ),
            WireError::TooLarge { .. } => IngestError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                e.to_string(),
            ),
            WireError::BadGzip(_) => {
                IngestError::new(StatusCode::BAD_REQUEST, "bad_gzip", e.to_string())
            }
            WireError::Empty => {
                IngestError::new(StatusCode::BAD_REQUEST, "empty_batch", e.to_string())
            }
            _ => IngestError::new(StatusCode::BAD_REQUEST, "malformed_body", e.to_string()),
        }
    }
}

pub async fn post_records(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let result = accept(&state, &headers, body).await;
    let response = match result {
        Ok(ok) => (StatusCode::ACCEPTED, Json(ok)).into_response(),
        Err(e) => {
            if e.status.is_server_error() {
                tracing::warn!(code = e.code, message = %e.message, "ingest refused");
            } else {
                tracing::debug!(code = e.code, message = %e.message, "ingest refused");
            }
            e.into_response()
        }
    };
    state.metrics().count_request(response.status().as_u16());
    state
        .metrics()
        .accept_seconds
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn accept(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<IngestResponse, IngestError> {
    let spool = state.spool();
    if let Some(reason) = spool.failure() {
        tracing::error!(%reason, "refusing batch: spool failed");
        return Err(IngestError::unavailable(
            "spool_failed",
            "the collector cannot store records right now",
            30,
        ));
    }
    if spool.over_high_water() {
        return Err(IngestError::unavailable(
            "spool_full",
            format!(
                "the collector's spool holds {} unsent bytes (high-water mark {}); retry later",
                spool.unsent_bytes(),
                spool.high_water_bytes()
            ),
            5,
        ));
    }
    let limits = &state.config().ingest;
    let max_body = usize::try_from(limits.max_body_bytes).unwrap_or(usize::MAX);
    let too_large = || {
        IngestError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body exceeds {max_body} bytes"),
        )
    };
    // A declared length past the limit is refused before a byte of the body is awaited.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_body_bytes) {
        return Err(too_large());
    }
    let body_timeout = Duration::from_millis(limits.body_timeout_ms);
    let raw: Bytes = tokio::time::timeout(body_timeout, axum::body::to_bytes(body, max_body))
        .await
        .map_err(|_| {
            IngestError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the request body did not arrive within {} ms",
                    limits.body_timeout_ms
                ),
            )
        })?
        .map_err(|_| too_large())?;

    let now = Utc::now();
    let signature = headers
        .get(wire::SIGNATURE_HEADER)
        .map(|v| v.to_str().unwrap_or(""));
    let secrets: Vec<&[u8]> = state.secrets().iter().map(Vec::as_slice).collect();
    wire::verify(
        signature,
        &raw,
        &secrets,
        now.timestamp(),
        i64::try_from(limits.replay_window_secs).unwrap_or(i64::MAX),
    )?;

    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?"));
    let DecodedBody {
        rows,
        good,
        rejects,
        budget_fail_open,
    } = decode_body(encoding, raw, limits, now)?;
    let rejected: Vec<RecordError> = rejects
        .iter()
        .map(|r| RecordError {
            index: r.index,
            reason: r.reason.clone(),
        })
        .collect();

    let (accepted, duplicates, fail_open) = if good.is_empty() {
        (0, 0, 0)
    } else {
        let outcome = spool
            .append(AppendBatch::new(rows, good))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "spool append failed");
                IngestError::unavailable(
                    "spool_failed",
                    "the collector cannot store records right now",
                    30,
                )
            })?;
        let fail_open = budget_fail_open
            .iter()
            .filter(|i| !outcome.duplicates.contains(i))
            .count();
        (outcome.accepted, outcome.duplicates.len(), fail_open)
    };

    let metrics = state.metrics();
    metrics.records_accepted.inc_by(accepted as u64);
    metrics.records_duplicate.inc_by(duplicates as u64);
    metrics.records_rejected.inc_by(rejected.len() as u64);
    metrics.records_budget_fail_open.inc_by(fail_open as u64);
    if !rejects.is_empty() {
        state.send_rejects(rejects);
    }
    Ok(IngestResponse {
        accepted,
        duplicates,
        rejected,
    })
}

/// A body whose signature checked out, decoded and validated record by record.
#[derive(Debug)]
pub struct DecodedBody {
    /// The accepted records' `usage_events` rows, encoded once here
    /// ([`tollgate_clickhouse::EncodedEvent`]); `good` ranges point into it.
    pub rows: Bytes,
    /// Records to spool: each one's `event_id` and the byte range of its encoded row in `rows`.
    pub good: Vec<(Uuid, Range<usize>)>,
    /// Records refused (by index, with the field and reason), on their way to `usage_rejects`.
    pub rejects: Vec<Reject>,
    /// Indices into `good` of records the edge let through with a budget unchecked (tag
    /// `tollgate.budget_fail_open`).
    pub budget_fail_open: Vec<usize>,
}

/// The accept path's decoding step, after the signature check: `content-encoding` (415 for
/// anything but gzip or none), gzip inflated with a bound (413 past it), batch shape (400;
/// 413 for too many records), then each record decoded and validated against `now`. Pure: no
/// I/O, no state (the fuzz target `batch_decoder` and its replay test call it directly).
pub fn decode_body(
    content_encoding: Option<&str>,
    raw: Bytes,
    limits: &IngestConfig,
    now: DateTime<Utc>,
) -> Result<DecodedBody, IngestError> {
    let max_inflated = usize::try_from(limits.max_decompressed_bytes).unwrap_or(usize::MAX);
    let body: Bytes = match content_encoding {
        None | Some("identity") => raw,
        Some("gzip") => Bytes::from(wire::gunzip(&raw, max_inflated)?),
        Some(other) => {
            return Err(IngestError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_encoding",
                format!("content-encoding `{other}` is not supported (use gzip or none)"),
            ))
        }
    };

    let max_records = usize::try_from(limits.max_records_per_batch).unwrap_or(usize::MAX);
    let decoded = wire::decode_batch(&body, max_records)?;
    // Accepted records are encoded as table rows now, once: the sink only copies them.
    let mut rows = Vec::with_capacity(decoded.len() * 320);
    let mut good = Vec::with_capacity(decoded.len());
    let mut rejects = Vec::new();
    let mut budget_fail_open = Vec::new();
    for d in decoded {
        let outcome = d.record.and_then(|r| match r.validate(now) {
            Ok(()) => Ok(r),
            Err(fields) => Err(RecordError {
                index: d.index,
                reason: fields
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            }),
        });
        match outcome {
            Ok(r) => {
                if r.tags
                    .contains_key(usage_core::record::limits::BUDGET_FAIL_OPEN_TAG)
                {
                    budget_fail_open.push(good.len());
                }
                good.push((r.event_id, EncodedEvent::encode_into(&r, &mut rows)));
            }
            Err(e) => rejects.push(Reject {
                received_at: now,
                index: e.index,
                reason: e.reason,
                raw: truncate(d.raw, MAX_REJECT_RAW).to_string(),
            }),
        }
    }
    Ok(DecodedBody {
        rows: Bytes::from(rows),
        good,
        rejects,
        budget_fail_open,
    })
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
