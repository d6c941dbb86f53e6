//! `cargo xtask repeat`: runs one test (or a whole test target) again and again, optionally
//! with a CPU hog beside it, and stops at the first failure — how a test that fails one run in
//! five is found before CI finds it.
//!
//! ```text
//! cargo xtask repeat --times 20 --hog 2 -p tollgate-e2e --test collector_e2e sigkill_at_random_moments
//! ```
//!
//! The hog is `--hog N` threads spinning in this process (what `stress-ng --cpu N` does), so it
//! needs nothing installed. The dev ClickHouse is started for the runs (and stopped after, if
//! this command started it). The workspace's binaries and the test binary are built once first,
//! so each iteration runs this tree's code and measures the test, not the build.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::util::{cargo, exec, step, Result};

#[derive(clap::Args)]
pub struct RepeatArgs {
    /// How many runs in a row must pass.
    #[arg(long, default_value_t = 20)]
    pub times: u32,
    /// Threads of busy loop beside the tests (0: none).
    #[arg(long, default_value_t = 0)]
    pub hog: usize,
    /// The package the test is in.
    #[arg(short, long)]
    pub package: String,
    /// The test target (`tests/<name>.rs`); the library's tests when omitted.
    #[arg(long)]
    pub test: Option<String>,
    /// A test name filter, as `cargo test` takes it.
    pub filter: Option<String>,
}

pub fn run(args: &RepeatArgs) -> Result {
    step("repeat: build the workspace's binaries and the test binary once");
    // End-to-end tests run the services' binaries (collector, dashboard-api, …): build them
    // from this tree, or a test would run an older collector.
    exec(
        "build binaries",
        cargo().args(["build", "--workspace", "--bins"]),
    )?;
    exec(
        "build",
        cargo_test(&args.package, args.test.as_deref()).arg("--no-run"),
    )?;
    let clickhouse = crate::ch::DevServerGuard::start()?;
    let stop = Arc::new(AtomicBool::new(false));
    let hogs: Vec<_> = (0..args.hog)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x: u64 = 1;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..100_000 {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    }
                    std::hint::black_box(x);
                }
            })
        })
        .collect();
    let mut durations = Vec::new();
    let mut outcome = Ok(());
    for i in 1..=args.times {
        step(&format!(
            "repeat: run {i} of {} ({} hog threads)",
            args.times, args.hog
        ));
        let started = Instant::now();
        let mut cmd = cargo_test(&args.package, args.test.as_deref());
        cmd.env("TOLLGATE_CLICKHOUSE_URL", clickhouse.url());
        if let Some(f) = &args.filter {
            cmd.args(["--", f]);
        }
        if let Err(e) = exec("test", &mut cmd) {
            outcome = Err(crate::util::Error(format!(
                "run {i} of {} failed: {e}",
                args.times
            )));
            break;
        }
        durations.push(started.elapsed().as_secs_f64());
    }
    stop.store(true, Ordering::Relaxed);
    for h in hogs {
        let _ = h.join();
    }
    drop(clickhouse);
    if outcome.is_ok() {
        durations.sort_by(f64::total_cmp);
        let median = durations.get(durations.len() / 2).copied().unwrap_or(0.0);
        println!(
            "\nxtask repeat: {} of {} runs passed in a row (median {median:.1} s a run, {} hog threads)",
            durations.len(),
            args.times,
            args.hog
        );
    }
    outcome
}

fn cargo_test(package: &str, test: Option<&str>) -> std::process::Command {
    let mut c = cargo();
    c.args(["test", "-p", package]);
    match test {
        Some(t) => c.args(["--test", t]),
        None => c.arg("--lib"),
    };
    c
}
