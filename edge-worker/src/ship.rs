//! Shipping records to the collector: batched within the isolate, signed, retried — or handed
//! to a Cloudflare Queue when `USAGE_QUEUE` is bound (the durable path; the queue consumer in
//! `consumer` posts its batches here too).
//!
//! Direct POSTs happen inside `wait_until`, after the client has its response. Each call's
//! record joins the isolate's [`Outbox`]; after `SHIP_BATCH_DELAY_MS` the call's own
//! `wait_until` flushes every waiting record — unless an earlier call's flush already took its
//! record, in which case it only watches that flush — so a busy isolate sends one POST per
//! batch delay, not one per call, while no request depends on another's `wait_until`
//! surviving (see `outbox.rs` for the claim/lease rules that make a dead flush
//! harmless). Failed POSTs (unreachable, no answer within [`POST_TIMEOUT_MS`], 429, 5xx) are
//! retried on [`crate::SHIP_RETRY_DELAYS_MS`] (~19 s, which covers a collector restart) within
//! [`FLUSH_BUDGET_MS`]; records a flush could not deliver stay in the outbox for the next one.
//! The collector deduplicates by `event_id`, so a record sent twice is stored once.
//!
//! What the collector's answer means ([`Shipped`]), so that no record is dropped without a
//! trace:
//! - 2xx: delivered (records it refused one by one are in its `usage_rejects` table).
//! - 401/403 (a signing secret being rotated, a clock off by more than the replay window), 408,
//!   429, 5xx, no answer: not yet — retried, and kept for the next flush (on the Queue path:
//!   `retry_all`, so the Queue redelivers and, after `max_retries`, keeps them in its
//!   dead-letter queue).
//! - any other 4xx (the collector cannot read the batch: a version mismatch): undeliverable as
//!   it is. On the Queue path the batch is retried like the above and ends in the dead-letter
//!   queue; on the direct path every record is written to the log as one
//!   `tollgate: dead-letter` line with its JSON (replayable from Workers Logs / Logpush) and
//!   leaves the outbox, so one bad batch cannot block the records behind it.

use std::cell::RefCell;

use crate::cf::{self, console_error, console_warn, Env, Queue};
use crate::outbox::{outcome_of, Outbox, RecordState, Shipped};
use crate::web::{self, sleep};
use crate::SHIP_RETRY_DELAYS_MS;
use usage_core::wire::{self, BatchFormat};
use usage_core::UsageRecord;

thread_local! {
    static OUTBOX: RefCell<Outbox> = RefCell::new(Outbox::default());
}

const MAX_BATCH: usize = 1000;
/// One POST to the collector may take this long before it counts as failed.
pub const POST_TIMEOUT_MS: u64 = 5_000;
/// A flush stops retrying after this long (Cloudflare cancels `wait_until` work at 30 s);
/// what it could not send waits for the next flush.
pub const FLUSH_BUDGET_MS: u64 = 25_000;
/// How often a call whose record another flush is sending checks that it went.
const RECHECK_MS: u64 = 100;
/// A claim's lease, renewed before each attempt of its POST: longer than one attempt and the
/// pause before the next, so only a flush that died loses its claim — and soon enough that
/// the calls watching it (for up to [`FLUSH_BUDGET_MS`]) take its records over.
const LEASE_MS: f64 = (POST_TIMEOUT_MS + MAX_RETRY_PAUSE_MS + 1_000) as f64;
/// The longest pause between two attempts of one POST (the schedule never decreases).
const MAX_RETRY_PAUSE_MS: u64 = SHIP_RETRY_DELAYS_MS[SHIP_RETRY_DELAYS_MS.len() - 1];
/// A waiting record older than its batch delay by this much has lost its own sender.
const STALE_AFTER_MS: u64 = 4 * RECHECK_MS;

fn now_ms() -> f64 {
    cf::now_ms() as f64
}

/// Sends one message whose body is `text` (content type `text`: the consumer forwards it as
/// it is).
async fn send_text(queue: &Queue, text: &str) -> Result<(), String> {
    let message = worker::RawMessageBuilder::new(wasm_bindgen::JsValue::from_str(text))
        .build_with_content_type(worker::QueueContentType::Text);
    queue.send_raw(message).await.map_err(|e| e.to_string())
}

