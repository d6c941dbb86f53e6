//! `cargo xtask soak`: the whole stack under steady mixed load while faults are injected, then
//! a reconciliation of what the clients were answered with what was stored.
//!
//! The stack ([`crate::stack`]): the wasm edge under workerd, the mock provider, the collector,
//! a private ClickHouse of the soak's own (restarting it never disturbs the dev server) and
//! dashboard-api (app keys are looked up there). Between the edge and the collector sits the
//! [`witness`], which notes every record the collector acknowledges.
//!
//! - [`load`] — client threads: JSON calls, streams, provider errors, client aborts.
//! - [`faults`] — the injector: collector SIGKILL, ClickHouse restart, workerd restart,
//!   provider stall, in rotation; with `--cluster` the store is a database of its own on the
//!   dev cluster (2 shards × 2 replicas + ZooKeeper) and a replica SIGKILL and a ZooKeeper
//!   restart take the ClickHouse restart's place.
//! - [`reconcile`] — every answered call and every acknowledged record has exactly one row;
//!   the rollups equal the raw rows.
//! - [`report`] — the figures, as JSON and as the `soak` section of docs/BENCHMARKS.md.

pub mod faults;
pub mod load;
pub mod reconcile;
pub mod report;
pub mod witness;

use chrono::{DateTime, Datelike, Utc};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::runtime::Runtime;
use uuid::Uuid;

use crate::harness::free_port;
use crate::mock_provider::{MockOptions, MockProvider};
use crate::private_clickhouse::PrivateClickHouse;
pub use crate::stack::BoxError;
use crate::stack::{self, StackConfig};
use tollgate_clickhouse::dev_cluster::DevCluster;
use tollgate_clickhouse::testing::ClusterDb;

use faults::{Pieces, Store};
use load::Load;
use report::Report;
use witness::Witness;

/// What a soak run does.
#[derive(Clone, Debug)]
pub struct SoakOptions {
    /// How long the load runs.
    pub duration: Duration,
    /// Time between faults (± a quarter).
    pub fault_every: Duration,
    /// Concurrent clients.
    pub clients: usize,
    /// Collectors behind the witness's round-robin.
    pub collectors: usize,
    /// Pause between a client's calls (± half).
    pub think: Duration,
    pub seed: u64,
    /// Logs, spool and ClickHouse data (emptied first).
    pub dir: PathBuf,
    /// Store in a database of its own on the dev cluster instead of a private server.
    pub cluster: bool,
}

const DATABASE: &str = "tollgate";
const INTERNAL_SECRET: &str = "soak-internal-secret-0123456789";
/// Orgs, each with two apps and three users.
const ORGS: &[&str] = &["org_soak_a", "org_soak_b"];
/// Longest wait for the pipeline to deliver everything after the load stopped.
const DELIVERY_LIMIT: Duration = Duration::from_secs(120);
/// dashboard-api's integrity period in the soak: short, so that a duplicate two collectors
/// stored at the same instant is found and removed within the settle time below.
const INTEGRITY_INTERVAL_SECS: u64 = 10;
/// Longest wait, once every record is stored, for no duplicate and every rollup exact (a few
/// integrity passes, each with its mutations).
const SETTLE_LIMIT: Duration = Duration::from_secs(150);

