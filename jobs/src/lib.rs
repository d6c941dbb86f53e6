//! Tollgate's timed work, run by one instance of several under a lease: alert evaluation and
//! the notifications it sends, provider credit polls, bill reconciliation, the integrity pass
//! that keeps the rollups equal to the raw rows, and retention.
//!
//! - [`runner`] — the loops ([`spawn`] / [`BackgroundJobs::shutdown`]) and the [`lease`] that
//!   lets one instance run them. `dashboard-api serve` starts them unless told not to; the
//!   `tollgate-jobs` binary runs them alone, so the API can scale out without them.
//! - [`evaluator`] — alert rules into alerts, once per condition; [`rules`] — each rule kind's
//!   parameters, defined once for the API that writes rules and the evaluator that reads them.
//! - [`notify`] — webhook and Slack deliveries, retried and logged; [`outbound`] — the one
//!   HTTP client for everything that leaves the deployment (private targets refused).
//! - [`pollers`] — provider balances; [`reconcile`] — Tollgate's recorded cost against the
//!   provider's bill, per day; [`integrity`] — the rollups and the raw rows kept equal;
//!   [`retention`] — old monthly partitions dropped by policy.
//! - [`Context`] — what every job reads: the ClickHouse client, [`JobsConfig`], [`JobMetrics`].
//!
//! This crate never imports the HTTP service; the service imports it (for the rule kinds, the
//! test send and to start the loops). Tables' rows and SQL live in `tollgate-clickhouse`.

pub mod config;
pub mod default_rules;
pub mod error;
pub mod evaluator;
pub mod integrity;
pub mod lease;
pub mod metrics;
pub mod notify;
pub mod outbound;
pub mod pollers;
pub mod reconcile;
pub mod retention;
pub mod rules;
pub mod runner;

use std::sync::Arc;

use tollgate_clickhouse::clickhouse::Client;

pub use config::JobsConfig;
pub use error::{JobError, JobResult};
pub use metrics::JobMetrics;
pub use runner::{spawn, BackgroundJobs};

/// What the jobs share: the database, their configuration, their metrics. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Context {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    clickhouse: tollgate_clickhouse::ClickHouseConfig,
    client: Client,
    keys_client: Client,
    config: JobsConfig,
    metrics: JobMetrics,
}

impl Context {
    /// The jobs on the database `ch` names (and its key and token database).
    pub fn new(ch: &tollgate_clickhouse::ClickHouseConfig, config: JobsConfig) -> Context {
        Context {
            inner: Arc::new(Inner {
                clickhouse: ch.clone(),
                client: ch.client(),
                keys_client: ch.keys_client(),
                config,
                metrics: JobMetrics::default(),
            }),
        }
    }

    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Where the database is (for what needs more than a client: the analyst roles).
    pub fn clickhouse(&self) -> &tollgate_clickhouse::ClickHouseConfig {
        &self.inner.clickhouse
    }

    /// The key and token database (`api_tokens`, `app_keys`; migration 0015).
    pub fn keys_client(&self) -> &Client {
        &self.inner.keys_client
    }

    pub fn config(&self) -> &JobsConfig {
        &self.inner.config
    }

    pub fn metrics(&self) -> &JobMetrics {
        &self.inner.metrics
    }
}
