//! A streamed answer relayed from the provider to the client and tapped on the way.
//!
//! The provider's body is read chunk by chunk in the call's `wait_until`. Each chunk goes to the
//! [`StreamTap`] (which measures it and, when the edge itself asked for usage, removes the
//! usage-only chunk) and is written into a native `IdentityTransformStream`, whose readable side
//! is the client's body. Every byte is passed on the moment it arrives; a write waits until the
//! client side took the chunk, so a client that reads slowly slows the reading of the provider
//! (backpressure) instead of filling the isolate's memory.
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
//! - the client side of the pass-through stream closes or errors before the relay closed it
//!   (the runtime dropped the client's body): a pending write rejects, or the writer's
//!   `closed` settles;
//! - a chunk waits for the client longer than [`CLIENT_IDLE_MS`] (the watchdog: a client that
//!   stopped reading without the runtime telling anyone).
//!
//! A provider that is merely slow never trips any of them: nothing waits for the client then.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use futures_util::future::{select, Either};
use js_sys::Uint8Array;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    AbortController, AbortSignal, ReadableStream, ReadableStreamDefaultReader,
    ReadableStreamReadResult, WritableStreamDefaultWriter,
};

use crate::cf::{now_ms, IdentityTransformStream};
use crate::tap::{Forward, StreamTap, StreamTotals};
use crate::web::Timer;

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
    reader: ReadableStreamDefaultReader,
    writer: WritableStreamDefaultWriter,
    tap: StreamTap,
    started: u64,
    upstream: AbortController,
    watch: Rc<RefCell<Watch>>,
    /// The incoming request's signal, whose `onabort` is `_on_abort` until the relay ends.
    client: AbortSignal,
    _on_abort: Closure<dyn FnMut(JsValue)>,
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
        let writer = pass.writable().get_writer()?;
        let reader: ReadableStreamDefaultReader = body.get_reader().unchecked_into();
        let watch = Rc::new(RefCell::new(Watch::default()));
        let on_abort = {
            let watch = watch.clone();
            Closure::new(move |_event: JsValue| Watch::client_left(&watch))
        };
        client.set_onabort(Some(on_abort.as_ref().unchecked_ref()));
        if client.aborted() {
            Watch::client_left(&watch);
        }
        let relay = Relay {
            reader,
            writer,
            tap,
            started,
            upstream,
            watch,
            client: client.clone(),
            _on_abort: on_abort,
        };
        Ok((pass.readable(), relay))
    }

    /// Moves the provider's stream to the client until either end stops; how it ended.
    pub async fn run(mut self) -> StreamEnd {
        let mut gone = ClientGone::new(&self.watch, &self.writer);
        let mut first_byte_ms = None;
        let aborted = loop {
            let read = JsFuture::from(self.reader.read());
            let step = match select(read, &mut gone).await {
                Either::Left((Ok(step), _)) => step.unchecked_into::<ReadableStreamReadResult>(),
                // The provider's stream broke off (or was aborted).
                Either::Left((Err(_), _)) => break Ended::ProviderBroke,
                Either::Right(_) => break Ended::ClientLeft,
            };
            if step.get_done().unwrap_or(true) {
                break Ended::Complete;
            }
            let chunk = step.get_value();
            if first_byte_ms.is_none() {
                first_byte_ms = Some(elapsed(self.started));
            }
            let out = match self.tap.push(&Uint8Array::new(&chunk).to_vec()) {
                Forward::Unchanged => chunk,
                Forward::Bytes(out) if out.is_empty() => continue,
                Forward::Bytes(out) => Uint8Array::from(out.as_slice()).into(),
            };
            if !self.deliver(&out, &mut gone).await {
                break Ended::ClientLeft;
            }
        };
        let (rest, totals) = std::mem::take(&mut self.tap).finish();
        let aborted = match aborted {
            Ended::Complete => {
                let delivered = rest.is_empty()
                    || self
                        .deliver(&Uint8Array::from(rest.as_slice()).into(), &mut gone)
                        .await;
                if delivered {
                    // Awaited against `gone`: a client that leaves now must not hold the record.
                    let closed = JsFuture::from(self.writer.close());
                    let _ = select(closed, &mut gone).await;
                }
                !delivered
            }
            Ended::ProviderBroke => {
                // The client sees the stream cut, as the provider cut it.
                unawaited(self.writer.abort());
                true
            }
            Ended::ClientLeft => {
                self.upstream.abort();
                unawaited(self.reader.cancel());
                unawaited(self.writer.abort());
                true
            }
        };
        StreamEnd {
            totals,
            first_byte_ms,
            end_ms: elapsed(self.started),
            aborted,
        }
    }

    /// Writes `chunk` to the client side and waits until the client took it; `false` when the
    /// client left meanwhile.
    async fn deliver(&self, chunk: &JsValue, gone: &mut ClientGone) -> bool {
        let written = JsFuture::from(self.writer.write_with_chunk(chunk));
        self.watch.borrow_mut().waiting_since = Some(now_ms());
        let taken = match select(written, gone).await {
            Either::Left((taken, _)) => taken.is_ok(),
            Either::Right(_) => false,
        };
        self.watch.borrow_mut().waiting_since = None;
        taken
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.client.set_onabort(None);
    }
}

