//! Exports: the raw `usage_events` rows in the caller's scope, streamed as CSV or NDJSON.
//!
//! `GET /api/v1/export` takes the analytics parameters (`from`, `to`, `provider`, `model`,
//! `org`, `user`; parsed and scoped by [`crate::analytics::request`], so a token never exports
//! beyond what it may read), plus `format` (`csv`, the default, or `ndjson`) and `limit` (at
//! most `api.export_row_cap`, which is also the default). Rows come in table order (org, time,
//! event id) from `admin/export_events.sql`, read with a cursor and written in chunks as they
//! arrive: memory does not grow with the export.
//!
//! Columns are [`COLUMNS`]: the `UsageRecord` v1 fields in their order, so an NDJSON line is a
//! record exactly as the edge sends it (money as a decimal USD string, `tags` an object). In
//! CSV, `tags` is that object's JSON text, an absent `ttft_ms` is an empty cell, and a cell is
//! quoted (quotes doubled) when it holds a comma, quote, line break or edge spaces. Text that
//! callers choose (ids, model names, task types, …) and that a spreadsheet would run as a
//! formula — it begins with `=`, `+`, `-`, `@`, tab or carriage return — is neutralised as
//! OWASP's CSV-injection guidance says: a leading `'`, and the cell quoted.

use chrono::{DateTime, Datelike, Timelike, Utc};
use std::collections::BTreeMap;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use tollgate_clickhouse::clickhouse::query::RowCursor;
use tollgate_clickhouse::queries::NamedQuery;
use tollgate_clickhouse::{read_query, Scope, UsageEventRow};
use usage_core::Nanos;
use uuid::Uuid;

use crate::analytics;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::params;
use crate::AppState;
use tollgate_clickhouse::Filter;

const EXPORT_EVENTS: NamedQuery = NamedQuery {
    name: "admin/export_events",
    sql: include_str!("../../clickhouse/queries/admin/export_events.sql"),
};

/// Bytes gathered before a chunk is sent.
const CHUNK_BYTES: usize = 64 * 1024;

/// The exported columns, in order (CSV header; NDJSON keys).
pub const COLUMNS: &[&str] = &[
    "event_id",
    "schema_version",
    "ts",
    "latency_ms",
    "ttft_ms",
    "upstream_ms",
    "org_id",
    "user_id",
    "app_id",
    "key_id",
    "tags",
    "provider",
    "model_requested",
    "model_served",
    "endpoint",
    "task_type",
    "stream",
    "edge_region",
    "status_code",
    "error_class",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "audio_input_tokens",
    "image_input_tokens",
    "audio_output_tokens",
    "image_output_tokens",
    "usage_source",
    "web_search_calls",
    "file_search_calls",
    "service_tier_requested",
    "service_tier",
    "cost_nusd",
    "cost_source",
    "pricing_version",
    "request_bytes",
    "response_bytes",
];

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv,
    Ndjson,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Ndjson => "application/x-ndjson",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Ndjson => "ndjson",
        }
    }
}

/// One exported event: `UsageRecord` v1's JSON shape, built from the row without parsing its
/// enums (an export never fails on a value this build does not know).
#[derive(Serialize)]
struct ExportRow<'a> {
    event_id: Uuid,
    schema_version: u16,
    #[serde(with = "usage_core::rfc3339")]
    ts: DateTime<Utc>,
    latency_ms: u32,
    ttft_ms: Option<u32>,
    upstream_ms: u32,
    org_id: &'a str,
    user_id: &'a str,
    app_id: &'a str,
    key_id: &'a str,
    tags: BTreeMap<&'a str, &'a str>,
    provider: &'a str,
    model_requested: &'a str,
    model_served: &'a str,
    endpoint: &'a str,
    task_type: &'a str,
    stream: bool,
    edge_region: &'a str,
    status_code: u16,
    error_class: &'a str,
    input_tokens: u32,
    output_tokens: u32,
    cached_input_tokens: u32,
    cache_write_tokens: u32,
    reasoning_tokens: u32,
    audio_input_tokens: u32,
    image_input_tokens: u32,
    audio_output_tokens: u32,
    image_output_tokens: u32,
    usage_source: &'a str,
    web_search_calls: u32,
    file_search_calls: u32,
    service_tier_requested: &'a str,
    service_tier: &'a str,
    cost_nusd: Nanos,
    cost_source: &'a str,
    pricing_version: &'a str,
    request_bytes: u64,
    response_bytes: u64,
}

