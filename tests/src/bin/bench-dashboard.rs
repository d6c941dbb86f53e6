//! `bench-dashboard` (run by `cargo xtask bench dashboard`): latency of the dashboard's overview
//! and daily time series for 30 days, over HTTP against dashboard-api, at 1M and at 10M raw
//! events — the rollups must keep it flat as raw volume grows.

use chrono::{Datelike, NaiveDate, TimeDelta, Utc};
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use serde_json::json;
use tollgate_clickhouse::synthetic::{Shape, Synthetic};
use tollgate_clickhouse::{ClickHouseConfig, UsageEventRow};
use tollgate_dashboard_api::auth::{create_token, Role};
use tollgate_dashboard_api::config::Config;
use tollgate_dashboard_api::{app, AppState};
use tollgate_e2e::bench_support::percentile;

#[derive(Parser)]
struct Args {
    /// Raw event counts to measure at.
    #[arg(long, value_delimiter = ',', default_value = "1000000,10000000")]
    sizes: Vec<u64>,
    /// Requests per endpoint per size.
    #[arg(long, default_value_t = 100)]
    requests: usize,
    #[arg(long, default_value = "target/bench/dashboard.json")]
    out: PathBuf,
    #[arg(long, default_value = "target/bench/dashboard.md")]
    markdown: PathBuf,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn shape() -> Shape {
    let now = Utc::now();
    Shape {
        orgs: 20,
        users_per_org: 60,
        apps_per_org: 4,
        start: now - TimeDelta::days(30),
        span: TimeDelta::days(30),
    }
}

/// Inserts `n` synthetic events (100k per INSERT) into a fresh database.
async fn populate(url: &str, db: &str, n: u64) -> Result<(ClickHouseConfig, f64), BoxError> {
    let config = ClickHouseConfig::new(url, db);
    tollgate_e2e::stack::migrate_fresh(&config).await?;
    let client = config
        .client()
        .with_compression(tollgate_clickhouse::clickhouse::Compression::Lz4);
    let started = Instant::now();
    let now = Utc::now();
    let mut batch = Vec::with_capacity(100_000);
    for r in Synthetic::new(7, n, shape()) {
        batch.push(UsageEventRow::from_record(&r, "bench", now));
        if batch.len() == 100_000 {
            tollgate_clickhouse::insert_events(&client, &batch).await?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        tollgate_clickhouse::insert_events(&client, &batch).await?;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    // Let background merges settle so that timings measure queries, not merges.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    Ok((config, rate))
}

async fn measure(base: &str, token: &str, path: &str, n: usize) -> Result<(f64, f64), BoxError> {
    let url = format!("{base}{path}");
    let token = token.to_string();
    let lat = tokio::task::spawn_blocking(move || -> Result<Vec<f64>, String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut out = Vec::with_capacity(n);
        for i in 0..n + 5 {
            let t = Instant::now();
            let mut r = agent
                .get(&url)
                .header("authorization", &format!("Bearer {token}"))
                .call()
                .map_err(|e| e.to_string())?;
            let status = r.status().as_u16();
            let _ = r.body_mut().read_to_vec().map_err(|e| e.to_string())?;
            if status != 200 {
                return Err(format!("{url}: {status}"));
            }
            if i >= 5 {
                out.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        Ok(out)
    })
    .await??;
    let mut sorted = lat;
    sorted.sort_by(f64::total_cmp);
    Ok((percentile(&sorted, 0.5), percentile(&sorted, 0.99)))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let url = tollgate_clickhouse::testing::ensure_server()?;
    let mut rows = Vec::new();
    let mut md = String::new();
    let endpoints = [
        (
            "overview, all orgs",
            "/api/v1/overview?from={from}&to={to}",
            "admin",
        ),
        (
            "overview, one org",
            "/api/v1/overview?from={from}&to={to}&org=org_003",
            "admin",
        ),
        (
            "daily series, all orgs",
            "/api/v1/usage/timeseries?from={from}&to={to}&granularity=day",
            "admin",
        ),
        (
            "daily series, one org",
            "/api/v1/usage/timeseries?from={from}&to={to}&granularity=day&org=org_003",
            "admin",
        ),
    ];
    let to = Utc::now().date_naive();
    let from = to - TimeDelta::days(30);
    let d = |x: NaiveDate| format!("{:04}-{:02}-{:02}", x.year(), x.month(), x.day());
    for &n in &args.sizes {
        let db = format!("bench_dashboard_{}m", n / 1_000_000);
        println!("bench dashboard: {n} raw events into {db} …");
        let (ch, insert_rate) = populate(&url, &db, n).await?;
        let admin = create_token(&ch.keys_client(), "bench", Role::Admin, "", "", "bench")
            .await
            .map_err(|e| format!("{e:?}"))?
            .1;
        let mut config = Config::default();
        config.clickhouse.url = url.clone();
        config.clickhouse.database = db.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app(AppState::new(config))).await;
        });
        for (name, path, _) in endpoints {
            let path = path.replace("{from}", &d(from)).replace("{to}", &d(to));
            let (p50, p99) = measure(&base, &admin, &path, args.requests).await?;
            println!("  {name:<24} p50 {p50:.2} ms  p99 {p99:.2} ms");
            rows.push(json!({"raw_events": n, "endpoint": name, "path": path, "p50_ms": p50, "p99_ms": p99, "insert_rows_per_s": insert_rate}));
            md.push_str(&format!("| {n} | {name} | {p50:.2} | {p99:.2} |\n"));
        }
        server.abort();
    }
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(
        &args.out,
        serde_json::to_string_pretty(&json!({"rows": rows, "requests": args.requests}))?,
    )?;
    let section = format!(
        "## Dashboard API: overview and daily series over HTTP\n\n\
         Command: `cargo xtask bench dashboard` (figures: `target/bench/dashboard.json`).\n\n\
         30 days of synthetic events (20 orgs × 60 users × 4 apps) at each size; dashboard-api in\n\
         process, {req} sequential requests per row after 5 warm-ups, latency to the last byte.\n\
         Target: p99 ≤ 50 ms at 10M and under 1.5× the 1M figure.\n\n\
         | raw events | endpoint | p50 ms | p99 ms |\n|---:|---|---:|---:|\n{md}",
        req = args.requests
    );
    std::fs::write(&args.markdown, section)?;
    Ok(())
}
