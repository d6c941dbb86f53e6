//! The analytics endpoints: overview, time series, providers, models, top spenders. Every
//! figure is read from the rollups through the named queries in `clickhouse/queries/`, under
//! the caller's tenant scope plus the optional `provider` / `model` filters.
//!
//! Every answer covers exactly the window it echoes, to the second: whole UTC days come from
//! the daily rollups, whole hours from the hourly one, and the partial hours at either end from
//! the raw rows (`Filter::query_over` in the clickhouse crate). Daily buckets of a series are
//! the parts of each UTC day inside the window, hourly buckets the parts of each hour.

use std::collections::BTreeMap;

use axum::extract::{RawQuery, State};
use axum::Json;
use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use tollgate_clickhouse::clickhouse::{Client, Row};
use tollgate_clickhouse::queries::{self, day_param, hour_param, NamedQuery};
use tollgate_clickhouse::Filter;
use usage_core::Nanos;
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::error::ApiResult;
use crate::params::{self, Granularity, Params, Window};
use crate::AppState;

const PROVIDER_PERFORMANCE: NamedQuery = NamedQuery {
    name: "provider_performance",
    sql: include_str!("../../clickhouse/queries/provider_performance.sql"),
};
const TOP_USERS: NamedQuery = NamedQuery {
    name: "top_users",
    sql: include_str!("../../clickhouse/queries/top_users.sql"),
};
const TOP_APPS: NamedQuery = NamedQuery {
    name: "top_apps",
    sql: include_str!("../../clickhouse/queries/top_apps.sql"),
};

/// Parses the query string and resolves the caller's scope.
pub fn request(
    state: &AppState,
    principal: &Principal,
    raw: Option<&str>,
) -> ApiResult<(Params, Filter)> {
    let map = params::parse_query(raw)?;
    let api = &state.config().api;
    let limits = params::Limits {
        providers: &api.providers,
        max_range_days: api.max_range_days,
        max_hourly_range_days: api.max_hourly_range_days,
    };
    let p = params::parse(&map, &limits, Utc::now())?;
    let scope = principal.read_scope(p.org.as_deref(), p.user.as_deref())?;
    let filter = Filter {
        scope,
        provider: p.provider.clone(),
        model: p.model.clone(),
    };
    Ok((p, filter))
}

/// `nq` over exactly `window`, with the UTC days it touches bound next (files whose
/// `-- params:` line starts `from_day, to_day`).
fn over_days(
    client: &Client,
    filter: &Filter,
    nq: &NamedQuery,
    window: &Window,
) -> ApiResult<tollgate_clickhouse::clickhouse::query::Query> {
    let (first, end) = window.days();
    Ok(filter
        .query_over(client, nq, window.from, window.to)?
        .bind(day_param(first))
        .bind(day_param(end)))
}

/// Money as an exact decimal USD string (a sum over rows, clamped to what fits).
fn usd(nanos: i128) -> String {
    Nanos::clamped(nanos).to_string()
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The window a response covers.
#[derive(Debug, Serialize, ToSchema)]
pub struct WindowOut {
    #[serde(with = "usage_core::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub from: DateTime<Utc>,
    #[serde(with = "usage_core::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub to: DateTime<Utc>,
    /// First and last UTC day the daily figures cover.
    #[schema(value_type = String)]
    pub first_day: String,
    #[schema(value_type = String)]
    pub last_day: String,
}

fn window_out(p: &Params) -> WindowOut {
    let (first, end) = p.window.days();
    WindowOut {
        from: p.window.from,
        to: p.window.to,
        first_day: day_param(first),
        last_day: day_param(end.pred_opt().unwrap_or(end)),
    }
}

/// Headline totals of one period.
#[derive(Debug, Serialize, ToSchema, PartialEq)]
pub struct Totals {
    pub requests: u64,
    pub errors: u64,
    /// Successful calls ÷ calls (0 when there were none).
    pub success_rate: f64,
    /// USD, exact decimal.
    pub cost_usd: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    pub total_tokens: u64,
    pub avg_latency_ms: f64,
    pub p95_latency_ms: f64,
    /// Calls to models missing from the price table: their cost is unknown, not zero.
    pub unpriced_requests: u64,
    pub active_users: u64,
    pub active_apps: u64,
}

impl From<queries::OverviewTotalsRow> for Totals {
    fn from(r: queries::OverviewTotalsRow) -> Self {
        Totals {
            requests: r.requests,
            errors: r.errors,
            success_rate: if r.requests == 0 {
                0.0
            } else {
                1.0 - ratio(r.errors, r.requests)
            },
            cost_usd: usd(r.cost_usd),
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cached_input_tokens: r.cached_input_tokens,
            cache_write_tokens: r.cache_write_tokens,
            reasoning_tokens: r.reasoning_tokens,
            total_tokens: r.input_tokens + r.output_tokens,
            avg_latency_ms: r.avg_latency_ms,
            p95_latency_ms: r.latency_quantiles_ms.get(2).copied().unwrap_or(0.0),
            unpriced_requests: r.unpriced_requests,
            active_users: r.active_users,
            active_apps: r.active_apps,
        }
    }
}

/// `GET /api/v1/overview`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Overview {
    pub window: WindowOut,
    pub current: Totals,
    /// The same totals for the equal-length period just before.
    pub previous: Totals,
    /// Alerts open or acknowledged (not resolved) in scope.
    pub open_alerts: u64,
}

