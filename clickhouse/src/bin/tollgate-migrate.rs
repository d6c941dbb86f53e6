//! `tollgate-migrate`: apply Tollgate's ClickHouse migrations (what `cargo xtask migrate` runs),
//! or print them as they would run (`--print`), e.g. for a cluster.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tollgate_clickhouse::{analyst_roles, ClickHouseConfig, Migrator, ServerVersion};

#[derive(Debug, Parser)]
#[command(
    name = "tollgate-migrate",
    about = "Apply Tollgate's ClickHouse migrations"
)]
struct Args {
    /// ClickHouse HTTP URL.
    #[arg(long, env = "TOLLGATE_CLICKHOUSE_URL", default_value = tollgate_clickhouse::DEFAULT_URL)]
    url: String,
    /// Database to migrate (created if missing).
    #[arg(long, default_value = "tollgate")]
    database: String,
    /// Render ON CLUSTER DDL with Replicated* engines and a Distributed usage_events.
    #[arg(long)]
    cluster: Option<String>,
    /// Seconds to wait for another runner's lock.
    #[arg(long, default_value_t = 300)]
    lock_timeout: u64,
    /// Remove a lock left behind by a runner that died, then migrate.
    #[arg(long)]
    break_lock: bool,
    /// Print the statements instead of running them (no server needed with --server-version).
    #[arg(long)]
    print: bool,
    /// With --print: the server version to plan for (gated migrations); asks the server if absent.
    #[arg(long)]
    server_version: Option<String>,
    /// With --print: JSON `[{"file", "statements": [...]}]` instead of SQL text.
    #[arg(long)]
    json: bool,
    /// Do not create the per-org analyst roles after migrating (docs/ANALYSTS.md).
    #[arg(long)]
    no_analyst_roles: bool,
    /// Print the per-org analyst role statements for these orgs (comma-separated) instead of
    /// migrating; no server needed. With --json: `{"statements": [...], "policies":
    /// [{"table", "org", "filter"}], "reads": [...]}`.
    #[arg(long, value_delimiter = ',')]
    print_analyst_roles: Option<Vec<String>>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate-migrate: error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = ClickHouseConfig::new(args.url.clone(), args.database.clone());
    config.analyst_roles = !args.no_analyst_roles;

    if let Some(orgs) = &args.print_analyst_roles {
        let desired = analyst_roles::Desired::as_migrated(
            &args.database,
            orgs.iter().cloned().collect(),
            args.cluster.as_deref(),
        );
        let statements = analyst_roles::plan(&desired, &analyst_roles::Current::default());
        if args.json {
            let policies: Vec<serde_json::Value> = desired
                .policy_tables
                .iter()
                .flat_map(|table| {
                    desired.orgs.iter().map(move |org| {
                        serde_json::json!({
                            "table": table,
                            "org": org,
                            "filter": analyst_roles::org_filter(org),
                        })
                    })
                })
                .collect();
            // What a sync reads from the server, as it reads it.
            let mut reads = vec![analyst_roles::CAPABILITY_QUERY.to_string()];
            reads.extend(analyst_roles::state_queries(&args.database));
            let out = serde_json::json!({
                "statements": statements,
                "policies": policies,
                "reads": reads,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        } else {
            for s in statements {
                println!("{s};");
            }
        }
        return Ok(());
    }

    let migrator = Migrator::new(config.clone())?
        .on_cluster(args.cluster.clone())
        .lock_timeout(Duration::from_secs(args.lock_timeout))
        .break_lock(args.break_lock);

    if args.print {
        let version = match &args.server_version {
            Some(v) => ServerVersion::parse(v)
                .ok_or_else(|| format!("--server-version {v:?} is not a version"))?,
            None => migrator.server_version().await?,
        };
        let plan = migrator.plan(&version)?;
        if args.json {
            let files: Vec<serde_json::Value> = plan
                .iter()
                .map(|(file, statements)| serde_json::json!({ "file": file, "statements": statements }))
                .collect();
            println!("{}", serde_json::to_string_pretty(&files)?);
        } else {
            for (file, statements) in plan {
                println!("-- {file}");
                for s in statements {
                    println!("{s};\n");
                }
            }
        }
        return Ok(());
    }

    let report = migrator.run(&mut |event| println!("{event}")).await?;
    println!(
        "migrate: {} applied, {} already applied, {} skipped (need a newer server)",
        report.applied.len(),
        report.already_applied.len(),
        report.skipped.len()
    );
    println!(
        "{}",
        analyst_roles::sync(&config, args.cluster.as_deref()).await?
    );
    Ok(())
}
