//! The Projections tab: the 30-day forecast with its 80% interval after the actual spend of the
//! chosen range, the month-end total, per-provider forecasts, budget exhaustion dates and
//! credit runway.

use std::collections::BTreeMap;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{NaiveDate, TimeDelta, Utc};

use crate::analytics::{self, Timeseries};
use crate::projections::{self, BudgetExhaustion, Projections};
use crate::web::chart::{Band, LineChart, Series, Side};
use crate::web::filters::{PageFilters, Range};
use crate::web::fmt;
use crate::web::html::{self, card, esc, Card, Tab};
use crate::web::session::Session;
use crate::web::{tab_error, tab_page};
use crate::AppState;
use tollgate_forecast::Method;

fn method_name(m: Option<Method>) -> &'static str {
    match m {
        Some(Method::TrendWeekly) => "trend + weekly seasonality",
        Some(Method::Trend) => "trend",
        Some(Method::Mean) => "mean",
        None => "none (no history)",
    }
}

/// `GET /projections`.
pub async fn page(
    State(state): State<AppState>,
    session: Session,
    RawQuery(raw): RawQuery,
) -> Response {
    let filters = PageFilters::parse(raw.as_deref());
    let now = Utc::now();
    let api_query = filters.api_query(now);
    let p = &session.principal;
    if let Err(e) = analytics::request(&state, p, Some(&api_query)) {
        return tab_error(&state, &session, Tab::Projections, &filters, &e);
    }
    // The actuals before the forecast: the chosen range, daily (a week for "24h").
    let history_query = if filters.range == Range::Day {
        filters.with_range(Range::Week).api_query(now)
    } else {
        api_query.clone()
    };
    let (outlook, history) = tokio::join!(
        projections::compute_projections(&state, p, Some(&api_query)),
        analytics::compute_timeseries(&state, p, Some(&history_query)),
    );
    let o = match outlook {
        Ok(o) => o,
        Err(e) => return tab_error(&state, &session, Tab::Projections, &filters, &e),
    };
    let retry = filters.href("/projections");
    let today = now.date_naive();
    let notes: String = o
        .notes
        .iter()
        .map(|n| format!("<p class=\"notice warn\" role=\"note\">{}</p>", esc(n)))
        .collect();
    let chart = match &history {
        Ok(h) => forecast_chart(&o, h, today),
        Err(e) => html::error_panel("Forecast", e, Some(&retry)),
    };
    let budgets_html = budget_table(&o.budgets);
    let body = format!(
        "<div class=\"page-head\"><h1>Projections</h1><p class=\"muted\">The next {} days from \
         today ({}), fitted on the last {} complete days{}</p></div>{notes}\
         <div class=\"cards\" id=\"projection-cards\">{}</div>{}<div class=\"grid-2\">{}{}</div>{}",
        o.horizon_days,
        fmt::short_day(today),
        o.history_days,
        filters
            .provider
            .as_deref()
            .map_or(String::new(), |p| format!(" · provider {}", esc(p))),
        cards(&o),
        html::panel(
            "forecast",
            "Forecast",
            "Actual daily cost, then the forecast with its 80% interval",
            &chart,
        ),
        html::panel(
            "provider-forecasts",
            "By provider",
            "Each provider forecast on its own history",
            &provider_table(&o),
        ),
        html::panel(
            "runway",
            "Credit runway",
            "How long each balance lasts at its provider's forecast pace",
            &runway_table(&o),
        ),
        html::panel(
            "budget-exhaustion",
            "Budget exhaustion",
            "When each budget's current period reaches its limit at the forecast pace",
            &budgets_html,
        ),
    );
    tab_page(
        &state,
        &session,
        Tab::Projections,
        &filters,
        &api_query,
        Some("Forecasts always start today; the time range sets how much actual spend the chart shows."),
        StatusCode::OK,
        &body,
    )
}

