//! The Alerts tab: active alerts (open or acknowledged) grouped by severity, with acknowledge
//! and resolve for tokens that may change their org; and the history of alerts opened in the
//! period, with who acknowledged and resolved them, and when.
//!
//! The time range applies to the history (active alerts are shown however old they are). The
//! provider filter keeps alerts about that provider and alerts about no provider in particular
//! (budgets, unpriced calls).

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::alerts::{self, AlertOut, AlertState};
use crate::analytics;
use crate::error::ApiError;
use crate::web::filters::PageFilters;
use crate::web::fmt;
use crate::web::html::{self, csrf_field, esc, Tab};
use crate::web::live::Live;
use crate::web::session::{form, post_refused, Session};
use crate::web::{see_other, tab_error, tab_page};
use crate::AppState;

const SEVERITIES: [&str; 4] = ["critical", "high", "medium", "low"];

fn about_provider(a: &AlertOut, provider: Option<&str>) -> bool {
    match (provider, a.details.get("provider").and_then(Value::as_str)) {
        (Some(want), Some(p)) => p == want,
        _ => true,
    }
}

fn with_org(q: &str, filters: &PageFilters) -> String {
    match filters.org_query() {
        o if o.is_empty() => q.to_string(),
        o => format!("{q}&{o}"),
    }
}

/// `GET /alerts`.
pub async fn page(
    State(state): State<AppState>,
    session: Session,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let filters = PageFilters::parse(raw.as_deref());
    let api_query = filters.api_query(Utc::now());
    let p = &session.principal;
    let window = match analytics::request(&state, p, Some(&api_query)) {
        Ok((params, _)) => params.window,
        Err(e) => return tab_error(&state, &session, Tab::Alerts, &filters, &e),
    };
    let live = Live::check(
        &state,
        &session,
        Tab::Alerts,
        raw.as_deref(),
        filters.org.as_deref(),
        (window.from, window.to),
        &headers,
    )
    .await;
    if let Some(unchanged) = live.not_modified() {
        return unchanged;
    }
    let (q_open, q_acked, q_recent) = (
        with_org("state=open&limit=1000", &filters),
        with_org("state=acknowledged&limit=1000", &filters),
        with_org("limit=1000", &filters),
    );
    let q_deliveries = with_org("limit=50", &filters);
    let q_rules = filters.org_query();
    let (open, acked, recent, deliveries, rules) = tokio::join!(
        alerts::compute_alerts(&state, p, Some(&q_open)),
        alerts::compute_alerts(&state, p, Some(&q_acked)),
        alerts::compute_alerts(&state, p, Some(&q_recent)),
        alerts::compute_recent_deliveries(&state, p, Some(&q_deliveries)),
        alerts::compute_rules(&state, p, Some(&q_rules)),
    );
    let active = match (open, acked) {
        (Ok(mut o), Ok(a)) => {
            o.extend(a);
            Ok(o)
        }
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    let notice = raw.as_deref().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "notice")
            .map(|(_, v)| v.into_owned())
    });
    let provider = filters.provider.as_deref();
    let retry = filters.href("/alerts");
    let user_bound = !p.user_id.is_empty();
    let active_html = match active {
        Ok(list) => {
            let list: Vec<AlertOut> = list
                .into_iter()
                .filter(|a| about_provider(a, provider))
                .collect();
            active_section(&list, &session, &filters, user_bound)
        }
        Err(e) => html::error_panel("Active alerts", &e, Some(&retry)),
    };
    let history_html = match recent {
        Ok(list) => {
            let list: Vec<&AlertOut> = list
                .iter()
                .filter(|a| a.opened_at >= window.from && a.opened_at < window.to)
                .filter(|a| about_provider(a, provider))
                .collect();
            history_table(&list, p.role == crate::auth::Role::Admin)
        }
        Err(e) => html::error_panel("History", &e, Some(&retry)),
    };
    let deliveries_html = match deliveries {
        Ok(list) => deliveries_table(
            list.iter(),
            "deliveries-table",
            (
                "No notification was sent yet",
                "Rules with webhook, Slack or email channels show each attempt here.",
            ),
        ),
        Err(e) => html::error_panel("Notification deliveries", &e, Some(&retry)),
    };
    let rules_html = match rules {
        Ok(list) => rules_table(&list, &session),
        Err(e) => html::error_panel("Rules", &e, Some(&retry)),
    };
    let notice_html = match notice.as_deref() {
        Some("acknowledged") => notice_box("ok", "Alert acknowledged."),
        Some("resolved") => notice_box("ok", "Alert resolved."),
        Some("conflict") => notice_box("warn", "That alert is already resolved; nothing changed."),
        Some("forbidden") => notice_box("bad", "This token may not change that alert."),
        Some("not_found") => {
            notice_box("bad", "That alert no longer exists or is not yours to see.")
        }
        Some("failed") => notice_box("bad", "The change could not be saved; retry shortly."),
        Some("rule_deleted") => notice_box("ok", "Rule deleted."),
        _ => String::new(),
    };
    let body = format!(
        "<div class=\"page-head\"><h1>Alerts</h1><p class=\"muted\">Active alerts, and the history \
         of alerts opened in the {}</p></div>{notice_html}{}{}{}{}{}",
        esc(&filters.describe()),
        html::panel(
            "active",
            "Active alerts",
            "Open or acknowledged, most severe first",
            &active_html,
        ),
        html::panel(
            "history",
            "History",
            "Alerts opened in this period, with who acknowledged and resolved them",
            &history_html,
        ),
        html::panel(
            "deliveries",
            "Notification deliveries",
            "The latest 50 attempts to reach the rules' channels, newest first (GET /api/v1/notification-deliveries)",
            &deliveries_html,
        ),
        html::panel(
            "rules",
            "Rules",
            "What is watched, and where a firing goes (GET /api/v1/alert-rules); \
             \"tollgate defaults\" made the default rules every org gets",
            &rules_html,
        ),
        live.marker(),
    );
    live.tag(tab_page(
        &state,
        &session,
        Tab::Alerts,
        &filters,
        &api_query,
        Some(
            "The time range applies to the history; active alerts are shown however old they are.",
        ),
        StatusCode::OK,
        &body,
    ))
}

