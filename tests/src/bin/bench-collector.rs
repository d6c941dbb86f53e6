//! `bench-collector` (run by `cargo xtask bench collector`): the collector's end-to-end
//! throughput from HTTP into ClickHouse (rollup views attached, fsync on) against the ceiling of
//! the `clickhouse` crate's own inserter writing the same rows directly — same run, same
//! server — then the accept-path latency at a steady 10k records/s in batches of 100, and the
//! collector's peak RSS.

use chrono::{TimeDelta, Utc};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;
use tollgate_clickhouse::synthetic::{Shape, Synthetic};
use tollgate_clickhouse::{ClickHouseConfig, UsageEventRow};
use tollgate_e2e::bench_support::{cpu_secs, median, percentile};
use tollgate_e2e::harness::{CollectorProc, SIGNING_SECRET};
use usage_core::wire::{self, BatchFormat};
use usage_core::UsageRecord;

#[derive(Parser)]
struct Args {
    /// Records per throughput run.
    #[arg(long, default_value_t = 500_000)]
    records: u64,
    /// Records per POST in the throughput run.
    #[arg(long, default_value_t = 5_000)]
    batch: usize,
    /// Concurrent posting connections in the throughput run.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Seconds of steady load for the latency run.
    #[arg(long, default_value_t = 15)]
    latency_secs: u64,
    /// Rounds of ceiling + collector (medians are reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Override the collector's `sink.max_rows` (to compare batch sizes; default: its default).
    #[arg(long)]
    sink_max_rows: Option<u64>,
    #[arg(long, default_value = "target/bench/collector.json")]
    out: PathBuf,
    #[arg(long, default_value = "target/bench/collector.md")]
    markdown: PathBuf,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn records(seed: u64, n: u64) -> Vec<UsageRecord> {
    let now = Utc::now();
    let shape = Shape {
        orgs: 20,
        users_per_org: 50,
        apps_per_org: 5,
        start: now - TimeDelta::hours(26),
        span: TimeDelta::hours(24),
    };
    Synthetic::new(seed, n, shape).collect()
}

async fn fresh_db(url: &str, name: &str) -> Result<ClickHouseConfig, BoxError> {
    let config = ClickHouseConfig::new(url, name);
    tollgate_e2e::stack::migrate_fresh(&config).await?;
    // The server's background merges of an earlier phase would bill this phase's CPU.
    tollgate_clickhouse::testing::wait_for_merges(&config.server_client(), Duration::from_secs(60))
        .await?;
    Ok(config)
}

async fn count(config: &ClickHouseConfig) -> Result<u64, BoxError> {
    Ok(
        tollgate_clickhouse::read_query(&config.client(), "SELECT count() FROM usage_events")
            .fetch_one::<u64>()
            .await?,
    )
}

/// The `clickhouse` crate's inserter writing the rows directly, 100k per INSERT.
async fn ceiling(config: &ClickHouseConfig, rows: &[UsageEventRow]) -> Result<f64, BoxError> {
    let client = config
        .client()
        .with_compression(tollgate_clickhouse::clickhouse::Compression::Lz4);
    let started = Instant::now();
    for chunk in rows.chunks(100_000) {
        let mut insert = client.insert::<UsageEventRow>("usage_events").await?;
        for r in chunk {
            insert.write(r).await?;
        }
        insert.end().await?;
    }
    Ok(rows.len() as f64 / started.elapsed().as_secs_f64())
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

fn post(agent: &ureq::Agent, url: &str, body: &[u8]) -> Result<u16, BoxError> {
    let sig = wire::sign(SIGNING_SECRET.as_bytes(), Utc::now().timestamp(), body);
    let resp = agent
        .post(url)
        .header(wire::SIGNATURE_HEADER, &sig)
        .header("content-type", "application/x-ndjson")
        .send(body)?;
    Ok(resp.status().as_u16())
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn clickhouse_pid() -> Option<u32> {
    let out = std::process::Command::new("pgrep")
        .args(["-o", "-f", "clickhouse-server"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .lines()
        .next()?
        .parse()
        .ok()
}

/// One throughput run's figures.
struct Run {
    ceiling_rps: f64,
    collector_rps: f64,
    accept_rps: f64,
    wall_s: f64,
    /// CPU seconds: collector, ClickHouse, load generator.
    cpu: (f64, f64, f64),
}

/// The ceiling (the client library straight into ClickHouse), then the collector process (HTTP
/// → spool with fsync → ClickHouse) with the same records on a fresh database; returns the
/// figures and the collector, still running.
async fn round(
    url: &str,
    recs: &[UsageRecord],
    bodies: &Arc<Vec<Vec<u8>>>,
    args: &Args,
    sink: &tollgate_collector::config::SinkConfig,
) -> Result<(Run, CollectorProc, tempfile::TempDir), BoxError> {
    let db = fresh_db(url, "bench_collector_ceiling").await?;
    let now = Utc::now();
    let rows: Vec<UsageEventRow> = recs
        .iter()
        .map(|r| UsageEventRow::from_record(r, "bench", now))
        .collect();
    let ceiling_rps = ceiling(&db, &rows).await?;
    drop(rows);

    let db = fresh_db(url, "bench_collector").await?;
    let dir = tempfile::tempdir()?;
    let sink_config = sink.clone();
    let collector = CollectorProc::start(url, "bench_collector", dir.path(), |c| {
        // The sink as configured for the run (the test harness shortens the batch delay).
        c.sink = sink_config;
        c.ingest.max_records_per_batch = 10_000;
        c.ingest.max_body_bytes = 32 << 20;
        c.ingest.max_decompressed_bytes = 64 << 20;
    });
    let pid = collector.proc.pid();
    let next = Arc::new(AtomicUsize::new(0));
    let ch_pid = clickhouse_pid().unwrap_or(0);
    let (collector_cpu0, ch_cpu0, self_cpu0) = (
        cpu_secs(pid),
        cpu_secs(ch_pid),
        cpu_secs(std::process::id()),
    );
    let started = Instant::now();
    let mut threads = Vec::new();
    for _ in 0..args.connections {
        let (bodies, next, url) = (bodies.clone(), next.clone(), collector.records_url());
        threads.push(std::thread::spawn(move || -> Result<(), String> {
            let agent = agent();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(body) = bodies.get(i) else {
                    return Ok(());
                };
                loop {
                    match post(&agent, &url, body) {
                        Ok(202) => break,
                        Ok(503) | Ok(429) => std::thread::sleep(Duration::from_millis(20)),
                        Ok(s) => return Err(format!("collector answered {s}")),
                        Err(e) => return Err(e.to_string()),
                    }
                }
            }
        }));
    }
    for t in threads {
        t.join().map_err(|_| "poster panicked")??;
    }
    let accepted_secs = started.elapsed().as_secs_f64();
    while count(&db).await? < args.records {
        if started.elapsed() > Duration::from_secs(600) {
            return Err("collector did not deliver every record within 10 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall_s = started.elapsed().as_secs_f64();
    let cpu = (
        cpu_secs(pid) - collector_cpu0,
        cpu_secs(ch_pid) - ch_cpu0,
        cpu_secs(std::process::id()) - self_cpu0,
    );
    let run = Run {
        ceiling_rps,
        collector_rps: args.records as f64 / wall_s,
        accept_rps: args.records as f64 / accepted_secs,
        wall_s,
        cpu,
    };
    Ok((run, collector, dir))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let url = tollgate_clickhouse::testing::ensure_server()?;
    let recs = records(2026, args.records);
    println!(
        "bench collector: {} records, {} per POST, {} connections, {} rounds",
        args.records, args.batch, args.connections, args.rounds
    );
    let mut sink = tollgate_collector::config::SinkConfig::default();
    if let Some(rows) = args.sink_max_rows {
        sink.max_rows = rows;
    }
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        recs.chunks(args.batch)
            .map(|b| wire::encode_batch(b, BatchFormat::Ndjson))
            .collect(),
    );

    // 1–2. Rounds of ceiling then collector; ratios are taken within a round, then the median.
    let mut runs = Vec::new();
    let mut last = None;
    for i in 0..args.rounds.max(1) {
        drop(last.take()); // the previous round's collector stops before the next ceiling
        let (run, collector, dir) = round(&url, &recs, &bodies, &args, &sink).await?;
        println!(
            "  round {}: ceiling (clickhouse inserter, 100k rows per INSERT) {:.0} rows/s; collector {:.0} rows/s = {:.0}%; accepted at {:.0} records/s; CPU in {:.1} s wall: collector {:.1} s, ClickHouse {:.1} s, load generator {:.1} s",
            i + 1,
            run.ceiling_rps,
            run.collector_rps,
            100.0 * run.collector_rps / run.ceiling_rps,
            run.accept_rps,
            run.wall_s,
            run.cpu.0,
            run.cpu.1,
            run.cpu.2
        );
        runs.push(run);
        last = Some((collector, dir));
    }
    let Some((collector, _spool_dir)) = last else {
        return Err("no round ran".into());
    };
    let pid = collector.proc.pid();
    let ratios: Vec<f64> = runs
        .iter()
        .map(|r| r.collector_rps / r.ceiling_rps)
        .collect();
    let ratio = median(ratios.clone());
    let ceiling_rps = median(runs.iter().map(|r| r.ceiling_rps).collect());
    let collector_rps = median(runs.iter().map(|r| r.collector_rps).collect());
    let accept_rps = median(runs.iter().map(|r| r.accept_rps).collect());
    let total_secs = median(runs.iter().map(|r| r.wall_s).collect());
    let collector_cpu = median(runs.iter().map(|r| r.cpu.0).collect());
    let ch_cpu = median(runs.iter().map(|r| r.cpu.1).collect());
    let generator_cpu = median(runs.iter().map(|r| r.cpu.2).collect());
    println!(
        "  collector end to end: median {:.0}% of the ceiling (rounds: {})",
        100.0 * ratio,
        ratios
            .iter()
            .map(|r| format!("{:.0}%", 100.0 * r))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // 3. Accept-path latency at a steady 10k records/s in batches of 100.
    // Fresh records for every request (a replayed batch would be all duplicates: no fsync).
    let steady: Vec<Vec<u8>> = records(7, 100 * 100 * (args.latency_secs + 1))
        .chunks(100)
        .map(|b| wire::encode_batch(b, BatchFormat::Ndjson))
        .collect();
    let url2 = collector.records_url();
    let secs = args.latency_secs;
    let latencies = tokio::task::spawn_blocking(move || -> Result<Vec<f64>, String> {
        // Two senders, each on a 20 ms schedule: 100 requests/s in all (open loop).
        let mut handles = Vec::new();
        for s in 0..2u64 {
            let (steady, url) = (steady.clone(), url2.clone());
            handles.push(std::thread::spawn(move || -> Result<Vec<f64>, String> {
                let agent = agent();
                let mut out = Vec::new();
                let start = Instant::now() + Duration::from_millis(10 * s);
                let mut i = 0u64;
                while start.elapsed() < Duration::from_secs(secs) || Instant::now() < start {
                    let due = start + Duration::from_millis(20 * i);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let Some(body) = steady.get(i as usize * 2 + s as usize) else {
                        break;
                    };
                    let t = Instant::now();
                    match post(&agent, &url, body) {
                        Ok(202) => out.push(t.elapsed().as_secs_f64() * 1000.0),
                        Ok(s) => return Err(format!("latency run: collector answered {s}")),
                        Err(e) => return Err(e.to_string()),
                    }
                    i += 1;
                }
                Ok(out)
            }));
        }
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.join().map_err(|_| "sender panicked")??);
        }
        Ok(all)
    })
    .await??;
    let mut sorted = latencies.clone();
    sorted.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&sorted, 0.5), percentile(&sorted, 0.99));
    let rss_mib = peak_rss_kib(pid) as f64 / 1024.0;
    println!("  accept path at 10k records/s (100 per POST): p50 {p50:.2} ms, p99 {p99:.2} ms over {} requests", sorted.len());
    println!("  collector peak RSS: {rss_mib:.0} MiB");
    drop(collector);

    let figures = json!({
        "records": args.records,
        "batch_records": args.batch,
        "connections": args.connections,
        "ceiling_rows_per_s": ceiling_rps.round(),
        "collector_rows_per_s": collector_rps.round(),
        "collector_accept_records_per_s": accept_rps.round(),
        "ratio_to_ceiling": (ratio * 1000.0).round() / 1000.0,
        "rounds": runs.iter().map(|r| json!({
            "ceiling_rows_per_s": r.ceiling_rps.round(),
            "collector_rows_per_s": r.collector_rps.round(),
            "ratio": (r.collector_rps / r.ceiling_rps * 1000.0).round() / 1000.0,
        })).collect::<Vec<_>>(),
        "fsync": true,
        "latency_requests": sorted.len(),
        "accept_p50_ms": (p50 * 100.0).round() / 100.0,
        "accept_p99_ms": (p99 * 100.0).round() / 100.0,
        "peak_rss_mib": rss_mib.round(),
        "sink_max_rows": sink.max_rows,
        "sink_max_delay_ms": sink.max_delay_ms,
        "run_wall_s": total_secs,
        "run_cpu_s": {"collector": collector_cpu, "clickhouse": ch_cpu, "load_generator": generator_cpu},
    });
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&figures)?)?;
    let md = format!(
        "## Collector: HTTP → spool (fsync) → ClickHouse\n\n\
         Command: `cargo xtask bench collector` (figures: `target/bench/collector.json`).\n\n\
         {n} synthetic records; NDJSON POSTs of {b} records over {c} connections; sink batches of up\n\
         to {rows} rows or {delay} ms{which}, fsync on every group commit, rollup views attached.\n\
         The ceiling is the `clickhouse` crate's inserter writing the same rows straight into\n\
         `usage_events` (100k rows per INSERT) on the same server. {rounds} rounds of ceiling then\n\
         collector, each on fresh databases; the ratio is taken within each round, medians reported.\n\n\
         | measure | value |\n|---|---|\n\
         | ceiling: client inserter | {ceil:.0} rows/s |\n\
         | collector end to end (first POST → last row visible) | {col:.0} rows/s |\n\
         | **ratio to the ceiling** (per round: {per_round}) | **{ratio:.0}%** |\n\
         | accept rate (POSTs answered 202) | {acc:.0} records/s |\n\
         | accept latency p50 at 10k records/s, 100 per POST | {p50:.2} ms |\n\
         | accept latency p99 at 10k records/s, 100 per POST | {p99:.2} ms |\n\
         | collector peak RSS | {rss:.0} MiB |\n\n\
         CPU used during a throughput run (medians; {wall:.1} s on 2 shared cores): collector {ccpu:.1} s,\n\
         ClickHouse {hcpu:.1} s, load generator {gcpu:.1} s.\n",
        n = args.records,
        b = args.batch,
        rows = sink.max_rows,
        delay = sink.max_delay_ms,
        which = if args.sink_max_rows.is_some() {
            " (`--sink-max-rows`)"
        } else {
            " (the collector's defaults)"
        },
        c = args.connections,
        ceil = ceiling_rps,
        col = collector_rps,
        ratio = 100.0 * ratio,
        rounds = args.rounds,
        per_round = ratios
            .iter()
            .map(|r| format!("{:.0}%", 100.0 * r))
            .collect::<Vec<_>>()
            .join(", "),
        acc = accept_rps,
        rss = rss_mib,
        wall = total_secs,
        ccpu = collector_cpu,
        hcpu = ch_cpu,
        gcpu = generator_cpu,
    );
    std::fs::write(&args.markdown, md)?;
    Ok(())
}
