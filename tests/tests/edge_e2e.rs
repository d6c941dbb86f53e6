//! The official OpenAI Python SDK → the wasm worker in workerd → the mock provider, with the
//! real collector and ClickHouse behind: the SDK gets exactly the provider's answers, and each
//! call is in `usage_events` with exact tokens, cost and cost source.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use edge_worker::local::StandIns;
use tollgate_clickhouse::testing::TestDb;
use tollgate_clickhouse::UsageEventRow;
use tollgate_e2e::harness::{
    app_key, end_user_app_key, free_port, run_python, worker_bindings, CollectorProc, WorkerdProc,
};
use tollgate_e2e::mock_provider::{MockOptions, MockProvider};
use usage_core::{CostSource, ErrorClass, Nanos, UsageRecord, UsageSource};

/// A test database, a collector writing to it, the mock provider, and the worker in workerd
/// with one app key (`key`) of `org`/`user`/`app`, its bindings adjusted by `tweak`.
/// (Fields drop in this order: the processes stop before their database and spool go.)
struct Stack {
    worker: WorkerdProc,
    _collector: CollectorProc,
    mock: MockProvider,
    key: String,
    db: TestDb,
    _dir: tempfile::TempDir,
}

impl Stack {
    async fn start(
        n: u32,
        who: (&str, &str, &str),
        tweak: impl FnOnce(&mut Vec<(String, String)>),
    ) -> Stack {
        Self::start_with(n, who, tweak, |_| StandIns::default()).await
    }

    /// [`Stack::start`] with a Queue stand-in, made from the app key's table entry
    /// (`"<hash>":{…}`).
    async fn start_with(
        n: u32,
        (org, user, app): (&str, &str, &str),
        tweak: impl FnOnce(&mut Vec<(String, String)>),
        stand_ins: impl FnOnce(&str) -> StandIns,
    ) -> Stack {
        let db = TestDb::new().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let collector = CollectorProc::start(db.url(), db.name(), dir.path(), |_| {});
        let mock = MockProvider::start(MockOptions::default()).await.unwrap();
        // A server app acting for users of its own: the SDK script names them.
        let (key, entry) = end_user_app_key(n, org, user, app);
        let mut bindings = worker_bindings(
            &mock.base_url(),
            &collector.records_url(),
            &format!("{{{entry}}}"),
        );
        tweak(&mut bindings);
        let worker = WorkerdProc::start_full(bindings, Vec::new(), stand_ins(&entry));
        Stack {
            worker,
            _collector: collector,
            mock,
            key,
            db,
            _dir: dir,
        }
    }
}

/// The rows of `usage_events` once there are at least `expected` (or after 30 s).
async fn rows_when(db: &TestDb, expected: usize) -> Vec<UsageEventRow> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = db
            .client()
            .query("SELECT ?fields FROM usage_events")
            .with_setting("wait_end_of_query", "1")
            .fetch_all::<UsageEventRow>()
            .await
            .unwrap();
        if rows.len() >= expected || Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn records_by_task(db: &TestDb, expected: usize) -> BTreeMap<String, UsageRecord> {
    let records: Vec<UsageRecord> = rows_when(db, expected)
        .await
        .iter()
        .map(|r| UsageRecord::try_from(r).unwrap())
        .collect();
    let by_task: BTreeMap<String, UsageRecord> = records
        .iter()
        .map(|r| (r.task_type.clone(), r.clone()))
        .collect();
    assert_eq!(
        by_task.len(),
        records.len(),
        "one record per call: {records:#?}"
    );
    assert_eq!(
        records.len(),
        expected,
        "records so far: {:?}",
        by_task.keys().collect::<Vec<_>>()
    );
    by_task
}

