//! The soak's fault injector: one fault at a time, every few seconds, in rotation —
//!
//! | fault | what happens | what must hold |
//! |---|---|---|
//! | `collector_sigkill` | one collector (of `--collectors N`, at random) SIGKILLed, down 0.2–3 s, started again on the same spool | the edge retries its batches (through the round-robin, to another collector); the spool keeps what was acknowledged |
//! | `lost_ack` (with `--collectors` > 1) | for 3 s the load balancer answers 502 to batches a collector accepted | the edge re-posts records already accepted (to another collector): stored once all the same |
//! | `clickhouse_restart` | SIGTERM, down 2–6 s, started again | the collector spools and drains after |
//! | `workerd_restart` | drained, SIGTERM, started again | see below |
//! | `provider_stall` | the provider answers nothing for 4 s | calls time out at the edge (504) and are recorded |
//!
//! With `--cluster` the store is the dev cluster (2 shards × 2 replicas + ZooKeeper) and
//! `clickhouse_restart` gives way to two cluster faults:
//!
//! | fault | what happens | what must hold |
//! |---|---|---|
//! | `replica_sigkill` | one of the four servers (at random; the collectors and dashboard-api talk to the first) SIGKILLed, down 2–6 s, started again | inserts go on through the other replica of each shard or are retried from the spool; the replica fetches what it missed |
//! | `zookeeper_restart` | ZooKeeper SIGKILLed, down 3–5 s, started again; then what OPERATIONS.md says to do on 18.16 (restart a server whose distributed-DDL worker stopped) | replicated tables turn read-only and back; torn inserts are repaired by the integrity pass; nothing acknowledged is lost |
//!
//! A workerd restart is done the way an operator must do it for a self-hosted workerd: take it
//! out of rotation (the load's [`Gate`](super::load::Gate) holds new calls back), wait until the
//! collector has acknowledged every call its clients were answered for, then SIGTERM. workerd's
//! SIGTERM finishes the HTTP responses in flight but cancels `wait_until` work at once, so a
//! record still waiting to be shipped would be lost — see docs/OPERATIONS.md.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_clickhouse::dev_cluster::{DevCluster, NODES};
use tollgate_clickhouse::testing::ClusterDb;

use crate::harness::Proc;
use crate::mock_provider::MockProvider;
use crate::private_clickhouse::PrivateClickHouse;
use crate::stack::{BoxError, StackConfig};

use super::load::Load;
use super::witness::Witness;

/// The kinds of fault, in the order they rotate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    CollectorSigkill,
    ClickhouseRestart,
    WorkerdRestart,
    ProviderStall,
    LostAck,
    ReplicaSigkill,
    ZookeeperRestart,
}

impl FaultKind {
    pub const ROTATION: [FaultKind; 5] = [
        FaultKind::CollectorSigkill,
        FaultKind::LostAck,
        FaultKind::ClickhouseRestart,
        FaultKind::WorkerdRestart,
        FaultKind::ProviderStall,
    ];
    /// The rotation on a cluster: the server restart gives way to the cluster's own faults.
    pub const CLUSTER_ROTATION: [FaultKind; 6] = [
        FaultKind::CollectorSigkill,
        FaultKind::LostAck,
        FaultKind::ReplicaSigkill,
        FaultKind::WorkerdRestart,
        FaultKind::ZookeeperRestart,
        FaultKind::ProviderStall,
    ];

    /// The rotation for a store.
    pub fn rotation(cluster: bool) -> &'static [FaultKind] {
        if cluster {
            &Self::CLUSTER_ROTATION
        } else {
            &Self::ROTATION
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::CollectorSigkill => "collector_sigkill",
            FaultKind::ClickhouseRestart => "clickhouse_restart",
            FaultKind::WorkerdRestart => "workerd_restart",
            FaultKind::ProviderStall => "provider_stall",
            FaultKind::LostAck => "lost_ack",
            FaultKind::ReplicaSigkill => "replica_sigkill",
            FaultKind::ZookeeperRestart => "zookeeper_restart",
        }
    }
}

