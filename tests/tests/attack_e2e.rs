//! The attack suite against the running pieces: the wasm worker under workerd (with the mock
//! provider, the collector and ClickHouse behind it) and the collector process. Each hostile
//! request gets its exact refusal, and nothing of it is stored: after the attacks a sentinel call
//! is made and, once its row is in `usage_events`, the table holds exactly the legitimate calls
//! and the provider saw exactly those.
//!
//! Requests are written to the socket by hand (`Raw`): HTTP clients refuse to send CR/LF or
//! non-ASCII header bytes, and cannot trickle a body or lie about its length.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use chrono::Utc;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tollgate_clickhouse::testing::TestDb;
use tollgate_e2e::harness::{
    app_key, end_user_app_key, worker_bindings, CollectorProc, WorkerdProc, SIGNING_SECRET,
};
use tollgate_e2e::mock_provider::{MockOptions, MockProvider};
use usage_core::wire::{self, BatchFormat};

/// An answer read off a raw socket.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// Headers and body as text (the body may be chunked; the tests look for JSON fragments).
    text: String,
    elapsed: Duration,
}

impl Answer {
    fn has(&self, fragment: &str) -> bool {
        self.text.contains(fragment)
    }
}

/// A raw HTTP/1.1 exchange: `head` (request line and headers, without the blank line), then the
/// body in `parts`, each after its pause; the answer is read as soon as it comes (also while the
/// body is still being sent), and the whole exchange is bounded by `limit`.
fn raw(addr: SocketAddr, head: &[u8], parts: &[(Duration, Vec<u8>)], limit: Duration) -> Answer {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut out = Vec::new();
    let mut request = head.to_vec();
    request.extend_from_slice(b"\r\n\r\n");
    let mut writable = s.write_all(&request).is_ok();
    let mut buf = [0u8; 65536];
    let mut read_some = |s: &mut TcpStream, out: &mut Vec<u8>| -> bool {
        match s.read(&mut buf) {
            Ok(0) => true,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                false
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            Err(_) => true,
        }
    };
    for (pause, bytes) in parts {
        if !out.is_empty() || !writable {
            break;
        }
        let until = Instant::now() + *pause;
        while Instant::now() < until && out.is_empty() {
            if read_some(&mut s, &mut out) {
                break;
            }
        }
        if out.is_empty() {
            writable = s.write_all(bytes).is_ok();
        }
    }
    // Read until the answer is complete (connection closed, or quiet after a full head).
    let mut quiet_since = Instant::now();
    while started.elapsed() < limit {
        let before = out.len();
        let closed = read_some(&mut s, &mut out);
        if out.len() > before {
            quiet_since = Instant::now();
        }
        let complete_head = out.windows(4).any(|w| w == b"\r\n\r\n");
        if closed || (complete_head && quiet_since.elapsed() > Duration::from_millis(300)) {
            break;
        }
    }
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Answer {
        status,
        text,
        elapsed,
    }
}

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

/// A chat completion request head with `extra` header lines, for a body of `len` bytes.
fn chat_head(addr: SocketAddr, extra: &[&[u8]], len: Option<usize>) -> Vec<u8> {
    let mut h = format!("POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\nconnection: close")
        .into_bytes();
    if let Some(len) = len {
        h.extend_from_slice(format!("\r\ncontent-length: {len}").as_bytes());
    }
    for line in extra {
        h.extend_from_slice(b"\r\n");
        h.extend_from_slice(line);
    }
    h
}

/// One complete chat call with `extra` header lines.
fn chat(addr: SocketAddr, extra: &[&[u8]]) -> Answer {
    let body = CHAT.as_bytes().to_vec();
    raw(
        addr,
        &chat_head(addr, extra, Some(body.len())),
        &[(Duration::ZERO, body)],
        Duration::from_secs(20),
    )
}

fn bearer(key: &str) -> Vec<u8> {
    format!("authorization: Bearer {key}").into_bytes()
}

