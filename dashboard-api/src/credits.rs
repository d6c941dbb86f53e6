//! Provider credits: the latest balance of each provider key, and manual balances for
//! providers without a balance API (OpenAI). Pollers (OpenRouter) write the same table.
//!
//! A balance belongs to an org (`org_id`) or to the whole deployment (`org_id` empty: visible to
//! admins only).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tollgate_clickhouse::clickhouse::{self, Client, Row};
use tollgate_clickhouse::queries::NamedQuery;
use tollgate_clickhouse::read_query;
use usage_core::Nanos;
use utoipa::ToSchema;

use crate::auth::{Principal, Role};
use crate::error::{ApiError, ApiResult};
use crate::AppState;
use tollgate_clickhouse::credits::{insert, CreditInsertRow};
use tollgate_clickhouse::now_second;

const CREDITS_LATEST: NamedQuery = NamedQuery {
    name: "admin/credits_latest",
    sql: include_str!("../../clickhouse/queries/admin/credits_latest.sql"),
};

#[derive(Debug, Row, Deserialize)]
struct CreditRow {
    provider: String,
    key_label: String,
    org_id: String,
    latest_balance_nusd: Option<i64>,
    latest_total_credits_nusd: i64,
    latest_total_usage_nusd: i64,
    latest_status: String,
    latest_error: String,
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    last_observed_at: DateTime<Utc>,
}

/// The latest known balance of one provider key.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct CreditOut {
    pub provider: String,
    pub key_label: String,
    /// Empty: the deployment's own key (admins only).
    pub org_id: String,
    /// USD; `null` when the provider reports no balance (only usage).
    pub balance_usd: Option<String>,
    pub total_credits_usd: String,
    pub total_usage_usd: String,
    /// `valid`, `invalid`, `rate_limited`, `error` (polled) or `manual`.
    pub status: String,
    pub error: String,
    #[serde(with = "usage_core::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub observed_at: DateTime<Utc>,
    /// How old the observation is.
    pub age_seconds: i64,
}

/// Latest balances the caller may see.
pub async fn latest(client: &Client, principal: &Principal) -> ApiResult<Vec<CreditOut>> {
    let admin = principal.role == Role::Admin;
    let sql = CREDITS_LATEST
        .body()
        .replace("{orgs}", if admin { "1 = 1" } else { "org_id = ?" });
    let mut q = read_query(client, &sql);
    if !admin {
        q = q.bind(principal.org_id.as_str());
    }
    let now = Utc::now();
    Ok(q.fetch_all::<CreditRow>()
        .await?
        .into_iter()
        .map(|r| CreditOut {
            age_seconds: (now - r.last_observed_at).num_seconds().max(0),
            provider: r.provider,
            key_label: r.key_label,
            org_id: r.org_id,
            balance_usd: r.latest_balance_nusd.map(|b| Nanos::new(b).to_string()),
            total_credits_usd: Nanos::new(r.latest_total_credits_nusd).to_string(),
            total_usage_usd: Nanos::new(r.latest_total_usage_nusd).to_string(),
            status: r.latest_status,
            error: r.latest_error,
            observed_at: r.last_observed_at,
        })
        .collect())
}

/// Latest balance of every provider key the caller may see, with its age.
#[utoipa::path(get, path = "/api/v1/credits", tag = "credits",
    responses((status = 200, body = [CreditOut]), (status = 401, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<Vec<CreditOut>>> {
    Ok(Json(latest(state.client(), &principal).await?))
}

/// A manual balance.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ManualCredit {
    pub provider: String,
    /// Which key or account (free text, e.g. `prod`).
    pub key_label: String,
    /// USD, decimal string (`"125.50"`).
    pub balance_usd: String,
    /// Admins: the org it belongs to (empty: the deployment). Others: their own org.
    #[serde(default)]
    pub org_id: Option<String>,
}

/// Records a balance by hand (for providers without a balance API).
#[utoipa::path(post, path = "/api/v1/credits", tag = "credits", request_body = ManualCredit,
    responses((status = 201, body = CreditOut), (status = 400, body = crate::error::ErrorBody),
              (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn record(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<Json<ManualCredit>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<CreditOut>)> {
    let Json(m) = body.map_err(crate::error::json_rejection)?;
    let org = match principal.role {
        Role::Admin => m.org_id.clone().unwrap_or_default(),
        _ => principal.write_org(m.org_id.as_deref())?,
    };
    let ok_text = |field: &str, v: &str| {
        if v.is_empty() || v.len() > 128 || v.chars().any(char::is_control) {
            Err(ApiError::bad(
                field,
                format!("`{field}` must be 1-128 printable characters"),
            ))
        } else {
            Ok(())
        }
    };
    ok_text("provider", &m.provider)?;
    ok_text("key_label", &m.key_label)?;
    let balance = Nanos::parse_usd(&m.balance_usd)
        .map_err(|e| ApiError::bad("balance_usd", e.to_string()))?;
    let row = CreditInsertRow {
        provider: m.provider,
        key_label: m.key_label,
        org_id: org,
        balance_nusd: Some(balance.get()),
        total_credits_nusd: 0,
        total_usage_nusd: 0,
        status: "manual".into(),
        error: String::new(),
        observed_at: now_second(),
    };
    insert(state.client(), std::slice::from_ref(&row)).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreditOut {
            provider: row.provider,
            key_label: row.key_label,
            org_id: row.org_id,
            balance_usd: Some(balance.to_string()),
            total_credits_usd: Nanos::ZERO.to_string(),
            total_usage_usd: Nanos::ZERO.to_string(),
            status: row.status,
            error: row.error,
            observed_at: row.observed_at,
            age_seconds: 0,
        }),
    ))
}