/// Ships one record (see the module docs).
pub async fn ship(env: &Env, record: UsageRecord) {
    let queue_bound = crate::bindings::has_usage_queue(env);
    if queue_bound {
        if let Ok(queue) = env.queue(crate::config::names::USAGE_QUEUE) {
            // As JSON text: the consumer forwards it to the collector as it is.
            let sent = match serde_json::to_string(&record) {
                Ok(text) => send_text(&queue, &text).await,
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = sent {
                console_error!("tollgate: queue send failed ({e}); posting directly");
            } else {
                return;
            }
        }
    }
    let id = record.event_id;
    let dropped = OUTBOX.with(|o| o.borrow_mut().push(record, now_ms()));
    if dropped > 0 {
        console_error!("tollgate: outbox full; dropped the {dropped} oldest unsent usage records (bind USAGE_QUEUE for durable shipping)");
    }
    let delay = crate::bindings::settings(env).ship_batch_delay_ms;
    if !sleep(delay).await {
        return; // no timers here: a later call's flush sends the record
    }
    // Until this call's record is delivered: while it waits, flush (it and every other
    // waiting record); while another call's flush holds it, check back shortly — if that
    // flush fails or dies, the record is waiting again and this call sends it. A watching
    // call also flushes records whose own calls are gone (stale), so none is stranded while
    // any call is still flushing or watching.
    let deadline = now_ms() + FLUSH_BUDGET_MS as f64;
    let stale_after = (delay + STALE_AFTER_MS) as f64;
    loop {
        let now = now_ms();
        let claimed = OUTBOX.with(|o| {
            let mut o = o.borrow_mut();
            match o.state(id, now) {
                RecordState::Delivered => Err(()),
                RecordState::Sending if !o.has_stale(now, stale_after) => Ok(None),
                RecordState::Sending | RecordState::Waiting => {
                    Ok(o.claim(now, LEASE_MS, MAX_BATCH))
                }
            }
        });
        let Ok(claimed) = claimed else {
            return; // delivered
        };
        if let Some((claim, batch)) = claimed {
            let renew = || OUTBOX.with(|o| o.borrow_mut().renew(claim, now_ms() + LEASE_MS));
            let body = wire::encode_batch(&batch, BatchFormat::JsonArray);
            let shipped = post_body_with_retries(env, &body, batch.len(), deadline, &renew).await;
            if let Shipped::Undeliverable { status } = shipped {
                log_dead_letter(&body, batch.len(), status);
            }
            let done = shipped != Shipped::NotYet;
            OUTBOX.with(|o| {
                let mut o = o.borrow_mut();
                if done {
                    o.complete(claim);
                } else {
                    o.release(claim);
                }
            });
            if done {
                continue; // this record was in the batch, or is next in line
            }
        }
        if now_ms() + RECHECK_MS as f64 >= deadline || !sleep(RECHECK_MS).await {
            let waiting = OUTBOX.with(|o| o.borrow().len());
            console_error!("tollgate: {waiting} usage records not delivered within this call's {FLUSH_BUDGET_MS} ms; later calls' flushes retry them");
            return;
        }
    }
}

/// Logs an undeliverable batch in full, so its records can be replayed (the direct path's
/// dead letter).
pub fn log_dead_letter(body: &[u8], count: usize, status: u16) {
    console_error!(
        "tollgate: dead-letter: the collector refused a batch of {count} records with {status}; records: {}",
        String::from_utf8_lossy(body)
    );
}

/// POSTs one signed batch — `body`, a JSON array of `count` records — until the collector
/// takes it, refuses it for good, or `deadline_ms` (ms since the epoch) comes;
/// `before_attempt` runs before each attempt (the outbox renews its claim there).
pub async fn post_body_with_retries(
    env: &Env,
    body: &[u8],
    count: usize,
    deadline_ms: f64,
    before_attempt: &dyn Fn(),
) -> Shipped {
    let Some(url) = crate::bindings::settings(env).collector_url.clone() else {
        console_error!("tollgate: COLLECTOR_URL is not set; records cannot be shipped");
        return Shipped::NotYet;
    };
    let Some(secret) = crate::bindings::secret(env, crate::config::names::COLLECTOR_SIGNING_SECRET)
    else {
        console_error!("tollgate: COLLECTOR_SIGNING_SECRET is not set; records cannot be shipped");
        return Shipped::NotYet;
    };
    for attempt in 0..=SHIP_RETRY_DELAYS_MS.len() {
        if attempt > 0 {
            let pause = SHIP_RETRY_DELAYS_MS[attempt - 1];
            if now_ms() + pause as f64 >= deadline_ms || !sleep(pause).await {
                return Shipped::NotYet;
            }
        }
        before_attempt();
        let now = i64::try_from(cf::now_ms() / 1000).unwrap_or(0);
        let signature = wire::sign(secret.as_bytes(), now, body);
        match post(&url, &signature, body).await.map(outcome_of) {
            Ok(Shipped::NotYet) => {
                console_warn!("tollgate: collector did not take a batch of {count} yet; retrying")
            }
            Ok(done) => return done,
            Err(e) => console_warn!("tollgate: collector unreachable: {e}"),
        }
    }
    Shipped::NotYet
}

async fn post(url: &str, signature: &str, body: &[u8]) -> Result<u16, String> {
    let headers = web_sys::Headers::new().map_err(|e| web::error_text(&e))?;
    for (name, value) in [
        ("content-type", BatchFormat::JsonArray.content_type()),
        (wire::SIGNATURE_HEADER, signature),
    ] {
        headers.set(name, value).map_err(|e| web::error_text(&e))?;
    }
    let init = web::request_init("POST", &headers, Some(body));
    let sent = Box::pin(async move {
        let resp = web::fetch(url, &init).await?;
        let status = resp.status();
        // Drain the (small) answer so the connection can be reused.
        let _ = web::response_bytes(&resp).await;
        Ok(status)
    });
    web::within(sent, POST_TIMEOUT_MS)
        .await
        .unwrap_or_else(|| Err(format!("no answer within {POST_TIMEOUT_MS} ms")))
}
