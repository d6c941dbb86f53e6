//! `bench-edge` (run by `cargo xtask bench edge`): the latency the Rust worker adds, against
//! the mock provider directly and against a minimal JavaScript passthrough worker in the same
//! `workerd` — non-streaming and streaming, at concurrency 1 and 16, in interleaved rounds so
//! that machine noise hits every target alike; medians over rounds are reported.
//!
//! The worker ships its records to a real collector (release build) writing to the dev
//! ClickHouse, as in production.
//!
//! Besides latency to the last byte it measures what users feel on a realistic stream (the
//! provider's first chunk after 50 ms, then 50 chunks 20 ms apart): the time to the first byte
//! and the gap between chunks, each against the mock direct; the CPU time workerd spends per
//! call (from `/proc/<pid>/stat`: each cell runs alone, so the process's CPU during a cell is
//! that cell's); and workerd's memory at idle, at its peak under load and after.
//!
//! A cell whose connection is refused or reset is tried again (3 tries, each failure printed
//! with the cell's name); the run fails only when a cell cannot be measured at all.
//! `--compare DIR` measures another build of the worker in the same rounds (before/after).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use edge_worker::local::{JsBaseline, FLOOR_SHIM_JS, MEASURING_JS, PASSTHROUGH_JS};
use serde_json::json;
use std::collections::HashMap;
use std::io::Read as _;

use tollgate_e2e::bench_support::{
    chat_body, closed_loop, cpu_secs, median, memory_kib, percentile, production_batching,
    with_retries, EdgeBench, Rounds,
};
use tollgate_e2e::harness::{free_port, repo_root, worker_bindings, WorkerdProc};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    run: Rounds,
    /// Another build of the worker (a bundle directory, as `cargo xtask edge build` writes it)
    /// measured in the same rounds as `rust-before`: a before/after table is added.
    #[arg(long)]
    compare: Option<PathBuf>,
    /// A quick A/B: only Tollgate's worker and the `--compare` build (and the passthrough),
    /// no floor and no realistic stream; the before/after table is printed, nothing written.
    #[arg(long, requires = "compare")]
    ab: bool,
    /// With `--ab`: both builds ship their records to a sink that keeps nothing, instead of
    /// the collector (which, with ClickHouse, shares the machine's cores with the worker).
    #[arg(long, requires = "ab")]
    null_sink: bool,
    #[arg(long, default_value = "target/bench/edge.json")]
    out: PathBuf,
    #[arg(long, default_value = "target/bench/edge.md")]
    markdown: PathBuf,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// (target, mode, clients) → per round (p50 ms, p99 ms, requests/s, workerd CPU ms per call).
type Results = std::collections::BTreeMap<(String, String, usize), Vec<(f64, f64, f64, f64)>>;

/// The realistic stream: the provider's first chunk (and headers) after `FEEL_FIRST_MS`, then
/// `FEEL_CHUNKS` content chunks `FEEL_GAP_MS` apart (a model writing 50 tokens a second).
const FEEL_FIRST_MS: u64 = 50;
const FEEL_CHUNKS: u64 = 50;
const FEEL_GAP_MS: u64 = 20;
/// Streams in flight at once on the realistic stream (each lasts about a second).
const FEEL_CLIENTS: usize = 8;
const FEEL_TARGETS: &[&str] = &["mock", "js", "js-measuring", "rust"];

/// target → per round (time to first byte p50, p99; gap between chunks p50, p99; ms).
type FeelResults = std::collections::BTreeMap<String, Vec<[f64; 4]>>;

const TARGETS: &[&str] = &[
    "mock",
    "js",
    "js-measuring",
    "rust",
    "rust+budget",
    "rust-nullsink",
];
/// Measured after [`TARGETS`], in a workerd started for them alone (see `main`).
const FLOOR_TARGETS: &[&str] = &["js-floor", "rust-floor", "rust-floor-js"];
const INTERNAL_SECRET: &str = "bench-internal-secret-0123456789";
const MODES: &[&str] = &["json", "stream"];
const CONCURRENCY: &[usize] = &[1, 16];

fn feel_body() -> Vec<u8> {
    json!({"model": "gpt-4o-mini", "stream": true,
           "messages": [{"role": "user", "content": "Write a short paragraph."}],
           "mock": {"chunks": FEEL_CHUNKS, "chunk_delay_ms": FEEL_GAP_MS, "delay_ms": FEEL_FIRST_MS}})
    .to_string()
    .into_bytes()
}

