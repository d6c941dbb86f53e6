//! The Providers tab: credit status and balances (with their age and runway), each provider's
//! calls and errors, the model performance table, and cost per model.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;

use crate::analytics::{self, ModelOut, ProviderOut};
use crate::auth::Role;
use crate::credits::CreditOut;
use crate::projections::{self, Projections};
use crate::reconciliation::{self, ReconciliationOut};
use crate::web::chart::{self, Bar};
use crate::web::filters::PageFilters;
use crate::web::fmt;
use crate::web::html::{self, esc, Tab};
use crate::web::overview::section;
use crate::web::session::Session;
use crate::web::{tab_error, tab_page};
use crate::AppState;

/// Drift beyond this share (either way) is flagged.
const DRIFT_FLAG_PERCENT: f64 = 5.0;

/// Balances older than this are flagged as stale.
const STALE_SECONDS: i64 = 24 * 3600;

/// `GET /providers`.
pub async fn page(
    State(state): State<AppState>,
    session: Session,
    RawQuery(raw): RawQuery,
) -> Response {
    let filters = PageFilters::parse(raw.as_deref());
    let api_query = filters.api_query(Utc::now());
    let p = &session.principal;
    let (params, filter) = match analytics::request(&state, p, Some(&api_query)) {
        Ok(read) => read,
        Err(e) => return tab_error(&state, &session, Tab::Providers, &filters, &e),
    };
    let (providers, models, outlook, bills) = tokio::join!(
        analytics::providers_of(&state, p, &params, &filter),
        analytics::models_of(&state, &params, &filter),
        projections::compute_projections(&state, p, Some(&api_query)),
        async {
            if reconciliation::may_see(&state, p) {
                Some(reconciliation::compute(&state, p, Some(&api_query)).await)
            } else {
                None
            }
        },
    );
    let retry = filters.href("/providers");
    let admin = p.role == Role::Admin;
    let credits = match &providers {
        Ok(rows) => credit_table(rows, outlook.as_ref().ok(), admin),
        Err(e) => html::error_panel("Credit status", e, Some(&retry)),
    };
    let (model_cost, model_perf) = match &models {
        Ok(m) => (model_bars(m), model_table(m)),
        Err(e) => (
            html::error_panel("Cost per model", e, Some(&retry)),
            html::error_panel("Model performance", e, Some(&retry)),
        ),
    };
    let bills_html = match bills {
        Some(Ok(rows)) => bills_table(&rows),
        Some(Err(e)) => html::error_panel("Bill reconciliation", &e, Some(&retry)),
        None => html::empty(
            "The bills are the deployment's",
            "Admins and the operator orgs see recorded cost against each provider's bill here.",
        ),
    };
    let body = format!(
        "<div class=\"page-head\"><h1>Providers</h1><p class=\"muted\">{}</p></div>{}\
         <div class=\"grid-2\">{}{}</div>{}{}",
        esc(&filters.describe()),
        html::panel(
            "credits",
            "Credit status",
            "Latest balance of each provider key, how old it is, and how long it lasts at the forecast pace",
            &credits,
        ),
        html::panel(
            "provider-table",
            "Calls by provider",
            "Errors and latency in this period",
            &section(providers, &retry, "Calls by provider", |v| provider_table(v)),
        ),
        html::panel(
            "model-cost",
            "Cost per model",
            "The models that cost most in this period",
            &model_cost,
        ),
        html::panel(
            "models",
            "Model performance",
            "Latency, success rate, cost per 1k tokens and token efficiency (output ÷ input tokens)",
            &model_perf,
        ),
        html::panel(
            "reconciliation",
            "Bill reconciliation",
            "What Tollgate recorded against what each provider billed, per UTC day (GET /api/v1/reconciliation)",
            &bills_html,
        ),
    );
    tab_page(
        &state,
        &session,
        Tab::Providers,
        &filters,
        &api_query,
        None,
        StatusCode::OK,
        &body,
    )
}

fn status_badge(c: &CreditOut) -> String {
    let tone = match c.status.as_str() {
        "valid" | "manual" | "ok" => "ok",
        "rate_limited" | "low" => "warn",
        _ => "bad",
    };
    let mut s = format!(
        "<span class=\"badge {tone}\">{}</span>",
        esc(&c.status.replace('_', " "))
    );
    if !c.error.is_empty() {
        s.push_str(&format!(
            " <small class=\"muted\">{}</small>",
            esc(&c.error)
        ));
    }
    s
}