/// Lets `promise` settle on its own. Wrapped in a `JsFuture` (then dropped) so that a rejection
/// is handled: the future's callbacks live until the promise settles.
fn unawaited(promise: js_sys::Promise) {
    drop(JsFuture::from(promise));
}

enum Ended {
    Complete,
    ProviderBroke,
    ClientLeft,
}

fn elapsed(since: u64) -> u32 {
    u32::try_from(now_ms().saturating_sub(since)).unwrap_or(u32::MAX)
}

/// What the relay and the request signal's `onabort` share.
#[derive(Default)]
struct Watch {
    /// The request's signal aborted: the client is gone.
    client_left: bool,
    /// Since when a chunk waits for the client (ms since the epoch), if one does.
    waiting_since: Option<u64>,
    /// Who waits for `client_left`.
    waker: Option<Waker>,
}

impl Watch {
    fn client_left(watch: &Rc<RefCell<Watch>>) {
        let waker = {
            let mut w = watch.borrow_mut();
            w.client_left = true;
            w.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Ready once the client is gone, by any of the signs in the module docs. Polled again after
/// each chunk: it keeps its state (the writer's `closed`, the watchdog's timer) across them.
struct ClientGone {
    watch: Rc<RefCell<Watch>>,
    /// The writer's `closed`: it settles before the relay closes the writer only when the
    /// client side went away.
    closed: Option<JsFuture>,
    /// The watchdog's next look at a waiting chunk; `None` where the runtime refuses timers.
    tick: Option<Timer>,
}

impl ClientGone {
    fn new(watch: &Rc<RefCell<Watch>>, writer: &WritableStreamDefaultWriter) -> ClientGone {
        ClientGone {
            watch: watch.clone(),
            closed: Some(JsFuture::from(writer.closed())),
            tick: Some(Timer::new(CLIENT_IDLE_MS / 3)),
        }
    }
}

impl Future for ClientGone {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(closed) = self.closed.as_mut() {
            if Pin::new(closed).poll(cx).is_ready() {
                self.closed = None;
                return Poll::Ready(());
            }
        }
        while let Some(tick) = self.tick.as_mut() {
            match Pin::new(tick).poll(cx) {
                Poll::Pending => break,
                Poll::Ready(false) => self.tick = None,
                Poll::Ready(true) => {
                    let stalled = self
                        .watch
                        .borrow()
                        .waiting_since
                        .is_some_and(|since| now_ms().saturating_sub(since) >= CLIENT_IDLE_MS);
                    if stalled {
                        return Poll::Ready(());
                    }
                    self.tick = Some(Timer::new(CLIENT_IDLE_MS / 3));
                }
            }
        }
        let mut w = self.watch.borrow_mut();
        if w.client_left {
            Poll::Ready(())
        } else {
            w.waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}
