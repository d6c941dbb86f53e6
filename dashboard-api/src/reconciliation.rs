//! `GET /api/v1/reconciliation`: what Tollgate recorded against what each provider billed,
//! per UTC day and provider — the checks the jobs' reconciliation writes (OpenAI's Costs API
//! daily, OpenRouter's key usage the same day; `tollgate_jobs::reconcile`).
//!
//! The provider keys, and so their bills, are the deployment's, not an org's: admins see the
//! figures, and so do the tokens of `evaluator.operator_orgs` (the orgs that run the
//! deployment, whose `cost_drift` rules watch the same rows). Any other token gets a 403 that
//! says so — an org admin does not learn the deployment's totals.

use axum::extract::{RawQuery, State};
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::analytics;
use crate::auth::{Principal, Role};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::AppState;

/// One provider's day.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ReconciliationOut {
    pub provider: String,
    #[schema(value_type = String, format = Date)]
    pub day: NaiveDate,
    /// What Tollgate recorded (USD, 9 decimals).
    pub recorded_usd: String,
    /// What the provider reports; `null` when it could not be read (see `error`).
    pub billed_usd: Option<String>,
    /// `(billed − recorded) ÷ billed × 100`.
    pub drift_percent: f64,
    /// `openai_costs` or `openrouter_key_usage_daily`.
    pub source: String,
    /// `ok` or `error`.
    pub status: String,
    pub error: Option<String>,
    #[serde(with = "usage_core::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub checked_at: DateTime<Utc>,
}

/// Whether this token may see the deployment's bills.
pub fn may_see(state: &AppState, principal: &Principal) -> bool {
    principal.role == Role::Admin
        || (!principal.org_id.is_empty()
            && state
                .config()
                .evaluator
                .operator_orgs
                .contains(&principal.org_id))
}

/// Recorded against billed cost per UTC day and provider, in the range (`from`, `to`: dates or
/// times, default the last 30 days) and for one `provider` if given.
#[utoipa::path(get, path = "/api/v1/reconciliation", operation_id = "reconciliation", tag = "credits",
    params(("from" = Option<String>, Query, description = "First day (YYYY-MM-DD or RFC 3339)"),
           ("to" = Option<String>, Query, description = "End (exclusive for times; a date includes that day)"),
           ("provider" = Option<String>, Query, description = "One provider")),
    responses((status = 200, body = [ReconciliationOut]), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Vec<ReconciliationOut>>> {
    Ok(Json(compute(&state, &principal, raw.as_deref()).await?))
}

/// What `GET /api/v1/reconciliation?{raw}` answers (the Providers tab shows it too).
pub async fn compute(
    state: &AppState,
    principal: &Principal,
    raw: Option<&str>,
) -> ApiResult<Vec<ReconciliationOut>> {
    if !may_see(state, principal) {
        return Err(ApiError::Forbidden(
            "the providers' bills are the deployment's: only admins and the operator orgs \
             (evaluator.operator_orgs) see the reconciliation"
                .into(),
        ));
    }
    let (params, filter) = analytics::request(state, principal, raw)?;
    let (first, end) = params.window.days();
    let rows = tollgate_clickhouse::reconciliation::days(state.client(), first, end).await?;
    Ok(rows
        .into_iter()
        .filter(|r| filter.provider.as_ref().is_none_or(|p| *p == r.provider))
        .map(|r| ReconciliationOut {
            provider: r.provider,
            day: r.day,
            recorded_usd: usage_core::Nanos::new(r.recorded_nusd).to_string(),
            billed_usd: r
                .reported_nusd
                .map(|n| usage_core::Nanos::new(n).to_string()),
            drift_percent: r.drift_percent,
            source: r.source,
            status: r.status,
            error: (!r.error.is_empty()).then_some(r.error),
            checked_at: r.checked_at,
        })
        .collect())
}
