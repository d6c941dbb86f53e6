//! The price book: read it, change it, reprice with it, and serve it to the edge.
//!
//! - `GET /api/v1/prices` — the book in force (any token): its version and every entry.
//! - `PUT /api/v1/prices` — an admin sets one entry (a model's prices from a day on): a new
//!   version of a built-in entry's key replaces it, another day adds a version of the model's
//!   prices (price history: records keep the price in force at their timestamp).
//! - `DELETE /api/v1/prices?provider=&model=&effective_from=` — an admin removes their entry.
//! - `POST /api/v1/admin/reprice` — an admin reprices a time range with the book in force
//!   (`tollgate_clickhouse::reprice`: raw rows, then every rollup bucket they fall in).
//! - `GET /internal/v1/prices` — the edge's copy (signed request, as the key lookup): the book
//!   as `usage_core::read_price_lines` text, with `ETag: "<version>"` (a matching
//!   `If-None-Match` gets 304) and the body signed with `x-tollgate-signature` (the same HMAC
//!   scheme over the body), so an edge never prices with a book that did not come from here.
//!
//! The book is read from ClickHouse at most every [`BOOK_TTL`] per instance and at once after a
//! change made through this instance; an edge isolate keeps its copy for `PRICES_CACHE_SECS`
//! (default 60 s). So a price change reaches every edge within `BOOK_TTL` + `PRICES_CACHE_SECS`
//! without a redeploy; the edge falls back to its built-in table only while it has never
//! had an answer from here.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tollgate_clickhouse::prices as store;
use tollgate_clickhouse::reprice::{self, RepriceReport, RepriceRequest};
use usage_core::{ModelPrice, PriceFile, PriceTable};
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::internal_budgets::verify_internal;
use crate::AppState;

/// How long an instance serves the book it read before reading it again.
pub const BOOK_TTL: Duration = Duration::from_secs(5);
/// The header that names the book's version on the edge's copy.
pub const VERSION_HEADER: &str = "x-tollgate-pricing-version";
/// The widest range one reprice covers.
const MAX_REPRICE_DAYS: i64 = 400;

/// The book as last read, shared by the handlers.
#[derive(Default)]
pub struct BookCache {
    current: Mutex<Option<(Instant, std::sync::Arc<Book>)>>,
    /// One reprice at a time per instance.
    repricing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for BookCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BookCache").finish_non_exhaustive()
    }
}

/// One version of the price book, in the forms its readers need.
#[derive(Debug)]
pub struct Book {
    pub file: PriceFile,
    pub table: PriceTable,
    /// The edge's form (`PriceFile::to_lines`).
    pub lines: String,
    pub overrides: Vec<store::PriceOverride>,
}

impl BookCache {
    fn fresh(&self) -> Option<std::sync::Arc<Book>> {
        let guard = self.current.lock().ok()?;
        let (at, book) = guard.as_ref()?;
        (at.elapsed() < BOOK_TTL).then(|| book.clone())
    }

    fn forget(&self) {
        if let Ok(mut guard) = self.current.lock() {
            *guard = None;
        }
    }
}

/// The book in force (cached for [`BOOK_TTL`]); a new version is written to `model_prices`.
pub async fn book(state: &AppState) -> ApiResult<std::sync::Arc<Book>> {
    if let Some(book) = state.price_book().fresh() {
        return Ok(book);
    }
    let builtin = PriceFile::builtin()
        .map_err(|e| ApiError::Internal(format!("built-in price file: {e}")))?;
    let overrides = store::overrides(state.client()).await?;
    let file = store::merge(&builtin, &overrides);
    let table = PriceTable::from_file(file.clone())
        .map_err(|e| ApiError::Internal(format!("price book: {e}")))?;
    let previous = state
        .price_book()
        .current
        .lock()
        .ok()
        .and_then(|g| g.as_ref().map(|(_, b)| b.table.version().to_string()));
    if previous.as_deref() != Some(table.version()) {
        store::record_version(state.client(), &table).await?;
    }
    let book = std::sync::Arc::new(Book {
        lines: file.to_lines(),
        file,
        table,
        overrides,
    });
    if let Ok(mut guard) = state.price_book().current.lock() {
        *guard = Some((Instant::now(), book.clone()));
    }
    Ok(book)
}