fn cards(o: &Projections) -> String {
    let m = &o.month_end;
    [
        Card {
            key: "next-horizon",
            label: "Next 30 days",
            exact: o.next_horizon_usd.clone(),
            shown: fmt::usd(&o.next_horizon_usd),
            previous: None,
            sub: format!("forecast over {} days", o.horizon_days),
        },
        Card {
            key: "month-end",
            label: "Month-end total",
            exact: m.total_usd.clone(),
            shown: fmt::usd(&m.total_usd),
            previous: None,
            sub: format!(
                "{}: {} spent so far + {} forecast",
                esc(&m.month),
                esc(&fmt::usd(&m.actual_to_date_usd)),
                esc(&fmt::usd(&m.forecast_rest_usd))
            ),
        },
        Card {
            key: "method",
            label: "Model",
            exact: o.method.map_or("none".into(), |m| {
                serde_json::to_value(m)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            }),
            shown: method_name(o.method).to_string(),
            previous: None,
            sub: format!("fitted on {} days of history", o.history_days),
        },
    ]
    .iter()
    .map(card)
    .collect()
}

fn forecast_chart(o: &Projections, history: &Timeseries, today: NaiveDate) -> String {
    if o.daily.is_empty() {
        return html::empty(
            "Not enough history to forecast",
            "The forecast needs at least one complete day with spend in the last 56 days.",
        );
    }
    let parse = |s: &str| s.parse::<f64>().unwrap_or(0.0);
    let actual: BTreeMap<NaiveDate, f64> = history
        .points
        .iter()
        .filter(|p| p.t.date_naive() < today)
        .map(|p| (p.t.date_naive(), parse(&p.cost_usd)))
        .collect();
    let forecast: BTreeMap<NaiveDate, (f64, f64, f64)> = o
        .daily
        .iter()
        .filter_map(|d| {
            let day = usage_core::rfc3339::parse_day(&d.date)?;
            Some((
                day,
                (
                    parse(&d.forecast_usd),
                    parse(&d.lower_usd),
                    parse(&d.upper_usd),
                ),
            ))
        })
        .collect();
    let first = actual
        .keys()
        .next()
        .copied()
        .or_else(|| forecast.keys().next().copied())
        .unwrap_or(today);
    let last = forecast.keys().last().copied().unwrap_or(today);
    let mut days = Vec::new();
    let mut d = first;
    while d <= last {
        days.push(d);
        d += TimeDelta::days(1);
    }
    let marker = days.iter().position(|d| *d == today);
    LineChart {
        id: "forecast-chart",
        summary: format!(
            "Daily cost from {} to {}: actual until yesterday, then the forecast ({} in the next {} days) with its 80% interval.",
            first,
            last,
            fmt::usd(&o.next_horizon_usd),
            o.horizon_days
        ),
        ticks: days.iter().map(|d| fmt::short_day(*d)).collect(),
        labels: days.iter().map(|d| fmt::weekday_day(*d)).collect(),
        left_axis: fmt::usd_axis,
        right_axis: None,
        series: vec![
            Series {
                name: "Actual".into(),
                class: "s-cost",
                side: Side::Left,
                values: days.iter().map(|d| actual.get(d).copied()).collect(),
                area: true,
                dashed: false,
                format: fmt::usd_f,
            },
            Series {
                name: "Forecast".into(),
                class: "s-fc",
                side: Side::Left,
                values: days.iter().map(|d| forecast.get(d).map(|f| f.0)).collect(),
                area: false,
                dashed: true,
                format: fmt::usd_f,
            },
        ],
        band: Some(Band {
            name: "80% interval".into(),
            class: "s-fc",
            lower: days.iter().map(|d| forecast.get(d).map(|f| f.1)).collect(),
            upper: days.iter().map(|d| forecast.get(d).map(|f| f.2)).collect(),
        }),
        marker: marker.map(|i| (i, "today".to_string())),
    }
    .render()
}