fn usd(s: &str) -> Nanos {
    Nanos::parse_usd(s).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_through_the_worker_gets_provider_answers_and_every_call_is_recorded() {
    let stack = Stack::start(1, ("org_e2e", "svc-user", "e2e-app"), |_| {}).await;
    let (db, key) = (&stack.db, stack.key.clone());
    let base = stack.worker.base_url();
    let out = tokio::task::spawn_blocking(move || {
        run_python(
            "sdk_calls.py",
            &[
                ("TOLLGATE_BASE_URL", base.as_str()),
                ("TOLLGATE_KEY", key.as_str()),
            ],
        )
    })
    .await
    .unwrap();

    // --- what the SDK received: the provider's answers, unchanged ---
    let plain = &out["chat_plain"];
    assert_eq!(plain["model"], "gpt-4o-mini-2024-07-18");
    assert_eq!(plain["choices"][0]["message"]["content"], "Hello from the");
    assert_eq!(plain["usage"]["prompt_tokens"], 2000);
    assert_eq!(
        plain["usage"]["prompt_tokens_details"]["cached_tokens"],
        1500
    );
    assert_eq!(
        plain["usage"]["completion_tokens_details"]["reasoning_tokens"],
        100
    );

    let stream = out["chat_stream"].as_array().unwrap();
    let text: String = stream
        .iter()
        .filter_map(|c| {
            c["choices"]
                .get(0)
                .and_then(|ch| ch["delta"]["content"].as_str())
        })
        .collect();
    assert_eq!(text, "Hello from the mock provider");
    assert!(
        stream
            .iter()
            .all(|c| c["usage"].is_null() && !c["choices"].as_array().unwrap().is_empty()),
        "the usage chunk the worker asked for must not reach a client that did not: {stream:#?}"
    );

    let with_usage = out["chat_stream_usage"].as_array().unwrap();
    let last = with_usage.last().unwrap();
    assert!(last["choices"].as_array().unwrap().is_empty());
    assert_eq!(last["usage"]["prompt_tokens"], 50);

    assert_eq!(out["responses_plain"]["output_text"], "Hello from the");
    assert_eq!(
        out["responses_plain"]["usage"]["input_tokens_details"]["cached_tokens"],
        128
    );
    let events: Vec<&str> = out["responses_stream"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(events.first(), Some(&"response.created"));
    assert_eq!(events.last(), Some(&"response.completed"));
    assert_eq!(out["embeddings"]["n"], 2);
    assert_eq!(out["embeddings"]["usage"]["prompt_tokens"], 8123);
    assert_eq!(out["openrouter"]["model"], "anthropic/claude-sonnet-4.5");
    assert_eq!(out["openrouter"]["usage"]["cost"], 0.0149835);

    assert_eq!(out["bad_key"]["status"], 401);
    assert_eq!(out["bad_key"]["type"], "AuthenticationError");
    assert_eq!(out["bad_key"]["body"]["code"], "invalid_api_key");
    assert_eq!(out["provider_500"]["status"], 500);
    assert_eq!(
        out["provider_500"]["body"]["message"],
        "The server had an error while processing your request (mock)."
    );
    assert_eq!(out["client_abort"], 2);
    assert_eq!(out["upstream_timeout"]["status"], 504);
    assert_eq!(out["upstream_timeout"]["body"]["code"], "upstream_timeout");

    // --- what was recorded: one row per call that reached the worker with a valid key ---
    let recs = records_by_task(db, 11).await;
    let r = &recs["chat_plain"];
    assert_eq!(
        (r.org_id.as_str(), r.user_id.as_str(), r.app_id.as_str()),
        ("org_e2e", "alice", "e2e-app")
    );
    assert_eq!(r.tags.get("team").map(String::as_str), Some("qa"));
    assert_eq!(
        (
            r.input_tokens,
            r.cached_input_tokens,
            r.output_tokens,
            r.reasoning_tokens
        ),
        (2000, 1500, 300, 100)
    );
    // (500 × 0.15 + 1500 × 0.075 + 300 × 0.60) / 1M — cached tokens once, at the cached rate
    assert_eq!(
        (r.cost_nusd, r.cost_source),
        (usd("0.0003675"), CostSource::PriceTable)
    );
    assert_eq!(
        (r.model_served.as_str(), r.status_code, r.error_class),
        ("gpt-4o-mini-2024-07-18", 200, ErrorClass::None)
    );
    assert!(!r.stream);

    let r = &recs["chat_stream"];
    assert!(r.stream);
    assert_eq!(
        (r.input_tokens, r.output_tokens, r.usage_source),
        (40, 5, UsageSource::Provider)
    );
    assert_eq!(r.cost_nusd, usd("0.000009")); // 40 × 0.15 + 5 × 0.60, per 1M
    assert!(r.ttft_ms.is_some() && r.ttft_ms <= Some(r.latency_ms));

    let r = &recs["chat_stream_usage"];
    assert_eq!(
        (r.input_tokens, r.cached_input_tokens, r.output_tokens),
        (50, 10, 4)
    );
    assert_eq!(r.cost_nusd, usd("0.00000915")); // 40 × 0.15 + 10 × 0.075 + 4 × 0.60, per 1M

    let r = &recs["responses_plain"];
    assert_eq!(
        (r.input_tokens, r.cached_input_tokens, r.output_tokens),
        (328, 128, 52)
    );
    assert_eq!(r.model_served, "gpt-4.1-2025-04-14");
    assert_eq!(r.cost_nusd, usd("0.000880")); // 200 × 2 + 128 × 0.5 + 52 × 8, per 1M (gpt-4.1)

    let r = &recs["responses_stream"];
    assert_eq!(
        (
            r.input_tokens,
            r.output_tokens,
            r.reasoning_tokens,
            r.error_class
        ),
        (37, 411, 384, ErrorClass::None)
    );

    let r = &recs["embeddings"];
    assert_eq!((r.input_tokens, r.output_tokens), (8123, 0));
    assert_eq!(r.cost_nusd, usd("0.00016246")); // 8123 × 0.02 / 1M

    let r = &recs["openrouter"];
    assert_eq!(
        (r.provider.as_str(), r.model_requested.as_str()),
        ("openrouter", "openrouter/anthropic/claude-sonnet-4.5")
    );
    assert_eq!(
        (r.input_tokens, r.cached_input_tokens, r.cache_write_tokens),
        (12450, 11000, 1200)
    );
    assert_eq!(
        (r.cost_nusd, r.cost_source),
        (usd("0.0149835"), CostSource::Provider)
    );

    let r = &recs["unpriced"];
    assert_eq!(
        (r.cost_nusd, r.cost_source),
        (Nanos::ZERO, CostSource::Unpriced)
    );
    assert_eq!((r.input_tokens, r.output_tokens), (120, 30));

    let r = &recs["provider_500"];
    assert_eq!(
        (r.status_code, r.error_class, r.usage_source),
        (500, ErrorClass::Upstream5xx, UsageSource::None)
    );

    let r = &recs["client_abort"];
    assert_eq!(r.error_class, ErrorClass::Aborted);
    assert_eq!(r.usage_source, UsageSource::Estimated);
    assert!(
        r.output_tokens >= 2 && r.output_tokens < 40,
        "estimated from the chunks seen: {}",
        r.output_tokens
    );

    let r = &recs["upstream_timeout"];
    assert_eq!((r.status_code, r.error_class), (504, ErrorClass::Timeout));
    assert!(r.latency_ms >= 3000);

    for r in recs.values() {
        assert_eq!(r.edge_region, "E2E");
        assert_eq!(r.key_id, "key1");
    }
}

/// A provider that goes quiet mid-stream for longer than the edge's stream watchdog waits
/// (15 s), as a reasoning model may, while the client keeps reading: the client still gets the
/// whole stream, and the call is recorded complete with the provider's usage — not `aborted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_pause_mid_stream_is_not_a_client_that_left() {
    let stack = Stack::start(3, ("org_pause", "", "pause-app"), |_| {}).await;
    let (key, base) = (stack.key.clone(), stack.worker.base_url());
    let body = serde_json::json!({"model": "gpt-4o-mini", "stream": true,
        "mock": {"pause_ms": 17_000, "usage": {"prompt_tokens": 11, "completion_tokens": 7}},
        "messages": [{"role": "user", "content": "think first"}]});
    let (status, _, text) = tokio::task::spawn_blocking(move || chat_call(&base, &key, body))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(
        !text.contains("\"usage\":{"),
        "the injected usage chunk is stripped: {text}"
    );

    let rows = rows_when(&stack.db, 1).await;
    let [row] = rows.as_slice() else {
        panic!("one record expected: {rows:?}");
    };
    assert_eq!(row.error_class, "none");
    assert_eq!((row.input_tokens, row.output_tokens), (11, 7));
    assert!(row.latency_ms >= 17_000, "{}", row.latency_ms);
}

/// A client that hangs up mid-stream: the edge stops the provider's request at once (it would
/// go on generating, and billing, tokens nobody reads) and records the call as aborted without
/// waiting for the stream's end. (Before, the record waited for the runtime to end the pipe;
/// workerd sometimes never did, and a later workerd restart lost the record.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_mid_stream_stops_the_provider_and_is_recorded_at_once() {
    hang_up_mid_stream(5, false).await;
}