/// The book as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PriceBookOut {
    /// The version records priced with this book carry (`pricing_version`).
    pub pricing_version: String,
    /// Every entry: provider, model, `effective_from` and rates (USD per 1M tokens as decimal
    /// strings; `per_request`, `web_search`, `file_search` in USD per call; `tiers` by name).
    #[schema(value_type = Vec<Object>)]
    pub models: Vec<ModelPrice>,
    /// The entries set by admins (the rest come with the release).
    pub overrides: Vec<OverrideOut>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OverrideOut {
    pub provider: String,
    pub model: String,
    /// `YYYY-MM-DD`.
    pub effective_from: String,
    pub created_by: String,
    #[serde(with = "usage_core::rfc3339")]
    #[schema(value_type = String)]
    pub updated_at: DateTime<Utc>,
}

/// Query of `GET /api/v1/prices`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    provider: Option<String>,
    model: Option<String>,
}

/// The price book in force.
#[utoipa::path(get, path = "/api/v1/prices", operation_id = "list_prices", tag = "prices",
    params(("provider" = Option<String>, Query, description = "Only this provider's entries"),
           ("model" = Option<String>, Query, description = "Only this model's entries")),
    responses((status = 200, body = PriceBookOut), (status = 400, body = crate::error::ErrorBody),
              (status = 401, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _principal: Principal,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<PriceBookOut>> {
    let q: ListQuery = serde_urlencoded_strict(raw.as_deref().unwrap_or(""))?;
    let book = book(&state).await?;
    let keep = |provider: &str, model: &str| {
        q.provider.as_deref().is_none_or(|p| p == provider)
            && q.model.as_deref().is_none_or(|m| m == model)
    };
    Ok(Json(PriceBookOut {
        pricing_version: book.table.version().to_string(),
        models: book
            .file
            .models
            .iter()
            .filter(|p| keep(&p.provider, &p.model))
            .cloned()
            .collect(),
        overrides: book
            .overrides
            .iter()
            .filter(|o| keep(&o.price.provider, &o.price.model))
            .map(|o| OverrideOut {
                provider: o.price.provider.clone(),
                model: o.price.model.clone(),
                effective_from: day_text(o.price.effective_from),
                created_by: o.created_by.clone(),
                updated_at: o.updated_at,
            })
            .collect(),
    }))
}

fn serde_urlencoded_strict<T: for<'de> Deserialize<'de> + Default>(raw: &str) -> ApiResult<T> {
    let pairs: serde_json::Map<String, serde_json::Value> = form_urlencoded::parse(raw.as_bytes())
        .map(|(k, v)| (k.into_owned(), serde_json::Value::String(v.into_owned())))
        .collect();
    serde_json::from_value(serde_json::Value::Object(pairs)).map_err(|e| {
        let msg = e.to_string();
        let field = msg.split('`').nth(1).unwrap_or("query").to_string();
        ApiError::bad(&field, msg)
    })
}

fn day_text(d: NaiveDate) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
}

/// Answer of a change to the book.
#[derive(Debug, Serialize, ToSchema)]
pub struct PriceChangeOut {
    /// The book's version after the change: the next calls' `pricing_version`.
    pub pricing_version: String,
    #[schema(value_type = Object)]
    pub entry: ModelPrice,
}

/// Sets one price entry (admin only). Body: a price entry — `provider`, `model`,
/// `effective_from` (`YYYY-MM-DD`), `input`, `output` and any of `cached_input`,
/// `cache_write`, `reasoning`, `audio_input`, `audio_output`, `image_input`, `image_output`
/// (USD per 1M tokens), `per_request`, `web_search`, `file_search` (USD per call),
/// `max_output_tokens`, `tiers` (`{"flex": {"input", "cached_input", "output"}}`).
#[utoipa::path(put, path = "/api/v1/prices", operation_id = "set_price", tag = "prices",
    request_body(content = Object, description = "A price entry (see the operation's description)"),
    responses((status = 200, body = PriceChangeOut), (status = 400, body = crate::error::ErrorBody),
              (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn put(
    State(state): State<AppState>,
    principal: Principal,
    body: Bytes,
) -> ApiResult<Json<PriceChangeOut>> {
    principal.require_admin()?;
    let de = &mut serde_json::Deserializer::from_slice(&body);
    let entry: ModelPrice = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        // The path ends at an unknown field, but stops above a missing one (serde names it
        // in the message).
        let named = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next());
        let field = match (path.as_str(), named) {
            (".", Some(name)) => name.to_string(),
            (".", None) => "body".to_string(),
            (path, Some(name)) => format!("{path}.{name}"),
            (path, None) => path.to_string(),
        };
        ApiError::bad(&field, message)
    })?;
    validate_entry(&entry)?;
    // The book with this entry must load (no negative rate, …) before it is stored.
    let current = book(&state).await?;
    let mut with = current.overrides.clone();
    with.retain(|o| {
        !(o.price.provider == entry.provider
            && o.price.model == entry.model
            && o.price.effective_from == entry.effective_from)
    });
    with.push(store::PriceOverride {
        price: entry.clone(),
        created_by: String::new(),
        updated_at: DateTime::UNIX_EPOCH,
    });
    let builtin = PriceFile::builtin()
        .map_err(|e| ApiError::Internal(format!("built-in price file: {e}")))?;
    PriceTable::from_file(store::merge(&builtin, &with)).map_err(|e| {
        let reason = e.to_string();
        let reason = reason.split_once("): ").map_or(reason.as_str(), |(_, r)| r);
        ApiError::bad("entry", reason.to_string())
    })?;
    store::write_override(state.client(), &entry, principal.token_id.as_str()).await?;
    state.price_book().forget();
    let after = book(&state).await?;
    tracing::info!(
        provider = %entry.provider, model = %entry.model, effective_from = %entry.effective_from,
        by = %principal.token_id.as_str(), pricing_version = %after.table.version(), "price entry set"
    );
    Ok(Json(PriceChangeOut {
        pricing_version: after.table.version().to_string(),
        entry,
    }))
}

