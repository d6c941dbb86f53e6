//! A real ClickHouse cluster on one machine, for development and the cluster tests: ZooKeeper
//! (Debian's `zookeeper` 3.8 package, run as a standalone server) and four `clickhouse-server`
//! processes — 2 shards × 2 replicas — on loopback ports, each with its own data directory
//! under `target/clickhouse-cluster/`.
//!
//! | component | HTTP | native | interserver | macros |
//! |---|---|---|---|---|
//! | ZooKeeper | — | 12181 (client) | — | — |
//! | `s1r1` | 18201 | 19201 | 19301 | shard `01`, replica `s1r1` |
//! | `s1r2` | 18202 | 19202 | 19302 | shard `01`, replica `s1r2` |
//! | `s2r1` | 18203 | 19203 | 19303 | shard `02`, replica `s2r1` |
//! | `s2r2` | 18204 | 19204 | 19304 | shard `02`, replica `s2r2` |
//!
//! Every node's config names the cluster [`CLUSTER`] in `remote_servers` (with
//! `internal_replication`: a `Distributed` insert goes to one replica of each shard, and the
//! replicated table copies it to the other), ZooKeeper, the distributed-DDL queue (`ON
//! CLUSTER`) and its macros. Nodes can be stopped and started one at a time, and ZooKeeper
//! too: the fault tests do that.
//!
//! Standard library only, like `dev_server.rs` (which it drives per node): `cargo xtask ch
//! cluster` compiles it by `#[path]`.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::dev_server::{is_live, DevServer, Started, Stopped};

/// The cluster's name in `remote_servers` (what `tollgate-migrate --cluster` takes).
pub const CLUSTER: &str = "tollgate_cluster";
/// ZooKeeper's client port.
pub const ZK_PORT: u16 = 12181;
/// The nodes: (name, shard, HTTP port, native port, interserver port).
pub const NODES: [(&str, u8, u16, u16, u16); 4] = [
    ("s1r1", 1, 18201, 19201, 19301),
    ("s1r2", 1, 18202, 19202, 19302),
    ("s2r1", 2, 18203, 19203, 19303),
    ("s2r2", 2, 18204, 19204, 19304),
];
/// The JVM that runs ZooKeeper, and the jar Debian's package installs.
const JAVA: &str = "/usr/bin/java";
const ZK_JAR: &str = "/usr/share/java/zookeeper.jar";
/// How often [`DevCluster::heal_ddl`] starts a server that exits during start-up.
const START_TRIES: u32 = 3;
/// How long ZooKeeper may take to answer after a start.
const ZK_START_TIMEOUT: Duration = Duration::from_secs(60);

/// The dev cluster of one checkout.
#[derive(Clone, Debug)]
pub struct DevCluster {
    repo_root: PathBuf,
}

/// One component's state, for `status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentStatus {
    pub name: String,
    pub address: String,
    pub answering: bool,
    pub pid: Option<u32>,
}

impl DevCluster {
    pub fn for_repo(repo_root: impl Into<PathBuf>) -> DevCluster {
        DevCluster {
            repo_root: repo_root.into(),
        }
    }

    /// `target/clickhouse-cluster/`.
    pub fn dir(&self) -> PathBuf {
        self.repo_root.join("target").join("clickhouse-cluster")
    }

    /// Node `i` (0..4) of [`NODES`].
    pub fn node(&self, i: usize) -> DevServer {
        let (name, shard, http, tcp, interserver) = NODES[i];
        DevServer::node(
            self.repo_root.clone(),
            self.dir().join(name),
            (http, tcp, interserver),
            self.node_config(shard, name),
        )
    }

    /// Every node.
    pub fn nodes(&self) -> Vec<DevServer> {
        (0..NODES.len()).map(|i| self.node(i)).collect()
    }

