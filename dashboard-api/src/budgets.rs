//! Budgets: spending limits per org, user or app over a UTC calendar period, and how much of
//! each the current period has used.
//!
//! - [`BudgetIn`] is what admins send (`POST`, and `PUT` as a full replacement); [`BudgetOut`]
//!   what they get back; [`BudgetStatus`] the period's spend against the limit.
//! - Rows live in `budgets` (migration 0003), a ReplacingMergeTree: every change is a new row
//!   with a higher `version`, a delete is a row with `deleted = 1`. The API's `user` scope is
//!   stored as `org_user`, the name the table and the edge's budget scopes use.
//! - Spend is read from `usage_daily` through `admin/budget_spend.sql`, scoped by the budget's
//!   own scope (org, org + user, org + app), never by the caller's.
//!
//! Periods are UTC calendar periods: a day, a week starting Monday, a month. The [`input`]
//! module holds the strict body and query parsing the configuration modules share.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tollgate_clickhouse::budgets::{self, BudgetRow};
use tollgate_clickhouse::clickhouse::{self, Client, Row};
use tollgate_clickhouse::queries::{day_param, NamedQuery};
use tollgate_clickhouse::Scope;
use usage_core::{Nanos, Period};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::AppState;
use tollgate_clickhouse::{now_second, row_version};

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

/// Default soft thresholds, percent of the limit.
pub const DEFAULT_THRESHOLDS: [u8; 3] = [50, 80, 100];
/// Largest limit a budget may have: `Decimal(18,9)` holds less than 10⁹ USD.
const MAX_LIMIT_USD: i64 = 999_999_999;

/// Whose spending a budget limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BudgetScope {
    /// The whole org.
    Org,
    /// One user of the org (`user_id`).
    User,
    /// One app of the org (`app_id`).
    App,
}

impl BudgetScope {
    /// The value in `budgets.scope`.
    pub fn stored(self) -> &'static str {
        match self {
            BudgetScope::Org => "org",
            BudgetScope::User => "org_user",
            BudgetScope::App => "app",
        }
    }

    fn from_stored(s: &str) -> Option<BudgetScope> {
        match s {
            "org" => Some(BudgetScope::Org),
            "org_user" => Some(BudgetScope::User),
            "app" => Some(BudgetScope::App),
            _ => None,
        }
    }
}

/// `hard`: the edge blocks calls once the limit is spent. `soft`: alerts only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BudgetMode {
    Hard,
    Soft,
}

impl BudgetMode {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetMode::Hard => "hard",
            BudgetMode::Soft => "soft",
        }
    }

    fn parse(s: &str) -> Option<BudgetMode> {
        match s {
            "hard" => Some(BudgetMode::Hard),
            "soft" => Some(BudgetMode::Soft),
            _ => None,
        }
    }
}

/// A budget as created or replaced.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetIn {
    /// Admins: the org (required). Others: their own org, or absent. Ignored on `PUT` unless it
    /// differs from the budget's org (a 400: budgets do not move between orgs).
    #[serde(default)]
    pub org_id: Option<String>,
    /// 1–200 printable characters.
    pub name: String,
    pub scope: BudgetScope,
    /// Required with scope `user`, refused otherwise.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Required with scope `app`, refused otherwise.
    #[serde(default)]
    pub app_id: Option<String>,
    pub period: Period,
    /// USD decimal string, greater than 0 (`"250.00"`).
    pub limit_usd: String,
    /// Percentages of the limit (1–100) that raise soft alerts; sorted on save, no duplicates.
    /// Default `[50, 80, 100]`; `[]` for none.
    #[serde(default)]
    pub soft_thresholds: Option<Vec<u8>>,
    pub mode: BudgetMode,
    /// Default `true`.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Output tokens a call without `max_tokens` reserves under this budget (1–1,000,000),
    /// instead of the model's maximum output. Absent: the model's maximum (no overshoot, but a
    /// small hard budget refuses such calls early). With a cap, a call that writes more than
    /// it can overshoot the limit by at most (model's maximum output − cap) × output price.
    #[serde(default)]
    pub reserve_output_tokens: Option<u32>,
}

