//! Prometheus metrics (`GET /metrics`): requests by route and status, and their latency; what
//! the integrity job repaired (alert on `tollgate_dashboard_integrity_repairs_total`).

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::AppState;

type Labels = Vec<(&'static str, String)>;

/// The service's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    requests: Family<Labels, Counter>,
    latency: Family<Labels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 14))
            }),
        }
    }
}

impl Metrics {
    /// The service's metrics and `jobs`' (what the integrity pass repaired), in the text format.
    pub fn render(&self, jobs: &tollgate_jobs::JobMetrics) -> String {
        let mut r = Registry::with_prefix("tollgate_dashboard");
        r.register(
            "http_requests",
            "HTTP requests by route and status",
            self.requests.clone(),
        );
        r.register(
            "http_request_seconds",
            "HTTP request latency by route",
            self.latency.clone(),
        );
        jobs.register(&mut r);
        let mut out = String::new();
        let _ = encode(&mut out, &r);
        out
    }
}

/// Middleware: counts and times every request under its route pattern (never the raw path,
/// which would let clients create unbounded label values).
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = Instant::now();
    let resp = next.run(req).await;
    let m = state.metrics();
    m.requests
        .get_or_create(&vec![
            ("route", route.clone()),
            ("status", resp.status().as_u16().to_string()),
        ])
        .inc();
    m.latency
        .get_or_create(&vec![("route", route)])
        .observe(started.elapsed().as_secs_f64());
    resp
}

pub async fn endpoint(State(state): State<AppState>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics().render(state.jobs().metrics()),
    )
        .into_response()
}