/// What one realistic-stream cell saw: per stream, the time from sending the request to the
/// first byte of the body; per later read of the body, the time since the read before.
#[derive(Default)]
struct Feel {
    ttfb: Vec<f64>,
    gaps: Vec<f64>,
}

/// Closed loop of `c` clients on the realistic stream, reading each body as it arrives. Each
/// client's first stream is not counted: it opens the client's connection (and, through a
/// worker, the worker's to the provider), which at a few streams per client per cell moved the
/// median time to first byte by milliseconds between rounds.
fn measure_feel(url: &str, key: &str, c: usize, secs: f64) -> Result<Feel, String> {
    let body = Arc::new(feel_body());
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut handles = Vec::new();
    for _ in 0..c {
        let (url, key, body) = (url.to_string(), key.to_string(), body.clone());
        handles.push(std::thread::spawn(move || -> Result<Feel, String> {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(30)))
                .build()
                .into();
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            let mut feel = Feel::default();
            let mut buf = vec![0u8; 64 * 1024];
            let mut warm = false;
            while !warm || Instant::now() < deadline {
                let t0 = Instant::now();
                let mut resp = agent
                    .post(&url)
                    .header("authorization", &format!("Bearer {key}"))
                    .header("content-type", "application/json")
                    .send(&body[..])
                    .map_err(|e| format!("{url}: {e}"))?;
                if resp.status().as_u16() != 200 {
                    return Err(format!("{url} answered {}", resp.status()));
                }
                let mut reader = resp.body_mut().as_reader();
                let mut last: Option<Instant> = None;
                loop {
                    let n = reader
                        .read(&mut buf)
                        .map_err(|e| format!("{url}: reading the body: {e}"))?;
                    if n == 0 {
                        break;
                    }
                    let now = Instant::now();
                    if warm {
                        match last {
                            None => feel.ttfb.push(ms(now - t0)),
                            Some(before) => feel.gaps.push(ms(now - before)),
                        }
                    }
                    last = Some(now);
                }
                warm = true;
            }
            Ok(feel)
        }));
    }
    let mut all = Feel::default();
    for h in handles {
        let f = h.join().map_err(|_| "client panicked".to_string())??;
        all.ttfb.extend(f.ttfb);
        all.gaps.extend(f.gaps);
    }
    all.ttfb.sort_by(f64::total_cmp);
    all.gaps.sort_by(f64::total_cmp);
    if all.ttfb.is_empty() {
        return Err(format!("{url}: no stream finished in {secs} s"));
    }
    Ok(all)
}

/// Closed loop: `c` clients, each sending the next request when the last one is fully read.
fn measure(url: &str, key: &str, stream: bool, c: usize, secs: f64) -> Result<Vec<f64>, String> {
    let auth = [("authorization".to_string(), format!("Bearer {key}"))];
    closed_loop(url, &auth, &chat_body(stream), c, secs)
}

/// A cell's medians over rounds: (p50 ms, p99 ms, requests/s, workerd CPU ms per call).
fn cell_medians(results: &Results, target: &str, mode: &str, c: usize) -> (f64, f64, f64, f64) {
    let v = &results[&(target.to_string(), mode.to_string(), c)];
    (
        median(v.iter().map(|x| x.0).collect()),
        median(v.iter().map(|x| x.1).collect()),
        median(v.iter().map(|x| x.2).collect()),
        median(v.iter().map(|x| x.3).collect()),
    )
}

/// A realistic-stream target's medians over rounds: [ttfb p50, p99, gap p50, p99] in ms.
fn feel_medians(results: &FeelResults, target: &str) -> [f64; 4] {
    let v = &results[target];
    std::array::from_fn(|i| median(v.iter().map(|x| x[i]).collect()))
}

/// [`measure`] for one cell of the table, again (up to `CELL_TRIES` times) when a connection
/// was refused or reset: one such error loses the cell's try, not the whole run. Each retry is
/// reported with the cell's name.
fn measure_cell(
    cell: &str,
    url: &str,
    key: &str,
    stream: bool,
    c: usize,
    secs: f64,
) -> Result<Vec<f64>, String> {
    with_retries(cell, || measure(url, key, stream, c, secs))
}

