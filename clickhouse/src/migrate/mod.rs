//! Applying `clickhouse/migrations/NNNN_name.sql` to a database, once each, in order.
//!
//! [`Migration`] is one parsed file: its number, statements, SHA-256 checksum and optional
//! `-- requires: X.Y` header. [`Migrator`] applies the pending ones and records each in
//! `schema_migrations` (version, name, checksum, when, on which server version).
//!
//! # Rules for migration files
//! - Portable DDL only (docs/CLICKHOUSE.md): every file runs on 18.16 and on 26.x. Features only
//!   modern servers have go in a file whose header says `-- requires: 22.3` (any dotted
//!   version); it is applied only where `SELECT version()` is at least that, and stays pending
//!   elsewhere — so it may only add optional physical features, and nothing may depend on it.
//! - Every statement is idempotent (`CREATE … IF NOT EXISTS`, re-runnable `ALTER`s): a runner
//!   killed between a statement and its `schema_migrations` row re-runs the whole file. 18.16
//!   has no `ADD COLUMN IF NOT EXISTS`: such a statement carries `-- unless-column: t.c`, and
//!   the runner skips it when `system.columns` already has that column. A `RENAME TABLE`
//!   carries `-- if-table: t` and runs only while the database still has `t`.
//! - A file is immutable once applied anywhere: the runner refuses to run when an applied
//!   file's checksum changed. Change the schema with a new file.
//! - Statements are written for one server, unqualified; `--cluster NAME` rewrites them
//!   (see `render.rs`). A statement whose leading comment is `-- cluster-only` runs only
//!   on clusters (the `Distributed` table over `usage_events`).
//!
//! # Two runners at once
//! Safety rests on two things:
//! 1. **A lock that is a table.** `CREATE TABLE schema_migrations_lock … AS SELECT <holder>,
//!    now()` without `IF NOT EXISTS` succeeds for exactly one caller: the server creates a
//!    table name under its DDL guard and every other caller gets "already exists". The holder
//!    applies what is pending and drops the table; the others poll until they get it, then
//!    find nothing left to do. No transactions needed, so it works on 18.16.
//! 2. **Idempotent statements and checksum reconciliation** for the cases a lock cannot
//!    cover: a runner killed mid-file (re-running is harmless) and a stale lock left by it
//!    (the next runner waits `lock_timeout`, then fails naming the holder; `--break-lock`
//!    removes it, which is safe for the same reason).
//!
//! On a cluster the lock table is created `ON CLUSTER` (the distributed-DDL queue orders the
//! runners: the first creates it on every host, the others get "already exists"), so runners
//! talking to different hosts exclude each other too; `schema_migrations` is replicated to every host, and before applying anything the
//! runner checks each host's copy (through `remote()` over `system.clusters`): a host whose
//! applied checksums differ stops the run. The `ON CLUSTER` DDL itself is serialised by the
//! servers' distributed DDL queue.

mod render;
mod sql;

use chrono::{DateTime, Utc};
use std::cmp::Ordering;
use std::fmt;
use std::time::{Duration, Instant};

use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub(crate) use render::is_plain_name;
pub use render::Target;
pub(crate) use render::SHARDED_TABLES;
pub use sql::Statement;

use crate::config::read_query;
use crate::error::{Error, Result};
use crate::ClickHouseConfig;

macro_rules! migration_files {
    ($($file:literal),* $(,)?) => {
        &[$(($file, include_str!(concat!("../../migrations/", $file)))),*]
    };
}

/// Every migration file, in order (a test checks this list against the directory).
pub const MIGRATION_FILES: &[(&str, &str)] = migration_files![
    "0001_usage_events.sql",
    "0002_rollups.sql",
    "0003_config_and_state.sql",
    "0004_ingest_bookkeeping.sql",
    "0005_analyst_views.sql",
    "0006_modern_codecs_and_index.sql",
    "0007_evaluator_and_notifications.sql",
    "0008_org_rollups.sql",
    "0009_integrity.sql",
    "0010_model_identity_and_named_users.sql",
    "0011_budget_reservation_cap.sql",
    "0012_analyst_errors_by_cause.sql",
    "0013_keys_acting_for_end_users.sql",
    "0014_cost_accuracy.sql",
    "0015_keys_database.sql",
];

