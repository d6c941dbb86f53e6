//! App keys for the edge (`tg_…`): created here, shown once, stored only as SHA-256, listed
//! and revoked by their public `key_id`; and the signed internal lookup the edge worker uses
//! to resolve a presented key.
//!
//! - [`KeyIn`] → [`KeyCreated`] (the secret, once) and [`KeyOut`] (never the secret nor its
//!   hash). Rows live in `app_keys` (ReplacingMergeTree by `key_hash`); revoking writes a new
//!   version with `revoked_at` set.
//! - [`AppKeyOut`] is what `GET /internal/v1/keys/{sha256}` answers: the edge worker's
//!   `AppKey`. The request is signed like a collector batch (`usage_core::wire`):
//!   `x-tollgate-signature: t=<unix>,v1=<hmac-sha256(secret, t + "." + path)>` where the
//!   message is the request path (so a signature cannot be replayed for another key), checked
//!   against `internal.signing_secrets` within
//!   [`wire::REPLAY_WINDOW_SECS`]. Without configured secrets the endpoint does not exist
//!   (404); a bad signature is a 401; an unknown or revoked key a 404.
//!
//! How keys reach the edge: the worker (vars `KEYS_URL`, secret `KEYS_SIGNING_SECRET`) calls
//! the lookup on a cache miss and keeps each answer, found or not, for `KEYS_CACHE_SECS`
//! (default 30 s). A new key therefore works at once unless the same secret was tried in the
//! last `KEYS_CACHE_SECS`; a revoked key stops working within `KEYS_CACHE_SECS` at every edge
//! isolate. See `edge-worker/src/keys.rs`.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tollgate_clickhouse::clickhouse::{self, Client, Row};
use tollgate_clickhouse::queries::NamedQuery;
use tollgate_clickhouse::read_query;
use usage_core::keys::{hash_secret, APP_KEY_PREFIX};
use usage_core::wire;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::{new_secret, Principal};
use crate::budgets::input;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::AppState;
use tollgate_clickhouse::{now_second, row_version};

const APP_KEYS_LIST: NamedQuery = NamedQuery {
    name: "admin/app_keys_list",
    sql: include_str!("../../clickhouse/queries/admin/app_keys_list.sql"),
};
const APP_KEY_BY_ID: NamedQuery = NamedQuery {
    name: "admin/app_key_by_id",
    sql: include_str!("../../clickhouse/queries/admin/app_key_by_id.sql"),
};
const APP_KEY_BY_HASH: NamedQuery = NamedQuery {
    name: "admin/app_key_by_hash",
    sql: include_str!("../../clickhouse/queries/admin/app_key_by_hash.sql"),
};

/// Longest user or app id: what a usage record accepts (`usage_core::record::limits`).
const MAX_ID_LEN: usize = 128;

/// A new app key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyIn {
    /// Admins: the org (required). Others: their own org, or absent.
    #[serde(default)]
    pub org_id: Option<String>,
    /// The user every call with this key is attributed to (optional; 1–128 characters).
    #[serde(default)]
    pub user_id: Option<String>,
    /// The app the key belongs to (1–128 characters).
    pub app_id: String,
    /// A label for people (1–200 characters).
    pub name: String,
    /// A server app acting for many users of its own: only such a key may name the call's
    /// user in `x-tollgate-user` (the end user, then subject to that user's budgets). Default
    /// `false`: every call is the key's user's, and a call naming another user is refused
    /// (403 `end_user_not_allowed`).
    #[serde(default)]
    pub acts_for_end_users: bool,
}

/// An app key as listed: never its secret or hash.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct KeyOut {
    pub key_id: String,
    pub org_id: String,
    pub user_id: Option<String>,
    pub app_id: String,
    pub name: String,
    /// Whether calls may name their end user in `x-tollgate-user` (see [`KeyIn`]).
    pub acts_for_end_users: bool,
    #[serde(with = "usage_core::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    /// Set once revoked.
    #[serde(with = "usage_core::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A created key: the secret is in this response only.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyCreated {
    /// `tg_` + 64 hex digits. Not stored (only its SHA-256 is): copy it now.
    pub secret: String,
    pub key: KeyOut,
}

