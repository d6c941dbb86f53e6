//! `cargo xtask bench rollups` runs this: synthetic raw events into a fresh database (RowBinary,
//! 100k-row INSERTs, both rollup views attached), then the dashboard's daily overview read from
//! the rollup and the same answer computed from the raw table, at each size (default 1M and
//! 10M raw rows over the same 30 days), median of 5. Writes JSON and a Markdown section.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark harness: failing loudly is the point

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use clap::Parser;
use serde_json::json;
use tollgate_clickhouse::queries::{self, Scope};
use tollgate_clickhouse::synthetic::{Shape, Synthetic};
use tollgate_clickhouse::{insert_events, read_query, ClickHouseConfig, Migrator, UsageEventRow};
use usage_core::{utc, ymd};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, env = "TOLLGATE_CLICKHOUSE_URL", default_value = tollgate_clickhouse::DEFAULT_URL)]
    url: String,
    /// A scratch database, dropped and recreated.
    #[arg(long, default_value = "tollgate_bench")]
    database: String,
    /// Raw row counts to measure at (cumulative, ascending).
    #[arg(long, value_delimiter = ',', default_value = "1000000,10000000")]
    sizes: Vec<u64>,
    #[arg(long, default_value_t = 5)]
    runs: usize,
    #[arg(long, default_value_t = 100_000)]
    batch: usize,
    #[arg(long, default_value = "target/bench/rollups.json")]
    out: String,
    #[arg(long, default_value = "target/bench/rollups.md")]
    markdown: String,
    /// Keep the database afterwards (to poke at it).
    #[arg(long)]
    keep: bool,
}

fn shape() -> Shape {
    Shape {
        orgs: 20,
        users_per_org: 60,
        apps_per_org: 4,
        start: utc(2026, 1, 1, 0, 0, 0),
        span: TimeDelta::days(30),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 100.0).round() / 100.0
}

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map(|kib| (kib / 1024.0 / 1024.0 * 10.0).round() / 10.0)
        .unwrap_or(0.0);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    json!({ "cpu": cpu, "cores": cores, "memory_gib": mem_gib })
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let config = ClickHouseConfig::new(args.url.clone(), args.database.clone());
    let server = config.server_client();
    server
        .query(&format!("DROP DATABASE IF EXISTS {}", args.database))
        .execute()
        .await
        .unwrap();
    Migrator::new(config.clone())
        .unwrap()
        .run(&mut |_| {})
        .await
        .unwrap();
    let client = config.client();
    let version: String = read_query(&server, "SELECT version()")
        .fetch_one()
        .await
        .unwrap();

    let (from, to) = (ymd(2026, 1, 1), ymd(2026, 1, 31));
    let scopes = [
        ("all orgs (admin)", Scope::AllOrgs),
        (
            "one org",
            Scope::Org {
                org_id: "org_000".into(),
            },
        ),
    ];

    let mut inserted = 0u64;
    let mut stages = Vec::new();
    for (stage, &size) in args.sizes.iter().enumerate() {
        let count = size.saturating_sub(inserted);
        // Each stage adds rows over the same 30 days: 10M is 10x denser than 1M, not longer.
        let mut gen = Synthetic::new(1000 + stage as u64, count, shape());
        let started = Instant::now();
        let mut batch = Vec::with_capacity(args.batch);
        loop {
            batch.clear();
            batch.extend(
                gen.by_ref()
                    .take(args.batch)
                    .map(|r| UsageEventRow::from(&r)),
            );
            if batch.is_empty() {
                break;
            }
            insert_events(&client, &batch).await.unwrap();
            inserted += batch.len() as u64;
            if inserted.is_multiple_of(1_000_000) {
                eprintln!(
                    "  {inserted} rows, {:.0} rows/s",
                    count_rate(inserted - (size - count), started.elapsed())
                );
            }
        }
        let insert_secs = started.elapsed().as_secs_f64();
        let counts = |table: &'static str| {
            let client = client.clone();
            async move {
                read_query(&client, &format!("SELECT count() FROM {table}"))
                    .fetch_one::<u64>()
                    .await
                    .unwrap()
            }
        };
        let (raw_rows, org_rows, daily_rows, hourly_rows) = (
            counts("usage_events").await,
            counts("org_daily").await,
            counts("usage_daily").await,
            counts("usage_hourly").await,
        );
        eprintln!("stage {size}: raw {raw_rows}, org_daily {org_rows}, usage_daily {daily_rows} rows, usage_hourly {hourly_rows} rows");

        // Time the tables at rest: let the background merges of the fresh parts finish first.
        let settled =
            tollgate_clickhouse::testing::wait_for_merges(&server, Duration::from_secs(120))
                .await
                .unwrap();
        eprintln!("  merges settled after {:.1} s", settled.as_secs_f64());

        let mut measured = Vec::new();
        for (label, scope) in &scopes {
            // Same answer first, then time.
            let rollup = queries::daily_overview(&client, scope, from, to)
                .await
                .unwrap();
            let raw = queries::daily_overview_raw(&client, scope, from, to)
                .await
                .unwrap();
            assert_eq!(rollup, raw, "rollup and raw answers differ for {label}");
            assert_eq!(rollup.len(), 30);
            let mut rollup_runs = Vec::new();
            let mut raw_runs = Vec::new();
            for _ in 0..args.runs {
                let t = Instant::now();
                queries::daily_overview(&client, scope, from, to)
                    .await
                    .unwrap();
                rollup_runs.push(ms(t.elapsed()));
                let t = Instant::now();
                queries::daily_overview_raw(&client, scope, from, to)
                    .await
                    .unwrap();
                raw_runs.push(ms(t.elapsed()));
            }
            let (r, w) = (median(rollup_runs.clone()), median(raw_runs.clone()));
            eprintln!(
                "  daily overview, {label}: rollup {r} ms, raw {w} ms ({:.1}x)",
                w / r
            );
            measured.push(json!({
                "query": "daily_overview",
                "scope": label,
                "days": 30,
                "rollup_ms_median": r,
                "raw_ms_median": w,
                "speedup": (w / r * 10.0).round() / 10.0,
                "rollup_ms_runs": rollup_runs,
                "raw_ms_runs": raw_runs,
            }));
        }
        stages.push(json!({
            "raw_rows": raw_rows,
            "org_daily_rows": org_rows,
            "usage_daily_rows": daily_rows,
            "usage_hourly_rows": hourly_rows,
            "insert_rows_per_sec": (count as f64 / insert_secs).round() as u64,
            "queries": measured,
        }));
    }

    let report = json!({
        "benchmark": "rollups",
        "command": "cargo xtask bench rollups",
        "clickhouse_version": version,
        "machine": machine(),
        "data": {
            "shape": "20 orgs x 60 users x 4 apps, 3 providers, 8 models, 4 task types; users skewed (a few heavy), each on one app",
            "time_range": "2026-01-01 .. 2026-01-31 (30 UTC days); each size covers the same 30 days",
            "insert": format!("RowBinary, {}-row INSERTs, every rollup view attached (usage_hourly, usage_daily, org_model_daily, org_daily); timed after background merges settle", args.batch),
        },
        "runs_per_query": args.runs,
        "stages": stages,
    });
    if let Some(dir) = std::path::Path::new(&args.out).parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    std::fs::write(&args.markdown, markdown(&report)).unwrap();
    eprintln!("wrote {} and {}", args.out, args.markdown);

    if !args.keep {
        server
            .query(&format!("DROP DATABASE IF EXISTS {}", args.database))
            .execute()
            .await
            .unwrap();
    }
}

