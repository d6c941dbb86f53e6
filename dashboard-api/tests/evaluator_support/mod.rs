//! Shared by the evaluator, notification, poller and reconciliation tests: an [`Env`] whose
//! config the test shapes, usage records to seed, rules and alerts through the API, a local
//! webhook receiver, and the providers' admin APIs mocked (the mock lives in the e2e crate,
//! which depends on dashboard-api, so it is included here by path rather than as a crate).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

#[path = "../../../tests/src/mock_provider/admin.rs"]
pub mod provider_admin;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde_json::{json, Value};
use tollgate_clickhouse::alerts::AlertRow;
use tollgate_clickhouse::UsageEventRow;
use tollgate_dashboard_api::config::Config;
use tollgate_dashboard_api::AppState;
use usage_core::{
    CostSource, Endpoint, ErrorClass, Nanos, UsageRecord, UsageSource, SCHEMA_VERSION,
};
use uuid::Uuid;

use crate::common::Env;

/// The signing secret the tests configure.
pub const SECRET: &str = "test-signing-secret-0123456789";

/// An [`Env`] with the config changed by `configure` (defaults for the jobs: acme is an
/// operator org, webhooks may reach 127.0.0.1, retries are fast, webhooks are signed).
pub async fn env_with(configure: impl FnOnce(&mut Config)) -> Env {
    let mut env = Env::new().await;
    let mut config = env.state.config().clone();
    config.evaluator.operator_orgs = vec!["acme".into()];
    config.notifications.allow_private_targets = true;
    config.notifications.backoff_ms = 50;
    config.notifications.timeout_ms = 2000;
    config.notifications.signing_secret = service_kit::Secret::new(SECRET.to_string());
    configure(&mut config);
    env.state = AppState::new(config);
    env
}

/// Noon (UTC) today: the tests' clock, so hour and day windows never straddle midnight.
pub fn noon() -> DateTime<Utc> {
    Utc::now()
        .date_naive()
        .and_hms_opt(12, 0, 0)
        .unwrap()
        .and_utc()
}

pub fn at(day: NaiveDate, hour: u32, minute: u32) -> DateTime<Utc> {
    day.and_hms_opt(hour, minute, 0).unwrap().and_utc()
}

/// A successful call of `org` to `provider` at `ts` costing `cost_usd` (a decimal string).
pub fn call(org: &str, provider: &str, ts: DateTime<Utc>, cost_usd: &str) -> UsageRecord {
    let model = if provider == "openrouter" {
        "anthropic/claude-sonnet-4"
    } else {
        "gpt-4o"
    };
    UsageRecord {
        event_id: Uuid::new_v4(),
        schema_version: SCHEMA_VERSION,
        ts,
        latency_ms: 100,
        ttft_ms: None,
        upstream_ms: 90,
        org_id: org.into(),
        user_id: "u".into(),
        app_id: "a".into(),
        key_id: "k".into(),
        tags: BTreeMap::new(),
        provider: provider.into(),
        model_requested: model.into(),
        model_served: model.into(),
        endpoint: Endpoint::ChatCompletions,
        task_type: "chat".into(),
        stream: false,
        edge_region: String::new(),
        status_code: 200,
        error_class: ErrorClass::None,
        input_tokens: 10,
        output_tokens: 10,
        cached_input_tokens: 0,
        cache_write_tokens: 0,
        reasoning_tokens: 0,
        audio_input_tokens: 0,
        image_input_tokens: 0,
        audio_output_tokens: 0,
        image_output_tokens: 0,
        web_search_calls: 0,
        file_search_calls: 0,
        service_tier_requested: String::new(),
        service_tier: String::new(),
        usage_source: UsageSource::Provider,
        cost_nusd: Nanos::parse_usd(cost_usd).unwrap(),
        cost_source: CostSource::PriceTable,
        pricing_version: "pt".into(),
        request_bytes: 1,
        response_bytes: 1,
    }
}

/// The same call failing with `status`.
pub fn failed(mut r: UsageRecord, status: u16) -> UsageRecord {
    r.status_code = status;
    r.error_class = ErrorClass::from_status(status);
    r.cost_nusd = Nanos::ZERO;
    r
}

/// The same call, unpriced.
pub fn unpriced(mut r: UsageRecord) -> UsageRecord {
    r.cost_source = CostSource::Unpriced;
    r.cost_nusd = Nanos::ZERO;
    r.pricing_version = String::new();
    r
}

