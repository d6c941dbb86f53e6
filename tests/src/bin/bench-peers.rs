//! `bench-peers` (run by `cargo xtask bench peers`): Tollgate's edge beside two open-source AI
//! gateways, against the same mock provider, in one run — Portkey's gateway (npm
//! `@portkey-ai/gateway`) and LiteLLM's proxy (PyPI `litellm[proxy]`, no database), both pinned
//! and installed by the xtask for this command only — with the mock direct and the minimal
//! JavaScript passthrough in workerd as yardsticks.
//!
//! Closed-loop clients on loopback, interleaved rounds, medians over rounds: non-streaming at
//! 1 and 16 clients and streaming at 1 client; latency to the last byte (p50 / p99 ms),
//! requests/s, and the CPU time each gateway's process spends per call (from
//! `/proc/<pid>/stat`; each cell runs alone). Tollgate's worker ships its records to a real
//! collector, as in production; the peers log nothing and keep no database.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use edge_worker::local::{JsBaseline, PASSTHROUGH_JS};
use serde_json::json;
use tollgate_e2e::bench_support::{
    chat_body, closed_loop, cpu_secs, median, percentile, with_retries, EdgeBench, Rounds,
};
use tollgate_e2e::harness::{free_port, Proc, WorkerdProc};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    run: Rounds,
    /// `node_modules` holding `@portkey-ai/gateway`.
    #[arg(long)]
    portkey: PathBuf,
    /// Portkey's version, for the report.
    #[arg(long)]
    portkey_version: String,
    /// The `litellm` executable (the proxy's CLI).
    #[arg(long)]
    litellm: PathBuf,
    /// LiteLLM's version, for the report.
    #[arg(long)]
    litellm_version: String,
    #[arg(long, default_value = "target/bench/peers.json")]
    out: PathBuf,
    #[arg(long, default_value = "target/bench/peers.md")]
    markdown: PathBuf,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// LiteLLM's proxy refuses to start without a master key (and then requires it as the bearer).
const LITELLM_MASTER_KEY: &str = "sk-bench-litellm-master-0123456789abcdef";

/// (mode, clients) cells measured.
const CELLS: &[(&str, usize)] = &[("json", 1), ("stream", 1), ("json", 16)];
const TARGETS: &[&str] = &["mock", "js", "tollgate", "portkey", "litellm"];

/// One gateway under test: where to send, with which headers, and its process (for CPU).
struct Target {
    url: String,
    headers: Vec<(String, String)>,
    pid: Option<u32>,
}

