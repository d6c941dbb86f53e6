//! A streamed answer relayed from the provider to the client and tapped on the way.
//!
//! The provider's body is read chunk by chunk in the call's `wait_until`. Each chunk goes to the
//! [`StreamTap`] (which measures it and, when the edge itself asked for usage, removes the
//! usage-only chunk) and is written into a native `IdentityTransformStream`, whose readable side
//! is the client's body. The loop that reads, writes and watches the client is JavaScript
//! (`relay.js`), calling into wasm once per chunk: the same loop awaited from Rust cost ~0.75 ms
//! more CPU per stream (two closures and a trip through wasm-bindgen's executor per await;
//! docs/BENCHMARKS.md, "Streams: the relay's pump"). Every byte is passed on the moment it arrives; a write waits until the
//! client side took the chunk, so a client that reads slowly slows the reading of the provider
//! (backpressure) instead of filling the isolate's memory.
//!
//! # Why not `tee()` when nothing needs stripping
//! A stream whose client asked for the usage chunk itself needs no change, and a native branch
//! of `tee()` for the client (the tap reading the other) costs less CPU. But the runtime then
//! tells nobody when the client leaves — the request's `signal` did not abort in workerd — so
//! the provider would go on generating, and billing, to its end
//! (`a_client_that_asked_for_usage_and_hangs_up_stops_the_provider_too` in tests/edge_e2e.rs
//! caught it). Every stream goes through the relay.
//!
//! # Why not `pipeTo` through a JS `TransformStream`
//! That was the first design: one synchronous transformer call per chunk, no Rust future per
//! chunk. Beside a CPU hog, about one stream in 800 whose client hung up then never ended
//! (issue #18): workerd stopped delivering the provider's body into the pipe and neither
//! cancelled the client side (the transformer's `cancel`) nor aborted `request.signal`, so the
//! call's record waited for a pipe that the next workerd restart cancelled — a record lost.
//! The JS streams of workerd have known gaps of this kind (workerd issues #5058, #6832: a
//! cancel that is not propagated through a `TransformStream`, a response body pump dropped on
//! a disconnect without cancelling its JS source). Here the runtime's pump only ever sees a
//! native stream, and the relay owns both ends, so every way the client can leave reaches it.
//!
//! # How the client leaving is told
//! Any of these ends the relay at once, aborts the provider's request (it would go on
//! generating, and billing, tokens nobody reads) and records the call as aborted:
//! - the incoming request's `signal` aborts (a client disconnect, under the
//!   `enable_request_signal` compatibility flag);
//! - the client side of the pass-through stream errors (the runtime cancelled the client's
//!   body): a pending write rejects, or the writer's `closed` rejects;
//! - a chunk, or the final close, waits for the client longer than [`CLIENT_IDLE_MS`] (the
//!   watchdog: a client that stopped reading without the runtime telling anyone). The close
//!   is watched too since a soak beside a CPU hog lost a record to a close that never ended.
//!
//! A provider that is merely slow never trips any of them: nothing waits for the client then.
//! Once the provider's stream ended, the record no longer waits for anyone but the client,
//! and for it at most [`CLIENT_IDLE_MS`].

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Function, Promise, Uint8Array};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortController, AbortSignal, ReadableStream, WritableStream};

use crate::cf::{now_ms, IdentityTransformStream};
use crate::tap::{Forward, StreamTap, StreamTotals};

#[wasm_bindgen(module = "/src/relay.js")]
extern "C" {
    /// The pump (see `relay.js`); resolves to [`COMPLETE`], [`PROVIDER_BROKE`] or
    /// [`CLIENT_LEFT`].
    #[wasm_bindgen(js_name = relay)]
    fn pump(
        body: &ReadableStream,
        writable: &WritableStream,
        signal: &AbortSignal,
        upstream: &AbortController,
        on_chunk: &Function,
        idle_ms: f64,
    ) -> Promise;
}

/// How `relay.js` says the stream ended.
const COMPLETE: f64 = 0.0;
const PROVIDER_BROKE: f64 = 1.0;
const CLIENT_LEFT: f64 = 2.0;

/// A chunk the client has not taken for this long means the client is gone: the call is
/// recorded as aborted and the provider's request aborted. The runtime does not always say
/// when a client stops reading (see the module docs); a provider that is merely slow never
/// trips it (nothing waits for the client then).
pub const CLIENT_IDLE_MS: u64 = 15_000;

