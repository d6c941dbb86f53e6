//! `cargo xtask soak --minutes N`: the whole stack under load while its pieces are killed and
//! restarted, then reconciled (the `soak` program of `tollgate-e2e`, tests/src/bin/soak.rs;
//! the semantics are in `tollgate_e2e::soak`). Figures go to `target/bench/soak.json` and the
//! `soak` section of docs/BENCHMARKS.md; the command fails if anything was lost or duplicated
//! or a rollup is off.
//!
//! `cargo xtask test` runs a short one through [`run_short_for_ci`]: the same program, with
//! the debug binaries the tests already built, its figures in `target/bench/soak-ci.json`,
//! docs/BENCHMARKS.md left alone.

use std::fs;
use std::process::Command;

use crate::util::{cargo, exec, repo_root, step, Result};

#[derive(clap::Args)]
pub struct SoakArgs {
    /// Minutes of load (the acceptance run is 10).
    #[arg(long, default_value_t = 10.0)]
    pub minutes: f64,
    /// Seconds between faults (± a quarter).
    #[arg(long, default_value_t = 18)]
    pub fault_every: u64,
    /// Collectors behind a round-robin load balancer (faults hit any of them).
    #[arg(long, default_value_t = 2)]
    pub collectors: usize,
    /// Store on the dev cluster (started for the run when down, stopped after), with a replica
    /// SIGKILL and a ZooKeeper restart in the rotation; figures in the `soak-cluster` section.
    #[arg(long)]
    pub cluster: bool,
}

/// Which build of the binaries runs, and where the figures go.
struct Run<'a> {
    profile: &'a str,
    minutes: f64,
    fault_every: u64,
    collectors: usize,
    cluster: bool,
    out: &'a str,
    /// Splice the section into docs/BENCHMARKS.md.
    document: bool,
}

pub fn run(args: &SoakArgs) -> Result {
    crate::setup::run()?;
    crate::edge::build()?;
    let _cluster = if args.cluster {
        Some(crate::ch::ClusterGuard::start()?)
    } else {
        None
    };
    soak(&Run {
        profile: "release",
        minutes: args.minutes,
        fault_every: args.fault_every,
        collectors: args.collectors,
        cluster: args.cluster,
        out: if args.cluster {
            "target/bench/soak-cluster"
        } else {
            "target/bench/soak"
        },
        document: true,
    })
}

/// The short soak of `cargo xtask test`: 3 minutes, two collectors behind the round-robin
/// balancer (so a re-posted batch can reach the other collector), a fault every 18 s (about 9).
pub fn run_short_for_ci() -> Result {
    soak(&Run {
        profile: "debug",
        minutes: 3.0,
        fault_every: 18,
        collectors: 2,
        cluster: false,
        out: "target/bench/soak-ci",
        document: false,
    })
}

fn soak(run: &Run<'_>) -> Result {
    let root = repo_root();
    step(&format!(
        "soak: {} build (collector, dashboard-api, soak)",
        run.profile
    ));
    let mut build = cargo();
    build.arg("build");
    if run.profile == "release" {
        build.arg("--release");
    }
    build.args([
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
        "soak",
    ]);
    exec("soak build", &mut build)?;
    step(&format!("soak: {} minutes under faults", run.minutes));
    let (json, md) = (format!("{}.json", run.out), format!("{}.md", run.out));
    let result = exec(
        "soak",
        Command::new(root.join(format!("target/{}/soak", run.profile)))
            .args(["--minutes", &run.minutes.to_string()])
            .args(["--fault-every", &run.fault_every.to_string()])
            .args(["--collectors", &run.collectors.to_string()])
            .args(run.cluster.then_some("--cluster"))
            .args(["--out", &json, "--markdown", &md]),
    );
    let section = if run.cluster { "soak-cluster" } else { "soak" };
    // The figures are documented whatever the verdict: a failed soak is a finding too.
    if run.document {
        if let Ok(text) = fs::read_to_string(root.join(&md)) {
            crate::bench::splice_section(&root.join("docs/BENCHMARKS.md"), section, &text)?;
            println!("    updated docs/BENCHMARKS.md (section `{section}`)");
        }
    }
    result
}
