//! End-to-end testing of Tollgate: the real pieces together.
//!
//! - [`mock_provider`] — the stand-in for OpenAI and OpenRouter (there is no internet here).
//! - [`harness`] — starting the collector binary, the wasm worker under `workerd` and the
//!   official OpenAI Python SDK, each cleaned up when the test ends.
//! - [`private_clickhouse`] — a ClickHouse server of a test's own, for outage tests.
//! - [`stack`] — the whole system (collector, dashboard-api, edge under workerd) wired
//!   together; used by the demo and the soak.
//! - [`soak`] — `cargo xtask soak`: the stack under load while a fault injector restarts its
//!   pieces, then a reconciliation of what clients saw with what was stored.
//!
//! - [`bench_support`] — what the `bench-*` programs share.
//!
//! The tests themselves are in `tests/tests/`.

// A test harness: a process that does not start must fail the test at once, loudly.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

pub mod bench_support;
pub mod harness;
pub mod mock_provider;
pub mod private_clickhouse;
pub mod soak;
pub mod stack;
