//! `cargo xtask ch start|stop|status|client`, `cargo xtask migrate`, `cargo xtask compat`:
//! the private dev ClickHouse and what runs against it.
//!
//! The server itself is driven by `clickhouse/src/dev_server.rs`, compiled here by `#[path]`
//! (standard library only) so xtask does not pull in the ClickHouse client and tokio; the
//! migrations run through the `tollgate-migrate` binary of the `tollgate-clickhouse` crate.

#[path = "../../clickhouse/src/dev_server.rs"]
#[allow(dead_code)] // shared with the clickhouse crate, which uses more of it
mod dev_server;

#[path = "../../clickhouse/src/dev_cluster.rs"]
#[allow(dead_code)] // shared with the clickhouse crate, which uses more of it
mod dev_cluster;

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use dev_cluster::DevCluster;
use dev_server::{DevServer, Started, Stopped};

use crate::fail;
use crate::util::{cargo, exec, output, repo_root, step, Result};

/// chdb-core is ClickHouse 26.9 in-process (docs/CLICKHOUSE.md); pinned so the check is repeatable.
const CHDB_CORE: &str = "chdb-core==26.9.0";

#[derive(clap::Subcommand)]
pub enum ChCommand {
    /// Generate the config into target/clickhouse-dev/ and start the server in the background.
    Start,
    /// Stop the server started by `start` (SIGTERM, then wait).
    Stop,
    /// Whether the server answers, and its pid.
    Status,
    /// The dev cluster: ZooKeeper and 2 shards × 2 replicas on loopback ports
    /// (target/clickhouse-cluster/; clickhouse/src/dev_cluster.rs lists the ports).
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// clickhouse-client on the dev server's native port (extra arguments are passed on).
    Client {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(clap::Subcommand)]
pub enum ClusterCommand {
    /// Start ZooKeeper and the four servers (each answers before the next starts).
    Start,
    /// Stop the four servers, then ZooKeeper.
    Stop,
    /// Each component: answering or not, pid, resident memory.
    Status,
}

#[derive(clap::Args)]
pub struct MigrateArgs {
    /// Database to migrate (created if missing).
    #[arg(long, default_value = "tollgate")]
    database: String,
    /// Render ON CLUSTER DDL with Replicated* engines and a Distributed usage_events.
    #[arg(long)]
    cluster: Option<String>,
    /// Print the statements instead of running them.
    #[arg(long)]
    print: bool,
    /// Remove a lock left behind by a migrate that died, then migrate.
    #[arg(long)]
    break_lock: bool,
    /// With --print: the server version to plan for (gated migrations).
    #[arg(long, default_value = "26.9")]
    server_version: String,
}

fn server() -> DevServer {
    DevServer::for_repo(repo_root())
}

pub fn run(cmd: &ChCommand) -> Result {
    let server = server();
    match cmd {
        ChCommand::Start => {
            match server.start().map_err(|e| fail!("ch start: {e}"))? {
                Started::AlreadyRunning => {
                    println!("ClickHouse already answers on {}", server.url())
                }
                Started::Spawned { pid } => println!(
                    "ClickHouse started (pid {pid}) on {} (native port {}); data in {}",
                    server.url(),
                    dev_server::TCP_PORT,
                    server.data_dir().display()
                ),
            }
            Ok(())
        }
        ChCommand::Stop => {
            match server.stop().map_err(|e| fail!("ch stop: {e}"))? {
                Stopped::NotRunning => println!("ClickHouse is not running"),
                Stopped::Terminated { pid } => println!("ClickHouse stopped (pid {pid})"),
                Stopped::NotOurs => println!(
                    "something answers on {} but was not started by `cargo xtask ch start` (no pidfile); not stopping it",
                    server.url()
                ),
            }
            Ok(())
        }
        ChCommand::Status => {
            let status = server.status();
            let answering = if status.answering {
                "answers"
            } else {
                "does not answer"
            };
            match status.pid {
                Some(pid) => println!("ClickHouse pid {pid}; {} {answering}", server.url()),
                None => println!("no dev server process; {} {answering}", server.url()),
            }
            Ok(())
        }
        ChCommand::Cluster(cmd) => cluster(cmd),
        ChCommand::Client { args } => {
            let err = Command::new("clickhouse-client")
                .args([
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &dev_server::TCP_PORT.to_string(),
                ])
                .args(args)
                .exec();
            Err(fail!("could not run clickhouse-client: {err}"))
        }
    }
}

fn cluster(cmd: &ClusterCommand) -> Result {
    let cluster = DevCluster::for_repo(repo_root());
    match cmd {
        ClusterCommand::Start => {
            cluster
                .start()
                .map_err(|e| fail!("ch cluster start: {e}"))?;
            println!(
                "cluster `{}` up: ZooKeeper on 127.0.0.1:{}, nodes {}; data in {}",
                dev_cluster::CLUSTER,
                dev_cluster::ZK_PORT,
                (0..dev_cluster::NODES.len())
                    .map(|i| cluster.url(i))
                    .collect::<Vec<_>>()
                    .join(", "),
                cluster.dir().display()
            );
            Ok(())
        }
        ClusterCommand::Stop => {
            cluster.stop().map_err(|e| fail!("ch cluster stop: {e}"))?;
            println!("cluster stopped");
            Ok(())
        }
        ClusterCommand::Status => {
            let memory = cluster.memory_kib();
            for c in cluster.status() {
                let rss = memory
                    .iter()
                    .find(|(n, _)| *n == c.name)
                    .map(|(_, kib)| format!(", {} MiB resident", kib / 1024))
                    .unwrap_or_default();
                println!(
                    "{:<10} {:<24} {}{}{rss}",
                    c.name,
                    c.address,
                    if c.answering {
                        "answers"
                    } else {
                        "does not answer"
                    },
                    c.pid.map(|p| format!(", pid {p}")).unwrap_or_default()
                );
            }
            Ok(())
        }
    }
}

/// The dev cluster for the length of a run (the cluster tests use it): started unless it
/// answers, and stopped when this is dropped if this run started it.
pub struct ClusterGuard {
    started: bool,
}

impl ClusterGuard {
    pub fn start() -> Result<ClusterGuard> {
        let cluster = DevCluster::for_repo(repo_root());
        let was_up = cluster.status().iter().all(|c| c.answering);
        step("dev cluster: ZooKeeper and 2 shards × 2 replicas (target/clickhouse-cluster)");
        cluster
            .start()
            .map_err(|e| fail!("ch cluster start: {e}"))?;
        Ok(ClusterGuard { started: !was_up })
    }
}

impl Drop for ClusterGuard {
    fn drop(&mut self) {
        if self.started {
            let _ = DevCluster::for_repo(repo_root()).stop();
        }
    }
}

/// The dev server for the length of a run: started if nothing answered, and then stopped when
/// this is dropped (also when the run fails). Honours a `TOLLGATE_CLICKHOUSE_URL` that points
/// elsewhere by leaving it alone.
pub struct DevServerGuard {
    url: String,
    started: bool,
}

impl DevServerGuard {
    pub fn start() -> Result<DevServerGuard> {
        let server = server();
        if let Some(url) = std::env::var("TOLLGATE_CLICKHOUSE_URL")
            .ok()
            .filter(|u| !u.is_empty())
        {
            if dev_server::http_addr_of(&url).as_deref() != Some(dev_server::HTTP_ADDR) {
                println!("    using TOLLGATE_CLICKHOUSE_URL={url}");
                return Ok(DevServerGuard {
                    url,
                    started: false,
                });
            }
        }
        let started = match server
            .start()
            .map_err(|e| fail!("starting ClickHouse: {e}"))?
        {
            Started::AlreadyRunning => {
                println!("    ClickHouse already answers on {}", server.url());
                false
            }
            Started::Spawned { pid } => {
                println!("    ClickHouse started (pid {pid}) on {}", server.url());
                true
            }
        };
        Ok(DevServerGuard {
            url: server.url(),
            started,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for DevServerGuard {
    fn drop(&mut self) {
        if self.started {
            match server().stop() {
                Ok(_) => println!("    ClickHouse stopped (it was started by this run)"),
                Err(e) => eprintln!("    could not stop ClickHouse: {e}"),
            }
        }
    }
}

/// `cargo xtask migrate`.
pub fn migrate(args: &MigrateArgs) -> Result {
    let mut cmd = migrate_command();
    cmd.args(["--database", &args.database]);
    if let Some(c) = &args.cluster {
        cmd.args(["--cluster", c]);
    }
    if args.print {
        // Printing needs no server: plan for the given version (default: modern, every file).
        cmd.args(["--print", "--server-version", &args.server_version]);
    } else {
        ensure_running()?;
    }
    if args.break_lock {
        cmd.arg("--break-lock");
    }
    step("migrate");
    exec("tollgate-migrate", &mut cmd)
}

/// Starts the dev server unless `TOLLGATE_CLICKHOUSE_URL` points elsewhere, and leaves it
/// running (migrate is for people; `cargo xtask ch stop` stops it).
fn ensure_running() -> Result {
    let mut guard = DevServerGuard::start()?;
    if guard.started {
        println!("    (left running; `cargo xtask ch stop` stops it)");
        guard.started = false;
    }
    Ok(())
}

fn migrate_command() -> Command {
    let mut c = cargo();
    c.args([
        "run",
        "--quiet",
        "-p",
        "tollgate-clickhouse",
        "--bin",
        "tollgate-migrate",
        "--",
    ]);
    c
}

/// What `tollgate-migrate <args…>` prints (a `--print…` mode), written to `file`.
fn print_to(file: &Path, common: &[&str], args: &[&str]) -> Result {
    let mut print = migrate_command();
    print.args(common).args(args).current_dir(repo_root());
    let what = format!("tollgate-migrate {}", args.join(" "));
    let out = print.output().map_err(|e| fail!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(fail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    fs::write(file, &out.stdout)?;
    Ok(())
}

/// `cargo xtask compat`: every migration and named query on ClickHouse 26.9 (chdb, in
/// process) against the same deterministic data as the 18.16 dev server, answers compared.
pub fn compat() -> Result {
    let server = DevServerGuard::start()?;
    compat_with(&server)
}

/// The compat check against an already running server (`cargo xtask test` reuses its own).
pub fn compat_with(server: &DevServerGuard) -> Result {
    let root = repo_root();
    let work = root.join("target").join("compat");
    fs::create_dir_all(&work)?;

    step("compat: chdb-core (ClickHouse 26.9) in target/compat-venv");
    let venv = root.join("target").join("compat-venv");
    let python = venv.join("bin").join("python");
    let has_chdb = python.exists()
        && output(Command::new(&python).args([
            "-c",
            "import chdb, sys; sys.exit(0 if chdb.__version__.startswith('26.9') else 1)",
        ]))
        .is_some();
    if !has_chdb {
        exec(
            "python3 -m venv",
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
        )?;
        exec(
            "pip install chdb-core",
            Command::new(venv.join("bin").join("pip")).args(["install", "--quiet", CHDB_CORE]),
        )?;
    }

    step("compat: migrations for 26.9 (rendered by tollgate-migrate)");
    let statements = work.join("statements.json");
    let db = ["--database", "tollgate_compat", "--json"];
    print_to(&statements, &db, &["--print", "--server-version", "26.9"])?;

    // The per-org analyst roles, for orgs of the data set and one whose id needs quoting.
    let roles = ["--print-analyst-roles", "org_000,org_001,o'b`x\\"];
    let roles_files = [
        work.join("analyst_roles.json"),
        work.join("analyst_roles_cluster.json"),
    ];
    print_to(&roles_files[0], &db, &roles)?;
    print_to(
        &roles_files[1],
        &db,
        &[&roles[..], &["--cluster", "tollgate_cluster"]].concat(),
    )?;

    step("compat: 18.16 database tollgate_compat (migrated by tollgate-migrate)");
    let addr =
        dev_server::http_addr_of(server.url()).ok_or_else(|| fail!("bad URL {}", server.url()))?;
    // The database and its key and token database (migration 0015).
    let drop_db = || {
        dev_server::http_request(
            &addr,
            "POST",
            "/",
            "DROP DATABASE IF EXISTS tollgate_compat",
            Duration::from_secs(60),
        )?;
        dev_server::http_request(
            &addr,
            "POST",
            "/",
            "DROP DATABASE IF EXISTS tollgate_compat_keys",
            Duration::from_secs(60),
        )
    };
    drop_db()?;
    let mut migrate = migrate_command();
    migrate
        .args(["--database", "tollgate_compat"])
        .env("TOLLGATE_CLICKHOUSE_URL", server.url());
    exec("tollgate-migrate", &mut migrate)?;

    step("compat: same data, every named query, 18.16 vs 26.9");
    let chdb_dir = work.join("chdb");
    let _ = fs::remove_dir_all(&chdb_dir);
    let result = exec(
        "compat.py",
        Command::new(&python)
            .arg(root.join("clickhouse").join("compat").join("compat.py"))
            .arg("--statements")
            .arg(&statements)
            .arg("--queries")
            .arg(root.join("clickhouse").join("queries"))
            .arg("--server")
            .arg(server.url())
            .args(["--database", "tollgate_compat"])
            .arg("--chdb-path")
            .arg(&chdb_dir)
            .arg("--analyst-roles")
            .arg(&roles_files[0])
            .arg("--analyst-roles-cluster")
            .arg(&roles_files[1]),
    );
    let _ = drop_db();
    result
}
