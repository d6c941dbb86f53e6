//! `cargo xtask test`: the one command that proves the tree. CI (`.ci/run`) calls exactly this.
//!
//! Order: setup → fmt → clippy → every test → the wasm build of `usage-core`. Each step stops
//! the run with its name on failure.

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

    step("tests");
    exec("cargo test", cargo().args(["test", "--workspace"]))?;

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
