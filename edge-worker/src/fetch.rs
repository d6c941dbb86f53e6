//! The `fetch` handler: a call from the app's request to the provider's answer — key, attribution,
//! body, plan, budgets ([`crate::enforce`]), then [`crate::proxy`]. Decisions live in the pure
//! modules; this file moves requests, bytes and time.

use std::cell::RefCell;

use usage_core::ErrorClass;
use wasm_bindgen::JsValue;
use worker::event;

use crate::attribution;
use crate::bindings::settings;
use crate::call;
use crate::cf::{now_ms, Context, Env};
use crate::enforce::guard_budgets;
use crate::errors::ApiError;
use crate::key_lookup::lookup_key;
use crate::keys;
use crate::proxy::proxy;
use crate::record::{facts, new_event_id, record_later, Prepared};
use crate::web;

/// Request headers passed on to the provider (everything else, notably cookies and
/// `x-tollgate-*`, stays at the edge).
const FORWARDED_HEADERS: &[&str] = &[
    "accept",
    "content-type",
    "openai-organization",
    "openai-project",
    "openai-beta",
    "http-referer",
    "x-title",
    "user-agent",
];

/// The fetch handler (called by the entrypoint in `shim.js`). It takes and answers the
/// runtime's own request and response objects: workers-rs passes them through unchanged.
#[event(fetch)]
pub async fn fetch(
    req: web_sys::Request,
    env: Env,
    ctx: Context,
) -> worker::Result<web_sys::Response> {
    let started = now_ms();
    let origin = req.headers().get("origin").ok().flatten();
    let cors = settings(&env).cors.answer_headers(origin.as_deref());
    let answer = if req.method() == "OPTIONS" {
        preflight(&req, &env, origin.as_deref())
    } else {
        match handle(req, &env, &ctx, started).await {
            Ok(resp) => {
                web::add_headers(&resp, &cors);
                Ok(resp)
            }
            Err(e) => web::error_response(&e, &cors),
        }
    };
    answer.map_err(worker::Error::from)
}

/// A browser's CORS preflight (see [`crate::cors`]): 204 with what an allowed origin may do,
/// 403 for any other origin, 404 for a path the edge does not serve.
fn preflight(
    req: &web_sys::Request,
    env: &Env,
    origin: Option<&str>,
) -> Result<web_sys::Response, JsValue> {
    let url = req.url();
    let path = call::url_path(&url);
    if call::method_of(path).is_none() {
        return web::error_response(&ApiError::not_found(path), &[]);
    }
    let policy = &settings(env).cors;
    match origin.filter(|o| policy.allows(o)) {
        Some(o) => {
            let asked = req
                .headers()
                .get("access-control-request-headers")
                .ok()
                .flatten();
            web::empty_response(204, &policy.preflight_headers(o, asked.as_deref()))
        }
        None => web::error_response(
            &ApiError::origin_not_allowed(origin.unwrap_or("(none)")),
            &[],
        ),
    }
}

