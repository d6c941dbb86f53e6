//! The Overview tab: cards (requests, cost, tokens, active alerts, unpriced requests, each
//! against the previous period), usage over time (cost and requests), and how spend splits
//! across providers.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Timelike, Utc};

use crate::alerts::{AlertOut, AlertState};
use crate::analytics::{self, Overview, ProviderOut, Timeseries};
use crate::error::ApiResult;
use crate::params::Granularity;
use crate::web::chart::{self, Bar, LineChart, Series, Side};
use crate::web::filters::PageFilters;
use crate::web::fmt;
use crate::web::html::{self, card, esc, Card, Tab};
use crate::web::live::Live;
use crate::web::session::Session;
use crate::web::{tab_error, tab_page};
use crate::AppState;

/// `GET /overview`.
pub async fn page(
    State(state): State<AppState>,
    session: Session,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let filters = PageFilters::parse(raw.as_deref());
    let api_query = filters.api_query(Utc::now());
    let p = &session.principal;
    // The filters are read once into typed parameters; every section computes from those.
    let (params, filter) = match analytics::request(&state, p, Some(&api_query)) {
        Ok(read) => read,
        Err(e) => return tab_error(&state, &session, Tab::Overview, &filters, &e),
    };
    let live = Live::check(
        &state,
        &session,
        Tab::Overview,
        raw.as_deref(),
        filters.org.as_deref(),
        (params.window.from, params.window.to),
        &headers,
    )
    .await;
    if let Some(unchanged) = live.not_modified() {
        return unchanged;
    }
    let mut series_params = params.clone();
    if filters.hourly(params.window.from, params.window.to) {
        series_params.granularity = Granularity::Hour;
    }
    let alerts_query = match filters.org_query() {
        q if q.is_empty() => "limit=1000".to_string(),
        q => format!("limit=1000&{q}"),
    };
    let (overview, series, providers, alerts) = tokio::join!(
        analytics::overview_of(&state, &params, &filter),
        analytics::timeseries_of(&state, &series_params, &filter),
        analytics::providers_of(&state, p, &params, &filter),
        crate::alerts::compute_alerts(&state, p, Some(&alerts_query)),
    );
    let overview = match overview {
        Ok(o) => o,
        Err(e) => return tab_error(&state, &session, Tab::Overview, &filters, &e),
    };
    let retry = filters.href("/overview");
    let body = format!(
        "<div class=\"page-head\"><h1>Overview</h1><p class=\"muted\">{} · UTC days {} to {}</p></div>\
         <div class=\"cards\" id=\"cards\">{}</div>\
         <div class=\"grid-2\">{}{}</div>{}",
        esc(&filters.describe()),
        esc(&overview.window.first_day),
        esc(&overview.window.last_day),
        cards(&overview, &alerts, &filters),
        html::panel(
            "usage",
            "Usage over time",
            "Cost and requests per bucket",
            &section(series, &retry, "Usage over time", usage_chart),
        ),
        html::panel(
            "providers",
            "By provider",
            "Share of cost in this period",
            &section(providers, &retry, "By provider", |v| provider_bars(v)),
        ),
        live.marker(),
    );
    live.tag(tab_page(
        &state,
        &session,
        Tab::Overview,
        &filters,
        &api_query,
        None,
        StatusCode::OK,
        &body,
    ))
}

/// A section's content, or its error state.
pub(crate) fn section<T>(
    r: ApiResult<T>,
    retry: &str,
    title: &str,
    render: impl FnOnce(&T) -> String,
) -> String {
    match r {
        Ok(v) => render(&v),
        Err(e) => html::error_panel(title, &e, Some(retry)),
    }
}

