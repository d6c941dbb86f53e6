//! Prometheus metrics of the collector, served at `GET /metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Every metric the collector exports. Cheap to clone (all handles are shared).
#[derive(Clone, Debug)]
pub struct Metrics {
    pub requests: Family<Labels, Counter>,
    pub records_accepted: Counter,
    pub records_rejected: Counter,
    pub records_duplicate: Counter,
    /// Accepted records of calls the edge let through with a budget unchecked (its guard,
    /// budget list or recorded spend could not be had): tag `tollgate.budget_fail_open`.
    pub records_budget_fail_open: Counter,
    pub spool_unsent_bytes: Gauge,
    pub spool_oldest_unsent_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub insert_batches: Counter,
    pub insert_rows: Counter,
    /// Rows a batch carried that ClickHouse already held (a re-post that reached this sink
    /// after its first copy was stored, here or by another collector), so not inserted again.
    pub insert_rows_already_stored: Counter,
    pub insert_failures: Family<Labels, Counter>,
    pub insert_seconds: Histogram,
    pub accept_seconds: Histogram,
    /// Spans the OTLP receiver accepted (`crate::otlp`).
    pub otlp_spans_exported: Counter,
    /// Stored records left out of the OTLP export, by reason (`queue_full`, `gave_up`,
    /// `refused`).
    pub otlp_records_dropped: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            records_accepted: Counter::default(),
            records_rejected: Counter::default(),
            records_duplicate: Counter::default(),
            records_budget_fail_open: Counter::default(),
            spool_unsent_bytes: Gauge::default(),
            spool_oldest_unsent_seconds: Gauge::default(),
            insert_batches: Counter::default(),
            insert_rows: Counter::default(),
            insert_rows_already_stored: Counter::default(),
            insert_failures: Family::default(),
            insert_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            accept_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 18)),
            otlp_spans_exported: Counter::default(),
            otlp_records_dropped: Family::default(),
        }
    }
}

impl Metrics {
    fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("tollgate_collector");
        r.register(
            "requests",
            "Ingest requests by response status",
            self.requests.clone(),
        );
        r.register(
            "records_accepted",
            "Records durably accepted",
            self.records_accepted.clone(),
        );
        r.register(
            "records_rejected",
            "Records rejected (sent to usage_rejects)",
            self.records_rejected.clone(),
        );
        r.register(
            "records_duplicate",
            "Records dropped as duplicates of an accepted event_id",
            self.records_duplicate.clone(),
        );
        r.register(
            "records_budget_fail_open",
            "Accepted records of calls the edge let through with a budget it could not check",
            self.records_budget_fail_open.clone(),
        );
        r.register(
            "spool_unsent_bytes",
            "Spool bytes not yet committed to ClickHouse",
            self.spool_unsent_bytes.clone(),
        );
        r.register(
            "spool_oldest_unsent_seconds",
            "Age of the oldest record not yet committed to ClickHouse",
            self.spool_oldest_unsent_seconds.clone(),
        );
        r.register(
            "insert_batches",
            "Batches committed to ClickHouse",
            self.insert_batches.clone(),
        );
        r.register(
            "insert_rows",
            "Rows committed to ClickHouse",
            self.insert_rows.clone(),
        );
        r.register(
            "insert_rows_already_stored",
            "Rows skipped at insert because ClickHouse already held their event_id",
            self.insert_rows_already_stored.clone(),
        );
        r.register(
            "insert_failures",
            "Failed insert attempts by kind",
            self.insert_failures.clone(),
        );
        r.register(
            "insert_seconds",
            "Duration of a batch insert into ClickHouse",
            self.insert_seconds.clone(),
        );
        r.register(
            "accept_seconds",
            "Accept-path latency: body read to durable acknowledgement",
            self.accept_seconds.clone(),
        );
        r.register(
            "otlp_spans_exported",
            "Stored records the OTLP receiver accepted as spans",
            self.otlp_spans_exported.clone(),
        );
        r.register(
            "otlp_records_dropped",
            "Stored records left out of the OTLP export, by reason",
            self.otlp_records_dropped.clone(),
        );
        r
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry());
        out
    }

    pub fn count_request(&self, status: u16) {
        self.requests
            .get_or_create(&vec![("status", status.to_string())])
            .inc();
    }

    pub fn count_otlp_dropped(&self, reason: &'static str, n: u64) {
        self.otlp_records_dropped
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc_by(n);
    }

    pub fn count_insert_failure(&self, kind: &'static str) {
        self.insert_failures
            .get_or_create(&vec![("kind", kind.to_string())])
            .inc();
    }
}
