//! A mock of OpenAI-compatible providers — the only stand-in in the end-to-end tests (there is
//! no internet here). It answers like OpenAI (Chat Completions, Responses, Embeddings,
//! Completions, Models; JSON and SSE) and, for `vendor/model` ids, like OpenRouter (`provider`,
//! `usage.cost`, cache writes, `: OPENROUTER PROCESSING` comments).
//!
//! A request steers it with an optional `"mock"` object in its body (the SDKs' `extra_body`):
//!
//! | field | effect |
//! |---|---|
//! | `usage` | `{prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, reasoning_tokens, cost}` to report |
//! | `status` | answer with this HTTP status and an OpenAI error body |
//! | `chunks` | content chunks in a stream (default 3) |
//! | `chunk_delay_ms` | pause between stream chunks |
//! | `pause_ms` | one pause after a chat stream's first chunk (a model thinking mid-stream) |
//! | `delay_ms` | pause before the response headers |
//! | `truncate_after` | cut the stream (connection dropped, no `[DONE]`) after this many chunks |
//!
//! Without it, answers are deterministic: 120 prompt and 30 completion tokens (or the reported
//! `usage` defaults of [`MockOptions`]), with optional random errors and latency for the demo.
//!
//! A test can also stall the whole provider for a while ([`MockProvider::stall`]): requests
//! arriving then get no response headers until the stall ends (fault injection for the soak).
//!
//! The same port also answers the providers' admin APIs (OpenRouter `/api/v1/credits` and
//! `/api/v1/key`, OpenAI `/v1/organization/costs`) from [`MockProvider::admin`], whose values
//! tests set: see [`admin`].

pub mod admin;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// Behaviour of the mock as a whole (per-request `mock` fields override).
#[derive(Clone, Debug, Default)]
pub struct MockOptions {
    /// Added before every response's headers.
    pub base_latency_ms: u64,
    /// Between stream chunks, unless the request says otherwise.
    pub chunk_delay_ms: u64,
    /// Fraction (0..1) of requests answered with a 500 or 429.
    pub error_rate: f64,
    /// Models the mock claims not to know the price of do not matter to it; this only names
    /// a model that the demo uses as "missing from the price table".
    pub seed: u64,
}

/// Counters the tests read.
#[derive(Debug, Default)]
pub struct MockStats {
    pub requests: AtomicU64,
    /// Chat streams whose reader went away before the stream's end (the edge aborted the
    /// request, or the connection broke).
    pub streams_cut_off: AtomicU64,
    pub by_path: Mutex<BTreeMap<String, u64>>,
    /// While set and in the future, every request waits until then before answering.
    stalled_until: Mutex<Option<tokio::time::Instant>>,
}

impl MockStats {
    /// Waits out a stall in force (one that starts meanwhile is waited out too).
    async fn wait_out_stall(&self) {
        loop {
            let until = *self.stalled_until.lock().unwrap_or_else(|p| p.into_inner());
            match until {
                Some(t) if t > tokio::time::Instant::now() => tokio::time::sleep_until(t).await,
                _ => return,
            }
        }
    }
}

#[derive(Clone)]
struct MockState {
    options: Arc<MockOptions>,
    stats: Arc<MockStats>,
    rng: Arc<Mutex<fastrand::Rng>>,
}

