//! Budgets that hold under concurrency, end to end: a hard budget with room for exactly N calls
//! lets exactly N of 200 concurrent calls through the wasm worker (the rest get 429
//! `budget_exceeded`), the recorded cost never passes the limit, a restarted guard resyncs from
//! ClickHouse and still refuses, the next period starts afresh, and a soft threshold adds a
//! warning header and an alert. When a budget cannot be checked (dashboard-api unreachable, the
//! recorded spend unreadable) a hard budget refuses with 503 `budget_unavailable` unless
//! `BUDGET_FAIL_MODE=open`; a call let through unchecked says so in its record.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use chrono::Utc;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use service_kit::Secret;
use tollgate_clickhouse::clickhouse::Row;
use tollgate_clickhouse::testing::TestDb;
use tollgate_dashboard_api::auth::{create_token, Role};
use tollgate_dashboard_api::config::Config;
use tollgate_dashboard_api::{app, AppState};
use tollgate_e2e::harness::{worker_bindings, CollectorProc, WorkerdProc};
use tollgate_e2e::mock_provider::{MockOptions, MockProvider};

const INTERNAL_SECRET: &str = "e2e-internal-secret-0123456789abcdef";
/// gpt-4o-mini: $0.15 input and $0.60 output per 1M tokens = 150 and 600 nano-USD a token.
const INPUT_NUSD: i64 = 150;
const OUTPUT_NUSD: i64 = 600;
const MAX_TOKENS: i64 = 100;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
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

async fn api(method: &'static str, url: String, token: String, body: Option<Value>) -> Value {
    tokio::task::spawn_blocking(move || {
        let a = agent();
        let auth = format!("Bearer {token}");
        let mut resp = match method {
            "GET" => a.get(&url).header("authorization", &auth).call(),
            _ => a
                .post(&url)
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .send(body.unwrap_or(Value::Null).to_string().as_bytes()),
        }
        .unwrap();
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        assert!(
            (200..300).contains(&status),
            "{method} {url}: {status} {text}"
        );
        serde_json::from_str(&text).unwrap_or(Value::Null)
    })
    .await
    .unwrap()
}

/// What every budget test runs: a fresh database, a collector, the mock provider, the dashboard
/// API, and an org admin's token.
struct Setup {
    db: TestDb,
    _dir: tempfile::TempDir,
    collector: CollectorProc,
    mock: MockProvider,
    dashboard: String,
    admin: String,
}

impl Setup {
    async fn start(token_name: &str, org: &str) -> Setup {
        let db = TestDb::new().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let collector = CollectorProc::start(db.url(), db.name(), dir.path(), |_| {});
        let mock = MockProvider::start(MockOptions::default()).await.unwrap();
        let dashboard = format!("http://{}", serve_dashboard(&db).await);
        let (_, admin) = create_token(
            &db.keys_client(),
            token_name,
            Role::OrgAdmin,
            org,
            "",
            "e2e",
        )
        .await
        .unwrap();
        Setup {
            db,
            _dir: dir,
            collector,
            mock,
            dashboard,
            admin,
        }
    }
}

