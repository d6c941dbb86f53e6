//! `cargo xtask fuzz --seconds N [--target NAME]`: runs the libFuzzer targets of `fuzz/`
//! (`batch_decoder`, `query_params`, `signature`, `sse_scanner`: `fuzz/fuzz_targets/`) one after the other, each for
//! N seconds, and reports executions, corpus size and findings.
//!
//! - cargo-fuzz is installed on demand (`cargo install cargo-fuzz --locked`).
//! - Toolchain: `nightly` when rustup has it; otherwise stable with `RUSTC_BOOTSTRAP=1` (the
//!   instrumentation flags cargo-fuzz passes are nightly-only options).
//! - Each corpus (`fuzz/corpus/<target>/`, not committed) is seeded from `fuzz/seeds/<target>/`,
//!   `fuzz/regressions/<target>/` and the repository fixtures listed in `fuzz/fixtures.txt`.
//! - One job per target, in-process, under `nice -n 10`; `-max_total_time=N`, `-timeout` per
//!   input (a hang is a finding), `-rss_limit_mb=2048`.
//! - A crash or hang leaves its input in `fuzz/artifacts/<target>/` and fails the command:
//!   commit the input under `fuzz/regressions/<target>/` (the stable replay test
//!   `tests/tests/fuzz_replay.rs` then runs it in CI), and fix the code.
//!
//! Figures go to `target/fuzz/summary.md` (and, with `--record`, to the `fuzz` section of
//! docs/BENCHMARKS.md).

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::fail;
use crate::util::{cargo, exec, have, output, repo_root, step, Result};

#[path = "../../fuzz/seed_dirs.rs"]
mod seed_dirs;

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Seconds each target runs.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Only this target.
    #[arg(long)]
    target: Option<String>,
    /// Seconds one input may take before it counts as a hang.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// Sanitizer for cargo-fuzz (`none`, `address`, …). Tollgate's crates forbid `unsafe`, so
    /// the default spends the CPU on executions instead.
    #[arg(long, default_value = "none")]
    sanitizer: String,
    /// Write the figures into the `fuzz` section of docs/BENCHMARKS.md.
    #[arg(long)]
    record: bool,
}

/// One target's run.
struct RunFigures {
    target: String,
    seconds: u64,
    execs: u64,
    execs_per_sec: u64,
    corpus_files: usize,
    corpus_bytes: u64,
    coverage: Option<u64>,
    /// The finding's input, if the run crashed or hung.
    finding: Option<String>,
}

pub fn run(args: &FuzzArgs) -> Result {
    let root = repo_root();
    let all = seed_dirs::targets(&root);
    let targets: Vec<&String> = match &args.target {
        Some(t) if all.contains(t) => vec![t],
        Some(t) => {
            return Err(fail!(
                "unknown fuzz target `{t}` (known: {})",
                all.join(", ")
            ))
        }
        None => all.iter().collect(),
    };
    ensure_cargo_fuzz()?;
    let toolchain = Toolchain::detect();
    println!("    toolchain: {}", toolchain.describe());

    step("fuzz: build the targets");
    let mut build = toolchain.cargo_fuzz();
    build.args([
        "build",
        "--debug-assertions",
        "--sanitizer",
        &args.sanitizer,
    ]);
    exec("cargo fuzz build", &mut build)?;

    let mut figures = Vec::new();
    for target in &targets {
        step(&format!("fuzz {target}: {} s", args.seconds));
        let corpus = root.join("fuzz/corpus").join(target);
        let seeded = seed_corpus(&root, target, &corpus)?;
        println!(
            "    corpus seeded with {seeded} inputs: {}",
            corpus.display()
        );
        figures.push(run_target(&toolchain, args, target, &corpus)?);
    }

    let summary = summary(&figures, args);
    println!("\n{summary}");
    let out = root.join("target/fuzz");
    fs::create_dir_all(&out)?;
    fs::write(out.join("summary.md"), &summary)?;
    if args.record {
        crate::bench::splice_section(&root.join("docs/BENCHMARKS.md"), "fuzz", &summary)?;
        println!("    updated docs/BENCHMARKS.md (section `fuzz`)");
    }
    let findings: Vec<String> = figures
        .iter()
        .filter_map(|f| f.finding.as_ref().map(|a| format!("{}: {a}", f.target)))
        .collect();
    if findings.is_empty() {
        Ok(())
    } else {
        Err(fail!(
            "fuzzing found {} problem(s); commit each input under fuzz/regressions/<target>/ and fix the code:\n  {}",
            findings.len(),
            findings.join("\n  ")
        ))
    }
}

