//! Alert rules in the web dashboard (under the Alerts tab): a page per rule — its form (or, for
//! viewers, what it says), its test send and deletion, and its notification delivery log —
//! and the new-rule form. Each kind has its own fields ([`fields`]); the forms post to the
//! functions `POST/PUT/DELETE /api/v1/alert-rules…` and `…/test` run, so validation, its
//! messages (shown beside the field they name) and the role rules are the API's.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value};

use crate::alerts::{self, RuleIn, RuleOut, Severity};
use crate::auth::Role;
use crate::budgets;
use crate::error::ApiError;
use crate::web::filters::PageFilters;
use crate::web::html::{self, csrf_field, esc, Tab};
use crate::web::session::{form, post_refused, Session};
use crate::web::{see_other, tab_error, tab_page};
use crate::AppState;
use tollgate_jobs::notify::TestSendOut;
use tollgate_jobs::rules::RuleKind;

/// How a parameter is typed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Input {
    /// A USD amount (sent as a decimal string).
    Usd,
    /// A whole number.
    Int,
    /// A number (percent, z-score).
    Number,
    /// One of these values.
    Choice(&'static [&'static str]),
    /// One of the configured providers.
    Provider,
    /// A budget of the org.
    Budget,
    Text,
}

/// One parameter of a rule kind: its key in `params`, label, input, and help.
#[derive(Clone, Copy, Debug)]
struct Field {
    key: &'static str,
    label: &'static str,
    input: Input,
    required: bool,
    help: &'static str,
}

const fn f(
    key: &'static str,
    label: &'static str,
    input: Input,
    required: bool,
    help: &'static str,
) -> Field {
    Field {
        key,
        label,
        input,
        required,
        help,
    }
}

const PROVIDER_ANY: Field = f(
    "provider",
    "Provider",
    Input::Provider,
    false,
    "Empty: every provider.",
);
const MODEL_ANY: Field = f("model", "Model", Input::Text, false, "Empty: every model.");
const WINDOW_MINUTES: Field = f(
    "window_minutes",
    "Window (minutes)",
    Input::Int,
    false,
    "The last this many minutes, 1–1440.",
);
const MIN_REQUESTS: Field = f(
    "min_requests",
    "At least this many calls",
    Input::Int,
    false,
    "Fewer calls than this in the window: too few to judge (default 20).",
);

/// The parameters of each kind, as `tollgate_jobs::rules` defines them.
fn fields(kind: RuleKind) -> Vec<Field> {
    match kind {
        RuleKind::SpendThreshold => vec![
            f(
                "threshold_usd",
                "Threshold (USD)",
                Input::Usd,
                true,
                "Fires when spend in the period reaches this.",
            ),
            f(
                "window",
                "Period",
                Input::Choice(&["hour", "day", "week", "month"]),
                false,
                "The current UTC hour, day, week or month.",
            ),
            PROVIDER_ANY,
            MODEL_ANY,
        ],
        RuleKind::BudgetThreshold => vec![
            f(
                "budget_id",
                "Budget",
                Input::Budget,
                true,
                "A budget of the rule's org.",
            ),
            f(
                "percent",
                "Percent of the limit",
                Input::Int,
                true,
                "1–100.",
            ),
        ],
        RuleKind::ErrorRate => vec![
            f(
                "threshold_percent",
                "Error rate (%)",
                Input::Number,
                true,
                "Fires when failed calls reach this share.",
            ),
            WINDOW_MINUTES,
            MIN_REQUESTS,
            PROVIDER_ANY,
            MODEL_ANY,
        ],
        RuleKind::LatencyP95 => vec![
            f(
                "threshold_ms",
                "p95 latency (ms)",
                Input::Int,
                true,
                "Of successful calls.",
            ),
            WINDOW_MINUTES,
            MIN_REQUESTS,
            PROVIDER_ANY,
            MODEL_ANY,
        ],
        RuleKind::LowBalance => vec![
            f("provider", "Provider", Input::Provider, true, ""),
            f("threshold_usd", "Balance below (USD)", Input::Usd, true, ""),
            f(
                "key_label",
                "Key label",
                Input::Text,
                false,
                "Empty: every key of the provider.",
            ),
        ],
        RuleKind::CreditRunway => vec![
            f("provider", "Provider", Input::Provider, true, ""),
            f(
                "min_days",
                "Runway under (days)",
                Input::Int,
                true,
                "1–365, at the forecast burn rate.",
            ),
            f(
                "key_label",
                "Key label",
                Input::Text,
                false,
                "Empty: every key of the provider.",
            ),
        ],
        RuleKind::SpendAnomaly => vec![
            f(
                "window",
                "Compare",
                Input::Choice(&["day", "hour"]),
                false,
                "Today so far, or the last full hour, against the same span of the 14 days before.",
            ),
            f(
                "sensitivity",
                "Sensitivity (z-score)",
                Input::Number,
                false,
                "Higher: only bigger surprises (default 3).",
            ),
            f(
                "min_spend_usd",
                "Ignore spend under (USD)",
                Input::Usd,
                false,
                "",
            ),
            PROVIDER_ANY,
        ],
        RuleKind::UnpricedRequests => vec![
            f(
                "threshold_count",
                "Calls",
                Input::Int,
                false,
                "Fires at this many unpriced calls (default 1).",
            ),
            WINDOW_MINUTES,
        ],
        RuleKind::CostDrift => vec![
            f("provider", "Provider", Input::Provider, true, ""),
            f(
                "threshold_percent",
                "Drift above (%)",
                Input::Number,
                true,
                "Recorded against the provider's bill.",
            ),
            f(
                "days",
                "Over the last (days)",
                Input::Int,
                false,
                "Complete days, 1–31 (default 1).",
            ),
        ],
        RuleKind::RecordsRejected => vec![
            f(
                "threshold_count",
                "Records",
                Input::Int,
                false,
                "Fires at this many refused records (default 1).",
            ),
            WINDOW_MINUTES,
        ],
    }
}

