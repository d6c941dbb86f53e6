//! The accept path, tested without a socket: every kind of bad request gets its documented
//! status and code, and nothing from a refused request reaches the spool.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use service_kit::Secret;
use tokio::sync::mpsc;
use tollgate_collector::config::Config;
use tollgate_collector::ingest::Reject;
use tollgate_collector::metrics::Metrics;
use tollgate_collector::sink::StoreHealth;
use tollgate_collector::spool::Spool;
use tollgate_collector::testdata::record;
use tollgate_collector::{app, AppState};
use tower::ServiceExt;
use usage_core::wire::{self, BatchFormat};

const SECRET: &str = "test-signing-secret-0123456789";

struct Harness {
    _dir: tempfile::TempDir,
    state: AppState,
    rejects: mpsc::Receiver<Vec<Reject>>,
}

fn harness(tweak: impl FnOnce(&mut Config)) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.ingest.signing_secrets = vec![Secret::new(SECRET.into())];
    config.spool.dir = dir.path().to_path_buf();
    config.ingest.max_body_bytes = 64 << 10;
    config.ingest.max_decompressed_bytes = 256 << 10;
    config.ingest.max_records_per_batch = 50;
    tweak(&mut config);
    let (spool, _) = Spool::open(config.spool_config()).unwrap();
    let (tx, rx) = mpsc::channel(16);
    let state = AppState::new(
        config,
        spool,
        Metrics::default(),
        Arc::new(StoreHealth::default()),
        tx,
    );
    Harness {
        _dir: dir,
        state,
        rejects: rx,
    }
}

fn now() -> i64 {
    Utc::now().timestamp()
}

fn signed(body: Vec<u8>) -> Request<Body> {
    let sig = wire::sign(SECRET.as_bytes(), now(), &body);
    Request::post("/v1/records")
        .header(wire::SIGNATURE_HEADER, sig)
        .body(Body::from(body))
        .unwrap()
}

async fn call(h: &Harness, req: Request<Body>) -> (StatusCode, serde_json::Value, Option<String>) {
    let resp = app(h.state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, json, retry)
}

fn batch(ids: std::ops::Range<u128>) -> Vec<u8> {
    wire::encode_batch(&ids.map(record).collect::<Vec<_>>(), BatchFormat::JsonArray)
}