fn credit_table(rows: &[ProviderOut], outlook: Option<&Projections>, admin: bool) -> String {
    let credits: Vec<&CreditOut> = rows.iter().flat_map(|r| r.credits.iter()).collect();
    if credits.is_empty() {
        return html::empty(
            "No balances recorded",
            "OpenRouter balances are polled automatically. OpenAI has no balance API: record one \
             with <code>POST /api/v1/credits</code>.",
        );
    }
    let table_rows: Vec<html::Row> = credits
        .iter()
        .map(|c| {
            let balance = match &c.balance_usd {
                Some(b) => format!("<data value=\"{}\">{}</data>", esc(b), esc(&fmt::usd(b))),
                None => format!(
                    "<span class=\"muted\">no balance · {} used</span>",
                    esc(&fmt::usd(&c.total_usage_usd))
                ),
            };
            let age = format!(
                "<span title=\"{}\">{}</span>{}",
                esc(&fmt::datetime(c.observed_at)),
                fmt::age(c.age_seconds),
                if c.age_seconds > STALE_SECONDS {
                    " <span class=\"badge warn\">stale</span>"
                } else {
                    ""
                }
            );
            let runway = outlook
                .and_then(|o| {
                    o.runway
                        .iter()
                        .find(|r| r.provider == c.provider && r.key_label == c.key_label)
                })
                .map_or_else(
                    || "<span class=\"muted\">—</span>".to_string(),
                    |r| match (r.days, &r.runs_out_on) {
                        (Some(d), Some(day)) => format!(
                            "<span class=\"{}\">{:.0} days</span> <small class=\"muted nowrap\">until {} · {} / day</small>",
                            if d < 7.0 {
                                "bad-text"
                            } else if d < 30.0 {
                                "warn-text"
                            } else {
                                ""
                            },
                            d,
                            esc(day),
                            esc(&fmt::usd(&r.burn_per_day_usd))
                        ),
                        (Some(_), None) => "over 10 years".to_string(),
                        _ => "<span class=\"muted\">no spend forecast</span>".to_string(),
                    },
                );
            let mut cells = vec![esc(&c.provider), esc(&c.key_label)];
            if admin {
                cells.push(if c.org_id.is_empty() {
                    "<span class=\"muted\">deployment</span>".to_string()
                } else {
                    esc(&c.org_id)
                });
            }
            cells.extend([balance, status_badge(c), age, runway]);
            html::Row {
                attrs: String::new(),
                cells,
            }
        })
        .collect();
    let mut columns = vec![html::col("Provider"), html::col("Key")];
    if admin {
        columns.push(html::col("Org"));
    }
    columns.extend([
        html::num("Balance"),
        html::col("Status"),
        html::col("Observed"),
        html::col("Runway"),
    ]);
    html::table("credit-table", &columns, &table_rows)
}

/// "provider 3 · client 1 · timeout 0 · Tollgate 2": whose doing the failed calls were.
fn causes(c: &crate::analytics::ErrorsByCause) -> String {
    format!(
        "<small>provider {} · client {} · timeout {} · Tollgate {}</small>",
        fmt::count(c.provider),
        fmt::count(c.client),
        fmt::count(c.timeout),
        fmt::count(c.gateway)
    )
}

fn provider_table(rows: &[ProviderOut]) -> String {
    if rows.iter().all(|r| r.requests == 0) {
        return html::empty(
            "No calls in this period",
            "Try a longer range, or clear the provider filter.",
        );
    }
    let table_rows: Vec<html::Row> = rows
        .iter()
        .filter(|r| r.requests > 0)
        .map(|r| html::Row {
            attrs: String::new(),
            cells: vec![
                esc(&r.provider),
                fmt::count(r.requests),
                fmt::percent(r.error_rate),
                fmt::count(r.rate_limited),
                causes(&r.errors_by_cause),
                fmt::ms(r.avg_latency_ms),
                fmt::ms(r.p95_latency_ms),
                esc(&fmt::usd(&r.cost_usd)),
            ],
        })
        .collect();
    html::table(
        "provider-calls-table",
        &[
            html::col("Provider"),
            html::num("Requests"),
            html::num("Error rate"),
            html::num("Rate-limited"),
            html::col("Failed by"),
            html::num("Avg latency"),
            html::num("p95 latency"),
            html::num("Cost"),
        ],
        &table_rows,
    )
}