/// The table that records applied migrations.
pub const SCHEMA_MIGRATIONS_DDL: &str = "CREATE TABLE IF NOT EXISTS schema_migrations
(
    version        UInt32,
    name           String,
    checksum       String,
    applied_at     DateTime('UTC'),
    server_version String,
    duration_ms    UInt64,
    applied_by     String
)
ENGINE = ReplacingMergeTree(applied_at)
ORDER BY version";

const LOCK_TABLE: &str = "schema_migrations_lock";

/// A ClickHouse server version (`18.16.1`, `26.9.2.1`), compared component by component.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServerVersion(Vec<u32>);

impl ServerVersion {
    /// Parses a dotted version; `None` unless every component is a number.
    pub fn parse(text: &str) -> Option<ServerVersion> {
        let parts: Option<Vec<u32>> = text.trim().split('.').map(|p| p.parse().ok()).collect();
        parts.filter(|p| !p.is_empty()).map(ServerVersion)
    }
}

impl Ord for ServerVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        let n = self.0.len().max(other.0.len());
        let at = |v: &ServerVersion, i: usize| v.0.get(i).copied().unwrap_or(0);
        (0..n)
            .map(|i| at(self, i).cmp(&at(other, i)))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    }
}

impl PartialOrd for ServerVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(u32::to_string).collect();
        f.write_str(&parts.join("."))
    }
}

/// One migration file, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migration {
    /// `NNNN` of the file name.
    pub version: u32,
    /// `name` of `NNNN_name.sql`.
    pub name: String,
    pub file_name: String,
    /// Hex SHA-256 of the file's bytes.
    pub checksum: String,
    /// The `-- requires: X.Y` header: the oldest server version this file may run on.
    pub requires: Option<ServerVersion>,
    pub statements: Vec<Statement>,
}

impl Migration {
    /// Parses a file named `NNNN_name.sql` with content `text`.
    pub fn parse(file_name: &str, text: &str) -> Result<Migration> {
        let invalid = |reason: String| Error::InvalidMigration {
            file: file_name.to_string(),
            reason,
        };
        let stem = file_name
            .strip_suffix(".sql")
            .ok_or_else(|| invalid("name must end in .sql".into()))?;
        let (number, name) = stem
            .split_once('_')
            .filter(|(n, rest)| {
                n.len() == 4 && n.bytes().all(|b| b.is_ascii_digit()) && !rest.is_empty()
            })
            .ok_or_else(|| invalid("name must be NNNN_name.sql".into()))?;
        let version: u32 = number
            .parse()
            .map_err(|_| invalid("name must be NNNN_name.sql".into()))?;

        let mut requires = None;
        for line in text.lines().map(str::trim) {
            if !line.starts_with("--") {
                if line.is_empty() {
                    continue;
                }
                break; // the header is the leading comment block
            }
            if let Some(v) = line
                .trim_start_matches('-')
                .trim()
                .strip_prefix("requires:")
            {
                let parsed = ServerVersion::parse(v).ok_or_else(|| {
                    invalid(format!(
                        "`requires:` wants a version such as 22.3, got {:?}",
                        v.trim()
                    ))
                })?;
                requires = Some(parsed);
            }
        }

        let statements = sql::split_statements(text).map_err(invalid)?;
        if statements.is_empty() {
            return Err(invalid("has no statements".into()));
        }
        Ok(Migration {
            version,
            name: name.to_string(),
            file_name: file_name.to_string(),
            checksum: hex::encode(Sha256::digest(text.as_bytes())),
            requires,
            statements,
        })
    }

    /// The migrations compiled into this build, in order.
    pub fn builtin() -> Result<Vec<Migration>> {
        let migrations = MIGRATION_FILES
            .iter()
            .map(|(name, text)| Migration::parse(name, text))
            .collect::<Result<Vec<_>>>()?;
        check_order(&migrations)?;
        Ok(migrations)
    }

    /// Whether a server of `version` may run this file.
    pub fn runs_on(&self, version: &ServerVersion) -> bool {
        self.requires.as_ref().is_none_or(|r| version >= r)
    }