fn ensure_cargo_fuzz() -> Result {
    if output(cargo().args(["fuzz", "--version"])).is_some() {
        return Ok(());
    }
    step("fuzz: install cargo-fuzz");
    exec(
        "cargo install cargo-fuzz",
        cargo().args(["install", "cargo-fuzz", "--locked"]),
    )
}

/// How cargo-fuzz gets the nightly-only compiler options it passes.
enum Toolchain {
    /// `cargo +nightly fuzz …`
    Nightly,
    /// `RUSTC_BOOTSTRAP=1 cargo fuzz …` on the default (stable) toolchain.
    Bootstrap,
}

impl Toolchain {
    fn detect() -> Toolchain {
        let has_nightly = have("rustup")
            && output(Command::new("rustup").args(["toolchain", "list"]))
                .is_some_and(|list| list.lines().any(|l| l.starts_with("nightly")));
        if has_nightly {
            Toolchain::Nightly
        } else {
            Toolchain::Bootstrap
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Toolchain::Nightly => "nightly (rustup)",
            Toolchain::Bootstrap => {
                "stable with RUSTC_BOOTSTRAP=1 (no nightly toolchain installed)"
            }
        }
    }

    /// `cargo fuzz` on this toolchain, niced, in the repository root.
    fn cargo_fuzz(&self) -> Command {
        let cargo_bin = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let mut c = Command::new("nice");
        c.args(["-n", "10"]);
        match self {
            // `cargo` from PATH is rustup's proxy, which understands `+nightly` (the `$CARGO`
            // of this xtask is the stable toolchain's own binary, which does not).
            Toolchain::Nightly => {
                c.args(["cargo", "+nightly", "fuzz"]);
            }
            Toolchain::Bootstrap => {
                c.args([cargo_bin.as_str(), "fuzz"])
                    .env("RUSTC_BOOTSTRAP", "1");
            }
        }
        c.current_dir(repo_root());
        c
    }
}

/// Copies the target's seeds, regressions and listed fixtures into its corpus directory;
/// returns how many inputs it copied.
fn seed_corpus(root: &Path, target: &str, corpus: &Path) -> Result<usize> {
    fs::create_dir_all(corpus)?;
    let files = seed_dirs::input_files(root, target)
        .map_err(|e| fail!("finding the seeds of {target}: {e}"))?;
    for path in &files {
        let origin = path.strip_prefix(root).unwrap_or(path);
        let flat = format!("seed-{}", origin.display()).replace('/', "_");
        fs::copy(path, corpus.join(flat))
            .map_err(|e| fail!("seeding {target} from {}: {e}", path.display()))?;
    }
    if files.is_empty() {
        return Err(fail!("no seeds for fuzz target {target}"));
    }
    Ok(files.len())
}

