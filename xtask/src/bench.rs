//! `cargo xtask bench …`: benchmarks that write their figures to `target/bench/` and their
//! section of `docs/BENCHMARKS.md`.
//!
//! `rollups`: the `bench_rollups` example of `tollgate-clickhouse` (release build) against the
//! dev ClickHouse — 1M and 10M synthetic raw events, the dashboard's daily overview from the
//! rollup vs from the raw table.

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
}

pub fn run(cmd: &BenchCommand) -> Result {
    match cmd {
        BenchCommand::Rollups { sizes, runs } => rollups(sizes, *runs),
    }
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
fn splice_section(doc: &Path, name: &str, section: &str) -> Result {
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
