//! Live tabs: the Overview and the Alerts tab refresh themselves while they are open.
//!
//! A live page carries a marker (`data-live-etag`, `data-live-every`) that `app.js` reads: every
//! [`REFRESH_SECS`] seconds, while the browser tab is visible (none while it is hidden; one
//! at once when it shows again), it asks for the same URL with `If-None-Match: <etag>`. The
//! server first computes a *fingerprint* of what the page shows — one query of four scalar
//! subqueries over small tables: the org's requests and cost in the window's days
//! (`org_daily`), and the count and newest version of its alerts, its rules and its
//! notification deliveries — and answers `304 Not Modified` (no body, nothing rendered) when
//! the ETag it makes is the one asked with. Otherwise it renders the page as usual, and
//! `app.js` replaces the page's `<main>` in place (scroll kept, focus left alone).
//!
//! The ETag is a digest of the fingerprint, the tab, the query string, the session (its CSRF
//! token, so one person's page never answers another's) and the build. Pages with relative
//! times ("3 min ago") or a rolling range (24 h) change with the clock alone: `app.js` asks
//! without `If-None-Match` once the page it shows is [`REDRAW_SECS`] old, so they are redrawn
//! at most once a minute when nothing else changed. The fingerprint is coarser than some pages (an org's
//! figures, for a token bound to one user): a change elsewhere in the org costs one needless
//! render, never a missed one. When the fingerprint cannot be read the page has no ETag, and
//! each poll renders it (which shows the error, and recovers by itself).

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use tollgate_clickhouse::clickhouse::Row;
use tollgate_clickhouse::queries::day_param;
use tollgate_clickhouse::{read_query, Scope};

use crate::web::html::{esc, Tab};
use crate::web::session::Session;
use crate::AppState;

/// Seconds between two polls of an open live tab.
pub const REFRESH_SECS: u32 = 5;

/// Age in seconds after which an open live tab is redrawn even if its data did not change.
pub const REDRAW_SECS: u32 = 60;

#[derive(Row, Deserialize)]
struct Fingerprint {
    usage: String,
    alerts: String,
    rules: String,
    deliveries: String,
}

/// The ETag of one live page, and whether the browser already has it.
#[derive(Debug)]
pub struct Live {
    etag: Option<String>,
    fresh: bool,
}

impl Live {
    /// Reads the fingerprint of `tab` for this session over `[from, to)`, and compares the
    /// ETag with the request's `If-None-Match`.
    pub async fn check(
        state: &AppState,
        session: &Session,
        tab: Tab,
        raw_query: Option<&str>,
        org: Option<&str>,
        (from, to): (DateTime<Utc>, DateTime<Utc>),
        headers: &HeaderMap,
    ) -> Live {
        let etag = match fingerprint(state, session, org, from, to).await {
            Ok(f) => {
                let basis = format!(
                    "{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
                    tab.path(),
                    raw_query.unwrap_or(""),
                    session.csrf,
                    crate::web::asset_version(),
                    f.usage,
                    f.alerts,
                    f.rules,
                    f.deliveries,
                    env!("CARGO_PKG_VERSION"),
                );
                Some(format!(
                    "W/\"{}\"",
                    &usage_core::keys::hash_secret(&basis)[..20]
                ))
            }
            Err(e) => {
                tracing::warn!(error = %e, "live page fingerprint not read; the page is rendered on each poll");
                None
            }
        };
        let fresh = match (&etag, headers.get(header::IF_NONE_MATCH)) {
            (Some(tag), Some(asked)) => asked
                .to_str()
                .is_ok_and(|a| a.split(',').any(|t| t.trim() == tag)),
            _ => false,
        };
        Live { etag, fresh }
    }

    /// `304 Not Modified` when the browser's copy is current.
    pub fn not_modified(&self) -> Option<Response> {
        let tag = self.etag.as_deref().filter(|_| self.fresh)?;
        let mut resp = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(v) = HeaderValue::from_str(tag) {
            resp.headers_mut().insert(header::ETAG, v);
        }
        Some(resp)
    }

    /// The marker `app.js` polls by, to put in the page's body.
    pub fn marker(&self) -> String {
        format!(
            "<div hidden data-live-etag=\"{}\" data-live-every=\"{REFRESH_SECS}\" \
             data-live-redraw=\"{REDRAW_SECS}\"></div>",
            esc(self.etag.as_deref().unwrap_or(""))
        )
    }

    /// The page's response with its ETag.
    pub fn tag(&self, mut resp: Response) -> Response {
        if let Some(v) = self
            .etag
            .as_deref()
            .and_then(|t| HeaderValue::from_str(t).ok())
        {
            if resp.status() == StatusCode::OK {
                resp.headers_mut().insert(header::ETAG, v);
            }
        }
        resp
    }
}

async fn fingerprint(
    state: &AppState,
    session: &Session,
    org: Option<&str>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Fingerprint, String> {
    let org = match session
        .principal
        .read_scope(org, None)
        .map_err(|e| format!("{e:?}"))?
    {
        Scope::AllOrgs => None,
        Scope::Org { org_id } | Scope::OrgUser { org_id, .. } | Scope::OrgApp { org_id, .. } => {
            Some(org_id)
        }
    };
    let pred = if org.is_some() { "org_id = ?" } else { "1 = 1" };
    let sql = format!(
        "SELECT \
           (SELECT concat(toString(sum(requests)), '/', toString(sum(total_cost_nusd))) \
              FROM org_daily WHERE {pred} AND day >= toDate(?) AND day <= toDate(?)) AS usage, \
           (SELECT concat(toString(count()), '/', toString(max(version))) \
              FROM alerts WHERE {pred}) AS alerts, \
           (SELECT concat(toString(count()), '/', toString(max(version))) \
              FROM alert_rules WHERE {pred}) AS rules, \
           (SELECT toString(count()) FROM notification_deliveries WHERE {pred}) AS deliveries"
    );
    let mut q = read_query(state.client(), &sql);
    if let Some(o) = &org {
        q = q.bind(o.as_str());
    }
    q = q
        .bind(day_param(from.date_naive()))
        .bind(day_param(to.date_naive()));
    for _ in 0..3 {
        if let Some(o) = &org {
            q = q.bind(o.as_str());
        }
    }
    q.fetch_one::<Fingerprint>()
        .await
        .map_err(|e| e.to_string())
}
