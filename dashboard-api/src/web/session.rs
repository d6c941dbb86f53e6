//! Signing in to the dashboard: the API token itself is the session.
//!
//! `POST /login` checks a pasted token exactly as the API checks a bearer token and stores it in
//! the `tg_session` cookie: HttpOnly (no script reads it), SameSite=Strict (no other site's
//! page sends it), `Secure` when the request came over HTTPS (`X-Forwarded-Proto: https` from
//! the proxy in front), and a browser-session cookie (gone when the browser closes). Every
//! page request authenticates the cookie through [`crate::auth::authenticate`], so a page shows
//! exactly what the token may read, and a revoked token stops working within the token cache's
//! TTL.
//!
//! Forms that change something carry a CSRF token: a digest of the session token under a
//! fixed label, which only a page rendered for this session knows. It is checked on every
//! POST together with `Origin`/`Sec-Fetch-Site`. The sign-in form, which has no session yet,
//! uses a random nonce in a short-lived cookie instead (double submit).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;

use crate::auth::{authenticate, Principal};
use crate::error::ApiError;
use crate::web::html::{self, esc};
use crate::web::{html_response, see_other};
use crate::AppState;

/// The session cookie: the API token.
pub const SESSION_COOKIE: &str = "tg_session";
/// The sign-in form's nonce cookie.
const LOGIN_COOKIE: &str = "tg_login";

/// A signed-in browser.
#[derive(Clone, Debug)]
pub struct Session {
    pub principal: Principal,
    /// The CSRF token of this session's forms.
    pub csrf: String,
}

impl Session {
    /// Whether this token may change configuration at all (viewers never may).
    pub fn can_write(&self) -> bool {
        self.principal.role != crate::auth::Role::Viewer
    }
}

/// The value of cookie `name`, if the request sent it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// The CSRF token of a session: a one-way digest of its token, so showing it in a page reveals
/// nothing about the token.
pub fn csrf_token(session_token: &str) -> String {
    usage_core::keys::hash_secret(&format!("tollgate-web-csrf-v1\n{session_token}"))
}

/// Equal without an early exit (the comparison time says nothing about where they differ).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Whether the request came over HTTPS (as the proxy in front says).
fn https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn set_cookie(name: &str, value: &str, max_age: Option<u32>, secure: bool) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Only our own pages are places to go back to after signing in (no open redirect).
pub fn safe_next(next: Option<&str>) -> String {
    let ok = next.filter(|n| {
        let path = n.split('?').next().unwrap_or("");
        [
            "/overview",
            "/providers",
            "/alerts",
            "/projections",
            "/budgets",
        ]
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
            && !n.contains(['\\', '\r', '\n'])
    });
    ok.unwrap_or("/overview").to_string()
}

/// A response that sends the browser to sign in, then back to `next`.
fn to_login(parts: &Parts, why: Option<&str>) -> Response {
    let next = parts
        .uri
        .path_and_query()
        .map_or("/overview", |p| p.as_str());
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("next", next);
    if let Some(w) = why {
        q.append_pair("why", w);
    }
    let mut resp = see_other(&format!("/login?{}", q.finish()));
    if why.is_some() {
        resp.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(SESSION_COOKIE, "", Some(0), https(&parts.headers)),
        );
    }
    resp
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(to_login(parts, None));
        };
        let bearer = format!("Bearer {token}");
        match authenticate(state.keys_client(), state.token_cache(), Some(&bearer)).await {
            Ok(principal) => Ok(Session {
                csrf: csrf_token(token),
                principal,
            }),
            Err(ApiError::Unauthorized(_)) => Err(to_login(parts, Some("expired"))),
            Err(e) => Err(html_response(
                e.status_code(),
                html::bare_page(
                    "Tollgate is unavailable",
                    &html::error_panel("Could not check your sign-in", &e, Some("/overview")),
                ),
            )),
        }
    }
}