fn cards(o: &Overview, alerts: &ApiResult<Vec<AlertOut>>, filters: &PageFilters) -> String {
    let (c, p) = (&o.current, &o.previous);
    let vs = filters.previous_phrase();
    let counted = |cur: u64, prev: u64| {
        Some((
            prev.to_string(),
            fmt::count(prev),
            fmt::change(cur as f64, prev as f64),
            vs.clone(),
        ))
    };
    let money = |s: &str| s.parse::<f64>().unwrap_or(0.0);
    let per_request = if c.requests == 0 {
        "no calls in this period".to_string()
    } else {
        format!(
            "{} per request on average",
            fmt::usd_f(money(&c.cost_usd) / c.requests as f64)
        )
    };
    let active_sub = match alerts {
        Ok(list) => {
            let prev = o.window.from - (o.window.to - o.window.from);
            let opened = |from: DateTime<Utc>, to: DateTime<Utc>| {
                list.iter()
                    .filter(|a| a.opened_at >= from && a.opened_at < to)
                    .count() as u64
            };
            let now_n = opened(o.window.from, o.window.to);
            let before = opened(prev, o.window.from);
            let mut by_sev = Vec::new();
            for sev in ["critical", "high", "medium", "low"] {
                let n = list
                    .iter()
                    .filter(|a| a.state != AlertState::Resolved && a.severity == sev)
                    .count();
                if n > 0 {
                    by_sev.push(format!("{n} {sev}"));
                }
            }
            format!(
                "{} opened in this period ({} in the previous){}",
                fmt::count(now_n),
                fmt::count(before),
                if by_sev.is_empty() {
                    String::new()
                } else {
                    format!(" · {}", by_sev.join(" · "))
                }
            )
        }
        Err(_) => "alert history unavailable".to_string(),
    };
    [
        Card {
            key: "requests",
            label: "Requests",
            exact: c.requests.to_string(),
            shown: fmt::count(c.requests),
            previous: counted(c.requests, p.requests),
            sub: format!(
                "{} succeeded · {} errors",
                fmt::percent(c.success_rate),
                fmt::count(c.errors)
            ),
        },
        Card {
            key: "cost",
            label: "Cost",
            exact: c.cost_usd.clone(),
            shown: fmt::usd(&c.cost_usd),
            previous: Some((
                p.cost_usd.clone(),
                fmt::usd(&p.cost_usd),
                fmt::change(money(&c.cost_usd), money(&p.cost_usd)),
                vs.clone(),
            )),
            sub: esc(&per_request),
        },
        Card {
            key: "tokens",
            label: "Tokens",
            exact: c.total_tokens.to_string(),
            shown: fmt::count(c.total_tokens),
            previous: counted(c.total_tokens, p.total_tokens),
            sub: format!(
                "{} in · {} out · {} cached",
                fmt::count(c.input_tokens),
                fmt::count(c.output_tokens),
                fmt::count(c.cached_input_tokens)
            ),
        },
        Card {
            key: "alerts",
            label: "Active alerts",
            exact: o.open_alerts.to_string(),
            shown: fmt::count(o.open_alerts),
            previous: None,
            sub: format!(
                "{} · <a href=\"{}\" data-nav>see alerts</a>",
                esc(&active_sub),
                esc(&filters.href("/alerts"))
            ),
        },
        Card {
            key: "unpriced",
            label: "Unpriced requests",
            exact: c.unpriced_requests.to_string(),
            shown: fmt::count(c.unpriced_requests),
            previous: counted(c.unpriced_requests, p.unpriced_requests),
            sub: if c.unpriced_requests == 0 {
                "every call had a price".to_string()
            } else {
                "models missing from the price table: their cost is unknown, not zero".to_string()
            },
        },
    ]
    .iter()
    .map(card)
    .collect()
}