pub async fn seed(env: &Env, records: &[UsageRecord]) {
    let rows: Vec<UsageEventRow> = records
        .iter()
        .map(|r| UsageEventRow::from_record(r, "seed", Utc::now()))
        .collect();
    tollgate_clickhouse::insert_events(env.db.client(), &rows)
        .await
        .unwrap();
}

/// Creates a rule as acme's admin; its id.
pub async fn rule(env: &Env, kind: &str, params: Value, channels: &[&str]) -> Uuid {
    rule_as(env, &env.acme_admin, kind, params, channels).await
}

pub async fn rule_as(env: &Env, token: &str, kind: &str, params: Value, channels: &[&str]) -> Uuid {
    let (status, out) = env
        .call(
            "POST",
            "/api/v1/alert-rules",
            Some(token),
            Some(
                json!({"name": format!("{kind} test"), "kind": kind, "params": params,
                        "severity": "high", "channels": channels}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{out}");
    out["rule_id"].as_str().unwrap().parse().unwrap()
}

/// Replaces a rule's params (same kind, channels kept).
pub async fn set_params(env: &Env, id: Uuid, params: Value) {
    let (_, current) = env
        .get(&format!("/api/v1/alert-rules/{id}"), &env.admin)
        .await;
    let (status, out) = env
        .call(
            "PUT",
            &format!("/api/v1/alert-rules/{id}"),
            Some(&env.admin),
            Some(
                json!({"name": current["name"], "kind": current["kind"], "params": params,
                        "severity": current["severity"], "channels": current["channels"]}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
}

/// The rule's alerts as the API shows them (every state), newest first.
pub async fn alerts_of(env: &Env, rule_id: Uuid) -> Vec<Value> {
    let (status, out) = env.get("/api/v1/alerts?limit=1000", &env.admin).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    out.as_array()
        .unwrap()
        .iter()
        .filter(|a| a["rule_id"] == rule_id.to_string())
        .cloned()
        .collect()
}

/// The rule's alerts that are not resolved.
pub async fn open_alerts_of(env: &Env, rule_id: Uuid) -> Vec<Value> {
    alerts_of(env, rule_id)
        .await
        .into_iter()
        .filter(|a| a["state"] != "resolved")
        .collect()
}

/// Runs one evaluation at `now` and checks it failed for no rule.
pub async fn tick(env: &Env, now: DateTime<Utc>) -> tollgate_jobs::evaluator::TickReport {
    let report = tollgate_jobs::evaluator::evaluate_once(env.state.jobs(), now)
        .await
        .unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    report
}

pub fn opened_by(report: &tollgate_jobs::evaluator::TickReport, rule_id: Uuid) -> Vec<&AlertRow> {
    report
        .opened
        .iter()
        .filter(|a| a.rule_id == rule_id)
        .collect()
}

/// The whole life of one rule's alert: fires on `now`, one alert; the next tick keeps it.
pub async fn assert_fires_once(env: &Env, rule_id: Uuid, now: DateTime<Utc>) -> Value {
    let first = tick(env, now).await;
    assert_eq!(opened_by(&first, rule_id).len(), 1, "{:?}", first.opened);
    let second = tick(env, now + TimeDelta::minutes(1)).await;
    assert!(
        opened_by(&second, rule_id).is_empty(),
        "duplicated: {:?}",
        second.opened
    );
    let open = open_alerts_of(env, rule_id).await;
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(alerts_of(env, rule_id).await.len(), 1);
    open[0].clone()
}

/// The rule's only alert is resolved by the evaluator at `now`.
pub async fn assert_auto_resolves(env: &Env, rule_id: Uuid, now: DateTime<Utc>) -> Value {
    let report = tick(env, now).await;
    assert_eq!(
        report
            .resolved
            .iter()
            .filter(|a| a.rule_id == rule_id)
            .count(),
        1,
        "{:?}",
        report.resolved
    );
    let all = alerts_of(env, rule_id).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["state"], "resolved");
    assert_eq!(all[0]["resolved_by"], "evaluator");
    all[0].clone()
}

/// One request the webhook receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// What the receiver answered.
    pub answered: u16,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// Checks the `x-tollgate-signature` header against the body with [`SECRET`].
    pub fn verify(&self) -> Result<(), usage_core::wire::SignatureError> {
        usage_core::wire::verify(
            self.headers
                .get("x-tollgate-signature")
                .and_then(|v| v.to_str().ok()),
            &self.body,
            &[SECRET.as_bytes()],
            Utc::now().timestamp(),
            300,
        )
    }
}

#[derive(Debug, Default)]
struct ReceiverState {
    fail_first: usize,
    fail_status: u16,
    received: Vec<Received>,
}

/// A local webhook receiver: answers `fail_status` to the first `fail_first` requests, then
/// 200, and records every request.
#[derive(Debug)]
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<Mutex<ReceiverState>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

async fn receive(
    State(state): State<Arc<Mutex<ReceiverState>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut s = state.lock().unwrap();
    let failing = s.received.len() < s.fail_first;
    let answered = if failing { s.fail_status } else { 200 };
    s.received.push(Received {
        path: uri.path().to_string(),
        headers,
        body,
        answered,
    });
    StatusCode::from_u16(answered).unwrap()
}

impl Receiver {
    pub async fn start(fail_first: usize, fail_status: u16) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ReceiverState {
            fail_first,
            fail_status,
            received: Vec::new(),
        }));
        let app = Router::new()
            .route("/{*path}", post(receive))
            .with_state(state.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Receiver {
            addr,
            state,
            shutdown: Some(tx),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Records a manual balance through the API.
pub async fn balance(
    env: &Env,
    token: &str,
    org: Option<&str>,
    provider: &str,
    label: &str,
    usd: &str,
) {
    let mut body = json!({"provider": provider, "key_label": label, "balance_usd": usd});
    if let Some(o) = org {
        body["org_id"] = json!(o);
    }
    let (status, out) = env
        .call("POST", "/api/v1/credits", Some(token), Some(body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{out}");
}

/// Records a balance observation directly, at an explicit time (the API stamps the current
/// second, and two observations in one second would tie).
pub async fn balance_at(
    env: &Env,
    org: &str,
    provider: &str,
    label: &str,
    usd: &str,
    observed_at: DateTime<Utc>,
) {
    use tollgate_clickhouse::credits::{insert, CreditInsertRow};
    insert(
        env.db.client(),
        &[CreditInsertRow {
            provider: provider.into(),
            key_label: label.into(),
            org_id: org.into(),
            balance_nusd: Some(Nanos::parse_usd(usd).unwrap().get()),
            total_credits_nusd: 0,
            total_usage_nusd: 0,
            status: "manual".into(),
            error: String::new(),
            observed_at,
        }],
    )
    .await
    .unwrap();
}

/// A real SMTP server for the test: Python's `aiosmtpd` (pinned in
/// `tests/python/requirements.txt`, installed by `cargo xtask setup` in `target/py-venv`),
/// storing what it receives in a maildir. Killed on drop.
pub struct SmtpServer {
    pub port: u16,
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl SmtpServer {
    pub fn start() -> SmtpServer {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let python = root.join("target/py-venv/bin/python");
        assert!(python.exists(), "no Python venv: run `cargo xtask setup`");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = std::process::Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(dir.path().join("mail"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "aiosmtpd did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        SmtpServer { port, child, dir }
    }

    /// The messages received so far, as raw text.
    pub fn messages(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.dir.path().join("mail/new")) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stand-in for Slack's Web API `chat.postMessage`: answers `{"ok": true}` for a known
/// channel and `{"ok": false, "error": "channel_not_found"}` for `#missing`, as Slack does
/// (HTTP 200 both times); records what it was sent.
pub struct SlackApi {
    pub addr: SocketAddr,
    posts: Posts,
}

/// What the Slack stand-in was sent: headers and JSON body of each post.
type Posts = Arc<Mutex<Vec<(HeaderMap, Value)>>>;

async fn post_message(
    State(posts): State<Posts>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::Json<Value> {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let missing = body["channel"] == "#missing";
    posts.lock().unwrap().push((headers, body));
    axum::Json(if missing {
        json!({"ok": false, "error": "channel_not_found"})
    } else {
        json!({"ok": true, "channel": "C0123", "ts": "1790000000.000100"})
    })
}

impl SlackApi {
    pub async fn start() -> SlackApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let posts = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/api/chat.postMessage", post(post_message))
            .with_state(posts.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        SlackApi { addr, posts }
    }

    pub fn url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    pub fn posts(&self) -> Vec<(HeaderMap, Value)> {
        self.posts.lock().unwrap().clone()
    }
}
