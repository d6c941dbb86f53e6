//! `soak` (run by `cargo xtask soak --minutes N`): the whole stack under mixed load while a
//! fault injector kills and restarts its pieces; then every answered call and every
//! acknowledged record is reconciled with ClickHouse. Exits non-zero if anything was lost or
//! duplicated or the rollups are off. See `tollgate_e2e::soak`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tollgate_e2e::harness::repo_root;
use tollgate_e2e::soak::{self, SoakOptions};

#[derive(Parser)]
#[command(
    name = "soak",
    about = "The whole stack under load and faults, then reconciled"
)]
struct Args {
    /// Minutes of load (fractions allowed).
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Seconds between faults (± a quarter).
    #[arg(long, default_value_t = 18)]
    fault_every: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 6)]
    clients: usize,
    /// Collectors behind a round-robin load balancer (faults hit any of them).
    #[arg(long, default_value_t = 1)]
    collectors: usize,
    /// Milliseconds a client pauses between calls (± half).
    #[arg(long, default_value_t = 60)]
    think_ms: u64,
    #[arg(long, default_value_t = 12)]
    seed: u64,
    /// Store on the dev cluster (2 shards × 2 replicas + ZooKeeper), with replica and
    /// ZooKeeper faults in the rotation.
    #[arg(long)]
    cluster: bool,
    /// Write the figures here (JSON).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write the BENCHMARKS.md section here.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("soak: error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Result<bool, soak::BoxError> {
    if !(args.minutes > 0.0 && args.minutes <= 24.0 * 60.0) {
        return Err("--minutes must be between 0 and 1440".into());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // Ctrl-C or SIGTERM: stop early and clean up (every child is killed when its guard drops).
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        rt.spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return,
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprintln!("soak: interrupted; stopping everything");
            flag.store(true, Ordering::SeqCst);
        });
    }
    let opts = SoakOptions {
        duration: Duration::from_secs_f64(args.minutes * 60.0),
        fault_every: Duration::from_secs(args.fault_every.max(5)),
        clients: args.clients.max(1),
        collectors: args.collectors.clamp(1, 8),
        think: Duration::from_millis(args.think_ms),
        seed: args.seed,
        dir: repo_root().join("target/soak"),
        cluster: args.cluster,
    };
    let report = soak::run(&rt, &opts, &interrupted)?;
    if let Some(out) = &args.out {
        write(out, &serde_json::to_string_pretty(&report.json)?)?;
    }
    if let Some(md) = &args.markdown {
        write(md, &report.markdown)?;
    }
    println!("\n{}", report.markdown);
    for f in &report.failures {
        eprintln!("soak: FAILED: {f}");
    }
    if report.failures.is_empty() {
        // A passing run's ClickHouse data (gigabytes of small parts: the server is killed
        // before it merges them) is of no further use; the logs stay. A failing run keeps it
        // all for the post-mortem.
        let data = opts.dir.join("clickhouse").join("data");
        if let Err(e) = std::fs::remove_dir_all(&data) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("soak: could not remove {}: {e}", data.display());
            }
        }
    }
    Ok(report.failures.is_empty())
}

fn write(path: &std::path::Path, text: &str) -> Result<(), soak::BoxError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()).into())
}
