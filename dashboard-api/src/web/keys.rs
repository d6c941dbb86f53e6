//! The Keys tab: the app keys (`tg_…`) apps send to the edge as their API key. Every key the
//! token may see, active and revoked; for tokens that may change their org, a form that makes
//! a key — its secret shown once, on the page that answers the form, never again — and a
//! revoke button per active key. The form and the button run the functions
//! `POST /api/v1/keys` and `DELETE /api/v1/keys/{id}` run, so validation and scope are the
//! API's.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use crate::auth::Role;
use crate::error::ApiError;
use crate::keys::{self, KeyCreated, KeyIn, KeyOut};
use crate::web::filters::PageFilters;
use crate::web::html::{self, csrf_field, esc, Tab};
use crate::web::session::{form, post_refused, Session};
use crate::web::{see_other, tab_error, tab_page};
use crate::AppState;

const NOTE: &str = "Keys are not filtered by time or provider; the other tabs are.";
const FIELDS: [&str; 5] = ["name", "org_id", "app_id", "user_id", "acts_for_end_users"];

/// The form as typed (kept when the API refuses it, so nothing typed is lost).
#[derive(Debug, Default, Clone)]
struct KeyForm {
    name: String,
    org_id: String,
    app_id: String,
    user_id: String,
    acts_for_end_users: bool,
}

impl KeyForm {
    fn read(f: &BTreeMap<String, String>) -> KeyForm {
        let get = |k: &str| f.get(k).map(|v| v.trim().to_string()).unwrap_or_default();
        KeyForm {
            name: get("name"),
            org_id: get("org_id"),
            app_id: get("app_id"),
            user_id: get("user_id"),
            acts_for_end_users: f.contains_key("acts_for_end_users"),
        }
    }

    fn to_input(&self, admin: bool) -> KeyIn {
        let opt = |v: &str| (!v.is_empty()).then(|| v.to_string());
        KeyIn {
            org_id: if admin { opt(&self.org_id) } else { None },
            user_id: opt(&self.user_id),
            app_id: self.app_id.clone(),
            name: self.name.clone(),
            acts_for_end_users: self.acts_for_end_users,
        }
    }
}

/// What the page says above the list.
enum Outcome<'a> {
    None,
    Created(&'a KeyCreated),
    Revoked,
    Refused(&'a ApiError),
}

/// `GET /keys`.
pub async fn page(
    State(state): State<AppState>,
    session: Session,
    RawQuery(raw): RawQuery,
) -> Response {
    let filters = PageFilters::parse(raw.as_deref());
    let revoked = raw.as_deref().is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "notice" && v == "revoked")
    });
    let outcome = if revoked {
        Outcome::Revoked
    } else {
        Outcome::None
    };
    render(
        &state,
        &session,
        &filters,
        StatusCode::OK,
        &KeyForm::default(),
        outcome,
    )
    .await
}

async fn render(
    state: &AppState,
    session: &Session,
    filters: &PageFilters,
    status: StatusCode,
    typed: &KeyForm,
    outcome: Outcome<'_>,
) -> Response {
    let list = match keys::compute_list(state, &session.principal, Some(&filters.org_query())).await
    {
        Ok(l) => l,
        Err(e) => return tab_error(state, session, Tab::Keys, filters, &e),
    };
    let notice = match &outcome {
        Outcome::Created(k) => created_box(k),
        Outcome::Revoked => {
            "<p class=\"notice ok\" role=\"status\">Key revoked. The edge refuses it within its \
             cache time (KEYS_CACHE_SECS, 30 s by default).</p>"
                .to_string()
        }
        Outcome::Refused(e) => match e {
            ApiError::BadRequest { field: Some(f), .. } if FIELDS.contains(&f.as_str()) => {
                "<p class=\"notice bad\" role=\"alert\">The key was not made: please correct the \
                 field marked below.</p>"
                    .to_string()
            }
            other => html::error_panel("The key was not made", other, None),
        },
        Outcome::None => String::new(),
    };
    let error = match &outcome {
        Outcome::Refused(e) => Some(*e),
        _ => None,
    };
    let create = if session.can_write() {
        html::panel(
            "new-key",
            "New key",
            "For one app (and optionally one user) of the org; its calls are recorded and budgeted under them",
            &key_form(session, typed, error),
        )
    } else {
        String::new()
    };
    let body = format!(
        "<div class=\"page-head\"><h1>App keys</h1><p class=\"muted\">What apps send to the edge as \
         their API key (<code>base_url</code> = the edge, <code>api_key</code> = the key)</p></div>\
         {notice}{create}{}",
        html::panel(
            "key-list",
            "Keys",
            "Active and revoked; a revoked key stays listed so its past calls keep a name",
            &key_table(&list, session),
        ),
    );
    tab_page(
        state,
        session,
        Tab::Keys,
        filters,
        &filters.org_query(),
        Some(NOTE),
        status,
        &body,
    )
}

fn created_box(k: &KeyCreated) -> String {
    format!(
        "<section class=\"panel secret-once\" id=\"key-created\" role=\"status\" aria-labelledby=\"key-created-title\">\
         <h2 id=\"key-created-title\">Key “{name}” made — copy it now</h2>\
         <p>This is the only time the key is shown: Tollgate keeps only its SHA-256.</p>\
         <p><label for=\"new-secret\">Key</label> <input id=\"new-secret\" class=\"secret\" readonly \
         value=\"{secret}\" data-key-id=\"{id}\" spellcheck=\"false\" autocomplete=\"off\"></p></section>",
        name = esc(&k.key.name),
        secret = esc(&k.secret),
        id = esc(&k.key.key_id),
    )
}

