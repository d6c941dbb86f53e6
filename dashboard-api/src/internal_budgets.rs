//! The edge's view of budgets: signed internal endpoints the worker (and its `BudgetGuard`
//! Durable Objects) call, with the same HMAC scheme as record batches (`internal.signing_secrets`,
//! 5-minute window; the message is the request path, so a signature is good for one URL only).
//!
//! - `GET /internal/v1/budgets?org=ORG` — the org's enabled budgets, as the guards need them.
//! - `GET /internal/v1/budgets/{id}/spent?period_start=UNIX` — spend recorded in ClickHouse for the
//!   budget's scope since the start of its period: the truth a restarted guard resyncs from.
//! - `POST /internal/v1/budgets/{id}/warning?percent=N` — a soft threshold was crossed: raises a
//!   `budget_threshold` alert (one per budget, threshold and period).

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};
use tollgate_clickhouse::clickhouse::Row;
use tollgate_clickhouse::queries::{day_param, NamedQuery};
use tollgate_clickhouse::{read_query, Scope};
use usage_core::wire;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::AppState;
use tollgate_clickhouse::alerts::{AlertRow, NewAlert};
use tollgate_clickhouse::budgets::BudgetRow;

const BUDGETS_LIST: NamedQuery = NamedQuery {
    name: "admin/budgets_list",
    sql: include_str!("../../clickhouse/queries/admin/budgets_list.sql"),
};
const BUDGET_BY_ID: NamedQuery = NamedQuery {
    name: "admin/budget_by_id",
    sql: include_str!("../../clickhouse/queries/admin/budget_by_id.sql"),
};
const BUDGET_SPEND: NamedQuery = NamedQuery {
    name: "admin/budget_spend",
    sql: include_str!("../../clickhouse/queries/admin/budget_spend.sql"),
};

/// Checks the signature of an internal request over its path (and query).
pub fn verify_internal(
    state: &AppState,
    headers: &HeaderMap,
    path_and_query: &str,
) -> ApiResult<()> {
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
    wire::verify(
        header,
        path_and_query.as_bytes(),
        &secrets,
        Utc::now().timestamp(),
        wire::REPLAY_WINDOW_SECS,
    )
    .map_err(|e| ApiError::Unauthorized(e.to_string()))
}

fn path_and_query(path: &str, raw: &Option<String>) -> String {
    match raw {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path.to_string(),
    }
}

fn query_value(raw: &Option<String>, key: &str) -> Option<String> {
    form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// A budget as the edge's guard takes it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GuardSpec {
    pub budget_id: String,
    pub name: String,
    pub scope: String,
    pub user_id: String,
    pub app_id: String,
    pub period: String,
    pub limit_nusd: i64,
    pub mode: String,
    pub soft_thresholds: Vec<u8>,
    /// Output tokens a call without `max_tokens` reserves; 0: the model's maximum.
    #[serde(default)]
    pub reserve_output_tokens: u32,
}

/// The last budget list read for each org, served when ClickHouse cannot be read. Budgets are
/// changed only through dashboard-api, which needs ClickHouse to write them: while it cannot be
/// read, the last list read is as current as any — and an edge whose hard budgets cannot be
/// listed refuses calls (`budget_unavailable`), so a ClickHouse restart would otherwise refuse
/// every call of every fresh edge isolate, budgets or not.
#[derive(Debug, Default)]
pub struct LastLists(std::sync::Mutex<std::collections::HashMap<String, Vec<GuardSpec>>>);

impl LastLists {
    fn remember(&self, org: &str, list: &[GuardSpec]) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(org.to_string(), list.to_vec());
        }
    }

    fn last(&self, org: &str) -> Option<Vec<GuardSpec>> {
        self.0.lock().ok().and_then(|m| m.get(org).cloned())
    }
}

/// The org's enabled budgets (the last list read, when ClickHouse cannot be read now).
pub async fn list(
    State(state): State<AppState>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Vec<GuardSpec>>> {
    verify_internal(&state, &headers, &path_and_query(uri.path(), &raw))?;
    let org = query_value(&raw, "org")
        .filter(|o| !o.is_empty())
        .ok_or_else(|| ApiError::bad("org", "`org` is required"))?;
    let rows = match BUDGETS_LIST
        .scoped(
            state.client(),
            &Scope::Org {
                org_id: org.clone(),
            },
        )
        .fetch_all::<BudgetRow>()
        .await
    {
        Ok(rows) => rows,
        Err(e) => {
            return match state.budget_lists().last(&org) {
                Some(list) => {
                    tracing::warn!(%org, error = %e, "budget list unreadable; serving the last one read");
                    Ok(Json(list))
                }
                None => Err(e.into()),
            };
        }
    };
    let list: Vec<GuardSpec> = rows
        .into_iter()
        .filter(|r| r.enabled != 0)
        .map(|r| GuardSpec {
            budget_id: r.budget_id.to_string(),
            name: r.name,
            scope: r.scope,
            user_id: r.user_id,
            app_id: r.app_id,
            period: r.period,
            limit_nusd: r.limit_nusd,
            mode: r.mode,
            soft_thresholds: r.soft_thresholds,
            reserve_output_tokens: r.reserve_output_tokens,
        })
        .collect();
    state.budget_lists().remember(&org, &list);
    Ok(Json(list))
}

#[derive(Row, Deserialize)]
struct SpendRow {
    cost_usd: i128,
    #[allow(dead_code)]
    requests: u64,
}

/// What ClickHouse has recorded for a budget since its period began.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Spent {
    pub budget_id: String,
    pub period_start: i64,
    pub spent_nusd: i64,
}