impl<'a> From<&'a UsageEventRow> for ExportRow<'a> {
    fn from(r: &'a UsageEventRow) -> Self {
        ExportRow {
            event_id: r.event_id,
            schema_version: r.schema_version,
            ts: r.ts,
            latency_ms: r.latency_ms,
            ttft_ms: r.ttft_ms,
            upstream_ms: r.upstream_ms,
            org_id: &r.org_id,
            user_id: &r.user_id,
            app_id: &r.app_id,
            key_id: &r.key_id,
            tags: r
                .tag_keys
                .iter()
                .map(String::as_str)
                .zip(r.tag_values.iter().map(String::as_str))
                .collect(),
            provider: &r.provider,
            model_requested: &r.model_requested,
            model_served: &r.model_served,
            endpoint: &r.endpoint,
            task_type: &r.task_type,
            stream: r.stream,
            edge_region: &r.edge_region,
            status_code: r.status_code,
            error_class: &r.error_class,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cached_input_tokens: r.cached_input_tokens,
            cache_write_tokens: r.cache_write_tokens,
            reasoning_tokens: r.reasoning_tokens,
            audio_input_tokens: r.audio_input_tokens,
            image_input_tokens: r.image_input_tokens,
            audio_output_tokens: r.audio_output_tokens,
            image_output_tokens: r.image_output_tokens,
            usage_source: &r.usage_source,
            web_search_calls: r.web_search_calls,
            file_search_calls: r.file_search_calls,
            service_tier_requested: &r.service_tier_requested,
            service_tier: &r.service_tier,
            cost_nusd: Nanos::new(r.cost_nusd),
            cost_source: &r.cost_source,
            pricing_version: &r.pricing_version,
            request_bytes: r.request_bytes,
            response_bytes: r.response_bytes,
        }
    }
}

