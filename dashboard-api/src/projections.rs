//! `GET /api/v1/projections`: the next days' spend with an 80% interval, the month-end total,
//! per-provider forecasts and credit runway — the model is in [`tollgate_forecast`].

use std::collections::BTreeMap;

use axum::extract::{RawQuery, State};
use axum::Json;
use chrono::{Datelike, Months, NaiveDate, TimeDelta, Utc};
use serde::Serialize;
use tollgate_clickhouse::clickhouse::Client;
use tollgate_clickhouse::queries::{self, day_param};
use usage_core::Nanos;
use utoipa::ToSchema;

use crate::analytics::request;
use crate::auth::Principal;
use crate::error::ApiResult;
use crate::AppState;
use tollgate_clickhouse::Filter;
use tollgate_forecast::{exhaustion_day, Forecast, Method, Point};

fn usd_f(v: f64) -> String {
    Nanos::new((v * 1e9).round() as i64).to_string()
}

/// One forecast day.
#[derive(Debug, Serialize, ToSchema)]
pub struct DayOut {
    #[schema(value_type = String)]
    pub date: String,
    pub forecast_usd: String,
    /// 80% prediction interval.
    pub lower_usd: String,
    pub upper_usd: String,
}

/// The month of today.
#[derive(Debug, Serialize, ToSchema)]
pub struct MonthEnd {
    #[schema(value_type = String)]
    pub month: String,
    /// Spent so far this month (today included, as far as it went).
    pub actual_to_date_usd: String,
    /// Forecast for the rest of the month.
    pub forecast_rest_usd: String,
    pub total_usd: String,
}

/// One provider's outlook.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderOutlook {
    pub provider: String,
    pub method: Option<Method>,
    pub next_horizon_usd: String,
    pub month_end_usd: String,
}

/// How long a provider balance lasts at the forecast burn rate.
#[derive(Debug, Serialize, ToSchema)]
pub struct Runway {
    pub provider: String,
    pub key_label: String,
    pub balance_usd: String,
    /// Forecast spend per day over the horizon.
    pub burn_per_day_usd: String,
    /// Days until the balance reaches zero (`null`: not within the horizon, or no spend).
    pub days: Option<f64>,
    #[schema(value_type = Option<String>)]
    pub runs_out_on: Option<String>,
}

/// `GET /api/v1/projections`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Projections {
    /// `trend+weekly`, `trend` or `mean`; `null` with no history at all.
    pub method: Option<Method>,
    /// Complete days the model was fitted on.
    pub history_days: u32,
    pub horizon_days: u32,
    pub daily: Vec<DayOut>,
    pub next_horizon_usd: String,
    pub month_end: MonthEnd,
    pub providers: Vec<ProviderOutlook>,
    pub runway: Vec<Runway>,
    /// Every budget in scope (narrowed by `org`; a budget counts all providers, so `provider`
    /// does not apply): its current period and the day the forecast says it runs out.
    pub budgets: Vec<BudgetExhaustion>,
    /// Why the forecast is limited, when it is ("insufficient history", …).
    pub notes: Vec<String>,
}

/// Daily cost per day of `[from, to)` for `filter`, zeros filled.
async fn daily_costs(
    client: &Client,
    filter: &Filter,
    from: NaiveDate,
    to: NaiveDate,
) -> ApiResult<Vec<f64>> {
    let rows = filter
        .query(client, &queries::DAILY_OVERVIEW)
        .bind(day_param(from))
        .bind(day_param(to))
        .fetch_all::<queries::DailyOverviewRow>()
        .await?;
    let by_day: BTreeMap<NaiveDate, i128> = rows.into_iter().map(|r| (r.day, r.cost_usd)).collect();
    let mut out = Vec::new();
    let mut d = from;
    while d < to {
        out.push(by_day.get(&d).map_or(0.0, |c| *c as f64 / 1e9));
        d = d.succ_opt().unwrap_or(to);
    }
    Ok(out)
}

fn month_end(d: NaiveDate) -> NaiveDate {
    d.with_day(1)
        .and_then(|first| first.checked_add_months(Months::new(1)))
        .unwrap_or(d)
}

/// A fitted outlook for one filter.
struct Outlook {
    forecast: Option<Forecast>,
    history_days: u32,
    actual_month: f64,
    actual_today: f64,
}

