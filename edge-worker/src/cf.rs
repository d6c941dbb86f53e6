//! The Cloudflare Workers runtime as Tollgate uses it, declared directly with wasm-bindgen:
//! the handlers' `env` and `ctx`, KV, Durable Objects, Queues, the native pass-through stream
//! and the console.
//!
//! These declarations replace the `worker` crate. It wraps every runtime object in Rust-side
//! copies and, with them, brought about a fifth of the bundle (its request/response model,
//! `serde_wasm_bindgen`, image-resizing and routing types) for the dozen runtime calls Tollgate
//! makes. Each binding here is the runtime's own JavaScript API, one method per call we use.

use std::future::Future;

use js_sys::{Array, Promise};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::web::settle;

#[wasm_bindgen]
extern "C" {
    /// The `env` a handler (or a Durable Object's constructor) receives: vars and secrets as
    /// strings, other bindings as runtime objects.
    #[derive(Clone, Debug)]
    pub type Env;

    /// A handler's `ctx`.
    #[derive(Clone, Debug)]
    pub type ExecutionContext;
    #[wasm_bindgen(method, catch, js_name = waitUntil)]
    fn wait_until_promise(this: &ExecutionContext, promise: &Promise) -> Result<(), JsValue>;

    /// The runtime's native pass-through stream: what is written to `writable` is read from
    /// `readable`, with no JavaScript in between (see `stream.rs` for why the relay uses it).
    pub type IdentityTransformStream;
    #[wasm_bindgen(constructor, catch)]
    pub fn new() -> Result<IdentityTransformStream, JsValue>;
    #[wasm_bindgen(method, getter)]
    pub fn readable(this: &IdentityTransformStream) -> web_sys::ReadableStream;
    #[wasm_bindgen(method, getter)]
    pub fn writable(this: &IdentityTransformStream) -> web_sys::WritableStream;

    /// A Durable Object namespace binding.
    pub type DurableObjectNamespace;
    #[wasm_bindgen(method, catch, js_name = idFromName)]
    fn id_from_name(this: &DurableObjectNamespace, name: &str) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(method, catch, js_name = get)]
    fn stub(this: &DurableObjectNamespace, id: &JsValue) -> Result<DurableObjectStub, JsValue>;

    /// A handle on one Durable Object.
    pub type DurableObjectStub;
    #[wasm_bindgen(method, catch, js_name = fetch)]
    fn fetch_request(
        this: &DurableObjectStub,
        request: &web_sys::Request,
    ) -> Result<Promise, JsValue>;

    /// What a Durable Object's constructor receives as `state`.
    #[derive(Clone, Debug)]
    pub type DurableObjectState;
    #[wasm_bindgen(method, getter)]
    fn storage(this: &DurableObjectState) -> DurableObjectStorage;

    /// A Durable Object's transactional storage.
    pub type DurableObjectStorage;
    #[wasm_bindgen(method, catch, js_name = get)]
    fn get_value(this: &DurableObjectStorage, key: &str) -> Result<Promise, JsValue>;
    #[wasm_bindgen(method, catch, js_name = put)]
    fn put_value(
        this: &DurableObjectStorage,
        key: &str,
        value: &JsValue,
    ) -> Result<Promise, JsValue>;

    /// A Queue producer binding.
    pub type Queue;
    #[wasm_bindgen(method, catch, js_name = send)]
    fn send_with_options(
        this: &Queue,
        body: &JsValue,
        options: &JsValue,
    ) -> Result<Promise, JsValue>;

    /// What the queue handler receives.
    pub type MessageBatch;
    #[wasm_bindgen(method, getter)]
    pub fn messages(this: &MessageBatch) -> Array;
    #[wasm_bindgen(method, js_name = ackAll)]
    pub fn ack_all(this: &MessageBatch);
    #[wasm_bindgen(method, js_name = retryAll)]
    pub fn retry_all(this: &MessageBatch);

    /// One message of a [`MessageBatch`].
    pub type Message;
    #[wasm_bindgen(method, getter)]
    pub fn body(this: &Message) -> JsValue;

    #[wasm_bindgen(js_namespace = console, js_name = error)]
    pub fn console_error_str(text: &str);
    #[wasm_bindgen(js_namespace = console, js_name = warn)]
    pub fn console_warn_str(text: &str);
}

