//! Prices without a redeploy: a price set through dashboard-api's API is charged by the running
//! wasm worker under workerd within `PRICES_CACHE_SECS` (1 s here), and a flex call is priced
//! at the flex rates it ran in — the worker fetches the signed price book, nothing is rebuilt.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use service_kit::Secret;
use tollgate_clickhouse::testing::TestDb;
use tollgate_dashboard_api::auth::{create_token, Role};
use tollgate_dashboard_api::config::Config;
use tollgate_dashboard_api::{app, AppState};
use tollgate_e2e::harness::{worker_bindings, CollectorProc, WorkerdProc};
use tollgate_e2e::mock_provider::{MockOptions, MockProvider};
use usage_core::{Nanos, PriceTable};

const INTERNAL_SECRET: &str = "e2e-internal-secret-0123456789abcdef";
const PRICES_CACHE_SECS: u64 = 1;

/// An HTTP call from a blocking thread: (status, body text).
async fn http(
    method: &'static str,
    url: String,
    token: String,
    body: Option<Value>,
) -> (u16, String) {
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .into();
        let auth = format!("Bearer {token}");
        let result = match (method, body) {
            ("GET", _) => agent.get(&url).header("authorization", &auth).call(),
            ("PUT", b) => agent
                .put(&url)
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .send(b.unwrap_or(Value::Null).to_string().as_bytes()),
            (_, b) => agent
                .post(&url)
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .send(b.unwrap_or(Value::Null).to_string().as_bytes()),
        };
        let mut resp = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().unwrap_or_default())
    })
    .await
    .unwrap()
}

async fn serve_dashboard(db: &TestDb) -> SocketAddr {
    let mut config = Config::default();
    config.clickhouse.url = db.url().to_string();
    config.clickhouse.database = db.name().to_string();
    config.internal.signing_secrets = vec![Secret::new(INTERNAL_SECRET.to_string())];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app(AppState::new(config));
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// One chat completion of `gpt-5` through the worker (1,000 prompt tokens of which 200 cached, 500
/// completion tokens); `body_extra` is merged into the request.
async fn chat(worker: &WorkerdProc, key: &str, task: &str, body_extra: Value) -> u16 {
    let url = format!("{}/chat/completions", worker.base_url());
    let mut body = json!({"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}],
        "mock": {"usage": {"prompt_tokens": 1000, "completion_tokens": 500, "cached_tokens": 200}}});
    for (k, v) in body_extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (key, task) = (key.to_string(), task.to_string());
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .into();
        let mut resp = agent
            .post(&url)
            .header("authorization", &format!("Bearer {key}"))
            .header("content-type", "application/json")
            .header("x-tollgate-task", &task)
            .send(body.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("worker: {e}"));
        let status = resp.status().as_u16();
        let _ = resp.body_mut().read_to_string();
        status
    })
    .await
    .unwrap()
}

#[derive(Debug, Clone, PartialEq, Eq, tollgate_clickhouse::clickhouse::Row, serde::Deserialize)]
struct Recorded {
    task_type: String,
    cost: String,
    cost_source: String,
    pricing_version: String,
    service_tier_requested: String,
    service_tier: String,
}

async fn recorded(db: &TestDb) -> Vec<Recorded> {
    db.client()
        .query(
            "SELECT task_type, toString(cost_nusd) AS cost, cost_source, pricing_version, \
             service_tier_requested, service_tier FROM usage_events ORDER BY ts, event_id",
        )
        .with_setting("wait_end_of_query", "1")
        .fetch_all()
        .await
        .unwrap()
}

/// Polls the stored records until `done` holds (or 30 s pass).
async fn records_until(db: &TestDb, done: impl Fn(&[Recorded]) -> bool) -> Vec<Recorded> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = recorded(db).await;
        if done(&rows) || Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 800 plain + 200 cached input tokens and 500 output tokens at these per-1M rates.
