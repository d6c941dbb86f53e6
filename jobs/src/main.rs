//! `tollgate-jobs`: the timed jobs without the HTTP API — alert evaluation and notifications,
//! credit polls, reconciliation, the integrity pass — so the API can scale out on its own
//! (set `run_jobs = false` in `dashboard-api`'s file then). Serves `GET /healthz` and
//! `GET /metrics` on `listen`. Any number may run: one holds the lease and does the work.
//!
//! Configuration: `--config jobs.toml` and `TOLLGATE_*` variables (docs/CONFIGURATION.md,
//! "tollgate-jobs"); the job sections read as in `dashboard-api`'s file.

use std::path::PathBuf;
use std::process::ExitCode;

use axum::routing::get;
use axum::Router;
use clap::Parser;
use prometheus_client::registry::Registry;
use tollgate_jobs::config::JobsFile;
use tollgate_jobs::Context;

#[derive(Parser)]
#[command(
    name = "tollgate-jobs",
    about = "Tollgate's timed jobs: alerts, credit polls, reconciliation, integrity"
)]
struct Cli {
    /// TOML config file (every key optional; TOLLGATE_* variables override it).
    #[arg(long, env = "TOLLGATE_CONFIG")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    service_kit::run_service("tollgate-jobs", cli.config.as_deref(), run)
}

async fn run(file: JobsFile) -> Result<(), Box<dyn std::error::Error>> {
    let mut ch = tollgate_clickhouse::ClickHouseConfig::new(
        file.clickhouse.url.clone(),
        file.clickhouse.database.clone(),
    );
    ch.user = file.clickhouse.user();
    ch.password = file.clickhouse.password();
    let listener = tokio::net::TcpListener::bind(&file.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, "tollgate-jobs: health and metrics");
    let ctx = Context::new(ch.client(), file.jobs());
    let metrics = ctx.metrics().clone();
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    let mut registry = Registry::with_prefix("tollgate_jobs");
                    metrics.register(&mut registry);
                    let mut out = String::new();
                    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
                    out
                }
            }),
        );
    let jobs = tollgate_jobs::spawn(ctx);
    let served = service_kit::serve::serve(listener, app, service_kit::shutdown_signal()).await;
    jobs.shutdown().await;
    served?;
    Ok(())
}
