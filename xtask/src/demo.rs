//! `cargo xtask demo`: the whole system on this machine with traffic flowing. Installs what is
//! missing, builds the release binaries and the edge bundle, then runs the `demo` program of
//! the `tollgate-e2e` crate (tests/src/bin/demo.rs), which starts and stops everything.

use std::process::Command;

use crate::util::{cargo, exec, repo_root, step, Result};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Arguments for the demo (`--requests N`, `--duration 10m`, `--history 90d`,
    /// `--real-providers`, `--keep-running`); see `cargo xtask demo -- --help`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

pub fn run(args: &DemoArgs) -> Result {
    crate::setup::run()?;
    step("demo: release build (collector, dashboard-api, demo)");
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
            "--bin",
            "collector",
            "--bin",
            "dashboard-api",
            "--bin",
            "demo",
        ]),
    )?;
    crate::edge::build()?;
    step("demo");
    exec(
        "demo",
        Command::new(repo_root().join("target/release/demo")).args(&args.args),
    )
}