fn kind_label(kind: RuleKind) -> &'static str {
    match kind {
        RuleKind::SpendThreshold => "Spend reaches an amount",
        RuleKind::BudgetThreshold => "A budget reaches a share of its limit",
        RuleKind::ErrorRate => "Error rate",
        RuleKind::LatencyP95 => "Latency (p95)",
        RuleKind::LowBalance => "Low provider balance",
        RuleKind::CreditRunway => "Provider credits run out soon",
        RuleKind::SpendAnomaly => "Unusual spend",
        RuleKind::UnpricedRequests => "Calls to unpriced models",
        RuleKind::CostDrift => "Recorded cost drifts from the bill",
        RuleKind::RecordsRejected => "Usage records refused",
    }
}

/// The form as typed (kept when the API refuses it).
#[derive(Debug, Clone)]
struct RuleForm {
    name: String,
    org_id: String,
    kind: RuleKind,
    severity: String,
    channels: String,
    enabled: bool,
    params: BTreeMap<String, String>,
}

impl RuleForm {
    fn blank(kind: RuleKind) -> RuleForm {
        RuleForm {
            name: String::new(),
            org_id: String::new(),
            kind,
            severity: "medium".into(),
            channels: "dashboard".into(),
            enabled: true,
            params: BTreeMap::new(),
        }
    }

