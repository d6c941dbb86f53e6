//! Tollgate's edge worker: an OpenAI-compatible proxy on Cloudflare Workers (Rust → Wasm).
//!
//! Apps point an OpenAI SDK's `base_url` at the worker and use a Tollgate app key (`tg_…`)
//! instead of the provider's. For every call the worker:
//!
//! 1. routes it ([`call::route`]) and authenticates the key ([`keys`]);
//! 2. reads attribution headers ([`attribution`]) and plans the upstream call
//!    ([`call::plan`]: provider by header, model prefix or default; `include_usage` injected
//!    into streams that lack it);
//! 3. forwards it with the provider's secret, streaming the answer back through a
//!    [`tap::StreamTap`] that measures without buffering (and removes the injected usage chunk);
//! 4. after the response — inside `wait_until`, off the client's path — builds the
//!    [`measure::build_record`] and ships it ([`ship`]) to the collector, batched and signed, or
//!    to a Cloudflare Queue.
//!
//! Every call that yields a record answers with its `event_id` in the [`EVENT_ID_HEADER`]
//! response header (proxied answers, streams, and the edge's own refusals after the key was
//! accepted: budget, provider unreachable, timeout), so a client — or a reconciliation such as
//! `cargo xtask soak` — can name the exact row in `usage_events` its call produced.
//!
//! Everything but the Workers glue (`fetch`, `consumer`, `key_lookup`, `enforce`, `prices`, `proxy`,
//! `record`, `stream`, `guard`, `ship`, `web`, `bindings` and `cf`, which brings in workers-rs;
//! wasm32 only) is plain Rust, tested natively.

pub mod attribution;
pub mod budget;
pub mod call;
pub mod config;
pub mod cors;
pub mod errors;
pub mod json;
pub mod keys;
#[cfg(not(target_arch = "wasm32"))]
pub mod local;
pub mod measure;
pub mod outbox;
pub mod tap;

/// Response header carrying the call's `event_id` (the idempotency key of its usage record).
pub const EVENT_ID_HEADER: &str = "x-tollgate-event-id";

/// Pauses between the attempts of one batch POST to the collector (after the first try).
///
/// Together about 19 s: long enough to ride out a collector restart (a SIGKILL and a new
/// process recovering its spool) or a rolling deploy, short enough to finish inside the 30 s
/// Cloudflare gives `wait_until` work after the response. A ClickHouse outage needs no retry
/// budget at all: the collector keeps accepting into its spool.
pub const SHIP_RETRY_DELAYS_MS: &[u64] = &[100, 200, 400, 800, 1_600, 3_200, 6_400, 6_400];

#[cfg(test)]
mod tests {
    use super::SHIP_RETRY_DELAYS_MS;

    #[test]
    fn the_retry_schedule_covers_a_restart_and_fits_in_wait_until() {
        let total: u64 = SHIP_RETRY_DELAYS_MS.iter().sum();
        // Cloudflare cancels `wait_until` work 30 s after the response; leave room for the
        // POSTs themselves.
        assert!((15_000..=22_000).contains(&total), "{total} ms");
        assert!(SHIP_RETRY_DELAYS_MS.windows(2).all(|w| w[0] <= w[1]));
    }
}

#[cfg(target_arch = "wasm32")]
mod bindings;
#[cfg(target_arch = "wasm32")]
mod cf;
#[cfg(target_arch = "wasm32")]
mod consumer;
#[cfg(target_arch = "wasm32")]
mod enforce;
#[cfg(target_arch = "wasm32")]
mod fetch;
#[cfg(target_arch = "wasm32")]
mod guard;
#[cfg(target_arch = "wasm32")]
mod key_lookup;
#[cfg(target_arch = "wasm32")]
mod prices;
#[cfg(target_arch = "wasm32")]
mod proxy;
#[cfg(target_arch = "wasm32")]
mod record;
#[cfg(target_arch = "wasm32")]
mod ship;
#[cfg(target_arch = "wasm32")]
mod stream;
#[cfg(target_arch = "wasm32")]
mod web;
