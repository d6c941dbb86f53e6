//! Thin calls into the Workers runtime's web APIs (`fetch`, `Response`, timers), made through
//! `web_sys` directly on the request path — beside workers-rs (`cf.rs`), which provides the
//! entry points and bindings and hands the handlers these same `web_sys` objects.
//!
//! Runtime objects stay as they are (no Rust-side copies of requests and responses), and bodies
//! are read whole with `arrayBuffer()`: profiling the worker under workerd showed that reading
//! them through workers-rs's `Request`/`Response` wrappers (stream readers: a promise, closure
//! and microtask per chunk) cost more latency than Tollgate's own logic — docs/BENCHMARKS.md,
//! "Where the edge's time goes": json c=1 went from 4.3× to 1.8× the JS passthrough with this
//! and the other glue changes there. Only a chunked upload is read chunk by chunk
//! ([`read_chunks`]), to stop it at the size limit.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use futures_util::future::{select, Either};
use js_sys::{Promise, Uint8Array};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Headers, ReadableStream, Request, RequestInit, Response, ResponseInit};

use crate::errors::ApiError;

/// The worker's global scope (where `fetch` and `setTimeout` live).
fn global() -> web_sys::WorkerGlobalScope {
    js_sys::global().unchecked_into()
}

/// A runtime error as text (a JS `Error`'s message, or whatever was thrown).
pub fn error_text(e: &JsValue) -> String {
    if let Some(err) = e.dyn_ref::<js_sys::Error>() {
        return String::from(err.message());
    }
    e.as_string().unwrap_or_else(|| format!("{e:?}"))
}

/// What a runtime call's promise resolves to; a call that threw, or a promise that rejected,
/// as the error's text.
pub async fn settle(promise: Result<Promise, JsValue>) -> Result<JsValue, String> {
    JsFuture::from(promise.map_err(|e| error_text(&e))?)
        .await
        .map_err(|e| error_text(&e))
}

/// `fetch(url, init)`; the response once its headers arrived.
pub async fn fetch(url: &str, init: &RequestInit) -> Result<Response, String> {
    let resp = settle(Ok(global().fetch_with_str_and_init(url, init))).await?;
    resp.dyn_into::<Response>()
        .map_err(|_| "fetch resolved to something other than a Response".to_string())
}

/// A `RequestInit` for `method` with `headers` and an optional body (copied into JS once).
pub fn request_init(method: &str, headers: &Headers, body: Option<&[u8]>) -> RequestInit {
    let init = RequestInit::new();
    init.set_method(method);
    init.set_headers(headers);
    if let Some(body) = body {
        init.set_body(&Uint8Array::from(body));
    }
    init
}

/// The bytes a body promise (`arrayBuffer()`) resolves to.
async fn array_buffer(promise: Result<Promise, JsValue>) -> Result<Vec<u8>, String> {
    Ok(Uint8Array::new(&settle(promise).await?).to_vec())
}

/// A request's whole body.
pub async fn request_bytes(req: &Request) -> Result<Vec<u8>, String> {
    array_buffer(req.array_buffer()).await
}

/// A response's whole body.
pub async fn response_bytes(resp: &Response) -> Result<Vec<u8>, String> {
    array_buffer(resp.array_buffer()).await
}

/// A response's body parsed as JSON (read it with [`crate::json`]).
pub async fn response_json(resp: &Response) -> Result<serde_json::Value, String> {
    let body = response_bytes(resp).await?;
    serde_json::from_slice(&body).map_err(|e| format!("unreadable JSON answer: {e}"))
}

/// Reads `stream` chunk by chunk, handing each chunk to `sink`; stops at the first error,
/// the sink's or the stream's (`unreadable` turns the latter into `E`).
pub async fn read_chunks<E>(
    stream: &ReadableStream,
    mut sink: impl FnMut(&[u8]) -> Result<(), E>,
    unreadable: impl Fn(String) -> E,
) -> Result<(), E> {
    let reader: web_sys::ReadableStreamDefaultReader = stream.get_reader().unchecked_into();
    loop {
        let step: web_sys::ReadableStreamReadResult = JsFuture::from(reader.read())
            .await
            .map_err(|e| unreadable(error_text(&e)))?
            .unchecked_into();
        if step.get_done().unwrap_or(true) {
            return Ok(());
        }
        if let Err(e) = sink(&Uint8Array::new(&step.get_value()).to_vec()) {
            // Awaited, so a refused cancel is not an unhandled rejection.
            let _ = JsFuture::from(reader.cancel()).await;
            return Err(e);
        }
    }
}

/// The upstream's response passed on: its status and headers (minus `drop_headers`), `body`
/// as the body, plus `extra` headers.
pub fn relay(
    upstream: &Response,
    body: Option<&ReadableStream>,
    drop_headers: &[&str],
    extra: &[(&str, String)],
) -> Result<Response, JsValue> {
    let headers = Headers::new_with_headers(&upstream.headers())?;
    for name in drop_headers {
        headers.delete(name)?;
    }
    set_extra(&headers, extra);
    let init = ResponseInit::new();
    init.set_status(upstream.status());
    init.set_status_text(&upstream.status_text());
    init.set_headers(&headers);
    Response::new_with_opt_readable_stream_and_init(body, &init)
}