/// One injected fault: from its start until the piece was back.
#[derive(Clone, Debug)]
pub struct Fault {
    pub kind: FaultKind,
    pub started: Instant,
    pub ended: Instant,
    /// For a workerd restart: how long draining its shipments took.
    pub drain: Option<Duration>,
}

/// How long the load balancer loses the collectors' 202s in a `lost_ack` fault.
const LOST_ACKS: Duration = Duration::from_secs(3);
/// How long a provider stall lasts (longer than the edge's 3 s upstream timeout).
const STALL: Duration = Duration::from_secs(4);
/// Longest wait for a drained edge's shipments (the edge retries for ~19 s).
/// A record can appear 15 s after its call ended (a stream whose client hung up is closed by the
/// edge's watchdog after `CLIENT_IDLE_MS` without the client taking a chunk) and then take the edge's whole retry
/// budget (~19–22 s) when a collector was down: 45 s covers both. (30 s did not: a soak beside
/// a CPU hog lost an aborted stream's record to the SIGTERM that followed.)
const SHIP_DRAIN_LIMIT: Duration = Duration::from_secs(45);

/// One running collector and where it lives.
#[derive(Debug)]
pub struct Collector {
    pub addr: std::net::SocketAddr,
    /// Its spool folder under the stack's `dir`.
    pub spool: String,
    pub proc: Proc,
}

/// Where the records are stored: a private server, or a database of the soak's own on the dev
/// cluster (dropped from every host at the end).
#[derive(Debug)]
pub enum Store {
    Private(PrivateClickHouse),
    Cluster { cluster: DevCluster, db: ClusterDb },
}

impl Store {
    pub fn is_cluster(&self) -> bool {
        matches!(self, Store::Cluster { .. })
    }

    /// Stops a private server; a cluster is left running (it belongs to the checkout, and the
    /// database is dropped when the store is).
    pub fn stop(&mut self) {
        if let Store::Private(ch) = self {
            ch.stop();
        }
    }
}

/// The restartable pieces and what the injector needs to restart them.
#[derive(Debug)]
pub struct Pieces {
    pub stack: StackConfig,
    pub clickhouse: Store,
    pub collectors: Vec<Collector>,
    pub edge: Proc,
    pub edge_bindings: Vec<(String, String)>,
    pub mock: Arc<MockProvider>,
    pub load: Arc<Load>,
    pub witness: Arc<Witness>,
    restarts: u32,
}

