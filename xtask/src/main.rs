//! `cargo xtask` — everything a person would otherwise have to remember: installing what the
//! machine lacks, running every check, regenerating the price file, and (as their issues land)
//! the dev ClickHouse, the edge bundle, the demo and the benchmarks.
//!
//! Every step prints what it runs; a failing step names itself and why.

mod bench;
mod ch;
mod costcheck;
mod demo;
mod edge;
mod fuzz;
mod layout;
mod peers;
mod prices;
mod repeat;
mod setup;
mod soak;
mod test;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Tollgate repo automation", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what this machine lacks (idempotent): wasm target, ClickHouse server, …
    Setup,
    /// Setup, then fmt --check, clippy -D warnings, every test, and the wasm build of usage-core.
    Test(test::TestArgs),
    /// Regenerate usage-core/prices.json from a LiteLLM-format price list.
    Prices(prices::PricesArgs),
    /// Run the whole system locally with demo traffic (until Ctrl-C, or `--requests N`).
    Demo(demo::DemoArgs),
    /// Build the edge worker bundle (target/edge/) or run it under workerd.
    #[command(subcommand)]
    Edge(edge::EdgeCommand),
    /// The private dev ClickHouse (target/clickhouse-dev/): start, stop, status, client.
    #[command(subcommand)]
    Ch(ch::ChCommand),
    /// Apply the ClickHouse migrations (or --print them, e.g. for --cluster NAME).
    Migrate(ch::MigrateArgs),
    /// Every migration and named query on ClickHouse 26.9 (chdb) vs the 18.16 dev server.
    Compat,
    /// Benchmarks (figures to target/bench/ and docs/BENCHMARKS.md).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// The whole stack under load while collector, ClickHouse and workerd are restarted and the
    /// provider stalls; fails if a record was lost or duplicated (figures to docs/BENCHMARKS.md).
    Soak(soak::SoakArgs),
    /// Run one test again and again (optionally beside a CPU hog) until it fails or passes N
    /// times in a row.
    Repeat(repeat::RepeatArgs),
    /// Files, lines and import circles per crate, from the code's own imports (--check: none,
    /// and no crate above 30% of the lines).
    Layout(layout::LayoutArgs),
    /// Fuzz the SSE scanner, batch decoder, signature verifier and query parameters (cargo-fuzz).
    Fuzz(fuzz::FuzzArgs),
    /// Price the cost corpus with LiteLLM too (pinned, in target/costcheck-venv) and write the
    /// comparison table to docs/COST.md.
    Costcheck,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run(),
        Command::Test(args) => test::run(&args),
        Command::Prices(args) => prices::run(&args),
        Command::Edge(cmd) => edge::run(&cmd),
        Command::Demo(args) => demo::run(&args),
        Command::Ch(cmd) => ch::run(&cmd),
        Command::Migrate(args) => ch::migrate(&args),
        Command::Compat => ch::compat(),
        Command::Bench(cmd) => bench::run(&cmd),
        Command::Soak(args) => soak::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
        Command::Repeat(args) => repeat::run(&args),
        Command::Layout(args) => layout::run(&args),
        Command::Costcheck => costcheck::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}