async fn handle(
    req: web_sys::Request,
    env: &Env,
    ctx: &Context,
    started: u64,
) -> Result<web_sys::Response, ApiError> {
    let url = req.url();
    let path = call::url_path(&url);
    let method = req.method();
    let route = call::route(&method, path).ok_or_else(|| match call::method_of(path) {
        Some(allowed) => ApiError::method_not_allowed(&method, path, allowed),
        None => ApiError::not_found(path),
    })?;
    let settings = settings(env);

    let request_headers = req.headers();
    let header = |name: &str| request_headers.get(name).ok().flatten();
    let key = match keys::presented_key_hash(header("authorization").as_deref()) {
        Some(hash) => lookup_key(env, &settings, &hash).await,
        None => None,
    }
    .ok_or_else(|| {
        ApiError::unauthorized(
            "Incorrect API key provided. Use a Tollgate app key (tg_…) as the bearer token.",
        )
    })?;
    let attribution = attribution::trusted(
        attribution::parse(
            header(attribution::USER_HEADER).as_deref(),
            header(attribution::TASK_HEADER).as_deref(),
            header(attribution::TAGS_HEADER).as_deref(),
        )?,
        &key,
    )?;
    let header_provider = header("x-tollgate-provider");
    // (An unreadable length is as good as none: the body is then read chunk by chunk, limited.)
    let declared_length = header("content-length").and_then(|l| l.trim().parse::<usize>().ok());
    let test_now = header("x-tollgate-test-now");
    let forwarded: Vec<(&str, String)> = FORWARDED_HEADERS
        .iter()
        .filter_map(|h| header(h).map(|v| (*h, v)))
        .collect();

    if declared_length.is_some_and(|len| len > call::MAX_REQUEST_BYTES) {
        return Err(ApiError::too_large(call::MAX_REQUEST_BYTES));
    }
    let body = if route.has_body {
        read_body(&req, declared_length, settings.body_timeout_ms).await?
    } else {
        Vec::new()
    };
    let providers = settings
        .providers
        .as_ref()
        .map_err(|e| ApiError::internal(e.clone()))?;
    let plan = call::plan(
        route,
        &body,
        providers,
        &settings.default_provider,
        header_provider.as_deref(),
    )?;
    let region = colo(&req, started).unwrap_or_else(|| settings.edge_region.clone());
    // A test clock for budget periods, honoured only where ALLOW_TEST_CLOCK=1 (never deployed).
    let budget_now = match (settings.allow_test_clock, test_now) {
        (true, Some(t)) => t.parse().unwrap_or((started / 1000) as i64),
        _ => (started / 1000) as i64,
    };
    let mut prepared = Prepared {
        route,
        plan,
        key,
        attribution,
        region,
        request_bytes: body.len() as u64,
        event_id: new_event_id(started),
        reservations: Vec::new(),
        budget_now,
        unchecked_budgets: Vec::new(),
    };
    // From here on every answer, success or refusal, has a record: name it to the client.
    let mut extra = vec![(crate::EVENT_ID_HEADER, prepared.event_id.to_string())];
    // The price book the call's worst case and record are priced with (`prices`).
    crate::prices::refresh(env, ctx, &settings).await;
    let answer = match guard_budgets(env, ctx, &settings, &mut prepared).await {
        Ok(warnings) => {
            if !warnings.is_empty() {
                extra.push(("x-tollgate-budget-warning", warnings.join("; ")));
            }
            let client = req.signal();
            proxy(
                prepared, forwarded, env, ctx, &settings, started, &client, &extra,
            )
            .await
        }
        Err(refusal) => {
            let mut f = facts(&prepared, started, prepared.event_id);
            f.status_code = refusal.status;
            f.error_class = ErrorClass::BudgetBlocked;
            record_later(env, ctx, f, Vec::new(), budget_now);
            Err(refusal)
        }
    };
    match answer {
        Ok(resp) => Ok(resp),
        Err(e) => web::error_response(&e, &extra).map_err(|why| {
            ApiError::internal(format!(
                "building the error response: {}",
                web::error_text(&why)
            ))
        }),
    }
}

/// The request body as it arrives: refused once past [`call::MAX_REQUEST_BYTES`] (413, also
/// when no `content-length` announced it) or when it takes longer than `timeout_ms` (408), so a
/// client trickling bytes holds neither memory nor the isolate forever.
///
/// A body whose length was declared (and checked) is read whole with `arrayBuffer()`, the
/// cheap path every SDK takes; only a chunked upload is read chunk by chunk, to stop it at the
/// limit.
async fn read_body(
    req: &web_sys::Request,
    declared_length: Option<usize>,
    timeout_ms: u64,
) -> Result<Vec<u8>, ApiError> {
    if req.body().is_none() {
        return Ok(Vec::new());
    }
    let unreadable = |e: String| {
        ApiError::invalid_request(format!("could not read the request body: {e}"), None)
    };
    let read = Box::pin(async move {
        if declared_length.is_some() {
            return web::request_bytes(req).await.map_err(unreadable);
        }
        let Some(stream) = req.body() else {
            return Ok(Vec::new());
        };
        let mut body = call::BodyBuffer::new(call::MAX_REQUEST_BYTES);
        web::read_chunks(&stream, |chunk| body.push(chunk), unreadable).await?;
        Ok(body.into_bytes())
    });
    web::within(read, timeout_ms)
        .await
        .unwrap_or(Err(ApiError::body_timeout(timeout_ms)))
}

thread_local! {
    /// This isolate's data centre, and when `request.cf` was last read (ms; 0 = never).
    static COLO: RefCell<(Option<String>, u64)> = const { RefCell::new((None, 0)) };
}

/// The Cloudflare data centre serving the request (`request.cf.colo`), when there is one
/// (there is none under a local workerd, where reading it through the typed API throws).
///
/// Read once per isolate: an isolate runs in one data centre, and `request.cf` is built anew
/// for each read — profiling showed it at 5% of the worker's CPU under workerd. A request
/// without one (a local workerd, a call from another worker) is asked again a minute later.
fn colo(req: &web_sys::Request, now: u64) -> Option<String> {
    const RECHECK_MS: u64 = 60_000;
    COLO.with(|cell| {
        let mut known = cell.borrow_mut();
        if known.0.is_some() || (known.1 != 0 && now.saturating_sub(known.1) < RECHECK_MS) {
            return known.0.clone();
        }
        let read = || {
            let cf = js_sys::Reflect::get(req, &"cf".into()).ok()?;
            if cf.is_undefined() || cf.is_null() {
                return None;
            }
            js_sys::Reflect::get(&cf, &"colo".into()).ok()?.as_string()
        };
        *known = (read(), now.max(1));
        known.0.clone()
    })
}
