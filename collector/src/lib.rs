//! Tollgate's collector: signed batches of usage records in, exactly-once bulk inserts into
//! ClickHouse out.
//!
//! - [`ingest`] — `POST /v1/records`: verify, decode, validate, append to the spool, `202`.
//! - [`spool`] — the write-ahead log that makes a `202` durable (its guarantees are in its docs).
//! - [`sink`] — spool → ClickHouse in batches, exactly once across crashes.
//! - [`store`] — the ClickHouse side of the sink.
//! - [`otlp`] — stored records out as OpenTelemetry spans (optional, never in ingest's way).
//! - [`config`] — typed configuration; [`metrics`] — Prometheus metrics.
//!
//! [`app`] builds the HTTP router (tested without a socket); [`serve`] runs everything.
//!
//! Routes (outermost layer first: the body limit, then the handler):
//! `POST /v1/records`, `GET /healthz` (the process answers), `GET /readyz` (spool healthy and
//! below its high-water mark, ClickHouse reachable), `GET /metrics`.

pub mod config;
pub mod ingest;
pub mod metrics;
pub mod otlp;
pub mod sink;
pub mod spool;
pub mod store;
#[doc(hidden)]
pub mod testdata;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::ingest::Reject;
use crate::metrics::Metrics;
use crate::sink::{Sink, Store, StoreHealth};
use crate::spool::Spool;

/// Shared state of the HTTP handlers.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    secrets: Vec<Vec<u8>>,
    spool: Spool,
    metrics: Metrics,
    health: Arc<StoreHealth>,
    rejects: mpsc::Sender<Vec<Reject>>,
}

impl AppState {
    pub fn new(
        config: Config,
        spool: Spool,
        metrics: Metrics,
        health: Arc<StoreHealth>,
        rejects: mpsc::Sender<Vec<Reject>>,
    ) -> Self {
        let secrets = config
            .ingest
            .signing_secrets
            .iter()
            .map(|s| s.expose().as_bytes().to_vec())
            .collect();
        AppState {
            inner: Arc::new(Inner {
                config,
                secrets,
                spool,
                metrics,
                health,
                rejects,
            }),
        }
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn spool(&self) -> &Spool {
        &self.inner.spool
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    fn secrets(&self) -> &[Vec<u8>] {
        &self.inner.secrets
    }

    /// Hands rejects to the dead-letter writer without waiting; if it is backed up they are
    /// dropped (and counted in the log): the accept path never stalls on diagnostics.
    fn send_rejects(&self, rejects: Vec<Reject>) {
        if let Err(e) = self.inner.rejects.try_send(rejects) {
            tracing::warn!(error = %e, "dead-letter queue full; rejects not stored");
        }
    }
}

/// The collector's HTTP routes.
pub fn app(state: AppState) -> Router {
    let body_limit = usize::try_from(state.config().ingest.max_body_bytes).unwrap_or(usize::MAX);
    Router::new()
        .route("/v1/records", post(ingest::post_records))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

async fn readyz(State(state): State<AppState>) -> Response {
    let spool = state.spool();
    let failure = spool.failure();
    let store_up = state.inner.health.is_up();
    let over = spool.over_high_water();
    let ready = failure.is_none() && store_up && !over;
    let body = json!({
        "ready": ready,
        "spool": {
            "unsent_bytes": spool.unsent_bytes(),
            "high_water_bytes": spool.high_water_bytes(),
            "failed": failure,
        },
        "clickhouse": if store_up { "ok".to_string() } else {
            format!("unreachable: {}", state.inner.health.last_error().unwrap_or_default())
        },
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let m = state.metrics();
    let spool = state.spool();
    m.spool_unsent_bytes
        .set(i64::try_from(spool.unsent_bytes()).unwrap_or(i64::MAX));
    m.spool_oldest_unsent_seconds
        .set(spool.oldest_unsent_age().as_secs_f64());
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        m.render(),
    )
        .into_response()
}

/// Runs the collector until SIGTERM/Ctrl-C (see [`run`]).
pub async fn serve<S: Store>(
    config: Config,
    store: Arc<S>,
) -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind(&config.listen).await?;
    run(config, store, listener, service_kit::shutdown_signal()).await
}

/// Runs the collector on `listener` until `shutdown` resolves: opens (recovering) the spool,
/// starts the sink and the dead-letter writer, serves HTTP; then stops accepting, drains what
/// it can within 10 s, and returns. What is not drained stays in the spool for the next start.
pub async fn run<S: Store>(
    config: Config,
    store: Arc<S>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error>> {
    let (spool, recovery) = tokio::task::spawn_blocking({
        let cfg = config.spool_config();
        move || Spool::open(cfg)
    })
    .await??;
    tracing::info!(
        dir = %config.spool.dir.display(),
        segments = recovery.segments,
        unsent_entries = recovery.unsent_entries,
        torn_bytes_truncated = recovery.torn_bytes_truncated,
        corrupt_bytes_moved = recovery.corrupt_bytes_moved,
        pending_batch = recovery.pending.as_ref().map(|p| p.batch_id.as_str()),
        "spool opened"
    );
    let metrics = Metrics::default();
    let health = Arc::new(StoreHealth::default());
    if let Err(e) = store.ping().await {
        health.set_down(&e.to_string());
        tracing::warn!(error = %e, "ClickHouse is not reachable yet; accepting into the spool meanwhile");
    }
    let (reject_tx, reject_rx) = mpsc::channel(1024);
    let (stop_tx, stop_rx) = watch::channel(false);

    let sink = Sink::new(
        spool.clone(),
        store.clone(),
        config.sink.clone(),
        metrics.clone(),
        health.clone(),
    )
    .with_exporter(crate::otlp::Exporter::start(&config.otlp, metrics.clone()));
    let sink_task = tokio::spawn(sink.run(stop_rx, Duration::from_secs(10)));
    let rejects_task = tokio::spawn(sink::run_reject_writer(store.clone(), reject_rx));
    let pinger = tokio::spawn(ping_loop(store.clone(), health.clone()));

    let state = AppState::new(config.clone(), spool.clone(), metrics, health, reject_tx);
    tracing::info!(listen = %listener.local_addr()?, "collector listening");
    let mut sink_task = sink_task;
    let server = service_kit::serve::serve(listener, app(state), shutdown);
    tokio::select! {
        served = server => served?,
        // The sink never ends on its own: if it does, nothing accepted would reach ClickHouse.
        // Exit so the supervisor restarts the collector (the spool keeps every record).
        ended = &mut sink_task => {
            pinger.abort();
            rejects_task.abort();
            tracing::error!(result = ?ended, "the sink stopped unexpectedly; exiting so that the collector is restarted");
            return Err("the sink stopped unexpectedly".into());
        }
    }

    tracing::info!("no longer accepting; flushing the spool to ClickHouse");
    let _ = stop_tx.send(true);
    pinger.abort();
    match sink_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "sink stopped with an error"),
        Err(e) => tracing::error!(error = %e, "sink task failed"),
    }
    rejects_task.abort();
    tracing::info!(unsent_bytes = spool.unsent_bytes(), "collector stopped");
    Ok(())
}

/// Keeps `/readyz` honest while the sink is idle.
async fn ping_loop<S: Store>(store: Arc<S>, health: Arc<StoreHealth>) {
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        match store.ping().await {
            Ok(()) => health.set_up(),
            Err(e) => health.set_down(&e.to_string()),
        }
    }
}
