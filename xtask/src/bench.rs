//! `cargo xtask bench …`: benchmarks that write their figures to `target/bench/` and their
//! section of `docs/BENCHMARKS.md`.
//!
//! `rollups`: the `bench_rollups` example of `tollgate-clickhouse` (release build) against the
//! dev ClickHouse — 1M and 10M synthetic raw events, the dashboard's daily overview from the
//! rollup vs from the raw table.
//!
//! `peers`: `bench-peers` — Tollgate's edge beside Portkey's gateway and LiteLLM's proxy
//! (`peers.rs` installs them, pinned, for this command only).
//!
//! `cluster`: `bench-cluster` of `tollgate-e2e` against the dev server and the dev cluster
//! (started for the run when down, stopped after) — ingest, bytes on disk and dashboard latency,
//! one server vs cluster in one run; `docs/SCALING.md` is built from its figures.

use std::fs;
use std::path::Path;

use crate::ch::DevServerGuard;
use crate::fail;
use crate::util::{cargo, exec, repo_root, step, Result};

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Rollups vs raw for the daily overview at 1M and 10M raw rows (takes a few minutes).
    Rollups {
        /// Raw row counts to measure at, comma-separated.
        #[arg(long, default_value = "1000000,10000000")]
        sizes: String,
        /// Runs per query (the median is reported).
        #[arg(long, default_value_t = 5)]
        runs: u32,
    },
    /// Collector: HTTP → spool (fsync) → ClickHouse vs the client inserter's ceiling; accept latency; RSS.
    Collector {
        #[arg(long, default_value_t = 500_000)]
        records: u64,
    },
    /// Edge worker: added latency vs the mock and a JS passthrough worker; bundle size.
    Edge {
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Another build of the worker (a bundle directory such as a copy of `target/edge/`
        /// from an earlier commit), measured in the same rounds: a before/after table.
        #[arg(long)]
        compare: Option<String>,
        /// A quick A/B of `--compare` against the current build: only the two builds (and the
        /// passthrough) in the same rounds, no floor, no realistic stream; the before/after
        /// table is printed and BENCHMARKS.md left as it is.
        #[arg(long, requires = "compare")]
        ab: bool,
        /// With `--ab`: both builds ship their records to a sink that keeps nothing (the edge's
        /// own cost, without the collector and ClickHouse on the same cores).
        #[arg(long, requires = "ab")]
        null_sink: bool,
    },
    /// Edge worker: a CPU profile of its isolate (V8's, through workerd's inspector) under a
    /// closed loop, summarised by kind of code and top functions.
    EdgeProfile {
        /// Seconds of profile per mode (json, stream).
        #[arg(long, default_value_t = 8.0)]
        secs: f64,
        /// Concurrent clients.
        #[arg(long, default_value_t = 1)]
        clients: usize,
    },
    /// Tollgate's edge beside Portkey's gateway and LiteLLM's proxy on one mock (both pinned,
    /// installed into target/peers/ for this command only).
    Peers {
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Dashboard API: overview and daily series latency at 1M and 10M raw events.
    Dashboard {
        #[arg(long, default_value = "1000000,10000000")]
        sizes: String,
    },
    /// One ClickHouse server vs the dev cluster (2 shards × 2 replicas), same data: ingest rows/s,
    /// bytes on disk, dashboard p50/p99 (the figures docs/SCALING.md is built from).
    Cluster {
        /// Records per ingest run (one synthetic day).
        #[arg(long, default_value_t = 500_000)]
        records: u64,
        /// Rounds of the ingest runs (medians are reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Forecast back-test: MAPE and interval coverage vs a straight line and a trailing mean.
    Forecast,
    /// Web dashboard page weight and load time (the headless-Chromium test).
    Web,
    /// Every benchmark, then docs/BENCHMARKS.md regenerated from target/bench/.
    All,
}

pub fn run(cmd: &BenchCommand) -> Result {
    match cmd {
        BenchCommand::Rollups { sizes, runs } => rollups(sizes, *runs),
        BenchCommand::Collector { records } => {
            service_bench("collector", &["--records", &records.to_string()])
        }
        BenchCommand::Edge {
            rounds,
            compare,
            ab,
            null_sink,
        } => {
            crate::edge::build()?;
            if !*ab {
                crate::edge::build_floor()?;
            }
            let rounds = rounds.to_string();
            let compare = compare
                .as_ref()
                .map(|dir| repo_root().join(dir).display().to_string());
            let mut extra = vec!["--rounds", &rounds];
            if let Some(dir) = &compare {
                extra.extend(["--compare", dir.as_str()]);
            }
            if *ab {
                extra.push("--ab");
                if *null_sink {
                    extra.push("--null-sink");
                }
                return run_service_bench("edge", &extra);
            }
            service_bench("edge", &extra)
        }
        BenchCommand::EdgeProfile { secs, clients } => {
            crate::edge::build_with_names()?;
            service_bench(
                "edge-profile",
                &[
                    "--secs",
                    &secs.to_string(),
                    "--clients",
                    &clients.to_string(),
                ],
            )
        }
        BenchCommand::Peers { rounds } => {
            let peers = crate::peers::install()?;
            crate::edge::build()?;
            let rounds = rounds.to_string();
            let mut extra = vec!["--rounds", rounds.as_str()];
            extra.extend(peers.iter().map(String::as_str));
            service_bench("peers", &extra)
        }
        BenchCommand::Dashboard { sizes } => service_bench("dashboard", &["--sizes", sizes]),
        BenchCommand::Cluster { records, rounds } => {
            // Stopped again when dropped, if this command started it.
            let _cluster = crate::ch::ClusterGuard::start()?;
            service_bench(
                "cluster",
                &[
                    "--records",
                    &records.to_string(),
                    "--rounds",
                    &rounds.to_string(),
                ],
            )
        }
        BenchCommand::Forecast => {
            step("bench forecast");
            exec(
                "backtest",
                cargo().args([
                    "run",
                    "--release",
                    "--quiet",
                    "-p",
                    "tollgate-forecast",
                    "--example",
                    "backtest",
                    "--",
                    "--out",
                    "target/bench/forecast.json",
                    "--markdown",
                    "target/bench/forecast.md",
                ]),
            )?;
            let root = repo_root();
            let section = fs::read_to_string(root.join("target/bench/forecast.md"))?;
            splice_section(&root.join("docs/BENCHMARKS.md"), "forecast", &section)
        }
        BenchCommand::Web => web(),
        BenchCommand::All => {
            rollups("1000000,10000000", 5)?;
            run(&BenchCommand::Forecast)?;
            run(&BenchCommand::Collector { records: 500_000 })?;
            run(&BenchCommand::Edge {
                rounds: 3,
                compare: None,
                ab: false,
                null_sink: false,
            })?;
            run(&BenchCommand::Peers { rounds: 3 })?;
            run(&BenchCommand::Dashboard {
                sizes: "1000000,10000000".into(),
            })?;
            web()?;
            run(&BenchCommand::Cluster {
                records: 500_000,
                rounds: 3,
            })?;
            machine_section()?;
            println!("bench all: docs/BENCHMARKS.md regenerated from target/bench/");
            Ok(())
        }
    }
}

/// Runs `bench-<name>` (a release binary of `tollgate-e2e`) against the dev ClickHouse and
/// splices its section into docs/BENCHMARKS.md.
fn service_bench(name: &str, extra: &[&str]) -> Result {
    let root = repo_root();
    run_service_bench(
        name,
        &[
            extra,
            &[
                "--out",
                &format!("target/bench/{name}.json"),
                "--markdown",
                &format!("target/bench/{name}.md"),
            ],
        ]
        .concat(),
    )?;
    let section = fs::read_to_string(root.join(format!("target/bench/{name}.md")))?;
    splice_section(&root.join("docs/BENCHMARKS.md"), name, &section)?;
    println!("    updated docs/BENCHMARKS.md (section `{name}`)");
    Ok(())
}

/// Builds the services and runs `bench-<name>` with `extra` against the dev ClickHouse.
fn run_service_bench(name: &str, extra: &[&str]) -> Result {
    let root = repo_root();
    let server = DevServerGuard::start()?;
    step(&format!("bench {name}: release build"));
    exec(
        "release build",
        cargo().args([
            "build",
            "--release",
            "-p",
            "tollgate-collector",
            "-p",
            "tollgate-dashboard-api",
            "-p",
            "tollgate-e2e",
        ]),
    )?;
    step(&format!("bench {name}"));
    let bin = root.join(format!("target/release/bench-{name}"));
    exec(
        &format!("bench-{name}"),
        std::process::Command::new(&bin)
            .args(extra)
            .env("TOLLGATE_CLICKHOUSE_URL", server.url()),
    )
}

/// The web dashboard's page weight and load time, measured by the browser test in headless
/// Chromium (`dashboard-api/tests/web_browser.rs`, which writes target/bench/web.json).
fn web() -> Result {
    let root = repo_root();
    let server = DevServerGuard::start()?;
    step("bench web: the browser test");
    exec(
        "web_browser test",
        cargo()
            .args([
                "test",
                "-p",
                "tollgate-dashboard-api",
                "--test",
                "web_browser",
            ])
            .env("TOLLGATE_CLICKHOUSE_URL", server.url()),
    )?;
    let v: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(root.join("target/bench/web.json"))?)?;
    let f = |k: &str, q: &str| v[k][q].as_f64().unwrap_or(f64::NAN);
    let total: u64 = v["html_bytes"].as_u64().unwrap_or(0)
        + v["resources"]
            .as_array()
            .map_or(0, |r| r.iter().filter_map(|x| x["bytes"].as_u64()).sum());
    let section = format!(
        "## Web dashboard: Overview page weight and load time\n\n\
         Command: `cargo xtask bench web` runs `cargo test -p tollgate-dashboard-api --test web_browser` (headless\n\
         Chromium; figures: `target/bench/web.json`). {} build, browser cache disabled, median of {} loads after a warm-up.\n\n\
         | measure | value | budget |\n|---|---:|---:|\n\
         | Overview page weight, all assets, uncompressed | {total} B | 300 KB |\n\
         | load event | {:.1} ms (max {:.1}) | 1000 ms |\n\
         | DOMContentLoaded | {:.1} ms | |\n\
         | first contentful paint | {:.1} ms | |\n\
         | time to first byte | {:.1} ms | |\n",
        v["build"].as_str().unwrap_or("?"),
        v["load_ms"]["runs"].as_u64().unwrap_or(0),
        f("load_ms", "median"),
        f("load_ms", "max"),
        f("dom_content_loaded_ms", "median"),
        f("first_contentful_paint_ms", "median"),
        f("time_to_first_byte_ms", "median"),
    );
    splice_section(&root.join("docs/BENCHMARKS.md"), "web", &section)
}

/// The machine the figures were measured on.
fn machine_section() -> Result {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024 / 1024);
    let section = format!(
        "## Machine\n\n{cores} cores ({cpu}), {mem} GiB RAM, shared by every process of a benchmark \
         (load generator, services, ClickHouse). Figures are medians; compare ratios within one run.\n\n\
         Regenerate everything: `cargo xtask bench all`."
    );
    splice_section(&repo_root().join("docs/BENCHMARKS.md"), "machine", &section)
}