impl Pieces {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        stack: StackConfig,
        clickhouse: Store,
        collectors: Vec<Collector>,
        edge: Proc,
        edge_bindings: Vec<(String, String)>,
        mock: Arc<MockProvider>,
        load: Arc<Load>,
        witness: Arc<Witness>,
    ) -> Pieces {
        Pieces {
            stack,
            clickhouse,
            collectors,
            edge,
            edge_bindings,
            mock,
            load,
            witness,
            restarts: 0,
        }
    }

    /// Injects faults in rotation every `every` (± a quarter) from `first_at` until `until`,
    /// finishing the fault in progress. Returns the faults and the pieces, all running.
    pub fn inject_until(
        mut self,
        first_at: Instant,
        until: Instant,
        every: Duration,
        seed: u64,
    ) -> Result<(Pieces, Vec<Fault>), BoxError> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut faults = Vec::new();
        let mut next = first_at;
        // Lost acks matter where a re-post can reach another collector; with one collector
        // the rotation is the one the soak had before several collectors existed.
        let several = self.collectors.len() > 1;
        let mut kinds = FaultKind::rotation(self.clickhouse.is_cluster())
            .iter()
            .copied()
            .filter(|k| several || *k != FaultKind::LostAck)
            .cycle();
        loop {
            while Instant::now() < next.min(until) && !self.load.stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            if Instant::now() >= until || self.load.stop.load(Ordering::SeqCst) {
                break;
            }
            let kind = kinds.next().unwrap_or(FaultKind::ProviderStall);
            let started = Instant::now();
            let drain = self.inject(kind, &mut rng)?;
            faults.push(Fault {
                kind,
                started,
                ended: Instant::now(),
                drain,
            });
            let jitter = every.as_millis() as u64 / 4;
            next = Instant::now() + every - Duration::from_millis(jitter)
                + Duration::from_millis(rng.u64(..=2 * jitter));
        }
        Ok((self, faults))
    }

    fn inject(
        &mut self,
        kind: FaultKind,
        rng: &mut fastrand::Rng,
    ) -> Result<Option<Duration>, BoxError> {
        self.restarts += 1;
        match kind {
            FaultKind::CollectorSigkill => {
                let n = rng.usize(..self.collectors.len().max(1));
                let Some(c) = self.collectors.get_mut(n) else {
                    return Ok(None);
                };
                c.proc.kill();
                std::thread::sleep(Duration::from_millis(rng.u64(200..3_000)));
                c.proc = self.stack.start_collector_at(
                    c.addr,
                    &c.spool,
                    &format!("collector{n}-{}.log", self.restarts),
                )?;
                Ok(None)
            }
            FaultKind::LostAck => {
                self.witness.lose_acks_for(LOST_ACKS);
                std::thread::sleep(LOST_ACKS);
                Ok(None)
            }
            FaultKind::ClickhouseRestart => {
                let Store::Private(ch) = &mut self.clickhouse else {
                    return Ok(None);
                };
                ch.stop();
                std::thread::sleep(Duration::from_millis(rng.u64(2_000..6_000)));
                ch.restart();
                Ok(None)
            }
            FaultKind::ReplicaSigkill => {
                let Store::Cluster { cluster, .. } = &self.clickhouse else {
                    return Ok(None);
                };
                let n = rng.usize(..NODES.len());
                cluster.kill_node(n)?;
                std::thread::sleep(Duration::from_millis(rng.u64(2_000..6_000)));
                cluster.start_node_after_crash(n)?;
                Ok(None)
            }
            FaultKind::ZookeeperRestart => {
                let Store::Cluster { cluster, .. } = &self.clickhouse else {
                    return Ok(None);
                };
                cluster.kill_zookeeper()?;
                std::thread::sleep(Duration::from_millis(rng.u64(3_000..5_000)));
                cluster.start_zookeeper()?;
                // 18.16: a server whose distributed-DDL worker died with the session is
                // restarted (the integrity pass's mutations run ON CLUSTER).
                if cluster.heal_ddl()? {
                    eprintln!("soak: after the ZooKeeper restart the servers were restarted for ON CLUSTER DDL");
                }
                Ok(None)
            }
            FaultKind::WorkerdRestart => self.restart_edge().map(Some),
            FaultKind::ProviderStall => {
                self.mock.stall(STALL);
                std::thread::sleep(STALL);
                Ok(None)
            }
        }
    }

    /// Drains the edge (no new calls; every answered call's record acknowledged), SIGTERMs it
    /// and starts a new one; returns how long the drain took.
    fn restart_edge(&mut self) -> Result<Duration, BoxError> {
        let drain_started = Instant::now();
        let load = self.load.clone();
        if !load.gate.close_and_drain(Duration::from_secs(60)) {
            load.gate.open();
            return Err("calls in flight did not end within 60 s of closing the gate".into());
        }
        let seen = load.seen_ids();
        while self.witness.unacknowledged(&seen) > 0 && drain_started.elapsed() < SHIP_DRAIN_LIMIT {
            std::thread::sleep(Duration::from_millis(20));
        }
        let drain = drain_started.elapsed();
        let waiting = self.witness.unacknowledged_of(&seen);
        if !waiting.is_empty() {
            eprintln!(
                "soak: workerd restart: {} answered call(s) still unacknowledged after {} s, e.g. {:?}; restarting anyway",
                waiting.len(),
                SHIP_DRAIN_LIMIT.as_secs(),
                &waiting[..waiting.len().min(3)]
            );
        }
        let stopped = self.edge.terminate(Duration::from_secs(20));
        load.gate.open();
        if stopped.is_none() {
            eprintln!("soak: workerd did not exit within 20 s of SIGTERM; it was killed");
        }
        self.edge = self.stack.start_edge(
            &self.edge_bindings,
            &format!("workerd-{}.log", self.restarts),
        )?;
        Ok(drain)
    }
}
