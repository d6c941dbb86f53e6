//! Shipping records to the collector: batched within the isolate, signed, retried — or handed
//! to a Cloudflare Queue when `USAGE_QUEUE` is bound (the durable path; the queue consumer in
//! `glue` posts its batches here too).
//!
//! Direct POSTs happen inside `wait_until`, after the client has its response. Records that
//! arrive while a flush is waiting or in flight join the next POST, so a busy isolate sends one
//! request per `SHIP_BATCH_DELAY_MS` rather than one per call. Failed POSTs (unreachable, 429,
//! 5xx) are retried on [`crate::SHIP_RETRY_DELAYS_MS`] (~19 s, which covers a collector
//! restart); if every retry fails the batch is logged and dropped — use the Queue binding where
//! that is not acceptable. The collector deduplicates by `event_id`, so a retry of a batch whose
//! `202` was lost stores nothing twice.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use crate::SHIP_RETRY_DELAYS_MS;
use usage_core::wire::{self, BatchFormat};
use usage_core::UsageRecord;
use worker::{
    console_error, console_warn, Date, Delay, Env, Fetch, Headers, Method, Request, RequestInit,
};

thread_local! {
    static OUTBOX: RefCell<Vec<UsageRecord>> = const { RefCell::new(Vec::new()) };
    static FLUSHING: Cell<bool> = const { Cell::new(false) };
}

const DEFAULT_BATCH_DELAY_MS: u64 = 50;
const MAX_BATCH: usize = 1000;

/// Ships one record (see the module docs).
pub async fn ship(env: &Env, record: UsageRecord) {
    if let Ok(queue) = env.queue("USAGE_QUEUE") {
        if let Err(e) = queue.send(&record).await {
            console_error!("tollgate: queue send failed ({e}); posting directly");
        } else {
            return;
        }
    }
    OUTBOX.with(|o| o.borrow_mut().push(record));
    if FLUSHING.with(Cell::get) {
        return; // the flush in progress takes it
    }
    FLUSHING.with(|f| f.set(true));
    let delay = env
        .var("SHIP_BATCH_DELAY_MS")
        .ok()
        .and_then(|v| v.to_string().parse().ok())
        .unwrap_or(DEFAULT_BATCH_DELAY_MS);
    Delay::from(Duration::from_millis(delay)).await;
    loop {
        let batch: Vec<UsageRecord> = OUTBOX.with(|o| {
            let mut o = o.borrow_mut();
            let n = o.len().min(MAX_BATCH);
            o.drain(..n).collect()
        });
        if batch.is_empty() {
            break;
        }
        if !post_with_retries(env, &batch).await {
            console_error!("tollgate: dropped {} usage records after retries (bind USAGE_QUEUE for durable shipping)", batch.len());
        }
    }
    FLUSHING.with(|f| f.set(false));
}

/// POSTs one signed batch; `true` once the collector accepted it (or refused it as bad data,
/// which no retry can fix).
pub async fn post_with_retries(env: &Env, records: &[UsageRecord]) -> bool {
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
            Delay::from(Duration::from_millis(SHIP_RETRY_DELAYS_MS[attempt - 1])).await;
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
    let resp = Fetch::Request(req).send().await?;
    Ok(resp.status_code())
}