    fn of(r: &RuleOut) -> RuleForm {
        let params = r
            .params
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| {
                        let text = match v {
                            Value::String(s) => s.clone(),
                            // 10.0 reads as 10 (the API stores percentages as numbers).
                            Value::Number(n) => match n.as_f64() {
                                Some(x) if n.is_f64() && x.fract() == 0.0 && x.abs() < 1e15 => {
                                    format!("{}", x as i64)
                                }
                                _ => n.to_string(),
                            },
                            other => other.to_string(),
                        };
                        (k.clone(), text)
                    })
                    .collect()
            })
            .unwrap_or_default();
        RuleForm {
            name: r.name.clone(),
            org_id: r.org_id.clone(),
            kind: r.kind,
            severity: r.severity.as_str().into(),
            channels: r.channels.join("\n"),
            enabled: r.enabled,
            params,
        }
    }

    fn read(f: &BTreeMap<String, String>, kind: RuleKind) -> RuleForm {
        let get = |k: &str| f.get(k).map(|v| v.trim().to_string()).unwrap_or_default();
        let params = fields(kind)
            .iter()
            .map(|fd| (fd.key.to_string(), get(&format!("p_{}", fd.key))))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        RuleForm {
            name: get("name"),
            org_id: get("org_id"),
            kind,
            severity: get("severity"),
            channels: get("channels"),
            enabled: f.contains_key("enabled"),
            params,
        }
    }

    /// The API body; a value the API could not even receive (a word where a number goes) is
    /// refused here, naming the same field the API would.
    fn to_input(&self, admin: bool) -> Result<RuleIn, ApiError> {
        let mut params = Map::new();
        for fd in fields(self.kind) {
            let Some(text) = self.params.get(fd.key) else {
                continue;
            };
            let field = format!("params.{}", fd.key);
            let value =
                match fd.input {
                    Input::Int => {
                        Value::from(text.replace([',', '_', ' '], "").parse::<u64>().map_err(
                            |_| ApiError::bad(&field, format!("`{text}` is not a whole number")),
                        )?)
                    }
                    Input::Number => {
                        let x = text
                            .trim_end_matches('%')
                            .parse::<f64>()
                            .ok()
                            .filter(|x| x.is_finite());
                        Value::from(x.ok_or_else(|| {
                            ApiError::bad(&field, format!("`{text}` is not a number"))
                        })?)
                    }
                    _ => Value::String(text.clone()),
                };
            params.insert(fd.key.to_string(), value);
        }
        let severity = Severity::parse(&self.severity)
            .ok_or_else(|| ApiError::bad("severity", "choose low, medium, high or critical"))?;
        let channels: Vec<String> = self
            .channels
            .split(['\n', ','])
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        Ok(RuleIn {
            org_id: (admin && !self.org_id.is_empty()).then(|| self.org_id.clone()),
            name: self.name.clone(),
            kind: self.kind,
            params: Value::Object(params),
            severity,
            channels: Some(channels),
            enabled: Some(self.enabled),
        })
    }
}

/// The API's name of form input `name` (`p_x` → `params.x`).
fn api_field(input: &str) -> String {
    match input.strip_prefix("p_") {
        Some(k) => format!("params.{k}"),
        None => input.to_string(),
    }
}

