//! The Workers glue: the `fetch` and `queue` handlers. Decisions live in the pure modules; this
//! file moves requests, bytes and time.

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;

use time::OffsetDateTime;
use usage_core::{parse_response, Endpoint, ErrorClass, PriceTable, TokenCounts};
use uuid::Uuid;
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
use crate::stream::Relay;
use crate::tap::StreamTap;
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

/// A streamed answer: the client gets the provider's stream through a [`Relay`], which the
/// call's `wait_until` runs and then records.
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
    let tap = StreamTap::new(p.plan.strip_usage_chunk);
    let (client_body, relay) = match upstream.body() {
        Some(body) => {
            let (client_body, relay) = Relay::new(&body, tap, started, upstream_abort, client)
                .map_err(|e| internal("stream relay", e))?;
            (Some(client_body), Some(relay))
        }
        None => (None, None),
    };
    let response = web::relay(
        &upstream,
        client_body.as_ref(),
        &["content-length", "content-encoding", "transfer-encoding"],
        extra,
    )
    .map_err(|e| internal("stream", e))?;

    let mut f = facts(&p, started, event_id);
    f.status_code = status;
    f.upstream_ms = headers_ms;
    let request_bytes = p.request_bytes;
    let env2 = env.clone();
    let (reservations, budget_now) = (p.reservations.clone(), p.budget_now);
    ctx.wait_until(async move {
        match relay {
            Some(relay) => {
                let end = relay.run().await;
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
            // No body at all: an empty stream, ended as it began.
            None => f.latency_ms = elapsed_ms(started),
        }
        finish(env2, f, reservations, budget_now).await;
    });
    Ok(response)
}