/// The before/after table's header (markdown).
const COMPARE_HEADER: &str = "| mode | clients | before | after | after ÷ before p50 | before req/s | after req/s | after ÷ before req/s | before CPU | after CPU | after ÷ before CPU |\n|---|---|---|---|---|---|---|---|---|---|---|\n";

/// The before/after table of `rust-before` against `rust` (markdown, header included) and its
/// rows as JSON.
fn compare_table(results: &Results) -> (String, Vec<serde_json::Value>) {
    let mut cmp_rows = Vec::new();
    let mut table = COMPARE_HEADER.to_string();
    for &c in CONCURRENCY {
        for m in MODES {
            let get = |t: &str| cell_medians(results, t, m, c);
            let (old, new) = (get("rust-before"), get("rust"));
            let row = [
                new.0 / old.0,
                old.2,
                new.2,
                new.2 / old.2,
                old.3,
                new.3,
                new.3 / old.3,
            ];
            table.push_str(&format!(
                "| {m} | {c} | {:.2} / {:.2} | {:.2} / {:.2} | {:.3} | {:.0} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
                old.0, old.1, new.0, new.1, row[0], row[1], row[2], row[3], row[4], row[5], row[6]
            ));
            cmp_rows.push(json!({"mode": m, "concurrency": c,
                "before_p50_ms": old.0, "before_p99_ms": old.1, "before_rps": old.2,
                "after_p50_ms": new.0, "after_p99_ms": new.1, "after_rps": new.2,
                "p50_after_to_before": row[0], "rps_after_to_before": row[3],
                "before_cpu_ms_per_call": old.3, "after_cpu_ms_per_call": new.3,
                "cpu_after_to_before": row[6]}));
        }
    }
    (table, cmp_rows)
}

