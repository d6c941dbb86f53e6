//! The live dashboard through the whole system: an org admin has the Overview open in a real
//! browser (headless Chromium); an app calls a model nobody priced through the wasm worker
//! under workerd; within 10 s, without a reload, the open page shows one more request and one
//! more active alert — raised by a default rule the org got with its first app key
//! ("Calls to unpriced models"). Then, with the Alerts tab open, the alert's acknowledgement
//! through the API shows there the same way.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

#[path = "../../dashboard-api/tests/browser/mod.rs"]
mod browser;

use std::time::{Duration, Instant};

use browser::{sign_in, target_dir, Browser};
use serde_json::{json, Value};
use service_kit::Secret;
use tollgate_clickhouse::testing::TestDb;
use tollgate_dashboard_api::auth::{create_token, Role};
use tollgate_dashboard_api::config::Config;
use tollgate_dashboard_api::{app, AppState};
use tollgate_e2e::harness::{worker_bindings, CollectorProc, WorkerdProc};
use tollgate_e2e::mock_provider::{MockOptions, MockProvider};

const INTERNAL_SECRET: &str = "e2e-internal-secret-0123456789abcdef";
/// What the issue allows between the call and the open page showing it.
const LIVE_WITHIN: Duration = Duration::from_secs(10);

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// A JSON API call from a blocking thread: (status, body).
async fn api(
    method: &'static str,
    url: String,
    token: String,
    body: Option<Value>,
) -> (u16, Value) {
    tokio::task::spawn_blocking(move || {
        let auth = format!("Bearer {token}");
        let a = agent();
        let result = match method {
            "GET" => a.get(&url).header("authorization", &auth).call(),
            _ => a
                .post(&url)
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .send(body.unwrap_or(json!({})).to_string().as_bytes()),
        };
        let mut resp = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (
            resp.status().as_u16(),
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    })
    .await
    .unwrap()
}

/// The number a card of the open Overview shows (its exact `data` value).
fn card(b: &Browser, name: &str) -> u64 {
    b.attr(&format!("[data-card='{name}'] .card-value data"), "value")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} card"))
}

/// Waits up to [`LIVE_WITHIN`] for `ok` on the open page; the time it took.
fn within_live(b: &Browser, what: &str, ok: impl Fn(&Browser) -> bool) -> Duration {
    let started = Instant::now();
    loop {
        if ok(b) {
            return started.elapsed();
        }
        if started.elapsed() > LIVE_WITHIN {
            let shot = target_dir().join("screenshots/live-failure.png");
            b.screenshot(&shot, true);
            panic!(
                "the open page did not show {what} within {LIVE_WITHIN:?} (screenshot {})",
                shot.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether the page is still the one loaded at the start (no reload, no navigation).
fn same_page(b: &Browser) -> bool {
    b.js("return window.__liveProbe === 42") == json!(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_dashboard_shows_a_new_call_and_its_alert_within_10_s() {
    let db = TestDb::new().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let collector = CollectorProc::start(db.url(), db.name(), dir.path(), |_| {});
    let mock = MockProvider::start(MockOptions::default()).await.unwrap();

    // dashboard-api as `serve` runs it: the router and the jobs (evaluator every second).
    let mut config = Config::default();
    config.clickhouse.url = db.url().to_string();
    config.clickhouse.database = db.name().to_string();
    config.internal.signing_secrets = vec![Secret::new(INTERNAL_SECRET.to_string())];
    config.evaluator.interval_secs = 1;
    config.evaluator.lease_settle_ms = 50;
    let state = AppState::new(config);
    let jobs = tollgate_jobs::spawn(state.jobs().clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = app(state);
    tokio::spawn(async move { axum::serve(listener, router).await });

    let (_, admin) = create_token(
        &db.keys_client(),
        "live e2e",
        Role::OrgAdmin,
        "org_live",
        "",
        "e2e",
    )
    .await
    .unwrap();
    // The org's first app key: it brings the default rules.
    let (status, key) = api(
        "POST",
        format!("{base}/api/v1/keys"),
        admin.clone(),
        Some(json!({"app_id": "live-app", "name": "live"})),
    )
    .await;
    assert_eq!(status, 201, "{key}");
    let secret = key["secret"].as_str().unwrap().to_string();

    let mut bindings: Vec<(String, String)> =
        worker_bindings(&mock.base_url(), &collector.records_url(), "{}")
            .into_iter()
            .filter(|(k, _)| k != "APP_KEYS")
            .collect();
    bindings.push(("KEYS_URL".into(), base.clone()));
    bindings.push(("KEYS_SIGNING_SECRET".into(), INTERNAL_SECRET.into()));
    let worker = WorkerdProc::start(bindings);
    let chat_url = format!("{}/chat/completions", worker.base_url());

    let b = tokio::task::block_in_place(|| {
        let b = Browser::start();
        sign_in(&b, &base, &admin);
        b.open(&format!("{base}/overview?range=24h"));
        b.js("window.__liveProbe = 42; return true;");
        b
    });
    let (requests, alerts) = (card(&b, "requests"), card(&b, "alerts"));

    // One call through the edge, to a model the price book does not have.
    let status = tokio::task::spawn_blocking(move || {
        let body = json!({"model": "acme-internal-llm",
                          "messages": [{"role": "user", "content": "hello"}]});
        agent()
            .post(&chat_url)
            .header("authorization", &format!("Bearer {secret}"))
            .header("content-type", "application/json")
            .send(body.to_string().as_bytes())
            .unwrap()
            .status()
            .as_u16()
    })
    .await
    .unwrap();
    assert_eq!(status, 200);

    tokio::task::block_in_place(|| {
        let took = within_live(&b, "one more request", |b| {
            card(b, "requests") == requests + 1
        });
        eprintln!("the open Overview showed the call {took:?} after it was answered");
        let took = within_live(&b, "one more active alert", |b| {
            card(b, "alerts") == alerts + 1
        });
        eprintln!("… and its alert {took:?} after that");
        assert!(
            same_page(&b),
            "the page was reloaded instead of refreshed in place"
        );
        b.screenshot(&target_dir().join("screenshots/live-overview.png"), false);
    });

    // The Alerts tab, open, follows an acknowledgement made elsewhere.
    let (_, list) = api("GET", format!("{base}/api/v1/alerts"), admin.clone(), None).await;
    let alert = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "unpriced_requests")
        .unwrap_or_else(|| panic!("no unpriced_requests alert: {list}"))
        .clone();
    let id = alert["alert_id"].as_str().unwrap().to_string();
    tokio::task::block_in_place(|| {
        b.open(&format!("{base}/alerts"));
        b.js("window.__liveProbe = 42; return true;");
        let row = format!("li[data-alert-id='{id}']");
        assert_eq!(b.count(&row), 1, "the alert is listed");
    });
    let (status, out) = api(
        "POST",
        format!("{base}/api/v1/alerts/{id}/acknowledge"),
        admin.clone(),
        None,
    )
    .await;
    assert_eq!(status, 200, "{out}");
    tokio::task::block_in_place(|| {
        let took = within_live(&b, "the acknowledgement", |b| {
            b.attr(&format!("li[data-alert-id='{id}']"), "data-state")
                .as_deref()
                == Some("acknowledged")
        });
        eprintln!("the open Alerts tab showed the acknowledgement {took:?} after it was made");
        assert!(
            same_page(&b),
            "the page was reloaded instead of refreshed in place"
        );
        b.screenshot(&target_dir().join("screenshots/live-alerts.png"), false);
    });
    drop(b);
    jobs.shutdown().await;
    drop(worker);
}
