//! Shared by the web dashboard tests: a realistic seed (five weeks of usage for two orgs with a
//! weekly rhythm, alerts of every severity and state, budgets, balances) and page requests
//! with a session cookie.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use chrono::{Datelike, TimeDelta, Timelike, Utc};
use http_body_util::BodyExt;
use serde_json::json;
use tollgate_clickhouse::alerts::{write_alert, AlertRow};
use tollgate_clickhouse::UsageEventRow;
use tollgate_dashboard_api::app;
use tower::ServiceExt;
use usage_core::{
    CostSource, Endpoint, ErrorClass, Nanos, UsageRecord, UsageSource, SCHEMA_VERSION,
};
use uuid::Uuid;

use crate::common::Env;

/// A string only globex's data contains: a viewer of acme must never see it.
pub const GLOBEX_MARK: &str = "globex";

/// What the seed created that tests act on.
#[derive(Debug, Clone)]
pub struct Seeded {
    /// acme's open critical alert.
    pub acme_critical: Uuid,
    /// acme's open high alert (about openrouter).
    pub acme_high: Uuid,
    /// globex's open alert.
    pub globex_alert: Uuid,
    pub acme_budget: String,
}

/// One stream of calls: (org, user, app, provider, model, calls on a weekday, cost per call
/// in µUSD, unpriced).
type Stream = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    u32,
    i64,
    bool,
);

const MIX: &[Stream] = &[
    (
        "acme",
        "alice",
        "support-bot",
        "openai",
        "gpt-4o-mini",
        60,
        12_000,
        false,
    ),
    (
        "acme",
        "bob",
        "support-bot",
        "openai",
        "gpt-4o",
        18,
        110_000,
        false,
    ),
    (
        "acme",
        "alice",
        "search",
        "openrouter",
        "anthropic/claude-sonnet-4.5",
        12,
        190_000,
        false,
    ),
    (
        "acme",
        "bob",
        "search",
        "openrouter",
        "google/gemini-2.5-flash",
        20,
        20_000,
        false,
    ),
    (
        "acme",
        "bob",
        "etl",
        "openai",
        "acme-internal-llm",
        4,
        0,
        true,
    ),
    (
        "globex",
        "carol",
        "etl",
        "openai",
        "ft:gpt-4o-mini:globex-secret",
        30,
        50_000,
        false,
    ),
];

pub fn records(days: i64) -> Vec<UsageRecord> {
    let now = Utc::now();
    let today = now.date_naive();
    let mut out = Vec::new();
    let mut n: u64 = 0;
    for back in (0..days).rev() {
        let day = today - TimeDelta::days(back);
        let weekend = day.weekday().num_days_from_monday() >= 5;
        // A gentle upward trend, quieter weekends.
        let scale =
            (0.7 + 0.3 * (days - back) as f64 / days as f64) * if weekend { 0.35 } else { 1.0 };
        for (org, user, app, provider, model, calls, cost_micro, unpriced) in MIX {
            let k = ((f64::from(*calls) * scale).round() as u32).max(1);
            for i in 0..k {
                n += 1;
                let hour = 7 + (i * 5 + n as u32) % 13;
                let ts = day
                    .and_hms_opt(hour, (n % 60) as u32, (n * 7 % 60) as u32)
                    .unwrap()
                    .and_utc();
                if ts > now - TimeDelta::minutes(2) {
                    continue;
                }
                let error =
                    n.is_multiple_of(23) || (*provider == "openrouter" && n.is_multiple_of(9));
                let input = 300 + (n * 37 % 1400) as u32;
                let output = if error { 0 } else { 80 + (n * 13 % 600) as u32 };
                let cost = if *unpriced || error {
                    0
                } else {
                    cost_micro * 1000 + (n as i64 % 97) * 10_000
                };
                out.push(UsageRecord {
                    event_id: Uuid::from_u128(
                        0x0190_0000_0000_7000_8000_0000_0000_0000 | u128::from(n),
                    ),
                    schema_version: SCHEMA_VERSION,
                    ts,
                    latency_ms: 250 + (n * 53 % 2400) as u32,
                    ttft_ms: n.is_multiple_of(2).then_some(90 + (n % 300) as u32),
                    upstream_ms: 200,
                    org_id: org.to_string(),
                    user_id: user.to_string(),
                    app_id: app.to_string(),
                    key_id: format!("key_{org}"),
                    tags: BTreeMap::new(),
                    provider: provider.to_string(),
                    model_requested: model.to_string(),
                    model_served: model.to_string(),
                    endpoint: Endpoint::ChatCompletions,
                    task_type: "chat".into(),
                    stream: n.is_multiple_of(2),
                    edge_region: "FRA".into(),
                    status_code: if error { 502 } else { 200 },
                    error_class: if error {
                        ErrorClass::Upstream5xx
                    } else {
                        ErrorClass::None
                    },
                    input_tokens: input,
                    output_tokens: output,
                    cached_input_tokens: input / 5,
                    cache_write_tokens: 0,
                    reasoning_tokens: output / 6,
                    audio_input_tokens: 0,
                    image_input_tokens: 0,
                    audio_output_tokens: 0,
                    image_output_tokens: 0,
                    web_search_calls: 0,
                    file_search_calls: 0,
                    service_tier_requested: String::new(),
                    service_tier: String::new(),
                    usage_source: UsageSource::Provider,
                    cost_nusd: Nanos::new(cost),
                    cost_source: if *unpriced {
                        CostSource::Unpriced
                    } else {
                        CostSource::PriceTable
                    },
                    pricing_version: "pt-test".into(),
                    request_bytes: 800,
                    response_bytes: 1600,
                });
            }
        }
    }
    out
}