async fn outlook(
    client: &Client,
    filter: &Filter,
    today: NaiveDate,
    history_days: u32,
) -> ApiResult<Outlook> {
    let from = today - TimeDelta::days(i64::from(history_days));
    let month_start = today.with_day(1).unwrap_or(today);
    let start = from.min(month_start);
    let costs = daily_costs(client, filter, start, today + TimeDelta::days(1)).await?;
    let idx = |d: NaiveDate| (d - start).num_days() as usize;
    let actual_today = costs.get(idx(today)).copied().unwrap_or(0.0);
    let actual_month: f64 = costs[idx(month_start)..].iter().sum();
    // Fit on complete days from the first one with any spend (an org that started last week
    // has a week of history, not eight weeks of zeros).
    let history = &costs[idx(from)..idx(today)];
    let first = history.iter().position(|c| *c > 0.0);
    let (forecast, history_days) = match first {
        Some(i) => (
            Forecast::fit(from + TimeDelta::days(i as i64), &history[i..]).ok(),
            (history.len() - i) as u32,
        ),
        None => (None, 0),
    };
    Ok(Outlook {
        forecast,
        history_days,
        actual_month,
        actual_today,
    })
}

fn horizon_sum(o: &Outlook, today: NaiveDate, horizon: u32) -> f64 {
    o.forecast.as_ref().map_or(0.0, |f| {
        f.horizon(today, horizon).iter().map(|p| p.value).sum()
    })
}

fn month_rest(o: &Outlook, today: NaiveDate) -> f64 {
    let Some(f) = &o.forecast else { return 0.0 };
    let end = month_end(today);
    let today_rest = (f.at(today).value - o.actual_today).max(0.0);
    let mut rest = today_rest;
    let mut d = today + TimeDelta::days(1);
    while d < end {
        rest += f.at(d).value;
        d += TimeDelta::days(1);
    }
    rest
}

/// When a budget's current period reaches its limit at the forecast pace.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BudgetExhaustion {
    pub budget: crate::budgets::BudgetOut,
    pub status: crate::budgets::BudgetStatus,
    /// Spent so far plus the forecast for the rest of the period (USD).
    pub projected_period_usd: String,
    /// The UTC day the limit is reached at the forecast pace; `None` when it is not reached
    /// within the current period (or there is no history to forecast from).
    pub exhausts_on: Option<String>,
    pub method: Option<Method>,
}

/// For each budget in the caller's scope (`raw` may narrow by `org`): its current period and
/// the day the forecast says it runs out — each budget forecast on its own scope's spend.
pub async fn compute_budget_exhaustion(
    state: &AppState,
    principal: &Principal,
    raw: Option<&str>,
) -> ApiResult<Vec<BudgetExhaustion>> {
    let client = state.client();
    let history_days = state.config().api.forecast_history_days;
    let today = Utc::now().date_naive();
    let mut out = Vec::new();
    for b in crate::budgets::compute_list_with_status(state, principal, raw).await? {
        let filter = Filter {
            scope: b.usage_scope.clone(),
            provider: None,
            model: None,
        };
        let o = outlook(client, &filter, today, history_days).await?;
        let (_, end) = b.budget.period.bounds(today);
        let rest: Vec<Point> = o
            .forecast
            .as_ref()
            .map(|f| {
                let mut pts =
                    f.horizon(today, u32::try_from((end - today).num_days()).unwrap_or(0));
                if let Some(first) = pts.first_mut() {
                    // Today's forecast less what today already spent (that is in `spent`).
                    first.value = (first.value - o.actual_today).max(0.0);
                }
                pts
            })
            .unwrap_or_default();
        let spent: f64 = b.status.spent_usd.parse().unwrap_or(0.0);
        let limit: f64 = b.status.limit_usd.parse().unwrap_or(0.0);
        let exhausts_on = if spent >= limit || o.forecast.is_some() {
            exhaustion_day(&rest, spent, limit)
                .or_else(|| (spent >= limit).then_some(today))
                .map(day_param)
        } else {
            None
        };
        out.push(BudgetExhaustion {
            projected_period_usd: usd_f(spent + rest.iter().map(|p| p.value).sum::<f64>()),
            exhausts_on,
            method: o.forecast.as_ref().map(|f| f.method),
            budget: b.budget,
            status: b.status,
        });
    }
    Ok(out)
}

