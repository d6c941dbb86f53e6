//! `tollgate-jobs`: the timed jobs without the HTTP API — alert evaluation and notifications,
//! credit polls, reconciliation, the integrity pass — so the API can scale out on its own
//! (set `run_jobs = false` in `dashboard-api`'s file then). Serves `GET /healthz` and
//! `GET /metrics` on `listen`. Any number may run: one holds the lease and does the work.
//! `tollgate-jobs retention [--dry-run]` applies (or only prints) the retention policy once;
//! `tollgate-jobs reprice --from T --to T [--provider P] [--model M]` recomputes stored costs
//! with the price book in force (as `POST /api/v1/admin/reprice` does).
//!
//! Configuration: `--config jobs.toml` and `TOLLGATE_*` variables (docs/CONFIGURATION.md,
//! "tollgate-jobs"); the job sections read as in `dashboard-api`'s file.

use chrono::{DateTime, Utc};
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
    /// Reprice the calls of a time range with the price book in force (the built-in prices
    /// and the admins' entries): raw rows get the new cost and `pricing_version`, and every
    /// rollup bucket they fall in is rebuilt. Running it twice changes nothing.
    Reprice {
        /// Start of the range, RFC 3339 (inclusive).
        #[arg(long, value_parser = rfc3339)]
        from: DateTime<Utc>,
        /// End of the range, RFC 3339 (exclusive).
        #[arg(long, value_parser = rfc3339)]
        to: DateTime<Utc>,
        /// Only this provider's calls.
        #[arg(long)]
        provider: Option<String>,
        /// Only calls that asked for this model.
        #[arg(long)]
        model: Option<String>,
    },
}

fn rfc3339(s: &str) -> Result<DateTime<Utc>, String> {
    usage_core::rfc3339::parse(s)
        .ok_or_else(|| format!("`{s}` is not an RFC 3339 time (2026-12-01T00:00:00Z)"))
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
        Some(Command::Reprice {
            from,
            to,
            provider,
            model,
        }) => service_kit::run_service("tollgate-jobs", cli.config.as_deref(), move |file| {
            reprice(file, from, to, provider, model)
        }),
    }
}

async fn reprice(
    file: JobsFile,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    provider: Option<String>,
    model: Option<String>,
) -> Result<(), service_kit::BoxError> {
    let ctx = context(&file);
    let builtin = usage_core::PriceFile::builtin()?;
    let (_, table) = tollgate_clickhouse::prices::price_book(ctx.client(), &builtin).await?;
    tollgate_clickhouse::prices::record_version(ctx.client(), &table).await?;
    let req = tollgate_clickhouse::reprice::RepriceRequest {
        from,
        to,
        provider,
        model,
        requested_by: "tollgate-jobs reprice".into(),
    };
    let r = tollgate_clickhouse::reprice::reprice(ctx.client(), &table, &req).await?;
    let usd = |n: i128| usage_core::Nanos::new(i64::try_from(n).unwrap_or(i64::MAX));
    println!(
        "reprice {}: {} rows seen, {} changed ({} newly priced), ${} → ${}, {} rollup buckets rebuilt ({} still different), price book {}",
        r.run_id,
        r.rows_seen,
        r.rows_changed,
        r.rows_newly_priced,
        usd(r.cost_before_nusd),
        usd(r.cost_after_nusd),
        r.buckets_rebuilt,
        r.buckets_still_different,
        r.pricing_version
    );
    Ok(())
}

fn context(file: &JobsFile) -> Context {
    let mut ch = tollgate_clickhouse::ClickHouseConfig::new(
        file.clickhouse.url.clone(),
        file.clickhouse.database.clone(),
    );
    ch.user = file.clickhouse.user();
    ch.password = file.clickhouse.password();
    ch.analyst_roles = file.clickhouse.analyst_roles;
    Context::new(&ch, file.jobs())
}

async fn retention(file: JobsFile, dry_run: bool) -> Result<(), service_kit::BoxError> {
    let ctx = context(&file);
    let now = Utc::now();
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