fn key_form(session: &Session, f: &KeyForm, error: Option<&ApiError>) -> String {
    let field_error = |name: &str| html::field_message(error, name);
    let text = |name: &str, label: &str, value: &str, extra: &str, help: &str| {
        html::text_field(
            "k-",
            name,
            label,
            value,
            extra,
            help,
            field_error(name).as_deref(),
        )
    };
    let org = if session.principal.role == Role::Admin {
        text(
            "org_id",
            "Organisation",
            &f.org_id,
            " required maxlength=\"128\" autocomplete=\"off\"",
            "The org the key's calls belong to.",
        )
    } else {
        String::new()
    };
    format!(
        "<form class=\"key-form\" method=\"post\" action=\"/keys\" novalidate>{csrf}{name}{org}{app}{user}\
         <div class=\"form-row\" data-field=\"acts_for_end_users\"><label class=\"choice\">\
         <input type=\"checkbox\" name=\"acts_for_end_users\" value=\"1\"{acts}> <span>Acts for end users — \
         calls may name their user in <code>x-tollgate-user</code> (a server app serving many people)</span></label></div>\
         <div class=\"form-actions\"><button type=\"submit\" class=\"primary\" id=\"create-key\">Make key</button></div></form>",
        csrf = csrf_field(&session.csrf),
        name = text("name", "Name", &f.name, " required maxlength=\"200\"", "For people: what the key is for."),
        app = text("app_id", "App id", &f.app_id, " required maxlength=\"128\" autocomplete=\"off\"", "The app its calls are recorded under."),
        user = text("user_id", "User id", &f.user_id, " maxlength=\"128\" autocomplete=\"off\"", "Optional: every call is this user's."),
        acts = if f.acts_for_end_users { " checked" } else { "" },
    )
}

fn key_table(list: &[KeyOut], session: &Session) -> String {
    if list.is_empty() {
        return html::empty(
            "No app keys yet",
            if session.can_write() {
                "Make one above, and give it to the app as its API key."
            } else {
                "An admin of the org makes them."
            },
        );
    }
    let admin = session.principal.role == Role::Admin;
    let mut list: Vec<&KeyOut> = list.iter().collect();
    // Active first, newest first within each.
    list.sort_by(|a, b| {
        (a.revoked_at.is_some(), std::cmp::Reverse(a.created_at))
            .cmp(&(b.revoked_at.is_some(), std::cmp::Reverse(b.created_at)))
    });
    let rows: Vec<html::Row> = list
        .iter()
        .map(|k| {
            let status = match k.revoked_at {
                Some(t) => format!("<span class=\"badge\">revoked</span> {}", html::time(t)),
                None => "<span class=\"badge ok\">active</span>".to_string(),
            };
            let action = if k.revoked_at.is_none()
                && session.can_write()
                && session.principal.write_org(Some(&k.org_id)).is_ok()
            {
                format!(
                    "<form method=\"post\" action=\"/keys/{id}/revoke\">{csrf}<button type=\"submit\" \
                     class=\"small secondary\" data-action=\"revoke\" aria-label=\"Revoke {name}\">Revoke</button></form>",
                    id = esc(&k.key_id),
                    csrf = csrf_field(&session.csrf),
                    name = esc(&k.name),
                )
            } else {
                String::new()
            };
            let mut cells = vec![esc(&k.name), format!("<code>{}</code>", esc(&k.key_id))];
            if admin {
                cells.push(esc(&k.org_id));
            }
            cells.extend([
                esc(&k.app_id),
                k.user_id.as_deref().map_or("—".to_string(), esc),
                if k.acts_for_end_users { "yes" } else { "no" }.to_string(),
                html::time(k.created_at),
                status,
                action,
            ]);
            html::Row {
                attrs: format!(
                    " data-key-id=\"{}\" data-state=\"{}\"",
                    esc(&k.key_id),
                    if k.revoked_at.is_some() { "revoked" } else { "active" }
                ),
                cells,
            }
        })
        .collect();
    let mut cols = vec![html::col("Name"), html::col("Key id")];
    if admin {
        cols.push(html::col("Org"));
    }
    cols.extend([
        html::col("App"),
        html::col("User"),
        html::col("End users"),
        html::col("Made"),
        html::col("Status"),
        html::col(""),
    ]);
    html::table("keys-table", &cols, &rows)
}

/// `POST /keys`: makes a key as `POST /api/v1/keys` does, and shows its secret once.
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
    let filters = PageFilters::default();
    if !session.can_write() {
        return tab_error(
            &state,
            &session,
            Tab::Keys,
            &filters,
            &ApiError::Forbidden(
                "viewer tokens are read-only: keys are made with an admin or org admin token"
                    .into(),
            ),
        );
    }
    let typed = KeyForm::read(&fields);
    let admin = session.principal.role == Role::Admin;
    match keys::compute_create(&state, &session.principal, typed.to_input(admin)).await {
        // Answered here, not redirected: the secret must not travel in a URL or be shown twice.
        Ok(made) => {
            render(
                &state,
                &session,
                &filters,
                StatusCode::CREATED,
                &KeyForm::default(),
                Outcome::Created(&made),
            )
            .await
        }
        Err(e) => {
            render(
                &state,
                &session,
                &filters,
                e.status_code(),
                &typed,
                Outcome::Refused(&e),
            )
            .await
        }
    }
}

/// `POST /keys/{id}/revoke`.
pub async fn revoke(
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
    match keys::compute_revoke(&state, &session.principal, &id).await {
        Ok(_) => see_other("/keys?notice=revoked"),
        Err(e) => tab_error(&state, &session, Tab::Keys, &PageFilters::default(), &e),
    }
}
