//! The whole system on this machine: the collector, dashboard-api and the wasm edge worker under
//! `workerd`, wired to each other, to a ClickHouse and to a provider. The demo (fixed ports, the
//! dev ClickHouse) and the soak (free ports, a private ClickHouse, pieces restarted under load)
//! both start the system through [`StackConfig`], so they run it the same way.
//!
//! Each `start_*` spawns one piece as a [`Proc`] (killed when dropped) and waits until it
//! listens; calling it again after the piece was stopped is a restart with the same settings.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use edge_worker::local::{self, LocalWorker};
use serde_json::{json, Value};
use tollgate_clickhouse::{ClickHouseConfig, Migrator};
use tollgate_dashboard_api::auth::{create_token, Role};

use crate::harness::{binary, repo_root, wait_for_port, worker_bindings, Proc, SIGNING_SECRET};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long a piece may take to listen after it was spawned.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Where each piece listens and what ties them together.
#[derive(Clone, Debug)]
pub struct StackConfig {
    pub clickhouse_url: String,
    pub database: String,
    /// Logs, the collector's spool, the workerd config.
    pub dir: PathBuf,
    pub collector: SocketAddr,
    pub dashboard: SocketAddr,
    pub edge: SocketAddr,
    /// Base URL (`…/v1`) the edge sends provider calls to.
    pub provider_base_url: String,
    /// Where the edge posts record batches: the collector's `/v1/records`, unless something
    /// is meant to sit between them.
    pub edge_collector_url: String,
    /// Shared by dashboard-api and the edge for the internal key and budget calls.
    pub internal_secret: String,
    /// The collector's `sink.max_delay_ms`.
    pub sink_max_delay_ms: u64,
    /// The edge's `EDGE_REGION`.
    pub edge_region: String,
    /// dashboard-api's `integrity.interval_secs` (the integrity job's period).
    pub integrity_interval_secs: u64,
    /// dashboard-api's `evaluator.interval_secs` (how often alert rules are checked).
    pub evaluator_interval_secs: u64,
}

impl StackConfig {
    /// The collector's own records URL.
    pub fn collector_records_url(&self) -> String {
        format!("http://{}/v1/records", self.collector)
    }

    pub fn dashboard_url(&self) -> String {
        format!("http://{}", self.dashboard)
    }

    /// The edge's OpenAI-compatible base URL.
    pub fn edge_base_url(&self) -> String {
        format!("http://{}/v1", self.edge)
    }

    pub fn clickhouse(&self) -> ClickHouseConfig {
        ClickHouseConfig::new(self.clickhouse_url.clone(), self.database.clone())
    }

    /// Drops the database and applies every migration; returns how many were applied.
    pub async fn migrate_fresh(&self) -> Result<usize, BoxError> {
        migrate_fresh(&self.clickhouse()).await
    }

    /// Starts `collector serve` (spool in `dir/spool`), logging to `dir/<log>`.
    pub fn start_collector(&self, log: &str) -> Result<Proc, BoxError> {
        self.start_collector_at(self.collector, "spool", log)
    }

