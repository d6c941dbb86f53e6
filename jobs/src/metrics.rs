//! The jobs' Prometheus metrics: what the integrity pass did (alert on
//! `tollgate_dashboard_integrity_repairs_total` and on the age of
//! `…_integrity_last_pass_timestamp_seconds`). Registered into the host's registry by
//! [`JobMetrics::register`]: `dashboard-api` serves them on its `/metrics`, `tollgate-jobs` on
//! its own.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub type Labels = Vec<(&'static str, String)>;

/// Counters the jobs keep.
#[derive(Debug, Clone, Default)]
pub struct JobMetrics {
    /// Integrity repairs by kind (`rollup`, `rollup_still_different`, `duplicate_event`).
    pub integrity_repairs: Family<Labels, Counter>,
    /// Integrity passes by outcome (`ok`, `failed`).
    pub integrity_passes: Family<Labels, Counter>,
    /// Unix time of the last integrity pass that finished.
    pub integrity_last_pass: Gauge,
    /// Monthly partitions the retention job dropped, by table.
    pub retention_dropped: Family<Labels, Counter>,
}

impl JobMetrics {
    /// Adds the jobs' metrics to `registry` (whose prefix names the service).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "integrity_repairs",
            "Repairs the integrity job made, by kind (rollup, rollup_still_different, duplicate_event)",
            self.integrity_repairs.clone(),
        );
        registry.register(
            "integrity_passes",
            "Integrity job passes by outcome (ok, failed)",
            self.integrity_passes.clone(),
        );
        registry.register(
            "integrity_last_pass_timestamp_seconds",
            "Unix time of the last integrity pass that finished",
            self.integrity_last_pass.clone(),
        );
        registry.register(
            "retention_dropped_partitions",
            "Monthly partitions the retention job dropped, by table",
            self.retention_dropped.clone(),
        );
    }
}
