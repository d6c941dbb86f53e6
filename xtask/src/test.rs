//! `cargo xtask test`: the one command that proves the tree. CI (`.ci/run`) calls exactly this.
//!
//! Order: setup → fmt → clippy (native and wasm32) → layout (`cargo xtask layout --check`) →
//! the edge bundle → every test (with the dev
//! ClickHouse and the dev cluster running) → the ClickHouse 26.9 compatibility check → a 3-minute soak (`cargo xtask
//! soak`, the stack under faults) → the wasm build of `usage-core`. Each step stops the run with
//! its name on failure.

use std::process::Command;

use crate::util::{cargo, exec, step, Result};

#[derive(clap::Args)]
pub struct TestArgs {
    /// Skip `cargo fmt --check` and clippy (for quick local iterations; CI never passes it).
    #[arg(long)]
    pub no_lint: bool,
}

pub fn run(args: &TestArgs) -> Result {
    step("setup");
    crate::setup::run()?;

    if !args.no_lint {
        step("format");
        exec(
            "cargo fmt --check",
            cargo().args(["fmt", "--all", "--", "--check"]),
        )?;
        step("clippy");
        exec(
            "cargo clippy",
            cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        )?;
    }

    if !args.no_lint {
        step("clippy (edge worker and the benchmark's floor, wasm32)");
        exec(
            "cargo clippy wasm32",
            cargo().args([
                "clippy",
                "-p",
                "edge-worker",
                "-p",
                "edge-floor",
                "--target",
                "wasm32-unknown-unknown",
                "--",
                "-D",
                "warnings",
            ]),
        )?;
    }

    if !args.no_lint {
        step("layout: no import circle, no crate above 30% of the code");
        crate::layout::run(&crate::layout::LayoutArgs {
            check: true,
            max_share: 30.0,
            root: None,
        })?;
    }

    // The end-to-end tests run the real bundle under workerd.
    crate::edge::build()?;

    step("tests");
    // The dev ClickHouse for the tests (and compat): started unless it already runs, stopped
    // at the end (also on failure) when this run started it.
    let clickhouse = crate::ch::DevServerGuard::start()?;
    // And the dev cluster for the cluster tests (migrations, sharding, faults).
    let cluster = crate::ch::ClusterGuard::start()?;
    exec(
        "cargo test",
        cargo()
            // Every test binary runs even after one fails, so one red run shows everything
            // that is red (a failure in the cluster tests used to hide the e2e binaries after
            // them); the step still fails.
            .args(["test", "--workspace", "--no-fail-fast"])
            .env("TOLLGATE_CLICKHOUSE_URL", clickhouse.url()),
    )?;

    drop(cluster);

    step("compat: ClickHouse 26.9 (chdb) vs 18.16");
    crate::ch::compat_with(&clickhouse)?;
    drop(clickhouse);

    // The whole stack under faults for 3 minutes (its own private ClickHouse), reconciled.
    crate::soak::run_short_for_ci()?;

    step("wasm build of usage-core");
    exec("usage-core for wasm32", &mut wasm_build())?;

    println!("\nxtask test: all steps passed");
    Ok(())
}

fn wasm_build() -> Command {
    let mut c = cargo();
    c.args([
        "build",
        "-p",
        "usage-core",
        "--target",
        "wasm32-unknown-unknown",
        "--release",
    ]);
    c
}
