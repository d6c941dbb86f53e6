//! `bench-cluster` (run by `cargo xtask bench cluster`): one ClickHouse server against the dev
//! cluster (2 shards × 2 replicas + ZooKeeper, `clickhouse/src/dev_cluster.rs`) on the same
//! machine, with the same data, in one run — the figures `docs/SCALING.md` is built from.
//!
//! 1. **Ingest**, in interleaved rounds on fresh databases: the `clickhouse` crate's inserter
//!    straight into one server's `usage_events` and into one shard's `usage_events_local` (timed
//!    until the shard's other replica has every row: a shard's write capacity with replication),
//!    then the collector process (HTTP → spool with fsync → ClickHouse) into one server and into
//!    the cluster's `Distributed` table. Medians of the rounds; CPU seconds of every ClickHouse
//!    process and of the collector from `/proc`.
//! 2. **Bytes on disk** per raw row and per rollup row (compressed, after `OPTIMIZE … FINAL`),
//!    and each rollup's rows for the day against the distinct combinations it keys on.
//! 3. **The dashboard**: p50/p99 of the overview and daily series, dashboard-api in process
//!    against the one server and against a cluster node, same rows, requests interleaved.
//!
//! Every ClickHouse process shares the machine's cores, so the cluster here measures the
//! cost of sharding and replication (more work per row), not the gain of more machines:
//! SCALING.md turns the per-shard figure into capacity.

use chrono::{Datelike, NaiveTime, TimeDelta, Utc};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;
use tollgate_clickhouse::dev_cluster::{DevCluster, NODES};
use tollgate_clickhouse::synthetic::{Shape, Synthetic};
use tollgate_clickhouse::testing::ClusterDb;
use tollgate_clickhouse::{read_query, ClickHouseConfig, UsageEventRow};
use tollgate_dashboard_api::auth::{create_token, Role};
use tollgate_dashboard_api::config::Config;
use tollgate_dashboard_api::{app, AppState};
use tollgate_e2e::bench_support::{cpu_secs, median, percentile};
use tollgate_e2e::harness::{repo_root, CollectorProc, SIGNING_SECRET};
use usage_core::wire::{self, BatchFormat};
use usage_core::UsageRecord;

