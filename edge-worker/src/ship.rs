//! Shipping records to the collector: batched within the isolate, signed, retried — or handed
//! to a Cloudflare Queue when `USAGE_QUEUE` is bound (the durable path; the queue consumer in
//! `glue` posts its batches here too).
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

use std::cell::RefCell;

use crate::outbox::{Outbox, RecordState};
use crate::web::{self, sleep};
use crate::SHIP_RETRY_DELAYS_MS;
use usage_core::wire::{self, BatchFormat};
use usage_core::UsageRecord;
use wasm_bindgen::JsValue;
use worker::{console_error, console_warn, Date, Env, QueueContentType, RawMessageBuilder};

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
/// A claim's lease: longer than a flush can run, so only a flush that died loses its claim.
const LEASE_MS: f64 = (FLUSH_BUDGET_MS + POST_TIMEOUT_MS) as f64;

fn now_ms() -> f64 {
    Date::now().as_millis() as f64
}

/// Ships one record (see the module docs).
pub async fn ship(env: &Env, record: UsageRecord) {
    let queue_bound = crate::bindings::has_usage_queue(env);
    if queue_bound {
        if let Ok(queue) = env.queue("USAGE_QUEUE") {
            // As JSON text: the consumer forwards it to the collector as it is.
            let message = RawMessageBuilder::new(JsValue::from_str(
                &serde_json::to_string(&record).unwrap_or_default(),
            ))
            .build_with_content_type(QueueContentType::Text);
            if let Err(e) = queue.send_raw(message).await {
                console_error!("tollgate: queue send failed ({e}); posting directly");
            } else {
                return;
            }
        }
    }
    let id = record.event_id;
    let dropped = OUTBOX.with(|o| o.borrow_mut().push(record));
    if dropped > 0 {
        console_error!("tollgate: outbox full; dropped the {dropped} oldest unsent usage records (bind USAGE_QUEUE for durable shipping)");
    }
    let delay = crate::bindings::settings(env).ship_batch_delay_ms;
    if !sleep(delay).await {
        return; // no timers here: a later call's flush sends the record
    }
    // Until this call's record is delivered: while it waits, flush (it and every other
    // waiting record); while another call's flush holds it, check back shortly — if that
    // flush fails or dies, the record is waiting again and this call sends it.
    let deadline = now_ms() + FLUSH_BUDGET_MS as f64;
    loop {
        let now = now_ms();
        let claimed = OUTBOX.with(|o| {
            let mut o = o.borrow_mut();
            match o.state(id, now) {
                RecordState::Delivered => Err(()),
                RecordState::Sending => Ok(None),
                RecordState::Waiting => Ok(o.claim(now, LEASE_MS, MAX_BATCH)),
            }
        });
        let Ok(claimed) = claimed else {
            return; // delivered
        };
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

/// POSTs one signed batch; `true` once the collector accepted it (or refused it as bad data,
/// which no retry can fix). Retries stop at `deadline_ms` (ms since the epoch).
pub async fn post_with_retries(env: &Env, records: &[UsageRecord], deadline_ms: f64) -> bool {
    let body = wire::encode_batch(records, BatchFormat::JsonArray);
    post_body_with_retries(env, &body, records.len(), deadline_ms).await
}

/// [`post_with_retries`] for a batch already encoded as a JSON array of `count` records.
pub async fn post_body_with_retries(
    env: &Env,
    body: &[u8],
    count: usize,
    deadline_ms: f64,
) -> bool {
    let Some(url) = crate::bindings::settings(env).collector_url.clone() else {
        console_error!("tollgate: COLLECTOR_URL is not set; records cannot be shipped");
        return false;
    };
    let Some(secret) = crate::bindings::secret(env, "COLLECTOR_SIGNING_SECRET") else {
        console_error!("tollgate: COLLECTOR_SIGNING_SECRET is not set; records cannot be shipped");
        return false;
    };
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
        let signature = wire::sign(secret.as_bytes(), now, body);
        match post(&url, &signature, body).await {
            Ok(status) if (200..300).contains(&status) => return true,
            Ok(status) if status == 429 || status >= 500 => {
                console_warn!("tollgate: collector answered {status}; retrying");
            }
            Ok(status) => {
                console_error!("tollgate: collector refused a batch of {count} with {status}");
                return true;
            }
            Err(e) => console_warn!("tollgate: collector unreachable: {e}"),
        }
    }
    false
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