/// What the edge worker needs to know about a key (its `AppKey`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AppKeyOut {
    pub key_id: String,
    pub org_id: String,
    /// Empty when the key names no user.
    pub user_id: String,
    pub app_id: String,
    /// Whether calls may name their end user in `x-tollgate-user`.
    pub acts_for_end_users: bool,
}

/// A row of `app_keys` (migrations 0003 and 0013), column for column.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub struct KeyRow {
    pub key_hash: String,
    pub key_id: String,
    pub org_id: String,
    pub user_id: String,
    pub app_id: String,
    pub name: String,
    /// No longer written or read (0013): budgets apply by the call's org, user and app.
    pub budget_scope: String,
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "clickhouse::serde::chrono::datetime::option")]
    pub revoked_at: Option<DateTime<Utc>>,
    pub version: u64,
    pub acts_for_end_users: u8,
}

impl KeyRow {
    fn to_out(&self) -> KeyOut {
        KeyOut {
            key_id: self.key_id.clone(),
            org_id: self.org_id.clone(),
            user_id: (!self.user_id.is_empty()).then(|| self.user_id.clone()),
            app_id: self.app_id.clone(),
            name: self.name.clone(),
            acts_for_end_users: self.acts_for_end_users != 0,
            created_at: self.created_at,
            revoked_at: self.revoked_at,
        }
    }
}

async fn write(client: &Client, row: &KeyRow) -> ApiResult<()> {
    let mut insert = client.insert::<KeyRow>("app_keys").await?;
    insert.write(row).await?;
    insert.end().await?;
    Ok(())
}