/// How a relayed stream ended.
pub struct StreamEnd {
    pub totals: StreamTotals,
    /// When the provider's first chunk arrived (ms after the call started).
    pub first_byte_ms: Option<u32>,
    /// When the stream ended (ms after the call started).
    pub end_ms: u32,
    /// The stream did not run to the provider's end: the client left, or the provider's
    /// stream broke off.
    pub aborted: bool,
}

/// A stream set up to be relayed: its client side goes into the response now, and
/// [`Relay::run`] (in the call's `wait_until`) moves the bytes.
pub struct Relay {
    body: ReadableStream,
    writable: WritableStream,
    tap: StreamTap,
    started: u64,
    upstream: AbortController,
    /// The incoming request's signal: it aborts when the client disconnects.
    client: AbortSignal,
}

/// What the per-chunk callback and [`Relay::run`] share.
struct Tapping {
    tap: StreamTap,
    first_byte_ms: Option<u32>,
    /// The chunk in wasm memory, reused from chunk to chunk.
    buf: Vec<u8>,
}

impl Relay {
    /// Sets up the relay of `body` (the provider's); `upstream` aborts the provider's request,
    /// `client` is the incoming request's signal. Returns the client's body and the relay.
    pub fn new(
        body: &ReadableStream,
        tap: StreamTap,
        started: u64,
        upstream: AbortController,
        client: &AbortSignal,
    ) -> Result<(ReadableStream, Relay), JsValue> {
        let pass = IdentityTransformStream::new()?;
        let relay = Relay {
            body: body.clone(),
            writable: pass.writable(),
            tap,
            started,
            upstream,
            client: client.clone(),
        };
        Ok((pass.readable(), relay))
    }

    /// Moves the provider's stream to the client until either end stops; how it ended.
    pub async fn run(self) -> StreamEnd {
        let started = self.started;
        let state = Rc::new(RefCell::new(Tapping {
            tap: self.tap,
            first_byte_ms: None,
            buf: Vec::new(),
        }));
        let on_chunk = {
            let state = state.clone();
            Closure::<dyn FnMut(JsValue) -> JsValue>::new(move |chunk: JsValue| {
                let mut s = state.borrow_mut();
                let s = &mut *s;
                if chunk.is_null() {
                    let rest = s.tap.end();
                    return if rest.is_empty() {
                        JsValue::NULL
                    } else {
                        Uint8Array::from(rest.as_slice()).into()
                    };
                }
                if s.first_byte_ms.is_none() {
                    s.first_byte_ms = Some(elapsed(started));
                }
                let bytes: &Uint8Array = chunk.unchecked_ref();
                s.buf.resize(bytes.length() as usize, 0);
                bytes.copy_to(&mut s.buf);
                match s.tap.push(&s.buf) {
                    Forward::Unchanged => JsValue::UNDEFINED,
                    Forward::Bytes(out) if out.is_empty() => JsValue::NULL,
                    Forward::Bytes(out) => Uint8Array::from(out.as_slice()).into(),
                }
            })
        };
        let pumped = pump(
            &self.body,
            &self.writable,
            &self.client,
            &self.upstream,
            on_chunk.as_ref().unchecked_ref(),
            CLIENT_IDLE_MS as f64,
        );
        let ended = JsFuture::from(pumped).await;
        // The pump neither rejects nor throws (`relay.js`); anything else counts as broken off.
        let aborted = match ended.ok().and_then(|v| v.as_f64()) {
            Some(COMPLETE) => false,
            Some(PROVIDER_BROKE) | Some(CLIENT_LEFT) => true,
            _ => {
                self.upstream.abort();
                true
            }
        };
        drop(on_chunk);
        let (tap, first_byte_ms) = {
            let mut s = state.borrow_mut();
            (std::mem::take(&mut s.tap), s.first_byte_ms)
        };
        let (_, totals) = tap.finish();
        StreamEnd {
            totals,
            first_byte_ms,
            end_ms: elapsed(started),
            aborted,
        }
    }
}

fn elapsed(since: u64) -> u32 {
    u32::try_from(now_ms().saturating_sub(since)).unwrap_or(u32::MAX)
}
