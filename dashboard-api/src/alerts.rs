//! Alert rules and alerts: CRUD for rules; alerts listed, acknowledged and resolved with who
//! and when. (Evaluation — turning rules into alerts — runs in the evaluator.)
//!
//! - [`RuleIn`] / [`RuleOut`]: a rule is a [`RuleKind`], its `params` (a JSON object checked
//!   per kind, below), a [`Severity`] and the channels a firing goes to. Rows live in
//!   `alert_rules` (ReplacingMergeTree; a delete is a new version with `deleted = 1`).
//! - [`AlertOut`]: a firing and its life, `open` → `acknowledged` → `resolved`, each step
//!   recording the token (name and id) and the time. Acknowledging or resolving a resolved
//!   alert is a 409. [`AlertRow`] and [`write_alert`] are how the evaluator writes them.
//! - Alerts and rules belong to an org, not to a user: viewers bound to one user see none.
//!
//! `params` per kind and the channels a rule may name are checked by `tollgate_jobs::rules`
//! (its module docs have the table); errors name the key as `params.<key>`.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tollgate_clickhouse::clickhouse::Client;
use tollgate_clickhouse::queries::NamedQuery;
use tollgate_clickhouse::{read_query, Scope};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Principal;
use crate::budgets::input;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::AppState;
use tollgate_clickhouse::alerts::{write_alert, write_rule, AlertRow, RuleRow};
use tollgate_clickhouse::{now_second, row_version};
use tollgate_jobs::rules::{self, RuleKind};

const ALERTS_OPEN_COUNT: NamedQuery = NamedQuery {
    name: "admin/alerts_open_count",
    sql: include_str!("../../clickhouse/queries/admin/alerts_open_count.sql"),
};
const ALERT_RULES_LIST: NamedQuery = NamedQuery {
    name: "admin/alert_rules_list",
    sql: include_str!("../../clickhouse/queries/admin/alert_rules_list.sql"),
};
const ALERT_RULE_BY_ID: NamedQuery = NamedQuery {
    name: "admin/alert_rule_by_id",
    sql: include_str!("../../clickhouse/queries/admin/alert_rule_by_id.sql"),
};
const ALERTS_LIST: NamedQuery = NamedQuery {
    name: "admin/alerts_list",
    sql: include_str!("../../clickhouse/queries/admin/alerts_list.sql"),
};
const ALERT_BY_ID: NamedQuery = NamedQuery {
    name: "admin/alert_by_id",
    sql: include_str!("../../clickhouse/queries/admin/alert_by_id.sql"),
};

/// Alerts not yet resolved within `scope` (alerts belong to orgs; user scopes count their
/// org's alerts).
pub async fn open_count(client: &Client, scope: &Scope) -> ApiResult<u64> {
    let org = match scope {
        Scope::AllOrgs => None,
        Scope::Org { org_id } | Scope::OrgUser { org_id, .. } | Scope::OrgApp { org_id, .. } => {
            Some(org_id.as_str())
        }
    };
    let sql = ALERTS_OPEN_COUNT
        .body()
        .replace("{orgs}", if org.is_some() { "org_id = ?" } else { "1 = 1" });
    let mut q = read_query(client, &sql);
    if let Some(o) = org {
        q = q.bind(o);
    }
    Ok(q.fetch_one::<u64>().await?)
}