fn provider_table(o: &Projections) -> String {
    if o.providers.is_empty() {
        return html::empty(
            "No provider has spend to forecast",
            "Per-provider forecasts appear once a provider has a day with spend in the last 56 days.",
        );
    }
    let rows: Vec<html::Row> = o
        .providers
        .iter()
        .map(|p| html::Row {
            attrs: String::new(),
            cells: vec![
                esc(&p.provider),
                method_name(p.method).to_string(),
                esc(&fmt::usd(&p.next_horizon_usd)),
                esc(&fmt::usd(&p.month_end_usd)),
            ],
        })
        .collect();
    let next = format!("Next {} days", o.horizon_days);
    html::table(
        "provider-forecast-table",
        &[
            html::col("Provider"),
            html::col("Model"),
            html::num(&next),
            html::num("Month-end"),
        ],
        &rows,
    )
}

fn runway_table(o: &Projections) -> String {
    if o.runway.is_empty() {
        return html::empty(
            "No balances to run down",
            "Runway needs a recorded balance (Providers tab) and a forecast for its provider.",
        );
    }
    let rows: Vec<html::Row> = o
        .runway
        .iter()
        .map(|r| html::Row {
            attrs: String::new(),
            cells: vec![
                format!(
                    "{} <small class=\"muted\">{}</small>",
                    esc(&r.provider),
                    esc(&r.key_label)
                ),
                esc(&fmt::usd(&r.balance_usd)),
                esc(&fmt::usd(&r.burn_per_day_usd)),
                match (r.days, &r.runs_out_on) {
                    (Some(d), Some(day)) => format!(
                        "<span class=\"nowrap\">{}</span> <small class=\"muted\">({d:.0} days)</small>",
                        esc(day)
                    ),
                    (Some(_), None) => "beyond 10 years".to_string(),
                    _ => "<span class=\"muted\">no spend forecast</span>".to_string(),
                },
            ],
        })
        .collect();
    html::table(
        "runway-table",
        &[
            html::col("Balance"),
            html::num("Left"),
            html::num("Burn / day"),
            html::col("Runs out"),
        ],
        &rows,
    )
}

fn budget_table(list: &[BudgetExhaustion]) -> String {
    if list.is_empty() {
        return html::empty(
            "No budgets",
            "Budgets you can see are forecast here; create them on the Budgets tab.",
        );
    }
    let rows: Vec<html::Row> = list
        .iter()
        .map(|b| {
            let s = &b.status;
            let when = match &b.exhausts_on {
                Some(d) if s.exceeded => format!(
                    "<span class=\"bad-text\">exceeded</span> <small class=\"muted\">({})</small>",
                    esc(d)
                ),
                Some(d) => format!("<span class=\"warn-text nowrap\">{}</span>", esc(d)),
                None if b.method.is_none() => {
                    "<span class=\"muted\">no forecast</span>".to_string()
                }
                None => "<span class=\"ok-text\">not this period</span>".to_string(),
            };
            html::Row {
                attrs: format!(" data-budget-id=\"{}\"", b.budget.budget_id),
                cells: vec![
                    format!(
                        "{}<br><small class=\"muted\">{} · {}</small>",
                        esc(&b.budget.name),
                        s.period.as_str(),
                        s.mode.as_str()
                    ),
                    esc(&fmt::usd(&s.limit_usd)),
                    esc(&fmt::usd(&s.spent_usd)),
                    fmt::percent(s.percent_used / 100.0),
                    esc(&fmt::usd(&b.projected_period_usd)),
                    when,
                ],
            }
        })
        .collect();
    html::table(
        "budget-exhaustion-table",
        &[
            html::col("Budget"),
            html::num("Limit"),
            html::num("Spent"),
            html::num("Used"),
            html::num("Projected period"),
            html::col("Runs out"),
        ],
        &rows,
    )
}
