//! Shipping records to the collector: batched within the isolate, signed, retried — or handed
//! to a Cloudflare Queue when `USAGE_QUEUE` is bound (the durable path; the queue consumer in
//! `glue` posts its batches here too).
//!
//! Direct POSTs happen inside `wait_until`, after the client has its response. Each call's
//! record joins the isolate's [`Outbox`]; after `SHIP_BATCH_DELAY_MS` the call's own
//! `wait_until` flushes whatever is unclaimed — its record and any others — so a busy isolate
//! still sends one POST per batch, not one per call, while no request depends on another's
//! `wait_until` surviving (see `outbox.rs` for the claim/lease rules that make a dead flush
//! harmless). Failed POSTs (unreachable, no answer within [`POST_TIMEOUT_MS`], 429, 5xx) are
//! retried on [`crate::SHIP_RETRY_DELAYS_MS`] (~19 s, which covers a collector restart) within
//! [`FLUSH_BUDGET_MS`]; records a flush could not deliver stay in the outbox for the next one.
//! The collector deduplicates by `event_id`, so a record sent twice is stored once.

use std::cell::RefCell;

use futures_util::future::{select, Either};

use crate::outbox::Outbox;
use crate::SHIP_RETRY_DELAYS_MS;
use usage_core::wire::{self, BatchFormat};
use usage_core::UsageRecord;
use wasm_bindgen::{JsCast, JsValue};
use worker::{
    console_error, console_warn, Date, Env, Fetch, Headers, Method, Request, RequestInit,
};

thread_local! {
    static OUTBOX: RefCell<Outbox> = RefCell::new(Outbox::default());
}

const DEFAULT_BATCH_DELAY_MS: u64 = 50;
const MAX_BATCH: usize = 1000;
/// One POST to the collector may take this long before it counts as failed.
pub const POST_TIMEOUT_MS: u64 = 5_000;
/// A flush stops retrying after this long (Cloudflare cancels `wait_until` work at 30 s);
/// what it could not send waits for the next flush.
pub const FLUSH_BUDGET_MS: u64 = 25_000;
/// How often a call whose record another flush is sending checks that it went.
const RECHECK_MS: u64 = 100;
/// A claim's lease: longer than a flush can run, so only a flush that died loses its claim.
const LEASE_MS: f64 = (FLUSH_BUDGET_MS + POST_TIMEOUT_MS) as f64;

fn now_ms() -> f64 {
    Date::now().as_millis() as f64
}

/// Waits `ms`; `false` if the runtime refuses a timer. Unlike `worker::Delay`, which panics
/// then (workerd refuses timers outside a request's context, e.g. while it shuts down, and a
/// panic takes the whole isolate down with every record in its outbox).
pub(crate) async fn sleep(ms: u64) -> bool {
    let promise = js_sys::Promise::new(&mut |resolve, reject| {
        let global = js_sys::global();
        let set = js_sys::Reflect::get(&global, &"setTimeout".into())
            .ok()
            .and_then(|f| f.dyn_into::<js_sys::Function>().ok());
        let scheduled = match set {
            Some(set) => set.call2(&global, &resolve, &JsValue::from_f64(ms as f64)),
            None => Err(JsValue::from_str("no setTimeout")),
        };
        if let Err(e) = scheduled {
            let _ = reject.call1(&JsValue::NULL, &e);
        }
    });
    wasm_bindgen_futures::JsFuture::from(promise).await.is_ok()
}