    /// The HTTP URL of node `i`.
    pub fn url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", NODES[i].2)
    }

    fn node_config(&self, shard: u8, replica: &str) -> String {
        let mut shards = String::new();
        for s in [1u8, 2] {
            shards.push_str("            <shard>\n                <internal_replication>true</internal_replication>\n");
            for (_, node_shard, _, tcp, _) in NODES.iter().filter(|n| n.1 == s) {
                let _ = node_shard;
                shards.push_str(&format!(
                    "                <replica><host>127.0.0.1</host><port>{tcp}</port></replica>\n"
                ));
            }
            shards.push_str("            </shard>\n");
        }
        format!(
            r#"    <!-- The dev cluster (clickhouse/src/dev_cluster.rs). -->
    <zookeeper>
        <node><host>127.0.0.1</host><port>{ZK_PORT}</port></node>
        <session_timeout_ms>10000</session_timeout_ms>
    </zookeeper>
    <remote_servers>
        <{CLUSTER}>
{shards}        </{CLUSTER}>
    </remote_servers>
    <macros>
        <shard>{shard:02}</shard>
        <replica>{replica}</replica>
    </macros>
    <distributed_ddl>
        <path>/clickhouse/task_queue/ddl</path>
    </distributed_ddl>"#
        )
    }

    fn zk_dir(&self) -> PathBuf {
        self.dir().join("zookeeper")
    }

    fn zk_pid_file(&self) -> PathBuf {
        self.zk_dir().join("zookeeper.pid")
    }

    /// Whether ZooKeeper answers its `srvr` command.
    pub fn zk_is_up(&self) -> bool {
        zk_command("srvr").is_some_and(|r| r.contains("Mode:"))
    }

    /// Polls ZooKeeper until it answers or `limit` passes; whether it answered.
    fn wait_for_zookeeper(&self, limit: Duration) -> bool {
        let started = Instant::now();
        while !self.zk_is_up() {
            if started.elapsed() >= limit {
                return false;
            }
            thread::sleep(Duration::from_millis(100));
        }
        true
    }

    fn zk_pid(&self) -> Option<u32> {
        let pid: u32 = fs::read_to_string(self.zk_pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        is_live(pid, "zookeeper").then_some(pid)
    }

    /// Starts ZooKeeper unless it answers.
    pub fn start_zookeeper(&self) -> Result<(), String> {
        if self.zk_is_up() {
            return Ok(());
        }
        let dir = self.zk_dir();
        fs::create_dir_all(dir.join("data")).map_err(|e| format!("{}: {e}", dir.display()))?;
        if !Path::new(ZK_JAR).exists() {
            return Err(format!(
                "{ZK_JAR} is missing: install ZooKeeper (`cargo xtask setup`, or apt-get install zookeeper)"
            ));
        }
        let cfg = dir.join("zoo.cfg");
        fs::write(
            &cfg,
            format!(
                "tickTime=500\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={ZK_PORT}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\nmaxClientCnxns=0\n4lw.commands.whitelist=srvr,ruok,mntr\nautopurge.purgeInterval=1\n",
                dir.join("data").display()
            ),
        )
        .map_err(|e| format!("{}: {e}", cfg.display()))?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("zookeeper.log"))
            .map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(JAVA)
            .args(["-Xmx128m", "-XX:+UseSerialGC", "-cp"])
            .arg(format!("{ZK_JAR}:/etc/zookeeper/conf"))
            .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
            .arg(&cfg)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("could not start ZooKeeper ({JAVA}): {e}"))?;
        fs::write(self.zk_pid_file(), format!("{}\n", child.id())).map_err(|e| e.to_string())?;
        if self.wait_for_zookeeper(ZK_START_TIMEOUT) {
            return Ok(());
        }
        Err(format!(
            "ZooKeeper did not answer on 127.0.0.1:{ZK_PORT} within {ZK_START_TIMEOUT:?} (log: {})",
            dir.join("zookeeper.log").display()
        ))
    }

    /// Stops ZooKeeper (SIGTERM, then SIGKILL after 20 s).
    pub fn stop_zookeeper(&self) -> Result<(), String> {
        if let Some(pid) = self.zk_pid() {
            terminate(pid, "zookeeper")?;
        }
        let _ = fs::remove_file(self.zk_pid_file());
        Ok(())
    }

    /// ZooKeeper, then every node.
    pub fn start(&self) -> Result<Vec<Started>, String> {
        self.start_zookeeper()?;
        let mut started = Vec::new();
        for node in self.nodes() {
            started.push(node.start()?);
        }
        Ok(started)
    }

    /// Whether every host executes `ON CLUSTER` DDL: a probe database is created and dropped
    /// on the cluster, each step allowed `timeout_secs`.
    pub fn ddl_answers(&self, timeout_secs: u32) -> bool {
        let addr = format!("127.0.0.1:{}", NODES[0].2);
        let path = format!("/?distributed_ddl_task_timeout={timeout_secs}");
        let wait = Duration::from_secs(u64::from(timeout_secs) + 10);
        ["CREATE", "DROP"].iter().all(|verb| {
            let sql = match *verb {
                "CREATE" => {
                    format!("CREATE DATABASE IF NOT EXISTS tollgate_ddl_probe ON CLUSTER {CLUSTER}")
                }
                _ => format!("DROP DATABASE IF EXISTS tollgate_ddl_probe ON CLUSTER {CLUSTER}"),
            };
            matches!(
                super::dev_server::http_request(&addr, "POST", &path, &sql, wait),
                Ok((200, _))
            )
        })
    }

    /// Restarts every node (one at a time) when a host no longer executes `ON CLUSTER` DDL.
    /// ClickHouse 18.16's distributed-DDL worker can stop for good after a ZooKeeper outage
    /// (its error log: "DDLWorker: Unexpected error, will terminate"); a restart brings it back.
    /// Returns whether a restart was needed.
    pub fn heal_ddl(&self) -> Result<bool, String> {
        if self.ddl_answers(20) {
            return Ok(false);
        }
        // A server attaching its replicated tables while ZooKeeper is still loading can exit
        // during start-up (seen beside a CPU hog); it is started again, as an operator would.
        self.wait_for_zookeeper(ZK_START_TIMEOUT);
        for node in self.nodes() {
            node.stop()?;
            let mut tries = 0;
            while let Err(e) = node.start() {
                tries += 1;
                if tries == START_TRIES {
                    return Err(e);
                }
                thread::sleep(Duration::from_secs(2));
            }
        }
        if self.ddl_answers(60) {
            Ok(true)
        } else {
            Err(
                "the cluster does not execute ON CLUSTER DDL even after a restart of every node"
                    .into(),
            )
        }
    }

    /// SIGKILL to ZooKeeper (a crash: no clean shutdown), pidfile removed.
    pub fn kill_zookeeper(&self) -> Result<(), String> {
        if let Some(pid) = self.zk_pid() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            let started = Instant::now();
            while is_live(pid, "zookeeper") && started.elapsed() < Duration::from_secs(10) {
                thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = fs::remove_file(self.zk_pid_file());
        Ok(())
    }

    /// Starts node `i` again after a crash, as OPERATIONS tells an operator to. ClickHouse 18.16
    /// refuses to attach a replicated table whose parts on disk do not match ZooKeeper ("The
    /// local set of parts of table … doesn't look like the set of parts in ZooKeeper"): a part
    /// an INSERT wrote to disk but never registered in ZooKeeper before the SIGKILL (its client
    /// got an error, never an acknowledgement, and retries). Then the server's
    /// `flags/force_restore_data` file makes it set such parts aside (`detached/`) and fetch the
    /// rest from the other replica. Any other exit during start-up is tried again too, up to
    /// `START_TRIES` times.
    pub fn start_node_after_crash(&self, i: usize) -> Result<(), String> {
        let node = self.node(i);
        let mut tries = 0;
        loop {
            let Err(e) = node.start() else {
                return Ok(());
            };
            tries += 1;
            if tries == START_TRIES {
                return Err(e);
            }
            let err_log = node.log_dir().join("clickhouse-server.err.log");
            let log = fs::read_to_string(&err_log).unwrap_or_default();
            if log.contains("doesn't look like the set of parts in ZooKeeper") {
                let flags = node.data_dir().join("data").join("flags");
                fs::create_dir_all(&flags)
                    .and_then(|()| fs::write(flags.join("force_restore_data"), b""))
                    .map_err(|e| format!("{}: {e}", flags.display()))?;
            }
            thread::sleep(Duration::from_secs(2));
        }
    }

    /// SIGKILL to node `i` (a crash), pidfile removed; [`DevCluster::start_node_after_crash`]
    /// brings it back.
    pub fn kill_node(&self, i: usize) -> Result<(), String> {
        let node = self.node(i);
        if let Some(pid) = node.running_pid() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            let started = Instant::now();
            while is_live(pid, "clickhouse") && started.elapsed() < Duration::from_secs(10) {
                thread::sleep(Duration::from_millis(50));
            }
            let _ = fs::remove_file(node.pid_file());
        }
        Ok(())
    }

    /// Every node, then ZooKeeper.
    pub fn stop(&self) -> Result<Vec<Stopped>, String> {
        let mut stopped = Vec::new();
        for node in self.nodes() {
            stopped.push(node.stop()?);
        }
        self.stop_zookeeper()?;
        Ok(stopped)
    }

    /// Each component, answering or not.
    pub fn status(&self) -> Vec<ComponentStatus> {
        let mut out = vec![ComponentStatus {
            name: "zookeeper".into(),
            address: format!("127.0.0.1:{ZK_PORT}"),
            answering: self.zk_is_up(),
            pid: self.zk_pid(),
        }];
        for (i, node) in self.nodes().iter().enumerate() {
            let s = node.status();
            out.push(ComponentStatus {
                name: NODES[i].0.into(),
                address: self.url(i),
                answering: s.answering,
                pid: s.pid,
            });
        }
        out
    }

    /// Resident memory of each running component, in KiB (from `/proc`).
    pub fn memory_kib(&self) -> Vec<(String, u64)> {
        self.status()
            .into_iter()
            .filter_map(|c| Some((c.name, rss_kib(c.pid?)?)))
            .collect()
    }
}

/// A ZooKeeper four-letter command's answer.
fn zk_command(cmd: &str) -> Option<String> {
    let addr: SocketAddr = format!("127.0.0.1:{ZK_PORT}").parse().ok()?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(cmd.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn terminate(pid: u32, needle: &str) -> Result<(), String> {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let started = Instant::now();
    while is_live(pid, needle) {
        if started.elapsed() > Duration::from_secs(20) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            thread::sleep(Duration::from_millis(300));
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    if is_live(pid, needle) {
        return Err(format!("{needle} (pid {pid}) did not stop"));
    }
    Ok(())
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
