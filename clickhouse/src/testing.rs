//! Test harness: a fresh, migrated database per test, dropped when the test ends — also when
//! it panics.
//!
//! ```no_run
//! # async fn t() -> tollgate_clickhouse::Result<()> {
//! let db = tollgate_clickhouse::testing::TestDb::new().await?;
//! db.client().query("SELECT count() FROM usage_events").execute().await?;
//! # Ok(()) }
//! ```
//!
//! The server is `TOLLGATE_CLICKHOUSE_URL` (default the dev server, http://127.0.0.1:18123).
//! When that is the dev server and nothing answers, the harness starts it (`clickhouse/dev/`
//! config, data under `target/clickhouse-dev/`) and leaves it running for the next tests;
//! `cargo xtask ch stop` stops it, and `cargo xtask test` starts and stops it around the run.
//! Tests never skip for want of a server: they fail, saying why.

use chrono::Utc;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use clickhouse::Client;

use crate::dev_server::{self, DevServer};
use crate::error::{Error, Result};
use crate::migrate::Migrator;
use crate::{ClickHouseConfig, DEFAULT_URL};

/// Prefix of every test database name.
pub const TEST_DB_PREFIX: &str = "tollgate_test_";

/// The URL tests use: `TOLLGATE_CLICKHOUSE_URL`, else the dev server.
pub fn server_url() -> String {
    std::env::var("TOLLGATE_CLICKHOUSE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_string())
}

/// Makes sure the test server answers, starting the dev server if that is the one configured
/// and it is down. Runs once per process.
pub fn ensure_server() -> Result<String> {
    static READY: OnceLock<Mutex<Option<String>>> = OnceLock::new();
    let cell = READY.get_or_init(|| Mutex::new(None));
    let mut ready = cell.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(url) = ready.as_ref() {
        return Ok(url.clone());
    }
    let url = server_url();
    let addr = dev_server::http_addr_of(&url).ok_or_else(|| {
        Error::DevServer(format!(
            "TOLLGATE_CLICKHOUSE_URL={url} is not an http://host:port URL"
        ))
    })?;
    if !dev_server::ping(&addr) {
        if addr != dev_server::HTTP_ADDR {
            return Err(Error::DevServer(format!(
                "nothing answers at TOLLGATE_CLICKHOUSE_URL={url}; start that server, or unset the \
                 variable to use the dev server (started automatically)"
            )));
        }
        let server = DevServer::for_repo(repo_root());
        server.start().map_err(Error::DevServer)?;
    }
    drop_stale_databases(&addr);
    *ready = Some(url.clone());
    Ok(url)
}

fn repo_root() -> &'static Path {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest)
}

/// A database of its own for one test, migrated (or empty), dropped on `Drop`.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    url: String,
    config: ClickHouseConfig,
    client: Client,
}

impl TestDb {
    /// A fresh database with every built-in migration applied.
    pub async fn new() -> Result<TestDb> {
        let db = TestDb::empty().await?;
        Migrator::new(db.config.clone())?.run(&mut |_| {}).await?;
        Ok(db)
    }

    /// A fresh, empty database (for testing migrations themselves).
    pub async fn empty() -> Result<TestDb> {
        let url = ensure_server()?;
        let name = unique_name();
        let config = ClickHouseConfig::new(url.clone(), name.clone());
        config
            .server_client()
            .query_raw(&format!("CREATE DATABASE {name}"))
            .execute()
            .await?;
        Ok(TestDb {
            client: config.client(),
            name,
            url,
            config,
        })
    }

    /// A name for a database that is not created (the runner creates it); still dropped on
    /// `Drop`.
    pub fn unused_name() -> Result<TestDb> {
        let url = ensure_server()?;
        let name = unique_name();
        let config = ClickHouseConfig::new(url.clone(), name.clone());
        Ok(TestDb {
            client: config.client(),
            name,
            url,
            config,
        })
    }

    /// The client, with this database selected.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A client of this database's key and token database (`<name>_keys`).
    pub fn keys_client(&self) -> Client {
        self.config.keys_client()
    }