/// A form body as a map (the last value of a repeated field wins).
pub fn form(body: &Bytes) -> BTreeMap<String, String> {
    form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Refuses a cross-site POST: `Sec-Fetch-Site` (when sent) must be same-origin, and `Origin`
/// (when sent) must name this host — as the browser reached it: `Host`, or the
/// `X-Forwarded-Host` a reverse proxy in front sets.
fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site != "same-origin" && site != "none" {
            return false;
        }
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    // `null` (an opaque origin) has no host, so it never matches.
    let Some((_, origin_host)) = origin.split_once("://") else {
        return false;
    };
    [header::HOST.as_str(), "x-forwarded-host"]
        .iter()
        .filter_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .any(|host| host.eq_ignore_ascii_case(origin_host))
}

/// Checks a POST of `session`: same origin and the session's CSRF token in field `csrf`.
/// Returns the refusal to send, if any.
pub fn post_refused(
    headers: &HeaderMap,
    session: &Session,
    fields: &BTreeMap<String, String>,
) -> Option<Response> {
    let token_ok = fields.get("csrf").is_some_and(|t| same(t, &session.csrf));
    if token_ok && same_origin(headers) {
        None
    } else {
        Some(forbidden_form())
    }
}

fn forbidden_form() -> Response {
    html_response(
        StatusCode::FORBIDDEN,
        html::bare_page(
            "Form expired",
            "<section class=\"panel error\" role=\"alert\"><h1>This form has expired</h1>\
             <p>It was not sent from this dashboard in this session, so nothing was changed. \
             Go back, reload the page and try again.</p>\
             <p><a class=\"button\" href=\"/overview\">Back to the dashboard</a></p></section>",
        ),
    )
}

/// What the sign-in page says above the form: news, or a problem with what was sent.
#[derive(Clone, Copy, Debug)]
enum Said<'a> {
    Nothing,
    Notice(&'a str),
    Problem(&'a str),
}

fn login_form(next: &str, nonce: &str, said: Said<'_>) -> String {
    let problem = match said {
        Said::Problem(p) => Some(p),
        _ => None,
    };
    let problem_html = problem.map_or(String::new(), |p| {
        format!("<p class=\"field-error\" id=\"token-error\" role=\"alert\">{p}</p>")
    });
    let notice_html = match said {
        Said::Notice(n) => format!("<p class=\"notice\" role=\"status\">{n}</p>"),
        _ => String::new(),
    };
    let invalid = if problem.is_some() {
        " aria-invalid=\"true\" aria-describedby=\"token-error token-help\""
    } else {
        " aria-describedby=\"token-help\""
    };
    let body = format!(
        "<main id=\"main\" class=\"login\">\
         <form class=\"panel login-card\" method=\"post\" action=\"/login\">\
         <h1>{mark}Sign in to Tollgate</h1>\
         <p class=\"muted\">AI API spend, usage, alerts and budgets.</p>{notice_html}\
         <input type=\"hidden\" name=\"nonce\" value=\"{nonce}\">\
         <input type=\"hidden\" name=\"next\" value=\"{next}\">\
         <label for=\"token\">API token</label>\
         <input id=\"token\" name=\"token\" type=\"password\" required autocomplete=\"off\" \
         spellcheck=\"false\" placeholder=\"tga_…\"{invalid} autofocus>\
         {problem_html}\
         <p class=\"hint\" id=\"token-help\">Paste a dashboard API token (<code>tga_…</code>). \
         It is kept in an HttpOnly cookie in this browser until you sign out or close it.</p>\
         <button type=\"submit\" class=\"primary\">Sign in</button>\
         </form></main>",
        nonce = esc(nonce),
        next = esc(next),
        mark = html::BRAND_MARK,
    );
    html::bare_page("Sign in", &body)
}

/// `GET /login`.
pub async fn login_page(headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    let q: BTreeMap<String, String> = form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let next = safe_next(q.get("next").map(String::as_str));
    let said = match q.get("why").map(String::as_str) {
        Some("expired") => {
            Said::Notice("Your session ended (the token was revoked or expired). Sign in again.")
        }
        Some("signed_out") => Said::Notice("You are signed out."),
        _ => Said::Nothing,
    };
    let nonce = crate::auth::new_secret("");
    let mut resp = html_response(StatusCode::OK, login_form(&next, &nonce, said));
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, &nonce, Some(3600), https(&headers)),
    );
    resp
}