/// Creates `budget` in the admin's org and an app key there; the key's secret.
async fn budget_and_key(dashboard: &str, admin: &str, budget: Value) -> String {
    api(
        "POST",
        format!("{dashboard}/api/v1/budgets"),
        admin.to_string(),
        Some(budget),
    )
    .await;
    api(
        "POST",
        format!("{dashboard}/api/v1/keys"),
        admin.to_string(),
        Some(json!({"app_id": "budget-app", "name": "budget key"})),
    )
    .await["secret"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Worker bindings whose keys and budgets come from `dashboard` (no `APP_KEYS` table).
fn dashboard_bindings(
    mock: &MockProvider,
    collector: &CollectorProc,
    dashboard: &str,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut bindings: Vec<(String, String)> =
        worker_bindings(&mock.base_url(), &collector.records_url(), "{}")
            .into_iter()
            .filter(|(k, _)| k != "APP_KEYS")
            .collect();
    for (k, v) in [
        ("KEYS_URL", dashboard),
        ("KEYS_SIGNING_SECRET", INTERNAL_SECRET),
    ]
    .iter()
    .chain(extra)
    {
        bindings.push((k.to_string(), v.to_string()));
    }
    bindings
}

/// A request body whose byte length equals the prompt tokens the mock reports, so the worst
/// case the edge reserves (every byte a token, plus max_tokens) is exactly what the call costs.
fn exact_body() -> (Vec<u8>, i64) {
    let make = |n: i64| {
        json!({"model": "gpt-4o-mini", "max_tokens": MAX_TOKENS,
               "messages": [{"role": "user", "content": "x".repeat(1100)}],
               "mock": {"usage": {"prompt_tokens": n, "completion_tokens": MAX_TOKENS}}})
        .to_string()
        .into_bytes()
    };
    let len = make(1000).len() as i64;
    let body = make(len);
    assert_eq!(body.len() as i64, len, "same digit count, same length");
    (body, len * INPUT_NUSD + MAX_TOKENS * OUTPUT_NUSD)
}

/// One call: (status, error code, budget-warning header).
fn call(url: &str, key: &str, body: &[u8], test_now: Option<i64>) -> (u16, String, Option<String>) {
    let test_now = test_now.map(|t| t.to_string());
    let headers: Vec<(&str, &str)> = test_now
        .as_deref()
        .map(|t| ("x-tollgate-test-now", t))
        .into_iter()
        .collect();
    call_with(url, key, body, &headers)
}

/// One call with extra request headers: (status, error code, budget-warning header).
fn call_with(
    url: &str,
    key: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> (u16, String, Option<String>) {
    let a = agent();
    let mut req = a
        .post(url)
        .header("authorization", &format!("Bearer {key}"))
        .header("content-type", "application/json");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let mut resp = req.send(body).unwrap();
    let status = resp.status().as_u16();
    let warning = resp
        .headers()
        .get("x-tollgate-budget-warning")
        .map(|v| v.to_str().unwrap_or("").to_string());
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let code = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
        .unwrap_or_default();
    (status, code, warning)
}

#[derive(Row, serde::Deserialize, Debug)]
struct Spend {
    ok: u64,
    blocked: u64,
    cost: i128,
}

async fn spend(db: &TestDb, org: &str) -> Spend {
    db.client()
        .query("SELECT countIf(error_class = 'none') AS ok, countIf(error_class = 'budget_blocked') AS blocked, sum(cost_nusd) AS cost FROM usage_events WHERE org_id = ?")
        .bind(org)
        .with_setting("wait_end_of_query", "1")
        .fetch_one::<Spend>()
        .await
        .unwrap()
}

/// What the daily rollup holds for `org`: the recorded spend a guard resyncs from.
async fn rollup_spend(db: &TestDb, org: &str) -> i128 {
    db.client()
        .query("SELECT sum(total_cost_nusd) FROM usage_daily WHERE org_id = ?")
        .bind(org)
        .with_setting("wait_end_of_query", "1")
        .fetch_one::<i128>()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_budget_admits_exactly_what_fits_and_holds_across_restarts() {
    const N: i64 = 50;
    const CALLS: usize = 200;
    let Setup {
        db,
        _dir,
        collector,
        mock,
        dashboard,
        admin,
    } = Setup::start("budgets e2e", "org_budget").await;

    let (body, cost) = exact_body();
    let limit = N * cost;
    let key = budget_and_key(&dashboard, &admin, json!({
        "name": "exactly fifty", "scope": "org", "period": "daily",
        "limit_usd": usage_core::Nanos::new(limit).to_string(), "mode": "hard", "soft_thresholds": [100]
    })).await;

    let bindings = dashboard_bindings(&mock, &collector, &dashboard, &[("ALLOW_TEST_CLOCK", "1")]);
    let worker = WorkerdProc::start(bindings.clone());
    let url = format!("{}/chat/completions", worker.base_url());

    // 200 concurrent calls.
    let ok = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..CALLS)
        .map(|_| {
            let (url, key, body, ok, refused) = (
                url.clone(),
                key.clone(),
                body.clone(),
                ok.clone(),
                refused.clone(),
            );
            std::thread::spawn(move || match call(&url, &key, &body, None) {
                (200, _, _) => {
                    ok.fetch_add(1, Ordering::SeqCst);
                }
                (429, code, _) => {
                    assert_eq!(code, "budget_exceeded");
                    refused.fetch_add(1, Ordering::SeqCst);
                }
                other => panic!("unexpected answer {other:?}"),
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(
        ok.load(Ordering::SeqCst),
        N as usize,
        "exactly the calls that fit got through"
    );
    assert_eq!(refused.load(Ordering::SeqCst), CALLS - N as usize);
    assert_eq!(
        mock.requests(),
        N as u64,
        "refused calls never reached the provider"
    );

    // Every call is recorded; the period's cost is exactly the limit, never more. (The edge
    // retries a slow collector for up to FLUSH_BUDGET_MS = 25 s per flush; the wait covers
    // that with room to spare on a loaded machine.)
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut s = spend(&db, "org_budget").await;
    while (s.ok + s.blocked) < CALLS as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        s = spend(&db, "org_budget").await;
    }
    assert_eq!(
        (s.ok, s.blocked),
        (N as u64, (CALLS - N as usize) as u64),
        "records stored 60 s after the calls; collector log:\n{}\nworker log:\n{}",
        collector.proc.log(),
        worker.proc.log()
    );
    assert_eq!(
        s.cost,
        i128::from(limit),
        "recorded spend equals the limit exactly"
    );

    // A restarted worker has fresh guards (the local runtime keeps Durable Objects in memory):
    // they resync from the daily rollup, so wait until it holds the whole spend — the raw rows
    // are written first, the rollup a moment later by the same INSERT.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut recorded = rollup_spend(&db, "org_budget").await;
    while recorded != i128::from(limit) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        recorded = rollup_spend(&db, "org_budget").await;
    }
    assert_eq!(
        recorded,
        i128::from(limit),
        "the rollup never held the spend"
    );
    drop(worker);
    let worker = WorkerdProc::start(bindings);
    let url = format!("{}/chat/completions", worker.base_url());
    let (b2, u2) = (body.clone(), url.clone());
    let k2 = key.clone();
    let (status, code, _) = tokio::task::spawn_blocking(move || call(&u2, &k2, &b2, None))
        .await
        .unwrap();
    assert_eq!(
        (status, code.as_str()),
        (429, "budget_exceeded"),
        "a restarted guard forgot the spend"
    );

    // The next UTC day is a new period.
    let tomorrow = Utc::now().timestamp() + 86_400;
    let (b3, u3, k3) = (body.clone(), url.clone(), key.clone());
    let (status, _, _) = tokio::task::spawn_blocking(move || call(&u3, &k3, &b3, Some(tomorrow)))
        .await
        .unwrap();
    assert_eq!(
        status, 200,
        "the budget did not reset at the period boundary"
    );
    drop(collector);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soft_threshold_warns_in_a_header_and_raises_an_alert() {
    let Setup {
        db,
        _dir,
        collector,
        mock,
        dashboard,
        admin,
    } = Setup::start("soft e2e", "org_soft").await;
    let (body, cost) = exact_body();
    let key = budget_and_key(&dashboard, &admin, json!({
        "name": "watch", "scope": "org", "period": "monthly",
        "limit_usd": usage_core::Nanos::new(4 * cost).to_string(), "mode": "soft", "soft_thresholds": [50, 100]
    })).await;
    let bindings = dashboard_bindings(&mock, &collector, &dashboard, &[]);
    let worker = WorkerdProc::start(bindings);
    let url = format!("{}/chat/completions", worker.base_url());
    // A threshold is crossed by spend (finished calls), as the dashboard counts it: each
    // call costs a quarter of the limit, so the 3rd call sees 50% spent and the 5th 100%.
    // Before the next call the test waits until the last one is stored — the edge settles a
    // call's cost in its guard before it ships the record, so the guard has it too.
    let mut warnings = Vec::new();
    for n in 1..=6u64 {
        let (u, k, b) = (url.clone(), key.clone(), body.clone());
        let (status, _, warning) = tokio::task::spawn_blocking(move || call(&u, &k, &b, None))
            .await
            .unwrap();
        assert_eq!(status, 200, "soft budgets never refuse");
        warnings.push(warning);
        let deadline = Instant::now() + Duration::from_secs(30);
        while spend(&db, "org_soft").await.ok < n {
            assert!(Instant::now() < deadline, "call {n} was not recorded");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let says = |i: usize, what: &str| {
        assert!(
            warnings[i].as_deref().unwrap_or("").contains(what),
            "call {}: {warnings:?}",
            i + 1
        );
    };
    assert_eq!(warnings[..2], [None, None], "25% spent: no threshold yet");
    // The header's percentage is the dashboard's percent_used for the same spend.
    says(2, "budget \"watch\" (monthly) has reached 50%: 50.00% used");
    assert_eq!(warnings[3], None);
    says(4, "has reached 100%: 100.00% used");
    assert_eq!(warnings[5], None, "each threshold warns once");

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let alerts = api(
            "GET",
            format!("{dashboard}/api/v1/alerts"),
            admin.clone(),
            None,
        )
        .await;
        let kinds: Vec<&str> = alerts
            .as_array()
            .map(|a| a.iter().filter_map(|x| x["kind"].as_str()).collect())
            .unwrap_or_default();
        if kinds.iter().filter(|k| **k == "budget_threshold").count() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "budget alerts not recorded: {alerts}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The alert evaluator leaves them open: they have no rule, and the day is not over.
    let jobs = tollgate_jobs::Context::new(db.config(), Default::default());
    let tick = tollgate_jobs::evaluator::evaluate_once(&jobs, Utc::now())
        .await
        .unwrap();
    assert!(tick.resolved.is_empty(), "{:?}", tick.resolved);
    let alerts = api(
        "GET",
        format!("{dashboard}/api/v1/alerts"),
        admin.clone(),
        None,
    )
    .await;
    let open = alerts
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "budget_threshold" && a["state"] == "open")
        .count();
    assert_eq!(open, 2, "{alerts}");
    drop(collector);
}

/// A stand-in for dashboard-api's internal API whose spend lookup always fails (and whose
/// budget list can be switched off): two orgs, one under a hard budget, one under a soft one.
struct UncheckableDashboard {
    addr: SocketAddr,
    list_up: Arc<std::sync::atomic::AtomicBool>,
}

const HARD_KEY: &str = "tg_failhard_kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk";
const SOFT_KEY: &str = "tg_failsoft_kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk";

async fn serve_uncheckable_dashboard() -> UncheckableDashboard {
    use axum::extract::{Path, Query, State};
    use axum::http::StatusCode;
    use axum::routing::get;
    use std::collections::HashMap;

    let list_up = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let keys = |org: &str| json!({"key_id": format!("key_{org}"), "org_id": org, "app_id": "app"});
    let by_hash: HashMap<String, Value> = [
        (
            usage_core::keys::hash_secret(HARD_KEY),
            keys("org_failhard"),
        ),
        (
            usage_core::keys::hash_secret(SOFT_KEY),
            keys("org_failsoft"),
        ),
    ]
    .into_iter()
    .collect();
    let budget = |org: &str, mode: &str| {
        json!([{"budget_id": format!("b_{org}"), "name": format!("{mode} cap"),
            "scope": "org", "user_id": "", "app_id": "", "period": "daily",
            "limit_nusd": 1_000_000_000_i64, "mode": mode, "soft_thresholds": []}])
    };
    let router = axum::Router::new()
        .route(
            "/internal/v1/keys/{hash}",
            get(move |Path(hash): Path<String>| {
                let found = by_hash.get(&hash).cloned();
                async move {
                    match found {
                        Some(k) => (StatusCode::OK, k.to_string()),
                        None => (StatusCode::NOT_FOUND, "{}".to_string()),
                    }
                }
            }),
        )
        .route(
            "/internal/v1/budgets",
            get(
                move |State(up): State<Arc<std::sync::atomic::AtomicBool>>,
                      Query(q): Query<HashMap<String, String>>| async move {
                    if !up.load(Ordering::SeqCst) {
                        return (StatusCode::SERVICE_UNAVAILABLE, String::new());
                    }
                    let org = q.get("org").cloned().unwrap_or_default();
                    let mode = if org == "org_failhard" {
                        "hard"
                    } else {
                        "soft"
                    };
                    (StatusCode::OK, budget(&org, mode).to_string())
                },
            ),
        )
        .route(
            "/internal/v1/budgets/{id}/spent",
            get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "ClickHouse is down") }),
        )
        .with_state(list_up.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    UncheckableDashboard { addr, list_up }
}

/// One call: (status, error code, error message, `retry-after`).
fn call_detailed(url: &str, key: &str, body: &[u8]) -> (u16, String, String, Option<String>) {
    let mut resp = agent()
        .post(url)
        .header("authorization", &format!("Bearer {key}"))
        .header("content-type", "application/json")
        .send(body)
        .unwrap();
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap_or("").to_string());
    let v: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap_or_default())
        .unwrap_or_default();
    let field = |f: &str| v["error"][f].as_str().unwrap_or("").to_string();
    (status, field("code"), field("message"), retry_after)
}

#[derive(Row, serde::Deserialize, Debug, PartialEq)]
struct Outcome {
    org_id: String,
    status_code: u16,
    error_class: String,
    fail_open: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_budget_that_cannot_be_checked_fails_closed_unless_told_to_open() {
    let db = TestDb::new().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let collector = CollectorProc::start(db.url(), db.name(), dir.path(), |_| {});
    let mock = MockProvider::start(MockOptions::default()).await.unwrap();
    let dashboard = serve_uncheckable_dashboard().await;
    let worker_with = |mode: Option<&str>| {
        let mut bindings: Vec<(String, String)> =
            worker_bindings(&mock.base_url(), &collector.records_url(), "{}")
                .into_iter()
                .filter(|(k, _)| k != "APP_KEYS")
                .collect();
        bindings.push(("KEYS_URL".into(), format!("http://{}", dashboard.addr)));
        bindings.push(("KEYS_SIGNING_SECRET".into(), INTERNAL_SECRET.into()));
        if let Some(m) = mode {
            bindings.push(("BUDGET_FAIL_MODE".into(), m.into()));
        }
        WorkerdProc::start(bindings)
    };
    let (body, _) = exact_body();
    let blocking_call = |url: String, key: &'static str, body: Vec<u8>| {
        tokio::task::spawn_blocking(move || call_detailed(&url, key, &body))
    };

    // Default mode: the guard cannot read the recorded spend, so the hard budget refuses.
    let closed = worker_with(None);
    let url = format!("{}/chat/completions", closed.base_url());
    let (status, code, message, retry_after) = blocking_call(url.clone(), HARD_KEY, body.clone())
        .await
        .unwrap();
    assert_eq!(
        (status, code.as_str()),
        (503, "budget_unavailable"),
        "{message}"
    );
    assert!(
        message.contains("hard cap") && message.contains("b_org_failhard"),
        "{message}\n{}",
        closed.proc.log()
    );
    assert!(message.contains("recorded spend"), "says why: {message}");
    assert_eq!(retry_after.as_deref(), Some("5"));
    assert_eq!(
        mock.requests(),
        0,
        "a refused call never reaches the provider"
    );
    // A soft budget that cannot be checked lets the call through.
    let (status, ..) = blocking_call(url.clone(), SOFT_KEY, body.clone())
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(mock.requests(), 1);

    // BUDGET_FAIL_MODE=open: the hard budget lets the call through, and the record says so.
    let open = worker_with(Some("open"));
    let url_open = format!("{}/chat/completions", open.base_url());
    let (status, ..) = blocking_call(url_open, HARD_KEY, body.clone())
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(mock.requests(), 2);

    // Budget list unavailable, and this fresh worker never read one: refused too.
    dashboard.list_up.store(false, Ordering::SeqCst);
    let fresh = worker_with(None);
    let url_fresh = format!("{}/chat/completions", fresh.base_url());
    let (status, code, message, _) = blocking_call(url_fresh, HARD_KEY, body.clone())
        .await
        .unwrap();
    assert_eq!(
        (status, code.as_str()),
        (503, "budget_unavailable"),
        "{message}"
    );
    assert!(
        message.contains("budgets of org `org_failhard`"),
        "{message}"
    );
    assert_eq!(mock.requests(), 2);

    // Every answer has its record: refusals as budget_blocked with their status, calls let
    // through unchecked with the budgets they skipped.
    let want = vec![
        Outcome {
            org_id: "org_failhard".into(),
            status_code: 200,
            error_class: "none".into(),
            fail_open: "b_org_failhard".into(),
        },
        Outcome {
            org_id: "org_failhard".into(),
            status_code: 503,
            error_class: "budget_blocked".into(),
            fail_open: String::new(),
        },
        Outcome {
            org_id: "org_failhard".into(),
            status_code: 503,
            error_class: "budget_blocked".into(),
            fail_open: String::new(),
        },
        Outcome {
            org_id: "org_failsoft".into(),
            status_code: 200,
            error_class: "none".into(),
            fail_open: "b_org_failsoft".into(),
        },
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = db
            .client()
            .query(
                "SELECT org_id, status_code, toString(error_class) AS error_class, \
                 arrayStringConcat(arrayFilter((v, k) -> k = 'tollgate.budget_fail_open', tag_values, tag_keys), ',') AS fail_open \
                 FROM usage_events ORDER BY org_id, status_code, fail_open DESC",
            )
            .with_setting("wait_end_of_query", "1")
            .fetch_all::<Outcome>()
            .await
            .unwrap();
        if got == want {
            break;
        }
        assert!(Instant::now() < deadline, "records: {got:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // …and the collector counts them for an alert.
    let metrics_url = format!("http://{}/metrics", collector.addr);
    let metrics = tokio::task::spawn_blocking(move || {
        agent()
            .get(&metrics_url)
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        metrics.contains("tollgate_collector_records_budget_fail_open_total 2"),
        "{metrics}"
    );
    drop(collector);
}

/// A hard budget far from spent refuses a call whose *worst case* does not fit, and says so —
/// not "exhausted" — with what is left and how to ask for less; the same call with `max_tokens`
/// goes through. (gpt-4o-mini without `max_tokens` reserves its 16,384-token output bound:
/// about $0.0098; the budget is $0.005, of which nothing is spent.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_worst_case_does_not_fit_is_told_how_to_fit() {
    let Setup {
        db: _db,
        _dir,
        collector,
        mock,
        dashboard,
        admin,
    } = Setup::start("worst case", "org_worst").await;
    let key = budget_and_key(
        &dashboard,
        &admin,
        json!({
            "name": "small cap", "scope": "org", "period": "daily",
            "limit_usd": "0.005", "mode": "hard", "soft_thresholds": []
        }),
    )
    .await;
    let bindings = dashboard_bindings(&mock, &collector, &dashboard, &[]);
    let worker = WorkerdProc::start(bindings);
    let url = format!("{}/chat/completions", worker.base_url());
    tokio::task::spawn_blocking(move || {
        let unbounded =
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
        let a = agent();
        let mut resp = a
            .post(&url)
            .header("authorization", &format!("Bearer {key}"))
            .header("content-type", "application/json")
            .send(unbounded.to_string().as_bytes())
            .unwrap();
        assert_eq!(resp.status().as_u16(), 429);
        let err: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
        assert_eq!(err["error"]["code"], "budget_insufficient_for_worst_case");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains("has $0.005000000 left"), "{message}");
        assert!(message.contains("max_tokens"), "{message}");
        assert!(!message.contains("exhausted"), "{message}");

        let bounded = json!({"model": "gpt-4o-mini", "max_tokens": 50,
            "messages": [{"role": "user", "content": "hi"}]});
        let (status, code, _) = call(&url, &key, bounded.to_string().as_bytes(), None);
        assert_eq!((status, code.as_str()), (200, ""));
    })
    .await
    .unwrap();
}

/// #25 (2): a budget may cap what a call without `max_tokens` reserves. The same $0.005 hard
/// budget that refuses an unbounded gpt-4o-mini call (worst case ≈ $0.0098) admits it once
/// calls without a bound reserve 1,000 output tokens (worst case ≈ $0.0006).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_cap_admits_calls_without_max_tokens() {
    let Setup {
        db,
        _dir,
        collector,
        mock,
        dashboard,
        admin,
    } = Setup::start("reserve cap", "org_cap").await;
    let key = budget_and_key(
        &dashboard,
        &admin,
        json!({
            "name": "capped", "scope": "org", "period": "daily",
            "limit_usd": "0.005", "mode": "hard", "soft_thresholds": [],
            "reserve_output_tokens": 1000
        }),
    )
    .await;
    let listed = api(
        "GET",
        format!("{dashboard}/api/v1/budgets"),
        admin.clone(),
        None,
    )
    .await;
    assert_eq!(listed[0]["reserve_output_tokens"], 1000, "{listed}");
    let bindings = dashboard_bindings(&mock, &collector, &dashboard, &[]);
    let worker = WorkerdProc::start(bindings);
    let url = format!("{}/chat/completions", worker.base_url());
    let (status, code, _) = tokio::task::spawn_blocking(move || {
        let unbounded =
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
        call(&url, &key, unbounded.to_string().as_bytes(), None)
    })
    .await
    .unwrap();
    assert_eq!((status, code.as_str()), (200, ""));
    let deadline = Instant::now() + Duration::from_secs(30);
    while spend(&db, "org_cap").await.ok < 1 {
        assert!(Instant::now() < deadline, "the call was not recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `call` with `x-tollgate-user: user`: (status, error code).
fn call_as(url: &str, key: &str, user: &str, body: &[u8]) -> (u16, String) {
    let (status, code, _) = call_with(url, key, body, &[("x-tollgate-user", user)]);
    (status, code)
}

/// #19 (3): a per-user budget cannot be dodged by naming another user. Alice's key cannot
/// claim to be bob's (403), so her calls stay under her budget; a server app acting for end
/// users may name alice, and alice's budget then applies to that call too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_budget_cannot_be_dodged_with_the_user_header() {
    let Setup {
        db: _db,
        _dir,
        collector,
        mock,
        dashboard,
        admin,
    } = Setup::start("user budget", "org_users").await;
    api(
        "POST",
        format!("{dashboard}/api/v1/budgets"),
        admin.clone(),
        Some(
            json!({"name": "alice's cap", "scope": "user", "user_id": "alice",
                    "period": "daily", "limit_usd": "0.000001", "mode": "hard",
                    "soft_thresholds": []}),
        ),
    )
    .await;
    let key_of = |body: Value| {
        let (dashboard, admin) = (dashboard.clone(), admin.clone());
        async move {
            api(
                "POST",
                format!("{dashboard}/api/v1/keys"),
                admin,
                Some(body),
            )
            .await["secret"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let alice = key_of(json!({"app_id": "chat", "name": "alice's", "user_id": "alice"})).await;
    let server = key_of(
        json!({"app_id": "portal", "name": "portal", "user_id": "svc",
                               "acts_for_end_users": true}),
    )
    .await;
    let bindings = dashboard_bindings(&mock, &collector, &dashboard, &[]);
    let worker = WorkerdProc::start(bindings);
    let url = format!("{}/chat/completions", worker.base_url());
    let (body, _) = exact_body();
    let answers = tokio::task::spawn_blocking(move || {
        [
            call_as(&url, &alice, "bob", &body),
            call_as(&url, &alice, "alice", &body),
            call_as(&url, &server, "alice", &body),
            call_as(&url, &server, "bob", &body),
        ]
    })
    .await
    .unwrap();
    assert_eq!(
        answers,
        [
            (403, "end_user_not_allowed".to_string()),
            (429, "budget_insufficient_for_worst_case".to_string()),
            (429, "budget_insufficient_for_worst_case".to_string()),
            (200, String::new()),
        ]
    );
    assert_eq!(
        mock.requests(),
        1,
        "only bob's call through the portal reached the provider"
    );
}