    /// The statements as they run on `target`.
    pub fn render(&self, target: &Target) -> Result<Vec<String>> {
        Ok(self
            .render_guarded(target)?
            .into_iter()
            .map(|(sql, _)| sql)
            .collect())
    }

    /// [`Migration::render`] with each statement's guard (`-- unless-column`, `-- if-table`).
    fn render_guarded(&self, target: &Target) -> Result<Vec<GuardedStatement>> {
        let mut out = Vec::new();
        for s in self
            .statements
            .iter()
            .filter(|s| !s.cluster_only || target.cluster.is_some())
        {
            let invalid = |reason: String| Error::InvalidMigration {
                file: self.file_name.clone(),
                reason,
            };
            // On a cluster the guard looks at the table the statement alters there.
            let guard = match (&s.unless_column, &s.if_table) {
                (Some((table, column)), _) => Some(Guard::UnlessColumn(
                    match target.cluster {
                        Some(_) => render::cluster_table_name(table),
                        None => table.clone(),
                    },
                    column.clone(),
                )),
                (None, Some(table)) => Some(Guard::IfTable(table.clone())),
                (None, None) => None,
            };
            out.push((render::render(&s.sql, target).map_err(invalid)?, guard));
            // A sharded table gets its Distributed table at once: views created later read it.
            if let Some(distributed) = render::distributed_over(&s.sql, target).map_err(invalid)? {
                out.push((distributed, None));
            }
        }
        Ok(out)
    }
}

/// When a statement runs (checked against the target database just before).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Guard {
    /// `-- unless-column: table.column`: not when that column exists.
    UnlessColumn(String, String),
    /// `-- if-table: table`: only while that table exists.
    IfTable(String),
}

/// A rendered statement and its guard.
type GuardedStatement = (String, Option<Guard>);

fn check_order(migrations: &[Migration]) -> Result<()> {
    for pair in migrations.windows(2) {
        if pair[1].version <= pair[0].version {
            return Err(Error::InvalidMigration {
                file: pair[1].file_name.clone(),
                reason: format!("numbers must increase (after {})", pair[0].file_name),
            });
        }
    }
    Ok(())
}

/// What the runner is doing, for progress output.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MigrationEvent {
    Connected {
        server_version: ServerVersion,
        database: String,
        cluster: Option<String>,
    },
    WaitingForLock {
        holder: String,
        since: String,
    },
    LockBroken,
    AlreadyApplied {
        file: String,
    },
    Applying {
        file: String,
        statements: usize,
    },
    Applied {
        file: String,
        duration: Duration,
    },
    /// Gated by `-- requires:`; stays pending.
    Skipped {
        file: String,
        requires: ServerVersion,
        server_version: ServerVersion,
    },
}

impl fmt::Display for MigrationEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MigrationEvent::Connected { server_version, database, cluster } => {
                write!(f, "ClickHouse {server_version}, database `{database}`")?;
                match cluster {
                    Some(c) => write!(f, ", ON CLUSTER {c}"),
                    None => Ok(()),
                }
            }
            MigrationEvent::WaitingForLock { holder, since } => {
                write!(f, "waiting for the migration lock (held by {holder} since {since})")
            }
            MigrationEvent::LockBroken => f.write_str("removed the migration lock (--break-lock)"),
            MigrationEvent::AlreadyApplied { file } => write!(f, "  = {file} (applied)"),
            MigrationEvent::Applying { file, statements } => {
                write!(f, "  → {file}: {statements} statement(s)…")
            }
            MigrationEvent::Applied { file, duration } => {
                write!(f, "  ✓ {file} ({} ms)", duration.as_millis())
            }
            MigrationEvent::Skipped { file, requires, server_version } => write!(
                f,
                "  – {file} skipped: requires ClickHouse {requires}, server is {server_version} (stays pending)"
            ),
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigrationReport {
    pub applied: Vec<String>,
    pub already_applied: Vec<String>,
    pub skipped: Vec<String>,
}

#[derive(Debug, Clone, Row, Deserialize)]
struct AppliedRow {
    version: u32,
    name: String,
    checksum: String,
}

#[derive(Debug, Row, Serialize)]
struct RecordRow<'a> {
    version: u32,
    name: &'a str,
    checksum: &'a str,
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    applied_at: DateTime<Utc>,
    server_version: String,
    duration_ms: u64,
    applied_by: &'a str,
}