/// What the rule page says above the form.
enum Said<'a> {
    Nothing,
    Created,
    Saved,
    Tested(&'a TestSendOut),
    Refused(&'a ApiError),
}

/// Options for the provider and budget selects.
struct Choices {
    providers: Vec<String>,
    /// (id, label).
    budgets: Vec<(String, String)>,
}

/// The select options `kind`'s form needs: the budgets are read only for a kind that names one.
async fn choices(state: &AppState, session: &Session, kind: RuleKind) -> Choices {
    let needs_budgets = fields(kind).iter().any(|f| f.input == Input::Budget);
    let listed = if needs_budgets {
        budgets::compute_list(state, &session.principal, None)
            .await
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let budgets = listed
        .into_iter()
        .map(|b| {
            let label = if session.principal.role == Role::Admin {
                format!("{} ({})", b.name, b.org_id)
            } else {
                b.name.clone()
            };
            (b.budget_id.to_string(), label)
        })
        .collect();
    Choices {
        providers: state.config().api.providers.clone(),
        budgets,
    }
}

fn rule_form(
    session: &Session,
    f: &RuleForm,
    choices: &Choices,
    editing: Option<&str>,
    error: Option<&ApiError>,
) -> String {
    let err_for = |name: &str| html::field_message(error, &api_field(name));
    let row = |name: &str, label: &str, control: String, help: &str| {
        let err = err_for(name);
        format!(
            "<div class=\"form-row\" data-field=\"{name}\"><label for=\"r-{name}\">{label}</label>{control}{}{}</div>",
            err.map_or(String::new(), |m| format!(
                "<p class=\"field-error\" id=\"{name}-error\">{}</p>",
                esc(&m)
            )),
            if help.is_empty() {
                String::new()
            } else {
                format!("<p class=\"hint\" id=\"{name}-help\">{help}</p>")
            },
        )
    };
    let aria = |name: &str, help: &str| {
        let mut ids = Vec::new();
        if err_for(name).is_some() {
            ids.push(format!("{name}-error"));
        }
        if !help.is_empty() {
            ids.push(format!("{name}-help"));
        }
        let invalid = if err_for(name).is_some() {
            " aria-invalid=\"true\""
        } else {
            ""
        };
        if ids.is_empty() {
            invalid.to_string()
        } else {
            format!("{invalid} aria-describedby=\"{}\"", ids.join(" "))
        }
    };
    let input = |name: &str, value: &str, extra: &str, help: &str| {
        format!(
            "<input id=\"r-{name}\" name=\"{name}\" value=\"{}\"{extra}{}>",
            esc(value),
            aria(name, help)
        )
    };
    let select = |name: &str, value: &str, options: &[(String, String)], help: &str| {
        let opts: String = options
            .iter()
            .map(|(v, l)| {
                format!(
                    "<option value=\"{}\"{}>{}</option>",
                    esc(v),
                    if v == value { " selected" } else { "" },
                    esc(l)
                )
            })
            .collect();
        format!(
            "<select id=\"r-{name}\" name=\"{name}\"{}>{opts}</select>",
            aria(name, help)
        )
    };
    let mut params_html = String::new();
    for fd in fields(f.kind) {
        let name = format!("p_{}", fd.key);
        let value = f.params.get(fd.key).map(String::as_str).unwrap_or("");
        let required = if fd.required { " required" } else { "" };
        let optional = |mut opts: Vec<(String, String)>| {
            if !fd.required {
                opts.insert(0, (String::new(), "—".to_string()));
            }
            opts
        };
        let control = match fd.input {
            Input::Usd => input(
                &name,
                value,
                &format!("{required} inputmode=\"decimal\""),
                fd.help,
            ),
            Input::Int => input(
                &name,
                value,
                &format!("{required} inputmode=\"numeric\""),
                fd.help,
            ),
            Input::Number => input(
                &name,
                value,
                &format!("{required} inputmode=\"decimal\""),
                fd.help,
            ),
            Input::Text => input(
                &name,
                value,
                " maxlength=\"256\" autocomplete=\"off\"",
                fd.help,
            ),
            Input::Choice(values) => select(
                &name,
                value,
                &optional(
                    values
                        .iter()
                        .map(|v| (v.to_string(), v.to_string()))
                        .collect(),
                ),
                fd.help,
            ),
            Input::Provider => select(
                &name,
                value,
                &optional(
                    choices
                        .providers
                        .iter()
                        .map(|p| (p.clone(), p.clone()))
                        .collect(),
                ),
                fd.help,
            ),
            Input::Budget => select(&name, value, &optional(choices.budgets.clone()), fd.help),
        };
        params_html.push_str(&row(&name, fd.label, control, fd.help));
    }
    let org = if session.principal.role == Role::Admin && editing.is_none() {
        row(
            "org_id",
            "Organisation",
            input(
                "org_id",
                &f.org_id,
                " required maxlength=\"256\" autocomplete=\"off\"",
                "The org whose data the rule watches.",
            ),
            "The org whose data the rule watches.",
        )
    } else {
        String::new()
    };
    let severities: Vec<(String, String)> = ["low", "medium", "high", "critical"]
        .iter()
        .map(|s| (s.to_string(), s.to_string()))
        .collect();
    let channels_help = "One per line: <code>dashboard</code>, <code>webhook:https://…</code>, \
                         <code>slack:https://hooks.slack.com/…</code>, <code>slack:#channel</code>, \
                         <code>email:ops@example.com</code> (the last two need the server's Slack \
                         token or SMTP server).";
    let action = match editing {
        Some(id) => format!("/alerts/rules/{}", esc(id)),
        None => "/alerts/rules".to_string(),
    };
    let submit = if editing.is_some() {
        "Save rule"
    } else {
        "Create rule"
    };
    format!(
        "<form class=\"panel rule-form\" method=\"post\" action=\"{action}\" novalidate>{csrf}\
         <input type=\"hidden\" name=\"kind\" value=\"{kind}\">\
         <p class=\"muted\">Kind: <strong>{kind_label}</strong> (<code>{kind}</code>)</p>\
         {name}{org}{params_html}{severity}{channels}\
         <div class=\"form-row\"><label class=\"choice\"><input type=\"checkbox\" name=\"enabled\" value=\"1\"{enabled}> <span>Enabled</span></label></div>\
         <div class=\"form-actions\"><button type=\"submit\" class=\"primary\" id=\"save-rule\">{submit}</button>\
         <a class=\"button secondary\" href=\"/alerts#rules\">Cancel</a></div></form>",
        csrf = csrf_field(&session.csrf),
        kind = f.kind.as_str(),
        kind_label = kind_label(f.kind),
        name = row("name", "Name", input("name", &f.name, " required maxlength=\"200\"", ""), ""),
        severity = row("severity", "Severity", select("severity", &f.severity, &severities, ""), ""),
        channels = row(
            "channels",
            "Notify",
            format!(
                "<textarea id=\"r-channels\" name=\"channels\" rows=\"3\"{}>{}</textarea>",
                aria("channels", channels_help),
                esc(&f.channels)
            ),
            channels_help,
        ),
        enabled = if f.enabled { " checked" } else { "" },
    )
}

fn kind_picker(current: RuleKind) -> String {
    let opts: String = RuleKind::ALL
        .iter()
        .map(|k| {
            format!(
                "<option value=\"{0}\"{1}>{2}</option>",
                k.as_str(),
                if *k == current { " selected" } else { "" },
                kind_label(*k)
            )
        })
        .collect();
    format!(
        "<form class=\"kind-picker\" method=\"get\" action=\"/alerts/rules/new\">\
         <label for=\"r-kind\">What to watch</label> <select id=\"r-kind\" name=\"kind\" data-autosubmit>{opts}</select> \
         <button type=\"submit\" class=\"secondary small\">Choose</button></form>"
    )
}

fn said_html(said: &Said<'_>) -> String {
    match said {
        Said::Nothing => String::new(),
        Said::Created => "<p class=\"notice ok\" role=\"status\">Rule created.</p>".into(),
        Said::Saved => "<p class=\"notice ok\" role=\"status\">Rule saved.</p>".into(),
        Said::Tested(out) if out.results.is_empty() => {
            "<p class=\"notice ok\" role=\"status\" id=\"test-result\">Test sent: this rule notifies the \
             dashboard only, where test alerts are not shown.</p>"
                .into()
        }
        Said::Tested(out) => {
            let items: String = out
                .results
                .iter()
                .map(|r| {
                    let answer = match (&r.http_status, &r.error) {
                        (Some(c), Some(e)) => format!("{c} · {}", esc(e)),
                        (Some(c), None) => c.to_string(),
                        (None, Some(e)) => esc(e),
                        (None, None) => String::new(),
                    };
                    format!(
                        "<li><code>{}</code>: <span class=\"badge delivery {s}\">{s}</span> after {} attempt(s) {answer}</li>",
                        esc(&r.channel),
                        r.attempts,
                        s = esc(&r.status),
                    )
                })
                .collect();
            let all_ok = out.results.iter().all(|r| r.status == "delivered");
            format!(
                "<div class=\"notice {}\" role=\"status\" id=\"test-result\"><p>Test sent:</p><ul>{items}</ul></div>",
                if all_ok { "ok" } else { "warn" }
            )
        }
        Said::Refused(ApiError::BadRequest { field: Some(_), .. }) => {
            "<p class=\"notice bad\" role=\"alert\">The rule was not saved: please correct the field marked below.</p>".into()
        }
        Said::Refused(e) => html::error_panel("The rule was not saved", e, None),
    }
}

fn page(state: &AppState, session: &Session, status: StatusCode, body: &str) -> Response {
    tab_page(
        state,
        session,
        Tab::Alerts,
        &PageFilters::default(),
        "",
        Some("Rules are not filtered by time or provider."),
        status,
        body,
    )
}

fn read_only(state: &AppState, session: &Session) -> Response {
    tab_error(
        state,
        session,
        Tab::Alerts,
        &PageFilters::default(),
        &ApiError::Forbidden(
            "viewer tokens are read-only: rules are changed with an admin or org admin token"
                .into(),
        ),
    )
}

/// `GET /alerts/rules/new?kind=…`.
pub async fn new_form(
    State(state): State<AppState>,
    session: Session,
    RawQuery(raw): RawQuery,
) -> Response {
    if !session.can_write() {
        return read_only(&state, &session);
    }
    let kind = raw
        .as_deref()
        .and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "kind")
                .map(|(_, v)| v.into_owned())
        })
        .and_then(|k| RuleKind::parse(&k))
        .unwrap_or(RuleKind::SpendThreshold);
    new_page(
        &state,
        &session,
        StatusCode::OK,
        &RuleForm::blank(kind),
        None,
    )
    .await
}

