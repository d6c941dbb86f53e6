//! `bench-edge-profile` (run by `cargo xtask bench edge-profile`): where the edge worker's time goes.
//!
//! Serves a build of the worker that keeps its Rust names (`target/edge-names`) in a workerd
//! with V8's inspector on, behind it the mock provider and a real collector (production
//! batching), and records a CPU profile of the isolate (`edge-worker/tools/profile.mjs`) while
//! a closed loop of clients calls it — non-streaming, then streaming. Writes the profiles
//! (`target/bench/edge-profile-<mode>.cpuprofile`, for Chrome's DevTools) and a summary: the
//! isolate's busy time by kind of code (the worker's Rust, wasm-bindgen's glue, Tollgate's own
//! JavaScript, each runtime builtin, V8's own) and the top functions by self time.

use std::path::PathBuf;
use std::process::Command;

use clap::Parser;
use serde_json::Value;

use tollgate_e2e::bench_support::{chat_body, closed_loop, cpu_secs, median, EdgeBench};
use tollgate_e2e::harness::{free_port, repo_root, WorkerdProc};

#[derive(Parser)]
struct Args {
    /// Seconds of profile per mode.
    #[arg(long, default_value_t = 8.0)]
    secs: f64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// The bundle profiled (built with its name section).
    #[arg(long, default_value = "target/edge-names")]
    bundle: PathBuf,
    #[arg(long, default_value = "target/bench/edge-profile.json")]
    out: PathBuf,
    #[arg(long, default_value = "target/bench/edge-profile.md")]
    markdown: PathBuf,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let root = repo_root();
    let bench = EdgeBench::start("profile_edge", "org_profile").await?;
    let key = bench.key.clone();
    let inspector = format!("127.0.0.1:{}", free_port());
    let worker = WorkerdProc::start_inspected(
        root.join(&args.bundle),
        bench.bindings(),
        Vec::new(),
        Default::default(),
        Some(&inspector),
    );
    let port = inspector
        .rsplit_once(':')
        .map_or("", |(_, p)| p)
        .to_string();
    let target = format!("{}/chat/completions", worker.base_url());
    let auth = [("authorization".to_string(), format!("Bearer {key}"))];
    std::fs::create_dir_all(root.join("target/bench"))?;

    let mut results = serde_json::Map::new();
    for mode in ["json", "stream"] {
        let body = chat_body(mode == "stream");
        // Warm up: the isolate compiled, caches filled.
        closed_loop(&target, &auth, &body, args.clients, 1.0)?;
        let out = root.join(format!("target/bench/edge-profile-{mode}.cpuprofile"));
        let recorder = Command::new("node")
            .arg(root.join("edge-worker/tools/profile.mjs"))
            .args([port.as_str(), &args.secs.to_string()])
            .arg(&out)
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let cpu_before = cpu_secs(worker.proc.pid());
        // The load outlasts the recording on both sides.
        let latencies = closed_loop(&target, &auth, &body, args.clients, args.secs + 1.5)?;
        let cpu_ms_per_call =
            (cpu_secs(worker.proc.pid()) - cpu_before) * 1000.0 / latencies.len().max(1) as f64;
        let output = tokio::task::spawn_blocking(move || recorder.wait_with_output()).await??;
        if !output.status.success() {
            return Err(format!("profile.mjs failed for {mode}: {}", output.status).into());
        }
        let mut summary: Value = serde_json::from_slice(&output.stdout)?;
        summary["calls"] = latencies.len().into();
        summary["p50_ms"] = median(latencies.clone()).into();
        summary["workerd_cpu_ms_per_call"] = cpu_ms_per_call.into();
        println!(
            "bench-edge-profile {mode}: {} calls, p50 {:.3} ms, workerd CPU {:.3} ms/call; {}",
            latencies.len(),
            median(latencies.clone()),
            cpu_ms_per_call,
            out.display()
        );
        results.insert(mode.to_string(), summary);
    }
    let results = Value::Object(results);
    std::fs::write(root.join(&args.out), serde_json::to_vec_pretty(&results)?)?;
    std::fs::write(root.join(&args.markdown), markdown(&results, &args))?;
    drop(worker);
    Ok(())
}

/// The BENCHMARKS section.
fn markdown(results: &Value, args: &Args) -> String {
    let mut md = format!(
        "## Edge worker: where the time goes\n\n\
         Command: `cargo xtask bench edge-profile` (profiles: `target/bench/edge-profile-*.cpuprofile`, \
         figures: `target/bench/edge-profile.json`).\n\n\
         A CPU profile of the worker's isolate (V8's sampling profiler through workerd's inspector, \
         50 µs interval) over {} s per mode, {} client(s) in a closed loop on the mock provider; the \
         worker built with its Rust names (not shrunk by wasm-opt), records shipped to a real \
         collector with production batching. Shares are of the isolate's busy time (idle excluded); \
         \"runtime, native\" is workerd's own C++ (sockets, HTTP, streams) as V8 sees it.\n\n",
        args.secs, args.clients
    );
    let modes = ["json", "stream"];
    let pct = |v: &Value| {
        v.as_f64()
            .map_or("—".to_string(), |s| format!("{:.1}%", s * 100.0))
    };
    md.push_str("| | json | stream |\n|---|---|---|\n");
    let row = |label: &str, f: &dyn Fn(&Value) -> String| {
        format!(
            "| {label} | {} |\n",
            modes.map(|m| f(&results[m])).join(" | ")
        )
    };
    md.push_str(&row("calls profiled", &|r| r["calls"].to_string()));
    md.push_str(&row("p50 ms (profiler on)", &|r| {
        format!("{:.3}", r["p50_ms"].as_f64().unwrap_or(0.0))
    }));
    md.push_str(&row("workerd CPU ms per call", &|r| {
        format!(
            "{:.3}",
            r["workerd_cpu_ms_per_call"].as_f64().unwrap_or(0.0)
        )
    }));
    // Every kind seen in either mode, largest first (by json).
    let mut kinds: Vec<String> = Vec::new();
    for m in modes {
        for k in results[m]["kinds"].as_array().into_iter().flatten() {
            let name = k["name"].as_str().unwrap_or_default().to_string();
            if !kinds.contains(&name) {
                kinds.push(name);
            }
        }
    }
    let share_of = |m: &str, name: &str| {
        results[m]["kinds"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|k| k["name"] == name)
            .map_or("—".to_string(), |k| pct(&k["share"]))
    };
    for k in &kinds {
        md.push_str(&format!(
            "| {k} | {} | {} |\n",
            share_of("json", k),
            share_of("stream", k)
        ));
    }
    for m in modes {
        md.push_str(&format!(
            "\nTop functions by self time, {m}:\n\n| share | function |\n|---|---|\n"
        ));
        for f in results[m]["top"].as_array().into_iter().flatten().take(15) {
            let name = f["name"].as_str().unwrap_or_default().replace('|', "\\|");
            md.push_str(&format!("| {} | `{}` |\n", pct(&f["share"]), name));
        }
    }
    md
}
