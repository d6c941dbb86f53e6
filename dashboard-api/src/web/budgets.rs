//! The Budgets tab: every budget the token may see with its current period's use (a bar with
//! the soft thresholds marked) and status; create and edit forms for tokens that may change
//! their org's budgets. The forms post to the same functions `POST /api/v1/budgets` and
//! `PUT /api/v1/budgets/{id}` run, so validation and its messages are the API's.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use crate::auth::Role;
use crate::budgets::{self, BudgetIn, BudgetMode, BudgetOut, BudgetScope, BudgetWithStatus};
use crate::error::ApiError;
use crate::web::chart::usage_bar;
use crate::web::filters::PageFilters;
use crate::web::fmt;
use crate::web::html::{self, csrf_field, esc, Tab};
use crate::web::session::{form, post_refused, Session};
use crate::web::{see_other, tab_error, tab_page};
use crate::AppState;
use usage_core::Period;

const NOTE: &str = "Budgets show their own current period; the time range and provider filters apply to the other tabs.";

/// `GET /budgets`.
pub async fn page(
    State(state): State<AppState>,
    session: Session,
    RawQuery(raw): RawQuery,
) -> Response {
    let filters = PageFilters::parse(raw.as_deref());
    let p = &session.principal;
    let list = match budgets::compute_list_with_status(&state, p, Some(&filters.org_query())).await
    {
        Ok(l) => l,
        Err(e) => return tab_error(&state, &session, Tab::Budgets, &filters, &e),
    };
    let notice = raw.as_deref().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "notice")
            .map(|(_, v)| v.into_owned())
    });
    let notice_html = match notice.as_deref() {
        Some("created") => "<p class=\"notice ok\" role=\"status\">Budget created.</p>",
        Some("saved") => "<p class=\"notice ok\" role=\"status\">Budget saved.</p>",
        _ => "",
    };
    let new_button = if session.can_write() {
        "<a class=\"button primary\" href=\"/budgets/new\" id=\"new-budget\">New budget</a>"
    } else {
        ""
    };
    let body = format!(
        "<div class=\"page-head row\"><div><h1>Budgets</h1><p class=\"muted\">Spending limits and how \
         much of the current period each has used</p></div>{new_button}</div>{notice_html}{}",
        html::panel(
            "budget-list",
            "All budgets",
            "Soft limits alert; hard limits are enforced at the edge",
            &budget_list(&list, &session),
        )
    );
    tab_page(
        &state,
        &session,
        Tab::Budgets,
        &filters,
        &filters.org_query(),
        Some(NOTE),
        StatusCode::OK,
        &body,
    )
}

