//! App keys from the dashboard to the edge: a key created through dashboard-api's HTTP API
//! works at once at the wasm worker under workerd (which looks it up with a signed request and
//! caches the answer), its calls are recorded with its identity, and once revoked the worker
//! refuses it within the documented delay (`KEYS_CACHE_SECS`, 1 s here).
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

const INTERNAL_SECRET: &str = "e2e-internal-secret-0123456789abcdef";
const CACHE_SECS: u64 = 1;

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
            ("DELETE", _) => agent.delete(&url).header("authorization", &auth).call(),
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

/// One chat completion through the worker with `key`: the status.
async fn chat(worker: &WorkerdProc, key: &str, task: &str) -> u16 {
    let url = format!("{}/chat/completions", worker.base_url());
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let key = key.to_string();
    let task = task.to_string();
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

/// The dashboard's router on a socket of its own, with the internal lookup enabled.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_made_in_the_dashboard_works_at_the_edge_until_revoked() {
    let db = TestDb::new().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let collector = CollectorProc::start(db.url(), db.name(), dir.path(), |_| {});
    let mock = MockProvider::start(MockOptions::default()).await.unwrap();
    let dashboard = serve_dashboard(&db).await;
    let base = format!("http://{dashboard}");
    let (_, admin) = create_token(
        &db.keys_client(),
        "keys e2e",
        Role::OrgAdmin,
        "org_keys",
        "",
        "e2e",
    )
    .await
    .unwrap();

    // The worker knows no keys of its own: only the dashboard's lookup.
    let mut bindings: Vec<(String, String)> =
        worker_bindings(&mock.base_url(), &collector.records_url(), "{}")
            .into_iter()
            .filter(|(k, _)| k != "APP_KEYS")
            .collect();
    for (k, v) in [
        ("KEYS_URL", base.as_str()),
        ("KEYS_SIGNING_SECRET", INTERNAL_SECRET),
        ("KEYS_CACHE_SECS", &CACHE_SECS.to_string()),
    ] {
        bindings.push((k.to_string(), v.to_string()));
    }
    let worker = WorkerdProc::start(bindings);

    // A key nobody made is refused.
    let made_up = format!("tg_{}", "0".repeat(64));
    assert_eq!(chat(&worker, &made_up, "made-up").await, 401);

    // Created through the API: works at once, and its call is recorded under its identity.
    let (status, created) = http(
        "POST",
        format!("{base}/api/v1/keys"),
        admin.clone(),
        Some(json!({"app_id": "e2e-app", "user_id": "dana", "name": "e2e key"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let created: Value = serde_json::from_str(&created).unwrap();
    let secret = created["secret"].as_str().unwrap().to_string();
    let key_id = created["key"]["key_id"].as_str().unwrap().to_string();
    assert_eq!(chat(&worker, &secret, "before-revoke").await, 200);
    assert_eq!(chat(&worker, &secret, "cached").await, 200);

    let deadline = Instant::now() + Duration::from_secs(30);
    let recorded = loop {
        let rows: Vec<(String, String, String, String, String)> = db
            .client()
            .query("SELECT key_id, org_id, user_id, app_id, task_type FROM usage_events ORDER BY task_type")
            .with_setting("wait_end_of_query", "1")
            .fetch_all()
            .await
            .unwrap();
        if rows.len() >= 2 || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let who = |task: &str| {
        (
            key_id.clone(),
            "org_keys".to_string(),
            "dana".to_string(),
            "e2e-app".to_string(),
            task.to_string(),
        )
    };
    assert_eq!(recorded, vec![who("before-revoke"), who("cached")]);

    // Revoked through the API: refused within the cache time.
    let (status, body) = http(
        "DELETE",
        format!("{base}/api/v1/keys/{key_id}"),
        admin.clone(),
        None,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let revoked_at = Instant::now();
    let refused_after = loop {
        let status = chat(&worker, &secret, "after-revoke").await;
        if status == 401 {
            break revoked_at.elapsed();
        }
        assert_eq!(status, 200);
        assert!(
            revoked_at.elapsed() < Duration::from_secs(10),
            "still accepted {:?} after revocation",
            revoked_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("the revoked key was refused {refused_after:?} after its revocation");
    // The cache time, plus the time one call takes.
    assert!(
        refused_after <= Duration::from_secs(CACHE_SECS) + Duration::from_millis(1500),
        "refused only after {refused_after:?}"
    );
    // And it stays refused.
    tokio::time::sleep(Duration::from_millis(CACHE_SECS * 1000 + 200)).await;
    assert_eq!(chat(&worker, &secret, "after-revoke").await, 401);

    // The lookup itself refuses requests without the worker's signature.
    let hash = usage_core::keys::hash_secret(&secret);
    let (status, _) = http(
        "GET",
        format!("{base}/internal/v1/keys/{hash}"),
        admin,
        None,
    )
    .await;
    assert_eq!(status, 401);
    drop(worker);
    drop(collector);
}