/// Tollgate's own headers, best effort: one the runtime refuses (a budget name it cannot put
/// in a header, say) is left out rather than failing the answer.
fn set_extra(headers: &Headers, extra: &[(&str, String)]) {
    for (name, value) in extra {
        if headers.set(name, value).is_err() {
            let _ = headers.set(name, &value.escape_default().to_string());
        }
    }
}

/// Adds `extra` headers to an answer already made (its headers are the edge's own, so they
/// can be changed); one that cannot be set is left out.
pub fn add_headers(resp: &Response, extra: &[(&str, String)]) {
    if !extra.is_empty() {
        set_extra(&resp.headers(), extra);
    }
}

/// An answer without a body: `status` and `extra` headers.
pub fn empty_response(status: u16, extra: &[(&str, String)]) -> Result<Response, JsValue> {
    let headers = Headers::new()?;
    set_extra(&headers, extra);
    let init = ResponseInit::new();
    init.set_status(status);
    init.set_headers(&headers);
    Response::new_with_opt_u8_array_and_init(None, &init)
}

/// The edge's own answer for `e` (OpenAI's error JSON), with `extra` headers.
pub fn error_response(e: &ApiError, extra: &[(&str, String)]) -> Result<Response, JsValue> {
    let headers = Headers::new()?;
    headers.set("content-type", "application/json")?;
    set_extra(&headers, extra);
    for (name, value) in e.headers() {
        headers.set(name, &value)?;
    }
    let init = ResponseInit::new();
    init.set_status(e.status);
    init.set_headers(&headers);
    let mut body = e.body();
    Response::new_with_opt_u8_array_and_init(Some(&mut body), &init)
}

/// A timer: resolves to `true` after `ms`, or at once to `false` if the runtime refuses timers
/// (workerd does outside a request's context, e.g. while it shuts down — where
/// a panicking timer would take the isolate and every record in its outbox with it). A timer
/// dropped before it fires is cleared, so a lost `select` race leaves nothing scheduled.
///
/// All timers share one JS callback, which gets the timer's token as its argument: a call
/// makes several timers, and a closure for each was a measurable cost.
pub struct Timer {
    token: u32,
    id: Option<i32>,
}

#[derive(Default)]
struct Timers {
    next_token: u32,
    /// Pending timers: fired yet, and who waits.
    pending: HashMap<u32, (bool, Option<Waker>)>,
}

thread_local! {
    static TIMERS: RefCell<Timers> = RefCell::new(Timers::default());
    static ON_TIMER: Closure<dyn FnMut(JsValue)> = Closure::new(|token: JsValue| {
        let token = token.as_f64().unwrap_or(-1.0) as u32;
        let waker = TIMERS.with(|t| {
            t.borrow_mut().pending.get_mut(&token).and_then(|(fired, waker)| {
                *fired = true;
                waker.take()
            })
        });
        if let Some(waker) = waker {
            waker.wake();
        }
    });
}

impl Timer {
    pub fn new(ms: u64) -> Timer {
        let token = TIMERS.with(|t| {
            let mut t = t.borrow_mut();
            let token = t.next_token;
            t.next_token = t.next_token.wrapping_add(1);
            t.pending.insert(token, (false, None));
            token
        });
        let delay = i32::try_from(ms).unwrap_or(i32::MAX);
        let id = ON_TIMER.with(|callback| {
            global()
                .set_timeout_with_callback_and_timeout_and_arguments_1(
                    callback.as_ref().unchecked_ref(),
                    delay,
                    &JsValue::from(token),
                )
                .ok()
        });
        Timer { token, id }
    }
}

impl Future for Timer {
    type Output = bool;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        if self.id.is_none() {
            return Poll::Ready(false);
        }
        TIMERS.with(|t| match t.borrow_mut().pending.get_mut(&self.token) {
            Some((true, _)) | None => Poll::Ready(true),
            Some((false, waker)) => {
                *waker = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        let fired = TIMERS
            .with(|t| t.borrow_mut().pending.remove(&self.token))
            .is_some_and(|(fired, _)| fired);
        if let (Some(id), false) = (self.id, fired) {
            global().clear_timeout_with_handle(id);
        }
    }
}

/// `fut`'s output, or `None` when `ms` passed first. Where the runtime refuses timers (see
/// [`Timer`]) it waits for `fut` alone.
pub async fn within<F: Future + Unpin>(fut: F, ms: u64) -> Option<F::Output> {
    match select(fut, Timer::new(ms)).await {
        Either::Left((out, _)) => Some(out),
        Either::Right((true, _)) => None,
        Either::Right((false, fut)) => Some(fut.await),
    }
}

/// Waits `ms`; `false` if the runtime refuses a timer (see [`Timer`]).
pub async fn sleep(ms: u64) -> bool {
    Timer::new(ms).await
}