/// Runs the soak; `interrupted` is set by a signal handler (the run then stops early and
/// cleans up). Every process it starts is stopped when it returns, also on error.
pub fn run(rt: &Runtime, opts: &SoakOptions, interrupted: &AtomicBool) -> Result<Report, BoxError> {
    let check = || -> Result<(), BoxError> {
        if interrupted.load(Ordering::SeqCst) {
            Err("interrupted".into())
        } else {
            Ok(())
        }
    };
    let _ = std::fs::remove_dir_all(&opts.dir);
    std::fs::create_dir_all(&opts.dir).map_err(|e| format!("{}: {e}", opts.dir.display()))?;
    let (clickhouse, clickhouse_url, database) = if opts.cluster {
        println!("soak: a database of its own on the dev cluster (started if down)");
        let db = rt.block_on(ClusterDb::new())?;
        let cluster = DevCluster::for_repo(crate::harness::repo_root());
        let (url, name) = (db.node(0).url.clone(), db.name().to_string());
        (Store::Cluster { cluster, db }, url, name)
    } else {
        println!(
            "soak: starting a private ClickHouse in {}",
            opts.dir.join("clickhouse").display()
        );
        let ch = PrivateClickHouse::start(&opts.dir.join("clickhouse"));
        let url = ch.url();
        (Store::Private(ch), url, DATABASE.to_string())
    };
    check()?;
    let mock = Arc::new(rt.block_on(MockProvider::start(MockOptions {
        base_latency_ms: 5,
        chunk_delay_ms: 10,
        error_rate: 0.0,
        seed: opts.seed,
    }))?);
    let mut stack = StackConfig {
        clickhouse_url,
        database,
        dir: opts.dir.clone(),
        collector: format!("127.0.0.1:{}", free_port()).parse()?,
        dashboard: format!("127.0.0.1:{}", free_port()).parse()?,
        edge: format!("127.0.0.1:{}", free_port()).parse()?,
        provider_base_url: mock.base_url(),
        edge_collector_url: String::new(),
        internal_secret: INTERNAL_SECRET.to_string(),
        sink_max_delay_ms: 200,
        edge_region: "SOAK".to_string(),
        integrity_interval_secs: INTEGRITY_INTERVAL_SECS,
        evaluator_interval_secs: 60,
    };
    let mut collector_addrs = vec![stack.collector];
    for _ in 1..opts.collectors.max(1) {
        collector_addrs.push(format!("127.0.0.1:{}", free_port()).parse()?);
    }
    let witness = Arc::new(
        rt.block_on(Witness::start(
            collector_addrs
                .iter()
                .map(|a| format!("http://{a}/v1/records"))
                .collect(),
        ))?,
    );
    stack.edge_collector_url = witness.records_url();
    if !opts.cluster {
        // (A cluster database was migrated ON CLUSTER when it was made.)
        rt.block_on(stack.migrate_fresh())?;
    }
    let mut collectors = Vec::new();
    for (n, addr) in collector_addrs.iter().enumerate() {
        let spool = format!("spool-{n}");
        let proc = stack.start_collector_at(*addr, &spool, &format!("collector{n}-0.log"))?;
        collectors.push(faults::Collector {
            addr: *addr,
            spool,
            proc,
        });
    }
    let dashboard = stack.start_dashboard("dashboard-api.log")?;
    let admin = rt.block_on(stack.admin_token("soak"))?;
    let callers = rt.block_on(create_callers(&stack.dashboard_url(), &admin))?;
    let bindings = stack.edge_bindings();
    let edge = stack.start_edge(&bindings, "workerd-0.log")?;
    check()?;
    println!(
        "soak: stack up (edge {}, collectors {:?}, dashboard {}, ClickHouse {}); {} of load, a fault every ~{}s",
        stack.edge,
        collector_addrs,
        stack.dashboard,
        stack.clickhouse_url,
        report::human(opts.duration),
        opts.fault_every.as_secs()
    );

    let load = Load::new(stack.edge_base_url(), callers);
    let pieces = Pieces::new(
        stack.clone(),
        clickhouse,
        collectors,
        edge,
        bindings,
        mock.clone(),
        load.clone(),
        witness.clone(),
    );
    let started = Instant::now();
    let wall_start = Utc::now();
    let until = started + opts.duration;
    let clients = load.spawn_clients(opts.clients, opts.think, opts.seed);
    let (every, seed) = (opts.fault_every, opts.seed);
    let injector = std::thread::spawn(move || {
        pieces.inject_until(
            started + Duration::from_secs(10).min(every),
            until,
            every,
            seed,
        )
    });
    while Instant::now() < until && !interrupted.load(Ordering::SeqCst) && !injector.is_finished() {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Stop the load first, so the injector (which may be draining the edge) sees it end.
    load.stop.store(true, Ordering::SeqCst);
    for c in clients {
        let _ = c.join();
    }
    let (pieces, faults) = injector
        .join()
        .map_err(|_| "the fault injector panicked (see the log above)")??;
    let load_time = started.elapsed();
    check()?;

    println!(
        "soak: load stopped after {}; reconciling",
        report::human(load_time)
    );
    let outcomes = std::mem::take(&mut *load.outcomes.lock().unwrap_or_else(|p| p.into_inner()));
    let answered: HashSet<Uuid> = outcomes.iter().filter_map(|o| o.event_id).collect();
    let acked: HashSet<Uuid> = witness
        .acks
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .ids
        .clone();
    let expected: HashSet<Uuid> = answered.union(&acked).copied().collect();
    let (stored, delivery) = reconcile::wait_for(
        &stack.clickhouse_url,
        &stack.database,
        &expected,
        DELIVERY_LIMIT,
    )?;
    // Then the state promised once the pipeline is idle: no event stored twice and every
    // rollup equal to the raw rows (two collectors that inserted one re-posted record at the
    // same instant leave a duplicate until dashboard-api's integrity pass removes it).
    let (stored_final, daily, hourly) =
        reconcile::wait_for_exact(&stack.clickhouse_url, &stack.database, SETTLE_LIMIT)?;
    let rejects = reconcile::rejects(&stack.clickhouse_url, &stack.database)?;
    let replicas_converged = match &pieces.clickhouse {
        Store::Cluster { db, .. } => {
            let urls: Vec<String> = db.nodes().iter().map(|n| n.url.clone()).collect();
            Some(reconcile::wait_for_replicas(
                &urls,
                db.name(),
                SETTLE_LIMIT,
            )?)
        }
        Store::Private(_) => None,
    };
    // The overview reads other rollups (`org_daily`, …) than the two compared above, which the
    // integrity pass repairs one after another: wait for the figure itself.
    let raw_rows: u64 = stored_final.values().map(|s| s.rows).sum();
    let settle_deadline = Instant::now() + SETTLE_LIMIT;
    let dashboard_requests = loop {
        let shown = rt.block_on(overview_requests(
            &stack.dashboard_url(),
            &admin,
            wall_start,
        ))?;
        if shown == raw_rows || Instant::now() > settle_deadline {
            break shown;
        }
        std::thread::sleep(Duration::from_millis(1_000));
    };
    let acks = witness.acks.lock().unwrap_or_else(|p| p.into_inner());
    let report = Report::build(report::Inputs {
        opts,
        load_time,
        delivery,
        outcomes: &outcomes,
        faults: &faults,
        acked: &acks,
        stored: if stored_final.len() >= stored.len() {
            &stored_final
        } else {
            &stored
        },
        rollups: [&daily, &hourly],
        rejects,
        dashboard_requests,
        replicas_converged,
    });
    drop(acks);
    shut_down(pieces, dashboard);
    Ok(report)
}

/// One app key per (org, app), each used by three users: `(key, user)`.
async fn create_callers(dashboard: &str, admin: &str) -> Result<Vec<(String, String)>, BoxError> {
    let mut callers = Vec::new();
    for org in ORGS {
        for app in ["chat", "batch"] {
            let key =
                stack::create_app_key(dashboard, admin, org, app, &format!("soak {app}")).await?;
            for user in 0..3 {
                callers.push((key.clone(), format!("{org}_user{user}")));
            }
        }
    }
    Ok(callers)
}

/// The dashboard overview's request count from `since`'s day through today.
async fn overview_requests(base: &str, token: &str, since: DateTime<Utc>) -> Result<u64, BoxError> {
    let day = |t: DateTime<Utc>| {
        let d = t.date_naive();
        format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
    };
    let url = format!(
        "{base}/api/v1/overview?from={}&to={}",
        day(since),
        day(Utc::now())
    );
    let auth = format!("Bearer {token}");
    let v: Value = tokio::task::spawn_blocking(move || -> Result<Value, BoxError> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut r = agent
            .get(&url)
            .header("authorization", &auth)
            .call()
            .map_err(|e| format!("GET {url}: {e}"))?;
        let text = r.body_mut().read_to_string()?;
        serde_json::from_str(&text).map_err(|e| format!("GET {url}: {e}: {text}").into())
    })
    .await??;
    v["current"]["requests"]
        .as_u64()
        .ok_or_else(|| format!("no current.requests in the overview: {v}").into())
}

/// Stops everything the way an operator would: edge, collector (flushes), dashboard, ClickHouse.
fn shut_down(pieces: Pieces, mut dashboard: crate::harness::Proc) {
    let Pieces {
        mut edge,
        mut collectors,
        mut clickhouse,
        ..
    } = pieces;
    edge.terminate(Duration::from_secs(10));
    for c in &mut collectors {
        c.proc.terminate(Duration::from_secs(15));
    }
    dashboard.terminate(Duration::from_secs(10));
    clickhouse.stop();
}