#[derive(Debug, Row, Deserialize)]
struct LockRow {
    holder: String,
    since: String,
}

/// Applies migrations to one database (see the module docs).
#[derive(Debug)]
pub struct Migrator {
    config: ClickHouseConfig,
    cluster: Option<String>,
    migrations: Vec<Migration>,
    lock_timeout: Duration,
    break_lock: bool,
    holder: String,
}

impl Migrator {
    /// A runner for `config.database` with the built-in migrations.
    pub fn new(config: ClickHouseConfig) -> Result<Migrator> {
        Ok(Migrator::with_migrations(config, Migration::builtin()?))
    }

    /// A runner with an explicit set of migrations (tests use edited copies).
    pub fn with_migrations(config: ClickHouseConfig, migrations: Vec<Migration>) -> Migrator {
        Migrator {
            config,
            cluster: None,
            migrations,
            lock_timeout: Duration::from_secs(300),
            break_lock: false,
            holder: holder_id(),
        }
    }

    /// Render every statement `ON CLUSTER name` with `Replicated*` engines.
    pub fn on_cluster(mut self, cluster: Option<String>) -> Migrator {
        self.cluster = cluster;
        self
    }

    /// How long to wait for another runner's lock before failing (default 5 minutes).
    pub fn lock_timeout(mut self, timeout: Duration) -> Migrator {
        self.lock_timeout = timeout;
        self
    }

    /// Remove a lock left by a runner that died (see [`Error::LockTimeout`]).
    pub fn break_lock(mut self, yes: bool) -> Migrator {
        self.break_lock = yes;
        self
    }

    /// The migrations this runner applies.
    pub fn migrations(&self) -> &[Migration] {
        &self.migrations
    }

    fn target(&self) -> Target {
        Target {
            database: self.config.database.clone(),
            cluster: self.cluster.clone(),
        }
    }

    fn check_names(&self) -> Result<()> {
        if !render::is_plain_name(&self.config.database) {
            return Err(Error::InvalidName {
                what: "database",
                name: self.config.database.clone(),
            });
        }
        if let Some(c) = &self.cluster {
            if !render::is_plain_name(c) {
                return Err(Error::InvalidName {
                    what: "cluster",
                    name: c.clone(),
                });
            }
        }
        Ok(())
    }

    /// Every statement of every migration as it would run on `target` for a server of
    /// `server_version` (gated files are left out where they would be skipped).
    pub fn plan(&self, server_version: &ServerVersion) -> Result<Vec<(String, Vec<String>)>> {
        self.check_names()?;
        let target = self.target();
        let mut plan = vec![(
            "schema_migrations".to_string(),
            vec![
                render::render(SCHEMA_MIGRATIONS_DDL, &target).map_err(|reason| {
                    Error::InvalidMigration {
                        file: "schema_migrations".into(),
                        reason,
                    }
                })?,
            ],
        )];
        for m in &self.migrations {
            if m.runs_on(server_version) {
                plan.push((m.file_name.clone(), m.render(&target)?));
            }
        }
        Ok(plan)
    }

    /// The server's version.
    pub async fn server_version(&self) -> Result<ServerVersion> {
        let text: String = read_query(&self.config.server_client(), "SELECT version()")
            .fetch_one()
            .await?;
        ServerVersion::parse(&text).ok_or(Error::ServerVersion(text))
    }