fn run_target(
    toolchain: &Toolchain,
    args: &FuzzArgs,
    target: &str,
    corpus: &Path,
) -> Result<RunFigures> {
    let log_dir = repo_root().join("target/fuzz");
    fs::create_dir_all(&log_dir)?;
    let log_path = log_dir.join(format!("{target}.log"));
    let log = fs::File::create(&log_path)?;
    let mut cmd = toolchain.cargo_fuzz();
    cmd.args([
        "run",
        "--debug-assertions",
        "--sanitizer",
        &args.sanitizer,
        target,
    ])
    .arg(corpus)
    .args([
        "--".to_string(),
        format!("-max_total_time={}", args.seconds),
        format!("-timeout={}", args.timeout),
        "-rss_limit_mb=2048".to_string(),
        "-print_final_stats=1".to_string(),
    ])
    .stdout(log.try_clone()?)
    .stderr(log);
    println!("    $ {cmd:?}");
    println!("    (libFuzzer's output: {})", log_path.display());
    let status = cmd
        .status()
        .map_err(|e| fail!("fuzz {target}: could not start cargo fuzz: {e}"))?;
    let text = fs::read_to_string(&log_path).unwrap_or_default();
    let execs = stat(&text, "stat::number_of_executed_units:").unwrap_or(0);
    let (corpus_files, corpus_bytes) = corpus_size(corpus)?;
    let finding = (!status.success()).then(|| {
        text.lines()
            .filter_map(|l| l.split_once("Test unit written to ").map(|(_, p)| p.trim()))
            .next_back()
            .map(str::to_string)
            .unwrap_or_else(|| {
                format!(
                    "cargo fuzz exited with {status}; see {}",
                    log_path.display()
                )
            })
    });
    if finding.is_some() {
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        for line in tail.into_iter().rev() {
            println!("    | {line}");
        }
    }
    let figures = RunFigures {
        target: target.to_string(),
        seconds: args.seconds,
        execs,
        execs_per_sec: execs / args.seconds.max(1),
        corpus_files,
        corpus_bytes,
        coverage: last_coverage(&text),
        finding,
    };
    println!(
        "    {target}: {} execs ({}/s), corpus {} files / {} bytes, coverage {}, {}",
        figures.execs,
        figures.execs_per_sec,
        figures.corpus_files,
        figures.corpus_bytes,
        figures.coverage.map_or("?".to_string(), |c| c.to_string()),
        figures.finding.as_deref().unwrap_or("no crash, no hang"),
    );
    Ok(figures)
}

/// A `stat::…: N` line of libFuzzer's final stats.
fn stat(log: &str, key: &str) -> Option<u64> {
    log.lines()
        .filter_map(|l| l.trim().strip_prefix(key))
        .next_back()
        .and_then(|v| v.trim().parse().ok())
}

/// The last `cov: N` libFuzzer reported (edges covered).
fn last_coverage(log: &str) -> Option<u64> {
    log.lines()
        .filter_map(|l| l.split_once(" cov: ").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .next_back()
}

fn corpus_size(dir: &Path) -> Result<(usize, u64)> {
    let mut files = 0;
    let mut bytes = 0;
    for entry in fs::read_dir(dir)? {
        let meta = entry?.metadata()?;
        if meta.is_file() {
            files += 1;
            bytes += meta.len();
        }
    }
    Ok((files, bytes))
}

fn summary(figures: &[RunFigures], args: &FuzzArgs) -> String {
    let mut s = format!(
        "## Fuzzing\n\n`cargo xtask fuzz --seconds {}{}` (libFuzzer via cargo-fuzz, one in-process job per \
         target under `nice -n 10`, sanitizer `{}`, debug assertions on, {} s per-input timeout).\n\n\
         | target | seconds | executions | execs/s | corpus (files / bytes) | edges covered | result |\n\
         |---|---:|---:|---:|---:|---:|---|\n",
        args.seconds,
        args.target
            .as_deref()
            .map(|t| format!(" --target {t}"))
            .unwrap_or_default(),
        args.sanitizer,
        args.timeout,
    );
    for f in figures {
        s.push_str(&format!(
            "| `{}` | {} | {} | {} | {} / {} | {} | {} |\n",
            f.target,
            f.seconds,
            f.execs,
            f.execs_per_sec,
            f.corpus_files,
            f.corpus_bytes,
            f.coverage.map_or("?".to_string(), |c| c.to_string()),
            f.finding
                .as_deref()
                .map_or("no crash, no hang".to_string(), |a| format!(
                    "**finding**: `{a}`"
                )),
        ));
    }
    s
}
