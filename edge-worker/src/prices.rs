//! The prices this isolate charges with: dashboard-api's price book (`GET <KEYS_URL>/internal/
//! v1/prices`, signed both ways), cached per isolate, with the table built into the worker as
//! the fallback.
//!
//! - **Staleness.** A copy is used for `PRICES_CACHE_SECS`
//!   [`crate::config::DEFAULT_PRICES_CACHE_SECS`] by default) after it was fetched or confirmed (`If-None-Match` → 304). Past that, the next
//!   call refreshes it in `wait_until` — off its own path — and is priced with the copy it has;
//!   calls after the refresh use the new book. A price set in the dashboard is therefore
//!   charged at every edge within dashboard-api's `BOOK_TTL` (5 s) + `PRICES_CACHE_SECS` + one
//!   call.
//! - **Cold isolates** wait for the first fetch (at most [`FETCH_TIMEOUT_MS`]): a new isolate
//!   does not price with a built-in table older than the book.
//! - **Failures.** A copy that cannot be had (dashboard down, bad signature, unreadable) leaves
//!   the last good one in use (or the built-in table, if there never was one) and is tried again
//!   after [`RETRY_AFTER_MS`]; each failure is logged. A body whose signature does not verify
//!   with `KEYS_SIGNING_SECRET`, or whose content does not hash to the version it names, is
//!   never used.
//! - Without `KEYS_URL` (local runs, tests) the built-in table is the book.
//!
//! Requests never await a fetch another request started (the runtime cancels such waits): a
//! call that finds a refresh in flight uses the copy it has.

use std::cell::RefCell;
use std::rc::Rc;

use usage_core::{wire, PriceTable};

use crate::bindings::secret;
use crate::cf::{self, console_error, now_ms, Context, Env};
use crate::config::Settings;
use crate::web;

/// How long a fetch may take.
pub const FETCH_TIMEOUT_MS: u64 = 2_000;
/// Pause before trying again after a failed fetch.
pub const RETRY_AFTER_MS: u64 = 10_000;
/// The path of the book on dashboard-api.
const PATH: &str = "/internal/v1/prices";

#[derive(Default)]
struct Cache {
    builtin: Option<Rc<PriceTable>>,
    remote: Option<Rc<PriceTable>>,
    /// When the remote copy (or the last attempt) should be checked again (ms since epoch).
    next_check_ms: u64,
    refreshing: bool,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

/// The table to price with now: the dashboard's book when this isolate has one, else the
/// built-in table. `None` only if the built-in table does not load (a broken build).
pub fn current() -> Option<Rc<PriceTable>> {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if let Some(remote) = &c.remote {
            return Some(remote.clone());
        }
        if c.builtin.is_none() {
            match PriceTable::builtin() {
                Ok(t) => c.builtin = Some(Rc::new(t)),
                Err(e) => console_error!("tollgate: built-in price table does not load: {e}"),
            }
        }
        c.builtin.clone()
    })
}

/// Keeps the isolate's book fresh (see the module docs): awaits the first fetch of a cold
/// isolate, refreshes a stale copy in `wait_until`.
pub async fn refresh(env: &Env, ctx: &Context, settings: &Settings) {
    let Some(base) = settings.keys_url.clone() else {
        return;
    };
    let now = now_ms();
    let (due, cold) = CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let due = !c.refreshing && now >= c.next_check_ms;
        if due {
            c.refreshing = true;
        }
        (due, c.remote.is_none())
    });
    if !due {
        return;
    }
    let ttl_ms = settings.prices_cache_ms;
    if cold {
        fetch_into_cache(env.clone(), base, ttl_ms).await;
    } else {
        cf::wait_until(ctx, fetch_into_cache(env.clone(), base, ttl_ms));
    }
}

async fn fetch_into_cache(env: Env, base: String, ttl_ms: u64) {
    let known = CACHE.with(|c| c.borrow().remote.as_ref().map(|t| t.version().to_string()));
    let outcome = fetch(&env, &base, known.as_deref()).await;
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        c.refreshing = false;
        match outcome {
            Ok(Some(table)) => {
                c.remote = Some(Rc::new(table));
                c.next_check_ms = now_ms() + ttl_ms;
            }
            Ok(None) => c.next_check_ms = now_ms() + ttl_ms,
            Err(why) => {
                console_error!("tollgate: price book: {why}");
                c.next_check_ms = now_ms() + RETRY_AFTER_MS.min(ttl_ms.max(1_000));
            }
        }
    });
}

/// One signed GET of the book. `Ok(None)`: the copy with version `known` is current.
async fn fetch(env: &Env, base: &str, known: Option<&str>) -> Result<Option<PriceTable>, String> {
    let signing = secret(env, crate::config::names::KEYS_SIGNING_SECRET)
        .ok_or("KEYS_SIGNING_SECRET is not set")?;
    let now = (now_ms() / 1000) as i64;
    let headers = web_sys::Headers::new().map_err(|e| web::error_text(&e))?;
    headers
        .set(
            wire::SIGNATURE_HEADER,
            &wire::sign(signing.as_bytes(), now, PATH.as_bytes()),
        )
        .map_err(|e| web::error_text(&e))?;
    if let Some(v) = known {
        headers
            .set("if-none-match", &format!("\"{v}\""))
            .map_err(|e| web::error_text(&e))?;
    }
    let init = web::request_init("GET", &headers, None);
    let controller = web_sys::AbortController::new().map_err(|e| web::error_text(&e))?;
    init.set_signal(Some(&controller.signal()));
    let url = format!("{}{PATH}", base.trim_end_matches('/'));
    let resp = match web::within(Box::pin(web::fetch(&url, &init)), FETCH_TIMEOUT_MS).await {
        Some(r) => r?,
        None => {
            controller.abort();
            return Err(format!("no answer within {FETCH_TIMEOUT_MS} ms"));
        }
    };
    match resp.status() {
        304 => return Ok(None),
        200 => {}
        s => return Err(format!("{PATH} answered {s}")),
    }
    let signature = resp.headers().get(wire::SIGNATURE_HEADER).ok().flatten();
    let version = resp
        .headers()
        .get(crate::config::names::PRICING_VERSION_HEADER)
        .ok()
        .flatten()
        .unwrap_or_default();
    let body = web::response_bytes(&resp).await?;
    PriceTable::from_signed_lines(
        &body,
        signature.as_deref(),
        &version,
        signing.as_bytes(),
        now,
    )
    .map(Some)
}