/// `POST /login`: a valid token becomes the session cookie.
pub async fn login(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let f = form(&body);
    let next = safe_next(f.get("next").map(String::as_str));
    let nonce_ok = match (cookie(&headers, LOGIN_COOKIE), f.get("nonce")) {
        (Some(c), Some(n)) => same(c, n),
        _ => false,
    };
    if !nonce_ok || !same_origin(&headers) {
        return forbidden_form();
    }
    let token = f.get("token").map(|t| t.trim()).unwrap_or("");
    let bearer = format!("Bearer {token}");
    let again = |status: StatusCode, problem: &str| {
        let nonce = crate::auth::new_secret("");
        let mut resp = html_response(status, login_form(&next, &nonce, Said::Problem(problem)));
        resp.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(LOGIN_COOKIE, &nonce, Some(3600), https(&headers)),
        );
        resp
    };
    match authenticate(state.keys_client(), state.token_cache(), Some(&bearer)).await {
        Ok(_) => {
            let mut resp = see_other(&next);
            let h = resp.headers_mut();
            h.append(
                header::SET_COOKIE,
                set_cookie(SESSION_COOKIE, token, None, https(&headers)),
            );
            h.append(
                header::SET_COOKIE,
                set_cookie(LOGIN_COOKIE, "", Some(0), https(&headers)),
            );
            resp
        }
        Err(ApiError::Unauthorized(_)) => again(
            StatusCode::UNAUTHORIZED,
            "That token was not accepted: check it was copied whole, and that it has not been revoked.",
        ),
        Err(e) => again(
            e.status_code(),
            "The token could not be checked right now (the database is not reachable). Try again shortly.",
        ),
    }
}

/// `POST /logout`: forgets the session cookie.
pub async fn logout(session: Session, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refused) = post_refused(&headers, &session, &form(&body)) {
        return refused;
    }
    let mut resp = see_other("/login?why=signed_out");
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", Some(0), https(&headers)),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_only_ever_one_of_our_pages() {
        assert_eq!(safe_next(Some("/alerts?range=7d")), "/alerts?range=7d");
        assert_eq!(safe_next(Some("/budgets/abc/edit")), "/budgets/abc/edit");
        for bad in [
            "//evil.example/x",
            "https://evil.example",
            "/api/v1/keys",
            "/overviewx",
            "/alerts\r\nx",
        ] {
            assert_eq!(safe_next(Some(bad)), "/overview", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/overview");
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("x_tg_session=no; tg_session=tga_abc; other=1"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("tga_abc"));
        assert_eq!(cookie(&h, "missing"), None);
    }

    #[test]
    fn cross_site_posts_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("dash.example:8080"));
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://dash.example:8080"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h));
        // Behind a proxy that rewrites Host, the host the browser used is X-Forwarded-Host.
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://dash.example.com"),
        );
        assert!(!same_origin(&h));
        h.insert(
            "x-forwarded-host",
            HeaderValue::from_static("dash.example.com"),
        );
        assert!(same_origin(&h));
        h.remove(header::ORIGIN);
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&h));
    }

    #[test]
    fn csrf_tokens_differ_per_session_and_hide_the_token() {
        let a = csrf_token("tga_a");
        assert_ne!(a, csrf_token("tga_b"));
        assert!(!a.contains("tga_a"));
        assert!(same(&a, &csrf_token("tga_a")) && !same(&a, "x"));
    }
}
