//! The Cloudflare Workers runtime as Tollgate uses it. workers-rs (the `worker` crate) provides
//! the entry points (`#[event(fetch)]` in `fetch.rs`, `#[event(queue)]` in `consumer.rs`,
//! `#[durable_object]` in `guard.rs`), [`Env`] and its vars, secrets, Queue and Durable Object
//! bindings, [`Context`], Durable Object storage and the console macros. This module re-exports
//! those and adds only what workers-rs does not offer:
//!
//! - [`IdentityTransformStream`], the runtime's native pass-through stream (the stream relay's
//!   output, `stream.rs`);
//! - [`wait_until`], which logs where `Context::wait_until` would panic (a panic traps the
//!   isolate under `panic = "abort"`: every call in flight in it fails);
//! - [`text`], a var or secret as `Option<String>`, empty meaning unset.
//!
//! The hot path — request and response bodies, the `fetch` to the provider — stays on the
//! runtime's web APIs through `web_sys` (`web.rs` gives the benchmark figures), and the stream
//! relay's loop is JavaScript (`relay.js`, see `stream.rs`);
//! workers-rs hands the handlers those objects unchanged (`FromRequest`/`IntoResponse` for
//! `web_sys::Request`/`Response`).
//!
//! The instance is never replaced after a panic: workers-rs's start function logs it, and
//! wasm-bindgen's reinit (which would swap the instance under a live `BudgetGuard` and the
//! callbacks of promises in flight) stays off because the build does not enable the abort
//! handler (`xtask/src/edge.rs`).

use std::future::Future;

use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

pub use worker::{console_error, console_warn, Context, Env, MessageBatch, Queue};

#[wasm_bindgen]
extern "C" {
    /// The runtime's native pass-through stream: what is written to `writable` is read from
    /// `readable`, with no JavaScript in between (see `stream.rs` for why the relay uses it).
    pub type IdentityTransformStream;
    #[wasm_bindgen(constructor, catch)]
    pub fn new() -> Result<IdentityTransformStream, JsValue>;
    #[wasm_bindgen(method, getter)]
    pub fn readable(this: &IdentityTransformStream) -> web_sys::ReadableStream;
    #[wasm_bindgen(method, getter)]
    pub fn writable(this: &IdentityTransformStream) -> web_sys::WritableStream;
}

/// Milliseconds since the Unix epoch (the runtime's clock, which advances between I/O).
/// `Date.now()` itself: `worker::Date::now()` builds a `Date` object first, and every call reads
/// the clock several times.
pub fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

/// A var's or secret's text; `None` when unset, empty, or not text.
pub fn text(env: &Env, name: &str) -> Option<String> {
    env.var(name)
        .ok()
        .map(|v| v.to_string())
        .filter(|v| !v.is_empty())
}

/// Keeps the isolate working on `fut` after the response (Cloudflare allows 30 s). The same as
/// `Context::wait_until`, except that a refusal by the runtime is logged instead of panicking.
pub fn wait_until<F: Future<Output = ()> + 'static>(ctx: &Context, fut: F) {
    let work = future_to_promise(async move {
        fut.await;
        Ok(JsValue::UNDEFINED)
    });
    if let Err(e) = ctx.as_ref().wait_until(&work) {
        console_error!(
            "tollgate: waitUntil refused: {}",
            crate::web::error_text(&e)
        );
    }
}