fn usage_chart(ts: &Timeseries) -> String {
    let total: u64 = ts.points.iter().map(|p| p.requests).sum();
    if total == 0 {
        return html::empty(
            "No usage in this period",
            "Calls made through the edge show up here within a minute. Try a longer range or \
             another provider.",
        );
    }
    let hourly = ts.granularity == Granularity::Hour;
    let ticks = ts
        .points
        .iter()
        .map(|p| {
            if hourly {
                if p.t.hour() == 0 {
                    fmt::short_day(p.t.date_naive())
                } else {
                    format!("{:02}:00", p.t.hour())
                }
            } else {
                fmt::short_day(p.t.date_naive())
            }
        })
        .collect();
    let labels = ts
        .points
        .iter()
        .map(|p| {
            if hourly {
                format!(
                    "{} {:02}:00 UTC",
                    fmt::short_day(p.t.date_naive()),
                    p.t.hour()
                )
            } else {
                fmt::weekday_day(p.t.date_naive())
            }
        })
        .collect();
    let cost: Vec<Option<f64>> = ts
        .points
        .iter()
        .map(|p| Some(p.cost_usd.parse::<f64>().unwrap_or(0.0)))
        .collect();
    let requests: Vec<Option<f64>> = ts.points.iter().map(|p| Some(p.requests as f64)).collect();
    let total_cost: f64 = cost.iter().flatten().sum();
    LineChart {
        id: "usage-chart",
        summary: format!(
            "{} cost and requests, {} to {}: {} and {} requests in total.",
            if hourly { "Hourly" } else { "Daily" },
            ts.window.first_day,
            ts.window.last_day,
            fmt::usd_f(total_cost),
            fmt::count(total)
        ),
        ticks,
        labels,
        left_axis: fmt::usd_axis,
        right_axis: Some(fmt::count_axis),
        series: vec![
            Series {
                name: "Cost".into(),
                class: "s-cost",
                side: Side::Left,
                values: cost,
                area: true,
                dashed: false,
                format: fmt::usd_f,
            },
            Series {
                name: "Requests".into(),
                class: "s-req",
                side: Side::Right,
                values: requests,
                area: false,
                dashed: false,
                format: |v| fmt::count(v as u64),
            },
        ],
        band: None,
        marker: None,
    }
    .render()
}

fn provider_bars(rows: &[ProviderOut]) -> String {
    let mut rows: Vec<&ProviderOut> = rows.iter().filter(|r| r.requests > 0).collect();
    if rows.is_empty() {
        return html::empty(
            "No provider was called in this period",
            "Each provider's share of cost appears here once calls are recorded.",
        );
    }
    let cost = |r: &ProviderOut| r.cost_usd.parse::<f64>().unwrap_or(0.0);
    rows.sort_by(|a, b| cost(b).total_cmp(&cost(a)));
    let total: f64 = rows.iter().map(|r| cost(r)).sum();
    let all_requests: u64 = rows.iter().map(|r| r.requests).sum();
    let bars: Vec<Bar> = rows
        .iter()
        .map(|r| Bar {
            label: r.provider.clone(),
            value: if total > 0.0 {
                cost(r)
            } else {
                r.requests as f64
            },
            shown: fmt::usd(&r.cost_usd),
            note: format!(
                "{} of cost · {} requests",
                if total > 0.0 {
                    fmt::percent(cost(r) / total)
                } else {
                    "—".into()
                },
                fmt::count(r.requests)
            ),
        })
        .collect();
    let table: Vec<html::Row> = rows
        .iter()
        .map(|r| html::Row {
            attrs: String::new(),
            cells: vec![
                esc(&r.provider),
                fmt::count(r.requests),
                fmt::percent(r.requests as f64 / all_requests.max(1) as f64),
                fmt::percent(r.error_rate),
                esc(&fmt::usd(&r.cost_usd)),
            ],
        })
        .collect();
    format!(
        "{}{}",
        chart::bars("provider-bars", "s-cost", &bars),
        html::table(
            "provider-table",
            &[
                html::col("Provider"),
                html::num("Requests"),
                html::num("Share"),
                html::num("Errors"),
                html::num("Cost"),
            ],
            &table
        )
    )
}