fn alert(
    org: &str,
    severity: &str,
    state: &str,
    kind: &str,
    title: &str,
    details: serde_json::Value,
    hours_ago: i64,
) -> AlertRow {
    let now = Utc::now().with_nanosecond(0).unwrap();
    let opened = now - TimeDelta::hours(hours_ago);
    let mut row = AlertRow {
        alert_id: Uuid::new_v4(),
        org_id: org.into(),
        rule_id: Uuid::new_v4(),
        kind: kind.into(),
        severity: severity.into(),
        state: state.into(),
        dedup_key: format!("{org}:{kind}:{hours_ago}"),
        title: title.into(),
        details: details.to_string(),
        opened_at: opened,
        acknowledged_by: String::new(),
        acknowledged_at: None,
        resolved_by: String::new(),
        resolved_at: None,
        updated_at: opened,
        version: 1,
    };
    if state != "open" {
        row.acknowledged_by = "acme admin (tok_seed)".into();
        row.acknowledged_at = Some(opened + TimeDelta::minutes(20));
    }
    if state == "resolved" {
        row.resolved_by = "acme admin (tok_seed)".into();
        row.resolved_at = Some(opened + TimeDelta::hours(2));
    }
    row
}

/// Seeds usage (35 days), alerts, budgets and balances through the same paths production uses.
pub async fn seed(env: &Env) -> Seeded {
    let now = Utc::now();
    let rows: Vec<UsageEventRow> = records(35)
        .iter()
        .map(|r| UsageEventRow::from_record(r, "seed", now))
        .collect();
    tollgate_clickhouse::insert_events(env.db.client(), &rows)
        .await
        .unwrap();

    let critical = alert(
        "acme",
        "critical",
        "open",
        "spend_threshold",
        "Daily spend above $5",
        json!({"window": "day", "threshold_usd": "5.000000000", "spent_usd": "6.120000000"}),
        3,
    );
    let high = alert(
        "acme",
        "high",
        "open",
        "error_rate",
        "Error rate 14% on openrouter",
        json!({"provider": "openrouter", "threshold_percent": 10, "error_percent": 14.2, "requests": 212}),
        1,
    );
    let globex = alert(
        "globex",
        "critical",
        "open",
        "spend_anomaly",
        "Globex spend spike",
        json!({"window": "day", "z_score": 4.1}),
        2,
    );
    let rows = vec![
        critical.clone(),
        high.clone(),
        alert(
            "acme",
            "medium",
            "acknowledged",
            "unpriced_requests",
            "Calls to a model without a price",
            json!({"model": "acme-internal-llm", "count": 14, "window_minutes": 60}),
            26,
        ),
        alert(
            "acme",
            "low",
            "resolved",
            "low_balance",
            "OpenRouter balance below $50",
            json!({"provider": "openrouter", "threshold_usd": "50.000000000", "balance_usd": "35.200000000"}),
            50,
        ),
        globex.clone(),
    ];
    write_alert(env.db.client(), &rows).await.unwrap();

    let budget = |name: &str,
                  scope: &str,
                  extra: serde_json::Value,
                  period: &str,
                  limit: &str,
                  mode: &str| {
        let mut b = json!({"name": name, "scope": scope, "period": period, "limit_usd": limit, "mode": mode});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let (s, acme_budget) = env
        .call(
            "POST",
            "/api/v1/budgets",
            Some(&env.acme_admin),
            Some(budget(
                "Acme monthly",
                "org",
                json!({}),
                "monthly",
                "200",
                "soft",
            )),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{acme_budget}");
    for (token, body) in [
        (
            &env.acme_admin,
            budget(
                "Alice daily",
                "user",
                json!({"user_id": "alice"}),
                "daily",
                "4",
                "hard",
            ),
        ),
        (
            &env.acme_admin,
            budget(
                "Search weekly",
                "app",
                json!({"app_id": "search", "soft_thresholds": [75, 90]}),
                "weekly",
                "20",
                "soft",
            ),
        ),
        (
            &env.globex_admin,
            budget(
                "Globex monthly",
                "org",
                json!({}),
                "monthly",
                "1000",
                "hard",
            ),
        ),
    ] {
        let (s, out) = env
            .call("POST", "/api/v1/budgets", Some(token), Some(body))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{out}");
    }
    for (token, body) in [
        (
            &env.acme_admin,
            json!({"provider": "openai", "key_label": "prod", "balance_usd": "120.50"}),
        ),
        (
            &env.admin,
            json!({"provider": "openrouter", "key_label": "acme-router", "balance_usd": "35.20", "org_id": "acme"}),
        ),
        (
            &env.globex_admin,
            json!({"provider": "openai", "key_label": "globex-key", "balance_usd": "900"}),
        ),
    ] {
        let (s, out) = env
            .call("POST", "/api/v1/credits", Some(token), Some(body))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{out}");
    }
    Seeded {
        acme_critical: critical.alert_id,
        acme_high: high.alert_id,
        globex_alert: globex.alert_id,
        acme_budget: acme_budget["budget_id"].as_str().unwrap().to_string(),
    }
}

/// A request to the app with the session cookie of `token` (what `/login` sets).
pub async fn request(
    env: &Env,
    method: &str,
    uri: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    form: Option<&[(&str, &str)]>,
) -> (StatusCode, HeaderMap, String) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "dash.test");
    if let Some(t) = token {
        req = req.header("cookie", format!("tg_session={t}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = match form {
        Some(fields) => {
            let mut body = form_urlencoded::Serializer::new(String::new());
            for (k, v) in fields {
                body.append_pair(k, v);
            }
            req.header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(body.finish()))
        }
        None => req.body(Body::empty()),
    }
    .unwrap();
    let resp = app(env.state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

/// `GET uri` as a signed-in browser of `token`.
pub async fn page(env: &Env, uri: &str, token: &str) -> (StatusCode, String) {
    let (s, _, body) = request(env, "GET", uri, Some(token), &[], None).await;
    (s, body)
}

/// The value of attribute `attr` of the first element whose opening tag contains `marker`.
pub fn attr_after(html: &str, marker: &str, attr: &str) -> Option<String> {
    let at = html.find(marker)?;
    let rest = &html[at..];
    let needle = format!("{attr}=\"");
    let start = rest.find(&needle)? + needle.len();
    let end = rest[start..].find('"')?;
    Some(rest[start..start + end].replace("&amp;", "&"))
}

/// The CSRF token a page's forms carry.
pub fn csrf_of(html: &str) -> String {
    attr_after(html, "name=\"csrf\"", "value").expect("a form with a CSRF token")
}