/// `(org_id, user_id, task_type)` of every stored call, once `expected` rows are there (or 30 s
/// have passed).
async fn stored(db: &TestDb, expected: usize) -> Vec<(String, String, String)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows: Vec<(String, String, String)> = db
            .client()
            .query("SELECT org_id, user_id, task_type FROM usage_events ORDER BY task_type")
            .with_setting("wait_end_of_query", "1")
            .fetch_all()
            .await
            .unwrap();
        if rows.len() >= expected || Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_edge_requests_are_refused_and_leave_no_record() {
    let db = TestDb::new().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let collector = CollectorProc::start(db.url(), db.name(), dir.path(), |_| {});
    let mock = MockProvider::start(MockOptions::default()).await.unwrap();
    let (key_a, entry_a) = app_key(1, "org_a", "svc-a", "app-a");
    let (key_b, entry_b) = app_key(2, "org_b", "svc-b", "app-b");
    let (revoked, entry_r) = app_key(3, "org_a", "svc-a", "app-a");
    let entry_r = entry_r.replace("\"app_id\"", "\"revoked\":true,\"app_id\"");
    // A server app of org_a acting for users of its own (it may name them).
    let (key_c, entry_c) = end_user_app_key(4, "org_a", "svc-c", "app-c");
    let mut bindings = worker_bindings(
        &mock.base_url(),
        &collector.records_url(),
        &format!("{{{entry_a},{entry_b},{entry_r},{entry_c}}}"),
    );
    bindings.push(("BODY_TIMEOUT_MS".into(), "1500".into()));
    let worker = WorkerdProc::start(bindings);
    let addr = worker.addr;

    let a = bearer(&key_a);
    let key_a2 = key_a.clone();
    let attacks = tokio::task::spawn_blocking(move || {
        let key_a = key_a2;
        let forged = format!("tg_{}", "f".repeat(40));
        let mut failures = Vec::new();
        let mut check = |name: &str, got: Answer, status: u16, fragments: &[&str]| {
            let ok = got.status == status && fragments.iter().all(|f| got.has(f));
            if !ok {
                failures.push(format!(
                    "{name}: expected {status} {fragments:?}, got {got:?}"
                ));
            }
        };
        let invalid_key = [
            "\"code\":\"invalid_api_key\"",
            "\"type\":\"authentication_error\"",
        ];

        // --- keys: forged, revoked, not ours, malformed ---
        check(
            "forged key",
            chat(addr, &[&bearer(&forged)]),
            401,
            &invalid_key,
        );
        check(
            "revoked key",
            chat(addr, &[&bearer(&revoked)]),
            401,
            &invalid_key,
        );
        check(
            "a provider key instead of an app key",
            chat(
                addr,
                &[b"authorization: Bearer sk-proj-0123456789abcdef0123456789abcdef"],
            ),
            401,
            &invalid_key,
        );
        check("no authorization", chat(addr, &[]), 401, &invalid_key);
        check(
            "basic auth",
            chat(addr, &[format!("authorization: Basic {key_a}").as_bytes()]),
            401,
            &invalid_key,
        );
        check(
            "two keys in one header",
            chat(
                addr,
                &[format!("authorization: Bearer {key_a}, Bearer {key_a}").as_bytes()],
            ),
            401,
            &invalid_key,
        );
        let mut non_ascii = bearer(&key_a);
        non_ascii.extend_from_slice("é".as_bytes());
        check(
            "non-ASCII in the key",
            chat(addr, &[&non_ascii]),
            401,
            &invalid_key,
        );
        check(
            "oversized authorization",
            chat(
                addr,
                &[format!("authorization: Bearer tg_{}", "a".repeat(8000)).as_bytes()],
            ),
            401,
            &invalid_key,
        );

        // --- header injection in the attribution headers (a valid key) ---
        for (name, line, param) in [
            (
                "oversized user",
                format!("x-tollgate-user: {}", "u".repeat(300)).into_bytes(),
                "x-tollgate-user",
            ),
            (
                "control character in user",
                b"x-tollgate-user: ali\x07ce".to_vec(),
                "x-tollgate-user",
            ),
            (
                "task with spaces and quotes",
                b"x-tollgate-task: a' OR '1'='1".to_vec(),
                "x-tollgate-task",
            ),
            (
                "control character in a tag value",
                b"x-tollgate-tags: env=prod\x1b[31m".to_vec(),
                "x-tollgate-tags",
            ),
            (
                "too many tags",
                format!(
                    "x-tollgate-tags: {}",
                    (0..40)
                        .map(|i| format!("k{i}=v"))
                        .collect::<Vec<_>>()
                        .join(",")
                )
                .into_bytes(),
                "x-tollgate-tags",
            ),
            (
                "tag that is not key=value",
                b"x-tollgate-tags: novalue".to_vec(),
                "x-tollgate-tags",
            ),
        ] {
            let param = format!("\"param\":\"{param}\"");
            check(
                name,
                chat(addr, &[&a, &line]),
                400,
                &["\"type\":\"invalid_request_error\"", &param],
            );
        }
        // Bytes HTTP itself forbids in a header value never reach the worker: workerd refuses
        // the request (400) before any code runs.
        for (name, line) in [
            ("bare CR in user", b"x-tollgate-user: ali\rce".to_vec()),
            ("NUL in user", b"x-tollgate-user: ali\x00ce".to_vec()),
        ] {
            check(name, chat(addr, &[&a, &line]), 400, &[]);
        }

        // --- bodies: too large, declared or streamed; trickled ---
        let too_large = [
            "\"code\":\"request_too_large\"",
            "\"type\":\"invalid_request_error\"",
        ];
        let declared = 17 << 20;
        check(
            "declared 17 MiB body",
            raw(
                addr,
                &chat_head(addr, &[&a], Some(declared)),
                &[],
                Duration::from_secs(10),
            ),
            413,
            &too_large,
        );
        // Chunked, no content-length: refused once 16 MiB have arrived, not buffered to the end.
        let chunk = {
            let data = vec![b' '; 1 << 20];
            let mut c = format!("{:x}\r\n", data.len()).into_bytes();
            c.extend_from_slice(&data);
            c.extend_from_slice(b"\r\n");
            c
        };
        let parts: Vec<(Duration, Vec<u8>)> =
            (0..40).map(|_| (Duration::ZERO, chunk.clone())).collect();
        check(
            "streamed 40 MiB body without a length",
            raw(
                addr,
                &chat_head(addr, &[&a, b"transfer-encoding: chunked"], None),
                &parts,
                Duration::from_secs(30),
            ),
            413,
            &too_large,
        );
        // Slowloris: a byte every 200 ms never completes the body; the worker answers 408 at
        // BODY_TIMEOUT_MS (1.5 s) instead of waiting for it.
        let timeout = [
            "\"code\":\"request_timeout\"",
            "\"type\":\"invalid_request_error\"",
        ];
        let trickle: Vec<(Duration, Vec<u8>)> = CHAT
            .bytes()
            .map(|b| (Duration::from_millis(200), vec![b]))
            .collect();
        let slow = raw(
            addr,
            &chat_head(addr, &[&a], Some(CHAT.len() + 100)),
            &trickle,
            Duration::from_secs(15),
        );
        let slow_elapsed = slow.elapsed;
        check("slow body with a length", slow, 408, &timeout);
        if slow_elapsed > Duration::from_secs(6) {
            check(
                "slow body refused in bounded time",
                Answer {
                    status: 0,
                    text: format!("refused after {slow_elapsed:?}"),
                    elapsed: slow_elapsed,
                },
                1,
                &[],
            );
        }
        let chunked_trickle: Vec<(Duration, Vec<u8>)> = CHAT
            .bytes()
            .map(|b| {
                (
                    Duration::from_millis(200),
                    format!("1\r\n{}\r\n", b as char).into_bytes(),
                )
            })
            .collect();
        check(
            "slow chunked body",
            raw(
                addr,
                &chat_head(addr, &[&a, b"transfer-encoding: chunked"], None),
                &chunked_trickle,
                Duration::from_secs(15),
            ),
            408,
            &timeout,
        );
        failures
    })
    .await
    .unwrap();
    assert!(attacks.is_empty(), "{}", attacks.join("\n"));
    assert_eq!(mock.requests(), 0, "a refused request reached the provider");

    // --- what a key may do: act for its own org (and user) only, whatever the headers claim ---
    let spoof = tokio::task::spawn_blocking(move || {
        // A plain key naming another user: refused, so it cannot spend under bob's name (or
        // dodge its own user's budget). Nothing is stored, nothing reaches the provider.
        let plain = chat(
            addr,
            &[
                &bearer(&key_a),
                b"x-tollgate-task: spoof",
                b"x-tollgate-user: bob",
            ],
        );
        assert_eq!(plain.status, 403, "{plain:?}");
        assert!(
            plain.has("end_user_not_allowed") && plain.has("svc-a"),
            "{plain:?}"
        );
        let a = chat(
            addr,
            &[
                &bearer(&key_c),
                b"x-tollgate-task: spoof",
                b"x-tollgate-user: bob",
                b"x-tollgate-org: org_b",
                b"x-tollgate-key-id: key2",
            ],
        );
        // Obsolete line folding is one header value (RFC 9112 lets a server unfold it): it
        // cannot smuggle in another header, and the user it names is a single printable id.
        let folded = chat(
            addr,
            &[
                &bearer(&key_c),
                b"x-tollgate-task: folded",
                b"x-tollgate-user: alice\r\n  x-tollgate-org: org_b",
            ],
        );
        assert_eq!(folded.status, 200, "{folded:?}");
        let b = chat(addr, &[&bearer(&key_b), b"x-tollgate-task: sentinel"]);
        (a, b)
    })
    .await
    .unwrap();
    assert_eq!(spoof.0.status, 200, "{:?}", spoof.0);
    assert_eq!(spoof.1.status, 200, "{:?}", spoof.1);
    let rows = stored(&db, 3).await;
    assert_eq!(
        rows.len(),
        3,
        "only the three legitimate calls are stored: {rows:?}"
    );
    let (org, user, task) = &rows[0];
    assert_eq!((org.as_str(), task.as_str()), ("org_a", "folded"));
    assert!(
        user.starts_with("alice") && !user.chars().any(char::is_control),
        "{user:?}"
    );
    assert_eq!(
        rows[1..],
        [
            ("org_b".into(), "svc-b".into(), "sentinel".into()),
            ("org_a".into(), "bob".into(), "spoof".into()),
        ],
        "each call under its key's org, whatever the headers claim"
    );
    // The end user is the call's user; whose key it was stays on the record.
    let key_user: String = db
        .client()
        .query("SELECT tag_values[indexOf(tag_keys, 'tollgate.key_user')] FROM usage_events WHERE task_type = 'spoof'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(key_user, "svc-c");
    assert_eq!(mock.requests(), 3);
    drop(worker);
    drop(collector);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_collector_requests_are_refused_and_store_nothing() {
    let db = TestDb::new().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let collector = CollectorProc::start(db.url(), db.name(), dir.path(), |c| {
        c.ingest.body_timeout_ms = 1000;
        c.ingest.max_body_bytes = 1 << 20;
    });
    let addr = collector.addr;
    let records: Vec<usage_core::UsageRecord> =
        (1..=3).map(tollgate_collector::testdata::record).collect();
    let body = wire::encode_batch(&records, BatchFormat::JsonArray);
    let now = Utc::now().timestamp();
    let signature = wire::sign(SIGNING_SECRET.as_bytes(), now, &body);

    let answers = tokio::task::spawn_blocking(move || {
        let post = |extra: &str, len: usize, parts: &[(Duration, Vec<u8>)]| {
            let head = format!(
                "POST /v1/records HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {len}{extra}"
            );
            raw(addr, head.as_bytes(), parts, Duration::from_secs(15))
        };
        let signed = format!("\r\n{}: {signature}", wire::SIGNATURE_HEADER);
        let whole = [(Duration::ZERO, body.clone())];
        let mut tampered = body.clone();
        tampered[10] ^= 1;
        let trickle: Vec<(Duration, Vec<u8>)> = body
            .iter()
            .take(20)
            .map(|&b| (Duration::from_millis(200), vec![b]))
            .collect();
        vec![
            ("unsigned", post("", body.len(), &whole)),
            ("tampered", post(&signed, body.len(), &[(Duration::ZERO, tampered)])),
            (
                "stale",
                post(
                    &format!(
                        "\r\n{}: {}",
                        wire::SIGNATURE_HEADER,
                        wire::sign(SIGNING_SECRET.as_bytes(), now - 3600, &body)
                    ),
                    body.len(),
                    &whole,
                ),
            ),
            ("oversized", post(&signed, 2 << 20, &[])),
            ("slow body", post(&signed, body.len(), &trickle)),
            ("first", post(&signed, body.len(), &whole)),
            ("replayed", post(&signed, body.len(), &whole)),
        ]
    })
    .await
    .unwrap();
    let expect = [
        ("unsigned", 401, "missing_signature"),
        ("tampered", 401, "bad_signature"),
        ("stale", 401, "stale_signature"),
        ("oversized", 413, "body_too_large"),
        ("slow body", 408, "body_timeout"),
        ("first", 202, "\"accepted\":3"),
        ("replayed", 202, "\"duplicates\":3"),
    ];
    for ((name, answer), (want_name, status, fragment)) in answers.iter().zip(expect) {
        assert_eq!(*name, want_name);
        assert_eq!(answer.status, status, "{name}: {answer:?}");
        assert!(answer.has(fragment), "{name}: {answer:?}");
        if *name == "slow body" {
            assert!(answer.elapsed < Duration::from_secs(5), "{answer:?}");
        }
    }
    assert!(answers[6].1.has("\"accepted\":0"), "{:?}", answers[6].1);
    // Only the first batch's three records, once each.
    let rows = stored(&db, 3).await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    // A clean stop flushes whatever the collector still held: nothing more may arrive.
    let mut collector = collector;
    assert_eq!(collector.proc.terminate(Duration::from_secs(20)), Some(0));
    assert_eq!(stored(&db, 3).await.len(), 3);
}

/// Slowloris: a client that never finishes its request headers is cut off by the collector
/// (`service_kit::serve`'s header deadline) instead of holding a connection forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_cuts_off_a_client_that_never_finishes_its_headers() {
    let db = TestDb::new().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let collector = CollectorProc::start(db.url(), db.name(), dir.path(), |_| {});
    let addr = collector.addr;
    let (closed, took) = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut closed = false;
        s.write_all(b"POST /v1/records HTTP/1.1\r\n").unwrap();
        // A header line every second, never the blank line that ends them.
        for i in 0..30 {
            if s.write_all(format!("x-slow-{i}: 1\r\n").as_bytes())
                .is_err()
            {
                closed = true;
                break;
            }
            let mut buf = [0u8; 1024];
            match s.read(&mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        (closed, started.elapsed())
    })
    .await
    .unwrap();
    let deadline = service_kit::serve::HEADER_READ_TIMEOUT;
    assert!(closed, "still open after {took:?}");
    assert!(
        took >= deadline - Duration::from_secs(1) && took < deadline + Duration::from_secs(5),
        "{took:?}"
    );
}