/// Waits until `target` answers a chat completion with 200 (a gateway that is still starting
/// refuses or errors), up to `limit`; fails at once when its process `proc` has exited.
fn wait_ready(
    name: &str,
    target: &Target,
    mut proc: Option<&mut Proc>,
    limit: Duration,
) -> Result<(), BoxError> {
    let deadline = Instant::now() + limit;
    loop {
        match closed_loop(&target.url, &target.headers, &chat_body(false), 1, 0.05) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(format!("{name} did not become ready in {limit:?}: {e}").into())
            }
            Err(e) => {
                if let Some(p) = proc.as_deref_mut() {
                    if !p.is_running() {
                        let log = p.log();
                        let tail: String = log
                            .chars()
                            .skip(log.chars().count().saturating_sub(2000))
                            .collect();
                        return Err(format!(
                            "{name} exited while starting ({e}); the end of its log:\n{tail}"
                        )
                        .into());
                    }
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let bench = EdgeBench::start("bench_peers", "org_bench").await?;
    let (mock, key, dir) = (&bench.mock, bench.key.clone(), &bench.dir);
    let js = JsBaseline {
        name: "passthrough",
        source: PASSTHROUGH_JS,
        listen: format!("127.0.0.1:{}", free_port()),
        upstream: mock.base_url(),
        key: "sk-mock".into(),
        wasm: None,
    };
    let worker = WorkerdProc::start_with(bench.bindings(), vec![js.clone()]);

    let portkey_port = free_port();
    let mut portkey = Proc::spawn(
        "portkey",
        std::process::Command::new("node")
            .arg(
                args.portkey
                    .join("@portkey-ai/gateway/build/start-server.js"),
            )
            .arg(format!("--port={portkey_port}"))
            .arg("--headless"),
        dir.path().join("portkey.log"),
    );
    let litellm_port = free_port();
    let litellm_config = dir.path().join("litellm.yaml");
    std::fs::write(
        &litellm_config,
        format!(
            "model_list:\n  - model_name: gpt-4o-mini\n    litellm_params:\n      model: openai/gpt-4o-mini\n      api_base: {}\n      api_key: sk-mock\nlitellm_settings:\n  telemetry: false\n",
            mock.base_url()
        ),
    )?;
    let mut litellm = Proc::spawn(
        "litellm",
        std::process::Command::new(&args.litellm)
            .arg("--config")
            .arg(&litellm_config)
            .args(["--host", "127.0.0.1", "--port", &litellm_port.to_string()])
            .env("LITELLM_LOG", "ERROR")
            .env("LITELLM_MASTER_KEY", LITELLM_MASTER_KEY)
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True"),
        dir.path().join("litellm.log"),
    );
    let bearer = |k: &str| vec![("authorization".to_string(), format!("Bearer {k}"))];
    let targets = [
        Target {
            url: format!("{}/chat/completions", mock.base_url()),
            headers: bearer("sk-mock"),
            pid: None,
        },
        Target {
            url: format!("http://{}/v1/chat/completions", js.listen),
            headers: bearer("sk-mock"),
            pid: Some(worker.proc.pid()),
        },
        Target {
            url: format!("{}/chat/completions", worker.base_url()),
            headers: bearer(&key),
            pid: Some(worker.proc.pid()),
        },
        Target {
            url: format!("http://127.0.0.1:{portkey_port}/v1/chat/completions"),
            headers: [
                bearer("sk-mock"),
                vec![
                    ("x-portkey-provider".into(), "openai".into()),
                    ("x-portkey-custom-host".into(), mock.base_url()),
                ],
            ]
            .concat(),
            pid: Some(portkey.pid()),
        },
        Target {
            url: format!("http://127.0.0.1:{litellm_port}/v1/chat/completions"),
            headers: bearer(LITELLM_MASTER_KEY),
            pid: Some(litellm.pid()),
        },
    ];
    for (name, t) in TARGETS.iter().zip(&targets) {
        let proc = match *name {
            "portkey" => Some(&mut portkey),
            "litellm" => Some(&mut litellm),
            _ => None,
        };
        wait_ready(name, t, proc, Duration::from_secs(180))?;
    }
    // A gateway that cannot stream at all is reported so, and its stream cells skipped (Portkey
    // 1.15.2 under Node 20 answers every stream with a 500: `TypeError: immutable` when it
    // rewrites the headers of the provider's streamed response).
    let stream_fails: Vec<Option<String>> = targets
        .iter()
        .map(|t| closed_loop(&t.url, &t.headers, &chat_body(true), 1, 0.05).err())
        .collect();
    for (name, e) in TARGETS.iter().zip(&stream_fails) {
        if let Some(e) = e {
            println!("  {name} cannot stream ({e}); its stream cells are skipped");
        }
    }
    println!("  all gateways answer; measuring");

    // (target, cell) → per round (p50, p99, req/s, CPU ms per call).
    let mut results: std::collections::BTreeMap<(usize, usize), Vec<[f64; 4]>> = Default::default();
    // Warm-up: every path once (connection pools, JIT, isolate start).
    for ((name, t), fails) in TARGETS.iter().zip(&targets).zip(&stream_fails) {
        for stream in [false, true] {
            if stream && fails.is_some() {
                continue;
            }
            with_retries(&format!("{name} warm-up"), || {
                closed_loop(&t.url, &t.headers, &chat_body(stream), 2, 1.0)
            })?;
        }
    }
    for round in 0..args.run.rounds {
        for (ci, &(mode, c)) in CELLS.iter().enumerate() {
            for (ti, (name, t)) in TARGETS.iter().zip(&targets).enumerate() {
                if mode == "stream" && stream_fails[ti].is_some() {
                    continue;
                }
                let cell = format!("{name} {mode} c={c} round {}", round + 1);
                let cpu0 = t.pid.map(cpu_secs);
                let lat = with_retries(&cell, || {
                    closed_loop(
                        &t.url,
                        &t.headers,
                        &chat_body(mode == "stream"),
                        c,
                        args.run.secs,
                    )
                })?;
                let cpu_ms = match (cpu0, t.pid) {
                    (Some(before), Some(pid)) => {
                        (cpu_secs(pid) - before) * 1000.0 / lat.len().max(1) as f64
                    }
                    _ => f64::NAN,
                };
                results.entry((ti, ci)).or_default().push([
                    percentile(&lat, 0.5),
                    percentile(&lat, 0.99),
                    lat.len() as f64 / args.run.secs,
                    cpu_ms,
                ]);
            }
        }
        println!("  round {} of {} done", round + 1, args.run.rounds);
    }

    let med = |ti: usize, ci: usize| -> [f64; 4] {
        let v = &results[&(ti, ci)];
        std::array::from_fn(|i| median(v.iter().map(|x| x[i]).collect()))
    };
    let mut md_rows = String::new();
    let mut rows = Vec::new();
    for (ci, &(mode, c)) in CELLS.iter().enumerate() {
        let js = med(1, ci);
        for (ti, name) in TARGETS.iter().enumerate() {
            if mode == "stream" && stream_fails[ti].is_some() {
                md_rows.push_str(&format!(
                    "| {mode} | {c} | {name} | fails: every stream answered with an error | — | — | — |\n"
                ));
                rows.push(json!({"mode": mode, "concurrency": c, "target": name,
                    "error": stream_fails[ti]}));
                continue;
            }
            let m = med(ti, ci);
            let cpu = if m[3].is_nan() {
                "—".to_string()
            } else {
                format!("{:.3}", m[3])
            };
            md_rows.push_str(&format!(
                "| {mode} | {c} | {name} | {:.2} / {:.2} | {:.2} | {:.0} | {cpu} |\n",
                m[0],
                m[1],
                m[0] / js[0],
                m[2]
            ));
            rows.push(json!({"mode": mode, "concurrency": c, "target": name,
                "p50_ms": m[0], "p99_ms": m[1], "rps": m[2], "cpu_ms_per_call": m[3],
                "p50_to_js": m[0] / js[0]}));
            println!(
                "  {mode:<6} c={c:<2} {name:<9} p50 {:.2} ms (×{:.2} of js) p99 {:.2} ms {:.0} req/s cpu {cpu} ms/call",
                m[0],
                m[0] / js[0],
                m[1],
                m[2]
            );
        }
    }
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(
        &args.out,
        serde_json::to_string_pretty(&json!({
            "rounds": args.run.rounds, "secs_per_measurement": args.run.secs,
            "portkey_version": args.portkey_version, "litellm_version": args.litellm_version,
            "rows": rows}))?,
    )?;
    let md = format!(
        "## Edge among its peers: Tollgate, Portkey and LiteLLM on one mock\n\n\
         Command: `cargo xtask bench peers` (figures: `target/bench/peers.json`). Portkey's gateway \
         {pv} (npm `@portkey-ai/gateway`, `node build/start-server.js --headless`, provider \
         `openai` with the mock as custom host) and LiteLLM's proxy {lv} (PyPI `litellm[proxy]`, \
         one model routed to the mock, no database, one worker), installed by the command into \
         `target/peers/`, never by `setup` or CI. `js` is the minimal JavaScript passthrough in \
         workerd; `tollgate` is the edge worker in the same workerd (auth, routing, tap, a record \
         shipped to a real collector for every call). Closed-loop clients on loopback, {rounds} \
         interleaved rounds of {secs} s per cell, medians over rounds; latency to the last byte, \
         p50 / p99 ms; CPU per call from `/proc` (the process each gateway runs in; `js` and \
         `tollgate` share one workerd, each cell runs alone).\n\n\
         | mode | clients | target | p50 / p99 | p50 ÷ js | req/s | CPU ms per call |\n\
         |---|---|---|---|---|---|---|\n{md_rows}",
        pv = args.portkey_version,
        lv = args.litellm_version,
        rounds = args.run.rounds,
        secs = args.run.secs,
    );
    std::fs::write(&args.markdown, md)?;
    drop(portkey);
    drop(litellm);
    drop(worker);
    drop(bench);
    Ok(())
}