fn budget_list(list: &[BudgetWithStatus], session: &Session) -> String {
    if list.is_empty() {
        let hint = if session.can_write() {
            "Set a daily, weekly or monthly limit for the org, a user or an app: <a href=\"/budgets/new\">create a budget</a>."
        } else {
            "No budget applies to what this token can see."
        };
        return html::empty("No budgets yet", hint);
    }
    let admin = session.principal.role == Role::Admin;
    let items: String = list
        .iter()
        .map(|b| {
            let (out, s) = (&b.budget, &b.status);
            let tone = if s.exceeded {
                "bad"
            } else if !s.thresholds_crossed.is_empty() {
                "warn"
            } else {
                "ok"
            };
            let status_text = if s.exceeded {
                "Limit reached".to_string()
            } else if let Some(t) = s.thresholds_crossed.last() {
                format!("Past the {t}% threshold")
            } else {
                "Within budget".to_string()
            };
            let scope = match out.scope {
                BudgetScope::Org => "whole org".to_string(),
                BudgetScope::User => format!("user {}", esc(out.user_id.as_deref().unwrap_or(""))),
                BudgetScope::App => format!("app {}", esc(out.app_id.as_deref().unwrap_or(""))),
            };
            let edit = if session.principal.write_org(Some(&out.org_id)).is_ok() {
                format!(
                    "<a class=\"button small secondary\" href=\"/budgets/{}/edit\" data-edit aria-label=\"Edit {}\">Edit</a>",
                    out.budget_id,
                    esc(&out.name)
                )
            } else {
                String::new()
            };
            format!(
                "<li class=\"budget{}\" id=\"budget-{id}\" data-budget-id=\"{id}\">\
                 <div class=\"budget-head\"><h3>{name}</h3><span class=\"badge mode {mode}\">{mode} limit</span>{disabled}{edit}</div>\
                 <p class=\"muted small\">{org}{scope} · {period} · {days} left · thresholds {thresholds}</p>\
                 {bar}\
                 <p class=\"budget-figures\"><data value=\"{spent_exact}\">{spent}</data> of {limit} · \
                 <strong data-percent=\"{pct_exact}\">{pct}</strong> used · {left} left</p>\
                 <p class=\"budget-status {tone}\">{status_text}</p></li>",
                if out.enabled { "" } else { " disabled" },
                id = out.budget_id,
                name = esc(&out.name),
                mode = out.mode.as_str(),
                disabled = if out.enabled {
                    ""
                } else {
                    "<span class=\"badge\">disabled</span>"
                },
                org = if admin {
                    format!("org {} · ", esc(&out.org_id))
                } else {
                    String::new()
                },
                period = out.period.as_str(),
                days = if s.days_left == 1 {
                    "1 day".to_string()
                } else {
                    format!("{} days", s.days_left)
                },
                thresholds = if out.soft_thresholds.is_empty() {
                    "none".to_string()
                } else {
                    out.soft_thresholds
                        .iter()
                        .map(|t| format!("{t}%"))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
                bar = usage_bar(s.percent_used, &out.soft_thresholds, tone),
                spent_exact = esc(&s.spent_usd),
                spent = esc(&fmt::usd(&s.spent_usd)),
                limit = esc(&fmt::usd(&s.limit_usd)),
                pct_exact = s.percent_used,
                pct = fmt::percent(s.percent_used / 100.0),
                left = esc(&fmt::usd(&s.remaining_usd)),
            )
        })
        .collect();
    format!("<ul class=\"budget-list\">{items}</ul>")
}

/// The form's fields as typed (kept on errors, so nothing typed is lost).
#[derive(Debug, Default, Clone)]
struct BudgetForm {
    name: String,
    org_id: String,
    scope: String,
    user_id: String,
    app_id: String,
    period: String,
    limit_usd: String,
    soft_thresholds: String,
    mode: String,
    enabled: bool,
    /// Empty: the model's maximum.
    reserve_output_tokens: String,
}

impl BudgetForm {
    fn blank() -> BudgetForm {
        BudgetForm {
            scope: "org".into(),
            period: "monthly".into(),
            soft_thresholds: "50, 80, 100".into(),
            mode: "soft".into(),
            enabled: true,
            ..BudgetForm::default()
        }
    }

    fn of(b: &BudgetOut) -> BudgetForm {
        BudgetForm {
            name: b.name.clone(),
            org_id: b.org_id.clone(),
            scope: match b.scope {
                BudgetScope::Org => "org",
                BudgetScope::User => "user",
                BudgetScope::App => "app",
            }
            .into(),
            user_id: b.user_id.clone().unwrap_or_default(),
            app_id: b.app_id.clone().unwrap_or_default(),
            period: b.period.as_str().into(),
            limit_usd: b
                .limit_usd
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_string(),
            soft_thresholds: b
                .soft_thresholds
                .iter()
                .map(u8::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            mode: b.mode.as_str().into(),
            enabled: b.enabled,
            reserve_output_tokens: b
                .reserve_output_tokens
                .map(|n| n.to_string())
                .unwrap_or_default(),
        }
    }

    fn read(f: &BTreeMap<String, String>) -> BudgetForm {
        let get = |k: &str| f.get(k).map(|v| v.trim().to_string()).unwrap_or_default();
        BudgetForm {
            name: get("name"),
            org_id: get("org_id"),
            scope: get("scope"),
            user_id: get("user_id"),
            app_id: get("app_id"),
            period: get("period"),
            limit_usd: get("limit_usd"),
            soft_thresholds: get("soft_thresholds"),
            mode: get("mode"),
            enabled: f.contains_key("enabled"),
            reserve_output_tokens: get("reserve_output_tokens"),
        }
    }

    /// The API body this form stands for; a field the API cannot even receive is named here.
    fn to_input(&self, admin: bool) -> Result<BudgetIn, ApiError> {
        let scope = match self.scope.as_str() {
            "org" => BudgetScope::Org,
            "user" => BudgetScope::User,
            "app" => BudgetScope::App,
            _ => return Err(ApiError::bad("scope", "choose org, user or app")),
        };
        let period = match self.period.as_str() {
            "daily" => Period::Daily,
            "weekly" => Period::Weekly,
            "monthly" => Period::Monthly,
            _ => return Err(ApiError::bad("period", "choose daily, weekly or monthly")),
        };
        let mode = match self.mode.as_str() {
            "hard" => BudgetMode::Hard,
            "soft" => BudgetMode::Soft,
            _ => return Err(ApiError::bad("mode", "choose a soft or a hard limit")),
        };
        let thresholds = self
            .soft_thresholds
            .split([',', ' ', ';'])
            .filter(|t| !t.is_empty())
            .map(|t| {
                t.trim_end_matches('%').parse::<u8>().map_err(|_| {
                    ApiError::bad(
                        "soft_thresholds",
                        format!("`{t}` is not a percentage from 1 to 100"),
                    )
                })
            })
            .collect::<Result<Vec<u8>, ApiError>>()?;
        let opt = |v: &str| (!v.is_empty()).then(|| v.to_string());
        let reserve_output_tokens = match self.reserve_output_tokens.replace([',', '_', ' '], "") {
            v if v.is_empty() => None,
            v => Some(v.parse::<u32>().map_err(|_| {
                ApiError::bad(
                    "reserve_output_tokens",
                    format!("`{v}` is not a whole number of tokens"),
                )
            })?),
        };
        Ok(BudgetIn {
            org_id: if admin { opt(&self.org_id) } else { None },
            name: self.name.clone(),
            scope,
            user_id: (scope == BudgetScope::User).then(|| self.user_id.clone()),
            app_id: (scope == BudgetScope::App).then(|| self.app_id.clone()),
            period,
            limit_usd: self.limit_usd.clone(),
            soft_thresholds: Some(thresholds),
            mode,
            enabled: Some(self.enabled),
            reserve_output_tokens,
        })
    }
}

/// The create or edit form; `error` is what the API said about the last attempt.
fn form_page(
    session: &Session,
    f: &BudgetForm,
    editing: Option<&str>,
    error: Option<&ApiError>,
    org_fixed: bool,
) -> String {
    let field_error = |name: &str| html::field_message(error, name);
    let general = match error {
        Some(ApiError::BadRequest {
            field: Some(field), ..
        }) if [
            "name",
            "org_id",
            "scope",
            "user_id",
            "app_id",
            "period",
            "limit_usd",
            "soft_thresholds",
            "mode",
            "reserve_output_tokens",
        ]
        .contains(&field.as_str()) =>
        {
            "<p class=\"notice bad\" role=\"alert\">Please correct the field marked below.</p>"
                .to_string()
        }
        Some(e) => html::error_panel("The budget was not saved", e, None),
        None => String::new(),
    };
    let text = |name: &str, label: &str, value: &str, extra: &str, help: &str| {
        html::text_field(
            "f-",
            name,
            label,
            value,
            extra,
            help,
            field_error(name).as_deref(),
        )
    };
    let select = |name: &str, label: &str, value: &str, options: &[(&str, &str)]| {
        let err = field_error(name);
        let opts: String = options
            .iter()
            .map(|(v, l)| {
                format!(
                    "<option value=\"{v}\"{}>{l}</option>",
                    if *v == value { " selected" } else { "" }
                )
            })
            .collect();
        format!(
            "<div class=\"form-row\" data-field=\"{name}\"><label for=\"f-{name}\">{label}</label>\
             <select id=\"f-{name}\" name=\"{name}\"{}>{opts}</select>{}</div>",
            if err.is_some() {
                format!(" aria-invalid=\"true\" aria-describedby=\"{name}-error\"")
            } else {
                String::new()
            },
            err.map_or(String::new(), |m| format!(
                "<p class=\"field-error\" id=\"{name}-error\">{}</p>",
                esc(&m)
            )),
        )
    };
    let org = if org_fixed {
        String::new()
    } else {
        text(
            "org_id",
            "Organisation",
            &f.org_id,
            " required maxlength=\"256\" autocomplete=\"off\"",
            "The org this budget belongs to.",
        )
    };
    let mode_err = field_error("mode");
    let (title, action, submit) = match editing {
        Some(id) => (
            "Edit budget",
            format!("/budgets/{}/edit", esc(id)),
            "Save budget",
        ),
        None => ("New budget", "/budgets".to_string(), "Create budget"),
    };
    format!(
        "<div class=\"page-head\"><h1>{title}</h1><p class=\"muted\"><a href=\"/budgets\" data-nav>← All budgets</a></p></div>\
         {general}<form class=\"panel budget-form\" method=\"post\" action=\"{action}\" novalidate>{csrf}\
         {name}{org}{scope}\
         <div class=\"scope-ids\">{user}{app}</div>\
         {period}{limit}{thresholds}\
         <fieldset class=\"form-row\" data-field=\"mode\"><legend>Limit</legend>\
         <label class=\"choice\"><input type=\"radio\" name=\"mode\" value=\"soft\"{soft}> Soft — alert when thresholds are crossed</label>\
         <label class=\"choice\"><input type=\"radio\" name=\"mode\" value=\"hard\"{hard}> Hard — the edge refuses calls once the limit is spent</label>{mode_err}</fieldset>\
         {reserve}\
         <div class=\"form-row\"><label class=\"choice\"><input type=\"checkbox\" name=\"enabled\" value=\"1\"{enabled}> Enabled</label></div>\
         <div class=\"form-actions\"><button type=\"submit\" class=\"primary\">{submit}</button>\
         <a class=\"button secondary\" href=\"/budgets\">Cancel</a></div></form>",
        csrf = csrf_field(&session.csrf),
        name = text("name", "Name", &f.name, " required maxlength=\"200\"", ""),
        scope = select(
            "scope",
            "Applies to",
            &f.scope,
            &[("org", "The whole org"), ("user", "One user"), ("app", "One app")]
        ),
        user = text("user_id", "User id", &f.user_id, " maxlength=\"256\" autocomplete=\"off\"", "Only for a budget of one user."),
        app = text("app_id", "App id", &f.app_id, " maxlength=\"256\" autocomplete=\"off\"", "Only for a budget of one app."),
        period = select(
            "period",
            "Period (UTC)",
            &f.period,
            &[("daily", "Daily"), ("weekly", "Weekly (from Monday)"), ("monthly", "Monthly")]
        ),
        limit = text(
            "limit_usd",
            "Limit (USD)",
            &f.limit_usd,
            " required inputmode=\"decimal\" placeholder=\"250.00\"",
            ""
        ),
        thresholds = text(
            "soft_thresholds",
            "Alert thresholds (% of the limit)",
            &f.soft_thresholds,
            " inputmode=\"numeric\"",
            "Comma-separated, 1–100; leave empty for none."
        ),
        reserve = text(
            "reserve_output_tokens",
            "Reserve for calls without max_tokens (output tokens)",
            &f.reserve_output_tokens,
            " inputmode=\"numeric\" placeholder=\"model maximum\"",
            "Hard limits admit a call only if its worst case fits. Empty: a call without max_tokens reserves the model's maximum output, so it is never overshot but small budgets refuse such calls early. A number: they reserve that much and a longer answer may overshoot the limit by the rest."
        ),
        soft = if f.mode != "hard" { " checked" } else { "" },
        hard = if f.mode == "hard" { " checked" } else { "" },
        mode_err = mode_err.map_or(String::new(), |m| format!("<p class=\"field-error\">{}</p>", esc(&m))),
        enabled = if f.enabled { " checked" } else { "" },
    )
}

fn read_only(state: &AppState, session: &Session) -> Response {
    tab_error(
        state,
        session,
        Tab::Budgets,
        &PageFilters::default(),
        &ApiError::Forbidden(
            "viewer tokens are read-only: budgets are changed with an admin or org admin token"
                .into(),
        ),
    )
}

fn form_response(
    state: &AppState,
    session: &Session,
    status: StatusCode,
    f: &BudgetForm,
    editing: Option<&str>,
    error: Option<&ApiError>,
) -> Response {
    let org_fixed = session.principal.role != Role::Admin;
    tab_page(
        state,
        session,
        Tab::Budgets,
        &PageFilters::default(),
        "",
        Some(NOTE),
        status,
        &form_page(session, f, editing, error, org_fixed),
    )
}

/// `GET /budgets/new`.
pub async fn new_form(State(state): State<AppState>, session: Session) -> Response {
    if !session.can_write() {
        return read_only(&state, &session);
    }
    form_response(
        &state,
        &session,
        StatusCode::OK,
        &BudgetForm::blank(),
        None,
        None,
    )
}

/// `POST /budgets`: creates a budget as `POST /api/v1/budgets` does.
pub async fn create(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fields = form(&body);
    if let Some(refused) = post_refused(&headers, &session, &fields) {
        return refused;
    }
    if !session.can_write() {
        return read_only(&state, &session);
    }
    let f = BudgetForm::read(&fields);
    let admin = session.principal.role == Role::Admin;
    let result = match f.to_input(admin) {
        Ok(input) => budgets::compute_create(&state, &session.principal, input).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(b) => see_other(&format!("/budgets?notice=created#budget-{}", b.budget_id)),
        Err(e) => form_response(&state, &session, e.status_code(), &f, None, Some(&e)),
    }
}

/// `GET /budgets/{id}/edit`.
pub async fn edit_form(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    let b = match budgets::compute_get(&state, &session.principal, &id).await {
        Ok(b) => b,
        Err(e) => return tab_error(&state, &session, Tab::Budgets, &PageFilters::default(), &e),
    };
    if let Err(e) = session.principal.write_org(Some(&b.org_id)) {
        return tab_error(&state, &session, Tab::Budgets, &PageFilters::default(), &e);
    }
    form_response(
        &state,
        &session,
        StatusCode::OK,
        &BudgetForm::of(&b),
        Some(&id),
        None,
    )
}

/// `POST /budgets/{id}/edit`: replaces a budget as `PUT /api/v1/budgets/{id}` does.
pub async fn replace(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let fields = form(&body);
    if let Some(refused) = post_refused(&headers, &session, &fields) {
        return refused;
    }
    let f = BudgetForm::read(&fields);
    let admin = session.principal.role == Role::Admin;
    let result = match f.to_input(admin) {
        // Admins cannot move a budget between orgs either: the API refuses a different org.
        Ok(input) => budgets::compute_replace(&state, &session.principal, &id, input).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(b) => see_other(&format!("/budgets?notice=saved#budget-{}", b.budget_id)),
        Err(e @ (ApiError::NotFound(_) | ApiError::Forbidden(_))) => {
            tab_error(&state, &session, Tab::Budgets, &PageFilters::default(), &e)
        }
        Err(e) => form_response(&state, &session, e.status_code(), &f, Some(&id), Some(&e)),
    }
}
