//! `tollgate-jobs`: the timed jobs without the HTTP API — alert evaluation and notifications,
//! credit polls, reconciliation, the integrity pass — so the API can scale out on its own
//! (set `run_jobs = false` in `dashboard-api`'s file then). Serves `GET /healthz` and
//! `GET /metrics` on `listen`. Any number may run: one holds the lease and does the work.
//! `tollgate-jobs retention [--dry-run]` applies (or only prints) the retention policy once.
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
    #[arg(long, global = true, env = "TOLLGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Without a command: run the jobs until SIGTERM.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Apply the `[retention]` policy once now and print what was dropped (`--dry-run`: only
    /// print what would be).
    Retention {
        #[arg(long)]
        dry_run: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => service_kit::run_service("tollgate-jobs", cli.config.as_deref(), run),
        Some(Command::Retention { dry_run }) => {
            service_kit::run_service("tollgate-jobs", cli.config.as_deref(), move |file| {
                retention(file, dry_run)
            })
        }
    }
}

fn context(file: &JobsFile) -> Context {
    let mut ch = tollgate_clickhouse::ClickHouseConfig::new(
        file.clickhouse.url.clone(),
        file.clickhouse.database.clone(),
    );
    ch.user = file.clickhouse.user();
    ch.password = file.clickhouse.password();
    Context::new(ch.client(), file.jobs())
}

async fn retention(file: JobsFile, dry_run: bool) -> Result<(), service_kit::BoxError> {
    let ctx = context(&file);
    let now = time::OffsetDateTime::now_utc();
    let partitions = if dry_run {
        tollgate_jobs::retention::plan(&ctx, now).await?
    } else {
        tollgate_jobs::retention::retention_once(&ctx, now).await?
    };
    let verb = if dry_run { "would drop" } else { "dropped" };
    for p in &partitions {
        println!("{verb} {} partition {}", p.table, p.partition);
    }
    println!("retention: {verb} {} partition(s)", partitions.len());
    Ok(())
}

async fn run(file: JobsFile) -> Result<(), service_kit::BoxError> {
    let listener = tokio::net::TcpListener::bind(&file.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, "tollgate-jobs: health and metrics");
    let ctx = context(&file);
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