/// A running mock provider.
#[derive(Debug)]
pub struct MockProvider {
    pub addr: SocketAddr,
    pub stats: Arc<MockStats>,
    /// What the admin APIs answer (set values from tests).
    pub admin: admin::MockAdmin,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl MockProvider {
    /// Starts the mock on `127.0.0.1:<free port>` inside the current tokio runtime.
    pub async fn start(options: MockOptions) -> std::io::Result<MockProvider> {
        Self::start_on("127.0.0.1:0", options).await
    }

    pub async fn start_on(addr: &str, options: MockOptions) -> std::io::Result<MockProvider> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(MockStats::default());
        let state = MockState {
            rng: Arc::new(Mutex::new(fastrand::Rng::with_seed(options.seed))),
            options: Arc::new(options),
            stats: stats.clone(),
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let admin = admin::MockAdmin::default();
        let app = router(state).merge(admin::router(admin.clone()));
        tokio::spawn(async move {
            // No Nagle: streamed chunks go out as written (else ~40 ms delayed-ACK stalls).
            use axum::serve::ListenerExt;
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(MockProvider {
            addr,
            stats,
            admin,
            shutdown: Some(tx),
        })
    }

    /// `http://127.0.0.1:<port>/v1`, the base URL a provider config points at.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// `http://127.0.0.1:<port>`, the API root of the admin APIs (`pollers.openrouter_base_url`,
    /// `pollers.openai_base_url`).
    pub fn admin_base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> u64 {
        self.stats.requests.load(Ordering::SeqCst)
    }

    /// Stalls the provider for `d` from now: requests (and those already waiting) get no
    /// response headers until it ends, as when a provider hangs.
    pub fn stall(&self, d: Duration) {
        *self
            .stats
            .stalled_until
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(tokio::time::Instant::now() + d);
    }
}

impl Drop for MockProvider {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The mock's routes.
fn router(state: MockState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/responses", post(responses))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .with_state(state)
}

/// What one request asked the mock to do.
#[derive(Clone, Debug)]
struct Steer {
    usage: Usage,
    status: Option<u16>,
    chunks: usize,
    chunk_delay_ms: u64,
    /// One pause after the first chunk.
    pause_ms: u64,
    delay_ms: u64,
    truncate_after: Option<usize>,
    stats: Arc<MockStats>,
}

#[derive(Clone, Debug, PartialEq)]
struct Usage {
    prompt: u64,
    completion: u64,
    cached: u64,
    cache_write: u64,
    reasoning: u64,
    cost: Option<f64>,
}

fn steer(state: &MockState, body: &Value) -> Steer {
    let m = body.get("mock").cloned().unwrap_or(Value::Null);
    let u = m.get("usage").cloned().unwrap_or(Value::Null);
    let n = |v: &Value, k: &str, d: u64| v.get(k).and_then(Value::as_u64).unwrap_or(d);
    let mut status = m.get("status").and_then(Value::as_u64).map(|s| s as u16);
    if status.is_none() && state.options.error_rate > 0.0 {
        let mut rng = state.rng.lock().unwrap_or_else(|p| p.into_inner());
        if rng.f64() < state.options.error_rate {
            status = Some(if rng.bool() { 500 } else { 429 });
        }
    }
    Steer {
        usage: Usage {
            prompt: n(&u, "prompt_tokens", 120),
            completion: n(&u, "completion_tokens", 30),
            cached: n(&u, "cached_tokens", 0),
            cache_write: n(&u, "cache_write_tokens", 0),
            reasoning: n(&u, "reasoning_tokens", 0),
            cost: u.get("cost").and_then(Value::as_f64),
        },
        status,
        chunks: n(&m, "chunks", 3) as usize,
        chunk_delay_ms: n(&m, "chunk_delay_ms", state.options.chunk_delay_ms),
        pause_ms: n(&m, "pause_ms", 0),
        delay_ms: n(&m, "delay_ms", 0) + state.options.base_latency_ms,
        truncate_after: m
            .get("truncate_after")
            .and_then(Value::as_u64)
            .map(|v| v as usize),
        stats: state.stats.clone(),
    }
}

/// `vendor/model` ids are OpenRouter's.
fn is_openrouter(model: &str) -> bool {
    model.contains('/')
}

/// The dated model OpenAI reports serving.
fn served_model(model: &str) -> String {
    match model {
        "gpt-4o-mini" => "gpt-4o-mini-2024-07-18".into(),
        "gpt-4o" => "gpt-4o-2024-08-06".into(),
        "gpt-4.1" => "gpt-4.1-2025-04-14".into(),
        other => other.to_string(),
    }
}

fn chat_usage(u: &Usage, openrouter: bool) -> Value {
    let mut v = json!({
        "prompt_tokens": u.prompt,
        "completion_tokens": u.completion,
        "total_tokens": u.prompt + u.completion,
        "prompt_tokens_details": {"cached_tokens": u.cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    });
    if openrouter {
        let cost = u
            .cost
            .unwrap_or((u.prompt as f64) * 1e-6 + (u.completion as f64) * 2e-6);
        v["cost"] = json!(cost);
        v["is_byok"] = json!(false);
        v["prompt_tokens_details"]["cache_write_tokens"] = json!(u.cache_write);
        v["cost_details"] = json!({"upstream_inference_cost": null});
    }
    v
}

fn error_response(status: u16) -> Response {
    let (kind, message) = match status {
        429 => ("rate_limit_exceeded", "Rate limit reached (mock)."),
        400..=499 => ("invalid_request_error", "The request was refused (mock)."),
        _ => (
            "server_error",
            "The server had an error while processing your request (mock).",
        ),
    };
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": null}});
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        Json(body),
    )
        .into_response()
}

fn count(state: &MockState, path: &str) {
    state.stats.requests.fetch_add(1, Ordering::SeqCst);
    if let Ok(mut m) = state.stats.by_path.lock() {
        *m.entry(path.to_string()).or_default() += 1;
    }
}

async fn prelude(state: &MockState, path: &str, body: &Bytes) -> Result<(Value, Steer), Response> {
    count(state, path);
    state.stats.wait_out_stall().await;
    let body: Value = serde_json::from_slice(body).map_err(|_| error_response(400))?;
    let s = steer(state, &body);
    if s.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(s.delay_ms)).await;
    }
    if let Some(status) = s.status {
        return Err(error_response(status));
    }
    Ok((body, s))
}

const WORDS: &[&str] = &[
    "Hello",
    " from",
    " the",
    " mock",
    " provider",
    ",",
    " ça",
    " va",
    " 🚀",
    ".",
];

fn sse(events: Vec<String>, steer: &Steer, comment: bool) -> Response {
    let delay = Duration::from_millis(steer.chunk_delay_ms);
    let pause = Duration::from_millis(steer.pause_ms);
    let truncate = steer.truncate_after;
    let stream = async_stream(events, delay, pause, truncate, comment, steer.stats.clone());
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        axum::http::HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(
        "cache-control",
        axum::http::HeaderValue::from_static("no-cache"),
    );
    (headers, Body::from_stream(stream)).into_response()
}

/// Emits `events` as SSE, pausing between them; with `truncate_after`, stops with an error
/// after that many content events so the connection is dropped mid-stream.
fn async_stream(
    events: Vec<String>,
    delay: Duration,
    pause: Duration,
    truncate_after: Option<usize>,
    comment: bool,
    stats: Arc<MockStats>,
) -> impl futures_core::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        if comment
            && tx
                .send(Ok(Bytes::from_static(b": OPENROUTER PROCESSING\n\n")))
                .await
                .is_err()
        {
            return;
        }
        for (i, e) in events.into_iter().enumerate() {
            if truncate_after.is_some_and(|t| i >= t) {
                let _ = tx
                    .send(Err(std::io::Error::other("mock: stream truncated")))
                    .await;
                return;
            }
            if i > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if i == 1 && !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            if tx
                .send(Ok(Bytes::from(format!("data: {e}\n\n"))))
                .await
                .is_err()
            {
                stats.streams_cut_off.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        if truncate_after.is_none() {
            let _ = tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await;
        }
    });
    tokio_stream(rx)
}

fn tokio_stream(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures_core::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn chat(State(state): State<MockState>, body: Bytes) -> Response {
    let (body, s) = match prelude(&state, "/v1/chat/completions", &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string();
    let openrouter = is_openrouter(&model);
    let served = served_model(&model);
    let id = if openrouter {
        format!("gen-mock-{}", state.stats.requests.load(Ordering::SeqCst))
    } else {
        format!(
            "chatcmpl-mock-{}",
            state.stats.requests.load(Ordering::SeqCst)
        )
    };
    let created = 1_790_000_000u64;
    // OpenAI answers the tier it ran the call in: the one asked for, `default` otherwise.
    let tier = match body.get("service_tier").and_then(Value::as_str) {
        Some(t @ ("flex" | "priority")) => t.to_string(),
        _ => "default".to_string(),
    };
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let text: String = (0..s.chunks.max(1))
        .map(|i| WORDS[i % WORDS.len()])
        .collect();
    if !stream {
        let mut v = json!({
            "id": id, "object": "chat.completion", "created": created, "model": served,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": null},
                         "logprobs": null, "finish_reason": "stop"}],
            "usage": chat_usage(&s.usage, openrouter),
            "system_fingerprint": "fp_mock",
        });
        if openrouter {
            v["provider"] = json!("MockCloud");
        } else {
            v["service_tier"] = json!(tier);
        }
        return Json(v).into_response();
    }
    let include_usage = body
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut events = Vec::new();
    for i in 0..s.chunks {
        let mut chunk = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": served,
            "choices": [{"index": 0, "delta": {"content": WORDS[i % WORDS.len()]}, "logprobs": null, "finish_reason": null}]});
        if include_usage && !openrouter {
            chunk["usage"] = Value::Null;
        }
        if openrouter {
            chunk["provider"] = json!("MockCloud");
        } else {
            chunk["service_tier"] = json!(tier);
        }
        events.push(chunk.to_string());
    }
    events.push(
        json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": served,
            "choices": [{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}]})
        .to_string(),
    );
    // OpenRouter always sends usage; OpenAI only when asked.
    if include_usage || openrouter {
        events.push(
            json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": served,
                "choices": [], "usage": chat_usage(&s.usage, openrouter)})
            .to_string(),
        );
    }
    sse(events, &s, openrouter)
}

