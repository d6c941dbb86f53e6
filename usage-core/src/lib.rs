//! Tollgate's domain, shared by the edge worker (wasm), the collector and the dashboard.
//!
//! - [`UsageRecord`] — one record per provider call attempt (the data contract), with
//!   [`UsageRecord::validate`].
//! - [`Nanos`] — money as integer nano-USD.
//! - [`PriceTable`] — per-model prices with effective dates and a content version;
//!   [`price_call`] / [`cost()`] price each token class once.
//! - [`parse_response`] and [`SseScanner`] — usage from provider JSON bodies and event streams.
//! - [`wire`] — batch encoding and the HMAC signature between edge and collector.
//! - [`keys`] — the app-key format and its hash.
//! - [`Period`] — budget periods and their bounds (the edge's ledger and the dashboard).
//!
//! Pure: no I/O, no clock, no async runtime; builds for `wasm32-unknown-unknown` and native.
//! Callers pass the time in.

pub mod budget_use;
pub mod cost;
pub mod dates;
pub mod keys;
pub mod money;
pub mod period;
pub mod price;
pub mod record;
pub mod sse;
pub mod tokens;
pub mod top_level;
pub mod usage;
pub mod wire;

pub use cost::{
    cost, cost_of_call, effective_tier, price_call, price_tokens, price_usage, CallCost,
    CallToPrice, Priced, TokenCounts, ToolCalls,
};
pub use dates::{rfc3339, utc, ymd};
pub use money::{MoneyError, Nanos};
pub use period::Period;
pub use price::{read_price_lines, ModelPrice, PriceError, PriceFile, PriceTable, TierPrice};
pub use record::{
    CostSource, Endpoint, ErrorClass, FieldError, UsageRecord, UsageSource, SCHEMA_VERSION,
};
pub use sse::{scan, SseScanner, StreamSummary};
pub use usage::{parse_response, ParseError, ParsedResponse, ParsedUsage};