fn notice_box(tone: &str, text: &str) -> String {
    format!(
        "<p class=\"notice {tone}\" role=\"status\">{}</p>",
        esc(text)
    )
}

fn details(a: &AlertOut) -> String {
    let Some(obj) = a.details.as_object() else {
        return match &a.details {
            Value::String(s) if !s.is_empty() => format!("<p class=\"muted small\">{}</p>", esc(s)),
            _ => String::new(),
        };
    };
    let items: String = obj
        .iter()
        .take(8)
        .map(|(k, v)| {
            let v = match v {
                // Money and percentages read as such; anything else as the evaluator wrote it.
                Value::String(s) if k.ends_with("_usd") => fmt::usd(s),
                Value::Number(n) if k.ends_with("_percent") => format!("{n}%"),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            format!(
                "<div><dt>{}</dt><dd>{}</dd></div>",
                esc(&k.replace('_', " ")),
                esc(&v)
            )
        })
        .collect();
    if items.is_empty() {
        String::new()
    } else {
        format!("<dl class=\"details\">{items}</dl>")
    }
}

fn who_when(by: &Option<String>, at: Option<DateTime<Utc>>) -> String {
    match (by, at) {
        (Some(b), Some(t)) => format!("{} · {}", esc(b), html::time(t)),
        (None, Some(t)) => html::time(t),
        _ => "<span class=\"muted\">—</span>".to_string(),
    }
}

fn active_section(
    list: &[AlertOut],
    session: &Session,
    filters: &PageFilters,
    user_bound: bool,
) -> String {
    if list.is_empty() {
        let hint = if user_bound {
            "Alerts belong to the organisation; a token bound to one user sees none."
        } else {
            "Nothing needs attention. New alerts appear here as rules fire."
        };
        return format!(
            "<div class=\"empty ok\"><svg viewBox=\"0 0 24 24\" width=\"28\" height=\"28\" \
             aria-hidden=\"true\" focusable=\"false\"><path d=\"M5 12.5l4.2 4.2L19 7\" fill=\"none\" \
             stroke=\"currentColor\" stroke-width=\"2\" stroke-linecap=\"round\"/></svg>\
             <p class=\"empty-title\">No active alerts</p><p>{hint}</p></div>"
        );
    }
    let now = Utc::now();
    let summary: String = SEVERITIES
        .iter()
        .map(|sev| {
            let n = list.iter().filter(|a| a.severity == *sev).count();
            format!(
                "<li class=\"sev-count {sev}{}\"><span class=\"n\">{n}</span> {sev}</li>",
                if n == 0 { " zero" } else { "" }
            )
        })
        .collect();
    let mut groups = String::new();
    for sev in SEVERITIES {
        let items: Vec<&AlertOut> = list.iter().filter(|a| a.severity == sev).collect();
        if items.is_empty() {
            continue;
        }
        let lis: String = items
            .iter()
            .map(|a| alert_item(a, session, filters, now))
            .collect();
        groups.push_str(&format!(
            "<section class=\"sev-group\" aria-labelledby=\"sev-{sev}\"><h3 id=\"sev-{sev}\" class=\"sev-head {sev}\">\
             {} <span class=\"muted\">({})</span></h3><ul class=\"alert-list\">{lis}</ul></section>",
            capitalize(sev),
            items.len()
        ));
    }
    // Severities outside the four (from a newer evaluator) are still shown.
    let other: Vec<&AlertOut> = list
        .iter()
        .filter(|a| !SEVERITIES.contains(&a.severity.as_str()))
        .collect();
    if !other.is_empty() {
        let lis: String = other
            .iter()
            .map(|a| alert_item(a, session, filters, now))
            .collect();
        groups.push_str(&format!(
            "<section class=\"sev-group\"><h3 class=\"sev-head\">Other</h3><ul class=\"alert-list\">{lis}</ul></section>"
        ));
    }
    format!(
        "<ul class=\"sev-summary\" aria-label=\"Active alerts by severity\">{summary}</ul>{groups}"
    )
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

fn alert_item(
    a: &AlertOut,
    session: &Session,
    filters: &PageFilters,
    now: DateTime<Utc>,
) -> String {
    let id = a.alert_id;
    let may_change = session.principal.write_org(Some(&a.org_id)).is_ok();
    let actions = if may_change {
        let back = esc(&filters.query());
        let csrf = csrf_field(&session.csrf);
        let ack = if a.state == AlertState::Open {
            format!(
                "<form method=\"post\" action=\"/alerts/{id}/acknowledge\">{csrf}\
                 <input type=\"hidden\" name=\"back\" value=\"{back}\">\
                 <button type=\"submit\" data-action=\"acknowledge\" aria-label=\"Acknowledge: {title}\">Acknowledge</button></form>",
                title = esc(&a.title)
            )
        } else {
            String::new()
        };
        format!(
            "<div class=\"alert-actions\">{ack}<form method=\"post\" action=\"/alerts/{id}/resolve\">{csrf}\
             <input type=\"hidden\" name=\"back\" value=\"{back}\">\
             <button type=\"submit\" class=\"secondary\" data-action=\"resolve\" aria-label=\"Resolve: {title}\">Resolve</button></form></div>",
            title = esc(&a.title)
        )
    } else {
        String::new()
    };
    let state_line = match a.state {
        AlertState::Acknowledged => format!(
            "<p class=\"alert-meta\">Acknowledged by {}</p>",
            who_when(&a.acknowledged_by, a.acknowledged_at)
        ),
        _ => String::new(),
    };
    let org = if session.principal.role == crate::auth::Role::Admin {
        format!(" · org {}", esc(&a.org_id))
    } else {
        String::new()
    };
    format!(
        "<li class=\"alert-item {sev}\" id=\"alert-{id}\" data-alert-id=\"{id}\" data-state=\"{state}\">\
         <div class=\"alert-main\"><p class=\"alert-badges\"><span class=\"badge sev {sev}\">{sev}</span> \
         <span class=\"badge state {state}\">{state}</span></p>\
         <h4 class=\"alert-title\">{title}</h4>\
         <p class=\"alert-meta\">{kind}{org} · opened {opened} ({ago})</p>{state_line}{details}</div>{actions}</li>",
        sev = esc(&a.severity),
        state = a.state.as_str(),
        title = esc(&a.title),
        kind = esc(&a.kind.replace('_', " ")),
        opened = html::time(a.opened_at),
        ago = fmt::age((now - a.opened_at).num_seconds()),
        details = details(a),
    )
}

fn rules_table(list: &[alerts::RuleOut], session: &Session) -> String {
    let new_rule = if session.can_write() {
        "<p><a class=\"button primary\" href=\"/alerts/rules/new\" id=\"new-rule\">New rule</a></p>"
    } else {
        ""
    };
    if list.is_empty() {
        return format!(
            "{new_rule}{}",
            html::empty(
                "No alert rules",
                "Every org gets the default rules unless they are switched off; make others here \
                 or through the API (POST /api/v1/alert-rules).",
            )
        );
    }
    let mut list: Vec<&alerts::RuleOut> = list.iter().collect();
    list.sort_by(|a, b| (&a.org_id, &a.name).cmp(&(&b.org_id, &b.name)));
    let rows: Vec<html::Row> = list
        .iter()
        .map(|r| {
            let severity = r.severity.as_str();
            html::Row {
                attrs: format!(" data-rule-id=\"{}\"", r.rule_id),
                cells: vec![
                    format!(
                        "<a href=\"/alerts/rules/{}\" data-nav>{}</a>",
                        r.rule_id,
                        esc(&r.name)
                    ),
                    esc(&r.org_id),
                    esc(r.kind.as_str()),
                    format!("<span class=\"badge sev {severity}\">{severity}</span>"),
                    if r.enabled { "on" } else { "off" }.to_string(),
                    esc(&r.channels.join(", ")),
                    esc(&r.created_by),
                ],
            }
        })
        .collect();
    let table = html::table(
        "rules-table",
        &[
            html::col("Rule"),
            html::col("Org"),
            html::col("Kind"),
            html::col("Severity"),
            html::col("Enabled"),
            html::col("Channels"),
            html::col("Made by"),
        ],
        &rows,
    );
    format!("{new_rule}{table}")
}

/// Delivery attempts as a table, in the order given (`table_id` names it; `empty` is the
/// hint when there are none). The Alerts tab lists every rule's newest; a rule's page its own.
pub(crate) fn deliveries_table<'a>(
    list: impl Iterator<Item = &'a alerts::DeliveryOut>,
    table_id: &str,
    empty: (&str, &str),
) -> String {
    let rows: Vec<html::Row> = list
        .map(|d| {
            let answer = match (&d.http_status, &d.error) {
                (Some(code), Some(e)) => format!("{code} · {}", esc(e)),
                (Some(code), None) => code.to_string(),
                (None, Some(e)) => esc(e),
                (None, None) => "—".into(),
            };
            html::Row {
                attrs: format!(" data-delivery-id=\"{}\"", d.delivery_id),
                cells: vec![
                    html::time(d.attempted_at),
                    esc(&d.channel),
                    esc(&d.event),
                    format!(
                        "<span class=\"badge delivery {0}\">{0}</span>",
                        esc(&d.status)
                    ),
                    d.attempt.to_string(),
                    answer,
                    format!("{} ms", d.duration_ms),
                ],
            }
        })
        .collect();
    if rows.is_empty() {
        return html::empty(empty.0, empty.1);
    }
    html::table(
        table_id,
        &[
            html::col("Attempted"),
            html::col("Channel"),
            html::col("Event"),
            html::col("Outcome"),
            html::num("Attempt"),
            html::col("Answer"),
            html::num("Took"),
        ],
        &rows,
    )
}

fn history_table(list: &[&AlertOut], admin: bool) -> String {
    if list.is_empty() {
        return html::empty(
            "No alerts were opened in this period",
            "Choose a longer range to see older alerts.",
        );
    }
    let mut columns = vec![html::col("Alert"), html::col("Opened")];
    if admin {
        columns.push(html::col("Org"));
    }
    columns.extend([
        html::col("Severity"),
        html::col("State"),
        html::col("Acknowledged"),
        html::col("Resolved"),
    ]);
    let rows: Vec<html::Row> = list
        .iter()
        .map(|a| {
            let mut cells = vec![
                format!(
                    "{}<br><small class=\"muted\">{}</small>",
                    esc(&a.title),
                    esc(&a.kind.replace('_', " "))
                ),
                html::time(a.opened_at),
            ];
            if admin {
                cells.push(esc(&a.org_id));
            }
            cells.extend([
                format!("<span class=\"badge sev {0}\">{0}</span>", esc(&a.severity)),
                format!(
                    "<span class=\"badge state {0}\">{0}</span>",
                    a.state.as_str()
                ),
                who_when(&a.acknowledged_by, a.acknowledged_at),
                who_when(&a.resolved_by, a.resolved_at),
            ]);
            html::Row {
                attrs: format!(" data-alert-id=\"{}\"", a.alert_id),
                cells,
            }
        })
        .collect();
    html::table("history-table", &columns, &rows)
}

/// `POST /alerts/{id}/acknowledge` and `POST /alerts/{id}/resolve` (forms of the Alerts tab).
pub async fn act(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let fields = form(&body);
    if let Some(refused) = post_refused(&headers, &session, &fields) {
        return refused;
    }
    let to = match action.as_str() {
        "acknowledge" => AlertState::Acknowledged,
        "resolve" => AlertState::Resolved,
        _ => return see_other("/alerts"),
    };
    let back = PageFilters::parse(fields.get("back").map(String::as_str));
    let notice = match alerts::transition(&state, &session.principal, &id, to).await {
        Ok(_) if to == AlertState::Acknowledged => "acknowledged",
        Ok(_) => "resolved",
        Err(ApiError::Conflict(_)) => "conflict",
        Err(ApiError::Forbidden(_)) => "forbidden",
        Err(ApiError::NotFound(_)) => "not_found",
        Err(e) => {
            tracing::warn!(error = ?e, "alert change from the dashboard failed");
            "failed"
        }
    };
    let q = back.query();
    let sep = if q.is_empty() { "" } else { "&" };
    see_other(&format!("/alerts?{q}{sep}notice={notice}"))
}
