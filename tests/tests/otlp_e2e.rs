//! OpenTelemetry export from the real collector process (collector/src/otlp), each case of
//! its module docs injected:
//! - stored calls arrive as GenAI client spans, read by the official protobuf decoder
//!   (Python `opentelemetry-proto`), every attribute of a known call checked;
//! - a receiver answering 503 gets the batch again until it takes it, each record once;
//! - a receiver refusing with 400 loses the export, not the records;
//! - a receiver that never answers does not hold ingest back: every record is stored, the
//!   export queue stays bounded and counts what it dropped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use chrono::{Timelike, Utc};
use serde_json::{json, Value};
use service_kit::Secret;
use tollgate_clickhouse::testing::TestDb;
use tollgate_collector::testdata::record;
use tollgate_e2e::harness::{post_signed_batch, run_python, CollectorProc};
use usage_core::{CostSource, ErrorClass, Nanos, UsageRecord, UsageSource};

/// How the receiver answers.
#[derive(Clone, Copy)]
enum Behaviour {
    Accept,
    /// 503 (with `Retry-After: 0`) this many times, then 200.
    BusyThenAccept(usize),
    Refuse,
    /// Never answers.
    Hang,
}

/// One request the receiver got: path, headers, body, the status it answered.
type Got = (String, HeaderMap, Bytes, u16);

#[derive(Clone)]
struct Receiver {
    behaviour: Behaviour,
    got: Arc<Mutex<Vec<Got>>>,
}

async fn receive(
    State(r): State<Receiver>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let n = r.got.lock().unwrap().len();
    let status = match r.behaviour {
        Behaviour::Accept => 200,
        Behaviour::BusyThenAccept(k) if n < k => 503,
        Behaviour::BusyThenAccept(_) => 200,
        Behaviour::Refuse => 400,
        Behaviour::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            200
        }
    };
    r.got
        .lock()
        .unwrap()
        .push((uri.path().to_string(), headers, body, status));
    let mut resp = StatusCode::from_u16(status).unwrap().into_response();
    if status == 503 {
        resp.headers_mut()
            .insert("retry-after", "0".parse().unwrap());
    }
    resp
}

async fn start_receiver(behaviour: Behaviour) -> (String, Receiver) {
    let r = Receiver {
        behaviour,
        got: Arc::default(),
    };
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, r)
}

fn start_collector(
    db: &TestDb,
    dir: &std::path::Path,
    endpoint: &str,
    tweak: impl FnOnce(&mut tollgate_collector::otlp::OtlpConfig),
) -> CollectorProc {
    let endpoint = endpoint.to_string();
    CollectorProc::start(db.url(), db.name(), dir, move |c| {
        c.otlp.endpoint = endpoint;
        c.otlp.batch_delay_ms = 100;
        c.otlp.backoff_ms = 50;
        c.otlp.timeout_ms = 5_000;
        tweak(&mut c.otlp);
    })
}

async fn post_batch(collector: &CollectorProc, batch: Vec<UsageRecord>) {
    let url = collector.records_url();
    let status = tokio::task::spawn_blocking(move || post_signed_batch(&url, &batch))
        .await
        .unwrap();
    assert_eq!(status, Ok(202));
}

/// Polls `probe` until it returns `Some`, for up to 30 s.
async fn until<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stored(db: &TestDb) -> u64 {
    db.client()
        .query("SELECT count() FROM usage_events")
        .with_setting("wait_end_of_query", "1")
        .fetch_one::<u64>()
        .await
        .unwrap()
}

/// The collector's metric `name` with `labels` (0 when absent).
fn metric(collector: &CollectorProc, line_start: &str) -> u64 {
    let text = ureq::get(format!("http://{}/metrics", collector.addr))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Decodes the bodies the receiver answered 200 with, through the official decoder.
fn decode(bodies: &[Bytes]) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for (i, b) in bodies.iter().enumerate() {
        let p = dir.path().join(format!("{i}.pb"));
        std::fs::write(&p, b).unwrap();
        paths.push(p.display().to_string());
    }
    let files = paths.join(":");
    run_python("otlp_decode.py", &[("OTLP_FILES", files.as_str())])
        .as_array()
        .unwrap()
        .clone()
}

fn accepted(r: &Receiver) -> Vec<Bytes> {
    r.got
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, _, _, s)| *s == 200)
        .map(|(_, _, b, _)| b.clone())
        .collect()
}