/// The app keys the caller may see, revoked ones included (user-bound viewers: their own).
#[utoipa::path(get, path = "/api/v1/keys", operation_id = "list_keys", tag = "keys", params(crate::params::OrgQuery),
    responses((status = 200, body = [KeyOut]), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Vec<KeyOut>>> {
    Ok(Json(
        compute_list(&state, &principal, raw.as_deref()).await?,
    ))
}

/// The keys of `GET /api/v1/keys` (the web Keys tab lists them too).
pub async fn compute_list(
    state: &AppState,
    principal: &Principal,
    raw: Option<&str>,
) -> ApiResult<Vec<KeyOut>> {
    let q = input::query(raw, &["org"])?;
    let scope = principal.read_scope(q.get("org").map(String::as_str), None)?;
    let rows = APP_KEYS_LIST
        .scoped(state.keys_client(), &scope)
        .fetch_all::<KeyRow>()
        .await?;
    Ok(rows.iter().map(KeyRow::to_out).collect())
}

/// Creates an app key; the response carries its secret, the only time it is shown.
#[utoipa::path(post, path = "/api/v1/keys", operation_id = "create_key", tag = "keys", request_body = KeyIn,
    responses((status = 201, body = KeyCreated), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<KeyCreated>)> {
    let k: KeyIn = input::json_body(body)?;
    Ok((
        StatusCode::CREATED,
        Json(compute_create(&state, &principal, k).await?),
    ))
}

/// Makes the key of `POST /api/v1/keys` (the web Keys tab's form makes them too).
pub async fn compute_create(
    state: &AppState,
    principal: &Principal,
    k: KeyIn,
) -> ApiResult<KeyCreated> {
    let org_id = principal.write_org(k.org_id.as_deref())?;
    let org_id = input::text("org_id", &org_id, MAX_ID_LEN)?;
    let user_id = match k.user_id.as_deref() {
        None | Some("") => String::new(),
        Some(u) => input::text("user_id", u, MAX_ID_LEN)?,
    };
    let app_id = input::text("app_id", &k.app_id, MAX_ID_LEN)?;
    let name = input::text("name", &k.name, 200)?;
    let secret = new_secret(APP_KEY_PREFIX);
    let row = KeyRow {
        key_hash: hash_secret(&secret),
        key_id: Uuid::new_v4().to_string(),
        org_id,
        user_id,
        app_id,
        name,
        budget_scope: String::new(),
        created_at: now_second(),
        revoked_at: None,
        version: row_version(),
        acts_for_end_users: u8::from(k.acts_for_end_users),
    };
    write(state.keys_client(), &row).await?;
    tollgate_jobs::default_rules::seed_new_org(
        state.client(),
        state.keys_client(),
        &state.jobs().config().evaluator,
        &row.org_id,
    )
    .await;
    Ok(KeyCreated {
        secret,
        key: row.to_out(),
    })
}

/// Revokes an app key (a new version with `revoked_at` set; revoking again changes nothing).
/// The edge stops accepting it within its cache time (`KEYS_CACHE_SECS`, default 30 s).
#[utoipa::path(delete, path = "/api/v1/keys/{key_id}", operation_id = "revoke_key", tag = "keys",
    params(("key_id" = String, Path, description = "The key's public id")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    Path(key_id): Path<String>,
) -> ApiResult<StatusCode> {
    compute_revoke(&state, &principal, &key_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes as `DELETE /api/v1/keys/{key_id}` does; the key as it is now.
pub async fn compute_revoke(
    state: &AppState,
    principal: &Principal,
    key_id: &str,
) -> ApiResult<KeyOut> {
    let client = state.keys_client();
    let not_found = || ApiError::NotFound(format!("no app key {key_id}"));
    if input::uuid(key_id).is_none() {
        return Err(not_found());
    }
    let scope = principal.read_scope(None, None)?;
    let mut row = APP_KEY_BY_ID
        .scoped(client, &scope)
        .bind(key_id)
        .fetch_optional::<KeyRow>()
        .await?
        .ok_or_else(not_found)?;
    principal.write_org(Some(&row.org_id))?;
    if row.revoked_at.is_none() {
        row.revoked_at = Some(now_second());
        row.version = row_version();
        write(client, &row).await?;
    }
    Ok(row.to_out())
}

/// Whether `text` is a lower-case hex SHA-256.
fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The edge worker's key lookup (signed; see the module docs).
#[utoipa::path(get, path = "/internal/v1/keys/{sha256}", operation_id = "internal_key_lookup", tag = "internal",
    params(("sha256" = String, Path, description = "Lower-case hex SHA-256 of the presented tg_ key"),
           ("x-tollgate-signature" = String, Header, description = "t=<unix>,v1=<hex hmac-sha256(secret, t + \".\" + request path)>")),
    responses((status = 200, body = AppKeyOut), (status = 401, body = ErrorBody),
              (status = 404, description = "unknown or revoked key, or internal endpoints not configured", body = ErrorBody)))]
pub async fn internal_lookup(
    State(state): State<AppState>,
    Path(sha256): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> ApiResult<Json<AppKeyOut>> {
    let secrets: Vec<&[u8]> = state
        .config()
        .internal
        .signing_secrets
        .iter()
        .map(|s| s.expose().as_bytes())
        .collect();
    if secrets.is_empty() {
        return Err(ApiError::NotFound("no such endpoint".into()));
    }
    let header = headers
        .get(wire::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    let now = Utc::now().timestamp();
    // The signature covers the path: one captured signature cannot look up another key.
    wire::verify(
        header,
        uri.path().as_bytes(),
        &secrets,
        now,
        wire::REPLAY_WINDOW_SECS,
    )
    .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    let not_found = || ApiError::NotFound("no live app key with this hash".into());
    if !is_sha256_hex(&sha256) {
        return Err(not_found());
    }
    let row = read_query(state.keys_client(), &APP_KEY_BY_HASH.body())
        .bind(sha256.as_str())
        .fetch_optional::<KeyRow>()
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(AppKeyOut {
        key_id: row.key_id,
        org_id: row.org_id,
        user_id: row.user_id,
        app_id: row.app_id,
        acts_for_end_users: row.acts_for_end_users != 0,
    }))
}

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/keys", get(list).post(create))
        .route("/api/v1/keys/{key_id}", delete(revoke))
        .route("/internal/v1/keys/{sha256}", get(internal_lookup))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lowercase_sha256_hex_is_looked_up() {
        assert!(is_sha256_hex(&hash_secret("x")));
        assert!(!is_sha256_hex(&hash_secret("x").to_uppercase()));
        assert!(!is_sha256_hex("abc"));
        assert!(!is_sha256_hex(&format!("{}'", &hash_secret("x")[..63])));
    }
}
