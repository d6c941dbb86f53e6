//! The Workers glue: the `fetch` and `queue` handlers. Decisions live in the pure modules; this
//! file moves requests, bytes and time.

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use futures_util::future::{select, Either};
use time::OffsetDateTime;
use usage_core::{parse_response, Endpoint, ErrorClass, PriceTable, TokenCounts};
use uuid::Uuid;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::prelude::*;

use crate::attribution::{self, Attribution};
use crate::bindings::{self, secret, settings, var};
use crate::budget::GuardRequest;
use crate::budget::{self, BudgetSpec};
use crate::call::{self, Plan, Route};
use crate::cf::{
    self, console_error, now_ms, Env, ExecutionContext as Context, Message, MessageBatch,
};
use crate::config::{Provider, Settings};
use crate::errors::ApiError;
use crate::guard;
use crate::json;
use crate::keys::{self, AppKey};
use crate::measure::{self, CallFacts};
use crate::ship;
use crate::tap::{Forward, StreamTap, StreamTotals};
use crate::web;

thread_local! {
    static PRICES: OnceCell<Option<PriceTable>> = const { OnceCell::new() };
    static LOCAL_KEYS: OnceCell<HashMap<String, AppKey>> = const { OnceCell::new() };
}

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

fn datetime_ms(ms: u64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn elapsed_ms(since: u64) -> u32 {
    u32::try_from(now_ms().saturating_sub(since)).unwrap_or(u32::MAX)
}

fn with_prices<T>(f: impl FnOnce(&PriceTable) -> T) -> Option<T> {
    PRICES.with(|cell| {
        let table = cell.get_or_init(|| match PriceTable::builtin() {
            Ok(t) => Some(t),
            Err(e) => {
                console_error!("tollgate: built-in price table does not load: {e}");
                None
            }
        });
        table.as_ref().map(f)
    })
}

/// The fetch handler (called by the entrypoint in `shim.js`).
#[wasm_bindgen]
pub fn fetch(req: web_sys::Request, env: Env, ctx: Context) -> js_sys::Promise {
    cf::promise(async move {
        let started = now_ms();
        let answer = match handle(req, &env, &ctx, started).await {
            Ok(resp) => Ok(resp),
            Err(e) => web::error_response(&e, &[]),
        };
        answer.map(JsValue::from)
    })
}

/// The queue consumer: posts each delivered batch to the collector. Messages are the records'
/// JSON text (as `ship` sends them; an object, as older versions sent, is turned back into
/// text), forwarded without decoding.
#[wasm_bindgen]
pub fn queue(batch: MessageBatch, env: Env, _ctx: Context) -> js_sys::Promise {
    cf::promise(async move {
        consume(&batch, &env).await;
        Ok(JsValue::UNDEFINED)
    })
}

async fn consume(batch: &MessageBatch, env: &Env) {
    let mut body = b"[".to_vec();
    let mut count = 0;
    for (index, message) in batch.messages().iter().enumerate() {
        let value = message.unchecked_into::<Message>().body();
        let text = match value.as_string() {
            Some(text) => text,
            None => js_sys::JSON::stringify(&value)
                .map(String::from)
                .unwrap_or_default(),
        };
        // One message that is not JSON would make the collector refuse the whole batch (and
        // a refused batch is not retried): it is dropped alone, loudly.
        if serde_json::from_slice::<serde_json::Value>(text.as_bytes()).is_err() {
            console_error!("tollgate: queue message {index} of its batch is not JSON; dropped");
            continue;
        }
        if count > 0 {
            body.push(b',');
        }
        body.extend_from_slice(text.as_bytes());
        count += 1;
    }
    body.push(b']');
    // The queue redelivers what is not acked: one round of retries per delivery is enough.
    let deadline = now_ms() as f64 + ship::FLUSH_BUDGET_MS as f64;
    if count == 0 || ship::post_body_with_retries(env, &body, count, deadline, &|| {}).await {
        batch.ack_all();
    } else {
        batch.retry_all();
    }
}

/// How long a dashboard key lookup may take before the request is refused (or a stale
/// answer used).
const KEY_LOOKUP_TIMEOUT_MS: u64 = 5_000;

thread_local! {
    /// Dashboard lookup answers of this isolate (see `keys` for the delay this implies).
    static REMOTE_KEYS: std::cell::RefCell<keys::KeyCache> =
        std::cell::RefCell::new(keys::KeyCache::default());
}

/// The key with this hash, from the first source configured: the `APP_KEYS_KV` namespace,
/// the dashboard's signed lookup (`KEYS_URL` + `KEYS_SIGNING_SECRET`, cached), or the
/// `APP_KEYS` var. The `keys` module docs say how long a revocation takes to arrive.
async fn lookup_key(env: &Env, settings: &Settings, hash: &str) -> Option<AppKey> {
    if let Some(kv) = bindings::has_app_keys_kv(env)
        .then(|| env.binding::<cf::KvNamespace>("APP_KEYS_KV"))
        .flatten()
    {
        let stored = kv.text(hash).await.and_then(|text| {
            text.map(|t| json::parse::<AppKey>(t.as_bytes()))
                .transpose()
        });
        return match stored {
            Ok(k) => keys::usable(k),
            Err(e) => {
                console_error!("tollgate: key lookup failed: {e}");
                None
            }
        };
    }
    if let (Some(base), Some(signing)) = (&settings.keys_url, secret(env, "KEYS_SIGNING_SECRET")) {
        return remote_key(base, &signing, settings.keys_cache_ms, hash).await;
    }
    let key = LOCAL_KEYS.with(|cell| {
        cell.get_or_init(
            || match var(env, "APP_KEYS").map(|j| keys::parse_table(&j)) {
                Some(Ok(t)) => t,
                Some(Err(e)) => {
                    console_error!("tollgate: {e}");
                    HashMap::new()
                }
                None => HashMap::new(),
            },
        )
        .get(hash)
        .cloned()
    });
    keys::usable(key)
}

/// The dashboard's answer for `hash`: cached while fresh; asked for otherwise; an expired
/// answer stands in only when asking fails.
async fn remote_key(base: &str, signing: &str, ttl_ms: u64, hash: &str) -> Option<AppKey> {
    let now = now_ms();
    let stale = match REMOTE_KEYS.with(|c| c.borrow().get(hash, now)) {
        keys::CacheHit::Fresh(key) => return keys::usable(key),
        keys::CacheHit::Stale(key) => Some(key),
        keys::CacheHit::Miss => None,
    };
    let answer = match fetch_key(base, signing, hash).await {
        keys::LookupAnswer::Found(key) => Some(key),
        keys::LookupAnswer::NotFound => None,
        keys::LookupAnswer::Failed(why) => {
            console_error!("tollgate: {why}");
            return stale.flatten();
        }
    };
    REMOTE_KEYS.with(|c| c.borrow_mut().put(hash, answer.clone(), now_ms(), ttl_ms));
    keys::usable(answer)
}

/// One signed `GET <KEYS_URL>/internal/v1/keys/<hash>`.
async fn fetch_key(base: &str, signing: &str, hash: &str) -> keys::LookupAnswer {
    let failed = |what: String| keys::LookupAnswer::Failed(format!("key lookup: {what}"));
    // Signed over the path, so a captured signature is good for this key's lookup only.
    let signature = usage_core::wire::sign(
        signing.as_bytes(),
        (now_ms() / 1000) as i64,
        format!("/internal/v1/keys/{hash}").as_bytes(),
    );
    let prepared = web_sys::Headers::new().and_then(|headers| {
        headers.set(usage_core::wire::SIGNATURE_HEADER, &signature)?;
        let init = web::request_init("GET", &headers, None);
        let controller = web_sys::AbortController::new()?;
        init.set_signal(Some(&controller.signal()));
        Ok((init, controller))
    });
    let (init, controller) = match prepared {
        Ok(p) => p,
        Err(e) => return failed(web::error_text(&e)),
    };
    let url = keys::lookup_url(base, hash);
    match web::within(Box::pin(web::fetch(&url, &init)), KEY_LOOKUP_TIMEOUT_MS).await {
        Some(Ok(resp)) => match web::response_bytes(&resp).await {
            Ok(body) => keys::read_lookup(resp.status(), &body),
            Err(e) => failed(e),
        },
        Some(Err(e)) => failed(e),
        None => {
            controller.abort();
            failed(format!("no answer within {KEY_LOOKUP_TIMEOUT_MS} ms"))
        }
    }
}

/// Everything decided before the upstream call, carried to the record.
struct Prepared {
    route: Route,
    plan: Plan,
    key: AppKey,
    attribution: Attribution,
    region: String,
    request_bytes: u64,
    event_id: Uuid,
    /// Budgets this call holds a reservation in (settled when its record is built).
    reservations: Vec<String>,
    /// The budget clock (unix seconds): now, or the test clock when enabled.
    budget_now: i64,
    /// Budgets that applied but could not be checked, and let the call through (soft ones, or
    /// any under `BUDGET_FAIL_MODE=open`): the record's `tollgate.budget_fail_open` tag.
    unchecked_budgets: Vec<String>,
}

async fn handle(
    req: web_sys::Request,
    env: &Env,
    ctx: &Context,
    started: u64,
) -> Result<web_sys::Response, ApiError> {
    let url = req.url();
    let path = call::url_path(&url);
    let route = call::route(&req.method(), path).ok_or_else(|| ApiError::not_found(path))?;
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
    let attribution = attribution::parse(
        header(attribution::USER_HEADER).as_deref(),
        header(attribution::TASK_HEADER).as_deref(),
        header(attribution::TAGS_HEADER).as_deref(),
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
    /// org → (budgets, fetched at ms)
    static ORG_BUDGETS: RefCell<HashMap<String, (Vec<BudgetSpec>, u64)>> = RefCell::new(HashMap::new());
}

const BUDGET_LIST_TTL_MS: u64 = 30_000;
/// How long a stale list is still used when dashboard-api cannot be reached. Long: budgets
/// are changed through dashboard-api, so while it is down the last list read is as current
/// as any (only a change made in the last `BUDGET_LIST_TTL_MS` before the outage is missed).
const BUDGET_LIST_STALE_MS: u64 = 24 * 3_600_000;

/// The org's budgets (cached), or why they cannot be had (dashboard-api unreachable, and no
/// list read in the last [`BUDGET_LIST_STALE_MS`]).
async fn org_budgets(env: &Env, org: &str) -> Result<Vec<BudgetSpec>, String> {
    let now = now_ms();
    let cached = ORG_BUDGETS.with(|c| c.borrow().get(org).cloned());
    if let Some((specs, at)) = &cached {
        if now - at < BUDGET_LIST_TTL_MS {
            return Ok(specs.clone());
        }
    }
    let path = format!("/internal/v1/budgets?org={}", form_encode(org));
    let fetched = match guard::internal_call(env, "GET", &path).await {
        Some(resp) => web::response_json(&resp)
            .await
            .and_then(|v| json::list::<BudgetSpec>(&v, "budgets"))
            .map_err(|e| format!("the budget list from dashboard-api is unreadable: {e}")),
        None => Err("dashboard-api did not return the budget list".into()),
    };
    match fetched {
        Ok(specs) => {
            ORG_BUDGETS.with(|c| c.borrow_mut().insert(org.to_string(), (specs.clone(), now)));
            Ok(specs)
        }
        Err(why) => match cached {
            Some((specs, at)) if now - at < BUDGET_LIST_STALE_MS => Ok(specs),
            _ => Err(why),
        },
    }
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Reserves the call's worst-case cost in every budget that applies; a refusal is the 429 the
/// client gets. Returns the soft-threshold warnings to show.
async fn guard_budgets(
    env: &Env,
    ctx: &Context,
    settings: &Settings,
    p: &mut Prepared,
) -> Result<Vec<String>, ApiError> {
    if settings.keys_url.is_none() || !bindings::has_budget_guard(env) {
        return Ok(Vec::new());
    }
    let user = p
        .attribution
        .user
        .clone()
        .unwrap_or_else(|| p.key.user_id.clone());
    let specs: Vec<BudgetSpec> = match org_budgets(env, &p.key.org_id).await {
        Ok(specs) => specs
            .into_iter()
            .filter(|s| s.applies(&user, &p.key.app_id))
            .collect(),
        Err(why) if settings.budget_fail_open => {
            console_error!(
                "tollgate: budgets of org {} unavailable ({why}); BUDGET_FAIL_MODE=open lets the call through unchecked",
                p.key.org_id
            );
            p.unchecked_budgets.push("budget_list".into());
            return Ok(Vec::new());
        }
        Err(why) => {
            console_error!(
                "tollgate: budgets of org {} unavailable ({why}); call refused",
                p.key.org_id
            );
            return Err(ApiError::budget_unavailable(
                &format!("the budgets of org `{}`", p.key.org_id),
                &why,
            ));
        }
    };
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    let at = datetime_ms(u64::try_from(p.budget_now).unwrap_or(0) * 1000);
    let worst = with_prices(|t| {
        budget::worst_case_cost(
            budget::price_for(t, &p.plan.provider.name, &p.plan.facts.model, at),
            p.request_bytes,
            p.plan.facts.max_output_tokens,
        )
    })
    .flatten();
    let amount = match worst {
        Some(n) => n.get(),
        None if specs.iter().any(BudgetSpec::is_hard) && !settings.unpriced_under_hard_budget => {
            return Err(ApiError::budget_exceeded(format!(
                "model `{}` is not in the price table, so its cost cannot be bounded under a hard budget (set UNPRICED_UNDER_HARD_BUDGET=allow to let it through)",
                p.plan.facts.model
            )));
        }
        None => 0,
    };
    let id = p.event_id.to_string();
    let mut warnings = Vec::new();
    for spec in &specs {
        let cmd = GuardRequest::Reserve {
            spec: spec.clone(),
            id: id.clone(),
            amount,
            now: p.budget_now,
        };
        let decision = match guard::call_guard(env, &spec.budget_id, &cmd).await {
            Ok(Some(d)) => Ok(d),
            Ok(None) => Err("the guard gave no decision".to_string()),
            Err(why) => Err(why),
        };
        let decision = match decision {
            Ok(d) => d,
            Err(why) if !spec.is_hard() || settings.budget_fail_open => {
                console_error!(
                    "tollgate: budget {} could not be checked ({why}); the call goes through unchecked",
                    spec.budget_id
                );
                p.unchecked_budgets.push(spec.budget_id.clone());
                continue;
            }
            Err(why) => {
                console_error!(
                    "tollgate: hard budget {} could not be checked ({why}); call refused",
                    spec.budget_id
                );
                release(env, &p.reservations, &id, p.budget_now).await;
                p.reservations.clear();
                return Err(ApiError::budget_unavailable(
                    &format!("budget \"{}\" ({})", spec.name, spec.budget_id),
                    &why,
                ));
            }
        };
        if !decision.allowed {
            release(env, &p.reservations, &id, p.budget_now).await;
            p.reservations.clear();
            let reset = OffsetDateTime::from_unix_timestamp(decision.reset_at)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_default();
            return Err(ApiError::budget_exceeded(format!(
                "budget \"{}\" ({}) is exhausted: limit ${}, spent ${}, reserved by calls in flight ${}; it resets at {reset}",
                spec.name,
                spec.period,
                usage_core::Nanos::new(decision.limit_nusd),
                usage_core::Nanos::new(decision.spent_nusd),
                usage_core::Nanos::new(decision.reserved_nusd),
            )));
        }
        p.reservations.push(spec.budget_id.clone());
        if decision.spend_unknown {
            p.unchecked_budgets.push(spec.budget_id.clone());
        }
        for pct in decision.crossed {
            warnings.push(format!(
                "{pct}% of budget \"{}\" ({}) used",
                spec.name, spec.period
            ));
            let env = env.clone();
            let path = format!(
                "/internal/v1/budgets/{}/warning?percent={pct}&period_start={}",
                spec.budget_id,
                budget::period_bounds(&spec.period, p.budget_now).0
            );
            ctx.wait_until(async move {
                let _ = guard::internal_call(&env, "POST", &path).await;
            });
        }
    }
    Ok(warnings)
}

/// Releases reservations (settled at zero).
async fn release(env: &Env, budgets: &[String], id: &str, now: i64) {
    for b in budgets {
        let cmd = GuardRequest::Settle {
            id: id.to_string(),
            actual: 0,
            now,
        };
        let _ = guard::call_guard(env, b, &cmd).await;
    }
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

/// The app's tags, plus Tollgate's own `tollgate.budget_fail_open` when a budget went unchecked.
fn record_tags(p: &Prepared) -> std::collections::BTreeMap<String, String> {
    let mut tags = p.attribution.tags.clone();
    if !p.unchecked_budgets.is_empty() {
        let mut value = p.unchecked_budgets.join(",");
        value.truncate(usage_core::record::limits::MAX_TAG_VALUE_LEN);
        tags.insert(
            usage_core::record::limits::BUDGET_FAIL_OPEN_TAG.to_string(),
            value,
        );
    }
    tags
}

fn facts(p: &Prepared, started: u64, event_id: Uuid) -> CallFacts {
    CallFacts {
        event_id,
        started: datetime_ms(started),
        latency_ms: elapsed_ms(started),
        ttft_ms: None,
        upstream_ms: 0,
        key: p.key.clone(),
        user: p.attribution.user.clone(),
        task: p.attribution.task.clone(),
        tags: record_tags(p),
        provider: p.plan.provider.name.clone(),
        model_requested: p.plan.facts.model.clone(),
        endpoint: p.route.endpoint,
        stream: p.plan.facts.stream,
        edge_region: p.region.clone(),
        status_code: 0,
        error_class: ErrorClass::None,
        usage: None,
        model_served: None,
        estimated: None,
        request_bytes: p.request_bytes,
        response_bytes: 0,
    }
}

fn new_event_id(started: u64) -> Uuid {
    let ts = uuid::Timestamp::from_unix(
        uuid::NoContext,
        started / 1000,
        ((started % 1000) * 1_000_000) as u32,
    );
    Uuid::new_v7(ts)
}

fn record_later(
    env: &Env,
    ctx: &Context,
    facts: CallFacts,
    reservations: Vec<String>,
    budget_now: i64,
) {
    let env = env.clone();
    ctx.wait_until(finish(env, facts, reservations, budget_now));
}

/// Builds the record, settles the call's budget reservations to its cost, and ships it.
async fn finish(env: Env, facts: CallFacts, reservations: Vec<String>, budget_now: i64) {
    let Some(record) = with_prices(|t| measure::build_record(facts, t)) else {
        return;
    };
    for b in &reservations {
        let cmd = GuardRequest::Settle {
            id: record.event_id.to_string(),
            actual: record.cost_nusd.get(),
            now: budget_now,
        };
        if let Err(e) = guard::call_guard(&env, b, &cmd).await {
            console_error!("tollgate: settling budget {b} failed: {e}");
        }
    }
    ship::ship(&env, record).await;
}

#[allow(clippy::too_many_arguments)]
async fn proxy(
    p: Prepared,
    forwarded: Vec<(&str, String)>,
    env: &Env,
    ctx: &Context,
    settings: &Settings,
    started: u64,
    client: &web_sys::AbortSignal,
    extra: &[(&str, String)],
) -> Result<web_sys::Response, ApiError> {
    let provider: &Provider = &p.plan.provider;
    let event_id = p.event_id;
    let key = secret(env, &provider.secret).ok_or_else(|| {
        ApiError::internal(format!(
            "provider `{}` has no key configured (secret {})",
            provider.name, provider.secret
        ))
    })?;
    let url = format!("{}{}", provider.base_url, p.route.upstream_path);
    let internal = |what: &str, e: wasm_bindgen::JsValue| {
        ApiError::internal(format!("{what}: {}", web::error_text(&e)))
    };
    let headers = web_sys::Headers::new().map_err(|e| internal("headers", e))?;
    for (k, v) in &forwarded {
        headers.set(k, v).map_err(|e| internal(k, e))?;
    }
    headers
        .set("authorization", &format!("Bearer {key}"))
        .map_err(|e| internal("authorization", e))?;
    let init = if p.route.has_body {
        headers
            .set("content-type", "application/json")
            .map_err(|e| internal("content-type", e))?;
        web::request_init("POST", &headers, Some(&p.plan.body))
    } else {
        web::request_init("GET", &headers, None)
    };
    // Aborted only when the timer wins: a signal with its own deadline
    // (`AbortSignal.timeout`) would also cut a long stream off after its headers arrived.
    let controller =
        web_sys::AbortController::new().map_err(|e| internal("abort controller", e))?;
    init.set_signal(Some(&controller.signal()));

    let timeout_ms = settings.upstream_timeout_ms;
    let sent = Box::pin(web::fetch(&url, &init));
    let upstream = match web::within(sent, timeout_ms).await {
        Some(Ok(resp)) => resp,
        Some(Err(e)) => {
            console_error!("tollgate: upstream {} unreachable: {e}", provider.name);
            let mut f = facts(&p, started, event_id);
            f.status_code = 502;
            f.error_class = ErrorClass::Network;
            f.upstream_ms = f.latency_ms;
            record_later(env, ctx, f, p.reservations.clone(), p.budget_now);
            return Err(ApiError::upstream_unreachable(&provider.name));
        }
        None => {
            controller.abort();
            let mut f = facts(&p, started, event_id);
            f.status_code = 504;
            f.error_class = ErrorClass::Timeout;
            f.upstream_ms = f.latency_ms;
            record_later(env, ctx, f, p.reservations.clone(), p.budget_now);
            return Err(ApiError::upstream_timeout(&provider.name, timeout_ms));
        }
    };
    let headers_ms = elapsed_ms(started);
    let status = upstream.status();
    let is_sse = upstream
        .headers()
        .get("content-type")
        .ok()
        .flatten()
        .is_some_and(|ct| ct.starts_with("text/event-stream"));

    if is_sse && (200..300).contains(&status) {
        return stream_through(
            p, upstream, env, ctx, started, headers_ms, event_id, controller, client, extra,
        );
    }

    // Not a stream: the client gets the provider's response as it is; a tee'd copy is read
    // and measured after the response, off the client's path.
    let copy = upstream.clone().map_err(|e| internal("tee", e))?;
    let mut f = facts(&p, started, event_id);
    f.status_code = status;
    f.error_class = ErrorClass::from_status(status);
    f.upstream_ms = headers_ms;
    let endpoint = p.route.endpoint;
    let env2 = env.clone();
    let (reservations, budget_now) = (p.reservations.clone(), p.budget_now);
    ctx.wait_until(async move {
        match web::response_bytes(&copy).await {
            Ok(bytes) => {
                f.latency_ms = elapsed_ms(started);
                f.response_bytes = bytes.len() as u64;
                if (200..300).contains(&status) && endpoint != Endpoint::Models {
                    if let Ok(parsed) = parse_response(endpoint, &bytes) {
                        f.model_served = parsed.model;
                        f.usage = parsed.usage;
                    }
                }
            }
            Err(_) => {
                f.latency_ms = elapsed_ms(started);
                f.error_class = ErrorClass::Aborted;
            }
        }
        finish(env2, f, reservations, budget_now).await;
    });
    web::relay(&upstream, upstream.body().as_ref(), &[], extra)
        .map_err(|e| internal("building the response", e))
}

/// How a tapped stream ended.
struct StreamEnd {
    totals: StreamTotals,
    first_byte_ms: Option<u32>,
    end_ms: u32,
    /// The stream did not run to the provider's end (the client went away, or the pipe broke).
    aborted: bool,
}

/// A streamed call as the transformer's callbacks see it; the call's `wait_until` reads the
/// end from here.
struct TapState {
    tap: Option<StreamTap>,
    started: u64,
    first_byte_ms: Option<u32>,
    /// When the last provider chunk passed (ms since the epoch).
    last_chunk_ms: u64,
    /// The client side's controller: its `desiredSize` tells whether the client is reading.
    controller: Option<web_sys::TransformStreamDefaultController>,
    end: Option<StreamEnd>,
    /// The runtime cancelled the client side: the client is gone.
    client_gone: bool,
    /// Who waits for `client_gone` (the call's `wait_until`).
    gone_waker: Option<std::task::Waker>,
}

impl TapState {
    /// Ends the tap (once): the held bytes to send, and the end recorded.
    fn end(&mut self, aborted: bool) -> Vec<u8> {
        let Some(tap) = self.tap.take() else {
            return Vec::new();
        };
        let (rest, totals) = tap.finish();
        self.end = Some(StreamEnd {
            totals,
            first_byte_ms: self.first_byte_ms,
            end_ms: elapsed_ms(self.started),
            aborted,
        });
        rest
    }

    /// Whether the client has stopped reading: a chunk waits for it unread. (The client side
    /// holds at most one chunk — high-water mark 1, see [`CLIENT_SIDE_CHUNKS`] — so its desired
    /// size is 1 while the client keeps up, whether or not the provider is sending, and 0 or
    /// less once a chunk waits.)
    fn client_stalled(&self) -> bool {
        self.controller
            .as_ref()
            .and_then(|c| c.desired_size())
            .is_some_and(|room| room <= 0.0)
    }
}

/// Ready once the runtime cancelled the stream's client side (see [`tap_transformer`]).
struct ClientGone(Rc<RefCell<TapState>>);

impl std::future::Future for ClientGone {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let mut s = self.0.borrow_mut();
        if s.client_gone {
            std::task::Poll::Ready(())
        } else {
            s.gone_waker = Some(cx.waker().clone());
            std::task::Poll::Pending
        }
    }
}

/// A stream whose client has not taken a waiting chunk for this long has lost its client: the
/// call is recorded as aborted and the provider's request aborted. Needed besides the
/// transformer's `cancel`: workerd sometimes stops pulling a stream whose client hung up
/// without cancelling it (the tap then sees a chunk waiting, and nothing more). A provider
/// that is merely slow never trips it: nothing waits for the client then.
const STREAM_IDLE_MS: u64 = 15_000;

/// How many chunks the client side of a tapped stream holds before the pipe waits. One, not
/// the default zero: with zero, "the client stopped pulling" and "the provider has sent nothing
/// yet" look the same (an empty queue), and only the first can be told by a chunk waiting.
const CLIENT_SIDE_CHUNKS: f64 = 1.0;

type TransformFn = Closure<
    dyn FnMut(
        wasm_bindgen::JsValue,
        web_sys::TransformStreamDefaultController,
    ) -> Result<(), wasm_bindgen::JsValue>,
>;
type FlushFn = Closure<
    dyn FnMut(web_sys::TransformStreamDefaultController) -> Result<(), wasm_bindgen::JsValue>,
>;

/// Called with the cancel reason (transformer `cancel`) or the abort event (`onabort`).
type ClientLeftFn = Closure<dyn FnMut(wasm_bindgen::JsValue)>;

/// The client hung up: stop the provider's request and let the call's `wait_until` know.
fn client_left(state: &Rc<RefCell<TapState>>, upstream: &web_sys::AbortController) {
    upstream.abort();
    let waker = {
        let mut s = state.borrow_mut();
        s.client_gone = true;
        s.gone_waker.take()
    };
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// The transformer's callbacks: JS calls them for as long as the pipe runs, so they live
/// until it ended.
struct TapCallbacks {
    _transform: TransformFn,
    _flush: FlushFn,
    /// The transformer's `cancel` and the request signal's `onabort`.
    _client_left: ClientLeftFn,
    /// The incoming request's signal, whose `onabort` is `_client_left` until dropped.
    client: web_sys::AbortSignal,
}

impl Drop for TapCallbacks {
    fn drop(&mut self) {
        self.client.set_onabort(None);
    }
}

/// The `TransformStream` the provider's stream is piped through: each chunk goes to the tap
/// and on to the client in one synchronous call (no Rust future, promise or reader per chunk).
///
/// The client hanging up ends the call at once, told two ways: the transformer's `cancel` (the
/// runtime cancels the client side) and the incoming request's `signal` (aborted on a client
/// disconnect under the `enable_request_signal` compatibility flag). Then the provider's request
/// is aborted — it would go on generating, and billing, tokens nobody reads — and the call's
/// `wait_until` records it without waiting for the pipe to end.
///
/// Known gap (issue #18): beside a CPU hog, about 1 in 800 streams whose client hung up gets
/// neither: workerd stops delivering the provider's body into the pipe (the mock provider had
/// sent or been cut off; the client side is empty) and never cancels or signals. The record then
/// waits for the pipe, which a workerd restart cancels. The soak shows it after a ClickHouse
/// restart; its cause in workerd is not found yet.
fn tap_transformer(
    state: &Rc<RefCell<TapState>>,
    upstream: &web_sys::AbortController,
    client: &web_sys::AbortSignal,
) -> Result<(js_sys::Object, TapCallbacks), wasm_bindgen::JsValue> {
    let on_chunk = state.clone();
    let transform: TransformFn = Closure::new(
        move |chunk: wasm_bindgen::JsValue,
              controller: web_sys::TransformStreamDefaultController| {
            let mut s = on_chunk.borrow_mut();
            let now = now_ms();
            if s.first_byte_ms.is_none() {
                s.first_byte_ms =
                    Some(u32::try_from(now.saturating_sub(s.started)).unwrap_or(u32::MAX));
                s.controller = Some(Clone::clone(&controller));
            }
            s.last_chunk_ms = now;
            let Some(tap) = s.tap.as_mut() else {
                return controller.enqueue_with_chunk(&chunk);
            };
            let bytes = js_sys::Uint8Array::new(&chunk).to_vec();
            match tap.push(&bytes) {
                Forward::Unchanged => controller.enqueue_with_chunk(&chunk),
                Forward::Bytes(out) if out.is_empty() => Ok(()),
                Forward::Bytes(out) => {
                    controller.enqueue_with_chunk(&js_sys::Uint8Array::from(out.as_slice()))
                }
            }
        },
    );
    let on_end = state.clone();
    let flush: FlushFn = Closure::new(
        move |controller: web_sys::TransformStreamDefaultController| {
            let rest = on_end.borrow_mut().end(false);
            if rest.is_empty() {
                Ok(())
            } else {
                controller.enqueue_with_chunk(&js_sys::Uint8Array::from(rest.as_slice()))
            }
        },
    );
    let (on_leave, upstream_of_leave) = (state.clone(), upstream.clone());
    let left: ClientLeftFn = Closure::new(move |_reason_or_event: wasm_bindgen::JsValue| {
        client_left(&on_leave, &upstream_of_leave);
    });
    client.set_onabort(Some(left.as_ref().unchecked_ref()));
    if client.aborted() {
        client_left(state, upstream);
    }
    let transformer = js_sys::Object::new();
    js_sys::Reflect::set(&transformer, &"transform".into(), transform.as_ref())?;
    js_sys::Reflect::set(&transformer, &"flush".into(), flush.as_ref())?;
    js_sys::Reflect::set(&transformer, &"cancel".into(), left.as_ref())?;
    let callbacks = TapCallbacks {
        _transform: transform,
        _flush: flush,
        _client_left: left,
        client: client.clone(),
    };
    Ok((transformer, callbacks))
}

#[allow(clippy::too_many_arguments)]
fn stream_through(
    p: Prepared,
    upstream: web_sys::Response,
    env: &Env,
    ctx: &Context,
    started: u64,
    headers_ms: u32,
    event_id: Uuid,
    upstream_abort: web_sys::AbortController,
    client: &web_sys::AbortSignal,
    extra: &[(&str, String)],
) -> Result<web_sys::Response, ApiError> {
    let status = upstream.status();
    let internal = |what: &str, e: wasm_bindgen::JsValue| {
        ApiError::internal(format!("{what}: {}", web::error_text(&e)))
    };
    let state = Rc::new(RefCell::new(TapState {
        tap: Some(StreamTap::new(p.plan.strip_usage_chunk)),
        started,
        first_byte_ms: None,
        last_chunk_ms: now_ms(),
        controller: None,
        end: None,
        client_gone: false,
        gone_waker: None,
    }));
    let (transformer, callbacks) = tap_transformer(&state, &upstream_abort, client)
        .map_err(|e| internal("stream transformer", e))?;
    let (writable_side, client_side) = (
        web_sys::QueuingStrategy::new(),
        web_sys::QueuingStrategy::new(),
    );
    writable_side.set_high_water_mark(1.0);
    client_side.set_high_water_mark(CLIENT_SIDE_CHUNKS);
    let pipe =
        web_sys::TransformStream::new_with_transformer_and_writable_strategy_and_readable_strategy(
            &transformer,
            &writable_side,
            &client_side,
        )
        .map_err(|e| internal("stream", e))?;
    // The provider's body into the tap; the tap's output is the client's body. The pipe's
    // promise settles when the provider's stream ended (after `flush`), or rejects when either
    // side broke off. The client hanging up cancels the client side (the transformer's
    // `cancel`), which ends the call at once, whatever the pipe does.
    let body = upstream.body();
    let response = web::relay(
        &upstream,
        body.as_ref().map(|_| pipe.readable()).as_ref(),
        &["content-length", "content-encoding", "transfer-encoding"],
        extra,
    )
    .map_err(|e| internal("stream", e))?;
    let piped = body.map(|body| body.pipe_to(&pipe.writable()));

    let mut f = facts(&p, started, event_id);
    f.status_code = status;
    f.upstream_ms = headers_ms;
    let request_bytes = p.request_bytes;
    let env2 = env.clone();
    let (reservations, budget_now) = (p.reservations.clone(), p.budget_now);
    ctx.wait_until(async move {
        // The pipe's end, the client's hang-up, or the watchdog's verdict that its client is
        // gone (in the last two the pipe may still be running).
        let had_body = piped.is_some();
        let mut still_piping = None;
        if let Some(piped) = piped {
            let mut piped = wasm_bindgen_futures::JsFuture::from(piped);
            loop {
                let tick = select(
                    web::Timer::new(STREAM_IDLE_MS / 3),
                    ClientGone(state.clone()),
                );
                match select(piped, tick).await {
                    Either::Left(_) => break,
                    Either::Right((Either::Right(_), pending)) => {
                        still_piping = Some(pending);
                        break;
                    }
                    // No timers here: no watchdog either; wait for the pipe or the hang-up.
                    Either::Right((Either::Left((false, gone)), pending)) => {
                        if let Either::Right((_, pending)) = select(pending, gone).await {
                            still_piping = Some(pending);
                        }
                        break;
                    }
                    Either::Right((Either::Left((true, _)), pending)) => {
                        let gone = {
                            let s = state.borrow();
                            s.client_stalled()
                                && now_ms().saturating_sub(s.last_chunk_ms) >= STREAM_IDLE_MS
                        };
                        if gone {
                            still_piping = Some(pending);
                            break;
                        }
                        piped = pending;
                    }
                }
            }
        }
        // Whatever did not end through `flush` ended early (an empty body ended at once).
        let end = {
            let mut s = state.borrow_mut();
            let _ = s.end(had_body);
            s.end.take()
        };
        // The callbacks must outlive the pipe: a stream still running (its client stopped
        // reading) keeps them until it ends, and passes chunks on untapped meanwhile.
        match still_piping {
            Some(pipe) => wasm_bindgen_futures::spawn_local(async move {
                // The client is gone: stop the provider too, which ends the pipe.
                upstream_abort.abort();
                let _ = pipe.await;
                drop(callbacks);
            }),
            None => drop(callbacks),
        }
        match end {
            Some(end) => {
                let s = &end.totals.summary;
                f.latency_ms = end.end_ms;
                f.ttft_ms = end.first_byte_ms;
                f.response_bytes = end.totals.bytes_out;
                f.model_served = s.model.clone();
                f.usage = s.usage.clone();
                f.error_class = if end.aborted || s.truncated {
                    ErrorClass::Aborted
                } else if s.error.is_some() {
                    ErrorClass::Upstream5xx
                } else {
                    ErrorClass::None
                };
                if f.usage.is_none() {
                    f.estimated = Some(TokenCounts {
                        input: measure::estimate_input_tokens(request_bytes),
                        output: s.estimated_output_tokens(),
                        ..Default::default()
                    });
                }
            }
            None => {
                f.latency_ms = elapsed_ms(started);
                f.error_class = ErrorClass::Aborted;
            }
        }
        finish(env2, f, reservations, budget_now).await;
    });
    Ok(response)
}