#[derive(Parser)]
struct Args {
    /// Records per ingest run (one synthetic day).
    #[arg(long, default_value_t = 500_000)]
    records: u64,
    /// Rounds of the four ingest runs (medians are reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Requests per dashboard endpoint per target.
    #[arg(long, default_value_t = 100)]
    requests: usize,
    #[arg(long, default_value = "target/bench/cluster.json")]
    out: PathBuf,
    #[arg(long, default_value = "target/bench/cluster.md")]
    markdown: PathBuf,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const ONE_DB: &str = "bench_cluster_one";
/// Records per POST to a collector, and concurrent posting connections.
const BATCH: usize = 5_000;
const CONNECTIONS: usize = 4;

/// One synthetic day: 20 orgs × 50 users × 5 apps.
fn shape() -> Shape {
    let now = Utc::now();
    let day = now.date_naive().and_time(NaiveTime::MIN).and_utc() - TimeDelta::days(1);
    Shape {
        orgs: 20,
        users_per_org: 50,
        apps_per_org: 5,
        start: day,
        span: TimeDelta::days(1),
    }
}

async fn scalar(config: &ClickHouseConfig, sql: &str) -> Result<u64, BoxError> {
    Ok(read_query(&config.client(), sql).fetch_one::<u64>().await?)
}

async fn fresh_one(url: &str) -> Result<ClickHouseConfig, BoxError> {
    let config = ClickHouseConfig::new(url, ONE_DB);
    tollgate_e2e::stack::migrate_fresh(&config).await?;
    Ok(config)
}

/// Every running `clickhouse-server` and ZooKeeper process (whichever target is measured, the
/// other's idle servers cost next to nothing).
fn server_pids() -> Vec<u32> {
    let mut pids = Vec::new();
    for pattern in ["clickhouse-server", "org.apache.zookeeper"] {
        if let Ok(out) = std::process::Command::new("pgrep")
            .args(["-f", pattern])
            .output()
        {
            pids.extend(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter_map(|l| l.trim().parse::<u32>().ok()),
            );
        }
    }
    pids
}

fn servers_cpu(pids: &[u32]) -> f64 {
    pids.iter().map(|p| cpu_secs(*p)).sum()
}

/// One ingest run: rows per second and CPU seconds (servers, collector).
#[derive(Clone, Copy)]
struct Ingest {
    rows_per_s: f64,
    server_cpu: f64,
    collector_cpu: f64,
}

impl Ingest {
    fn cpu_us_per_row(&self, rows: u64) -> f64 {
        (self.server_cpu + self.collector_cpu) * 1e6 / rows as f64
    }
}

/// The client inserter into `table` through `config`, 100k rows per INSERT, timed until
/// `done` counts every row.
async fn inserter(
    config: &ClickHouseConfig,
    table: &str,
    rows: &[UsageEventRow],
    done: &ClickHouseConfig,
    done_sql: &str,
) -> Result<Ingest, BoxError> {
    let pids = server_pids();
    let cpu0 = servers_cpu(&pids);
    let client = config
        .client()
        .with_compression(tollgate_clickhouse::clickhouse::Compression::Lz4);
    let started = Instant::now();
    for chunk in rows.chunks(100_000) {
        let mut insert = client.insert::<UsageEventRow>(table).await?;
        for r in chunk {
            insert.write(r).await?;
        }
        insert.end().await?;
    }
    wait_for_count(done, done_sql, rows.len() as u64, started).await?;
    Ok(Ingest {
        rows_per_s: rows.len() as f64 / started.elapsed().as_secs_f64(),
        server_cpu: servers_cpu(&pids) - cpu0,
        collector_cpu: 0.0,
    })
}

async fn wait_for_count(
    config: &ClickHouseConfig,
    sql: &str,
    want: u64,
    started: Instant,
) -> Result<(), BoxError> {
    loop {
        let have = scalar(config, sql).await.unwrap_or(0);
        if have >= want {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(900) {
            return Err(format!("{sql}: {have} of {want} rows after 15 minutes").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn post(agent: &ureq::Agent, url: &str, body: &[u8]) -> Result<u16, String> {
    let sig = wire::sign(SIGNING_SECRET.as_bytes(), Utc::now().timestamp(), body);
    agent
        .post(url)
        .header(wire::SIGNATURE_HEADER, &sig)
        .header("content-type", "application/x-ndjson")
        .send(body)
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

/// The collector process (its default sink) writing `bodies` into `config`'s database, timed
/// from the first POST until `usage_events` counts every record.
async fn collector(
    config: &ClickHouseConfig,
    bodies: &Arc<Vec<Vec<u8>>>,
    records: u64,
) -> Result<Ingest, BoxError> {
    let dir = tempfile::tempdir()?;
    let proc = CollectorProc::start(&config.url, &config.database, dir.path(), |c| {
        c.sink = tollgate_collector::config::SinkConfig::default();
        c.ingest.max_records_per_batch = 10_000;
        c.ingest.max_body_bytes = 32 << 20;
        c.ingest.max_decompressed_bytes = 64 << 20;
    });
    let pid = proc.proc.pid();
    let pids = server_pids();
    let (cpu0, collector0) = (servers_cpu(&pids), cpu_secs(pid));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut threads = Vec::new();
    for _ in 0..CONNECTIONS {
        let (bodies, next, url) = (bodies.clone(), next.clone(), proc.records_url());
        threads.push(std::thread::spawn(move || -> Result<(), String> {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(120)))
                .build()
                .into();
            while let Some(body) = bodies.get(next.fetch_add(1, Ordering::SeqCst)) {
                loop {
                    match post(&agent, &url, body)? {
                        202 => break,
                        503 | 429 => std::thread::sleep(Duration::from_millis(20)),
                        s => return Err(format!("collector answered {s}")),
                    }
                }
            }
            Ok(())
        }));
    }
    for t in threads {
        t.join().map_err(|_| "poster panicked")??;
    }
    wait_for_count(config, "SELECT count() FROM usage_events", records, started).await?;
    Ok(Ingest {
        rows_per_s: records as f64 / started.elapsed().as_secs_f64(),
        server_cpu: servers_cpu(&pids) - cpu0,
        collector_cpu: cpu_secs(pid) - collector0,
    })
}

/// A table's compressed bytes and rows on one host, active parts only.
async fn on_disk(config: &ClickHouseConfig, table: &str) -> Result<(u64, u64), BoxError> {
    let (bytes, rows): (u64, u64) = read_query(
        &config.server_client(),
        &format!(
            "SELECT sum(data_compressed_bytes) AS bytes, sum(rows) AS rows FROM system.parts \
             WHERE active AND database = '{}' AND table = '{table}'",
            config.database
        ),
    )
    .fetch_one()
    .await?;
    Ok((bytes, rows))
}

/// A dashboard-api in process on `config`'s database; returns its base URL and an admin token.
async fn dashboard(config: &ClickHouseConfig) -> Result<(String, String), BoxError> {
    let token = create_token(&config.keys_client(), "bench", Role::Admin, "", "", "bench")
        .await
        .map_err(|e| format!("{e:?}"))?
        .1;
    let mut c = Config::default();
    c.clickhouse.url = config.url.clone();
    c.clickhouse.database = config.database.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app(AppState::new(c))).await;
    });
    Ok((base, token))
}

/// `n` requests of each path against each target, interleaved request by request (after 5
/// warm-ups each); the two targets' JSON answers must be equal. Returns latencies (ms)
/// per (path, target).
fn measure_dashboards(
    targets: &[(String, String)],
    paths: &[String],
    n: usize,
) -> Result<Vec<Vec<Vec<f64>>>, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut out = vec![vec![Vec::with_capacity(n); targets.len()]; paths.len()];
    for (p, path) in paths.iter().enumerate() {
        for i in 0..n + 5 {
            let mut bodies = Vec::new();
            for (t, (base, token)) in targets.iter().enumerate() {
                let started = Instant::now();
                let mut r = agent
                    .get(&format!("{base}{path}"))
                    .header("authorization", &format!("Bearer {token}"))
                    .call()
                    .map_err(|e| e.to_string())?;
                let status = r.status().as_u16();
                let body: serde_json::Value =
                    serde_json::from_slice(&r.body_mut().read_to_vec().map_err(|e| e.to_string())?)
                        .map_err(|e| format!("{path}: {e}"))?;
                if status != 200 {
                    return Err(format!("{path}: {status}"));
                }
                if i >= 5 {
                    out[p][t].push(started.elapsed().as_secs_f64() * 1000.0);
                }
                bodies.push(body);
            }
            if i == 0 {
                if let Some(field) = differing_field(&bodies[0], &bodies[1], "") {
                    return Err(format!(
                        "{path}: the cluster's answer differs from one server's at {field}"
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// The first field where two answers differ (`None` if equal); latency percentiles, which
/// ClickHouse estimates from a sample (`quantile`), may differ in the last digits between one
/// server and shards merged, so numbers compare within 1%, counts and money exactly.
fn differing_field(a: &serde_json::Value, b: &serde_json::Value, at: &str) -> Option<String> {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            if x.len() != y.len() {
                return Some(at.to_string());
            }
            x.iter().find_map(|(k, v)| {
                let here = format!("{at}.{k}");
                y.get(k)
                    .map_or(Some(here.clone()), |w| differing_field(v, w, &here))
            })
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                return Some(at.to_string());
            }
            x.iter()
                .zip(y)
                .enumerate()
                .find_map(|(i, (v, w))| differing_field(v, w, &format!("{at}[{i}]")))
        }
        (Value::Number(x), Value::Number(y)) if at.contains("_ms") || at.contains("latency") => {
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            ((x - y).abs() > 0.01 * x.abs().max(y.abs())).then(|| format!("{at} ({x} vs {y})"))
        }
        _ => (a != b).then(|| format!("{at} ({a} vs {b})")),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let url = tollgate_clickhouse::testing::ensure_server()?;
    tollgate_clickhouse::testing::ensure_cluster()?;
    let cluster = DevCluster::for_repo(repo_root());
    let recs: Vec<UsageRecord> = Synthetic::new(2027, args.records, shape()).collect();
    let now = Utc::now();
    let rows: Vec<UsageEventRow> = recs
        .iter()
        .map(|r| UsageEventRow::from_record(r, "bench", now))
        .collect();
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        recs.chunks(BATCH)
            .map(|b| wire::encode_batch(b, BatchFormat::Ndjson))
            .collect(),
    );
    println!(
        "bench cluster: {} records (one day), {} rounds; cluster {} nodes",
        args.records,
        args.rounds,
        NODES.len()
    );

    // 1. Ingest rounds. The last round's databases stay for 2 and 3.
    let n = args.records;
    let mut runs: Vec<[Ingest; 4]> = Vec::new();
    let mut kept = None;
    for round in 1..=args.rounds.max(1) {
        drop(kept.take());
        let one = fresh_one(&url).await?;
        let one_inserter = inserter(
            &one,
            "usage_events",
            &rows,
            &one,
            "SELECT count() FROM usage_events",
        )
        .await?;
        let shard_db = ClusterDb::new().await?;
        // Shard 1 = nodes 0 and 1: write to node 0, done when node 1 (its replica) has it all.
        let shard_inserter = inserter(
            shard_db.node(0),
            "usage_events_local",
            &rows,
            shard_db.node(1),
            "SELECT count() FROM usage_events_local",
        )
        .await?;
        drop(shard_db);
        let one = fresh_one(&url).await?;
        let one_collector = collector(&one, &bodies, n).await?;
        let cluster_db = ClusterDb::new().await?;
        let cluster_collector = collector(cluster_db.node(0), &bodies, n).await?;
        println!(
            "  round {round}: inserter one server {:.0} rows/s, one shard (2 replicas) {:.0} rows/s; collector → one server {:.0} rows/s, → cluster {:.0} rows/s",
            one_inserter.rows_per_s,
            shard_inserter.rows_per_s,
            one_collector.rows_per_s,
            cluster_collector.rows_per_s
        );
        runs.push([
            one_inserter,
            shard_inserter,
            one_collector,
            cluster_collector,
        ]);
        kept = Some((one, cluster_db));
    }
    let Some((one, cluster_db)) = kept else {
        return Err("no round ran".into());
    };
    let med = |i: usize, f: fn(&Ingest) -> f64| median(runs.iter().map(|r| f(&r[i])).collect());
    let ingest_names = [
        "inserter → one server",
        "inserter → one shard (2 replicas)",
        "collector → one server",
        "collector → cluster (2 shards × 2 replicas)",
    ];
    let ingest: Vec<(f64, f64)> = (0..4)
        .map(|i| {
            (
                med(i, |r| r.rows_per_s),
                median(runs.iter().map(|r| r[i].cpu_us_per_row(n)).collect()),
            )
        })
        .collect();

    // 2. Bytes on disk, after merges: one server's tables, and each shard's share.
    let tables = [
        "usage_events",
        "usage_hourly",
        "usage_daily",
        "org_model_daily",
        "org_daily",
    ];
    for t in tables {
        one.client()
            .query(&format!("OPTIMIZE TABLE {t} FINAL"))
            .execute()
            .await?;
    }
    let mut disk = Vec::new();
    for t in tables {
        let (bytes, rows_on_disk) = on_disk(&one, t).await?;
        disk.push((t, bytes, rows_on_disk));
    }
    let keys = [
        (
            "usage_hourly",
            "uniqExact(org_id, toStartOfHour(ts), provider, model_requested, app_id, task_type, user_id)",
        ),
        (
            "usage_daily",
            "uniqExact(org_id, toDate(ts), provider, model_requested, app_id, task_type, user_id)",
        ),
        (
            "org_model_daily",
            "uniqExact(org_id, toDate(ts), provider, model_requested)",
        ),
        ("org_daily", "uniqExact(org_id, toDate(ts))"),
    ];
    let mut combos = Vec::new();
    for (t, expr) in keys {
        combos.push((
            t,
            scalar(&one, &format!("SELECT {expr} FROM usage_events")).await?,
        ));
    }
    let dims = scalar(
        &one,
        "SELECT uniqExact(org_id, user_id, app_id, provider, model_requested, task_type) FROM usage_events",
    )
    .await?;
    let mut shard_rows = Vec::new();
    for (i, (name, ..)) in NODES.iter().enumerate().step_by(2) {
        shard_rows.push((
            *name,
            scalar(cluster_db.node(i), "SELECT count() FROM usage_events_local").await?,
        ));
    }
    let replicas_bytes = {
        let mut total = 0;
        for i in 0..NODES.len() {
            total += on_disk(cluster_db.node(i), "usage_events_local").await?.0;
        }
        total
    };

    // 3. The dashboard against each, same rows.
    let day = shape().start.date_naive();
    let from = format!("{:04}-{:02}-{:02}", day.year(), day.month(), day.day());
    let to_day = day + TimeDelta::days(1);
    let to = format!(
        "{:04}-{:02}-{:02}",
        to_day.year(),
        to_day.month(),
        to_day.day()
    );
    let endpoints = [
        ("overview, all orgs", "/api/v1/overview?from={f}&to={t}"),
        (
            "overview, one org",
            "/api/v1/overview?from={f}&to={t}&org=org_003",
        ),
        (
            "hourly series, all orgs",
            "/api/v1/usage/timeseries?from={f}&to={t}&granularity=hour",
        ),
        ("models, all orgs", "/api/v1/models?from={f}&to={t}"),
    ];
    let paths: Vec<String> = endpoints
        .iter()
        .map(|(_, p)| p.replace("{f}", &from).replace("{t}", &to))
        .collect();
    let targets = vec![dashboard(&one).await?, dashboard(cluster_db.node(0)).await?];
    let requests = args.requests;
    let resolved = paths.clone();
    let lat = tokio::task::spawn_blocking(move || measure_dashboards(&targets, &paths, requests))
        .await??;
    let mut dash = Vec::new();
    for (p, ((name, _), path)) in endpoints.iter().zip(&resolved).enumerate() {
        let figures: Vec<(f64, f64)> = lat[p]
            .iter()
            .map(|l| {
                let mut s = l.clone();
                s.sort_by(f64::total_cmp);
                (percentile(&s, 0.5), percentile(&s, 0.99))
            })
            .collect();
        println!(
            "  {name:<24} one server p50 {:.2} p99 {:.2} ms; cluster p50 {:.2} p99 {:.2} ms",
            figures[0].0, figures[0].1, figures[1].0, figures[1].1
        );
        dash.push((*name, path.clone(), figures));
    }
    let memory = cluster.memory_kib();

    // Figures.
    let raw = disk[0];
    let json = json!({
        "records": n,
        "rounds": args.rounds,
        "ingest": ingest_names.iter().zip(&ingest).map(|(name, (rps, cpu))| json!({
            "run": name, "rows_per_s": rps.round(), "cpu_us_per_row": (cpu * 10.0).round() / 10.0,
        })).collect::<Vec<_>>(),
        "ingest_rounds": runs.iter().map(|r| r.iter().map(|i| i.rows_per_s.round()).collect::<Vec<_>>()).collect::<Vec<_>>(),
        "disk": disk.iter().map(|(t, b, r)| json!({"table": t, "compressed_bytes": b, "rows": r,
            "bytes_per_row": (*b as f64 / (*r).max(1) as f64 * 10.0).round() / 10.0})).collect::<Vec<_>>(),
        "rollup_rows_vs_key_combinations": combos.iter().map(|(t, c)| json!({"table": t, "combinations": c})).collect::<Vec<_>>(),
        "active_user_app_model_task_combinations": dims,
        "shard_rows": shard_rows.iter().map(|(s, r)| json!({"shard_first_replica": s, "rows": r})).collect::<Vec<_>>(),
        "cluster_raw_bytes_all_replicas": replicas_bytes,
        "dashboard": dash.iter().map(|(name, path, f)| json!({"endpoint": name, "path": path,
            "one_server": {"p50_ms": f[0].0, "p99_ms": f[0].1},
            "cluster": {"p50_ms": f[1].0, "p99_ms": f[1].1}})).collect::<Vec<_>>(),
        "cluster_idle_rss_kib": memory.iter().map(|(n, k)| json!({"process": n, "kib": k})).collect::<Vec<_>>(),
    });
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&json)?)?;

    let mut md = format!(
        "## Cluster: one server vs 2 shards × 2 replicas, same data\n\n\
         Command: `cargo xtask bench cluster` (figures: `target/bench/cluster.json`; read by\n\
         `docs/SCALING.md`).\n\n\
         {n} synthetic records of one day (20 orgs × 50 users × 5 apps); ClickHouse 18.16, the dev\n\
         server and the dev cluster (4 servers + ZooKeeper) on the same 2 cores, so the cluster\n\
         shows what sharding and replication cost per row, not what more machines add. {rounds}\n\
         rounds of the four ingest runs on fresh databases, medians; CPU is every ClickHouse and\n\
         ZooKeeper process plus the collector, per row.\n\n\
         | ingest | rows/s (median) | CPU µs per row |\n|---|---:|---:|\n",
        rounds = args.rounds
    );
    for (name, (rps, cpu)) in ingest_names.iter().zip(&ingest) {
        md.push_str(&format!("| {name} | {rps:.0} | {cpu:.1} |\n"));
    }
    md.push_str(&format!(
        "\nPer round (rows/s, same order): {}.\n\n\
         Bytes on disk (one server, compressed, active parts after `OPTIMIZE … FINAL`; a small\n\
         table's bytes per row are mostly per-part overhead):\n\n\
         | table | rows | bytes | bytes per row | key combinations in the data |\n|---|---:|---:|---:|---:|\n",
        runs.iter()
            .map(|r| r
                .iter()
                .map(|i| format!("{:.0}", i.rows_per_s))
                .collect::<Vec<_>>()
                .join(" / "))
            .collect::<Vec<_>>()
            .join("; ")
    ));
    for (t, b, r) in &disk {
        let combos = combos
            .iter()
            .find(|(c, _)| c == t)
            .map_or("—".to_string(), |(_, c)| c.to_string());
        md.push_str(&format!(
            "| `{t}` | {r} | {b} | {:.1} | {combos} |\n",
            *b as f64 / (*r).max(1) as f64
        ));
    }
    md.push_str(&format!(
        "\nThe day's data has {dims} distinct (org, user, app, provider, model, task type)\n\
         combinations. On the cluster the raw rows split {} between the shards (by\n\
         `cityHash64(org_id)`), and all four replicas hold {:.1} bytes per raw row together\n\
         ({:.2}× one server's).\n\n\
         Dashboard over HTTP (dashboard-api in process, {req} requests per row after 5 warm-ups,\n\
         one server and cluster interleaved request by request; the answers checked equal — counts\n\
         and money exactly, latency percentiles within 1%, as ClickHouse's `quantile` samples):\n\n\
         | endpoint | one server p50 / p99 ms | cluster p50 / p99 ms |\n|---|---:|---:|\n",
        shard_rows
            .iter()
            .map(|(s, r)| format!("{r} ({s}'s shard)"))
            .collect::<Vec<_>>()
            .join(" / "),
        replicas_bytes as f64 / n as f64,
        replicas_bytes as f64 / raw.1.max(1) as f64,
        req = args.requests,
    ));
    for (name, _, f) in &dash {
        md.push_str(&format!(
            "| {name} | {:.2} / {:.2} | {:.2} / {:.2} |\n",
            f[0].0, f[0].1, f[1].0, f[1].1
        ));
    }
    md.push_str(&format!(
        "\nIdle RSS of the cluster's processes after the run: {}.\n",
        memory
            .iter()
            .map(|(p, k)| format!("{p} {} MiB", k / 1024))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    std::fs::write(&args.markdown, md)?;
    Ok(())
}