/// The same when the client asked for the usage chunk itself: its stream is then a native
/// branch of the provider's (`tee()`), and the request's signal alone tells the edge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_asked_for_usage_and_hangs_up_stops_the_provider_too() {
    hang_up_mid_stream(6, true).await;
}

async fn hang_up_mid_stream(n: u32, client_asks_usage: bool) {
    let stack = Stack::start(n, ("org_hangup", "", "hangup-app"), |_| {}).await;
    let (key, base) = (stack.key.clone(), stack.worker.base_url());
    // 300 chunks 100 ms apart: 30 s, if nobody stopped it.
    let mut body = serde_json::json!({"model": "gpt-4o-mini", "stream": true,
        "mock": {"chunks": 300, "chunk_delay_ms": 100},
        "messages": [{"role": "user", "content": "a long answer"}]});
    if client_asks_usage {
        body["stream_options"] = serde_json::json!({"include_usage": true});
    }
    let (status, first) = tokio::task::spawn_blocking(move || {
        let mut resp = send_chat(&base, &key, &body);
        let mut first = [0u8; 64];
        let n = std::io::Read::read(&mut resp.body_mut().as_reader(), &mut first).unwrap();
        // Dropping the response closes the connection: the client hangs up.
        (resp.status().as_u16(), n)
    })
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert!(first > 0, "the client got the stream's first bytes");

    let rows = rows_when(&stack.db, 1).await;
    let [row] = rows.as_slice() else {
        panic!("one record expected: {rows:?}");
    };
    assert_eq!(row.error_class, "aborted");
    assert!(
        row.latency_ms < 20_000,
        "recorded when the client left, not when the 30 s stream would have ended: {} ms",
        row.latency_ms
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while stack
        .mock
        .stats
        .streams_cut_off
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "the provider's stream still runs 30 s after its client left"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One call through the worker: `(status, x-tollgate-event-id)`; the body is read to the end.
fn call_for_event_id(base: &str, key: &str, body: serde_json::Value) -> (u16, Option<String>) {
    let (status, id, _) = chat_call(base, key, body);
    (status, id)
}

/// Sends one chat request through the worker; the answer's body is the caller's to read.
fn send_chat(base: &str, key: &str, body: &serde_json::Value) -> ureq::http::Response<ureq::Body> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    agent
        .post(&format!("{base}/chat/completions"))
        .header("authorization", &format!("Bearer {key}"))
        .header("content-type", "application/json")
        .send(body.to_string().as_bytes())
        .unwrap()
}

/// One chat call through the worker: `(status, x-tollgate-event-id, body)`.
fn chat_call(base: &str, key: &str, body: serde_json::Value) -> (u16, Option<String>, String) {
    let mut resp = send_chat(base, key, &body);
    let id = resp
        .headers()
        .get(edge_worker::EVENT_ID_HEADER)
        .map(|v| v.to_str().unwrap().to_string());
    let text = resp.body_mut().read_to_string().unwrap();
    (resp.status().as_u16(), id, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_recorded_answer_names_its_row_by_event_id() {
    let stack = Stack::start(2, ("org_ids", "", "ids-app"), |bindings| {
        bindings.retain(|(k, _)| k != "UPSTREAM_TIMEOUT_MS");
        bindings.push(("UPSTREAM_TIMEOUT_MS".into(), "500".into()));
    })
    .await;
    let (db, key, base) = (&stack.db, stack.key.clone(), stack.worker.base_url());
    let calls = tokio::task::spawn_blocking(move || {
        let chat = |stream: bool, mock: serde_json::Value| {
            serde_json::json!({"model": "gpt-4o-mini", "stream": stream, "mock": mock,
                "messages": [{"role": "user", "content": "hi"}]})
        };
        let mut calls = vec![
            call_for_event_id(&base, &key, chat(false, serde_json::json!({}))),
            call_for_event_id(&base, &key, chat(true, serde_json::json!({}))),
            call_for_event_id(&base, &key, chat(false, serde_json::json!({"status": 500}))),
            // The edge's own refusal after the key was accepted: the provider is too slow.
            call_for_event_id(
                &base,
                &key,
                chat(false, serde_json::json!({"delay_ms": 2000})),
            ),
        ];
        // No record without a valid key, so no event id either.
        let refused = call_for_event_id(&base, "tg_unknown", chat(false, serde_json::json!({})));
        assert_eq!(refused, (401, None));
        calls.sort();
        calls
    })
    .await
    .unwrap();
    let statuses: Vec<u16> = calls.iter().map(|c| c.0).collect();
    assert_eq!(statuses, [200, 200, 500, 504]);

    let rows = rows_when(db, calls.len()).await;
    assert_eq!(rows.len(), calls.len(), "one row per answered call");
    for (status, id) in &calls {
        let id = uuid::Uuid::parse_str(id.as_deref().expect("an event id header")).unwrap();
        let row = rows
            .iter()
            .find(|r| r.event_id == id)
            .unwrap_or_else(|| panic!("no row for event id {id} (status {status})"));
        assert_eq!(row.status_code, *status);
    }
}

/// The production shipping path, through workerd's own `queue` binding to a local stand-in
/// (`edge_worker::local::StandIns`): every record goes to `USAGE_QUEUE`, whose batches reach
/// the worker's `queue` handler, which posts them to the collector and acks them. A revoked
/// key and an unknown one are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_through_the_queue() {
    let queue_addr = format!("127.0.0.1:{}", free_port());
    let (revoked_key, revoked_entry) = app_key(9, "org_kv", "", "old-app");
    let revoked_entry = revoked_entry.replace('}', r#","revoked":true}"#);
    let stack = Stack::start_with(
        4,
        ("org_kv", "u_kv", "kv-app"),
        |bindings| {
            for (k, v) in bindings.iter_mut() {
                if k == "APP_KEYS" {
                    *v = format!("{},{revoked_entry}}}", v.strip_suffix('}').unwrap());
                }
            }
        },
        |_| StandIns {
            usage_queue: Some(queue_addr.clone()),
        },
    )
    .await;
    let (key, base) = (stack.key.clone(), stack.worker.base_url());
    let calls = tokio::task::spawn_blocking(move || {
        let chat = |stream: bool| {
            serde_json::json!({"model": "gpt-4o-mini", "stream": stream,
                "messages": [{"role": "user", "content": "hi"}]})
        };
        assert_eq!(
            call_for_event_id(&base, &revoked_key, chat(false)),
            (401, None)
        );
        assert_eq!(
            call_for_event_id(
                &base,
                "tg_unknown_kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk",
                chat(false)
            ),
            (401, None)
        );
        (0..6)
            .map(|i| call_for_event_id(&base, &key, chat(i % 2 == 1)))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert!(calls.iter().all(|(status, _)| *status == 200), "{calls:?}");

    let rows = rows_when(&stack.db, calls.len()).await;
    assert_eq!(rows.len(), calls.len(), "one row per call: {rows:?}");
    for (_, id) in &calls {
        let id = uuid::Uuid::parse_str(id.as_deref().expect("an event id header")).unwrap();
        let row = rows
            .iter()
            .find(|r| r.event_id == id)
            .expect("the call's row");
        // Attributed from the key's table entry.
        assert_eq!(
            (
                row.org_id.as_str(),
                row.user_id.as_str(),
                row.app_id.as_str()
            ),
            ("org_kv", "u_kv", "kv-app")
        );
    }
    // Every record went through the queue (none posted directly) and was acked.
    // The queue counts a batch acked once the consumer returned, just after its rows landed.
    let stats_url = format!("http://{queue_addr}/stats");
    let stats: serde_json::Value = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = ureq::get(&stats_url)
                .call()
                .unwrap()
                .body_mut()
                .read_to_string()
                .unwrap();
            let stats: serde_json::Value = serde_json::from_str(&text).unwrap();
            if stats["acked"] == 6 || Instant::now() > deadline {
                return stats;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
    assert_eq!(stats["sent"], 6, "{stats}");
    assert_eq!(stats["acked"], 6, "{stats}");
    assert_eq!(
        (stats["retried"].as_u64(), stats["dead"].as_u64()),
        (Some(0), Some(0)),
        "{stats}"
    );
}

/// The collector's count of ingest requests answered with `status`.
fn collector_answers(collector: &CollectorProc, status: u16) -> u64 {
    let url = format!("http://{}/metrics", collector.addr);
    let text = ureq::get(&url)
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .unwrap_or_default();
    let label = format!("status=\"{status}\"");
    text.lines()
        .filter(|l| l.starts_with("tollgate_collector_requests_total") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A signing-secret rotation done in the wrong order (the edge signs with the new secret
/// before the collector accepts it): the collector answers 401, and the edge keeps the records
/// and sends them again instead of dropping them. Once the collector accepts both secrets
/// (the documented rotation: collectors first, then the edge), every record arrives, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_refused_for_their_signature_are_kept_and_arrive_after_the_rotation() {
    const NEW_SECRET: &str = "e2e-rotated-secret-fedcba9876543210";
    let db = TestDb::new().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut collector = CollectorProc::start(db.url(), db.name(), dir.path(), |_| {});
    let mock = MockProvider::start(MockOptions::default()).await.unwrap();
    let (key, entry) = app_key(7, "org_rotation", "", "rotation-app");
    let mut bindings = worker_bindings(
        &mock.base_url(),
        &collector.records_url(),
        &format!("{{{entry}}}"),
    );
    for (k, v) in &mut bindings {
        if k == "COLLECTOR_SIGNING_SECRET" {
            *v = NEW_SECRET.to_string();
        }
    }
    let worker = WorkerdProc::start(bindings);
    let base = worker.base_url();
    let chat = serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let (b, k, c) = (base.clone(), key.clone(), chat.clone());
    let mut ids = tokio::task::spawn_blocking(move || {
        (0..3)
            .map(|_| call_for_event_id(&b, &k, c.clone()))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();

    // The collector refuses the batch: nothing is stored while it does.
    let deadline = Instant::now() + Duration::from_secs(30);
    while collector_answers(&collector, 401) == 0 {
        assert!(
            Instant::now() < deadline,
            "the edge never reached the collector"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rows_when(&db, 0).await.len(), 0);

    // Rotate the collector: the new secret and the old one, same address and spool.
    collector.proc.kill();
    let mut config: tollgate_collector::config::Config =
        service_kit::config::load(Some(&collector.config_path.with_extension("toml"))).unwrap();
    config.ingest.signing_secrets = vec![
        service_kit::Secret::new(NEW_SECRET.to_string()),
        service_kit::Secret::new(tollgate_e2e::harness::SIGNING_SECRET.to_string()),
    ];
    CollectorProc::write_config(&collector.config_path, &config);
    let collector = CollectorProc::start_with(&collector.config_path, collector.addr);

    // The refused records are still in the edge's outbox; the next call's flush (or the
    // retries still running) carries them.
    let (b, k) = (base.clone(), key.clone());
    ids.push(
        tokio::task::spawn_blocking(move || call_for_event_id(&b, &k, chat))
            .await
            .unwrap(),
    );
    let rows = rows_when(&db, ids.len()).await;
    assert_eq!(rows.len(), ids.len(), "every record arrived, once");
    for (status, id) in &ids {
        assert_eq!(*status, 200);
        let id = uuid::Uuid::parse_str(id.as_deref().unwrap()).unwrap();
        assert!(rows.iter().any(|r| r.event_id == id), "no row for {id}");
    }
    drop(collector);
}

/// A raw HTTP exchange with the worker: (status, headers lower-cased, body).
fn exchange(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, BTreeMap<String, String>, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .allow_non_standard_methods(true)
        .build()
        .into();
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = match body {
        Some(b) => agent.run(req.body(b.to_string()).unwrap()),
        None => agent.run(req.body(()).unwrap()),
    }
    .unwrap();
    let head = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (resp.status().as_u16(), head, text)
}

/// Browser apps: a preflight from an allowed origin is answered with what it may do, any other
/// origin's is refused, real answers (success and refusal) name the allowed origin and expose
/// the event id, and a known path asked with the wrong method says which method it takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_from_allowed_origins_get_cors_and_others_do_not() {
    let stack = Stack::start(8, ("org_cors", "", "cors-app"), |bindings| {
        bindings.push((
            "CORS_ALLOWED_ORIGINS".into(),
            "https://app.example.com".into(),
        ));
    })
    .await;
    let (key, base) = (stack.key.clone(), stack.worker.base_url());
    tokio::task::spawn_blocking(move || {
        let url = format!("{base}/chat/completions");
        let (status, h, _) = exchange(
            "OPTIONS",
            &url,
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "authorization, content-type, x-stainless-os",
                ),
            ],
            None,
        );
        assert_eq!(status, 204);
        assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
        assert_eq!(h["access-control-allow-methods"], "GET, POST, OPTIONS");
        assert_eq!(
            h["access-control-allow-headers"],
            "authorization, content-type, x-stainless-os"
        );

        let (status, h, body) = exchange(
            "OPTIONS",
            &url,
            &[
                ("origin", "https://evil.example"),
                ("access-control-request-method", "POST"),
            ],
            None,
        );
        assert_eq!(status, 403, "{body}");
        assert!(!h.contains_key("access-control-allow-origin"));
        assert!(body.contains("origin_not_allowed"), "{body}");

        let chat = r#"{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}"#;
        let auth = format!("Bearer {key}");
        let (status, h, _) = exchange(
            "POST",
            &url,
            &[
                ("origin", "https://app.example.com"),
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            Some(chat),
        );
        assert_eq!(status, 200);
        assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
        assert!(h["access-control-expose-headers"].contains("x-tollgate-event-id"));
        assert!(h.contains_key("x-tollgate-event-id"));
        // A refusal carries them too (the page can read why); another origin gets none.
        let (status, h, _) = exchange(
            "POST",
            &url,
            &[
                ("origin", "https://app.example.com"),
                ("authorization", "Bearer tg_nope"),
            ],
            Some(chat),
        );
        assert_eq!(status, 401);
        assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
        let (_, h, _) = exchange(
            "POST",
            &url,
            &[("origin", "https://evil.example"), ("authorization", &auth)],
            Some(chat),
        );
        assert!(!h.contains_key("access-control-allow-origin"));

        let (status, _, body) = exchange("GET", &url, &[("authorization", &auth)], None);
        assert_eq!(status, 405, "{body}");
        assert!(body.contains("use POST"), "{body}");
    })
    .await
    .unwrap();
}
