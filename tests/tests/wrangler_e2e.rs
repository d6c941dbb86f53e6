//! The shipped `wrangler.toml`, run as a user runs it: `wrangler dev --local` (wrangler pinned
//! in `edge-worker/package.json`, on the same workerd as every other test) with the bundle
//! `cargo xtask edge build` makes. Only what a user sets for their own deployment is given —
//! the collector and dashboard URLs (the file's example.com ones overridden), the secrets, and
//! here the provider's base URL (the mock) — in an env file, as `.dev.vars` does.
//!
//! The official OpenAI SDK calls through it; every call's record reaches ClickHouse through
//! the Queue the file binds (its consumer posts batches to the collector); app keys come from
//! the dashboard; a hard budget is decided by the file's `BudgetGuard` Durable Object. A
//! binding renamed in `wrangler.toml` breaks this test (and `deploy_config`'s table check).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use service_kit::Secret;
use tollgate_clickhouse::testing::TestDb;
use tollgate_dashboard_api::auth::{create_token, Role};
use tollgate_dashboard_api::config::Config;
use tollgate_dashboard_api::{app, AppState};
use tollgate_e2e::harness::{run_python, CollectorProc, WranglerDev, SIGNING_SECRET};
use tollgate_e2e::mock_provider::{MockOptions, MockProvider};

const INTERNAL_SECRET: &str = "wrangler-e2e-internal-secret-0123456789";

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// `POST url` with `token` and `body`: (status, JSON answer).
async fn post(url: String, token: String, body: Value) -> (u16, Value) {
    tokio::task::spawn_blocking(move || {
        let mut resp = agent()
            .post(&url)
            .header("authorization", &format!("Bearer {token}"))
            .header("content-type", "application/json")
            .send(body.to_string().as_bytes())
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    })
    .await
    .unwrap()
}

async fn records_of(db: &TestDb, org: &str) -> u64 {
    db.client()
        .query("SELECT count() FROM usage_events WHERE org_id = ?")
        .bind(org)
        .with_setting("wait_end_of_query", "1")
        .fetch_one()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_wrangler_toml_runs_in_wrangler_dev_with_the_openai_sdk() {
    let db = TestDb::new().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let collector = CollectorProc::start(db.url(), db.name(), dir.path(), |_| {});
    let mock = MockProvider::start(MockOptions::default()).await.unwrap();
    let mut config = Config::default();
    config.clickhouse.url = db.url().to_string();
    config.clickhouse.database = db.name().to_string();
    config.internal.signing_secrets = vec![Secret::new(INTERNAL_SECRET.to_string())];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dashboard = format!("http://{}", listener.local_addr().unwrap());
    let router = app(AppState::new(config));
    tokio::spawn(async move { axum::serve(listener, router).await });

    // Keys made in the dashboard, as an org admin does: one for the SDK, one under a budget.
    let (_, admin) = create_token(
        &db.keys_client(),
        "wrangler e2e",
        Role::OrgAdmin,
        "org_e2e",
        "",
        "e2e",
    )
    .await
    .unwrap();
    let (status, made) = post(
        format!("{dashboard}/api/v1/keys"),
        admin.clone(),
        // A server app acting for users of its own: the SDK script names them.
        json!({"app_id": "e2e-app", "name": "sdk key", "user_id": "svc-user",
               "acts_for_end_users": true}),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let sdk_key = made["secret"].as_str().unwrap().to_string();
    let (_, budget_admin) = create_token(
        &db.keys_client(),
        "wrangler budget",
        Role::OrgAdmin,
        "org_capped",
        "",
        "e2e",
    )
    .await
    .unwrap();
    let (status, out) = post(
        format!("{dashboard}/api/v1/budgets"),
        budget_admin.clone(),
        json!({"name": "tiny", "scope": "org", "period": "daily", "limit_usd": "0.000001",
               "mode": "hard", "soft_thresholds": []}),
    )
    .await;
    assert_eq!(status, 201, "{out}");
    let (_, made) = post(
        format!("{dashboard}/api/v1/keys"),
        budget_admin,
        json!({"app_id": "capped-app", "name": "capped key"}),
    )
    .await;
    let capped_key = made["secret"].as_str().unwrap().to_string();

    let providers = format!(
        r#"[{{"name":"openai","base_url":"{m}","secret":"OPENAI_API_KEY"}},{{"name":"openrouter","base_url":"{m}","secret":"OPENROUTER_API_KEY"}}]"#,
        m = mock.base_url()
    );
    let records_url = collector.records_url();
    let edge = WranglerDev::start(&[
        ("COLLECTOR_URL", records_url.as_str()),
        ("KEYS_URL", dashboard.as_str()),
        ("PROVIDERS", providers.as_str()),
        // The SDK script waits out one provider timeout; the file's 120 s is for production.
        ("UPSTREAM_TIMEOUT_MS", "3000"),
        ("OPENAI_API_KEY", "sk-mock-openai"),
        ("OPENROUTER_API_KEY", "sk-or-mock"),
        ("COLLECTOR_SIGNING_SECRET", SIGNING_SECRET),
        ("KEYS_SIGNING_SECRET", INTERNAL_SECRET),
    ]);

    let base = edge.base_url();
    let (b, k) = (base.clone(), sdk_key.clone());
    let out = tokio::task::spawn_blocking(move || {
        run_python(
            "sdk_calls.py",
            &[
                ("TOLLGATE_BASE_URL", b.as_str()),
                ("TOLLGATE_KEY", k.as_str()),
            ],
        )
    })
    .await
    .unwrap();
    assert_eq!(
        out["chat_plain"]["model"], "gpt-4o-mini-2024-07-18",
        "{out}"
    );
    assert_eq!(out["chat_plain"]["usage"]["prompt_tokens"], 2000);
    assert_eq!(out["bad_key"]["status"], 401);
    assert_eq!(out["upstream_timeout"]["status"], 504);

    // Every call with a valid key is recorded (11, as through the harness's own workerd),
    // shipped through the file's Queue: its consumer's batches show in wrangler's log.
    let deadline = Instant::now() + Duration::from_secs(60);
    while records_of(&db, "org_e2e").await < 11 {
        assert!(
            Instant::now() < deadline,
            "records missing after 60 s:\n{}",
            edge.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(records_of(&db, "org_e2e").await, 11);
    assert!(
        edge.log().contains("QUEUE tollgate-usage"),
        "records did not go through the Queue:\n{}",
        edge.log()
    );

    // The Durable Object decides the hard budget: the call's worst case does not fit.
    let (status, answer) = post(
        format!("{base}/chat/completions"),
        capped_key,
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 429, "{answer}\n{}", edge.log());
    assert_eq!(
        answer["error"]["code"], "budget_insufficient_for_worst_case",
        "{answer}"
    );
}