fn cost(input: &str, cached: &str, output: &str) -> String {
    let r = |s: &str| i128::from(Nanos::parse_usd(s).unwrap().get());
    let femto = 800 * r(input) + 200 * r(cached) + 500 * r(output);
    Nanos::new(i64::try_from((femto + 500_000) / 1_000_000).unwrap()).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_price_set_in_the_dashboard_is_charged_at_the_edge_without_a_redeploy() {
    let db = TestDb::new().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let collector = CollectorProc::start(db.url(), db.name(), dir.path(), |_| {});
    let mock = MockProvider::start(MockOptions::default()).await.unwrap();
    let dashboard = serve_dashboard(&db).await;
    let base = format!("http://{dashboard}");
    let (_, org_admin) = create_token(
        &db.keys_client(),
        "prices e2e",
        Role::OrgAdmin,
        "org_prices",
        "",
        "e2e",
    )
    .await
    .unwrap();
    let (_, admin) = create_token(
        &db.keys_client(),
        "prices admin",
        Role::Admin,
        "",
        "",
        "e2e",
    )
    .await
    .unwrap();
    let mut bindings: Vec<(String, String)> =
        worker_bindings(&mock.base_url(), &collector.records_url(), "{}")
            .into_iter()
            .filter(|(k, _)| k != "APP_KEYS")
            .collect();
    for (k, v) in [
        ("KEYS_URL", base.as_str()),
        ("KEYS_SIGNING_SECRET", INTERNAL_SECRET),
        ("PRICES_CACHE_SECS", &PRICES_CACHE_SECS.to_string()),
    ] {
        bindings.push((k.to_string(), v.to_string()));
    }
    let worker = WorkerdProc::start(bindings);
    let (status, created) = http(
        "POST",
        format!("{base}/api/v1/keys"),
        org_admin,
        Some(json!({"app_id": "prices-app", "name": "prices key"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let created: Value = serde_json::from_str(&created).unwrap();
    let key = created["secret"].as_str().unwrap().to_string();

    // Before: the built-in prices (gpt-5: $1.25 / $0.125 cached / $10 per 1M). (The mock
    // answers with the model asked for: a served snapshot with an entry of its own, such as
    // gpt-4o-mini-2024-07-18, would be priced by that entry.)
    let builtin = PriceTable::builtin().unwrap();
    assert_eq!(chat(&worker, &key, "before", json!({})).await, 200);
    let rows = records_until(&db, |r| !r.is_empty()).await;
    assert_eq!(
        rows,
        [Recorded {
            task_type: "before".into(),
            cost: cost("1.25", "0.125", "10"),
            cost_source: "price_table".into(),
            pricing_version: builtin.version().into(),
            service_tier_requested: String::new(),
            service_tier: "default".into(),
        }]
    );

    // An admin sets a new price (from 2020-01-01 on: it replaces the built-in entry), with a
    // flex tier.
    let (status, set) = http(
        "PUT",
        format!("{base}/api/v1/prices"),
        admin,
        Some(
            json!({"provider": "openai", "model": "gpt-5", "effective_from": "2020-01-01",
            "input": "1.5", "cached_input": "0.75", "output": "6",
            "tiers": {"flex": {"input": "0.7", "cached_input": "0.35", "output": "2.8"}}}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{set}");
    let set: Value = serde_json::from_str(&set).unwrap();
    let version = set["pricing_version"].as_str().unwrap().to_string();
    let changed_at = Instant::now();

    // Calls go on; within the cache time (plus the one call that refreshes the copy) they are
    // charged the new price.
    let mut n = 0;
    let first_new = loop {
        n += 1;
        assert_eq!(
            chat(&worker, &key, &format!("after-{n:03}"), json!({})).await,
            200
        );
        let rows = records_until(&db, |r| r.len() > n).await;
        assert_eq!(rows.len(), n + 1, "every call is recorded");
        if let Some(row) = rows.iter().find(|r| r.pricing_version == version) {
            break row.clone();
        }
        assert!(
            changed_at.elapsed() < Duration::from_secs(PRICES_CACHE_SECS + 10),
            "the edge still charges the old price {:?} after the change: {rows:?}",
            changed_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "the new price was charged {:?} after it was set ({n} calls)",
        changed_at.elapsed()
    );
    assert_eq!(first_new.cost, cost("1.5", "0.75", "6"));
    assert_eq!(first_new.cost_source, "price_table");

    // A call in the flex tier, streamed, is charged the flex rates.
    let stream =
        json!({"stream": true, "stream_options": {"include_usage": true}, "service_tier": "flex"});
    assert_eq!(chat(&worker, &key, "flex", stream).await, 200);
    let rows = records_until(&db, |r| r.iter().any(|r| r.task_type == "flex")).await;
    let flex = rows.iter().find(|r| r.task_type == "flex").unwrap();
    assert_eq!(
        (
            flex.service_tier_requested.as_str(),
            flex.service_tier.as_str(),
            flex.pricing_version.as_str()
        ),
        ("flex", "flex", version.as_str())
    );
    assert_eq!(flex.cost, cost("0.7", "0.35", "2.8"));
    drop(worker);
    drop(collector);
}