/// Ships one record (see the module docs).
pub async fn ship(env: &Env, record: UsageRecord) {
    if let Ok(queue) = env.queue("USAGE_QUEUE") {
        if let Err(e) = queue.send(&record).await {
            console_error!("tollgate: queue send failed ({e}); posting directly");
        } else {
            return;
        }
    }
    let id = record.event_id;
    let dropped = OUTBOX.with(|o| o.borrow_mut().push(record));
    if dropped > 0 {
        console_error!("tollgate: outbox full; dropped the {dropped} oldest unsent usage records (bind USAGE_QUEUE for durable shipping)");
    }
    let delay = env
        .var("SHIP_BATCH_DELAY_MS")
        .ok()
        .and_then(|v| v.to_string().parse().ok())
        .unwrap_or(DEFAULT_BATCH_DELAY_MS);
    if !sleep(delay).await {
        return; // no timers here: a later call's flush sends the record
    }
    // Until this call's record is delivered: send what is claimable (this record and any
    // other waiting one); while another flush holds this record, check back shortly — if that
    // flush fails or dies, this one takes the record over.
    let deadline = now_ms() + FLUSH_BUDGET_MS as f64;
    loop {
        let claimed = OUTBOX.with(|o| o.borrow_mut().claim(now_ms(), LEASE_MS, MAX_BATCH));
        if let Some((claim, batch)) = claimed {
            let delivered = post_with_retries(env, &batch, deadline).await;
            OUTBOX.with(|o| {
                let mut o = o.borrow_mut();
                if delivered {
                    o.complete(claim);
                } else {
                    o.release(claim);
                }
            });
            if delivered {
                if now_ms() >= deadline {
                    return; // what is left has callers of its own still flushing
                }
                continue; // more may be waiting
            }
        } else if !OUTBOX.with(|o| o.borrow().holds(id)) {
            return; // this call's record is delivered
        }
        // Not delivered yet (another flush holds it, or the retries ran out): check back
        // shortly while the budget lasts.
        if now_ms() + RECHECK_MS as f64 >= deadline || !sleep(RECHECK_MS).await {
            let waiting = OUTBOX.with(|o| o.borrow().len());
            console_error!("tollgate: {waiting} usage records not delivered within this call's {FLUSH_BUDGET_MS} ms; later calls' flushes retry them");
            return;
        }
    }
}

/// POSTs one signed batch; `true` once the collector accepted it (or refused it as bad data,
/// which no retry can fix). Retries stop at `deadline_ms` (ms since the epoch).
pub async fn post_with_retries(env: &Env, records: &[UsageRecord], deadline_ms: f64) -> bool {
    let Some(url) = env.var("COLLECTOR_URL").ok().map(|v| v.to_string()) else {
        console_error!("tollgate: COLLECTOR_URL is not set; records cannot be shipped");
        return false;
    };
    let Some(secret) = env
        .secret("COLLECTOR_SIGNING_SECRET")
        .ok()
        .map(|v| v.to_string())
    else {
        console_error!("tollgate: COLLECTOR_SIGNING_SECRET is not set; records cannot be shipped");
        return false;
    };
    let body = wire::encode_batch(records, BatchFormat::JsonArray);
    for attempt in 0..=SHIP_RETRY_DELAYS_MS.len() {
        if attempt > 0 {
            let pause = SHIP_RETRY_DELAYS_MS[attempt - 1];
            if now_ms() + pause as f64 >= deadline_ms {
                return false;
            }
            if !sleep(pause).await {
                return false;
            }
        }
        let now = i64::try_from(Date::now().as_millis() / 1000).unwrap_or(0);
        let signature = wire::sign(secret.as_bytes(), now, &body);
        match post(&url, &signature, &body).await {
            Ok(status) if (200..300).contains(&status) => return true,
            Ok(status) if status == 429 || status >= 500 => {
                console_warn!("tollgate: collector answered {status}; retrying");
            }
            Ok(status) => {
                console_error!(
                    "tollgate: collector refused a batch of {} with {status}",
                    records.len()
                );
                return true;
            }
            Err(e) => console_warn!("tollgate: collector unreachable: {e}"),
        }
    }
    false
}

async fn post(url: &str, signature: &str, body: &[u8]) -> worker::Result<u16> {
    let headers = Headers::new();
    headers.set("content-type", BatchFormat::JsonArray.content_type())?;
    headers.set(wire::SIGNATURE_HEADER, signature)?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(js_sys::Uint8Array::from(body).into()));
    let req = Request::new_with_init(url, &init)?;
    let sent = Box::pin(async move { Fetch::Request(req).send().await });
    let timer = Box::pin(sleep(POST_TIMEOUT_MS));
    match select(sent, timer).await {
        Either::Left((resp, _)) => Ok(resp?.status_code()),
        Either::Right(_) => Err(worker::Error::RustError(format!(
            "no answer within {POST_TIMEOUT_MS} ms"
        ))),
    }
}