async fn new_page(
    state: &AppState,
    session: &Session,
    status: StatusCode,
    f: &RuleForm,
    error: Option<&ApiError>,
) -> Response {
    let choices = choices(state, session, f.kind).await;
    let said = error.map_or(String::new(), |e| said_html(&Said::Refused(e)));
    let body = format!(
        "<div class=\"page-head\"><h1>New alert rule</h1><p class=\"muted\"><a href=\"/alerts#rules\" data-nav>← Alerts</a></p></div>\
         {said}{}{}",
        kind_picker(f.kind),
        rule_form(session, f, &choices, None, error),
    );
    page(state, session, status, &body)
}

/// The posted rule form, read for its kind; a post without a known kind is answered here.
fn posted_form(
    state: &AppState,
    session: &Session,
    fields: &BTreeMap<String, String>,
) -> Result<RuleForm, Box<Response>> {
    match fields.get("kind").and_then(|k| RuleKind::parse(k)) {
        Some(kind) => Ok(RuleForm::read(fields, kind)),
        None => Err(Box::new(tab_error(
            state,
            session,
            Tab::Alerts,
            &PageFilters::default(),
            &ApiError::bad("kind", "choose what the rule watches"),
        ))),
    }
}

/// `POST /alerts/rules`: creates a rule as `POST /api/v1/alert-rules` does.
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
    let f = match posted_form(&state, &session, &fields) {
        Ok(f) => f,
        Err(refused) => return *refused,
    };
    let admin = session.principal.role == Role::Admin;
    let result = match f.to_input(admin) {
        Ok(input) => alerts::compute_create_rule(&state, &session.principal, input).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(r) => see_other(&format!("/alerts/rules/{}?notice=created", r.rule_id)),
        Err(e) => new_page(&state, &session, e.status_code(), &f, Some(&e)).await,
    }
}