/// The known call: a streamed chat with cached, cache-write and reasoning tokens, tags, and
/// the provider's own cost.
fn known_call() -> UsageRecord {
    let mut r = record(1);
    r.ts = Utc::now().with_nanosecond(0).unwrap();
    r.stream = true;
    r.provider = "openrouter".into();
    r.model_requested = "anthropic/claude-sonnet-4.5".into();
    r.model_served = "anthropic/claude-4.5-sonnet-20250929".into();
    r.user_id = "alice".into();
    r.org_id = "acme".into();
    r.app_id = "support-bot".into();
    r.key_id = "key_otlp".into();
    r.task_type = "summarize".into();
    r.edge_region = "FRA".into();
    r.input_tokens = 2000;
    r.output_tokens = 300;
    r.cached_input_tokens = 1500;
    r.cache_write_tokens = 200;
    r.reasoning_tokens = 100;
    r.latency_ms = 1234;
    r.ttft_ms = Some(210);
    r.upstream_ms = 1200;
    r.cost_nusd = Nanos::new(4_567_000);
    r.cost_source = CostSource::Provider;
    r.pricing_version = String::new();
    r.service_tier = "priority".into();
    r.tags = BTreeMap::from([("team".into(), "qa".into())]);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_calls_arrive_as_genai_spans_the_official_decoder_reads() {
    let db = TestDb::new().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (url, receiver) = start_receiver(Behaviour::Accept).await;
    let collector = start_collector(&db, dir.path(), &url, |o| {
        o.genai_cost_attributes = true;
        o.service_name = "tollgate-e2e".into();
        o.headers = vec![Secret::new("x-api-key=otlp-secret-1".to_string())];
    });
    let known = known_call();
    let mut unpriced = record(2);
    unpriced.cost_source = CostSource::Unpriced;
    unpriced.cost_nusd = Nanos::ZERO;
    unpriced.pricing_version = String::new();
    let mut failed = record(3);
    failed.status_code = 502;
    failed.error_class = ErrorClass::Upstream5xx;
    failed.usage_source = UsageSource::None;
    failed.input_tokens = 0;
    failed.output_tokens = 0;
    failed.cached_input_tokens = 0;
    post_batch(
        &collector,
        vec![known.clone(), unpriced.clone(), failed.clone()],
    )
    .await;

    let bodies = until("3 spans at the receiver", async || {
        let bodies = accepted(&receiver);
        let spans = if bodies.is_empty() {
            Vec::new()
        } else {
            decode(&bodies)
        };
        (spans.len() >= 3).then_some(bodies)
    })
    .await;
    assert_eq!(stored(&db).await, 3, "what is exported is stored");
    {
        let got = receiver.got.lock().unwrap();
        let (path, headers, _, _) = &got[0];
        assert_eq!(path, "/v1/traces");
        assert_eq!(headers["content-type"], "application/x-protobuf");
        assert_eq!(headers["x-api-key"], "otlp-secret-1");
    }
    let spans = decode(&bodies);
    assert_eq!(spans.len(), 3, "each record once: {spans:?}");
    let by_id = |id: uuid::Uuid| {
        spans
            .iter()
            .find(|s| s["trace_id"] == id.simple().to_string())
            .unwrap_or_else(|| panic!("no span for {id}: {spans:?}"))
    };

    let s = by_id(known.event_id);
    assert_eq!(s["resource"]["service.name"], "tollgate-e2e");
    assert_eq!(s["scope"]["name"], "tollgate-collector");
    assert_eq!(s["span_id"], known.event_id.simple().to_string()[16..]);
    assert_eq!(s["name"], "chat anthropic/claude-sonnet-4.5");
    assert_eq!(s["kind"], 3, "CLIENT");
    let start = known.ts.timestamp_nanos_opt().unwrap() as u64;
    assert_eq!(s["start"], json!(start));
    assert_eq!(s["end"], json!(start + 1_234_000_000));
    assert_eq!(s["status"]["code"], 0, "UNSET: it succeeded");
    let want = json!({
        "gen_ai.operation.name": {"string": "chat"},
        "gen_ai.provider.name": {"string": "openrouter"},
        "gen_ai.request.model": {"string": "anthropic/claude-sonnet-4.5"},
        "gen_ai.response.model": {"string": "anthropic/claude-4.5-sonnet-20250929"},
        "gen_ai.request.stream": {"bool": true},
        "gen_ai.usage.input_tokens": {"int": 2000},
        "gen_ai.usage.output_tokens": {"int": 300},
        "gen_ai.usage.cache_read.input_tokens": {"int": 1500},
        "gen_ai.usage.cache_write.input_tokens": {"int": 200},
        "gen_ai.usage.reasoning.output_tokens": {"int": 100},
        "gen_ai.usage.cost.amount": {"double": 0.004567},
        "gen_ai.usage.cost.currency": {"string": "USD"},
        "gen_ai.usage.cost.source": {"string": "provider"},
        "http.response.status_code": {"int": 200},
        "tollgate.event_id": {"string": known.event_id.to_string()},
        "tollgate.org_id": {"string": "acme"},
        "tollgate.user_id": {"string": "alice"},
        "tollgate.app_id": {"string": "support-bot"},
        "tollgate.key_id": {"string": "key_otlp"},
        "tollgate.task_type": {"string": "summarize"},
        "tollgate.edge_region": {"string": "FRA"},
        "tollgate.service_tier": {"string": "priority"},
        "tollgate.endpoint": {"string": "chat.completions"},
        "tollgate.usage_source": {"string": "provider"},
        "tollgate.ttft_ms": {"int": 210},
        "tollgate.upstream_ms": {"int": 1200},
        "tollgate.cost.source": {"string": "provider"},
        "tollgate.cost.usd": {"double": 0.004567},
        "tollgate.cost.nusd": {"int": 4_567_000},
        "tollgate.tag.team": {"string": "qa"},
    });
    assert_eq!(s["attributes"], want, "every attribute of the known call");

    // Unpriced: no cost at all (unknown, not zero); the source says why.
    let u = &by_id(unpriced.event_id)["attributes"];
    assert_eq!(u["tollgate.cost.source"], json!({"string": "unpriced"}));
    for absent in [
        "tollgate.cost.usd",
        "gen_ai.usage.cost.amount",
        "tollgate.pricing_version",
    ] {
        assert!(u.get(absent).is_none(), "{absent} on an unpriced call: {u}");
    }
    // Failed: ERROR status with the class; no usage attributes.
    let f = by_id(failed.event_id);
    assert_eq!(f["status"], json!({"code": 2, "message": "upstream_5xx"}));
    assert_eq!(
        f["attributes"]["error.type"],
        json!({"string": "upstream_5xx"})
    );
    assert_eq!(
        f["attributes"]["http.response.status_code"],
        json!({"int": 502})
    );
    assert!(f["attributes"].get("gen_ai.usage.input_tokens").is_none());
    assert_eq!(
        metric(&collector, "tollgate_collector_otlp_spans_exported_total"),
        3
    );
    // Secrets stay out of the log.
    assert!(!collector.proc.log().contains("otlp-secret-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_receiver_gets_the_batch_again_and_each_record_once() {
    let db = TestDb::new().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (url, receiver) = start_receiver(Behaviour::BusyThenAccept(2)).await;
    let collector = start_collector(&db, dir.path(), &url, |_| {});
    let batch: Vec<UsageRecord> = (10..15).map(record).collect();
    post_batch(&collector, batch.clone()).await;
    let bodies = until("the batch accepted after two 503s", async || {
        let b = accepted(&receiver);
        (!b.is_empty()).then_some(b)
    })
    .await;
    let spans = decode(&bodies);
    let mut ids: Vec<String> = spans
        .iter()
        .map(|s| s["trace_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    let mut want: Vec<String> = batch
        .iter()
        .map(|r| r.event_id.simple().to_string())
        .collect();
    want.sort();
    assert_eq!(ids, want, "each record once");
    let statuses: Vec<u16> = receiver.got.lock().unwrap().iter().map(|g| g.3).collect();
    assert_eq!(statuses, [503, 503, 200], "retried after 503 until taken");
    let all = receiver.got.lock().unwrap().clone();
    assert!(
        all.iter().all(|g| g.2 == all[0].2),
        "the same batch each time"
    );
    assert_eq!(
        metric(&collector, "tollgate_collector_otlp_spans_exported_total"),
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_receiver_loses_the_export_not_the_records() {
    let db = TestDb::new().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (url, receiver) = start_receiver(Behaviour::Refuse).await;
    let collector = start_collector(&db, dir.path(), &url, |_| {});
    post_batch(&collector, (20..24).map(record).collect()).await;
    until("the refusal counted", async || {
        (metric(
            &collector,
            "tollgate_collector_otlp_records_dropped_total{reason=\"refused\"}",
        ) == 4)
            .then_some(())
    })
    .await;
    assert_eq!(receiver.got.lock().unwrap().len(), 1, "400 is not retried");
    assert_eq!(stored(&db).await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_answers_does_not_hold_ingest_back() {
    let db = TestDb::new().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (url, _receiver) = start_receiver(Behaviour::Hang).await;
    let (queue, batch_records) = (20u64, 10u64);
    let collector = start_collector(&db, dir.path(), &url, |o| {
        o.queue_records = queue as usize;
        o.batch_records = batch_records as usize;
        o.timeout_ms = 600_000;
    });
    let total = 200u64;
    for chunk in (100..100 + u128::from(total))
        .collect::<Vec<_>>()
        .chunks(20)
    {
        post_batch(&collector, chunk.iter().copied().map(record).collect()).await;
    }
    // Every record is stored while the export is stuck on its first request.
    until("every record stored", async || {
        (stored(&db).await == total).then_some(())
    })
    .await;
    // The queue held at most `queue` records and the stuck request `batch_records`; the rest
    // was dropped from the export and counted.
    let dropped = until("the drops counted", async || {
        let d = metric(
            &collector,
            "tollgate_collector_otlp_records_dropped_total{reason=\"queue_full\"}",
        );
        (d >= total - queue - batch_records).then_some(d)
    })
    .await;
    assert!(dropped <= total, "{dropped}");
    assert_eq!(
        metric(&collector, "tollgate_collector_otlp_spans_exported_total"),
        0
    );
}
