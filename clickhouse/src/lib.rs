//! Tollgate's database as code: the ClickHouse schema, how it is applied, read and written.
//!
//! - [`Migration`] and [`Migrator`] — the numbered files in `clickhouse/migrations/`, applied in
//!   order with a checksum per file, under a lock, single-node or `ON CLUSTER`
//!   ([`migrate`] module docs say how two runners stay out of each other's way).
//! - [`ClickHouseConfig`] — where the server is; builds the [`clickhouse::Client`] every crate
//!   uses (validation off and `wait_end_of_query=1` on reads, as 18.16 needs).
//! - [`UsageEventRow`] — a `usage_events` row, converted from and to `usage_core::UsageRecord`.
//! - [`queries`] — the dashboard's named queries (`clickhouse/queries/*.sql`) with their row
//!   types, the [`Scope`] predicate and the [`Filter`] (scope plus provider and model).
//! - The admin tables' rows and writes: [`alerts`] (rules, alerts, notification deliveries),
//!   [`budgets`], [`credits`], [`reconciliation`]; [`row_version`] versions every one of them.
//! - [`retention`] — dropping old monthly partitions.
//! - [`integrity`] — keeping the rollups equal to the raw rows, and every event stored once.
//! - [`synthetic`] — deterministic usage records for tests, the compat check and benchmarks.
//! - [`dev_server`] — the private dev/test server (`clickhouse/dev/`), and [`testing`] — a fresh
//!   migrated database per test.
//!
//! The SQL is the source of truth and lives in `.sql` files next to this crate; Rust only binds
//! values. docs/CLICKHOUSE.md lists the portable subset every file keeps to:
//! everything here runs on ClickHouse 18.16 and on 26.x.

pub mod alerts;
pub mod analyst_roles;
pub mod budgets;
mod config;
pub mod credits;
pub mod dev_cluster;
pub mod dev_server;
pub mod encoded;
mod error;
mod events;
pub mod integrity;
pub mod migrate;
pub mod prices;
pub mod queries;
pub mod reconciliation;
pub mod reprice;
pub mod retention;
pub mod synthetic;
pub mod testing;
mod version;

pub use config::{keys_database, read_query, ClickHouseConfig, DEFAULT_URL};
pub use encoded::{insert_encoded, EncodedEvent};
pub use error::{Error, Result};
pub use events::{insert_events, RecordConversionError, UsageEventRow};
pub use migrate::{Migration, MigrationEvent, MigrationReport, Migrator, ServerVersion};
pub use queries::{Filter, Scope};
pub use version::{now_second, row_version};

/// The client crate, re-exported so users build queries with the same version.
pub use clickhouse;
