//! The floor of the edge benchmark (`cargo xtask bench edge`, column `rust floor`): the least a
//! Rust → Wasm worker can do and still act on the request body — read it into wasm memory,
//! then forward it to the provider with the provider's key — and nothing else: no auth, no
//! routing, no measuring, no record.
//!
//! Tollgate's worker must read the body (it routes by model and asks streams for their usage),
//! so no design of it can be faster than this. The benchmark measures both against the same
//! JavaScript passthrough, which hands the body stream to `fetch` unread.
//!
//! Two entry points: `fetch`, an async Rust handler (wasm-bindgen futures, the request built
//! through `web_sys`), and `relay_body`, a synchronous copy of the body into wasm and back that
//! a JavaScript handler calls (`edge_worker::local::FLOOR_JS_HANDLER_SHIM_JS`; column `floor, JS
//! handler`): the floor of a design whose Rust core is called synchronously.
//!
//! Built the same way as the worker (wasm-bindgen, `web_sys`, the `wasm-release` profile);
//! bindings `UPSTREAM` (provider base URL) and `KEY`.

#[cfg(target_arch = "wasm32")]
mod worker {
    use js_sys::{Promise, Reflect, Uint8Array};
    use wasm_bindgen::prelude::*;
    use wasm_bindgen::JsCast;
    use wasm_bindgen_futures::{future_to_promise, JsFuture};

    fn text(env: &JsValue, name: &str) -> Result<String, JsValue> {
        Reflect::get(env, &name.into())?
            .as_string()
            .ok_or_else(|| JsValue::from_str(&format!("binding {name} is not set")))
    }

    /// The body copied into wasm and back: what a JavaScript handler over a synchronous Rust
    /// core does at least.
    #[wasm_bindgen]
    pub fn relay_body(body: &[u8]) -> Vec<u8> {
        body.to_vec()
    }

    #[wasm_bindgen]
    pub fn fetch(req: web_sys::Request, env: JsValue, _ctx: JsValue) -> Promise {
        future_to_promise(async move {
            let (upstream, key) = (text(&env, "UPSTREAM")?, text(&env, "KEY")?);
            let body = Uint8Array::new(&JsFuture::from(req.array_buffer()?).await?).to_vec();
            let headers = web_sys::Headers::new()?;
            headers.set("content-type", "application/json")?;
            headers.set("authorization", &format!("Bearer {key}"))?;
            let init = web_sys::RequestInit::new();
            init.set_method(&req.method());
            init.set_headers(&headers);
            init.set_body(&Uint8Array::from(body.as_slice()));
            let url = req.url();
            let path = url.split_once("/v1/").map_or("", |(_, p)| p);
            let global: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
            let sent = global.fetch_with_str_and_init(&format!("{upstream}/{path}"), &init);
            JsFuture::from(sent).await
        })
    }
}