fn gzip_len(path: &std::path::Path) -> u64 {
    let out = std::process::Command::new("gzip")
        .args(["-9", "-c"])
        .arg(path)
        .output();
    out.map(|o| o.stdout.len() as u64).unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let bench = EdgeBench::start("bench_edge", "org_bench").await?;
    let (url, collector, mock) = (bench.url.clone(), &bench.collector, &bench.mock);
    let key = bench.key.clone();
    let baseline = |name, source: &'static str| JsBaseline {
        name,
        source,
        listen: format!("127.0.0.1:{}", free_port()),
        upstream: mock.base_url(),
        key: "sk-mock".into(),
        wasm: None,
    };
    let js = baseline("passthrough", PASSTHROUGH_JS);
    let js_measuring = baseline("measuring", MEASURING_JS);
    // The floor (crate `edge-floor`, built by `cargo xtask bench edge`) is measured last, in a
    // workerd of its own beside its own passthrough: while it ran next to the others, Tollgate's
    // worker measured a third slower (in three runs; cause not found), which would flatter it.
    let floor_bundle = repo_root().join("target/edge-floor");
    // (`--ab` measures no floor.)
    if !args.ab && !floor_bundle.join("index_bg.wasm").is_file() {
        return Err(format!(
            "{} is missing: run `cargo xtask bench edge`, which builds it",
            floor_bundle.display()
        )
        .into());
    }
    let floor = JsBaseline {
        wasm: Some(floor_bundle.clone()),
        ..baseline("floor", FLOOR_SHIM_JS)
    };
    let floor_js_handler = JsBaseline {
        wasm: Some(floor_bundle.clone()),
        ..baseline("floorjs", edge_worker::local::FLOOR_JS_HANDLER_SHIM_JS)
    };
    let js_floor = baseline("passthrough", PASSTHROUGH_JS);
    // The same worker shipping its records to a sink that takes them at once and keeps
    // nothing: what the collector and ClickHouse, sharing the machine's cores, add to the tail.
    let sink_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sink = format!("http://{}/v1/records", sink_listener.local_addr()?);
    let sink_router =
        axum::Router::new().fallback(|| async { (axum::http::StatusCode::ACCEPTED, "{}") });
    tokio::spawn(async move { axum::serve(sink_listener, sink_router).await });
    // Where Tollgate's worker (and the build compared with it) ship their records.
    let records_to = if args.null_sink {
        sink.clone()
    } else {
        collector.records_url()
    };
    let worker = WorkerdProc::start_with(
        bench.bindings_to(&records_to),
        vec![js.clone(), js_measuring.clone()],
    );
    // The same worker with a budget guarding every call: keys and budgets from dashboard-api.
    let mut dconfig = tollgate_dashboard_api::config::Config::default();
    dconfig.clickhouse.url = url.clone();
    dconfig.clickhouse.database = "bench_edge".into();
    dconfig.internal.signing_secrets = vec![service_kit::Secret::new(INTERNAL_SECRET.to_string())];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let dashboard = format!("http://{}", listener.local_addr()?);
    let router = tollgate_dashboard_api::app(tollgate_dashboard_api::AppState::new(dconfig));
    tokio::spawn(async move { axum::serve(listener, router).await });
    let ch = tollgate_clickhouse::ClickHouseConfig::new(&url, "bench_edge");
    let (_, admin) = tollgate_dashboard_api::auth::create_token(
        &ch.keys_client(),
        "bench",
        tollgate_dashboard_api::auth::Role::OrgAdmin,
        "org_bench",
        "",
        "bench",
    )
    .await
    .map_err(|e| format!("{e:?}"))?;
    let (dash, admin2) = (dashboard.clone(), admin.clone());
    let post = move |path: &str, body: serde_json::Value| -> Result<serde_json::Value, String> {
        let a: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut r = a
            .post(&format!("{dash}{path}"))
            .header("authorization", &format!("Bearer {admin2}"))
            .header("content-type", "application/json")
            .send(body.to_string().as_bytes())
            .map_err(|e| e.to_string())?;
        let text = r.body_mut().read_to_string().map_err(|e| e.to_string())?;
        serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))
    };
    let (post_budget, post_key) = (post.clone(), post);
    tokio::task::spawn_blocking(move || {
        post_budget(
            "/api/v1/budgets",
            json!({"name": "bench", "scope": "org", "period": "monthly",
            "limit_usd": "1000000", "mode": "hard", "soft_thresholds": [100]}),
        )
    })
    .await??;
    let budget_key = tokio::task::spawn_blocking(move || {
        post_key("/api/v1/keys", json!({"app_id": "bench", "name": "bench"}))
    })
    .await??["secret"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut bindings: Vec<(String, String)> = production_batching(worker_bindings(
        &mock.base_url(),
        &collector.records_url(),
        "{}",
    ))
    .into_iter()
    .filter(|(k, _)| k != "APP_KEYS")
    .collect();
    bindings.push(("KEYS_URL".into(), dashboard.clone()));
    bindings.push(("KEYS_SIGNING_SECRET".into(), INTERNAL_SECRET.into()));
    let budget_worker = WorkerdProc::start(bindings);
    let nullsink_worker = WorkerdProc::start(bench.bindings_to(&sink));
    // The build to compare with: the same bindings, a workerd of its own.
    let before = args.compare.as_ref().map(|dir| {
        WorkerdProc::start_bundle(
            dir.clone(),
            bench.bindings_to(&records_to),
            Vec::new(),
            Default::default(),
        )
    });
    let mut urls = vec![
        ("mock", format!("{}/chat/completions", mock.base_url())),
        ("js", format!("http://{}/v1/chat/completions", js.listen)),
        (
            "js-measuring",
            format!("http://{}/v1/chat/completions", js_measuring.listen),
        ),
        (
            "js-floor",
            format!("http://{}/v1/chat/completions", js_floor.listen),
        ),
        (
            "rust-floor",
            format!("http://{}/v1/chat/completions", floor.listen),
        ),
        (
            "rust-floor-js",
            format!("http://{}/v1/chat/completions", floor_js_handler.listen),
        ),
        ("rust", format!("{}/chat/completions", worker.base_url())),
        (
            "rust+budget",
            format!("{}/chat/completions", budget_worker.base_url()),
        ),
        (
            "rust-nullsink",
            format!("{}/chat/completions", nullsink_worker.base_url()),
        ),
    ];
    let mut targets: Vec<&str> = TARGETS.to_vec();
    if let Some(before) = &before {
        urls.push((
            "rust-before",
            format!("{}/chat/completions", before.base_url()),
        ));
        targets.push("rust-before");
    }
    let key_of = |t: &str| {
        if t == "rust+budget" {
            budget_key.clone()
        } else {
            key.clone()
        }
    };
    let url_of = |t: &str| {
        urls.iter()
            .find(|(n, _)| *n == t)
            .map(|(_, u)| u.clone())
            .unwrap_or_default()
    };

    // The workerd each target runs in, for its CPU time per call (the mock has none).
    let mut pids: HashMap<&str, u32> = HashMap::new();
    for t in ["js", "js-measuring", "rust"] {
        pids.insert(t, worker.proc.pid());
    }
    pids.insert("rust+budget", budget_worker.proc.pid());
    pids.insert("rust-nullsink", nullsink_worker.proc.pid());
    if let Some(before) = &before {
        pids.insert("rust-before", before.proc.pid());
    }
    let mut feel_targets: Vec<&str> = FEEL_TARGETS.to_vec();
    if before.is_some() {
        feel_targets.push("rust-before");
    }
    if args.ab {
        targets.retain(|t| ["js", "rust", "rust-before"].contains(t));
        feel_targets.clear();
    }
    // Memory of the workerd that runs Tollgate's worker (beside the two JS workers), before
    // any call, then its peak and what it holds after the load.
    let memory_idle = memory_kib(worker.proc.pid());

    let mut results: Results = Default::default();
    let mut feel: FeelResults = Default::default();
    let mut run = |targets: &[&str],
                   feel_targets: &[&str],
                   pids: &HashMap<&str, u32>,
                   what: &str|
     -> Result<(), BoxError> {
        // Warm up every path (isolate start, connection pools).
        for t in targets {
            for m in MODES {
                measure_cell(
                    &format!("{t} {m} warm-up"),
                    &url_of(t),
                    &key_of(t),
                    *m == "stream",
                    2,
                    0.5,
                )?;
            }
        }
        for round in 0..args.run.rounds {
            for &c in CONCURRENCY {
                for m in MODES {
                    for t in targets {
                        let cell = format!("{t} {m} c={c} round {}", round + 1);
                        let cpu_before = pids.get(t).map(|&pid| cpu_secs(pid));
                        let lat = measure_cell(
                            &cell,
                            &url_of(t),
                            &key_of(t),
                            *m == "stream",
                            c,
                            args.run.secs,
                        )?;
                        // Each cell runs alone, so the process's CPU meanwhile is this cell's.
                        let cpu_ms = match (cpu_before, pids.get(t)) {
                            (Some(before), Some(&pid)) => {
                                (cpu_secs(pid) - before) * 1000.0 / lat.len().max(1) as f64
                            }
                            _ => f64::NAN,
                        };
                        let rps = lat.len() as f64 / args.run.secs;
                        results
                            .entry((t.to_string(), m.to_string(), c))
                            .or_default()
                            .push((percentile(&lat, 0.5), percentile(&lat, 0.99), rps, cpu_ms));
                    }
                }
            }
            for t in feel_targets {
                let cell = format!("{t} realistic stream round {}", round + 1);
                let f = with_retries(&cell, || {
                    measure_feel(&url_of(t), &key_of(t), FEEL_CLIENTS, args.run.secs * 3.0)
                })?;
                feel.entry(t.to_string()).or_default().push([
                    percentile(&f.ttfb, 0.5),
                    percentile(&f.ttfb, 0.99),
                    percentile(&f.gaps, 0.5),
                    percentile(&f.gaps, 0.99),
                ]);
            }
            println!("  {what}: round {} of {} done", round + 1, args.run.rounds);
        }
        Ok(())
    };
    run(&targets, &feel_targets, &pids, "workers")?;
    if args.ab {
        print!("{}", compare_table(&results).0);
        return Ok(());
    }
    let memory_peak = memory_kib(worker.proc.pid());
    drop(budget_worker);
    drop(before);
    let floor_workerd = WorkerdProc::start_with(
        Vec::new(),
        vec![js_floor.clone(), floor.clone(), floor_js_handler.clone()],
    );
    let floor_pids: HashMap<&str, u32> = FLOOR_TARGETS
        .iter()
        .map(|&t| (t, floor_workerd.proc.pid()))
        .collect();
    run(FLOOR_TARGETS, &[], &floor_pids, "floor")?;
    drop(floor_workerd);
    // After the load (the floor rounds left it idle for a while).
    let memory_after = memory_kib(worker.proc.pid());

    let mut rows = Vec::new();
    let mut md_rows = String::new();
    let mut guard_rows = String::new();
    let mut tail_rows = String::new();
    let mut cpu_rows = String::new();
    let mut figures = serde_json::Map::new();
    for &c in CONCURRENCY {
        for m in MODES {
            let get = |t: &str| cell_medians(&results, t, m, c);
            let (mock, js, measuring, floor, rust, guarded) = (
                get("mock"),
                get("js"),
                get("js-measuring"),
                get("rust-floor"),
                get("rust"),
                get("rust+budget"),
            );
            let nullsink = get("rust-nullsink");
            tail_rows.push_str(&format!(
                "| {m} | {c} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} | **{:.2}** | {:.2} | **{:.2}** | {:.2} | **{:.2}** |\n",
                js.0,
                js.1,
                rust.0,
                rust.1,
                nullsink.0,
                nullsink.1,
                rust.0 / js.0,
                nullsink.0 / js.0,
                rust.1 / js.1,
                nullsink.1 / js.1,
                rust.2 / js.2,
                nullsink.2 / js.2
            ));
            let ratio = rust.0 / js.0;
            let measuring_ratio = measuring.0 / js.0;
            // Against the passthrough of its own workerd.
            let floor_ratio = floor.0 / get("js-floor").0;
            let floor_js = get("rust-floor-js");
            let floor_js_ratio = floor_js.0 / get("js-floor").0;
            rows.push(json!({
                "mode": m, "concurrency": c,
                "mock_p50_ms": mock.0, "mock_p99_ms": mock.1,
                "js_p50_ms": js.0, "js_p99_ms": js.1, "js_rps": js.2,
                "rust_p50_ms": rust.0, "rust_p99_ms": rust.1, "rust_rps": rust.2,
                "rust_added_p50_ms": rust.0 - mock.0, "js_added_p50_ms": js.0 - mock.0,
                "rust_to_js_p50": ratio,
                "js_measuring_p50_ms": measuring.0, "js_measuring_p99_ms": measuring.1,
                "js_measuring_to_js_p50": measuring_ratio,
                "rust_floor_p50_ms": floor.0, "rust_floor_p99_ms": floor.1,
                "rust_floor_to_js_p50": floor_ratio,
                "rust_floor_js_handler_p50_ms": floor_js.0, "rust_floor_js_handler_p99_ms": floor_js.1,
                "rust_floor_js_handler_to_js_p50": floor_js_ratio,
                "rust_floor_js_handler_cpu_ms_per_call": floor_js.3,
                "budget_p50_ms": guarded.0, "budget_p99_ms": guarded.1,
                "js_cpu_ms_per_call": js.3, "js_measuring_cpu_ms_per_call": measuring.3,
                "rust_floor_cpu_ms_per_call": floor.3, "rust_cpu_ms_per_call": rust.3,
                "budget_cpu_ms_per_call": guarded.3,
                "budget_added_p50_ms": guarded.0 - rust.0, "budget_added_p99_ms": guarded.1 - rust.1,
                "nullsink_p50_ms": nullsink.0, "nullsink_p99_ms": nullsink.1,
                "nullsink_cpu_ms_per_call": nullsink.3,
            }));
            guard_rows.push_str(&format!(
                "| {m} | {c} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} |\n",
                rust.0,
                rust.1,
                guarded.0,
                guarded.1,
                guarded.0 - rust.0,
                guarded.1 - rust.1
            ));
            md_rows.push_str(&format!(
                "| {m} | {c} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} | **{:.2}** | {:.2} | {:.2} | {:.2} | {:.0} |\n",
                mock.0, mock.1, js.0, js.1, measuring.0, measuring.1, floor.0, floor.1, floor_js.0, floor_js.1, rust.0, rust.1, rust.0 - mock.0, ratio, floor_ratio, floor_js_ratio, measuring_ratio, rust.2
            ));
            cpu_rows.push_str(&format!(
                "| {m} | {c} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | **{:.2}** | **{:.2}** |\n",
                js.3,
                measuring.3,
                floor.3,
                floor_js.3,
                rust.3,
                nullsink.3,
                guarded.3,
                rust.3 / js.3,
                nullsink.3 / js.3
            ));
            println!("  {m:<6} c={c:<2}  mock p50 {:.2} ms | js p50 {:.2} ms | js-measuring p50 {:.2} ms (×{measuring_ratio:.2}) | rust floor p50 {:.2} ms (×{floor_ratio:.2}) | rust p50 {:.2} ms (×{ratio:.2} of js) p99 {:.2} ms", mock.0, js.0, measuring.0, floor.0, rust.0, rust.1);
        }
    }
    // What users feel on the realistic stream, against the mock direct.
    let direct = feel_medians(&feel, "mock");
    let mut feel_rows = String::new();
    let mut feel_json = serde_json::Map::new();
    for t in &feel_targets {
        let f = feel_medians(&feel, t);
        feel_rows.push_str(&format!(
            "| {t} | {:.2} / {:.2} | **{:.2}** | {:.2} / {:.2} | **{:.2}** / {:.2} |\n",
            f[0],
            f[1],
            f[0] - direct[0],
            f[2],
            f[3],
            f[2] - direct[2],
            f[3] - direct[3]
        ));
        feel_json.insert(
            t.to_string(),
            json!({"ttfb_p50_ms": f[0], "ttfb_p99_ms": f[1], "gap_p50_ms": f[2], "gap_p99_ms": f[3],
                   "added_ttfb_p50_ms": f[0] - direct[0], "added_gap_p50_ms": f[2] - direct[2],
                   "added_gap_p99_ms": f[3] - direct[3]}),
        );
        println!(
            "  realistic stream {t:<13} ttfb p50 {:.2} ms (+{:.2}) | gap p50 {:.2} ms p99 {:.2} ms",
            f[0],
            f[0] - direct[0],
            f[2],
            f[3]
        );
    }
    let mib = |m: Option<(u64, u64)>, peak: bool| {
        m.map_or("—".to_string(), |(rss, hwm)| {
            format!("{:.1} MiB", (if peak { hwm } else { rss }) as f64 / 1024.0)
        })
    };
    let memory_md = format!(
        "workerd running Tollgate's worker and the two JS workers (resident memory): idle {}, \
         peak under load {}, after the load {}.",
        mib(memory_idle, false),
        mib(memory_peak, true),
        mib(memory_after, false)
    );
    figures.insert(
        "realistic_stream".into(),
        serde_json::Value::Object(feel_json),
    );
    figures.insert(
        "workerd_memory_kib".into(),
        json!({"idle_rss": memory_idle.map(|m| m.0), "peak_hwm": memory_peak.map(|m| m.1),
               "after_rss": memory_after.map(|m| m.0)}),
    );
    let bundle = repo_root().join("target/edge");
    let wasm_gz = gzip_len(&bundle.join("index_bg.wasm"));
    let js_gz = gzip_len(&bundle.join("index.js")) + gzip_len(&bundle.join("shim.js"));
    // Before / after: the two builds, same rounds, medians; ratios per cell.
    let mut compare_md = String::new();
    if let Some(dir) = &args.compare {
        let (table, cmp_rows) = compare_table(&results);
        let built_at = std::fs::read_to_string(dir.join("COMMIT"))
            .map(|c| {
                format!(
                    " (built at commit `{}`)",
                    &c.trim()[..c.trim().len().min(7)]
                )
            })
            .unwrap_or_default();
        let (old_wasm, old_js) = (
            gzip_len(&dir.join("index_bg.wasm")),
            gzip_len(&dir.join("index.js")) + gzip_len(&dir.join("shim.js")),
        );
        figures.insert(
            "compare".into(),
            json!({"bundle": dir.display().to_string(), "rows": cmp_rows,
                   "before_wasm_gzip_bytes": old_wasm, "before_js_gzip_bytes": old_js}),
        );
        compare_md = format!(
            "\n### Before / after (`--compare {}`)\n\n\
             `rust-before` is another build of the worker, in a workerd of its own, measured in the\n\
             same interleaved rounds as `rust` (p50 / p99 ms; medians over rounds), and the CPU time\n\
             its workerd spends per call (ms; steadier than latency on a shared machine). Bundle before{built_at}:\n\
             wasm {old_wasm} B gzip, JS glue {old_js} B gzip.\n\n{table}",
            dir.display()
        );
    }
    figures.insert("rows".into(), json!(rows));
    figures.insert("rounds".into(), json!(args.run.rounds));
    figures.insert("secs_per_measurement".into(), json!(args.run.secs));
    figures.insert("wasm_gzip_bytes".into(), json!(wasm_gz));
    figures.insert("js_gzip_bytes".into(), json!(js_gz));
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(
        &args.out,
        serde_json::to_string_pretty(&serde_json::Value::Object(figures))?,
    )?;
    let md = format!(
        "## Edge worker: added latency\n\n\
         Command: `cargo xtask bench edge` (figures: `target/bench/edge.json`).\n\n\
         Closed-loop clients on loopback; the mock provider answers at once; {rounds} interleaved\n\
         rounds of {secs} s per cell, medians over rounds. `js` is a minimal JavaScript passthrough\n\
         worker in the same workerd; `rust` is Tollgate's worker (auth, routing, tap, record shipped\n\
         to a real collector, production batching: one POST per 50 ms). `js measuring` is the\n\
         yardstick for the work itself: the same per-call job in plain JavaScript\n\
         (`edge_worker::local::MEASURING_JS`: body parsed and amended, answer teed or piped through a\n\
         `TransformStream` that finds and strips the usage chunk, event-id header, records batched\n\
         every 50 ms). `rust floor` is the least any Rust → Wasm worker that acts on the body does\n\
         (crate `edge-floor`: read the body into wasm, forward it; nothing else); it is measured\n\
         after the others, in a workerd of its own, and `floor ÷ js` is against the passthrough\n\
         there (while the floor ran alongside, Tollgate's worker measured a third slower). `floor, JS\n\
         handler` is the same work with the handler in JavaScript and one synchronous call into wasm\n\
         that copies the body in and out (`edge_worker::local::FLOOR_JS_HANDLER_SHIM_JS`): the floor\n\
         of a worker whose Rust core is called synchronously, without wasm-bindgen's futures.\n\
         Latency is to the last byte of the response; p50 / p99 in ms.\n\n\
         | mode | clients | mock direct | js passthrough | js measuring | rust floor | floor, JS handler | rust worker | rust added p50 | rust ÷ js p50 | floor ÷ js p50 | floor, JS handler ÷ js p50 | js measuring ÷ js p50 | rust req/s |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n{md_rows}\n\
         Bundle: wasm {wasm_gz} B gzip, JS glue {js_gz} B gzip.\n\n\
         ### With a hard budget guarding every call\n\n\
         `rust+budget` is the same worker with one hard budget on the caller's org: every call reserves in\n\
         the budget's `BudgetGuard` Durable Object before it is sent and settles after (p50 / p99 ms).\n\n\
         | mode | clients | budgets off | budget guard | added by the guard |\n|---|---|---|---|---|\n{guard_rows}\n\
         ### The collector's share: the worker with its records to a null sink\n\n\
         `rust-nullsink` is the same worker, in a workerd of its own, shipping its records to a sink \
         that answers 202 at once and keeps nothing; `rust` ships them to the real collector, which \
         inserts into ClickHouse — on the same two cores as the client, the mock and workerd. In \
         production the collector and ClickHouse run elsewhere: the null sink's figures are the \
         edge's own (p50 / p99 ms; req/s as a ratio to the passthrough's).\n\n\
         | mode | clients | js passthrough | rust worker | rust, records to a null sink | rust ÷ js p50 | null sink ÷ js p50 | rust ÷ js p99 | null sink ÷ js p99 | rust ÷ js req/s | null sink ÷ js req/s |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n{tail_rows}\n\
         ### What users feel: a realistic stream\n\n\
         The provider's headers and first chunk after {FEEL_FIRST_MS} ms, then {FEEL_CHUNKS} chunks \
         {FEEL_GAP_MS} ms apart; {FEEL_CLIENTS} streams at a time, each body read as it arrives (each \
         client's first stream, which opens its connections, not counted). Time \
         to the first byte of the body, and the gap between reads of it (p50 / p99 ms, medians over \
         rounds); added = through the target minus the mock direct.\n\n\
         | target | time to first byte | added p50 | gap between chunks | added gap p50 / p99 |\n\
         |---|---|---|---|---|\n{feel_rows}\n\
         ### CPU per call and memory (workerd, from `/proc`)\n\n\
         CPU time (user + system) of the workerd process during each cell ÷ the calls in it, ms; \
         each cell runs alone. Operators on Cloudflare pay for this CPU.\n\n\
         | mode | clients | js passthrough | js measuring | rust floor | floor, JS handler | rust worker | rust, null sink | rust+budget | rust ÷ js | null sink ÷ js |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n{cpu_rows}\n{memory_md}\n{compare_md}",
        rounds = args.run.rounds,
        secs = args.run.secs,
    );
    std::fs::write(&args.markdown, md)?;
    drop(worker);
    drop(bench);
    Ok(())
}