fn count_rate(rows: u64, elapsed: Duration) -> f64 {
    rows as f64 / elapsed.as_secs_f64().max(1e-9)
}

fn markdown(report: &serde_json::Value) -> String {
    let m = &report["machine"];
    let mut s = String::new();
    writeln!(s, "## Rollups vs raw: the dashboard's daily overview").unwrap();
    writeln!(s).unwrap();
    writeln!(
        s,
        "Command: `cargo xtask bench rollups` (figures: `target/bench/rollups.json`)."
    )
    .unwrap();
    writeln!(
        s,
        "Machine: {} cores ({}), {} GiB RAM; ClickHouse {} (the dev server, client and server sharing the cores).",
        m["cores"], m["cpu"].as_str().unwrap_or(""), m["memory_gib"], report["clickhouse_version"].as_str().unwrap_or("")
    )
    .unwrap();
    writeln!(
        s,
        "Data: {}; {}; {}.",
        report["data"]["shape"].as_str().unwrap_or(""),
        report["data"]["time_range"].as_str().unwrap_or(""),
        report["data"]["insert"].as_str().unwrap_or("")
    )
    .unwrap();
    writeln!(
        s,
        "Query: `clickhouse/queries/daily_overview.sql` (for these scopes from `org_daily`, the rollup the \
         dashboard reads for an org or all orgs) vs `daily_overview_raw.sql` (the same answer from \
         `usage_events`, checked equal before timing), 30 days; wall time at the client, median of {}.",
        report["runs_per_query"]
    )
    .unwrap();
    writeln!(s).unwrap();
    writeln!(
        s,
        "| raw rows | org_daily rows | usage_daily rows | usage_hourly rows | scope | rollup (ms) | raw (ms) | speed-up | insert rows/s |"
    )
    .unwrap();
    writeln!(s, "|---:|---:|---:|---:|---|---:|---:|---:|---:|").unwrap();
    for stage in report["stages"].as_array().into_iter().flatten() {
        for q in stage["queries"].as_array().into_iter().flatten() {
            writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {}× | {} |",
                stage["raw_rows"],
                stage["org_daily_rows"],
                stage["usage_daily_rows"],
                stage["usage_hourly_rows"],
                q["scope"].as_str().unwrap_or(""),
                q["rollup_ms_median"],
                q["raw_ms_median"],
                q["speedup"],
                stage["insert_rows_per_sec"]
            )
            .unwrap();
        }
    }
    writeln!(s).unwrap();
    writeln!(
        s,
        "Reading it: `org_daily` has one row per org and day, so the rollup answer reads 30 rows \
         per org whatever the call volume: its time is the same at 1M and 10M raw rows (it is \
         mostly the HTTP round trip), while the raw answer grows with the rows. An org-scoped raw \
         query is already cheap (`usage_events` is ordered by `(org_id, ts)`, so it reads only that \
         org's rows), which is why its speed-up is smaller than the all-orgs one; it grows with the \
         org's own volume. `usage_daily` and `usage_hourly` keep user, app and task type, for \
         per-user and per-app views: their size follows the distinct combinations active per \
         bucket (cardinality notes in `0002_rollups.sql`, and why the org rollups exist in \
         `0008_org_rollups.sql`). The machine's two cores are shared by the generator, the client \
         and the server (and anything else running there): read the figures as ratios."
    )
    .unwrap();
    s
}