/// Appends one CSV cell, quoted when it must be.
fn csv_cell(out: &mut Vec<u8>, text: &str) {
    let quote =
        text.contains([',', '"', '\n', '\r']) || text.starts_with(' ') || text.ends_with(' ');
    if quote {
        out.push(b'"');
        out.extend_from_slice(text.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(text.as_bytes());
    }
}

/// Whether a spreadsheet would take a cell with this text for a formula.
fn looks_like_formula(text: &str) -> bool {
    text.starts_with(['=', '+', '-', '@', '\t', '\r'])
}

/// Appends a cell of caller-chosen text: as [`csv_cell`], but a formula-like text gets a
/// leading `'` and is quoted, so that no spreadsheet evaluates it.
fn csv_text_cell(out: &mut Vec<u8>, text: &str) {
    if looks_like_formula(text) {
        out.extend_from_slice(b"\"'");
        out.extend_from_slice(text.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        csv_cell(out, text);
    }
}

/// One CSV cell: a value this service formats (numbers, times, ids, the tags JSON), or text a
/// caller chose.
enum Cell<'a> {
    Value(String),
    Text(&'a str),
}

fn csv_header(out: &mut Vec<u8>) {
    out.extend_from_slice(COLUMNS.join(",").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends one row in `format`.
pub fn encode(format: Format, row: &UsageEventRow, out: &mut Vec<u8>) {
    let r = ExportRow::from(row);
    match format {
        Format::Ndjson => {
            // Serializing plain strings and numbers into a Vec cannot fail.
            if serde_json::to_writer(&mut *out, &r).is_ok() {
                out.push(b'\n');
            }
        }
        Format::Csv => {
            let ts = usage_core::rfc3339::format(&r.ts).unwrap_or_default();
            let tags = serde_json::to_string(&r.tags).unwrap_or_default();
            let v = |x: &dyn ToString| Cell::Value(x.to_string());
            let cells: [Cell<'_>; 39] = [
                v(&r.event_id),
                v(&r.schema_version),
                Cell::Value(ts),
                v(&r.latency_ms),
                Cell::Value(r.ttft_ms.map(|t| t.to_string()).unwrap_or_default()),
                v(&r.upstream_ms),
                Cell::Text(r.org_id),
                Cell::Text(r.user_id),
                Cell::Text(r.app_id),
                Cell::Text(r.key_id),
                Cell::Value(tags),
                Cell::Text(r.provider),
                Cell::Text(r.model_requested),
                Cell::Text(r.model_served),
                Cell::Text(r.endpoint),
                Cell::Text(r.task_type),
                v(&r.stream),
                Cell::Text(r.edge_region),
                v(&r.status_code),
                Cell::Text(r.error_class),
                v(&r.input_tokens),
                v(&r.output_tokens),
                v(&r.cached_input_tokens),
                v(&r.cache_write_tokens),
                v(&r.reasoning_tokens),
                v(&r.audio_input_tokens),
                v(&r.image_input_tokens),
                v(&r.audio_output_tokens),
                v(&r.image_output_tokens),
                Cell::Text(r.usage_source),
                v(&r.web_search_calls),
                v(&r.file_search_calls),
                Cell::Text(r.service_tier_requested),
                Cell::Text(r.service_tier),
                v(&r.cost_nusd),
                Cell::Text(r.cost_source),
                Cell::Text(r.pricing_version),
                v(&r.request_bytes),
                v(&r.response_bytes),
            ];
            for (i, c) in cells.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                match c {
                    Cell::Value(text) => csv_cell(out, text),
                    Cell::Text(text) => csv_text_cell(out, text),
                }
            }
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// The `{scope}` text: the tenant predicate, then the optional provider and model filters.
/// `model` means what the rollups mean by it: the model the app requested (migration 0010).
fn predicate(filter: &Filter) -> String {
    let mut p = format!("({})", filter.scope.predicate());
    if filter.provider.is_some() {
        p.push_str(" AND provider = ?");
    }
    if filter.model.is_some() {
        p.push_str(" AND model_requested = ?");
    }
    p
}

/// Query parameters of `GET /api/v1/export`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ExportQuery {
    /// `csv` (default) or `ndjson`.
    format: Option<String>,
    /// Start: RFC 3339 time or `YYYY-MM-DD` (UTC). Default: 30 days before `to`.
    from: Option<String>,
    /// End (exclusive): RFC 3339 time, or a date meaning the end of that day. Default: now.
    to: Option<String>,
    /// Only this provider.
    provider: Option<String>,
    /// Only this model (the served model, or the requested one when none was served).
    model: Option<String>,
    /// Admins: one org. Others: must be their own org, or absent.
    org: Option<String>,
    /// Only this user of the org.
    user: Option<String>,
    /// At most this many rows (1 to the server's row cap, which is also the default).
    limit: Option<u64>,
}

/// Raw usage events in scope, streamed as CSV (with a header row) or NDJSON.
#[utoipa::path(get, path = "/api/v1/export", operation_id = "export_events", tag = "export", params(ExportQuery),
    responses((status = 200, description = "The events, streamed", content(
                  (String = "text/csv"), (String = "application/x-ndjson"))),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn export(
    State(state): State<AppState>,
    principal: Principal,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    // `limit` means rows here, with the export cap as its bound, not the analytics' top-N
    // limit: take it out before the shared parser sees it.
    let mut map = params::parse_query(raw.as_deref())?;
    let cap = state.config().api.export_row_cap;
    let limit = match map.remove("limit") {
        None => cap,
        Some(l) => l
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=cap).contains(n))
            .ok_or_else(|| {
                ApiError::bad(
                    "limit",
                    format!("`limit` must be a whole number from 1 to {cap}"),
                )
            })?,
    };
    let rest = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(map.iter())
        .finish();
    let (p, filter) = analytics::request(&state, &principal, Some(&rest))?;
    let format = match p.format.as_deref() {
        None | Some("csv") => Format::Csv,
        Some("ndjson") => Format::Ndjson,
        Some(_) => return Err(ApiError::bad("format", "`format` must be csv or ndjson")),
    };

    let sql = EXPORT_EVENTS.body().replace("{scope}", &predicate(&filter));
    let mut q = read_query(state.client(), &sql);
    q = match &filter.scope {
        Scope::AllOrgs => q,
        Scope::Org { org_id } => q.bind(org_id.as_str()),
        Scope::OrgUser { org_id, user_id } => q.bind(org_id.as_str()).bind(user_id.as_str()),
        Scope::OrgApp { org_id, app_id } => q.bind(org_id.as_str()).bind(app_id.as_str()),
    };
    if let Some(provider) = &filter.provider {
        q = q.bind(provider.as_str());
    }
    if let Some(model) = &filter.model {
        q = q.bind(model.as_str());
    }
    // ts is stored to the second: [floor(from), ceil(to)).
    let from = p.window.from.timestamp();
    let to = p.window.to.timestamp() + i64::from(p.window.to.nanosecond() > 0);
    let mut cursor = q.bind(from).bind(to).bind(limit).fetch::<UsageEventRow>()?;
    // The first row is read before answering, so a failing query is an error status rather
    // than a cut-off 200.
    let first = cursor.next().await?;

    let mut head = Vec::new();
    if format == Format::Csv {
        csv_header(&mut head);
    }
    if let Some(row) = &first {
        encode(format, row, &mut head);
    }
    let more = first.is_some().then_some(cursor);
    let body = futures_util::stream::unfold((Some(head), more), move |(head, cursor)| {
        next_chunk(format, head, cursor)
    });

    let day = |t: DateTime<Utc>| format!("{:04}{:02}{:02}", t.year(), t.month(), t.day());
    let filename = format!(
        "tollgate-usage-{}-{}.{}",
        day(p.window.from),
        day(p.window.to),
        format.extension()
    );
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        ),
        (
            header::CONTENT_DISPOSITION,
            HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
                .unwrap_or(HeaderValue::from_static("attachment")),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ];
    let mut resp = (headers, Body::from_stream(body)).into_response();
    resp.headers_mut()
        .insert("x-tollgate-row-limit", HeaderValue::from(limit));
    Ok(resp)
}

type ChunkState = (Option<Vec<u8>>, Option<RowCursor<UsageEventRow>>);

/// The next chunk of the body: what was encoded before answering, then rows from the cursor
/// until a chunk is full or the rows end.
async fn next_chunk(
    format: Format,
    head: Option<Vec<u8>>,
    cursor: Option<RowCursor<UsageEventRow>>,
) -> Option<(Result<Bytes, std::io::Error>, ChunkState)> {
    let mut buf = head.unwrap_or_default();
    let Some(mut cursor) = cursor else {
        return (!buf.is_empty()).then(|| (Ok(Bytes::from(buf)), (None, None)));
    };
    loop {
        if buf.len() >= CHUNK_BYTES {
            return Some((Ok(Bytes::from(buf)), (None, Some(cursor))));
        }
        match cursor.next().await {
            Ok(Some(row)) => encode(format, &row, &mut buf),
            Ok(None) => return (!buf.is_empty()).then(|| (Ok(Bytes::from(buf)), (None, None))),
            Err(e) => {
                // Headers are sent: all that is left is to cut the body short, which the
                // client sees as an incomplete transfer.
                tracing::error!(error = %e, "export stream failed");
                return Some((Err(std::io::Error::other(e.to_string())), (None, None)));
            }
        }
    }
}

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/export", get(export))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn csv_cells_are_quoted_only_when_needed() {
        let mut out = Vec::new();
        for s in ["plain", "a,b", "say \"hi\"", "two\nlines", " edge", ""] {
            csv_cell(&mut out, s);
            out.push(b'|');
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "plain|\"a,b\"|\"say \"\"hi\"\"\"|\"two\nlines\"|\" edge\"||"
        );
    }

    #[test]
    fn formula_like_text_is_neutralised_and_quoted() {
        let mut out = Vec::new();
        for s in [
            "=HYPERLINK(\"http://x\",\"y\")",
            "+1",
            "-2+3",
            "@SUM(A1)",
            "\tcmd",
            "\r=1",
            "a=b",
            "plain",
        ] {
            csv_text_cell(&mut out, s);
            out.push(b'|');
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\"|\"'+1\"|\"'-2+3\"|\"'@SUM(A1)\"|\"'\tcmd\"|\"'\r=1\"|a=b|plain|"
        );
    }

    #[test]
    fn an_exported_row_neutralises_caller_text_but_not_numbers() {
        let shape = tollgate_clickhouse::synthetic::Shape {
            orgs: 1,
            users_per_org: 1,
            apps_per_org: 1,
            start: DateTime::UNIX_EPOCH,
            span: TimeDelta::days(1),
        };
        let record = tollgate_clickhouse::synthetic::Synthetic::new(1, 1, shape)
            .next()
            .unwrap();
        let mut row = UsageEventRow::from(&record);
        row.org_id = "=cmd|' /C calc'!A0".into();
        row.user_id = "@user".into();
        row.model_requested = "-m".into();
        row.task_type = "+task".into();
        row.tag_keys = vec!["k".into()];
        row.tag_values = vec!["=1".into()];
        row.cost_nusd = -5;
        let mut out = Vec::new();
        encode(Format::Csv, &row, &mut out);
        let line = String::from_utf8(out).unwrap();
        assert!(
            line.contains(",\"'=cmd|' /C calc'!A0\",\"'@user\","),
            "{line}"
        );
        assert!(line.contains(",\"'-m\","), "{line}");
        assert!(line.contains(",\"'+task\","), "{line}");
        // The tags cell begins with `{`: a spreadsheet reads it as text.
        assert!(line.contains(",\"{\"\"k\"\":\"\"=1\"\"}\","), "{line}");
        // Numbers this service formats are left alone, even a negative one.
        assert!(line.contains(",-0.000000005,"), "{line}");
        // NDJSON is JSON: nothing to neutralise.
        let mut nd = Vec::new();
        encode(Format::Ndjson, &row, &mut nd);
        let v: serde_json::Value = serde_json::from_slice(&nd).unwrap();
        assert_eq!(v["org_id"], "=cmd|' /C calc'!A0");
    }

    #[test]
    fn model_filter_matches_what_the_rollups_call_model() {
        let f = Filter {
            scope: Scope::OrgUser {
                org_id: "o".into(),
                user_id: "u".into(),
            },
            provider: Some("openai".into()),
            model: Some("m".into()),
        };
        assert_eq!(
            predicate(&f),
            "(org_id = ? AND user_id = ?) AND provider = ? AND model_requested = ?"
        );
    }
}