    /// Applies every pending migration, reporting progress through `on_event`.
    pub async fn run(
        &self,
        on_event: &mut (dyn FnMut(&MigrationEvent) + Send),
    ) -> Result<MigrationReport> {
        self.check_names()?;
        // Render everything first: a file the renderer cannot handle fails before any DDL.
        let target = self.target();
        for m in &self.migrations {
            m.render(&target)?;
        }
        check_order(&self.migrations)?;

        let server_version = self.server_version().await?;
        on_event(&MigrationEvent::Connected {
            server_version: server_version.clone(),
            database: self.config.database.clone(),
            cluster: self.cluster.clone(),
        });
        self.create_database().await?;
        let client = self.config.client();
        if self.break_lock {
            let on_cluster = self
                .cluster
                .as_ref()
                .map(|c| format!(" ON CLUSTER {c}"))
                .unwrap_or_default();
            client
                .query_raw(&format!(
                    "DROP TABLE IF EXISTS {}.{LOCK_TABLE}{on_cluster}",
                    self.config.database
                ))
                .execute()
                .await?;
            on_event(&MigrationEvent::LockBroken);
        }
        self.acquire_lock(&client, on_event).await?;
        let result = self.apply_locked(&client, &server_version, on_event).await;
        let on_cluster = self
            .cluster
            .as_ref()
            .map(|c| format!(" ON CLUSTER {c}"))
            .unwrap_or_default();
        let released = client
            .query_raw(&format!(
                "DROP TABLE IF EXISTS {}.{LOCK_TABLE}{on_cluster}",
                self.config.database
            ))
            .execute()
            .await;
        let report = result?;
        released?;
        Ok(report)
    }