    /// The connection config of this database.
    pub fn config(&self) -> &ClickHouseConfig {
        &self.config
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDb {
    /// Drops the database with a blocking std HTTP request: no async runtime is needed, so
    /// this also works while a panicking test unwinds out of its runtime.
    fn drop(&mut self) {
        if let Some(addr) = dev_server::http_addr_of(&self.url) {
            for db in [self.name.clone(), crate::config::keys_database(&self.name)] {
                let sql = format!("DROP DATABASE IF EXISTS {db}");
                let _ = dev_server::http_request(&addr, "POST", "/", &sql, Duration::from_secs(30));
            }
        }
    }
}

/// `tollgate_test_<unix secs>_<pid>_<n>`: unique across threads and processes, and old ones
/// are recognisable by their age.
fn unique_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let secs = Utc::now().timestamp();
    format!(
        "{TEST_DB_PREFIX}{secs}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Drops test databases left by killed test processes (older than six hours).
fn drop_stale_databases(addr: &str) {
    let sql =
        format!("SELECT name FROM system.databases WHERE startsWith(name, '{TEST_DB_PREFIX}')");
    let Ok((200, body)) =
        dev_server::http_request(addr, "POST", "/", &sql, Duration::from_secs(10))
    else {
        return;
    };
    let now = Utc::now().timestamp();
    for name in body.lines() {
        let created = name
            .strip_prefix(TEST_DB_PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|s| s.parse::<i64>().ok());
        if created.is_some_and(|c| now - c > 6 * 3600) && crate::migrate::is_plain_name(name) {
            let _ = dev_server::http_request(
                addr,
                "POST",
                "/",
                &format!("DROP DATABASE IF EXISTS {name}"),
                Duration::from_secs(30),
            );
        }
    }
}

/// Waits (at most `limit`) until the server runs no background merge — so a benchmark phase
/// is not billed for the merges of the one before it. Returns how long it waited.
pub async fn wait_for_merges(
    server: &clickhouse::Client,
    limit: std::time::Duration,
) -> Result<std::time::Duration> {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        let merging: u64 = crate::read_query(server, "SELECT count() FROM system.merges")
            .fetch_one()
            .await?;
        if merging == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    Ok(started.elapsed())
}

/// A database of its own on the dev cluster (`dev_cluster.rs`, started when it does not
/// answer), migrated `ON CLUSTER`, dropped from every host on `Drop`.
#[derive(Debug)]
pub struct ClusterDb {
    name: String,
    /// One config per node, in [`crate::dev_cluster::NODES`] order.
    nodes: Vec<ClickHouseConfig>,
}

impl ClusterDb {
    /// A fresh database on every host with every built-in migration applied (through node 0).
    pub async fn new() -> Result<ClusterDb> {
        ensure_cluster()?;
        let name = unique_name();
        let cluster = crate::dev_cluster::DevCluster::for_repo(repo_root());
        let nodes: Vec<ClickHouseConfig> = (0..crate::dev_cluster::NODES.len())
            .map(|i| ClickHouseConfig::new(cluster.url(i), name.clone()))
            .collect();
        let db = ClusterDb { name, nodes };
        Migrator::new(db.nodes[0].clone())?
            .on_cluster(Some(crate::dev_cluster::CLUSTER.to_string()))
            .run(&mut |_| {})
            .await?;
        Ok(db)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Node `i`'s connection config for this database.
    pub fn node(&self, i: usize) -> &ClickHouseConfig {
        &self.nodes[i]
    }

    pub fn nodes(&self) -> &[ClickHouseConfig] {
        &self.nodes
    }
}

impl Drop for ClusterDb {
    fn drop(&mut self) {
        if let Some(addr) = dev_server::http_addr_of(&self.nodes[0].url) {
            for db in [self.name.clone(), crate::config::keys_database(&self.name)] {
                let sql = format!(
                    "DROP DATABASE IF EXISTS {db} ON CLUSTER {}",
                    crate::dev_cluster::CLUSTER
                );
                let _ = dev_server::http_request(&addr, "POST", "/", &sql, Duration::from_secs(60));
            }
        }
    }
}

/// Makes sure the dev cluster answers (ZooKeeper and every node), starting what is down. Once
/// per process.
pub fn ensure_cluster() -> Result<()> {
    static READY: OnceLock<Mutex<bool>> = OnceLock::new();
    let cell = READY.get_or_init(|| Mutex::new(false));
    let mut ready = cell.lock().unwrap_or_else(|p| p.into_inner());
    if *ready {
        return Ok(());
    }
    let cluster = crate::dev_cluster::DevCluster::for_repo(repo_root());
    cluster.start().map_err(Error::DevServer)?;
    // A cluster left by an earlier run after a ZooKeeper crash may have lost a DDL worker.
    cluster.heal_ddl().map_err(Error::DevServer)?;
    *ready = true;
    Ok(())
}
