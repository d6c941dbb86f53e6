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
//! Everything but the Workers glue (`glue`, `ship`, wasm32 only) is plain Rust, tested
//! natively.

pub mod attribution;
pub mod budget;
pub mod call;
pub mod config;
pub mod errors;
pub mod keys;
#[cfg(not(target_arch = "wasm32"))]
pub mod local;
pub mod measure;
pub mod tap;

#[cfg(target_arch = "wasm32")]
mod glue;
#[cfg(target_arch = "wasm32")]
mod guard;
#[cfg(target_arch = "wasm32")]
mod ship;