async fn completions(State(state): State<MockState>, body: Bytes) -> Response {
    let (body, s) = match prelude(&state, "/v1/completions", &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string();
    Json(json!({
        "id": "cmpl-mock", "object": "text_completion", "created": 1_790_000_000u64, "model": served_model(&model),
        "choices": [{"text": " mock completion", "index": 0, "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": s.usage.prompt, "completion_tokens": s.usage.completion,
                  "total_tokens": s.usage.prompt + s.usage.completion},
    }))
    .into_response()
}

fn responses_usage(u: &Usage) -> Value {
    json!({
        "input_tokens": u.prompt,
        "input_tokens_details": {"cached_tokens": u.cached},
        "output_tokens": u.completion,
        "output_tokens_details": {"reasoning_tokens": u.reasoning},
        "total_tokens": u.prompt + u.completion,
    })
}

async fn responses(State(state): State<MockState>, body: Bytes) -> Response {
    let (body, s) = match prelude(&state, "/v1/responses", &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let model = served_model(
        body.get("model")
            .and_then(Value::as_str)
            .unwrap_or("unknown"),
    );
    let text: String = (0..s.chunks.max(1))
        .map(|i| WORDS[i % WORDS.len()])
        .collect();
    let response = |status: &str, usage: Value, output: Value| {
        json!({"id": "resp_mock", "object": "response", "created_at": 1_790_000_000u64, "status": status,
            "error": null, "incomplete_details": null, "model": model, "output": output,
            "parallel_tool_calls": true, "tool_choice": "auto", "tools": [], "usage": usage, "metadata": {}})
    };
    let message = json!([{"type": "message", "id": "msg_mock", "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}]}]);
    if !body.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        return Json(response("completed", responses_usage(&s.usage), message)).into_response();
    }
    let mut events = vec![
        json!({"type": "response.created", "sequence_number": 0, "response": response("in_progress", Value::Null, json!([]))}).to_string(),
    ];
    for i in 0..s.chunks {
        events.push(
            json!({"type": "response.output_text.delta", "sequence_number": i + 1, "item_id": "msg_mock",
                "output_index": 0, "content_index": 0, "delta": WORDS[i % WORDS.len()]})
            .to_string(),
        );
    }
    events.push(
        json!({"type": "response.completed", "sequence_number": s.chunks + 1,
            "response": response("completed", responses_usage(&s.usage), message)})
        .to_string(),
    );
    // The Responses API ends with its terminal event, not `[DONE]`.
    sse_without_done(events, &s)
}

fn sse_without_done(events: Vec<String>, steer: &Steer) -> Response {
    let delay = Duration::from_millis(steer.chunk_delay_ms);
    let truncate = steer.truncate_after;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        for (i, e) in events.into_iter().enumerate() {
            if truncate.is_some_and(|t| i >= t) {
                let _ = tx
                    .send(Err(std::io::Error::other("mock: stream truncated")))
                    .await;
                return;
            }
            if i > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let kind = serde_json::from_str::<Value>(&e)
                .ok()
                .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_default();
            if tx
                .send(Ok(Bytes::from(format!("event: {kind}\ndata: {e}\n\n"))))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        axum::http::HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    (headers, Body::from_stream(tokio_stream(rx))).into_response()
}

async fn embeddings(State(state): State<MockState>, body: Bytes) -> Response {
    let (body, s) = match prelude(&state, "/v1/embeddings", &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let inputs = match body.get("input") {
        Some(Value::Array(a)) => a.len(),
        _ => 1,
    };
    let data: Vec<Value> = (0..inputs)
        .map(|i| json!({"object": "embedding", "index": i, "embedding": [0.001, -0.002, 0.003, 0.004]}))
        .collect();
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    Json(json!({"object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": s.usage.prompt, "total_tokens": s.usage.prompt}}))
    .into_response()
}

async fn models(State(state): State<MockState>) -> Response {
    count(&state, "/v1/models");
    let ids = [
        "gpt-4o-mini",
        "gpt-4o",
        "gpt-4.1",
        "text-embedding-3-small",
        "o4-mini",
    ];
    let data: Vec<Value> = ids
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 1_700_000_000u64, "owned_by": "mock"}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stall_holds_answers_until_it_ends() {
        let mock = MockProvider::start(MockOptions::default()).await.unwrap();
        let url = format!("{}/chat/completions", mock.base_url());
        let call = move || {
            let started = std::time::Instant::now();
            let status = ureq::post(&url)
                .send(r#"{"model":"gpt-4o-mini","messages":[]}"#)
                .map(|r| r.status().as_u16())
                .unwrap();
            (status, started.elapsed())
        };
        let (status, fast) = tokio::task::spawn_blocking(call.clone()).await.unwrap();
        assert_eq!(status, 200);
        mock.stall(Duration::from_millis(600));
        let (status, slow) = tokio::task::spawn_blocking(call).await.unwrap();
        assert_eq!(status, 200);
        assert!(slow >= Duration::from_millis(500), "{slow:?}");
        assert!(fast < Duration::from_millis(500), "{fast:?}");
    }
}