fn validate_entry(p: &ModelPrice) -> ApiResult<()> {
    let text = |field: &str, v: &str, max: usize| {
        if v.is_empty() {
            return Err(ApiError::bad(field, "must not be empty"));
        }
        if v.len() > max || v.contains(|c: char| c.is_control() || c == '\t') {
            return Err(ApiError::bad(
                field,
                format!("must be at most {max} bytes, without control characters"),
            ));
        }
        Ok(())
    };
    text(
        "provider",
        &p.provider,
        usage_core::record::limits::MAX_ID_LEN,
    )?;
    text("model", &p.model, usage_core::record::limits::MAX_MODEL_LEN)?;
    if p.effective_from.year() < 2000 || p.effective_from.year() > 2999 {
        return Err(ApiError::bad(
            "effective_from",
            "must be a date in 2000–2999",
        ));
    }
    for name in p.tiers.keys() {
        text(&format!("tiers.{name}"), name, 32)?;
        if usage_core::price::STANDARD_TIERS.contains(&name.as_str()) {
            return Err(ApiError::bad(
                &format!("tiers.{name}"),
                "is the standard tier: its rates are the entry's own",
            ));
        }
    }
    Ok(())
}

/// Removes an admin's price entry (admin only); a built-in entry of the same key applies
/// again.
#[utoipa::path(delete, path = "/api/v1/prices", operation_id = "delete_price", tag = "prices",
    params(("provider" = String, Query), ("model" = String, Query),
           ("effective_from" = String, Query, description = "YYYY-MM-DD")),
    responses((status = 204, description = "removed"), (status = 400, body = crate::error::ErrorBody),
              (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    RawQuery(raw): RawQuery,
) -> ApiResult<StatusCode> {
    principal.require_admin()?;
    #[derive(Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Key {
        provider: Option<String>,
        model: Option<String>,
        effective_from: Option<String>,
    }
    let k: Key = serde_urlencoded_strict(raw.as_deref().unwrap_or(""))?;
    let need =
        |v: Option<String>, field: &str| v.ok_or_else(|| ApiError::bad(field, "is required"));
    let provider = need(k.provider, "provider")?;
    let model = need(k.model, "model")?;
    let day_text = need(k.effective_from, "effective_from")?;
    let day = usage_core::rfc3339::parse_day(&day_text)
        .ok_or_else(|| ApiError::bad("effective_from", "must be YYYY-MM-DD"))?;
    let removed = store::delete_override(
        state.client(),
        &provider,
        &model,
        day,
        principal.token_id.as_str(),
    )
    .await?;
    state.price_book().forget();
    if removed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "no admin price entry for {provider}/{model} from {day_text}"
        )))
    }
}

/// Body of `POST /api/v1/admin/reprice`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RepriceIn {
    /// Start of the range (RFC 3339), inclusive.
    #[serde(with = "usage_core::rfc3339")]
    #[schema(value_type = String)]
    pub from: DateTime<Utc>,
    /// End of the range (RFC 3339), exclusive.
    #[serde(with = "usage_core::rfc3339")]
    #[schema(value_type = String)]
    pub to: DateTime<Utc>,
    /// Only this provider's calls.
    #[serde(default)]
    pub provider: Option<String>,
    /// Only calls that asked for this model.
    #[serde(default)]
    pub model: Option<String>,
}

/// What a reprice did.
#[derive(Debug, Serialize, ToSchema)]
pub struct RepriceOut {
    #[schema(value_type = String)]
    pub run_id: uuid::Uuid,
    pub pricing_version: String,
    pub rows_seen: u64,
    pub rows_changed: u64,
    pub rows_newly_priced: u64,
    /// Summed cost of the changed rows before and after, USD.
    pub cost_before_usd: String,
    pub cost_after_usd: String,
    pub buckets_rebuilt: u64,
    pub buckets_still_different: u64,
}