/// How urgent a rule's firings are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        [
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// An alert's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Open,
    Acknowledged,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Open => "open",
            AlertState::Acknowledged => "acknowledged",
            AlertState::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<AlertState> {
        [
            AlertState::Open,
            AlertState::Acknowledged,
            AlertState::Resolved,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// An alert rule as created or replaced.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleIn {
    /// Admins: the org (required). Others: their own org, or absent.
    #[serde(default)]
    pub org_id: Option<String>,
    /// 1–200 printable characters.
    pub name: String,
    pub kind: RuleKind,
    /// The kind's parameters (see the module table); absent means all defaults.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: Value,
    pub severity: Severity,
    /// Where firings go: `dashboard`, `webhook:<http(s) URL>`, `slack:<https incoming-webhook
    /// URL>`. Channels this version cannot deliver (`email:…`, `slack:#channel`) are refused
    /// (400). Default `["dashboard"]`; at most 10, no repeats.
    #[serde(default)]
    pub channels: Option<Vec<String>>,
    /// Default `true`.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// An alert rule.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RuleOut {
    pub rule_id: Uuid,
    pub org_id: String,
    pub name: String,
    pub kind: RuleKind,
    /// The parameters as stored: validated, defaults filled in.
    #[schema(value_type = Object)]
    pub params: Value,
    pub severity: Severity,
    pub channels: Vec<String>,
    pub enabled: bool,
    pub created_by: String,
    #[serde(with = "usage_core::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(with = "usage_core::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
}

/// A stored rule as the API shows it.
fn rule_out(row: &RuleRow) -> ApiResult<RuleOut> {
    let corrupt = |what: &str| {
        ApiError::Internal(format!("alert rule {} has an unknown {what}", row.rule_id))
    };
    Ok(RuleOut {
        rule_id: row.rule_id,
        org_id: row.org_id.clone(),
        name: row.name.clone(),
        kind: RuleKind::parse(&row.kind).ok_or_else(|| corrupt("kind"))?,
        params: serde_json::from_str(&row.params).map_err(|_| corrupt("params text"))?,
        severity: Severity::parse(&row.severity).ok_or_else(|| corrupt("severity"))?,
        channels: row.channels.clone(),
        enabled: row.enabled != 0,
        created_by: row.created_by.clone(),
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// A checked rule, ready to be written into a row.
struct ValidRule {
    name: String,
    kind: RuleKind,
    params: Value,
    severity: Severity,
    channels: Vec<String>,
    enabled: bool,
}

async fn validated(state: &AppState, org_id: &str, r: RuleIn) -> ApiResult<ValidRule> {
    let name = input::text("name", &r.name, 200)?;
    let (params, budget) =
        rules::validate_params(r.kind, r.params, Some(&state.config().api.providers))?;
    if let Some(id) = budget {
        if !crate::budgets::exists_in_org(state.client(), org_id, id).await? {
            return Err(ApiError::bad(
                "params.budget_id",
                format!("org `{org_id}` has no budget {id}"),
            ));
        }
    }
    Ok(ValidRule {
        name,
        kind: r.kind,
        params,
        severity: r.severity,
        channels: rules::validate_channels(r.channels, &state.config().notifications)?,
        enabled: r.enabled.unwrap_or(true),
    })
}

impl ValidRule {
    fn apply(self, row: &mut RuleRow) {
        row.name = self.name;
        row.kind = self.kind.as_str().to_string();
        row.params = self.params.to_string();
        row.severity = self.severity.as_str().to_string();
        row.channels = self.channels;
        row.enabled = u8::from(self.enabled);
    }
}

/// The org predicate for rules and alerts, or `None` for a viewer bound to one user (they
/// belong to orgs, so such a viewer sees none).
fn org_scope(principal: &Principal, org: Option<&str>) -> ApiResult<Option<Scope>> {
    Ok(match principal.read_scope(org, None)? {
        Scope::OrgUser { .. } | Scope::OrgApp { .. } => None,
        s => Some(s),
    })
}

async fn find_rule(client: &Client, principal: &Principal, id: &str) -> ApiResult<RuleRow> {
    let not_found = || ApiError::NotFound(format!("no alert rule {id}"));
    let (Some(id), Some(scope)) = (input::uuid(id), org_scope(principal, None)?) else {
        return Err(not_found());
    };
    ALERT_RULE_BY_ID
        .scoped(client, &scope)
        .bind(id.to_string())
        .fetch_optional::<RuleRow>()
        .await?
        .ok_or_else(not_found)
}

/// The alert rules the caller may see.
#[utoipa::path(get, path = "/api/v1/alert-rules", operation_id = "list_alert_rules", tag = "alerts", params(crate::params::OrgQuery),
    responses((status = 200, body = [RuleOut]), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_rules(
    State(state): State<AppState>,
    principal: Principal,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Vec<RuleOut>>> {
    Ok(Json(
        compute_rules(&state, &principal, raw.as_deref()).await?,
    ))
}

/// The rules of `GET /api/v1/alert-rules` (the web Alerts tab lists them too).
pub async fn compute_rules(
    state: &AppState,
    principal: &Principal,
    raw: Option<&str>,
) -> ApiResult<Vec<RuleOut>> {
    let q = input::query(raw, &["org"])?;
    let Some(scope) = org_scope(principal, q.get("org").map(String::as_str))? else {
        return Ok(Vec::new());
    };
    let rows = ALERT_RULES_LIST
        .scoped(state.client(), &scope)
        .fetch_all::<RuleRow>()
        .await?;
    rows.iter().map(rule_out).collect()
}

/// Creates an alert rule.
#[utoipa::path(post, path = "/api/v1/alert-rules", operation_id = "create_alert_rule", tag = "alerts", request_body = RuleIn,
    responses((status = 201, body = RuleOut), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_rule(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<RuleOut>)> {
    let r: RuleIn = input::json_body(body)?;
    Ok((
        StatusCode::CREATED,
        Json(compute_create_rule(&state, &principal, r).await?),
    ))
}

/// Creates the rule of `POST /api/v1/alert-rules` (the web rule form does too).
pub async fn compute_create_rule(
    state: &AppState,
    principal: &Principal,
    r: RuleIn,
) -> ApiResult<RuleOut> {
    let org_id = principal.write_org(r.org_id.as_deref())?;
    let org_id = input::text("org_id", &org_id, 256)?;
    let valid = validated(state, &org_id, r).await?;
    let now = now_second();
    let mut row = RuleRow {
        rule_id: Uuid::new_v4(),
        org_id,
        name: String::new(),
        kind: String::new(),
        params: String::new(),
        severity: String::new(),
        channels: Vec::new(),
        enabled: 1,
        created_by: input::who(principal),
        created_at: now,
        updated_at: now,
        deleted: 0,
        version: row_version(),
    };
    valid.apply(&mut row);
    write_rule(state.client(), &row).await?;
    rule_out(&row)
}

/// One alert rule.
#[utoipa::path(get, path = "/api/v1/alert-rules/{id}", operation_id = "get_alert_rule", tag = "alerts",
    params(("id" = Uuid, Path, description = "Rule id")),
    responses((status = 200, body = RuleOut), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_rule(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<RuleOut>> {
    Ok(Json(compute_get_rule(&state, &principal, &id).await?))
}

/// One rule the caller may see (`GET /api/v1/alert-rules/{id}`).
pub async fn compute_get_rule(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> ApiResult<RuleOut> {
    rule_out(&find_rule(state.client(), principal, id).await?)
}

/// Replaces an alert rule (every field, as on create).
#[utoipa::path(put, path = "/api/v1/alert-rules/{id}", operation_id = "replace_alert_rule", tag = "alerts", request_body = RuleIn,
    params(("id" = Uuid, Path, description = "Rule id")),
    responses((status = 200, body = RuleOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn replace_rule(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<RuleOut>> {
    let r: RuleIn = input::json_body(body)?;
    Ok(Json(
        compute_replace_rule(&state, &principal, &id, r).await?,
    ))
}

/// Replaces a rule as `PUT /api/v1/alert-rules/{id}` does.
pub async fn compute_replace_rule(
    state: &AppState,
    principal: &Principal,
    id: &str,
    r: RuleIn,
) -> ApiResult<RuleOut> {
    let mut row = find_rule(state.client(), principal, id).await?;
    principal.write_org(Some(&row.org_id))?;
    if r.org_id.as_ref().is_some_and(|o| *o != row.org_id) {
        return Err(ApiError::bad("org_id", "a rule cannot move to another org"));
    }
    validated(state, &row.org_id.clone(), r)
        .await?
        .apply(&mut row);
    row.updated_at = now_second();
    row.version = row_version();
    write_rule(state.client(), &row).await?;
    rule_out(&row)
}

/// Deletes an alert rule (a new version with `deleted = 1`).
#[utoipa::path(delete, path = "/api/v1/alert-rules/{id}", operation_id = "delete_alert_rule", tag = "alerts",
    params(("id" = Uuid, Path, description = "Rule id")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_rule(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    compute_delete_rule(&state, &principal, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a rule as `DELETE /api/v1/alert-rules/{id}` does.
pub async fn compute_delete_rule(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> ApiResult<()> {
    let mut row = find_rule(state.client(), principal, id).await?;
    principal.write_org(Some(&row.org_id))?;
    row.deleted = 1;
    row.updated_at = now_second();
    row.version = row_version();
    write_rule(state.client(), &row).await?;
    Ok(())
}

/// An alert.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AlertOut {
    pub alert_id: Uuid,
    pub org_id: String,
    pub rule_id: Uuid,
    /// The rule kind that fired.
    pub kind: String,
    pub severity: String,
    pub state: AlertState,
    pub title: String,
    /// The observed values (a JSON object; a string if the evaluator wrote something else).
    #[schema(value_type = Object)]
    pub details: Value,
    #[serde(with = "usage_core::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub opened_at: DateTime<Utc>,
    /// Token name and id, or `null`.
    pub acknowledged_by: Option<String>,
    #[serde(with = "usage_core::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub resolved_by: Option<String>,
    #[serde(with = "usage_core::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub resolved_at: Option<DateTime<Utc>>,
    #[serde(with = "usage_core::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
}

/// A stored alert as the API shows it.
fn alert_out(row: &AlertRow) -> ApiResult<AlertOut> {
    let state = AlertState::parse(&row.state).ok_or_else(|| {
        ApiError::Internal(format!("alert {} has an unknown state", row.alert_id))
    })?;
    let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Ok(AlertOut {
        alert_id: row.alert_id,
        org_id: row.org_id.clone(),
        rule_id: row.rule_id,
        kind: row.kind.clone(),
        severity: row.severity.clone(),
        state,
        title: row.title.clone(),
        details: serde_json::from_str(&row.details)
            .unwrap_or_else(|_| Value::String(row.details.clone())),
        opened_at: row.opened_at,
        acknowledged_by: nonempty(&row.acknowledged_by),
        acknowledged_at: row.acknowledged_at,
        resolved_by: nonempty(&row.resolved_by),
        resolved_at: row.resolved_at,
        updated_at: row.updated_at,
    })
}

/// Query parameters of `GET /api/v1/alerts`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct AlertsQuery {
    /// `open`, `acknowledged` or `resolved`.
    state: Option<String>,
    /// `low`, `medium`, `high` or `critical`.
    severity: Option<String>,
    /// At most this many (1–1000, default 100).
    limit: Option<u32>,
    /// Admins: only this org. Others: their own org, or absent.
    org: Option<String>,
}

/// Alerts the caller may see, newest first.
#[utoipa::path(get, path = "/api/v1/alerts", operation_id = "list_alerts", tag = "alerts", params(AlertsQuery),
    responses((status = 200, body = [AlertOut]), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_alerts(
    State(state): State<AppState>,
    principal: Principal,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Vec<AlertOut>>> {
    Ok(Json(
        compute_alerts(&state, &principal, raw.as_deref()).await?,
    ))
}

/// What `GET /api/v1/alerts?{raw}` answers (the web dashboard renders the same value).
pub async fn compute_alerts(
    state: &AppState,
    principal: &Principal,
    raw: Option<&str>,
) -> ApiResult<Vec<AlertOut>> {
    let q = input::query(raw, &["state", "severity", "limit", "org"])?;
    let alert_state = match q.get("state") {
        None => "",
        Some(s) => AlertState::parse(s)
            .ok_or_else(|| {
                ApiError::bad("state", "`state` must be open, acknowledged or resolved")
            })?
            .as_str(),
    };
    let severity = match q.get("severity") {
        None => "",
        Some(s) => Severity::parse(s)
            .ok_or_else(|| {
                ApiError::bad(
                    "severity",
                    "`severity` must be low, medium, high or critical",
                )
            })?
            .as_str(),
    };
    let limit = match q.get("limit") {
        None => 100,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| {
                ApiError::bad("limit", "`limit` must be a whole number from 1 to 1000")
            })?,
    };
    let Some(scope) = org_scope(principal, q.get("org").map(String::as_str))? else {
        return Ok(Vec::new());
    };
    let rows = ALERTS_LIST
        .scoped(state.client(), &scope)
        .bind(alert_state)
        .bind(alert_state)
        .bind(severity)
        .bind(severity)
        .bind(limit)
        .fetch_all::<AlertRow>()
        .await?;
    rows.iter().map(alert_out).collect()
}

/// Moves an alert on: `Acknowledged` (from open; again is a no-op) or `Resolved` (from open
/// or acknowledged). Anything from resolved is a conflict. What
/// `POST /api/v1/alerts/{id}/acknowledge` and `…/resolve` do.
pub async fn transition(
    state: &AppState,
    principal: &Principal,
    id: &str,
    to: AlertState,
) -> ApiResult<AlertOut> {
    let client = state.client();
    let not_found = || ApiError::NotFound(format!("no alert {id}"));
    let (Some(uuid), Some(scope)) = (input::uuid(id), org_scope(principal, None)?) else {
        return Err(not_found());
    };
    let mut row = ALERT_BY_ID
        .scoped(client, &scope)
        .bind(uuid.to_string())
        .fetch_optional::<AlertRow>()
        .await?
        .ok_or_else(not_found)?;
    principal.write_org(Some(&row.org_id))?;
    let current = AlertState::parse(&row.state)
        .ok_or_else(|| ApiError::Internal(format!("alert {id} has an unknown state")))?;
    let now = now_second();
    match (current, to) {
        (AlertState::Resolved, _) => {
            return Err(ApiError::Conflict(format!(
                "alert {id} is already resolved"
            )))
        }
        (AlertState::Acknowledged, AlertState::Acknowledged) => return alert_out(&row),
        (_, AlertState::Acknowledged) => {
            row.acknowledged_by = input::who(principal);
            row.acknowledged_at = Some(now);
        }
        (_, _) => {
            row.resolved_by = input::who(principal);
            row.resolved_at = Some(now);
        }
    }
    row.state = to.as_str().to_string();
    row.updated_at = now;
    row.version = row_version();
    write_alert(client, std::slice::from_ref(&row)).await?;
    alert_out(&row)
}

/// Acknowledges an alert (who and when are recorded). A resolved alert is a 409.
#[utoipa::path(post, path = "/api/v1/alerts/{id}/acknowledge", operation_id = "acknowledge_alert", tag = "alerts",
    params(("id" = Uuid, Path, description = "Alert id")),
    responses((status = 200, body = AlertOut), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn acknowledge(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<AlertOut>> {
    transition(&state, &principal, &id, AlertState::Acknowledged)
        .await
        .map(Json)
}

/// Resolves an alert (who and when are recorded). An already resolved alert is a 409.
#[utoipa::path(post, path = "/api/v1/alerts/{id}/resolve", operation_id = "resolve_alert", tag = "alerts",
    params(("id" = Uuid, Path, description = "Alert id")),
    responses((status = 200, body = AlertOut), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn resolve(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<AlertOut>> {
    transition(&state, &principal, &id, AlertState::Resolved)
        .await
        .map(Json)
}

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/alert-rules", get(list_rules).post(create_rule))
        .route(
            "/api/v1/alert-rules/{id}",
            get(get_rule).put(replace_rule).delete(delete_rule),
        )
        .route("/api/v1/alerts", get(list_alerts))
        .route("/api/v1/alerts/{id}/acknowledge", post(acknowledge))
        .route("/api/v1/alerts/{id}/resolve", post(resolve))
        .route("/api/v1/alert-rules/{id}/test", post(test_rule))
        .route("/api/v1/alert-rules/{id}/deliveries", get(deliveries))
        .route("/api/v1/notification-deliveries", get(recent_deliveries))
}

/// One notification delivery attempt (`GET /api/v1/alert-rules/{id}/deliveries`). Channels
/// show their kind and host only: hook paths are secrets.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DeliveryOut {
    pub delivery_id: Uuid,
    pub rule_id: Uuid,
    /// Nil for a test send.
    pub alert_id: Uuid,
    /// `alert.opened`, `alert.resolved` or `alert.test`.
    pub event: String,
    pub channel: String,
    pub attempt: u8,
    /// `delivered`, `failed` (retried), `gave_up` or `skipped`.
    pub status: String,
    /// The receiver's answer, when there was one.
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u32,
    #[serde(with = "usage_core::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub attempted_at: DateTime<Utc>,
}

/// Most attempts one answer lists (the newest).
const DELIVERIES_SHOWN: u32 = 500;

/// The newest notification delivery attempts of a rule (at most 500), oldest first: what each
/// channel answered, so an admin can see why a webhook never arrived. Whoever may see the
/// rule may see them.
#[utoipa::path(get, path = "/api/v1/alert-rules/{id}/deliveries", operation_id = "alert_rule_deliveries", tag = "alerts",
    params(("id" = Uuid, Path, description = "Rule id")),
    responses((status = 200, body = [DeliveryOut]), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn deliveries(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<DeliveryOut>>> {
    Ok(Json(
        compute_rule_deliveries(&state, &principal, &id).await?,
    ))
}

/// A rule's newest delivery attempts, oldest first (`GET /api/v1/alert-rules/{id}/deliveries`).
pub async fn compute_rule_deliveries(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> ApiResult<Vec<DeliveryOut>> {
    let rule = find_rule(state.client(), principal, id).await?;
    let rows = tollgate_clickhouse::alerts::deliveries_of_rule(
        state.client(),
        Some(&rule.org_id),
        rule.rule_id,
        DELIVERIES_SHOWN,
    )
    .await?;
    Ok(rows.into_iter().map(delivery_out).collect())
}

fn delivery_out(r: tollgate_clickhouse::alerts::DeliveryRow) -> DeliveryOut {
    DeliveryOut {
        delivery_id: r.delivery_id,
        rule_id: r.rule_id,
        alert_id: r.alert_id,
        event: r.event,
        channel: r.channel,
        attempt: r.attempt,
        status: r.status,
        http_status: (r.http_status != 0).then_some(r.http_status),
        error: (!r.error.is_empty()).then_some(r.error),
        duration_ms: r.duration_ms,
        attempted_at: r.attempted_at,
    }
}

/// What `GET /api/v1/notification-deliveries?{raw}` answers (the Alerts tab shows the same):
/// the newest delivery attempts of every rule the caller may see, newest first. Tokens bound
/// to one user see none (rules are the org's).
pub async fn compute_recent_deliveries(
    state: &AppState,
    principal: &Principal,
    raw: Option<&str>,
) -> ApiResult<Vec<DeliveryOut>> {
    let q = input::query(raw, &["org", "limit"])?;
    let limit = match q.get("limit") {
        None => 100,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=DELIVERIES_SHOWN).contains(n))
            .ok_or_else(|| {
                ApiError::bad(
                    "limit",
                    format!("`limit` must be a whole number from 1 to {DELIVERIES_SHOWN}"),
                )
            })?,
    };
    let org = match org_scope(principal, q.get("org").map(String::as_str))? {
        None => return Ok(Vec::new()),
        Some(Scope::Org { org_id }) => Some(org_id),
        Some(_) => None,
    };
    let rows =
        tollgate_clickhouse::alerts::recent_deliveries(state.client(), org.as_deref(), limit)
            .await?;
    Ok(rows.into_iter().map(delivery_out).collect())
}

/// The newest notification delivery attempts of every rule in scope (`limit`, 1–500, default
/// 100), newest first: which channel got what, and why one did not.
#[utoipa::path(get, path = "/api/v1/notification-deliveries", operation_id = "notification_deliveries", tag = "alerts",
    params(crate::params::OrgQuery, ("limit" = Option<u32>, Query, description = "1–500, default 100")),
    responses((status = 200, body = [DeliveryOut]), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn recent_deliveries(
    State(state): State<AppState>,
    principal: Principal,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Vec<DeliveryOut>>> {
    Ok(Json(
        compute_recent_deliveries(&state, &principal, raw.as_deref()).await?,
    ))
}

/// Sends a sample notification to the rule's channels and answers what each delivery did
/// (attempts are logged like real ones). Admins and the rule's org admins only.
#[utoipa::path(post, path = "/api/v1/alert-rules/{id}/test", operation_id = "test_alert_rule", tag = "alerts",
    params(("id" = Uuid, Path, description = "Rule id")),
    responses((status = 200, body = tollgate_jobs::notify::TestSendOut), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn test_rule(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<tollgate_jobs::notify::TestSendOut>> {
    Ok(Json(compute_test_rule(&state, &principal, &id).await?))
}

/// Sends a rule's sample notification as `POST /api/v1/alert-rules/{id}/test` does.
pub async fn compute_test_rule(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> ApiResult<tollgate_jobs::notify::TestSendOut> {
    let row = find_rule(state.client(), principal, id).await?;
    principal.write_org(Some(&row.org_id))?;
    Ok(tollgate_jobs::notify::test_send(state.jobs(), &row).await)
}