/// `console.error` with `format!` arguments.
macro_rules! console_error {
    ($($arg:tt)*) => { $crate::cf::console_error_str(&format!($($arg)*)) };
}
/// `console.warn` with `format!` arguments.
macro_rules! console_warn {
    ($($arg:tt)*) => { $crate::cf::console_warn_str(&format!($($arg)*)) };
}
pub(crate) use {console_error, console_warn};

/// Milliseconds since the Unix epoch (the runtime's clock, which advances between I/O).
pub fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

/// Runs `fut` to completion as a promise: `Ok` resolves it, `Err` rejects it.
pub fn promise<F>(fut: F) -> Promise
where
    F: Future<Output = Result<JsValue, JsValue>> + 'static,
{
    future_to_promise(fut)
}

impl Env {
    fn get(&self, name: &str) -> Option<JsValue> {
        js_sys::Reflect::get(self, &JsValue::from_str(name))
            .ok()
            .filter(|v| !v.is_undefined() && !v.is_null())
    }

    /// A var's or secret's text (both are strings on `env`); `None` when unset or empty.
    pub fn text(&self, name: &str) -> Option<String> {
        self.get(name)?.as_string().filter(|v| !v.is_empty())
    }

    /// The binding `name` (a KV namespace, a Durable Object namespace, a queue), if one of
    /// that kind is bound there: a var of that name by mistake does not count.
    pub fn binding<T: Binding>(&self, name: &str) -> Option<T> {
        let v = self.get(name).filter(JsValue::is_object)?;
        let method = js_sys::Reflect::get(&v, &JsValue::from_str(T::METHOD)).ok()?;
        method.is_function().then(|| v.unchecked_into())
    }
}

/// A kind of binding, recognised by a method it has.
pub trait Binding: JsCast {
    const METHOD: &'static str;
}
impl Binding for DurableObjectNamespace {
    const METHOD: &'static str = "idFromName";
}
impl Binding for Queue {
    const METHOD: &'static str = "send";
}

impl ExecutionContext {
    /// Keeps the isolate working on `fut` after the response (Cloudflare allows 30 s).
    pub fn wait_until<F: Future<Output = ()> + 'static>(&self, fut: F) {
        let work = future_to_promise(async move {
            fut.await;
            Ok(JsValue::UNDEFINED)
        });
        if let Err(e) = self.wait_until_promise(&work) {
            console_error!(
                "tollgate: waitUntil refused: {}",
                crate::web::error_text(&e)
            );
        }
    }
}

impl DurableObjectNamespace {
    /// Sends `request` to the object named `name` (created on first use) and awaits its answer.
    pub async fn fetch(
        &self,
        name: &str,
        request: &web_sys::Request,
    ) -> Result<web_sys::Response, String> {
        let text = |e: JsValue| crate::web::error_text(&e);
        let id = self.id_from_name(name).map_err(text)?;
        let stub = self.stub(&id).map_err(text)?;
        settle(stub.fetch_request(request))
            .await?
            .dyn_into::<web_sys::Response>()
            .map_err(|_| "the Durable Object answered something other than a Response".into())
    }
}

impl DurableObjectState {
    /// The text stored under `key`; `None` when there is none (or it is not text).
    pub async fn stored_text(&self, key: &str) -> Result<Option<String>, String> {
        Ok(settle(self.storage().get_value(key)).await?.as_string())
    }

    /// Stores `text` under `key`.
    pub async fn store_text(&self, key: &str, text: &str) -> Result<(), String> {
        settle(self.storage().put_value(key, &JsValue::from_str(text)))
            .await
            .map(drop)
    }
}

impl Queue {
    /// Sends one message whose body is `text` (content type `text`).
    pub async fn send_text(&self, text: &str) -> Result<(), String> {
        let options = js_sys::Object::new();
        js_sys::Reflect::set(&options, &"contentType".into(), &"text".into())
            .map_err(|e| crate::web::error_text(&e))?;
        settle(self.send_with_options(&JsValue::from_str(text), &options))
            .await
            .map(drop)
    }
}

/// Runs once per wasm instance: a panic is logged (with `panic = "abort"` it then traps, and
/// the call that panicked fails).
///
/// The instance is not replaced after a panic: wasm-bindgen's reinit swaps the instance under
/// live objects — a `BudgetGuard`, the callbacks of promises in flight — whose pointers then
/// point into the new instance's memory (found in review). The workspace lints keep panics out
/// of Tollgate's code; one from a dependency costs the call it happens in.
#[wasm_bindgen(start)]
fn start() {
    std::panic::set_hook(Box::new(|info| {
        console_error_str(&format!("tollgate: Rust panic: {info}"));
    }));
}