fn rollups(sizes: &str, runs: u32) -> Result {
    let root = repo_root();
    let server = DevServerGuard::start()?;
    step("bench rollups");
    exec(
        "bench_rollups",
        cargo()
            .args([
                "run",
                "--release",
                "--quiet",
                "-p",
                "tollgate-clickhouse",
                "--example",
                "bench_rollups",
                "--",
                "--sizes",
                sizes,
                "--runs",
                &runs.to_string(),
                "--out",
                "target/bench/rollups.json",
                "--markdown",
                "target/bench/rollups.md",
            ])
            .env("TOLLGATE_CLICKHOUSE_URL", server.url()),
    )?;
    let section = fs::read_to_string(root.join("target/bench/rollups.md"))?;
    splice_section(&root.join("docs/BENCHMARKS.md"), "rollups", &section)?;
    println!("    updated docs/BENCHMARKS.md (section `rollups`)");
    Ok(())
}

/// Replaces the text between `<!-- bench:NAME:begin -->` and `<!-- bench:NAME:end -->` in
/// `doc` (appending the markers and section when absent).
pub(crate) fn splice_section(doc: &Path, name: &str, section: &str) -> Result {
    let begin = format!("<!-- bench:{name}:begin -->");
    let end = format!("<!-- bench:{name}:end -->");
    let text = fs::read_to_string(doc).unwrap_or_else(|_| "# Benchmarks\n".to_string());
    let block = format!("{begin}\n{}\n{end}", section.trim_end());
    let updated = match (text.find(&begin), text.find(&end)) {
        (Some(b), Some(e)) if b < e => format!("{}{block}{}", &text[..b], &text[e + end.len()..]),
        (None, None) => format!("{}\n\n{block}\n", text.trim_end()),
        _ => {
            return Err(fail!(
                "{}: unbalanced {begin} / {end} markers",
                doc.display()
            ))
        }
    };
    fs::write(doc, updated)?;
    Ok(())
}