    async fn create_database(&self) -> Result<()> {
        let mut sql = format!("CREATE DATABASE IF NOT EXISTS {}", self.config.database);
        if let Some(c) = &self.cluster {
            sql.push_str(&format!(" ON CLUSTER {c}"));
        }
        let server = self.config.server_client();
        // Two runners creating the same database can race inside 18.16 ("already exists"
        // despite IF NOT EXISTS); the second attempt sees it.
        let mut attempt = 0;
        loop {
            match server.query_raw(&sql).execute().await {
                Ok(()) => return Ok(()),
                Err(_) if attempt < 4 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn acquire_lock(
        &self,
        client: &Client,
        on_event: &mut (dyn FnMut(&MigrationEvent) + Send),
    ) -> Result<()> {
        let started = Instant::now();
        let mut announced = false;
        loop {
            let attempt = match &self.cluster {
                None => {
                    client
                        .query(&format!(
                            "CREATE TABLE {LOCK_TABLE} ENGINE = Log AS SELECT ? AS holder, now() AS acquired_at"
                        ))
                        .bind(self.holder.as_str())
                        .execute()
                        .await
                }
                // On a cluster the lock is a table created ON CLUSTER: the distributed-DDL
                // queue orders the runners' CREATEs, the first creates it on every host and
                // every later one fails with "already exists" (on every host). (A replicated
                // table with a fixed replica name looked atomic but is not on 18.16: a failed
                // CREATE of the second runner could remove the first one's replica nodes.)
                Some(cluster) => {
                    let created = client
                        .query(&format!(
                            "CREATE TABLE {}.{LOCK_TABLE} ON CLUSTER {cluster} \
                             (holder String, acquired_at DateTime) ENGINE = Log",
                            self.config.database
                        ))
                        .execute()
                        .await;
                    match created {
                        Ok(()) => client
                            .query(&format!("INSERT INTO {LOCK_TABLE} SELECT ?, now()"))
                            .bind(self.holder.as_str())
                            .execute()
                            .await,
                        Err(e) => Err(e),
                    }
                }
            };
            let err = match attempt {
                Ok(()) => return Ok(()),
                Err(e) => Error::from(e),
            };
            if !is_lock_busy(&err) {
                return Err(err);
            }
            let (holder, since) = self.lock_holder(client).await;
            if started.elapsed() >= self.lock_timeout {
                return Err(Error::LockTimeout {
                    database: self.config.database.clone(),
                    waited: self.lock_timeout,
                    holder,
                    since,
                });
            }
            if !announced {
                on_event(&MigrationEvent::WaitingForLock { holder, since });
                announced = true;
            }
            // On a cluster each try is a distributed-DDL task every host runs: fewer, slower.
            let pause = if self.cluster.is_some() { 1_000 } else { 200 };
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }

    /// `schema_migrations` as each host of `cluster` holds it (its own replica), read through
    /// `remote()`: a host whose copy names a changed file fails the run like the local copy.
    async fn applied_on_every_host(
        &self,
        client: &Client,
        cluster: &str,
    ) -> Result<Vec<AppliedRow>> {
        let mut rows = Vec::new();
        for host in cluster_hosts(client, cluster).await? {
            let sql = format!(
                "SELECT version, argMax(name, applied_at) AS name, argMax(checksum, applied_at) AS checksum \
                 FROM remote('{host}', {}, schema_migrations) GROUP BY version ORDER BY version",
                self.config.database
            );
            rows.extend(read_query(client, &sql).fetch_all::<AppliedRow>().await?);
        }
        Ok(rows)
    }

    async fn lock_holder(&self, client: &Client) -> (String, String) {
        let row = read_query(
            client,
            &format!("SELECT holder, toString(acquired_at) AS since FROM {LOCK_TABLE} LIMIT 1"),
        )
        .fetch_optional::<LockRow>()
        .await;
        match row {
            Ok(Some(r)) => (r.holder, format!("{} UTC", r.since)),
            _ => ("another runner".into(), "just now".into()),
        }
    }

    async fn apply_locked(
        &self,
        client: &Client,
        server_version: &ServerVersion,
        on_event: &mut (dyn FnMut(&MigrationEvent) + Send),
    ) -> Result<MigrationReport> {
        let target = self.target();
        let ddl = render::render(SCHEMA_MIGRATIONS_DDL, &target).map_err(|reason| {
            Error::InvalidMigration {
                file: "schema_migrations".into(),
                reason,
            }
        })?;
        client.query_raw(&ddl).execute().await?;

        let applied: Vec<AppliedRow> = read_query(
            client,
            "SELECT version, name, checksum FROM schema_migrations FINAL ORDER BY version",
        )
        .fetch_all()
        .await?;
        let mut every_copy = applied.clone();
        if let Some(cluster) = &self.cluster {
            every_copy.extend(self.applied_on_every_host(client, cluster).await?);
        }
        for row in &every_copy {
            match self.migrations.iter().find(|m| m.version == row.version) {
                None => {
                    return Err(Error::UnknownApplied {
                        database: self.config.database.clone(),
                        version: row.version,
                        name: row.name.clone(),
                    })
                }
                Some(m) if m.checksum != row.checksum => {
                    return Err(Error::ChangedAfterApply {
                        file: m.file_name.clone(),
                        database: self.config.database.clone(),
                        applied: row.checksum.clone(),
                        current: m.checksum.clone(),
                    })
                }
                Some(_) => {}
            }
        }

        let mut report = MigrationReport::default();
        for m in &self.migrations {
            let file = m.file_name.clone();
            if applied.iter().any(|a| a.version == m.version) {
                on_event(&MigrationEvent::AlreadyApplied { file: file.clone() });
                report.already_applied.push(file);
                continue;
            }
            if let Some(requires) = m.requires.as_ref().filter(|_| !m.runs_on(server_version)) {
                on_event(&MigrationEvent::Skipped {
                    file: file.clone(),
                    requires: requires.clone(),
                    server_version: server_version.clone(),
                });
                report.skipped.push(file);
                continue;
            }
            let statements = m.render_guarded(&target)?;
            on_event(&MigrationEvent::Applying {
                file: file.clone(),
                statements: statements.len(),
            });
            let started = Instant::now();
            for (sql, guard) in &statements {
                match guard {
                    Some(Guard::UnlessColumn(table, column)) => {
                        let present: u64 = client
                            .query(
                                "SELECT count() FROM system.columns \
                                 WHERE database = currentDatabase() AND table = ? AND name = ?",
                            )
                            .bind(table.as_str())
                            .bind(column.as_str())
                            .fetch_one()
                            .await?;
                        if present > 0 {
                            continue;
                        }
                    }
                    Some(Guard::IfTable(table)) => {
                        let present: u64 = client
                            .query(
                                "SELECT count() FROM system.tables \
                                 WHERE database = currentDatabase() AND name = ?",
                            )
                            .bind(table.as_str())
                            .fetch_one()
                            .await?;
                        if present == 0 {
                            continue;
                        }
                    }
                    None => {}
                }
                client.query_raw(sql).execute().await?;
            }
            let duration = started.elapsed();
            let mut insert = client.insert::<RecordRow<'_>>("schema_migrations").await?;
            insert
                .write(&RecordRow {
                    version: m.version,
                    name: &m.name,
                    checksum: &m.checksum,
                    applied_at: Utc::now(),
                    server_version: server_version.to_string(),
                    duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
                    applied_by: &self.holder,
                })
                .await?;
            insert.end().await?;
            on_event(&MigrationEvent::Applied {
                file: file.clone(),
                duration,
            });
            report.applied.push(file);
        }
        Ok(report)
    }
}

/// Every host of `cluster` as `address:native port` (for `remote()`), from `system.clusters`.
pub(crate) async fn cluster_hosts(client: &Client, cluster: &str) -> Result<Vec<String>> {
    #[derive(Row, Deserialize)]
    struct Host {
        host_address: String,
        port: u16,
    }
    let hosts: Vec<Host> = read_query(
        client,
        "SELECT host_address, port FROM system.clusters WHERE cluster = ?",
    )
    .bind(cluster)
    .fetch_all()
    .await?;
    Ok(hosts
        .into_iter()
        .map(|h| format!("{}:{}", h.host_address, h.port))
        .collect())
}

/// "Table already exists" (57), or 18.16's "is creating or attaching right now".
fn is_lock_busy(err: &Error) -> bool {
    let text = err.to_string();
    err.server_code() == Some(57) || text.contains("already exist") || text.contains("right now")
}

/// `host:pid:nanos` — who holds the lock, for the message another runner prints.
fn holder_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into());
    let nanos = Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
    format!("{host}:{}:{}", std::process::id(), nanos % 1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_in_the_directory_is_embedded_in_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        on_disk.sort();
        let embedded: Vec<&str> = MIGRATION_FILES.iter().map(|(n, _)| *n).collect();
        assert_eq!(on_disk, embedded);
        let parsed = Migration::builtin().unwrap();
        assert_eq!(parsed.len(), embedded.len());
    }

    #[test]
    fn every_create_is_idempotent() {
        for m in Migration::builtin().unwrap() {
            for s in &m.statements {
                let upper = s.sql.to_uppercase();
                if upper.starts_with("CREATE") {
                    assert!(
                        upper.contains("IF NOT EXISTS"),
                        "{}: {}",
                        m.file_name,
                        s.sql
                    );
                }
                if upper.starts_with("RENAME") {
                    assert!(
                        s.if_table.is_some(),
                        "{}: RENAME needs `-- if-table: table` (a re-run must not repeat it): {}",
                        m.file_name,
                        s.sql
                    );
                }
                if upper.contains("ADD COLUMN") {
                    assert!(
                        s.unless_column.is_some(),
                        "{}: ADD COLUMN needs `-- unless-column: table.column` (18.16 has no \
                         IF NOT EXISTS here): {}",
                        m.file_name,
                        s.sql
                    );
                }
                if upper.contains("ADD INDEX") {
                    assert!(
                        upper.contains("IF NOT EXISTS"),
                        "{}: {}",
                        m.file_name,
                        s.sql
                    );
                }
            }
        }
    }

    #[test]
    fn headers_and_names_are_parsed() {
        let m = Migration::parse("0042_x_y.sql", "-- requires: 22.3\n-- why\nSELECT 1;\n").unwrap();
        assert_eq!((m.version, m.name.as_str()), (42, "x_y"));
        assert_eq!(m.requires, ServerVersion::parse("22.3"));
        assert!(!m.runs_on(&ServerVersion::parse("18.16.1").unwrap()));
        assert!(m.runs_on(&ServerVersion::parse("22.3").unwrap()));
        assert!(m.runs_on(&ServerVersion::parse("26.9.2.1").unwrap()));
        assert!(Migration::parse("42_x.sql", "SELECT 1").is_err());
        assert!(Migration::parse("0042.sql", "SELECT 1").is_err());
        assert!(Migration::parse("0042_x.sql", "-- requires: soon\nSELECT 1").is_err());
        assert!(Migration::parse("0042_x.sql", "-- nothing\n").is_err());
        // A `requires:` after the first statement is not a header.
        let m = Migration::parse("0043_x.sql", "SELECT 1;\n-- requires: 99.1\n").unwrap();
        assert_eq!(m.requires, None);
    }

    #[test]
    fn versions_compare_numerically() {
        let v = |s| ServerVersion::parse(s).unwrap();
        assert!(v("18.16.1") < v("20.3"));
        assert!(v("20.10") > v("20.3"));
        assert_eq!(v("22.3").cmp(&v("22.3.0.0")), Ordering::Equal);
        assert_eq!(v("26.9.2.1").to_string(), "26.9.2.1");
        assert_eq!(ServerVersion::parse("abc"), None);
    }

    #[test]
    fn the_baseline_runs_on_18_16_and_only_gated_files_are_skipped() {
        let old = ServerVersion::parse("18.16.1").unwrap();
        for m in Migration::builtin().unwrap() {
            assert_eq!(m.runs_on(&old), m.requires.is_none(), "{}", m.file_name);
        }
    }

    #[test]
    fn cluster_plan_replicates_every_table_and_adds_the_distributed_table() {
        let config = ClickHouseConfig::new("http://x", "tollgate");
        let migrator = Migrator::new(config)
            .unwrap()
            .on_cluster(Some("prod".into()));
        let plan = migrator
            .plan(&ServerVersion::parse("26.9").unwrap())
            .unwrap();
        let all: Vec<&String> = plan.iter().flat_map(|(_, s)| s).collect();
        for sql in &all {
            // Every statement runs ON CLUSTER but an ALTER of a table every host replicates.
            let altered_everywhere = sql.starts_with("ALTER TABLE tollgate.")
                && !super::render::SHARDED_TABLES
                    .iter()
                    .any(|t| sql.starts_with(&format!("ALTER TABLE tollgate.{t}_local ")));
            assert_eq!(
                sql.contains(" ON CLUSTER prod"),
                !altered_everywhere,
                "{sql}"
            );
            if sql.contains("MergeTree") {
                assert!(sql.contains("ENGINE = Replicated"), "{sql}");
                let sharded = super::render::SHARDED_TABLES.iter().any(|t| {
                    sql.contains(&format!(
                        "'/clickhouse/tables/{{shard}}/tollgate/{t}_local'"
                    ))
                });
                let everywhere = sql.contains("'/clickhouse/tables/all/tollgate/");
                assert!(sharded != everywhere, "{sql}");
            }
        }
        // Each sharded table is `T_local` on every host and `T` the Distributed table over it.
        for t in super::render::SHARDED_TABLES {
            assert!(
                all.iter().any(|s| s.starts_with(&format!(
                    "CREATE TABLE IF NOT EXISTS tollgate.{t} ON CLUSTER prod AS tollgate.{t}_local"
                )) && s.contains(&format!(
                    "Distributed('prod', 'tollgate', {t}_local, cityHash64(org_id))"
                ))),
                "{t}"
            );
        }
        assert!(all.iter().any(|s| s.contains(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS tollgate.usage_daily_mv ON CLUSTER prod TO tollgate.usage_daily_local"
        ) && s.contains("FROM tollgate.usage_events_local")));
        assert!(all.iter().any(|s| s
            .starts_with("ALTER TABLE tollgate.usage_events_local ON CLUSTER prod MODIFY COLUMN")));
        // The analysts' views read the Distributed tables: every shard.
        assert!(all.iter().any(|s| s
            .contains("CREATE VIEW IF NOT EXISTS tollgate.ai_daily_usage")
            && s.contains("FROM tollgate.usage_daily\n")));

        let single = Migrator::new(ClickHouseConfig::new("http://x", "tollgate")).unwrap();
        let plan = single
            .plan(&ServerVersion::parse("18.16.1").unwrap())
            .unwrap();
        let all: Vec<&String> = plan.iter().flat_map(|(_, s)| s).collect();
        assert!(all
            .iter()
            .all(|s| !s.contains("ON CLUSTER") && !s.contains("Distributed")));
        assert!(
            all.iter().all(|s| !s.contains("CODEC")),
            "gated file left out on 18.16"
        );
    }

    #[test]
    fn unsafe_names_are_refused() {
        let m = Migrator::new(ClickHouseConfig::new("http://x", "bad-name")).unwrap();
        assert!(matches!(
            m.plan(&ServerVersion::parse("1").unwrap()),
            Err(Error::InvalidName { .. })
        ));
        let m = Migrator::new(ClickHouseConfig::new("http://x", "ok"))
            .unwrap()
            .on_cluster(Some("a b".into()));
        assert!(matches!(
            m.plan(&ServerVersion::parse("1").unwrap()),
            Err(Error::InvalidName { .. })
        ));
    }
}