    /// Starts one more `collector serve` at `addr` with its spool in `dir/<spool>`.
    pub fn start_collector_at(
        &self,
        addr: SocketAddr,
        spool: &str,
        log: &str,
    ) -> Result<Proc, BoxError> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("creating {}: {e}", self.dir.display()))?;
        let proc = Proc::spawn(
            "collector",
            Command::new(binary("collector"))
                .arg("serve")
                .env("TOLLGATE_LISTEN", addr.to_string())
                .env("TOLLGATE_CLICKHOUSE_URL", &self.clickhouse_url)
                .env("TOLLGATE_CLICKHOUSE_DATABASE", &self.database)
                .env("TOLLGATE_INGEST_SIGNING_SECRETS", SIGNING_SECRET)
                .env("TOLLGATE_SPOOL_DIR", self.dir.join(spool))
                .env(
                    "TOLLGATE_SINK_MAX_DELAY_MS",
                    self.sink_max_delay_ms.to_string(),
                )
                // Back at work within a second of ClickHouse returning.
                .env("TOLLGATE_SINK_RETRY_MAX_MS", "1000"),
            self.dir.join(log),
        );
        listening(proc, addr)
    }

    /// Starts `dashboard-api serve`, logging to `dir/<log>`.
    pub fn start_dashboard(&self, log: &str) -> Result<Proc, BoxError> {
        let proc = Proc::spawn(
            "dashboard-api",
            Command::new(binary("dashboard-api"))
                .arg("serve")
                .env("TOLLGATE_LISTEN", self.dashboard.to_string())
                .env("TOLLGATE_CLICKHOUSE_URL", &self.clickhouse_url)
                .env("TOLLGATE_CLICKHOUSE_DATABASE", &self.database)
                .env("TOLLGATE_INTERNAL_SIGNING_SECRETS", &self.internal_secret)
                .env(
                    "TOLLGATE_INTEGRITY_INTERVAL_SECS",
                    self.integrity_interval_secs.to_string(),
                )
                .env(
                    "TOLLGATE_EVALUATOR_INTERVAL_SECS",
                    self.evaluator_interval_secs.to_string(),
                ),
            self.dir.join(log),
        );
        listening(proc, self.dashboard)
    }

    /// The edge's bindings: providers at `provider_base_url`, records to
    /// `edge_collector_url`, app keys looked up in dashboard-api.
    pub fn edge_bindings(&self) -> Vec<(String, String)> {
        let mut bindings = worker_bindings(&self.provider_base_url, &self.edge_collector_url, "{}");
        bindings.retain(|(k, _)| k != "APP_KEYS" && k != "EDGE_REGION");
        bindings.push(("KEYS_URL".into(), self.dashboard_url()));
        bindings.push(("KEYS_SIGNING_SECRET".into(), self.internal_secret.clone()));
        bindings.push(("EDGE_REGION".into(), self.edge_region.clone()));
        bindings
    }

    /// Starts the built worker bundle under workerd with `bindings`, logging to `dir/<log>`.
    pub fn start_edge(&self, bindings: &[(String, String)], log: &str) -> Result<Proc, BoxError> {
        let root = repo_root();
        let worker = LocalWorker {
            bundle_dir: local::bundle_dir(&root),
            listen: self.edge.to_string(),
            bindings: bindings.to_vec(),
            baselines: Vec::new(),
            stand_ins: Default::default(),
        };
        if !worker.bundle_present() {
            return Err("the edge bundle is missing: run `cargo xtask edge build`".into());
        }
        let workerd = root.join("edge-worker/node_modules/.bin/workerd");
        if !workerd.exists() {
            return Err("workerd is not installed: run `cargo xtask setup`".into());
        }
        let config = worker
            .write_config(&format!("stack-{}.capnp", self.edge.port()))
            .map_err(|e| format!("workerd config: {e}"))?;
        let proc = Proc::spawn(
            "workerd",
            Command::new(workerd)
                .args(["serve", "--experimental"])
                .arg(&config),
            self.dir.join(log),
        );
        listening(proc, self.edge)
    }

    /// A new admin token for dashboard-api (created in ClickHouse, as `dashboard-api token
    /// create` does).
    pub async fn admin_token(&self, name: &str) -> Result<String, BoxError> {
        let (_, token) = create_token(
            &self.clickhouse().keys_client(),
            name,
            Role::Admin,
            "",
            "",
            name,
        )
        .await
        .map_err(|e| format!("creating an admin token: {e:?}"))?;
        Ok(token)
    }
}

/// Drops `ch`'s database and applies every migration on one server; returns how many were
/// applied. (The demo, the soak and the benchmarks start from this.)
pub async fn migrate_fresh(ch: &ClickHouseConfig) -> Result<usize, BoxError> {
    for db in [
        ch.database.clone(),
        tollgate_clickhouse::keys_database(&ch.database),
    ] {
        ch.server_client()
            .query(&format!("DROP DATABASE IF EXISTS {db}"))
            .execute()
            .await
            .map_err(|e| format!("dropping {db}: {e}"))?;
    }
    let report = Migrator::new(ch.clone())?
        .run(&mut |_| {})
        .await
        .map_err(|e| format!("migrating {}: {e}", ch.database))?;
    Ok(report.applied.len())
}

fn listening(mut proc: Proc, addr: SocketAddr) -> Result<Proc, BoxError> {
    if wait_for_port(addr, START_TIMEOUT) {
        return Ok(proc);
    }
    let log = proc.log();
    proc.kill();
    Err(format!(
        "{} did not listen on {addr} within {START_TIMEOUT:?}:\n{log}",
        proc.name
    )
    .into())
}

/// POSTs JSON to dashboard-api (`base` is its root URL) with a bearer token; the answer's JSON.
/// Creates an app key for `org`'s `app` through dashboard-api; returns its secret (shown once).
pub async fn create_app_key(
    base: &str,
    token: &str,
    org: &str,
    app: &str,
    name: &str,
) -> Result<String, BoxError> {
    let v = admin_post(
        base,
        token,
        "/api/v1/keys",
        // Server apps acting for users of their own: the demo and soak name them per call.
        json!({"org_id": org, "app_id": app, "name": name, "acts_for_end_users": true}),
    )
    .await?;
    Ok(v["secret"]
        .as_str()
        .ok_or("no secret in the key answer")?
        .to_string())
}

pub async fn admin_post(
    base: &str,
    token: &str,
    path: &str,
    body: Value,
) -> Result<Value, BoxError> {
    let url = format!("{base}{path}");
    let auth = format!("Bearer {token}");
    tokio::task::spawn_blocking(move || -> Result<Value, BoxError> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut r = agent
            .post(&url)
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .send(body.to_string().as_bytes())
            .map_err(|e| format!("POST {url}: {e}"))?;
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string()?;
        if !(200..300).contains(&status) {
            return Err(format!("POST {url}: {status} {text}").into());
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    })
    .await?
}
