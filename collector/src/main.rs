//! `collector`: Tollgate's ingest service. `collector serve` runs it; `collector migrate`
//! applies the ClickHouse migrations it needs. Configuration: `--config collector.toml` and
//! `TOLLGATE_*` variables (see `docs/CONFIGURATION.md`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tollgate_collector::config::Config;
use tollgate_collector::store::ClickHouseStore;

#[derive(Parser)]
#[command(
    name = "collector",
    about = "Tollgate collector: signed usage batches in, ClickHouse out"
)]
struct Cli {
    /// TOML config file (every key optional; TOLLGATE_* variables override it).
    #[arg(long, global = true, env = "TOLLGATE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve POST /v1/records and ship accepted records to ClickHouse.
    Serve,
    /// Apply pending ClickHouse migrations, then exit.
    Migrate,
    /// Print the effective configuration (secrets redacted) and exit.
    Config,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    service_kit::run_service(
        "collector",
        cli.config.as_deref(),
        |config: Config| async move {
            match cli.command {
                Command::Serve => {
                    let store = ClickHouseStore::new(&config.clickhouse, hostname());
                    tollgate_collector::serve(config, Arc::new(store)).await
                }
                Command::Migrate => migrate(&config).await,
                Command::Config => {
                    println!("{}", toml_text(&config));
                    Ok(())
                }
            }
        },
    )
}

async fn migrate(config: &Config) -> Result<(), Box<dyn std::error::Error>> {
    let mut ch = tollgate_clickhouse::ClickHouseConfig::new(
        config.clickhouse.url.clone(),
        config.clickhouse.database.clone(),
    );
    ch.user = config.clickhouse.user();
    ch.password = config.clickhouse.password();
    ch.analyst_roles = config.clickhouse.analyst_roles;
    let report = tollgate_clickhouse::Migrator::new(ch.clone())?
        .run(&mut |event| println!("{event}"))
        .await?;
    println!(
        "migrate: {} applied, {} already applied, {} skipped (need a newer server)",
        report.applied.len(),
        report.already_applied.len(),
        report.skipped.len()
    );
    // Ingest does not depend on the analysts' roles: a failure is reported, not fatal.
    match tollgate_clickhouse::analyst_roles::sync(&ch, None).await {
        Ok(outcome) => println!("{outcome}"),
        Err(e) => eprintln!("analyst roles: not synced ({e}); the jobs retry every tick"),
    }
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "collector".into())
}

fn toml_text(config: &Config) -> String {
    serde_json::to_string_pretty(config).unwrap_or_default()
}