/// The forecast for the next `horizon_days` (default 30) with an 80% interval, the month-end
/// total, per-provider outlooks, credit runway and each budget's projected exhaustion day, within the
/// caller's scope.
#[utoipa::path(get, path = "/api/v1/projections", tag = "analytics",
    params(crate::analytics::AnalyticsQuery),
    responses((status = 200, body = Projections), (status = 400, body = crate::error::ErrorBody),
              (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn projections(
    State(state): State<AppState>,
    principal: Principal,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Projections>> {
    Ok(Json(
        compute_projections(&state, &principal, raw.as_deref()).await?,
    ))
}

/// What `GET /api/v1/projections?{raw}` answers (the web dashboard renders the same value).
pub async fn compute_projections(
    state: &AppState,
    principal: &Principal,
    raw: Option<&str>,
) -> ApiResult<Projections> {
    let (p, filter) = request(state, principal, raw)?;
    let horizon = p.horizon_days;
    let client = state.client();
    let today = Utc::now().date_naive();
    let history_days = state.config().api.forecast_history_days;
    let total = outlook(client, &filter, today, history_days).await?;
    let mut notes = Vec::new();
    match (&total.forecast, total.history_days) {
        (None, _) => notes.push(format!(
            "insufficient history: no complete day with spend in the last {history_days} days"
        )),
        (Some(f), d) if f.method != Method::TrendWeekly => notes.push(format!(
            "only {d} days of history: weekly seasonality needs 14, so the forecast is a {}",
            if f.method == Method::Mean {
                "mean"
            } else {
                "trend"
            }
        )),
        _ => {}
    }
    let daily: Vec<DayOut> = total
        .forecast
        .as_ref()
        .map(|f| {
            f.horizon(today, horizon)
                .into_iter()
                .map(|pt| DayOut {
                    date: day_param(pt.day),
                    forecast_usd: usd_f(pt.value),
                    lower_usd: usd_f(pt.lower),
                    upper_usd: usd_f(pt.upper),
                })
                .collect()
        })
        .unwrap_or_default();
    let rest = month_rest(&total, today);

    // Per provider: the providers with spend in the history window.
    let (from, to) = (
        today - TimeDelta::days(i64::from(history_days)),
        today + TimeDelta::days(1),
    );
    let rows = filter
        .query(client, &queries::BY_PROVIDER)
        .bind(day_param(from))
        .bind(day_param(to))
        .fetch_all::<queries::ProviderRow>()
        .await?;
    let mut providers = Vec::new();
    let mut burn: BTreeMap<String, f64> = BTreeMap::new();
    for r in rows {
        let pf = Filter {
            provider: Some(r.provider.clone()),
            ..filter.clone()
        };
        let o = outlook(client, &pf, today, history_days).await?;
        let next = horizon_sum(&o, today, horizon);
        burn.insert(r.provider.clone(), next / f64::from(horizon.max(1)));
        providers.push(ProviderOutlook {
            provider: r.provider,
            method: o.forecast.as_ref().map(|f| f.method),
            next_horizon_usd: usd_f(next),
            month_end_usd: usd_f(o.actual_month + month_rest(&o, today)),
        });
    }

    let runway = crate::credits::latest(client, principal)
        .await?
        .into_iter()
        .filter_map(|c| {
            let balance: f64 = c.balance_usd.as_deref()?.parse().ok()?;
            let per_day = burn.get(&c.provider).copied().unwrap_or(0.0);
            let days = (per_day > 0.0).then(|| (balance / per_day).max(0.0));
            Some(Runway {
                runs_out_on: days
                    .filter(|d| *d <= 3650.0)
                    .map(|d| day_param(today + TimeDelta::days(d.floor() as i64))),
                days,
                provider: c.provider,
                key_label: c.key_label,
                balance_usd: usd_f(balance),
                burn_per_day_usd: usd_f(per_day),
            })
        })
        .collect();

    // Budgets count every provider: only the `org` filter narrows them.
    let org_only: Option<String> = raw.map(|q| {
        q.split('&')
            .filter(|kv| kv.starts_with("org="))
            .collect::<Vec<_>>()
            .join("&")
    });
    let budgets = compute_budget_exhaustion(state, principal, org_only.as_deref()).await?;

    Ok(Projections {
        method: total.forecast.as_ref().map(|f| f.method),
        history_days: total.history_days,
        horizon_days: horizon,
        next_horizon_usd: usd_f(horizon_sum(&total, today, horizon)),
        month_end: MonthEnd {
            month: format!("{:04}-{:02}", today.year(), today.month()),
            actual_to_date_usd: usd_f(total.actual_month),
            forecast_rest_usd: usd_f(rest),
            total_usd: usd_f(total.actual_month + rest),
        },
        daily,
        providers,
        runway,
        budgets,
        notes,
    })
}