#[tokio::test]
async fn bad_requests_get_their_documented_status_and_store_nothing() {
    let h = harness(|_| {});
    let good = batch(0..3);
    let bomb = wire::gzip(&vec![b' '; 1 << 20]);
    let cases: Vec<(&str, Request<Body>, StatusCode, &str)> = vec![
        (
            "no signature",
            Request::post("/v1/records")
                .body(Body::from(good.clone()))
                .unwrap(),
            StatusCode::UNAUTHORIZED,
            "missing_signature",
        ),
        (
            "wrong secret",
            Request::post("/v1/records")
                .header(
                    wire::SIGNATURE_HEADER,
                    wire::sign(b"another-secret-entirely", now(), &good),
                )
                .body(Body::from(good.clone()))
                .unwrap(),
            StatusCode::UNAUTHORIZED,
            "bad_signature",
        ),
        (
            "tampered body",
            Request::post("/v1/records")
                .header(
                    wire::SIGNATURE_HEADER,
                    wire::sign(SECRET.as_bytes(), now(), &good),
                )
                .body(Body::from(batch(0..2)))
                .unwrap(),
            StatusCode::UNAUTHORIZED,
            "bad_signature",
        ),
        (
            "replayed (stale timestamp)",
            Request::post("/v1/records")
                .header(
                    wire::SIGNATURE_HEADER,
                    wire::sign(SECRET.as_bytes(), now() - 600, &good),
                )
                .body(Body::from(good.clone()))
                .unwrap(),
            StatusCode::UNAUTHORIZED,
            "stale_signature",
        ),
        (
            "malformed signature header",
            Request::post("/v1/records")
                .header(wire::SIGNATURE_HEADER, "sha256=abc")
                .body(Body::from(good.clone()))
                .unwrap(),
            StatusCode::UNAUTHORIZED,
            "malformed_signature",
        ),
        (
            "not JSON",
            signed(b"hello".to_vec()),
            StatusCode::BAD_REQUEST,
            "malformed_body",
        ),
        (
            "truncated JSON",
            signed(b"[{\"event_id\":".to_vec()),
            StatusCode::BAD_REQUEST,
            "malformed_body",
        ),
        (
            "empty batch",
            signed(b"[]".to_vec()),
            StatusCode::BAD_REQUEST,
            "empty_batch",
        ),
        (
            "too many records",
            signed(batch(0..51)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_records",
        ),
        (
            "body too large",
            signed(vec![b' '; 70 << 10]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            "gzip bomb",
            {
                let mut r = signed(bomb);
                r.headers_mut()
                    .insert("content-encoding", "gzip".parse().unwrap());
                r
            },
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            "not gzip",
            {
                let mut r = signed(good.clone());
                r.headers_mut()
                    .insert("content-encoding", "gzip".parse().unwrap());
                r
            },
            StatusCode::BAD_REQUEST,
            "bad_gzip",
        ),
        (
            "unsupported encoding",
            {
                let mut r = signed(good.clone());
                r.headers_mut()
                    .insert("content-encoding", "br".parse().unwrap());
                r
            },
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
        ),
    ];
    for (name, req, status, code) in cases {
        let (got, body, _) = call(&h, req).await;
        assert_eq!(got, status, "{name}: {body}");
        assert_eq!(body["error"]["code"], code, "{name}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{name}"
        );
    }
    assert_eq!(
        h.state.spool().durable_lsn(),
        0,
        "a refused request stored something"
    );
}

#[tokio::test]
async fn bad_records_are_rejected_by_index_with_field_and_the_rest_accepted() {
    let mut h = harness(|_| {});
    let mut values: Vec<serde_json::Value> = (0..5)
        .map(|i| serde_json::to_value(record(i)).unwrap())
        .collect();
    values[1]["input_tokens"] = (-5).into();
    values[2]["cached_input_tokens"] = 5000.into();
    values[3]["surprise"] = true.into();
    let body = serde_json::to_vec(&values).unwrap();
    let (status, json, _) = call(&h, signed(body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{json}");
    assert_eq!(json["accepted"], 2);
    assert_eq!(json["duplicates"], 0);
    let rejected = json["rejected"].as_array().unwrap();
    let idx: Vec<u64> = rejected
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(idx, [1, 2, 3]);
    assert!(
        rejected[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("input_tokens:"),
        "{json}"
    );
    assert!(
        rejected[1]["reason"]
            .as_str()
            .unwrap()
            .starts_with("cached_input_tokens:"),
        "{json}"
    );
    assert!(
        rejected[2]["reason"].as_str().unwrap().contains("surprise"),
        "{json}"
    );

    let rejects = tokio::time::timeout(Duration::from_secs(1), h.rejects.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rejects.len(), 3);
    assert!(rejects[0].raw.contains("-5"));

    // the edge retries the same batch: the good records are now duplicates
    let body = serde_json::to_vec(&values).unwrap();
    let (status, json, _) = call(&h, signed(body)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        (json["accepted"].as_u64(), json["duplicates"].as_u64()),
        (Some(0), Some(2))
    );
}

#[tokio::test]
async fn ndjson_and_gzip_are_accepted() {
    let h = harness(|_| {});
    let body = wire::gzip(&wire::encode_batch(
        &(0..10).map(record).collect::<Vec<_>>(),
        BatchFormat::Ndjson,
    ));
    let mut req = signed(body);
    req.headers_mut()
        .insert("content-encoding", "gzip".parse().unwrap());
    let (status, json, _) = call(&h, req).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{json}");
    assert_eq!(json["accepted"], 10);
}

#[tokio::test]
async fn a_full_spool_answers_503_with_retry_after() {
    let h = harness(|c| c.spool.high_water_bytes = 1);
    let (status, _, _) = call(&h, signed(batch(0..3))).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "below the mark the first batch is taken"
    );
    let (status, json, retry) = call(&h, signed(batch(3..6))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json["error"]["code"], "spool_full");
    assert_eq!(retry.as_deref(), Some("5"));

    let resp = app(h.state.clone())
        .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn metrics_and_health() {
    let h = harness(|_| {});
    call(&h, signed(batch(0..4))).await;
    let resp = app(h.state.clone())
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains("tollgate_collector_records_accepted_total 4"),
        "{text}"
    );
    assert!(
        text.contains("tollgate_collector_requests_total{status=\"202\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("tollgate_collector_spool_unsent_bytes"),
        "{text}"
    );
    let resp = app(h.state.clone())
        .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = app(h.state.clone())
        .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}