async fn totals(client: &Client, filter: &Filter, window: &Window) -> ApiResult<Totals> {
    let row = over_days(client, filter, &queries::OVERVIEW_TOTALS, window)?
        .fetch_one::<queries::OverviewTotalsRow>()
        .await?;
    Ok(row.into())
}

/// Requests, success rate, cost, tokens by class, latency, unpriced calls and open alerts,
/// each with the previous period of equal length.
#[utoipa::path(get, path = "/api/v1/overview", tag = "analytics",
    params(AnalyticsQuery),
    responses((status = 200, body = Overview), (status = 400, body = crate::error::ErrorBody),
              (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn overview(
    State(state): State<AppState>,
    principal: Principal,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Overview>> {
    Ok(Json(
        compute_overview(&state, &principal, raw.as_deref()).await?,
    ))
}

/// What `GET /api/v1/overview?{raw}` answers (the web dashboard renders the same value).
pub async fn compute_overview(
    state: &AppState,
    principal: &Principal,
    raw: Option<&str>,
) -> ApiResult<Overview> {
    let (p, filter) = request(state, principal, raw)?;
    overview_of(state, &p, &filter).await
}

/// [`compute_overview`] for parameters already read (the web pages read theirs once).
pub async fn overview_of(state: &AppState, p: &Params, filter: &Filter) -> ApiResult<Overview> {
    let client = state.client();
    // Three independent reads: one round trip's worth of waiting instead of three.
    let previous = p.window.previous();
    let (current, previous, open_alerts) = tokio::try_join!(
        totals(client, filter, &p.window),
        totals(client, filter, &previous),
        crate::alerts::open_count(client, &filter.scope),
    )?;
    Ok(Overview {
        window: window_out(p),
        current,
        previous,
        open_alerts,
    })
}

/// Query parameters every analytics endpoint takes (documented for OpenAPI).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct AnalyticsQuery {
    /// Start: RFC 3339 time or `YYYY-MM-DD` (UTC). Default: 30 days before `to`.
    from: Option<String>,
    /// End (exclusive): RFC 3339 time, or a date meaning the end of that day. Default: now.
    to: Option<String>,
    /// Only this provider (`openai`, `openrouter`, …).
    provider: Option<String>,
    /// Only this model: the model the app requested (its successful and failed calls alike;
    /// the served variant is on every raw row, in the export).
    model: Option<String>,
    /// `hour` or `day` (time series only; default `day`).
    granularity: Option<String>,
    /// Admins: one org. Others: must be their own org, or absent.
    org: Option<String>,
    /// Narrow to one user of the org.
    user: Option<String>,
    /// Rows for the top lists (1–1000, default 10).
    limit: Option<u32>,
    /// Days ahead a projection covers (1–365, default 30).
    horizon_days: Option<u32>,
}

/// One bucket of a time series.
#[derive(Debug, Serialize, ToSchema, PartialEq)]
pub struct Point {
    /// Bucket start (UTC).
    #[serde(with = "usage_core::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub t: DateTime<Utc>,
    pub requests: u64,
    pub errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: String,
}

/// `GET /api/v1/usage/timeseries`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Timeseries {
    pub window: WindowOut,
    pub granularity: Granularity,
    /// Every bucket of the window in order, zeros where there were no calls.
    pub points: Vec<Point>,
}

/// Hourly or daily series; gaps are filled with zeros.
#[utoipa::path(get, path = "/api/v1/usage/timeseries", tag = "analytics",
    params(AnalyticsQuery),
    responses((status = 200, body = Timeseries), (status = 400, body = crate::error::ErrorBody),
              (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn timeseries(
    State(state): State<AppState>,
    principal: Principal,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Timeseries>> {
    Ok(Json(
        compute_timeseries(&state, &principal, raw.as_deref()).await?,
    ))
}

/// What `GET /api/v1/usage/timeseries?{raw}` answers.
pub async fn compute_timeseries(
    state: &AppState,
    principal: &Principal,
    raw: Option<&str>,
) -> ApiResult<Timeseries> {
    let (p, filter) = request(state, principal, raw)?;
    timeseries_of(state, &p, &filter).await
}

/// [`compute_timeseries`] for parameters already read (the web pages read theirs once).
pub async fn timeseries_of(state: &AppState, p: &Params, filter: &Filter) -> ApiResult<Timeseries> {
    let client = state.client();
    let points = match p.granularity {
        Granularity::Day => {
            let (first, end) = p.window.days();
            let rows = over_days(client, filter, &queries::DAILY_OVERVIEW, &p.window)?
                .fetch_all::<queries::DailyOverviewRow>()
                .await?;
            let by_day: BTreeMap<NaiveDate, queries::DailyOverviewRow> =
                rows.into_iter().map(|r| (r.day, r)).collect();
            let mut out = Vec::new();
            let mut d = first;
            while d < end {
                let r = by_day.get(&d);
                out.push(Point {
                    t: d.and_time(NaiveTime::MIN).and_utc(),
                    requests: r.map_or(0, |r| r.requests),
                    errors: r.map_or(0, |r| r.errors),
                    input_tokens: r.map_or(0, |r| r.input_tokens),
                    output_tokens: r.map_or(0, |r| r.output_tokens),
                    cost_usd: usd(r.map_or(0, |r| r.cost_usd)),
                });
                d = d.succ_opt().unwrap_or(end);
            }
            out
        }
        Granularity::Hour => {
            let (first, end) = p.window.hours();
            let rows = filter
                .query_over(
                    client,
                    &queries::HOURLY_TIMESERIES,
                    p.window.from,
                    p.window.to,
                )?
                .bind(hour_param(first))
                .bind(hour_param(end))
                .fetch_all::<queries::HourlyRow>()
                .await?;
            let by_hour: BTreeMap<DateTime<Utc>, queries::HourlyRow> =
                rows.into_iter().map(|r| (r.hour, r)).collect();
            let mut out = Vec::new();
            let mut h = first;
            while h < end {
                let r = by_hour.get(&h);
                out.push(Point {
                    t: h,
                    requests: r.map_or(0, |r| r.requests),
                    errors: r.map_or(0, |r| r.errors),
                    input_tokens: r.map_or(0, |r| r.input_tokens),
                    output_tokens: r.map_or(0, |r| r.output_tokens),
                    cost_usd: usd(r.map_or(0, |r| r.cost_usd)),
                });
                h += TimeDelta::hours(1);
            }
            out
        }
    };
    Ok(Timeseries {
        window: window_out(p),
        granularity: p.granularity,
        points,
    })
}

/// A row of `provider_performance.sql`.
#[derive(Debug, Row, Deserialize)]
struct ProviderPerformanceRow {
    provider: String,
    requests: u64,
    errors: u64,
    refused_by_gateway: u64,
    errors_rate_limited: u64,
    unpriced_requests: u64,
    input_tokens: u64,
    output_tokens: u64,
    cost_usd: i128,
    avg_latency_ms: f64,
    latency_quantiles_ms: Vec<f64>,
    errors_client: u64,
    errors_upstream_5xx: u64,
    errors_timeout: u64,
    errors_aborted: u64,
    errors_network: u64,
    errors_internal: u64,
}

/// Failed calls by whose doing they were (#25): the same split on the providers and models
/// endpoints, the Providers tab, the analyst view `ai_model_performance` (its per-class
/// columns) and the `error_rate` rule (which watches the provider's share: it leaves
/// Tollgate's budget refusals out).
#[derive(Debug, Serialize, ToSchema, PartialEq, Eq, Default)]
pub struct ErrorsByCause {
    /// The provider failed the call: a 5xx, a rate limit (429), or it could not be reached.
    pub provider: u64,
    /// The provider refused the request as invalid (another 4xx), or the app went away
    /// before the answer (aborted).
    pub client: u64,
    /// The provider did not answer in time.
    pub timeout: u64,
    /// Tollgate's own doing: budget refusals (`refused_by_gateway`) and its internal errors.
    pub gateway: u64,
}

#[allow(clippy::too_many_arguments)] // one argument per error class, in the rollups' order
fn errors_by_cause(
    client: u64,
    rate_limited: u64,
    upstream_5xx: u64,
    timeout: u64,
    aborted: u64,
    budget_blocked: u64,
    network: u64,
    internal: u64,
) -> ErrorsByCause {
    ErrorsByCause {
        provider: upstream_5xx + rate_limited + network,
        client: client + aborted,
        timeout,
        gateway: budget_blocked + internal,
    }
}

/// One provider in `GET /api/v1/providers`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderOut {
    pub provider: String,
    /// Every call, Tollgate's own refusals included.
    pub requests: u64,
    /// Calls the provider failed (Tollgate's budget refusals are not the provider's).
    pub errors: u64,
    /// `errors` ÷ the calls that reached the provider.
    pub error_rate: f64,
    /// Calls Tollgate's budgets refused before they reached the provider.
    pub refused_by_gateway: u64,
    pub rate_limited: u64,
    pub errors_by_cause: ErrorsByCause,
    pub unpriced_requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: String,
    pub avg_latency_ms: f64,
    pub p95_latency_ms: f64,
    /// Latest balances of this provider's keys visible to the caller.
    pub credits: Vec<crate::credits::CreditOut>,
}

/// Per provider: calls, spend, error rate, latency, and credit status.
#[utoipa::path(get, path = "/api/v1/providers", tag = "analytics",
    params(AnalyticsQuery),
    responses((status = 200, body = [ProviderOut]), (status = 400, body = crate::error::ErrorBody),
              (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn providers(
    State(state): State<AppState>,
    principal: Principal,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Vec<ProviderOut>>> {
    Ok(Json(
        compute_providers(&state, &principal, raw.as_deref()).await?,
    ))
}

/// What `GET /api/v1/providers?{raw}` answers.
pub async fn compute_providers(
    state: &AppState,
    principal: &Principal,
    raw: Option<&str>,
) -> ApiResult<Vec<ProviderOut>> {
    let (p, filter) = request(state, principal, raw)?;
    providers_of(state, principal, &p, &filter).await
}

/// [`compute_providers`] for parameters already read (the web pages read theirs once).
pub async fn providers_of(
    state: &AppState,
    principal: &Principal,
    p: &Params,
    filter: &Filter,
) -> ApiResult<Vec<ProviderOut>> {
    let client = state.client();
    let rows = over_days(client, filter, &PROVIDER_PERFORMANCE, &p.window)?
        .fetch_all::<ProviderPerformanceRow>()
        .await?;
    let credits = crate::credits::latest(client, principal).await?;
    let mut out: Vec<ProviderOut> = rows
        .into_iter()
        .map(|r| ProviderOut {
            credits: credits
                .iter()
                .filter(|c| c.provider == r.provider)
                .cloned()
                .collect(),
            error_rate: ratio(r.errors, r.requests.saturating_sub(r.refused_by_gateway)),
            errors_by_cause: errors_by_cause(
                r.errors_client,
                r.errors_rate_limited,
                r.errors_upstream_5xx,
                r.errors_timeout,
                r.errors_aborted,
                r.refused_by_gateway,
                r.errors_network,
                r.errors_internal,
            ),
            refused_by_gateway: r.refused_by_gateway,
            p95_latency_ms: r.latency_quantiles_ms.get(2).copied().unwrap_or(0.0),
            provider: r.provider,
            requests: r.requests,
            errors: r.errors,
            rate_limited: r.errors_rate_limited,
            unpriced_requests: r.unpriced_requests,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cost_usd: usd(r.cost_usd),
            avg_latency_ms: r.avg_latency_ms,
        })
        .collect();
    // Providers with a balance but no calls in the window still show their credit status.
    for c in &credits {
        if !out.iter().any(|o| o.provider == c.provider)
            && p.provider.as_ref().is_none_or(|f| *f == c.provider)
        {
            out.push(ProviderOut {
                provider: c.provider.clone(),
                requests: 0,
                errors: 0,
                error_rate: 0.0,
                refused_by_gateway: 0,
                rate_limited: 0,
                errors_by_cause: ErrorsByCause::default(),
                unpriced_requests: 0,
                input_tokens: 0,
                output_tokens: 0,
                cost_usd: usd(0),
                avg_latency_ms: 0.0,
                p95_latency_ms: 0.0,
                credits: credits
                    .iter()
                    .filter(|x| x.provider == c.provider)
                    .cloned()
                    .collect(),
            });
        }
    }
    Ok(out)
}

/// One model in `GET /api/v1/models`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelOut {
    pub provider: String,
    pub model: String,
    /// Every call, Tollgate's own refusals included.
    pub requests: u64,
    /// Calls the provider answered successfully ÷ the calls that reached it.
    pub success_rate: f64,
    /// Calls the provider failed (Tollgate's budget refusals are not the provider's).
    pub errors: u64,
    /// Calls Tollgate's budgets refused before they reached the provider.
    pub refused_by_gateway: u64,
    pub errors_by_cause: ErrorsByCause,
    pub avg_latency_ms: f64,
    pub p50_latency_ms: f64,
    pub p95_latency_ms: f64,
    /// Mean time to first token of streamed calls (`null` when none streamed).
    pub avg_ttft_ms: Option<f64>,
    pub p95_ttft_ms: Option<f64>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
    pub cost_usd: String,
    /// USD per 1,000 tokens (input + output).
    pub cost_per_1k_tokens_usd: String,
    /// Output tokens ÷ input tokens.
    pub token_efficiency: f64,
    /// This model's share of the window's cost, 0–1.
    pub cost_share: f64,
    pub output_tokens_per_second: f64,
}

/// Model performance: latency, time to first token, success rate, cost per 1k tokens, token
/// efficiency and share of cost.
#[utoipa::path(get, path = "/api/v1/models", tag = "analytics",
    params(AnalyticsQuery),
    responses((status = 200, body = [ModelOut]), (status = 400, body = crate::error::ErrorBody),
              (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn models(
    State(state): State<AppState>,
    principal: Principal,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Vec<ModelOut>>> {
    Ok(Json(
        compute_models(&state, &principal, raw.as_deref()).await?,
    ))
}

/// What `GET /api/v1/models?{raw}` answers.
pub async fn compute_models(
    state: &AppState,
    principal: &Principal,
    raw: Option<&str>,
) -> ApiResult<Vec<ModelOut>> {
    let (p, filter) = request(state, principal, raw)?;
    models_of(state, &p, &filter).await
}

/// [`compute_models`] for parameters already read (the web pages read theirs once).
pub async fn models_of(state: &AppState, p: &Params, filter: &Filter) -> ApiResult<Vec<ModelOut>> {
    let rows = over_days(
        state.client(),
        filter,
        &queries::MODEL_PERFORMANCE,
        &p.window,
    )?
    .fetch_all::<queries::ModelPerformanceRow>()
    .await?;
    let total_cost: i128 = rows.iter().map(|r| r.cost_usd).sum();
    Ok(rows
        .into_iter()
        .map(|r| {
            let tokens = r.input_tokens + r.output_tokens;
            let per_1k = if tokens == 0 {
                0
            } else {
                r.cost_usd * 1000 / i128::from(tokens)
            };
            let reached = r.requests.saturating_sub(r.refused_by_gateway);
            ModelOut {
                success_rate: if reached == 0 {
                    0.0
                } else {
                    1.0 - ratio(r.errors, reached)
                },
                errors_by_cause: errors_by_cause(
                    r.errors_client,
                    r.errors_rate_limited,
                    r.errors_upstream_5xx,
                    r.errors_timeout,
                    r.errors_aborted,
                    r.refused_by_gateway,
                    r.errors_network,
                    r.errors_internal,
                ),
                refused_by_gateway: r.refused_by_gateway,
                p50_latency_ms: r.latency_quantiles_ms.first().copied().unwrap_or(0.0),
                p95_latency_ms: r.latency_quantiles_ms.get(2).copied().unwrap_or(0.0),
                avg_ttft_ms: (r.ttft_count > 0).then_some(r.avg_ttft_ms),
                p95_ttft_ms: (r.ttft_count > 0)
                    .then(|| r.ttft_quantiles_ms.get(2).copied().unwrap_or(0.0)),
                cost_per_1k_tokens_usd: usd(per_1k),
                token_efficiency: ratio(r.output_tokens, r.input_tokens),
                cost_share: if total_cost == 0 {
                    0.0
                } else {
                    r.cost_usd as f64 / total_cost as f64
                },
                cost_usd: usd(r.cost_usd),
                provider: r.provider,
                model: r.model,
                requests: r.requests,
                errors: r.errors,
                avg_latency_ms: r.avg_latency_ms,
                input_tokens: r.input_tokens,
                output_tokens: r.output_tokens,
                reasoning_tokens: r.reasoning_tokens,
                output_tokens_per_second: r.output_tokens_per_second,
            }
        })
        .collect())
}

/// A row of `top_users.sql` / `top_apps.sql`.
#[derive(Debug, Row, Deserialize)]
struct TopRow {
    org_id: String,
    id: String,
    requests: u64,
    total_tokens: u64,
    cost_usd: i128,
}

/// One entry of a top list.
#[derive(Debug, Serialize, ToSchema)]
pub struct TopOut {
    pub org_id: String,
    /// The user id or app id.
    pub id: String,
    pub requests: u64,
    pub total_tokens: u64,
    pub cost_usd: String,
}

async fn top(
    state: &AppState,
    principal: &Principal,
    raw: Option<&str>,
    nq: &NamedQuery,
) -> ApiResult<Json<Vec<TopOut>>> {
    let (p, filter) = request(state, principal, raw)?;
    let rows = over_days(state.client(), &filter, nq, &p.window)?
        .bind(p.limit)
        .fetch_all::<TopRow>()
        .await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| TopOut {
                org_id: r.org_id,
                id: r.id,
                requests: r.requests,
                total_tokens: r.total_tokens,
                cost_usd: usd(r.cost_usd),
            })
            .collect(),
    ))
}

/// The users who spent most, within the caller's scope.
#[utoipa::path(get, path = "/api/v1/top/users", tag = "analytics", params(AnalyticsQuery),
    responses((status = 200, body = [TopOut]), (status = 400, body = crate::error::ErrorBody),
              (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn top_users(
    State(state): State<AppState>,
    principal: Principal,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Vec<TopOut>>> {
    top(&state, &principal, raw.as_deref(), &TOP_USERS).await
}

/// The apps that spent most, within the caller's scope.
#[utoipa::path(get, path = "/api/v1/top/apps", tag = "analytics", params(AnalyticsQuery),
    responses((status = 200, body = [TopOut]), (status = 400, body = crate::error::ErrorBody),
              (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn top_apps(
    State(state): State<AppState>,
    principal: Principal,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Vec<TopOut>>> {
    top(&state, &principal, raw.as_deref(), &TOP_APPS).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_an_exact_decimal() {
        assert_eq!(usd(1_500_000_001), "1.500000001");
        assert_eq!(usd(0), "0.000000000");
    }
}
