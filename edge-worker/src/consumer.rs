//! The `queue` handler: record batches from the `USAGE_QUEUE` consumer, posted to the collector.

use worker::event;

use crate::cf::{console_error, now_ms, Context, Env, MessageBatch};
use crate::ship;

/// The messages' type as workers-rs sees it; their bodies are read raw, never deserialized.
type Records = MessageBatch<serde_json::Value>;

/// The queue consumer: posts each delivered batch to the collector. Messages are the records'
/// JSON text (as `ship` sends them; an object, as older versions sent, is turned back into
/// text), forwarded without decoding. It always answers `Ok`: workers-rs turns an `Err` into a
/// panic, and what was not delivered is handed back to the Queue with `retry_all` instead.
#[event(queue)]
pub async fn queue(batch: Records, env: Env, _ctx: Context) -> worker::Result<()> {
    consume(&batch, &env).await;
    Ok(())
}

async fn consume(batch: &Records, env: &Env) {
    let mut body = b"[".to_vec();
    let mut count = 0;
    for (index, message) in batch.raw_iter().enumerate() {
        let value = message.body();
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
    if count == 0 {
        batch.ack_all();
        return;
    }
    match ship::post_body_with_retries(env, &body, count, deadline, &|| {}).await {
        crate::outbox::Shipped::Delivered => batch.ack_all(),
        // Redelivered by the Queue; after `max_retries` its dead-letter queue keeps them.
        crate::outbox::Shipped::NotYet => batch.retry_all(),
        crate::outbox::Shipped::Undeliverable { status } => {
            console_error!("tollgate: the collector refused a queue batch of {count} with {status}; the Queue retries it, then keeps it in its dead-letter queue");
            batch.retry_all();
        }
    }
}
