//! `dashboard-api`: Tollgate's admin service.
//!
//! - `dashboard-api serve` — the JSON API (and the web dashboard) on `listen`, and the
//!   timed jobs (`tollgate_jobs`: alert evaluation, credit polls, bill reconciliation,
//!   integrity) unless `run_jobs = false`.
//! - `dashboard-api migrate` — apply pending ClickHouse migrations.
//! - `dashboard-api token create --role admin --name ops` — mint an API token (printed once);
//!   `token list`, `token revoke <id>`.
//!
//! Configuration: `--config dashboard.toml` and `TOLLGATE_*` variables (docs/CONFIGURATION.md).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tollgate_dashboard_api::auth::{self, Role};
use tollgate_dashboard_api::config::Config;
use tollgate_dashboard_api::{app, AppState};

#[derive(Parser)]
#[command(
    name = "dashboard-api",
    about = "Tollgate dashboard API: usage, cost, budgets, alerts"
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
    /// Serve the API.
    Serve,
    /// Apply pending ClickHouse migrations, then exit.
    Migrate,
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it (it is shown only this once).
    Create {
        #[arg(long)]
        name: String,
        /// admin, org_admin or viewer.
        #[arg(long)]
        role: String,
        /// The org (org_admin and viewer).
        #[arg(long, default_value = "")]
        org: String,
        /// Bind a viewer to one user.
        #[arg(long, default_value = "")]
        user: String,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by its id (tok_…).
    Revoke { token_id: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    service_kit::run_service("dashboard-api", cli.config.as_deref(), |config: Config| {
        run(cli.command, config)
    })
}

async fn run(command: Command, config: Config) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        Command::Serve => {
            let listener = tokio::net::TcpListener::bind(&config.listen).await?;
            tracing::info!(listen = %listener.local_addr()?, "dashboard-api listening");
            let state = AppState::new(config);
            // Alert evaluation, credit polls, reconciliation, integrity: one instance of several
            // runs them (a lease in ClickHouse); stopped after the server has drained. Off
            // (`run_jobs = false`) where `tollgate-jobs` runs them instead.
            let jobs = state
                .config()
                .run_jobs
                .then(|| tollgate_jobs::spawn(state.jobs().clone()));
            let served =
                service_kit::serve::serve(listener, app(state), service_kit::shutdown_signal())
                    .await;
            if let Some(jobs) = jobs {
                jobs.shutdown().await;
            }
            served?;
            Ok(())
        }
        Command::Migrate => {
            let report = tollgate_clickhouse::Migrator::new(config.clickhouse())?
                .run(&mut |event| println!("{event}"))
                .await?;
            println!(
                "migrate: {} applied, {} already applied, {} skipped (need a newer server)",
                report.applied.len(),
                report.already_applied.len(),
                report.skipped.len()
            );
            let roles =
                tollgate_clickhouse::analyst_roles::sync(&config.clickhouse(), None).await?;
            println!("{roles}");
            Ok(())
        }
        Command::Token(cmd) => {
            // Tokens live in the key and token database (migration 0015).
            let client = config.clickhouse().keys_client();
            let main_client = config.clickhouse().client();
            match cmd {
                TokenCommand::Create {
                    name,
                    role,
                    org,
                    user,
                } => {
                    let role =
                        Role::parse(&role).ok_or("--role must be admin, org_admin or viewer")?;
                    let (id, secret) = auth::create_token(&client, &name, role, &org, &user, "cli")
                        .await
                        .map_err(|e| format!("{e:?}"))?;
                    tollgate_jobs::default_rules::seed_new_org(
                        &main_client,
                        &client,
                        &config.jobs().evaluator,
                        &org,
                    )
                    .await;
                    println!(
                        "token id: {id}\ntoken:    {secret}\n(store it now: it is not shown again)"
                    );
                }
                TokenCommand::List => {
                    for t in auth::list_tokens(&client)
                        .await
                        .map_err(|e| format!("{e:?}"))?
                    {
                        println!(
                            "{}\t{}\t{}\t{}\t{}\t{}",
                            t.token_id,
                            t.role,
                            if t.org_id.is_empty() { "*" } else { &t.org_id },
                            t.user_id,
                            if t.revoked == 1 { "revoked" } else { "active" },
                            t.name
                        );
                    }
                }
                TokenCommand::Revoke { token_id } => {
                    auth::revoke_token(&client, &token_id)
                        .await
                        .map_err(|e| format!("{e:?}"))?;
                    println!("revoked {token_id}");
                }
            }
            Ok(())
        }
    }
}