/// A budget.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct BudgetOut {
    pub budget_id: Uuid,
    pub org_id: String,
    pub name: String,
    pub scope: BudgetScope,
    /// Set for scope `user`.
    pub user_id: Option<String>,
    /// Set for scope `app`.
    pub app_id: Option<String>,
    pub period: Period,
    /// USD, exact decimal.
    pub limit_usd: String,
    pub soft_thresholds: Vec<u8>,
    pub mode: BudgetMode,
    pub enabled: bool,
    /// Output tokens a call without `max_tokens` reserves; `null`: the model's maximum.
    pub reserve_output_tokens: Option<u32>,
    /// Name and id of the token that created it.
    pub created_by: String,
    #[serde(with = "usage_core::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(with = "usage_core::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
}

/// The API view of a row; a row this build cannot read is a server error, not a guess.
fn budget_out(row: &BudgetRow) -> ApiResult<BudgetOut> {
    let corrupt =
        |what: &str| ApiError::Internal(format!("budget {} has an unknown {what}", row.budget_id));
    let scope = BudgetScope::from_stored(&row.scope).ok_or_else(|| corrupt("scope"))?;
    Ok(BudgetOut {
        budget_id: row.budget_id,
        org_id: row.org_id.clone(),
        name: row.name.clone(),
        scope,
        user_id: (scope == BudgetScope::User).then(|| row.user_id.clone()),
        app_id: (scope == BudgetScope::App).then(|| row.app_id.clone()),
        period: Period::parse(&row.period).ok_or_else(|| corrupt("period"))?,
        limit_usd: Nanos::new(row.limit_nusd).to_string(),
        soft_thresholds: row.soft_thresholds.clone(),
        mode: BudgetMode::parse(&row.mode).ok_or_else(|| corrupt("mode"))?,
        enabled: row.enabled != 0,
        reserve_output_tokens: (row.reserve_output_tokens > 0).then_some(row.reserve_output_tokens),
        created_by: row.created_by.clone(),
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// Checks a body and fills in what the row needs besides identity and timestamps.
fn validated(b: BudgetIn) -> ApiResult<ValidBudget> {
    let name = input::text("name", &b.name, 200)?;
    let (user_id, app_id) = match b.scope {
        BudgetScope::Org => {
            input::absent(
                "user_id",
                &b.user_id,
                "only budgets with scope `user` name a user",
            )?;
            input::absent(
                "app_id",
                &b.app_id,
                "only budgets with scope `app` name an app",
            )?;
            (String::new(), String::new())
        }
        BudgetScope::User => {
            input::absent(
                "app_id",
                &b.app_id,
                "only budgets with scope `app` name an app",
            )?;
            let u = b
                .user_id
                .as_deref()
                .ok_or_else(|| ApiError::bad("user_id", "scope `user` needs `user_id`"))?;
            (input::text("user_id", u, 256)?, String::new())
        }
        BudgetScope::App => {
            input::absent(
                "user_id",
                &b.user_id,
                "only budgets with scope `user` name a user",
            )?;
            let a = b
                .app_id
                .as_deref()
                .ok_or_else(|| ApiError::bad("app_id", "scope `app` needs `app_id`"))?;
            (String::new(), input::text("app_id", a, 256)?)
        }
    };
    let limit = Nanos::parse_usd(&b.limit_usd).map_err(|e| {
        ApiError::bad(
            "limit_usd",
            format!("`limit_usd` must be a USD decimal string: {e}"),
        )
    })?;
    if limit <= Nanos::ZERO {
        return Err(ApiError::bad(
            "limit_usd",
            "`limit_usd` must be greater than 0",
        ));
    }
    if Nanos::from_usd(MAX_LIMIT_USD).is_some_and(|max| limit > max) {
        return Err(ApiError::bad(
            "limit_usd",
            format!("`limit_usd` must be at most {MAX_LIMIT_USD}"),
        ));
    }
    let mut thresholds = b
        .soft_thresholds
        .unwrap_or_else(|| DEFAULT_THRESHOLDS.to_vec());
    if thresholds.len() > 10 {
        return Err(ApiError::bad("soft_thresholds", "at most 10 thresholds"));
    }
    if let Some(t) = thresholds.iter().find(|t| !(1..=100).contains(*t)) {
        return Err(ApiError::bad(
            "soft_thresholds",
            format!("{t} is not a percentage from 1 to 100"),
        ));
    }
    thresholds.sort_unstable();
    if thresholds.windows(2).any(|w| w[0] == w[1]) {
        return Err(ApiError::bad(
            "soft_thresholds",
            "thresholds must not repeat",
        ));
    }
    if let Some(n) = b.reserve_output_tokens {
        if !(1..=MAX_RESERVE_OUTPUT_TOKENS).contains(&n) {
            return Err(ApiError::bad(
                "reserve_output_tokens",
                format!(
                    "`reserve_output_tokens` must be a whole number from 1 to {MAX_RESERVE_OUTPUT_TOKENS} (omit it to reserve the model's maximum output)"
                ),
            ));
        }
    }
    Ok(ValidBudget {
        reserve_output_tokens: b.reserve_output_tokens.unwrap_or(0),
        name,
        scope: b.scope,
        user_id,
        app_id,
        period: b.period,
        limit,
        thresholds,
        mode: b.mode,
        enabled: b.enabled.unwrap_or(true),
    })
}

struct ValidBudget {
    name: String,
    scope: BudgetScope,
    user_id: String,
    app_id: String,
    period: Period,
    limit: Nanos,
    thresholds: Vec<u8>,
    mode: BudgetMode,
    enabled: bool,
    reserve_output_tokens: u32,
}

/// The largest `reserve_output_tokens` (no model writes more in one answer).
const MAX_RESERVE_OUTPUT_TOKENS: u32 = 1_000_000;

impl ValidBudget {
    fn apply(self, row: &mut BudgetRow) {
        row.name = self.name;
        row.scope = self.scope.stored().to_string();
        row.user_id = self.user_id;
        row.app_id = self.app_id;
        row.period = self.period.as_str().to_string();
        row.limit_nusd = self.limit.get();
        row.soft_thresholds = self.thresholds;
        row.mode = self.mode.as_str().to_string();
        row.enabled = u8::from(self.enabled);
        row.reserve_output_tokens = self.reserve_output_tokens;
    }
}

/// The live budget `id` if `principal` may see it; `NotFound` otherwise (also for another
/// org's budget, so ids do not leak).
async fn find(client: &Client, principal: &Principal, id: &str) -> ApiResult<BudgetRow> {
    let not_found = || ApiError::NotFound(format!("no budget {id}"));
    let id = input::uuid(id).ok_or_else(not_found)?;
    let scope = principal.read_scope(None, None)?;
    BUDGET_BY_ID
        .scoped(client, &scope)
        .bind(id.to_string())
        .fetch_optional::<BudgetRow>()
        .await?
        .ok_or_else(not_found)
}

/// Whether `org_id` has a live budget `id` (alert rules of kind `budget_threshold` must name
/// one of their own org's budgets).
pub(crate) async fn exists_in_org(client: &Client, org_id: &str, id: Uuid) -> ApiResult<bool> {
    let scope = Scope::Org {
        org_id: org_id.to_string(),
    };
    Ok(BUDGET_BY_ID
        .scoped(client, &scope)
        .bind(id.to_string())
        .fetch_optional::<BudgetRow>()
        .await?
        .is_some())
}

/// The budgets the caller may see (user-bound viewers: only their own user's budgets).
#[utoipa::path(get, path = "/api/v1/budgets", operation_id = "list_budgets", tag = "budgets", params(crate::params::OrgQuery),
    responses((status = 200, body = [BudgetOut]), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Vec<BudgetOut>>> {
    Ok(Json(
        compute_list(&state, &principal, raw.as_deref()).await?,
    ))
}

async fn list_rows(
    state: &AppState,
    principal: &Principal,
    raw: Option<&str>,
) -> ApiResult<Vec<BudgetRow>> {
    let q = input::query(raw, &["org"])?;
    let scope = principal.read_scope(q.get("org").map(String::as_str), None)?;
    Ok(BUDGETS_LIST
        .scoped(state.client(), &scope)
        .fetch_all::<BudgetRow>()
        .await?)
}

/// What `GET /api/v1/budgets?{raw}` answers.
pub async fn compute_list(
    state: &AppState,
    principal: &Principal,
    raw: Option<&str>,
) -> ApiResult<Vec<BudgetOut>> {
    list_rows(state, principal, raw)
        .await?
        .iter()
        .map(budget_out)
        .collect()
}

/// A budget, its current period (as `GET /api/v1/budgets/{id}/status` answers) and the usage
/// it counts.
#[derive(Debug, Clone)]
pub struct BudgetWithStatus {
    pub budget: BudgetOut,
    pub status: BudgetStatus,
    pub usage_scope: Scope,
}

/// Every budget `GET /api/v1/budgets?{raw}` lists, each with its status.
pub async fn compute_list_with_status(
    state: &AppState,
    principal: &Principal,
    raw: Option<&str>,
) -> ApiResult<Vec<BudgetWithStatus>> {
    let rows = list_rows(state, principal, raw).await?;
    let today = Utc::now().date_naive();
    let statuses = futures_util::future::try_join_all(
        rows.iter()
            .map(|row| status_of_row(state.client(), row, today)),
    )
    .await?;
    rows.iter()
        .zip(statuses)
        .map(|(row, status)| {
            Ok(BudgetWithStatus {
                budget: budget_out(row)?,
                status,
                usage_scope: row.usage_scope(),
            })
        })
        .collect()
}

/// Creates a budget.
#[utoipa::path(post, path = "/api/v1/budgets", operation_id = "create_budget", tag = "budgets", request_body = BudgetIn,
    responses((status = 201, body = BudgetOut), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<BudgetOut>)> {
    let b: BudgetIn = input::json_body(body)?;
    Ok((
        StatusCode::CREATED,
        Json(compute_create(&state, &principal, b).await?),
    ))
}

/// Creates a budget, as `POST /api/v1/budgets` does.
pub async fn compute_create(
    state: &AppState,
    principal: &Principal,
    b: BudgetIn,
) -> ApiResult<BudgetOut> {
    let org_id = principal.write_org(b.org_id.as_deref())?;
    let org_id = input::text("org_id", &org_id, 256)?;
    let valid = validated(b)?;
    let now = now_second();
    let mut row = BudgetRow {
        budget_id: Uuid::new_v4(),
        org_id,
        scope: String::new(),
        user_id: String::new(),
        app_id: String::new(),
        name: String::new(),
        period: String::new(),
        limit_nusd: 0,
        soft_thresholds: Vec::new(),
        mode: String::new(),
        enabled: 1,
        created_by: input::who(principal),
        created_at: now,
        updated_at: now,
        deleted: 0,
        version: row_version(),
        reserve_output_tokens: 0,
    };
    valid.apply(&mut row);
    budgets::write(state.client(), &row).await?;
    budget_out(&row)
}

/// One budget.
#[utoipa::path(get, path = "/api/v1/budgets/{id}", operation_id = "get_budget", tag = "budgets",
    params(("id" = Uuid, Path, description = "Budget id")),
    responses((status = 200, body = BudgetOut), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_one(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<BudgetOut>> {
    Ok(Json(compute_get(&state, &principal, &id).await?))
}

/// What `GET /api/v1/budgets/{id}` answers.
pub async fn compute_get(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> ApiResult<BudgetOut> {
    budget_out(&find(state.client(), principal, id).await?)
}

/// Replaces a budget (every field, as on create).
#[utoipa::path(put, path = "/api/v1/budgets/{id}", operation_id = "replace_budget", tag = "budgets", request_body = BudgetIn,
    params(("id" = Uuid, Path, description = "Budget id")),
    responses((status = 200, body = BudgetOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn replace(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<BudgetOut>> {
    let mut row = find(state.client(), &principal, &id).await?;
    principal.write_org(Some(&row.org_id))?;
    let b: BudgetIn = input::json_body(body)?;
    Ok(Json(replace_row(&state, &mut row, b).await?))
}

/// Replaces a budget, as `PUT /api/v1/budgets/{id}` does.
pub async fn compute_replace(
    state: &AppState,
    principal: &Principal,
    id: &str,
    b: BudgetIn,
) -> ApiResult<BudgetOut> {
    let mut row = find(state.client(), principal, id).await?;
    principal.write_org(Some(&row.org_id))?;
    replace_row(state, &mut row, b).await
}

async fn replace_row(state: &AppState, row: &mut BudgetRow, b: BudgetIn) -> ApiResult<BudgetOut> {
    if b.org_id.as_ref().is_some_and(|o| *o != row.org_id) {
        return Err(ApiError::bad(
            "org_id",
            "a budget cannot move to another org",
        ));
    }
    validated(b)?.apply(row);
    row.updated_at = now_second();
    row.version = row_version();
    budgets::write(state.client(), row).await?;
    budget_out(row)
}

/// Deletes a budget (a new version with `deleted = 1`).
#[utoipa::path(delete, path = "/api/v1/budgets/{id}", operation_id = "delete_budget", tag = "budgets",
    params(("id" = Uuid, Path, description = "Budget id")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let mut row = find(state.client(), &principal, &id).await?;
    principal.write_org(Some(&row.org_id))?;
    row.deleted = 1;
    row.updated_at = now_second();
    row.version = row_version();
    budgets::write(state.client(), &row).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A row of `budget_spend.sql`.
#[derive(Debug, Row, Deserialize)]
struct SpendRow {
    /// Nano-USD (`Decimal(38,9)`).
    cost_usd: i128,
    requests: u64,
}

/// A budget's current period against its limit.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct BudgetStatus {
    pub budget_id: Uuid,
    pub name: String,
    pub scope: BudgetScope,
    pub period: Period,
    pub mode: BudgetMode,
    pub enabled: bool,
    /// Start of the current period (UTC midnight).
    #[serde(with = "usage_core::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub period_start: DateTime<Utc>,
    /// End of the current period, exclusive (UTC midnight).
    #[serde(with = "usage_core::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub period_end: DateTime<Utc>,
    /// UTC days left in the period, today included (1 on its last day).
    pub days_left: u32,
    /// USD, exact decimals.
    pub limit_usd: String,
    pub spent_usd: String,
    /// Limit minus spent, never below 0.
    pub remaining_usd: String,
    /// Spent ÷ limit × 100, rounded down to two decimals (may exceed 100); the edge's
    /// `x-tollgate-budget-warning` header shows the same figure (`usage_core::budget_use`).
    pub percent_used: f64,
    /// The soft thresholds reached so far (spent ≥ threshold % of the limit; reservations of
    /// calls in flight do not count, here or at the edge).
    pub thresholds_crossed: Vec<u8>,
    /// Spent ≥ limit.
    pub exceeded: bool,
    /// Calls counted in the period.
    pub requests: u64,
}

/// The figures of a status, from the period's spend (pure, for tests).
pub fn status_of(
    b: &BudgetOut,
    limit_nusd: i64,
    spent_nusd: i128,
    requests: u64,
    today: NaiveDate,
) -> BudgetStatus {
    let (start, end) = b.period.bounds(today);
    let limit = i128::from(limit_nusd).max(1);
    let basis_points = usage_core::budget_use::used_basis_points(spent_nusd, limit);
    let remaining = (limit - spent_nusd).max(0);
    let nanos = |v: i128| Nanos::new(i64::try_from(v).unwrap_or(i64::MAX)).to_string();
    BudgetStatus {
        budget_id: b.budget_id,
        name: b.name.clone(),
        scope: b.scope,
        period: b.period,
        mode: b.mode,
        enabled: b.enabled,
        period_start: start.and_time(NaiveTime::MIN).and_utc(),
        period_end: end.and_time(NaiveTime::MIN).and_utc(),
        days_left: u32::try_from((end - today).num_days()).unwrap_or(0),
        limit_usd: b.limit_usd.clone(),
        spent_usd: nanos(spent_nusd),
        remaining_usd: nanos(remaining),
        percent_used: basis_points as f64 / 100.0,
        thresholds_crossed: b
            .soft_thresholds
            .iter()
            .copied()
            .filter(|t| usage_core::budget_use::reached(spent_nusd, limit, *t))
            .collect(),
        exceeded: spent_nusd >= limit,
        requests,
    }
}

/// Spent this period, percent used, remaining, the period and its days left, and the
/// thresholds crossed.
#[utoipa::path(get, path = "/api/v1/budgets/{id}/status", operation_id = "budget_status", tag = "budgets",
    params(("id" = Uuid, Path, description = "Budget id")),
    responses((status = 200, body = BudgetStatus), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn status(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<BudgetStatus>> {
    let client = state.client();
    let row = find(client, &principal, &id).await?;
    let today = Utc::now().date_naive();
    Ok(Json(status_of_row(client, &row, today).await?))
}

/// The status of `row`'s period containing `today`.
async fn status_of_row(
    client: &Client,
    row: &BudgetRow,
    today: NaiveDate,
) -> ApiResult<BudgetStatus> {
    let out = budget_out(row)?;
    let (start, end) = out.period.bounds(today);
    let spend = BUDGET_SPEND
        .scoped(client, &row.usage_scope())
        .bind(day_param(start))
        .bind(day_param(end))
        .fetch_one::<SpendRow>()
        .await?;
    Ok(status_of(
        &out,
        row.limit_nusd,
        spend.cost_usd,
        spend.requests,
        today,
    ))
}

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/budgets", get(list).post(create))
        .route(
            "/api/v1/budgets/{id}",
            get(get_one).put(replace).delete(delete),
        )
        .route("/api/v1/budgets/{id}/status", get(status))
}

/// Strict input parsing shared by the configuration modules (budgets, alerts, keys): every
/// problem is a 400 naming the field or parameter at fault.
pub(crate) mod input {
    use std::collections::BTreeMap;

    use axum::extract::rejection::JsonRejection;
    use axum::Json;
    use serde::de::DeserializeOwned;
    use serde_json::Value;
    use uuid::Uuid;

    use crate::auth::Principal;
    use crate::error::{json_rejection, ApiError, ApiResult};

    /// Most top-level keys a body may have before the error search gives up naming a field.
    const MAX_KEYS_SEARCHED: usize = 16;

    /// Deserializes a JSON body into `T`. serde names the field for unknown and missing fields
    /// but not for a wrong type or enum value; then the field is found by leaving one key out
    /// at a time — the key whose absence changes the error is the one at fault.
    pub fn json_body<T: DeserializeOwned>(
        body: Result<Json<Value>, JsonRejection>,
    ) -> ApiResult<T> {
        let Json(value) = body.map_err(json_rejection)?;
        let err = match serde_json::from_value::<T>(value.clone()) {
            Ok(t) => return Ok(t),
            Err(e) => e.to_string(),
        };
        let named = ["unknown field `", "missing field `"]
            .iter()
            .find_map(|p| err.strip_prefix(p))
            .and_then(|rest| rest.split('`').next())
            .map(str::to_string);
        let field = named.or_else(|| {
            let obj = value.as_object().filter(|o| o.len() <= MAX_KEYS_SEARCHED)?;
            obj.keys()
                .find(|k| {
                    let mut without = obj.clone();
                    without.remove(k.as_str());
                    serde_json::from_value::<T>(Value::Object(without))
                        .map_err(|e| e.to_string())
                        .err()
                        .as_deref()
                        != Some(err.as_str())
                })
                .cloned()
        });
        Err(ApiError::BadRequest {
            field,
            message: err,
        })
    }

    /// A query string of `known` parameters only, none repeated.
    pub fn query(raw: Option<&str>, known: &[&str]) -> ApiResult<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            let k: String = k.chars().take(40).collect();
            if !known.contains(&k.as_str()) {
                return Err(ApiError::bad(
                    &k,
                    format!("unknown parameter `{k}` (known: {})", known.join(", ")),
                ));
            }
            if out.insert(k.clone(), v.into_owned()).is_some() {
                return Err(ApiError::bad(&k, format!("`{k}` is given more than once")));
            }
        }
        if let Some(o) = out.get("org") {
            text("org", o, 256)?;
        }
        Ok(out)
    }

    /// 1–`max` characters, none of them control characters.
    pub fn text(field: &str, value: &str, max: usize) -> ApiResult<String> {
        let n = value.chars().count();
        if n == 0 || n > max || value.chars().any(char::is_control) || value.trim().is_empty() {
            return Err(ApiError::bad(
                field,
                format!("`{field}` must be 1-{max} printable characters"),
            ));
        }
        Ok(value.to_string())
    }

    /// A field that must not be given in this combination.
    pub fn absent(field: &str, value: &Option<String>, why: &str) -> ApiResult<()> {
        match value {
            Some(v) if !v.is_empty() => Err(ApiError::bad(field, why)),
            _ => Ok(()),
        }
    }

    /// A path id: a UUID, or nothing (the caller answers 404, as for an unknown id).
    pub fn uuid(id: &str) -> Option<Uuid> {
        Uuid::parse_str(id).ok()
    }

    /// How a change records who made it: the token's name and id.
    pub fn who(p: &Principal) -> String {
        format!("{} ({})", p.name, p.token_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use usage_core::ymd;

    #[test]
    fn status_figures_are_exact() {
        let b = BudgetOut {
            budget_id: Uuid::nil(),
            org_id: "o".into(),
            name: "n".into(),
            scope: BudgetScope::Org,
            user_id: None,
            app_id: None,
            period: Period::Monthly,
            limit_usd: "100.000000000".into(),
            soft_thresholds: vec![50, 80, 100],
            mode: BudgetMode::Soft,
            enabled: true,
            reserve_output_tokens: None,
            created_by: String::new(),
            created_at: DateTime::UNIX_EPOCH,
            updated_at: DateTime::UNIX_EPOCH,
        };
        let s = status_of(&b, 100_000_000_000, 80_000_000_000, 7, ymd(2026, 11, 27));
        assert_eq!(
            (s.spent_usd.as_str(), s.remaining_usd.as_str()),
            ("80.000000000", "20.000000000")
        );
        assert_eq!(
            (
                s.percent_used,
                s.thresholds_crossed.clone(),
                s.exceeded,
                s.days_left
            ),
            (80.0, vec![50, 80], false, 4)
        );
        let s = status_of(&b, 100_000_000_000, 123_456_789_012, 7, ymd(2026, 11, 30));
        assert_eq!(
            (
                s.remaining_usd.as_str(),
                s.percent_used,
                s.exceeded,
                s.days_left
            ),
            ("0.000000000", 123.45, true, 1)
        );
    }
}
