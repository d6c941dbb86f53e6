//! The web dashboard: server-rendered pages over the very functions the JSON API calls
//! (`analytics::compute_overview`, `alerts::compute_alerts`, …), so every figure on a page is
//! the API's figure for the same token and the same query.
//!
//! - [`session`]: sign-in with an API token kept in an HttpOnly, SameSite=Strict cookie; the
//!   [`session::Session`] extractor turns it into the same [`crate::auth::Principal`] a bearer
//!   token gives, and every form carries a CSRF token derived from the session.
//! - [`filters`]: the page query string (`range`, `from`, `to`, `provider`, `org`) — the state
//!   a shared link keeps — and the API query it stands for.
//! - [`html`]: escaping, the page frame (tabs, filter bar), empty and error states;
//!   [`fmt`]: how figures are written; [`chart`]: the SVG charts, drawn here.
//! - One module per tab: [`overview`], [`providers`], [`alerts`], [`projections`], [`budgets`],
//!   [`keys`]; [`rules`]: the alert rule pages under the Alerts tab;
//!   [`live`]: how the Overview and Alerts tabs refresh themselves (ETag polling).
//! - Assets (`assets/app.css`, `assets/app.js`, the icon) are compiled into the binary.
//!
//! Pages work without JavaScript; `app.js` only adds in-place navigation with a loading state,
//! chart tooltips, live refresh of the Overview and Alerts tabs, and small conveniences. Every response carries a strict
//! Content-Security-Policy (no inline script or style at all), and pages are `no-store`.

pub mod alerts;
pub mod budgets;
pub mod chart;
pub mod filters;
pub mod fmt;
pub mod html;
pub mod keys;
pub mod live;
pub mod overview;
pub mod projections;
pub mod providers;
pub mod rules;
pub mod session;

use std::sync::LazyLock;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::AppState;

const APP_CSS: &str = include_str!("../../assets/app.css");
const APP_JS: &str = include_str!("../../assets/app.js");
const FAVICON: &str = include_str!("../../assets/favicon.svg");

/// `?v=` of the asset URLs: a digest of the assets, so a new build is never served stale.
static ASSET_VERSION: LazyLock<String> = LazyLock::new(|| {
    let all = format!("{APP_CSS}{APP_JS}{FAVICON}");
    usage_core::keys::hash_secret(&all)[..12].to_string()
});

/// The version suffix of the asset URLs.
pub fn asset_version() -> &'static str {
    &ASSET_VERSION
}

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The dashboard's routes (merged into [`crate::app`]).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/overview") }))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/overview", get(overview::page))
        .route("/providers", get(providers::page))
        .route("/alerts", get(alerts::page))
        .route("/alerts/{id}/{action}", post(alerts::act))
        .route("/alerts/rules", post(rules::create))
        .route("/alerts/rules/new", get(rules::new_form))
        .route("/alerts/rules/{id}", get(rules::show).post(rules::replace))
        .route("/alerts/rules/{id}/delete", post(rules::delete))
        .route("/alerts/rules/{id}/test", post(rules::test))
        .route("/projections", get(projections::page))
        .route("/budgets", get(budgets::page).post(budgets::create))
        .route("/budgets/new", get(budgets::new_form))
        .route("/keys", get(keys::page).post(keys::create))
        .route("/keys/{id}/revoke", post(keys::revoke))
        .route(
            "/budgets/{id}/edit",
            get(budgets::edit_form).post(budgets::replace),
        )
        .route(
            "/assets/app.css",
            get(|| asset(APP_CSS, "text/css; charset=utf-8")),
        )
        .route(
            "/assets/app.js",
            get(|| asset(APP_JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/assets/favicon.svg",
            get(|| asset(FAVICON, "image/svg+xml")),
        )
        .layer(axum::middleware::map_response(security_headers))
}

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // URLs carry the content digest, so the browser may keep them for good.
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        body,
    )
        .into_response()
}

/// Headers every dashboard response carries; pages (anything not already cacheable) are
/// `no-store`, since they show one token's view.
async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// An HTML response.
pub fn html_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

/// `303 See Other` to `to` (after a form post, so a reload does not post again).
pub fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// A tab's page in its frame.
#[allow(clippy::too_many_arguments)]
pub fn tab_page(
    state: &AppState,
    session: &session::Session,
    tab: html::Tab,
    filters: &filters::PageFilters,
    api_query: &str,
    filter_note: Option<&str>,
    status: StatusCode,
    body: &str,
) -> Response {
    let frame = html::Frame {
        tab,
        principal: &session.principal,
        csrf: &session.csrf,
        filters,
        providers: &state.config().api.providers,
        api_query,
        filter_note,
    };
    html_response(status, html::page(&frame, body))
}

/// A tab whose filters the API refused (or that could not be computed at all): the frame, so
/// the filters can be changed, and the error.
pub fn tab_error(
    state: &AppState,
    session: &session::Session,
    tab: html::Tab,
    filters: &filters::PageFilters,
    e: &crate::error::ApiError,
) -> Response {
    // Filters the API refused are reset; anything else is worth a retry as it was.
    let retry = if matches!(e, crate::error::ApiError::BadRequest { .. }) {
        tab.path().to_string()
    } else {
        filters.href(tab.path())
    };
    let body = format!(
        "<div class=\"page-head\"><h1>{}</h1></div>{}",
        tab.label(),
        html::error_panel(tab.label(), e, Some(&retry))
    );
    tab_page(
        state,
        session,
        tab,
        filters,
        "",
        None,
        e.status_code(),
        &body,
    )
}
