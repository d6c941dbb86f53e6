//! The Workers glue: the `fetch` and `queue` handlers. Decisions live in the pure modules; this
//! file moves requests, bytes and time.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll};

use futures_channel::oneshot;
use futures_util::future::{select, Either};
use futures_util::{Stream, StreamExt};
use time::OffsetDateTime;
use usage_core::{parse_response, Endpoint, ErrorClass, PriceTable, TokenCounts, UsageRecord};
use uuid::Uuid;
use worker::{
    console_error, event, AbortController, ByteStream, Context, Date, Delay, Env, Fetch, Headers,
    MessageBatch, Method, Request, RequestInit, Response,
};

use crate::attribution::{self, Attribution};
use crate::budget::{self, BudgetSpec};
use crate::call::{self, Plan, Route};
use crate::config::{self, Provider};
use crate::errors::ApiError;
use crate::guard::{self, GuardRequest};
use crate::keys::{self, AppKey};
use crate::measure::{self, CallFacts};
use crate::ship;
use crate::tap::{StreamTap, StreamTotals};

thread_local! {
    static PRICES: OnceCell<Option<PriceTable>> = const { OnceCell::new() };
    static LOCAL_KEYS: OnceCell<HashMap<String, AppKey>> = const { OnceCell::new() };
}

const DEFAULT_UPSTREAM_TIMEOUT_MS: u64 = 120_000;

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

fn now_ms() -> u64 {
    Date::now().as_millis()
}

