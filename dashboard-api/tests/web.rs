//! The web dashboard over HTTP (no browser): sign-in and its cookie, CSRF and origin checks,
//! every tab's figures against the API's for the same token, what each role sees and may do,
//! escaping of caller-chosen strings, designed error states, and the assets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

mod common;
mod web_support;

use chrono::{Timelike, Utc};
use std::collections::BTreeMap;

use axum::http::StatusCode;
use common::Env;
use serde_json::Value;
use tollgate_dashboard_api::web::fmt;
use web_support::{attr_after, csrf_of, page, request, seed, GLOBEX_MARK};

fn location(h: &axum::http::HeaderMap) -> String {
    h.get("location").unwrap().to_str().unwrap().to_string()
}

fn set_cookies(h: &axum::http::HeaderMap) -> Vec<String> {
    h.get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// `data-card="key"` … `<data value="…">shown</data>`: the exact value and the shown text.
fn card(html: &str, key: &str) -> (String, String) {
    let at = html
        .find(&format!("data-card=\"{key}\""))
        .unwrap_or_else(|| panic!("no card {key}"));
    let rest = &html[at..];
    let v = attr_after(rest, "<data value=", "value").unwrap();
    let start = rest.find("<data value=").unwrap();
    let gt = rest[start..].find('>').unwrap() + start + 1;
    let end = rest[gt..].find("</data>").unwrap() + gt;
    (v, rest[gt..end].to_string())
}

#[tokio::test]
async fn signing_in_sets_a_strict_http_only_cookie_and_goes_back() {
    let env = Env::new().await;
    // Not signed in: every tab sends the browser to sign in, remembering where it was going.
    let (s, h, _) = request(&env, "GET", "/alerts?range=7d", None, &[], None).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(location(&h), "/login?next=%2Falerts%3Frange%3D7d");
    let (s, h, _) = request(&env, "GET", "/", None, &[], None).await;
    assert_eq!(
        (s, location(&h)),
        (StatusCode::SEE_OTHER, "/overview".into())
    );

    let (s, h, body) = request(&env, "GET", "/login?next=%2Falerts", None, &[], None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("name=\"token\"") && body.contains("type=\"password\""));
    let nonce = attr_after(&body, "name=\"nonce\"", "value").unwrap();
    let login_cookie = format!("tg_login={nonce}");
    assert!(set_cookies(&h)[0].contains("HttpOnly; SameSite=Strict"));

    // Without the nonce cookie (a cross-site form), nothing happens.
    let (s, _, _) = request(
        &env,
        "POST",
        "/login",
        None,
        &[],
        Some(&[
            ("nonce", &nonce),
            ("token", &env.admin),
            ("next", "/alerts"),
        ]),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // A wrong token is refused with the form again.
    let (s, _, body) = request(
        &env,
        "POST",
        "/login",
        None,
        &[("cookie", &login_cookie)],
        Some(&[
            ("nonce", &nonce),
            ("token", "tga_wrong"),
            ("next", "/alerts"),
        ]),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(body.contains("was not accepted") && body.contains("aria-invalid=\"true\""));
    // The right one: the cookie, and back to where the browser was going.
    let (s, h, _) = request(
        &env,
        "POST",
        "/login",
        None,
        &[("cookie", &login_cookie), ("origin", "http://dash.test")],
        Some(&[
            ("nonce", &nonce),
            ("token", &env.admin),
            ("next", "/alerts"),
        ]),
    )
    .await;
    assert_eq!((s, location(&h)), (StatusCode::SEE_OTHER, "/alerts".into()));
    let session = set_cookies(&h)
        .into_iter()
        .find(|c| c.starts_with("tg_session="))
        .unwrap();
    assert_eq!(
        session,
        format!(
            "tg_session={}; Path=/; HttpOnly; SameSite=Strict",
            env.admin
        )
    );
    // Behind an HTTPS proxy the cookie is Secure; an open redirect is not possible.
    let (_, h, _) = request(
        &env,
        "POST",
        "/login",
        None,
        &[("cookie", &login_cookie), ("x-forwarded-proto", "https")],
        Some(&[
            ("nonce", &nonce),
            ("token", &env.admin),
            ("next", "https://evil.example/"),
        ]),
    )
    .await;
    assert_eq!(location(&h), "/overview");
    assert!(set_cookies(&h)
        .iter()
        .any(|c| c.starts_with("tg_session=") && c.ends_with("; Secure")));

    // Signing out needs the session's CSRF token, and clears the cookie.
    let (_, overview) = page(&env, "/overview", &env.admin).await;
    let csrf = csrf_of(&overview);
    let (s, _, _) = request(
        &env,
        "POST",
        "/logout",
        Some(&env.admin),
        &[],
        Some(&[("csrf", "nope")]),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, h, _) = request(
        &env,
        "POST",
        "/logout",
        Some(&env.admin),
        &[],
        Some(&[("csrf", &csrf)]),
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert!(set_cookies(&h)
        .iter()
        .any(|c| c.starts_with("tg_session=;") && c.contains("Max-Age=0")));

    // A session whose token is not (or no longer) valid goes back to sign-in.
    let (s, h, _) = request(&env, "GET", "/overview", Some("tga_revoked"), &[], None).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert!(location(&h).contains("why=expired"));
}

/// #25 (1): the 24h view counts the calls of the last 24 hours, to the second — SQL over
/// `usage_events` for the window the page asked for is the reference (it once answered the two
/// UTC days those hours touch).
#[tokio::test]
async fn the_24h_view_counts_exactly_the_last_24_hours() {
    let env = Env::new().await;
    seed(&env).await;
    let (s, html) = page(&env, "/overview?range=24h", &env.admin).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    let api_query = attr_after(&html, "<main", "data-api-query").unwrap();
    let params: BTreeMap<String, String> = form_urlencoded::parse(api_query.as_bytes())
        .into_owned()
        .collect();
    let sql_time = |t: &str| t.trim_end_matches('Z').replace('T', " ");
    let (from, to) = (sql_time(&params["from"]), sql_time(&params["to"]));
    // (Whether the touched days hold calls outside the 24 hours depends on the time of day the
    // test runs; the analytics suite's random windows always include such cases.)
    let inside: u64 = env
        .db
        .client()
        .query(
            "SELECT count() FROM usage_events \
             WHERE ts >= toDateTime(?, 'UTC') AND ts < toDateTime(?, 'UTC')",
        )
        .bind(&from)
        .bind(&to)
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(
        card(&html, "requests").0,
        inside.to_string(),
        "{from} – {to}"
    );
}

#[tokio::test]
async fn every_tab_shows_the_apis_figures_for_the_same_token() {
    let env = Env::new().await;
    seed(&env).await;
    for (token, who) in [
        (&env.admin, "admin"),
        (&env.acme_viewer, "acme viewer"),
        (&env.alice, "alice"),
    ] {
        for q in [
            "",
            "range=7d",
            "range=24h&provider=openrouter",
            "from=2020-01-01&to=2020-01-05",
        ] {
            let (s, html) = page(&env, &format!("/overview?{q}"), token).await;
            assert_eq!(s, StatusCode::OK, "{who} {q}: {html}");
            let api_query = attr_after(&html, "<main", "data-api-query").unwrap();
            let (s, api) = env
                .get(&format!("/api/v1/overview?{api_query}"), token)
                .await;
            assert_eq!(s, StatusCode::OK);
            let cur = &api["current"];
            let prev = &api["previous"];
            let expect = [
                (
                    "requests",
                    cur["requests"].to_string(),
                    fmt::count(cur["requests"].as_u64().unwrap()),
                ),
                (
                    "cost",
                    cur["cost_usd"].as_str().unwrap().to_string(),
                    fmt::usd(cur["cost_usd"].as_str().unwrap()),
                ),
                (
                    "tokens",
                    cur["total_tokens"].to_string(),
                    fmt::count(cur["total_tokens"].as_u64().unwrap()),
                ),
                (
                    "alerts",
                    api["open_alerts"].to_string(),
                    fmt::count(api["open_alerts"].as_u64().unwrap()),
                ),
                (
                    "unpriced",
                    cur["unpriced_requests"].to_string(),
                    fmt::count(cur["unpriced_requests"].as_u64().unwrap()),
                ),
            ];
            for (key, exact, shown) in expect {
                assert_eq!(card(&html, key), (exact, shown), "{who} {q}: card {key}");
            }
            // The change is against the API's previous period.
            let at = html.find("data-card=\"requests\"").unwrap();
            assert_eq!(
                attr_after(&html[at..], "class=\"prev\"", "value").unwrap(),
                prev["requests"].to_string()
            );
        }
    }
    // The other tabs render for every role.
    for token in [&env.admin, &env.acme_admin, &env.acme_viewer, &env.alice] {
        for tab in ["providers", "alerts", "projections", "budgets"] {
            let (s, html) = page(&env, &format!("/{tab}?range=7d"), token).await;
            assert_eq!(s, StatusCode::OK, "{tab}: {html}");
            assert!(html.contains(&format!("data-tab=\"{tab}\"")));
        }
    }
    // Projections: the month-end card is the API's.
    let (_, html) = page(&env, "/projections", &env.acme_viewer).await;
    let api_query = attr_after(&html, "<main", "data-api-query").unwrap();
    let (_, api) = env
        .get(
            &format!("/api/v1/projections?{api_query}"),
            &env.acme_viewer,
        )
        .await;
    assert_eq!(
        card(&html, "month-end").0,
        api["month_end"]["total_usd"].as_str().unwrap()
    );
    assert!(html.contains("id=\"forecast-chart-title\""));
}

#[tokio::test]
async fn viewers_see_only_their_org_and_no_edit_controls() {
    let env = Env::new().await;
    let seeded = seed(&env).await;
    let mut seen = BTreeMap::new();
    for tab in ["overview", "providers", "alerts", "projections", "budgets"] {
        let (s, html) = page(&env, &format!("/{tab}?range=90d"), &env.acme_viewer).await;
        assert_eq!(s, StatusCode::OK);
        assert!(
            !html.to_lowercase().contains(GLOBEX_MARK),
            "{tab} shows globex data"
        );
        assert!(
            !html.contains("/acknowledge\"") && !html.contains("/resolve\""),
            "{tab}"
        );
        assert!(
            !html.contains("href=\"/budgets/new\"") && !html.contains("data-edit"),
            "{tab}"
        );
        seen.insert(tab, html);
    }
    // ...but does see its own org's alerts and budgets.
    assert!(seen["alerts"].contains(&seeded.acme_critical.to_string()));
    assert!(seen["budgets"].contains("Acme monthly"));
    // Admins see globex and have the controls.
    let (_, html) = page(&env, "/alerts", &env.admin).await;
    assert!(html.contains("Globex spend spike"));
    assert!(html.contains(&format!("/alerts/{}/acknowledge", seeded.globex_alert)));
    let (_, html) = page(&env, "/budgets", &env.acme_admin).await;
    assert!(html.contains("href=\"/budgets/new\"") && html.contains("data-edit"));
    assert!(!html.contains("Globex monthly"));
    // Viewers cannot reach the forms either.
    let (s, _) = page(&env, "/budgets/new", &env.acme_viewer).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let csrf = csrf_of(&seen["budgets"]);
    let (s, _, _) = request(
        &env,
        "POST",
        "/budgets",
        Some(&env.acme_viewer),
        &[],
        Some(&[
            ("csrf", &csrf),
            ("name", "x"),
            ("scope", "org"),
            ("period", "daily"),
            ("limit_usd", "1"),
            ("mode", "soft"),
        ]),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // A user-bound viewer sees no alerts, and is told why.
    let (_, html) = page(&env, "/alerts", &env.alice).await;
    assert!(html.contains("a token bound to one user sees none"));
}

#[tokio::test]
async fn acknowledging_needs_the_sessions_csrf_token_and_records_who() {
    let env = Env::new().await;
    let seeded = seed(&env).await;
    let id = seeded.acme_critical.to_string();
    let (_, html) = page(&env, "/alerts?range=7d", &env.acme_admin).await;
    let csrf = csrf_of(&html);
    let ack = format!("/alerts/{id}/acknowledge");
    // No token, another session's token, or another site's page: refused, nothing changes.
    let other = csrf_of(&page(&env, "/alerts", &env.admin).await.1);
    for (fields, headers) in [
        (vec![("back", "range=7d")], vec![]),
        (vec![("csrf", other.as_str())], vec![]),
        (
            vec![("csrf", csrf.as_str())],
            vec![("origin", "https://evil.example")],
        ),
        (
            vec![("csrf", csrf.as_str())],
            vec![("sec-fetch-site", "cross-site")],
        ),
    ] {
        let (s, _, _) = request(
            &env,
            "POST",
            &ack,
            Some(&env.acme_admin),
            &headers,
            Some(&fields),
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
    }
    let (_, open) = env.get("/api/v1/alerts?state=open", &env.acme_admin).await;
    assert!(open.to_string().contains(&id));
    // The real form: acknowledged by this token, back to the same filters.
    let (s, h, _) = request(
        &env,
        "POST",
        &ack,
        Some(&env.acme_admin),
        &[
            ("origin", "http://dash.test"),
            ("sec-fetch-site", "same-origin"),
        ],
        Some(&[("csrf", &csrf), ("back", "range=7d")]),
    )
    .await;
    assert_eq!(
        (s, location(&h)),
        (
            StatusCode::SEE_OTHER,
            "/alerts?range=7d&notice=acknowledged".into()
        )
    );
    let (_, acked) = env
        .get("/api/v1/alerts?state=acknowledged", &env.acme_admin)
        .await;
    let a = acked
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["alert_id"] == Value::String(id.clone()))
        .unwrap();
    assert!(a["acknowledged_by"]
        .as_str()
        .unwrap()
        .starts_with("acme admin"));
    let (_, html) = page(
        &env,
        "/alerts?range=7d&notice=acknowledged",
        &env.acme_admin,
    )
    .await;
    assert!(html.contains("Alert acknowledged."));
    assert!(html.contains(&format!(
        "id=\"alert-{id}\" data-alert-id=\"{id}\" data-state=\"acknowledged\""
    )));
    // Resolving it; resolving again is a conflict, said as such.
    let resolve = format!("/alerts/{id}/resolve");
    let (_, h, _) = request(
        &env,
        "POST",
        &resolve,
        Some(&env.acme_admin),
        &[],
        Some(&[("csrf", &csrf)]),
    )
    .await;
    assert_eq!(location(&h), "/alerts?notice=resolved");
    let (_, h, _) = request(
        &env,
        "POST",
        &resolve,
        Some(&env.acme_admin),
        &[],
        Some(&[("csrf", &csrf)]),
    )
    .await;
    assert_eq!(location(&h), "/alerts?notice=conflict");
    // Another org's alert is not found for an org admin.
    let (_, h, _) = request(
        &env,
        "POST",
        &format!("/alerts/{}/acknowledge", seeded.globex_alert),
        Some(&env.acme_admin),
        &[],
        Some(&[("csrf", &csrf)]),
    )
    .await;
    assert_eq!(location(&h), "/alerts?notice=not_found");
}

#[tokio::test]
async fn budgets_are_created_and_edited_through_the_apis_validation() {
    let env = Env::new().await;
    let seeded = seed(&env).await;
    let (s, html) = page(&env, "/budgets/new", &env.acme_admin).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        !html.contains("name=\"org_id\""),
        "org admins write only their own org"
    );
    let csrf = csrf_of(&html);
    let mut fields = vec![
        ("csrf", csrf.as_str()),
        ("name", "Bot weekly"),
        ("scope", "app"),
        ("app_id", "support-bot"),
        ("user_id", "left over from another choice"),
        ("period", "weekly"),
        ("limit_usd", "-5"),
        ("soft_thresholds", "50, 90"),
        ("mode", "hard"),
        ("enabled", "1"),
    ];
    // The API's own message, next to the field, with what was typed kept.
    let (s, _, html) = request(
        &env,
        "POST",
        "/budgets",
        Some(&env.acme_admin),
        &[],
        Some(&fields),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(html.contains("id=\"limit_usd-error\""), "{html}");
    assert!(html.contains("value=\"Bot weekly\""));
    fields[6] = ("limit_usd", "75");
    let (s, h, _) = request(
        &env,
        "POST",
        "/budgets",
        Some(&env.acme_admin),
        &[],
        Some(&fields),
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert!(location(&h).starts_with("/budgets?notice=created#budget-"));
    let (_, list) = env.get("/api/v1/budgets", &env.acme_admin).await;
    let b = list
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "Bot weekly")
        .unwrap();
    assert_eq!(
        (
            b["scope"].as_str(),
            b["app_id"].as_str(),
            b["limit_usd"].as_str(),
            b["mode"].as_str()
        ),
        (
            Some("app"),
            Some("support-bot"),
            Some("75.000000000"),
            Some("hard")
        )
    );
    assert_eq!(b["soft_thresholds"], serde_json::json!([50, 90]));

    // Editing: the form is filled in; saving replaces the budget.
    let edit = format!("/budgets/{}/edit", seeded.acme_budget);
    let (s, html) = page(&env, &edit, &env.acme_admin).await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("value=\"Acme monthly\"") && html.contains("value=\"200\""));
    let (s, _, _) = request(
        &env,
        "POST",
        &edit,
        Some(&env.acme_admin),
        &[],
        Some(&[
            ("csrf", &csrf),
            ("name", "Acme monthly"),
            ("scope", "org"),
            ("period", "monthly"),
            ("limit_usd", "250.5"),
            ("soft_thresholds", ""),
            ("mode", "soft"),
        ]),
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (_, b) = env
        .get(
            &format!("/api/v1/budgets/{}", seeded.acme_budget),
            &env.acme_admin,
        )
        .await;
    assert_eq!(
        (b["limit_usd"].as_str(), b["enabled"].as_bool()),
        (Some("250.500000000"), Some(false))
    );
    assert_eq!(b["soft_thresholds"], serde_json::json!([]));
    // Another org's budget cannot even be opened.
    let (_, globex) = env.get("/api/v1/budgets", &env.globex_admin).await;
    let gid = globex[0]["budget_id"].as_str().unwrap();
    let (s, _) = page(&env, &format!("/budgets/{gid}/edit"), &env.acme_admin).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // The list shows use against the limit, as the status endpoint computes it.
    let (_, html) = page(&env, "/budgets", &env.acme_admin).await;
    let (_, status) = env
        .get(
            &format!("/api/v1/budgets/{}/status", seeded.acme_budget),
            &env.acme_admin,
        )
        .await;
    let at = html
        .find(&format!("data-budget-id=\"{}\"", seeded.acme_budget))
        .unwrap();
    assert_eq!(
        attr_after(&html[at..], "<data value=", "value").unwrap(),
        status["spent_usd"].as_str().unwrap()
    );
}

#[tokio::test]
async fn caller_chosen_strings_are_escaped_and_errors_are_designed() {
    let env = Env::new().await;
    seed(&env).await;
    // A model name and an alert title chosen by someone hostile.
    let evil = "<img src=x onerror=alert(1)>";
    let (s, _) = env
        .call(
            "POST",
            "/api/v1/budgets",
            Some(&env.acme_admin),
            Some(serde_json::json!({"name": evil, "scope": "org", "period": "daily", "limit_usd": "1", "mode": "soft"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, html) = page(&env, "/budgets", &env.acme_admin).await;
    assert!(!html.contains(evil));
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));

    // Filters the API refuses: a 400 page with the API's message and a way out.
    let (s, html) = page(&env, "/overview?from=2026-02-10&to=2026-02-01", &env.admin).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(html.contains("role=\"alert\"") && html.contains("`from` must be before `to`"));
    assert!(html.contains("Reset filters"));
    let (s, html) = page(&env, "/providers?provider=azure", &env.admin).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(html.contains("unknown provider"));
    // Another org, asked for by a non-admin: refused, not empty.
    let (s, _) = page(&env, "/overview?org=globex", &env.acme_viewer).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // No data at all: the designed empty states.
    let (s, html) = page(&env, "/overview?from=2020-01-01&to=2020-01-05", &env.admin).await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("No usage in this period"));
}

#[tokio::test]
async fn pages_are_private_and_assets_are_embedded() {
    let env = Env::new().await;
    let (s, h, html) = request(&env, "GET", "/overview", Some(&env.admin), &[], None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
    assert!(
        !html.contains("style=\"") && !html.contains("<script>"),
        "inline style or script"
    );
    for (path, ty) in [
        ("/assets/app.css", "text/css"),
        ("/assets/app.js", "text/javascript"),
        ("/assets/favicon.svg", "image/svg+xml"),
    ] {
        assert!(html.contains(path), "the page does not link {path}");
        let (s, h, body) = request(&env, "GET", path, None, &[], None).await;
        assert_eq!(s, StatusCode::OK);
        assert!(h["content-type"].to_str().unwrap().starts_with(ty));
        assert!(h["cache-control"].to_str().unwrap().contains("immutable"));
        assert!(body.len() > 100);
    }
}

/// #19 (5): the delivery log is in the API and on the Alerts tab, per org: acme's admin sees
/// acme's attempts (why the Slack channel failed), not globex's.
#[tokio::test]
async fn the_alerts_tab_shows_the_notification_delivery_log() {
    use tollgate_clickhouse::alerts::{write_delivery, DeliveryRow};
    let env = Env::new().await;
    let now = Utc::now().with_nanosecond(0).unwrap();
    let row = |org: &str, channel: &str, status: &str, error: &str| DeliveryRow {
        delivery_id: uuid::Uuid::new_v4(),
        org_id: org.into(),
        rule_id: uuid::Uuid::new_v4(),
        alert_id: uuid::Uuid::new_v4(),
        event: "alert.opened".into(),
        channel: channel.into(),
        attempt: 1,
        status: status.into(),
        http_status: 200,
        error: error.into(),
        duration_ms: 12,
        attempted_at: now,
    };
    for r in [
        row("acme", "email:ops@acme.example", "delivered", ""),
        row(
            "acme",
            "slack:#missing",
            "gave_up",
            "Slack: channel_not_found",
        ),
        row(
            "globex",
            "webhook:https://globex.example/…",
            "delivered",
            "",
        ),
    ] {
        write_delivery(env.db.client(), &r).await.unwrap();
    }
    let (s, api) = env
        .get("/api/v1/notification-deliveries", &env.acme_admin)
        .await;
    assert_eq!(s, StatusCode::OK, "{api}");
    let channels: Vec<&str> = api
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["channel"].as_str().unwrap())
        .collect();
    assert_eq!(channels.len(), 2, "{api}");
    assert!(channels.contains(&"slack:#missing") && !channels.iter().any(|c| c.contains("globex")));
    let (s, all) = env
        .get("/api/v1/notification-deliveries?limit=10", &env.admin)
        .await;
    assert_eq!((s, all.as_array().unwrap().len()), (StatusCode::OK, 3));
    assert_eq!(
        env.get("/api/v1/notification-deliveries?limit=0", &env.admin)
            .await
            .0,
        StatusCode::BAD_REQUEST
    );

    let (s, html) = page(&env, "/alerts", &env.acme_admin).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(
        html.contains("id=\"deliveries-table\"") || html.contains("deliveries-table"),
        "{html}"
    );
    assert!(
        html.contains("slack:#missing") && html.contains("channel_not_found"),
        "{html}"
    );
    assert!(!html.contains("globex.example"), "another org's deliveries");
}

/// The live tabs (web/live.rs): the page carries its ETag in a header and in the marker
/// app.js polls by; asking again with it is a bodiless 304 until something the page shows
/// changes — a new call of the org, a new alert — and then the page again with a new ETag.
/// Another session's ETag never matches, and tabs that are not live carry none.
#[tokio::test]
async fn live_tabs_answer_304_until_their_data_changes() {
    use tollgate_clickhouse::alerts::{write_alert, AlertRow, NewAlert};
    let env = Env::new().await;
    seed(&env).await;
    let get = |uri: &'static str, token: String, etag: Option<String>| {
        let env = &env;
        async move {
            let headers: Vec<(&str, &str)> = match &etag {
                Some(t) => vec![("if-none-match", t.as_str())],
                None => Vec::new(),
            };
            let (s, h, body) = request(env, "GET", uri, Some(&token), &headers, None).await;
            let tag = h.get("etag").map(|v| v.to_str().unwrap().to_string());
            (s, tag, body)
        }
    };
    for uri in ["/overview?range=7d", "/alerts"] {
        let (s, tag, body) = get(uri, env.acme_admin.clone(), None).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let tag = tag.expect("a live tab has an ETag");
        assert!(tag.starts_with("W/\""), "{tag}");
        assert_eq!(
            attr_after(&body, "data-live-etag", "data-live-etag").as_deref(),
            Some(tag.replace('"', "&quot;").as_str()),
            "the marker carries the header's ETag"
        );
        let (s, again, body) = get(uri, env.acme_admin.clone(), Some(tag.clone())).await;
        assert_eq!((s, body.as_str()), (StatusCode::NOT_MODIFIED, ""), "{uri}");
        assert_eq!(again.as_deref(), Some(tag.as_str()));
        // The same ETag from another session (another token of the org) is not its page.
        let (s, _, _) = get(uri, env.acme_viewer.clone(), Some(tag.clone())).await;
        assert_eq!(s, StatusCode::OK, "{uri}");
    }

    // A new call of acme changes the Overview's ETag; a call of globex does not.
    let (_, overview, _) = get("/overview?range=7d", env.acme_admin.clone(), None).await;
    let overview = overview.unwrap();
    let one = |org: &str| {
        let mut r = web_support::records(1).remove(0);
        r.org_id = org.into();
        r.event_id = uuid::Uuid::new_v4();
        r.ts = Utc::now();
        tollgate_clickhouse::UsageEventRow::from_record(&r, "live", Utc::now())
    };
    tollgate_clickhouse::insert_events(env.db.client(), &[one("globex")])
        .await
        .unwrap();
    let (s, _, _) = get(
        "/overview?range=7d",
        env.acme_admin.clone(),
        Some(overview.clone()),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::NOT_MODIFIED,
        "another org's call is not acme's news"
    );
    tollgate_clickhouse::insert_events(env.db.client(), &[one("acme")])
        .await
        .unwrap();
    let (s, newer, _) = get(
        "/overview?range=7d",
        env.acme_admin.clone(),
        Some(overview.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_ne!(newer.unwrap(), overview);

    // A new alert of acme changes the Alerts tab's ETag.
    let (_, alerts, _) = get("/alerts", env.acme_admin.clone(), None).await;
    let alerts = alerts.unwrap();
    let now = Utc::now().with_nanosecond(0).unwrap();
    let row = AlertRow::open(
        NewAlert {
            alert_id: uuid::Uuid::new_v4(),
            org_id: "acme".into(),
            rule_id: uuid::Uuid::new_v4(),
            kind: "error_rate".into(),
            severity: "high".into(),
            dedup_key: "live-test".into(),
            title: "Live alert".into(),
            details: "{}".into(),
        },
        now,
        tollgate_clickhouse::row_version(),
    );
    write_alert(env.db.client(), &[row]).await.unwrap();
    let (s, newer, body) = get("/alerts", env.acme_admin.clone(), Some(alerts.clone())).await;
    assert_eq!(s, StatusCode::OK);
    assert_ne!(newer.unwrap(), alerts);
    assert!(body.contains("Live alert"), "{body}");

    // Tabs that are not live have no ETag and no marker.
    let (s, tag, body) = get("/providers", env.acme_admin.clone(), None).await;
    assert_eq!((s, tag), (StatusCode::OK, None));
    assert!(!body.contains("data-live-etag"));
}

/// The Keys tab: an org admin makes a key through the form (refused input is shown beside its
/// field with what was typed kept), sees its secret once — on the answer to the form only —
/// and revokes it; viewers see the list without controls; another org cannot revoke it.
#[tokio::test]
async fn keys_are_made_shown_once_and_revoked_in_the_keys_tab() {
    let env = Env::new().await;
    let (s, html) = page(&env, "/keys", &env.acme_admin).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(html.contains("No app keys yet"), "{html}");
    assert!(
        !html.contains("name=\"org_id\""),
        "org admins make keys of their own org"
    );
    let csrf = csrf_of(&html);
    let mut fields = vec![
        ("csrf", csrf.as_str()),
        ("name", "Support bot"),
        ("app_id", ""),
        ("user_id", ""),
        ("acts_for_end_users", "1"),
    ];
    let (s, _, html) = request(
        &env,
        "POST",
        "/keys",
        Some(&env.acme_admin),
        &[],
        Some(&fields),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{html}");
    assert!(html.contains("id=\"app_id-error\""), "{html}");
    assert!(
        html.contains("value=\"Support bot\""),
        "what was typed is kept"
    );
    assert!(!html.contains("id=\"new-secret\""));

    fields[2] = ("app_id", "support-bot");
    let (s, _, html) = request(
        &env,
        "POST",
        "/keys",
        Some(&env.acme_admin),
        &[],
        Some(&fields),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{html}");
    let secret = attr_after(&html, "id=\"new-secret\"", "value").expect("the secret is shown");
    assert!(secret.starts_with("tg_") && secret.len() == 67, "{secret}");
    let key_id = attr_after(&html, "id=\"new-secret\"", "data-key-id").unwrap();
    // It is the key the API lists, made as the form said, and works at the edge's lookup.
    let (_, api) = env.get("/api/v1/keys", &env.acme_admin).await;
    let k = api
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"] == key_id.as_str())
        .unwrap_or_else(|| panic!("{api}"));
    assert_eq!(
        (
            k["org_id"].as_str(),
            k["app_id"].as_str(),
            k["acts_for_end_users"].as_bool()
        ),
        (Some("acme"), Some("support-bot"), Some(true))
    );
    let stored: u64 = env
        .db
        .keys_client()
        .query("SELECT count() FROM app_keys WHERE key_hash = ?")
        .bind(usage_core::keys::hash_secret(&secret))
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(stored, 1);
    // Shown once: the list never carries it again.
    let (_, html) = page(&env, "/keys", &env.acme_admin).await;
    assert!(!html.contains(&secret));
    assert!(
        html.contains(&format!("data-key-id=\"{key_id}\" data-state=\"active\"")),
        "{html}"
    );

    // A viewer sees the key, and no form or button.
    let (_, html) = page(&env, "/keys", &env.acme_viewer).await;
    assert!(
        html.contains(&key_id)
            && !html.contains("id=\"create-key\"")
            && !html.contains("data-action=\"revoke\"")
    );
    // Another org's admin cannot revoke it.
    let (_, gl) = page(&env, "/keys", &env.globex_admin).await;
    let globex_csrf = csrf_of(&gl);
    let (s, _, _) = request(
        &env,
        "POST",
        &format!("/keys/{key_id}/revoke"),
        Some(&env.globex_admin),
        &[],
        Some(&[("csrf", globex_csrf.as_str())]),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Without the session's CSRF token nothing happens.
    let (s, _, _) = request(
        &env,
        "POST",
        &format!("/keys/{key_id}/revoke"),
        Some(&env.acme_admin),
        &[],
        Some(&[("csrf", "forged")]),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, h, _) = request(
        &env,
        "POST",
        &format!("/keys/{key_id}/revoke"),
        Some(&env.acme_admin),
        &[],
        Some(&[("csrf", csrf.as_str())]),
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(location(&h), "/keys?notice=revoked");
    let (_, html) = page(&env, "/keys?notice=revoked", &env.acme_admin).await;
    assert!(html.contains("Key revoked"));
    assert!(
        html.contains(&format!("data-key-id=\"{key_id}\" data-state=\"revoked\"")),
        "{html}"
    );
}

/// Alert rules in the web dashboard: a form per kind (the API's refusal beside the field it
/// names, what was typed kept), create, edit, test send, the rule's delivery log, delete;
/// viewers read, other orgs see nothing.
#[tokio::test]
async fn alert_rules_are_made_edited_tested_and_deleted_in_the_dashboard() {
    use tollgate_clickhouse::alerts::{write_delivery, DeliveryRow};
    let env = Env::new().await;
    let (s, html) = page(&env, "/alerts/rules/new?kind=error_rate", &env.acme_admin).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    for field in [
        "p_threshold_percent",
        "p_window_minutes",
        "p_min_requests",
        "p_provider",
        "p_model",
    ] {
        assert!(
            html.contains(&format!("name=\"{field}\"")),
            "{field}: {html}"
        );
    }
    assert!(
        !html.contains("name=\"p_threshold_usd\""),
        "only the kind's own fields"
    );
    let csrf = csrf_of(&html);
    let mut fields = vec![
        ("csrf", csrf.as_str()),
        ("kind", "error_rate"),
        ("name", "Errors on OpenAI"),
        ("p_threshold_percent", "150"),
        ("p_window_minutes", "15"),
        ("p_provider", "openai"),
        ("severity", "high"),
        ("channels", "dashboard"),
        ("enabled", "1"),
    ];
    let (s, _, html) = request(
        &env,
        "POST",
        "/alerts/rules",
        Some(&env.acme_admin),
        &[],
        Some(&fields),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{html}");
    assert!(html.contains("id=\"p_threshold_percent-error\""), "{html}");
    assert!(
        html.contains("value=\"Errors on OpenAI\""),
        "what was typed is kept"
    );
    fields[3] = ("p_threshold_percent", "10");
    let (s, h, _) = request(
        &env,
        "POST",
        "/alerts/rules",
        Some(&env.acme_admin),
        &[],
        Some(&fields),
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let to = location(&h);
    assert!(
        to.starts_with("/alerts/rules/") && to.ends_with("?notice=created"),
        "{to}"
    );
    let id = to["/alerts/rules/".len()..to.len() - "?notice=created".len()].to_string();
    let (_, rule) = env
        .get(&format!("/api/v1/alert-rules/{id}"), &env.acme_admin)
        .await;
    assert_eq!(rule["kind"], "error_rate");
    assert_eq!(rule["params"]["threshold_percent"], 10.0);
    assert_eq!(rule["params"]["provider"], "openai");
    assert_eq!(
        rule["params"]["min_requests"], 20,
        "the API's default filled in"
    );

    // Edit: the page shows the rule's values; a change is saved.
    let (s, html) = page(&env, &to, &env.acme_admin).await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("Rule created."));
    assert!(
        html.contains("name=\"p_threshold_percent\" value=\"10\""),
        "{html}"
    );
    fields[4] = ("p_window_minutes", "30");
    let (s, h, _) = request(
        &env,
        "POST",
        &format!("/alerts/rules/{id}"),
        Some(&env.acme_admin),
        &[],
        Some(&fields),
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(location(&h), format!("/alerts/rules/{id}?notice=saved"));
    let (_, rule) = env
        .get(&format!("/api/v1/alert-rules/{id}"), &env.acme_admin)
        .await;
    assert_eq!(rule["params"]["window_minutes"], 30);

    // Test send (dashboard only: nothing to deliver, and it says so); the delivery log.
    let (s, _, html) = request(
        &env,
        "POST",
        &format!("/alerts/rules/{id}/test"),
        Some(&env.acme_admin),
        &[],
        Some(&[("csrf", csrf.as_str())]),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(html.contains("id=\"test-result\""), "{html}");
    write_delivery(
        env.db.client(),
        &DeliveryRow {
            delivery_id: uuid::Uuid::new_v4(),
            org_id: "acme".into(),
            rule_id: id.parse().unwrap(),
            alert_id: uuid::Uuid::new_v4(),
            event: "alert.opened".into(),
            channel: "webhook:hooks.acme.example".into(),
            attempt: 2,
            status: "gave_up".into(),
            http_status: 502,
            error: "bad gateway".into(),
            duration_ms: 31,
            attempted_at: Utc::now().with_nanosecond(0).unwrap(),
        },
    )
    .await
    .unwrap();
    let (_, html) = page(&env, &format!("/alerts/rules/{id}"), &env.acme_admin).await;
    assert!(
        html.contains("webhook:hooks.acme.example") && html.contains("bad gateway"),
        "{html}"
    );

    // A viewer reads the rule, with nothing to submit; another org does not see it.
    let (s, html) = page(&env, &format!("/alerts/rules/{id}"), &env.acme_viewer).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        html.contains("Read-only")
            && !html.contains("id=\"save-rule\"")
            && !html.contains("id=\"delete-rule\"")
    );
    let (s, _) = page(&env, "/alerts/rules/new", &env.acme_viewer).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = page(&env, &format!("/alerts/rules/{id}"), &env.globex_admin).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // The Alerts tab links the rule; deleting it goes back there, and it is gone.
    let (_, html) = page(&env, "/alerts", &env.acme_admin).await;
    assert!(
        html.contains(&format!("href=\"/alerts/rules/{id}\"")) && html.contains("id=\"new-rule\"")
    );
    let (s, h, _) = request(
        &env,
        "POST",
        &format!("/alerts/rules/{id}/delete"),
        Some(&env.acme_admin),
        &[],
        Some(&[("csrf", csrf.as_str())]),
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(location(&h), "/alerts?notice=rule_deleted#rules");
    let (s, _) = env
        .get(&format!("/api/v1/alert-rules/{id}"), &env.acme_admin)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// Bill reconciliation: `GET /api/v1/reconciliation` and the Providers tab's panel show
/// recorded against billed per day and provider to admins and operator orgs; other orgs get a
/// 403 from the API and a note on the page, never the deployment's figures.
#[tokio::test]
async fn the_bill_reconciliation_is_shown_to_admins_and_operator_orgs_only() {
    use tollgate_clickhouse::reconciliation::{row, write};
    let mut env = Env::new().await;
    let today = Utc::now().date_naive();
    let now = Utc::now();
    let mut failed = row(
        "openrouter",
        today - chrono::TimeDelta::days(1),
        1,
        1,
        "openrouter_key_usage_daily",
        now,
    );
    failed.reported_nusd = None;
    failed.status = "error".into();
    failed.error = "401 from the provider".into();
    write(
        env.db.client(),
        &[
            row(
                "openai",
                today - chrono::TimeDelta::days(2),
                10_000_000_000,
                10_600_000_000,
                "openai_costs",
                now,
            ),
            row(
                "openai",
                today - chrono::TimeDelta::days(1),
                5_000_000_000,
                5_000_000_000,
                "openai_costs",
                now,
            ),
            failed,
        ],
    )
    .await
    .unwrap();
    let (s, all) = env.get("/api/v1/reconciliation?range=7d", &env.admin).await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "only the analytics parameters: {all}"
    );
    let (s, all) = env.get("/api/v1/reconciliation", &env.admin).await;
    assert_eq!(s, StatusCode::OK, "{all}");
    let all = all.as_array().unwrap().clone();
    assert_eq!(all.len(), 3, "{all:?}");
    let drifted = all
        .iter()
        .find(|r| r["billed_usd"] == "10.600000000")
        .unwrap();
    assert_eq!(drifted["recorded_usd"], "10.000000000");
    assert!(
        (drifted["drift_percent"].as_f64().unwrap() - 5.660377).abs() < 1e-4,
        "{drifted}"
    );
    let unread = all.iter().find(|r| r["provider"] == "openrouter").unwrap();
    assert_eq!(
        (unread["billed_usd"].is_null(), unread["error"].as_str()),
        (true, Some("401 from the provider"))
    );
    let (_, one) = env
        .get("/api/v1/reconciliation?provider=openrouter", &env.admin)
        .await;
    assert_eq!(one.as_array().unwrap().len(), 1);

    let (s, body) = env.get("/api/v1/reconciliation", &env.acme_admin).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    let (_, html) = page(&env, "/providers", &env.acme_admin).await;
    assert!(
        html.contains("The bills are the deployment") && !html.contains("reconciliation-table")
    );
    let (_, html) = page(&env, "/providers", &env.admin).await;
    assert!(html.contains("id=\"reconciliation-table\""), "{html}");
    assert!(
        html.contains("+5.66%") && html.contains("not read"),
        "{html}"
    );

    // An operator org's tokens see them too.
    let mut config = env.state.config().clone();
    config.evaluator.operator_orgs = vec!["acme".into()];
    env.state = tollgate_dashboard_api::AppState::new(config);
    let (s, _) = env.get("/api/v1/reconciliation", &env.acme_viewer).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = env.get("/api/v1/reconciliation", &env.globex_admin).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}