/// `GET /alerts/rules/{id}`.
pub async fn show(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let said = match raw.as_deref().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "notice")
            .map(|(_, v)| v.into_owned())
    }) {
        Some(n) if n == "created" => Said::Created,
        Some(n) if n == "saved" => Said::Saved,
        _ => Said::Nothing,
    };
    rule_page(&state, &session, &id, StatusCode::OK, None, said).await
}

async fn rule_page(
    state: &AppState,
    session: &Session,
    id: &str,
    status: StatusCode,
    typed: Option<&RuleForm>,
    said: Said<'_>,
) -> Response {
    let p = &session.principal;
    let (rule, deliveries) = tokio::join!(
        alerts::compute_get_rule(state, p, id),
        alerts::compute_rule_deliveries(state, p, id),
    );
    let rule = match rule {
        Ok(r) => r,
        Err(e) => return tab_error(state, session, Tab::Alerts, &PageFilters::default(), &e),
    };
    let writable = session.can_write() && p.write_org(Some(&rule.org_id)).is_ok();
    let error = match &said {
        Said::Refused(e) => Some(*e),
        _ => None,
    };
    let main = if writable {
        let f = typed.cloned().unwrap_or_else(|| RuleForm::of(&rule));
        let choices = choices(state, session, f.kind).await;
        let rid = rule.rule_id.to_string();
        format!(
            "{}<div class=\"rule-actions\">\
             <form method=\"post\" action=\"/alerts/rules/{rid}/test\">{csrf}<button type=\"submit\" class=\"secondary\" id=\"test-rule\">Send a test notification</button></form>\
             <form method=\"post\" action=\"/alerts/rules/{rid}/delete\">{csrf}<button type=\"submit\" class=\"danger\" id=\"delete-rule\" aria-label=\"Delete rule {name}\">Delete rule</button></form></div>",
            rule_form(session, &f, &choices, Some(&rid), error),
            csrf = csrf_field(&session.csrf),
            name = esc(&rule.name),
        )
    } else {
        let params: String = rule
            .params
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| {
                        format!(
                            "<div><dt>{}</dt><dd>{}</dd></div>",
                            esc(&k.replace('_', " ")),
                            esc(&v.to_string())
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        html::panel(
            "rule",
            kind_label(rule.kind),
            "Read-only for this token",
            &format!(
                "<dl class=\"details\">{params}<div><dt>severity</dt><dd>{}</dd></div><div><dt>notify</dt><dd>{}</dd></div>\
                 <div><dt>enabled</dt><dd>{}</dd></div></dl>",
                rule.severity.as_str(),
                esc(&rule.channels.join(", ")),
                if rule.enabled { "yes" } else { "no" },
            ),
        )
    };
    let deliveries_html = match deliveries {
        Ok(list) => crate::web::alerts::deliveries_table(
            list.iter().rev(),
            "rule-deliveries-table",
            (
                "No delivery yet",
                "Each attempt to reach this rule's webhook, Slack or email channels shows here.",
            ),
        ),
        Err(e) => html::error_panel("Deliveries", &e, None),
    };
    let body = format!(
        "<div class=\"page-head\"><h1>{name}</h1><p class=\"muted\"><a href=\"/alerts#rules\" data-nav>← Alerts</a> · \
         org {org} · made by {by} · <code>{id}</code></p></div>{said}{main}{}",
        html::panel(
            "rule-deliveries",
            "Notification deliveries",
            "Every attempt to reach this rule's channels, newest first (GET /api/v1/alert-rules/{id}/deliveries)",
            &deliveries_html,
        ),
        name = esc(&rule.name),
        org = esc(&rule.org_id),
        by = esc(&rule.created_by),
        id = rule.rule_id,
        said = said_html(&said),
    );
    page(state, session, status, &body)
}

/// `POST /alerts/rules/{id}`: replaces the rule as `PUT /api/v1/alert-rules/{id}` does.
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
    let f = match posted_form(&state, &session, &fields) {
        Ok(f) => f,
        Err(refused) => return *refused,
    };
    let admin = session.principal.role == Role::Admin;
    let result = match f.to_input(admin) {
        Ok(mut input) => {
            input.org_id = None;
            alerts::compute_replace_rule(&state, &session.principal, &id, input).await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(r) => see_other(&format!("/alerts/rules/{}?notice=saved", r.rule_id)),
        Err(e @ (ApiError::NotFound(_) | ApiError::Forbidden(_))) => {
            tab_error(&state, &session, Tab::Alerts, &PageFilters::default(), &e)
        }
        Err(e) => {
            rule_page(
                &state,
                &session,
                &id,
                e.status_code(),
                Some(&f),
                Said::Refused(&e),
            )
            .await
        }
    }
}

/// `POST /alerts/rules/{id}/delete`.
pub async fn delete(
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
    match alerts::compute_delete_rule(&state, &session.principal, &id).await {
        Ok(()) => see_other("/alerts?notice=rule_deleted#rules"),
        Err(e) => tab_error(&state, &session, Tab::Alerts, &PageFilters::default(), &e),
    }
}

/// `POST /alerts/rules/{id}/test`: sends the sample notification and shows what each channel
/// answered.
pub async fn test(
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
    match alerts::compute_test_rule(&state, &session.principal, &id).await {
        Ok(out) => {
            rule_page(
                &state,
                &session,
                &id,
                StatusCode::OK,
                None,
                Said::Tested(&out),
            )
            .await
        }
        Err(e) => tab_error(&state, &session, Tab::Alerts, &PageFilters::default(), &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_form_and_its_keys_are_the_ones_the_api_reads() {
        for kind in RuleKind::ALL {
            let fs = fields(kind);
            assert!(!fs.is_empty(), "{kind:?}");
            // Values a person would type pass the API's own validation for every kind.
            let mut params = Map::new();
            for fd in &fs {
                let v = match (fd.key, fd.input) {
                    (_, Input::Usd) => Value::from("5"),
                    ("percent", _) => Value::from(80),
                    ("min_days", _) => Value::from(7),
                    ("days", _) => Value::from(3),
                    ("window_minutes", _) => Value::from(30),
                    (_, Input::Int) => Value::from(5),
                    (_, Input::Number) => Value::from(5.0),
                    (_, Input::Choice(c)) => Value::from(c[0]),
                    (_, Input::Provider) => Value::from("openai"),
                    (_, Input::Budget) => Value::from(uuid::Uuid::nil().to_string()),
                    (_, Input::Text) => Value::from("x"),
                };
                params.insert(fd.key.to_string(), v);
            }
            let checked = tollgate_jobs::rules::validate_params(kind, Value::Object(params), None);
            assert!(checked.is_ok(), "{kind:?}: {checked:?}");
        }
    }

    #[test]
    fn refusals_land_beside_the_field_they_name() {
        assert_eq!(api_field("p_threshold_usd"), "params.threshold_usd");
        assert_eq!(api_field("channels"), "channels");
        let mut f = RuleForm::blank(RuleKind::ErrorRate);
        f.params.insert("threshold_percent".into(), "lots".into());
        let e = f.to_input(false).unwrap_err();
        assert!(
            matches!(e, ApiError::BadRequest { field: Some(ref x), .. } if x == "params.threshold_percent"),
            "{e:?}"
        );
    }
}