fn datetime_ms(ms: u64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn elapsed_ms(since: u64) -> u32 {
    u32::try_from(now_ms().saturating_sub(since)).unwrap_or(u32::MAX)
}

fn var(env: &Env, name: &str) -> Option<String> {
    env.var(name)
        .ok()
        .map(|v| v.to_string())
        .filter(|v| !v.is_empty())
}

fn secret(env: &Env, name: &str) -> Option<String> {
    env.secret(name)
        .ok()
        .map(|v| v.to_string())
        .filter(|v| !v.is_empty())
}

fn error_response(e: &ApiError) -> worker::Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    Ok(Response::from_bytes(e.body())?
        .with_status(e.status)
        .with_headers(headers))
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

#[event(fetch)]
pub async fn fetch(req: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    let started = now_ms();
    match handle(req, &env, &ctx, started).await {
        Ok(resp) => Ok(resp),
        Err(e) => error_response(&e),
    }
}

#[event(queue)]
pub async fn queue(
    batch: MessageBatch<UsageRecord>,
    env: Env,
    _ctx: Context,
) -> worker::Result<()> {
    let records: Vec<UsageRecord> = batch
        .messages()?
        .into_iter()
        .map(|m| m.into_body())
        .collect();
    // The queue redelivers what is not acked: one round of retries per delivery is enough.
    let deadline = worker::Date::now().as_millis() as f64 + ship::FLUSH_BUDGET_MS as f64;
    if ship::post_with_retries(&env, &records, deadline).await {
        batch.ack_all();
    } else {
        batch.retry_all();
    }
    Ok(())
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
async fn lookup_key(env: &Env, hash: &str) -> Option<AppKey> {
    if let Ok(kv) = env.kv("APP_KEYS_KV") {
        return match kv.get(hash).json::<AppKey>().await {
            Ok(k) => keys::usable(k),
            Err(e) => {
                console_error!("tollgate: key lookup failed: {e}");
                None
            }
        };
    }
    if let (Some(base), Some(signing)) = (var(env, "KEYS_URL"), secret(env, "KEYS_SIGNING_SECRET"))
    {
        return remote_key(env, &base, &signing, hash).await;
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
async fn remote_key(env: &Env, base: &str, signing: &str, hash: &str) -> Option<AppKey> {
    let now = now_ms();
    let stale = match REMOTE_KEYS.with(|c| c.borrow().get(hash, now)) {
        keys::CacheHit::Fresh(key) => return keys::usable(key),
        keys::CacheHit::Stale(key) => Some(key),
        keys::CacheHit::Miss => None,
    };
    let ttl_ms = keys::cache_ttl_ms(var(env, "KEYS_CACHE_SECS").as_deref());
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
    let headers = Headers::new();
    // Signed over the path, so a captured signature is good for this key's lookup only.
    let signature = usage_core::wire::sign(
        signing.as_bytes(),
        (now_ms() / 1000) as i64,
        format!("/internal/v1/keys/{hash}").as_bytes(),
    );
    if let Err(e) = headers.set(usage_core::wire::SIGNATURE_HEADER, &signature) {
        return failed(e.to_string());
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Get).with_headers(headers);
    let req = match Request::new_with_init(&keys::lookup_url(base, hash), &init) {
        Ok(r) => r,
        Err(e) => return failed(format!("bad KEYS_URL: {e}")),
    };
    let controller = AbortController::default();
    let signal = controller.signal();
    let fetch = Fetch::Request(req);
    let sent = Box::pin(fetch.send_with_signal(&signal));
    let timer = Box::pin(Delay::from(std::time::Duration::from_millis(
        KEY_LOOKUP_TIMEOUT_MS,
    )));
    let outcome = select(sent, timer).await;
    let answer = match outcome {
        Either::Left((Ok(mut resp), _)) => {
            let status = resp.status_code();
            match resp.bytes().await {
                Ok(body) => keys::read_lookup(status, &body),
                Err(e) => failed(e.to_string()),
            }
        }
        Either::Left((Err(e), _)) => failed(e.to_string()),
        Either::Right(((), _)) => {
            controller.abort();
            failed(format!("no answer within {KEY_LOOKUP_TIMEOUT_MS} ms"))
        }
    };
    answer
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
}

async fn handle(
    mut req: Request,
    env: &Env,
    ctx: &Context,
    started: u64,
) -> Result<Response, ApiError> {
    let method = req.method().to_string();
    let path = req.path();
    let route = call::route(&method, &path).ok_or_else(|| ApiError::not_found(&path))?;

    let header = |name: &str| req.headers().get(name).ok().flatten();
    let key = match keys::presented_key_hash(header("authorization").as_deref()) {
        Some(hash) => lookup_key(env, &hash).await,
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
    let content_length = header("content-length");
    let test_now = header("x-tollgate-test-now");
    let forwarded: Vec<(String, String)> = FORWARDED_HEADERS
        .iter()
        .filter_map(|h| header(h).map(|v| (h.to_string(), v)))
        .collect();

    if let Some(len) = content_length.and_then(|l| l.parse::<usize>().ok()) {
        if len > call::MAX_REQUEST_BYTES {
            return Err(ApiError::too_large(call::MAX_REQUEST_BYTES));
        }
    }
    let body = if route.has_body {
        read_body(
            &mut req,
            call::body_timeout_ms(var(env, "BODY_TIMEOUT_MS").as_deref()),
        )
        .await?
    } else {
        Vec::new()
    };
    let providers =
        config::providers_from(var(env, "PROVIDERS").as_deref()).map_err(ApiError::internal)?;
    let default_provider = var(env, "DEFAULT_PROVIDER").unwrap_or_else(|| "openai".into());
    let plan = call::plan(
        route,
        &body,
        &providers,
        &default_provider,
        header_provider.as_deref(),
    )?;
    let region = colo(&req)
        .or_else(|| var(env, "EDGE_REGION"))
        .unwrap_or_default();
    // A test clock for budget periods, honoured only where ALLOW_TEST_CLOCK=1 (never deployed).
    let budget_now = match (var(env, "ALLOW_TEST_CLOCK").as_deref(), test_now) {
        (Some("1"), Some(t)) => t.parse().unwrap_or((started / 1000) as i64),
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
    };
    // From here on every answer, success or refusal, has a record: name it to the client.
    let mut extra = vec![(crate::EVENT_ID_HEADER, prepared.event_id.to_string())];
    let answer = match guard_budgets(env, ctx, &mut prepared).await {
        Ok(warnings) => {
            if !warnings.is_empty() {
                extra.push(("x-tollgate-budget-warning", warnings.join("; ")));
            }
            proxy(prepared, forwarded, env, ctx, started).await
        }
        Err(refusal) => {
            let mut f = facts(&prepared, started, prepared.event_id);
            f.status_code = 429;
            f.error_class = ErrorClass::BudgetBlocked;
            record_later(env, ctx, f, Vec::new(), budget_now);
            Err(refusal)
        }
    };
    let resp = match answer {
        Ok(resp) => resp,
        Err(e) => error_response(&e)
            .map_err(|why| ApiError::internal(format!("building the error response: {why}")))?,
    };
    let headers = Headers::new();
    for (k, v) in resp.headers().entries() {
        let _ = headers.append(&k, &v);
    }
    for (k, v) in &extra {
        let _ = headers.set(k, v);
    }
    Ok(resp.with_headers(headers))
}

/// The request body as it arrives: refused once past [`call::MAX_REQUEST_BYTES`] (413, also
/// when no `content-length` announced it) or when it takes longer than `timeout_ms` (408), so a
/// client trickling bytes holds neither memory nor the isolate forever.
async fn read_body(req: &mut Request, timeout_ms: u64) -> Result<Vec<u8>, ApiError> {
    if req.inner().body().is_none() {
        return Ok(Vec::new());
    }
    let unreadable = |e: worker::Error| {
        ApiError::invalid_request(format!("could not read the request body: {e}"), None)
    };
    let mut stream = req.stream().map_err(unreadable)?;
    let read = Box::pin(async move {
        let mut body = call::BodyBuffer::new(call::MAX_REQUEST_BYTES);
        while let Some(chunk) = stream.next().await {
            body.push(&chunk.map_err(unreadable)?)?;
        }
        Ok(body.into_bytes())
    });
    let timer = Box::pin(Delay::from(std::time::Duration::from_millis(timeout_ms)));
    match select(read, timer).await {
        Either::Left((body, _)) => body,
        Either::Right(((), _)) => Err(ApiError::body_timeout(timeout_ms)),
    }
}

thread_local! {
    /// org → (budgets, fetched at ms)
    static ORG_BUDGETS: RefCell<HashMap<String, (Vec<BudgetSpec>, u64)>> = RefCell::new(HashMap::new());
}

const BUDGET_LIST_TTL_MS: u64 = 30_000;
/// How long a stale list is still used when dashboard-api cannot be reached.
const BUDGET_LIST_STALE_MS: u64 = 600_000;

/// The org's budgets (cached); empty when budgets are not configured at this edge.
async fn org_budgets(env: &Env, org: &str) -> Vec<BudgetSpec> {
    let now = now_ms();
    let cached = ORG_BUDGETS.with(|c| c.borrow().get(org).cloned());
    if let Some((specs, at)) = &cached {
        if now - at < BUDGET_LIST_TTL_MS {
            return specs.clone();
        }
    }
    let path = format!("/internal/v1/budgets?org={}", form_encode(org));
    let fetched = match guard::internal_call(env, Method::Get, &path).await {
        Some(mut resp) => resp.json::<Vec<BudgetSpec>>().await.ok(),
        None => None,
    };
    match fetched {
        Some(specs) => {
            ORG_BUDGETS.with(|c| c.borrow_mut().insert(org.to_string(), (specs.clone(), now)));
            specs
        }
        None => match cached {
            Some((specs, at)) if now - at < BUDGET_LIST_STALE_MS => specs,
            _ => {
                console_error!(
                    "tollgate: budgets of {org} unavailable; the call is not budget-guarded"
                );
                Vec::new()
            }
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
    p: &mut Prepared,
) -> Result<Vec<String>, ApiError> {
    if env.durable_object("BUDGET_GUARD").is_err() || var(env, "KEYS_URL").is_none() {
        return Ok(Vec::new());
    }
    let user = p
        .attribution
        .user
        .clone()
        .unwrap_or_else(|| p.key.user_id.clone());
    let specs: Vec<BudgetSpec> = org_budgets(env, &p.key.org_id)
        .await
        .into_iter()
        .filter(|s| s.applies(&user, &p.key.app_id))
        .collect();
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
        None if specs.iter().any(BudgetSpec::is_hard)
            && var(env, "UNPRICED_UNDER_HARD_BUDGET").as_deref() != Some("allow") =>
        {
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
            Ok(Some(d)) => d,
            _ => {
                console_error!(
                    "tollgate: budget guard {} unavailable; not enforced for this call",
                    spec.budget_id
                );
                continue;
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
                let _ = guard::internal_call(&env, Method::Post, &path).await;
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

/// The Cloudflare data centre serving the request (`request.cf.colo`), when there is one
/// (there is none under a local workerd, where reading it through the typed API throws).
fn colo(req: &Request) -> Option<String> {
    let cf = js_sys::Reflect::get(req.inner(), &"cf".into()).ok()?;
    if cf.is_undefined() || cf.is_null() {
        return None;
    }
    js_sys::Reflect::get(&cf, &"colo".into()).ok()?.as_string()
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
        tags: p.attribution.tags.clone(),
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

async fn proxy(
    p: Prepared,
    forwarded: Vec<(String, String)>,
    env: &Env,
    ctx: &Context,
    started: u64,
) -> Result<Response, ApiError> {
    let provider: &Provider = &p.plan.provider;
    let event_id = p.event_id;
    let key = secret(env, &provider.secret).ok_or_else(|| {
        ApiError::internal(format!(
            "provider `{}` has no key configured (secret {})",
            provider.name, provider.secret
        ))
    })?;
    let url = format!("{}{}", provider.base_url, p.route.upstream_path);
    let headers = Headers::new();
    let set = |k: &str, v: &str| {
        headers
            .set(k, v)
            .map_err(|e| ApiError::internal(format!("header {k}: {e}")))
    };
    for (k, v) in &forwarded {
        set(k, v)?;
    }
    set("authorization", &format!("Bearer {key}"))?;
    let mut init = RequestInit::new();
    init.with_headers(headers.clone());
    if p.route.has_body {
        set("content-type", "application/json")?;
        init.with_method(Method::Post);
        init.with_body(Some(
            js_sys::Uint8Array::from(p.plan.body.as_slice()).into(),
        ));
    } else {
        init.with_method(Method::Get);
    }
    let upstream_req = Request::new_with_init(&url, &init)
        .map_err(|e| ApiError::internal(format!("building the upstream request: {e}")))?;

    let timeout_ms = var(env, "UPSTREAM_TIMEOUT_MS")
        .and_then(|t| t.parse().ok())
        .unwrap_or(DEFAULT_UPSTREAM_TIMEOUT_MS);
    let controller = AbortController::default();
    let signal = controller.signal();
    let fetch = Fetch::Request(upstream_req);
    let sent = Box::pin(fetch.send_with_signal(&signal));
    let timer = Box::pin(Delay::from(std::time::Duration::from_millis(timeout_ms)));
    let outcome = select(sent, timer).await;
    let mut upstream = match outcome {
        Either::Left((Ok(resp), _)) => resp,
        Either::Left((Err(e), _)) => {
            console_error!("tollgate: upstream {} unreachable: {e}", provider.name);
            let mut f = facts(&p, started, event_id);
            f.status_code = 502;
            f.error_class = ErrorClass::Network;
            f.upstream_ms = f.latency_ms;
            record_later(env, ctx, f, p.reservations.clone(), p.budget_now);
            return Err(ApiError::upstream_unreachable(&provider.name));
        }
        Either::Right(((), _)) => {
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
    let status = upstream.status_code();
    let is_sse = upstream
        .headers()
        .get("content-type")
        .ok()
        .flatten()
        .is_some_and(|ct| ct.starts_with("text/event-stream"));

    if is_sse && (200..300).contains(&status) {
        return stream_through(p, upstream, env, ctx, started, headers_ms, event_id);
    }

    // Not a stream: the client gets the provider's response as it is; a tee'd copy is read
    // and measured after the response, off the client's path.
    let mut copy = upstream
        .cloned()
        .map_err(|e| ApiError::internal(format!("tee: {e}")))?;
    let mut f = facts(&p, started, event_id);
    f.status_code = status;
    f.error_class = ErrorClass::from_status(status);
    f.upstream_ms = headers_ms;
    let endpoint = p.route.endpoint;
    let env2 = env.clone();
    let (reservations, budget_now) = (p.reservations.clone(), p.budget_now);
    ctx.wait_until(async move {
        match copy.bytes().await {
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
    Ok(upstream)
}

/// How a tapped stream ended.
struct StreamEnd {
    totals: StreamTotals,
    first_byte_ms: Option<u32>,
    end_ms: u32,
    /// The client went away before the provider finished.
    aborted: bool,
}

/// The provider's stream, through the tap, to the client; the end is reported on a channel.
struct TappedStream {
    inner: ByteStream,
    tap: Option<StreamTap>,
    started: u64,
    first_byte_ms: Option<u32>,
    done: Option<oneshot::Sender<StreamEnd>>,
    activity: Rc<StreamActivity>,
}

/// Whether the client is still pulling the stream, for the record's watchdog: a client that
/// disconnects does not always get the stream dropped at once (workerd may keep it until the
/// request's context ends, taking the `wait_until` that would record the call with it).
struct StreamActivity {
    /// When the runtime last asked for the next chunk (ms since the epoch).
    last_pull_ms: Cell<u64>,
    /// Waiting for the provider (a pull is in progress): not the client's silence.
    waiting_on_provider: Cell<bool>,
}

/// A stream nobody has pulled for this long, while the provider was not being waited for, has
/// lost its client: the call is recorded as aborted without waiting for the stream to be
/// dropped. (A client that reads nothing for this long, with the provider's data ready, is
/// recorded the same way.)
const STREAM_IDLE_MS: u64 = 15_000;

impl TappedStream {
    fn end(&mut self, aborted: bool) -> Vec<u8> {
        let Some(tap) = self.tap.take() else {
            return Vec::new();
        };
        let (rest, totals) = tap.finish();
        if let Some(done) = self.done.take() {
            let _ = done.send(StreamEnd {
                totals,
                first_byte_ms: self.first_byte_ms,
                end_ms: elapsed_ms(self.started),
                aborted,
            });
        }
        rest
    }
}

impl Stream for TappedStream {
    type Item = worker::Result<Vec<u8>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.activity.last_pull_ms.set(now_ms());
        self.activity.waiting_on_provider.set(false);
        loop {
            if self.tap.is_none() {
                return Poll::Ready(None);
            }
            match self.inner.poll_next_unpin(cx) {
                Poll::Pending => {
                    self.activity.waiting_on_provider.set(true);
                    return Poll::Pending;
                }
                Poll::Ready(Some(Ok(chunk))) => {
                    if self.first_byte_ms.is_none() {
                        self.first_byte_ms = Some(elapsed_ms(self.started));
                    }
                    let out = match self.tap.as_mut() {
                        Some(tap) => tap.push(&chunk),
                        None => chunk,
                    };
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(out)));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    // The provider's stream broke: forward what is held, then end.
                    let _ = self.end(false);
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    let rest = self.end(false);
                    return Poll::Ready(if rest.is_empty() {
                        None
                    } else {
                        Some(Ok(rest))
                    });
                }
            }
        }
    }
}

impl Drop for TappedStream {
    fn drop(&mut self) {
        // Dropped before the provider finished: the client disconnected.
        let _ = self.end(true);
    }
}

fn stream_through(
    p: Prepared,
    mut upstream: Response,
    env: &Env,
    ctx: &Context,
    started: u64,
    headers_ms: u32,
    event_id: Uuid,
) -> Result<Response, ApiError> {
    let status = upstream.status_code();
    let inner = upstream
        .stream()
        .map_err(|e| ApiError::internal(format!("upstream body: {e}")))?;
    let (tx, rx) = oneshot::channel();
    let activity = Rc::new(StreamActivity {
        last_pull_ms: Cell::new(now_ms()),
        waiting_on_provider: Cell::new(false),
    });
    let tapped = TappedStream {
        inner,
        tap: Some(StreamTap::new(p.plan.strip_usage_chunk)),
        started,
        first_byte_ms: None,
        done: Some(tx),
        activity: activity.clone(),
    };
    let out_headers = Headers::new();
    for (k, v) in upstream.headers().entries() {
        if !matches!(
            k.as_str(),
            "content-length" | "content-encoding" | "transfer-encoding"
        ) {
            let _ = out_headers.set(&k, &v);
        }
    }
    let response = Response::from_stream(tapped)
        .map_err(|e| ApiError::internal(format!("stream: {e}")))?
        .with_status(status)
        .with_headers(out_headers);

    let mut f = facts(&p, started, event_id);
    f.status_code = status;
    f.upstream_ms = headers_ms;
    let request_bytes = p.request_bytes;
    let env2 = env.clone();
    let (reservations, budget_now) = (p.reservations.clone(), p.budget_now);
    ctx.wait_until(async move {
        // The stream's end, or the watchdog's verdict that its client is gone.
        let mut rx = rx;
        let ended = loop {
            match select(rx, Box::pin(ship::sleep(1_000))).await {
                Either::Left((end, _)) => break end.ok(),
                Either::Right((timer_ok, pending)) => {
                    let idle = now_ms().saturating_sub(activity.last_pull_ms.get());
                    if !timer_ok || (!activity.waiting_on_provider.get() && idle >= STREAM_IDLE_MS)
                    {
                        break None;
                    }
                    rx = pending;
                }
            }
        };
        match ended {
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