async fn budget(state: &AppState, id: &str) -> ApiResult<BudgetRow> {
    let uuid = Uuid::parse_str(id).map_err(|_| ApiError::NotFound("no such budget".into()))?;
    read_query(
        state.client(),
        &BUDGET_BY_ID.body().replace("{scope}", "1 = 1"),
    )
    .bind(uuid.to_string())
    .fetch_optional::<BudgetRow>()
    .await?
    .ok_or_else(|| ApiError::NotFound("no such budget".into()))
}

/// Recorded spend of a budget's scope from `period_start` (a UTC day boundary) on.
pub async fn spent(
    State(state): State<AppState>,
    Path(id): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Spent>> {
    verify_internal(&state, &headers, &path_and_query(uri.path(), &raw))?;
    let start: i64 = query_value(&raw, "period_start")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ApiError::bad("period_start", "`period_start` must be a unix time"))?;
    let row = budget(&state, &id).await?;
    // Years past 9999 exist for chrono but not for ClickHouse's `Date` (nor RFC 3339).
    let from = DateTime::from_timestamp_secs(start)
        .filter(|t| t.year() <= 9999)
        .ok_or_else(|| ApiError::bad("period_start", "out of range"))?
        .date_naive();
    let to = Utc::now().date_naive().succ_opt().unwrap_or(from);
    let spend = BUDGET_SPEND
        .scoped(state.client(), &row.usage_scope())
        .bind(day_param(from))
        .bind(day_param(to.max(from)))
        .fetch_one::<SpendRow>()
        .await?;
    Ok(Json(Spent {
        budget_id: id,
        period_start: start,
        spent_nusd: i64::try_from(spend.cost_usd).unwrap_or(i64::MAX),
    }))
}

/// A soft threshold crossed at the edge: one `budget_threshold` alert per budget, threshold and
/// period (the dedup key), shown on the dashboard like the evaluator's.
pub async fn warning(
    State(state): State<AppState>,
    Path(id): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<StatusCode> {
    verify_internal(&state, &headers, &path_and_query(uri.path(), &raw))?;
    let percent: u8 = query_value(&raw, "percent")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ApiError::bad("percent", "`percent` must be 1-100"))?;
    let period_start: i64 = query_value(&raw, "period_start")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let row = budget(&state, &id).await?;
    raise_budget_warning(&state, &row, percent, period_start).await?;
    Ok(StatusCode::ACCEPTED)
}

const ALERT_EXISTS: NamedQuery = NamedQuery {
    name: "admin/alert_exists",
    sql: include_str!("../../clickhouse/queries/admin/alert_exists.sql"),
};

/// Writes the `budget_threshold` alert for (budget, percent, period) unless it exists already
/// (a human may have acknowledged it: a repeat must not reopen it).
async fn raise_budget_warning(
    state: &AppState,
    b: &BudgetRow,
    percent: u8,
    period_start: i64,
) -> ApiResult<()> {
    let key = format!("budget:{}:{percent}:{period_start}", b.budget_id);
    let digest = usage_core::keys::hash_secret(&key);
    let id = u128::from_str_radix(&digest[..32], 16)
        .map(Uuid::from_u128)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let exists = read_query(state.client(), &ALERT_EXISTS.body())
        .bind(id.to_string())
        .fetch_one::<u64>()
        .await?;
    if exists > 0 {
        return Ok(());
    }
    let now = tollgate_clickhouse::now_second();
    let severity = match percent {
        100.. => "high",
        80..=99 => "medium",
        _ => "low",
    };
    let row = AlertRow::open(
        NewAlert {
            alert_id: id,
            org_id: b.org_id.clone(),
            rule_id: Uuid::nil(),
            kind: "budget_threshold".into(),
            severity: severity.into(),
            dedup_key: key,
            title: format!(
                "Budget \"{}\" passed {percent}% of its {} limit",
                b.name, b.period
            ),
            details: serde_json::json!({"budget_id": b.budget_id.to_string(), "percent": percent,
            "limit_usd": usage_core::Nanos::new(b.limit_nusd).to_string(), "period": b.period,
            "period_start": period_start, "source": "edge"})
            .to_string(),
        },
        now,
        tollgate_clickhouse::row_version(),
    );
    Ok(tollgate_clickhouse::alerts::write_alert(state.client(), &[row]).await?)
}

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/internal/v1/budgets", get(list))
        .route("/internal/v1/budgets/{id}/spent", get(spent))
        .route("/internal/v1/budgets/{id}/warning", post(warning))
}