fn model_bars(models: &[ModelOut]) -> String {
    if models.is_empty() {
        return html::empty(
            "No model was called in this period",
            "Cost per model appears here once calls are recorded.",
        );
    }
    let cost = |m: &ModelOut| m.cost_usd.parse::<f64>().unwrap_or(0.0);
    let mut sorted: Vec<&ModelOut> = models.iter().collect();
    sorted.sort_by(|a, b| cost(b).total_cmp(&cost(a)));
    let bars: Vec<Bar> = sorted
        .iter()
        .take(12)
        .map(|m| Bar {
            label: format!("{} · {}", m.model, m.provider),
            value: cost(m),
            shown: fmt::usd(&m.cost_usd),
            note: fmt::percent(m.cost_share),
        })
        .collect();
    let more = sorted.len().saturating_sub(12);
    format!(
        "{}{}",
        chart::bars("model-cost-bars", "s-cost", &bars),
        if more > 0 {
            format!("<p class=\"muted small\">and {more} more in the table below</p>")
        } else {
            String::new()
        }
    )
}

fn model_table(models: &[ModelOut]) -> String {
    if models.is_empty() {
        return html::empty(
            "No model was called in this period",
            "Try a longer range, or clear the provider filter.",
        );
    }
    let rows: Vec<html::Row> = models
        .iter()
        .map(|m| html::Row {
            attrs: String::new(),
            cells: vec![
                format!(
                    "<span class=\"model\">{}</span> <small class=\"muted\">{}</small>",
                    esc(&m.model),
                    esc(&m.provider)
                ),
                fmt::count(m.requests),
                fmt::percent(m.success_rate),
                causes(&m.errors_by_cause),
                fmt::ms(m.avg_latency_ms),
                fmt::ms(m.p95_latency_ms),
                m.avg_ttft_ms.map_or_else(|| "—".to_string(), fmt::ms),
                esc(&fmt::usd(&m.cost_per_1k_tokens_usd)),
                format!("{:.2}", m.token_efficiency),
                esc(&fmt::usd(&m.cost_usd)),
            ],
        })
        .collect();
    html::table(
        "model-table",
        &[
            html::col("Model"),
            html::num("Requests"),
            html::num("Success"),
            html::col("Failed by"),
            html::num("Avg latency"),
            html::num("p95 latency"),
            html::num("Avg TTFT"),
            html::num("Cost / 1k tokens"),
            html::num("Output ÷ input"),
            html::num("Cost"),
        ],
        &rows,
    )
}

/// Recorded against billed, newest day first.
fn bills_table(rows: &[ReconciliationOut]) -> String {
    if rows.is_empty() {
        return html::empty(
            "No bills checked in this period",
            "The jobs compare each provider's own figures daily once its admin key is configured (pollers in CONFIGURATION.md).",
        );
    }
    let body: Vec<html::Row> = rows
        .iter()
        .rev()
        .map(|r| {
            let drift = match (&r.billed_usd, r.status.as_str()) {
                (Some(_), "ok") => {
                    let tone = if r.drift_percent.abs() > DRIFT_FLAG_PERCENT {
                        "warn"
                    } else {
                        "ok"
                    };
                    format!(
                        "<span class=\"badge {tone}\" data-drift=\"{}\">{:+.2}%</span>",
                        r.drift_percent, r.drift_percent
                    )
                }
                _ => format!(
                    "<span class=\"badge bad\">not read</span> <small class=\"muted\">{}</small>",
                    esc(r.error.as_deref().unwrap_or(""))
                ),
            };
            html::Row {
                attrs: format!(
                    " data-day=\"{}\" data-provider=\"{}\"",
                    r.day,
                    esc(&r.provider)
                ),
                cells: vec![
                    r.day.to_string(),
                    esc(&r.provider),
                    format!(
                        "<data value=\"{}\">{}</data>",
                        esc(&r.recorded_usd),
                        esc(&fmt::usd(&r.recorded_usd))
                    ),
                    r.billed_usd.as_deref().map_or("—".to_string(), |b| {
                        format!("<data value=\"{}\">{}</data>", esc(b), esc(&fmt::usd(b)))
                    }),
                    drift,
                    html::time(r.checked_at),
                ],
            }
        })
        .collect();
    html::table(
        "reconciliation-table",
        &[
            html::col("Day (UTC)"),
            html::col("Provider"),
            html::num("Recorded"),
            html::num("Billed"),
            html::num("Drift"),
            html::col("Checked"),
        ],
        &body,
    )
}