impl From<RepriceReport> for RepriceOut {
    fn from(r: RepriceReport) -> Self {
        let usd =
            |n: i128| usage_core::Nanos::new(i64::try_from(n).unwrap_or(i64::MAX)).to_string();
        RepriceOut {
            run_id: r.run_id,
            pricing_version: r.pricing_version,
            rows_seen: r.rows_seen,
            rows_changed: r.rows_changed,
            rows_newly_priced: r.rows_newly_priced,
            cost_before_usd: usd(r.cost_before_nusd),
            cost_after_usd: usd(r.cost_after_nusd),
            buckets_rebuilt: r.buckets_rebuilt,
            buckets_still_different: r.buckets_still_different,
        }
    }
}

/// Reprices a time range with the price book in force (admin only): raw rows get the new cost
/// and `pricing_version`, and every rollup bucket they fall in is rebuilt from them. Running it
/// again changes nothing.
#[utoipa::path(post, path = "/api/v1/admin/reprice", operation_id = "reprice", tag = "prices", request_body = RepriceIn,
    responses((status = 200, body = RepriceOut), (status = 400, body = crate::error::ErrorBody),
              (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn reprice_range(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<RepriceOut>> {
    principal.require_admin()?;
    let r: RepriceIn = crate::budgets::input::json_body(body)?;
    if r.to <= r.from {
        return Err(ApiError::bad("to", "must be after `from`"));
    }
    if (r.to - r.from).num_days() > MAX_REPRICE_DAYS {
        return Err(ApiError::bad(
            "to",
            format!("a reprice covers at most {MAX_REPRICE_DAYS} days"),
        ));
    }
    let Ok(_one) = state.price_book().repricing.try_lock() else {
        return Err(ApiError::Conflict(
            "a reprice is already running on this instance".into(),
        ));
    };
    state.price_book().forget();
    let book = book(&state).await?;
    let req = RepriceRequest {
        from: r.from,
        to: r.to,
        provider: r.provider.filter(|p| !p.is_empty()),
        model: r.model.filter(|m| !m.is_empty()),
        requested_by: principal.token_id.as_str().to_string(),
    };
    let report = reprice::reprice(state.client(), &book.table, &req).await?;
    Ok(Json(report.into()))
}

/// The edge's copy of the book (signed both ways; see the module docs).
#[utoipa::path(get, path = "/internal/v1/prices", operation_id = "internal_prices", tag = "internal",
    params(("x-tollgate-signature" = String, Header, description = "t=<unix>,v1=<hex hmac-sha256(secret, t + \".\" + request path)>"),
           ("if-none-match" = Option<String>, Header, description = "The ETag of the copy the edge has")),
    responses((status = 200, description = "The price book as lines (usage_core::read_price_lines); ETag and x-tollgate-pricing-version name its version, x-tollgate-signature signs the body", content_type = "text/tab-separated-values"),
              (status = 304, description = "The edge's copy is current"),
              (status = 401, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub async fn internal_book(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> ApiResult<Response> {
    verify_internal(&state, &headers, uri.path())?;
    let book = book(&state).await?;
    let etag = format!("\"{}\"", book.table.version());
    let version = HeaderValue::from_str(book.table.version())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let etag_value = HeaderValue::from_str(&etag).map_err(|e| ApiError::Internal(e.to_string()))?;
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    if matches {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [
                (header::ETAG, etag_value),
                (header::HeaderName::from_static(VERSION_HEADER), version),
            ],
        )
            .into_response());
    }
    // Signed with every configured secret: an edge holding either side of a rotation verifies.
    let secrets: Vec<&[u8]> = state
        .config()
        .internal
        .signing_secrets
        .iter()
        .map(|s| s.expose().as_bytes())
        .collect();
    let signature =
        usage_core::wire::sign_with_each(&secrets, Utc::now().timestamp(), book.lines.as_bytes());
    let signature =
        HeaderValue::from_str(&signature).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/tab-separated-values; charset=utf-8"),
            ),
            (header::ETAG, etag_value),
            (header::HeaderName::from_static(VERSION_HEADER), version),
            (
                header::HeaderName::from_static(usage_core::wire::SIGNATURE_HEADER),
                signature,
            ),
        ],
        book.lines.clone(),
    )
        .into_response())
}

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/prices", get(list).put(put).delete(delete))
        .route("/api/v1/admin/reprice", post(reprice_range))
        .route("/internal/v1/prices", get(internal_book))
}
