//! The private dev/test ClickHouse server: config from `clickhouse/dev/`, data under
//! `target/clickhouse-dev/`, HTTP on 127.0.0.1:18123 and native on 19000.
//!
//! [`DevServer`] generates the effective config for this checkout (the templates' `@DATA_DIR@`
//! becomes the absolute data directory), starts `clickhouse-server` in the background with a
//! pidfile, waits for `GET /ping` to answer `Ok.`, and stops it with SIGTERM.
//!
//! Standard library only, on purpose: `cargo xtask ch` compiles this same file (by `#[path]`)
//! so that xtask stays free of the ClickHouse client and tokio, and the test harness
//! (`testing` in the clickhouse crate) uses it to start the server when nothing answers.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// HTTP address of the dev server.
pub const HTTP_ADDR: &str = "127.0.0.1:18123";
/// Native-protocol port (`clickhouse-client --port`).
pub const TCP_PORT: u16 = 19000;
/// `clickhouse-server` when `TOLLGATE_CLICKHOUSE_SERVER` does not name another.
pub const DEFAULT_SERVER_BINARY: &str = "/usr/sbin/clickhouse-server";

/// How long a start may take before we give up (18.16 answers in 0.4–1.6 s here).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stop may take before SIGKILL (1.5–3 s here).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The dev server of one checkout (or one node of the dev cluster: [`DevServer::node`]).
#[derive(Clone, Debug)]
pub struct DevServer {
    repo_root: PathBuf,
    data_dir: PathBuf,
    http_port: u16,
    tcp_port: u16,
    interserver_port: u16,
    /// XML added to the config (a cluster node's ZooKeeper, remote_servers and macros).
    extra_config: String,
}

/// What [`DevServer::start`] found or did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Started {
    /// Something already answered `/ping` (ours or not).
    AlreadyRunning,
    /// We spawned it; it answers now.
    Spawned { pid: u32 },
}

/// What [`DevServer::stop`] found or did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stopped {
    NotRunning,
    Terminated {
        pid: u32,
    },
    /// `/ping` answers but there is no live pidfile: it was not started by us.
    NotOurs,
}

/// [`DevServer::status`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// `/ping` answers `Ok.`.
    pub answering: bool,
    /// The live server process recorded in our pidfile.
    pub pid: Option<u32>,
}

impl DevServer {
    /// The dev server of the checkout at `repo_root` (the workspace root).
    pub fn for_repo(repo_root: impl Into<PathBuf>) -> DevServer {
        let repo_root = repo_root.into();
        DevServer {
            data_dir: repo_root.join("target").join("clickhouse-dev"),
            repo_root,
            http_port: 18123,
            tcp_port: TCP_PORT,
            interserver_port: 19009,
            extra_config: String::new(),
        }
    }

    /// A server of the same template with its own data dir, ports and extra config (a node of
    /// the dev cluster, `dev_cluster.rs`).
    pub fn node(
        repo_root: impl Into<PathBuf>,
        data_dir: PathBuf,
        (http_port, tcp_port, interserver_port): (u16, u16, u16),
        extra_config: String,
    ) -> DevServer {
        DevServer {
            repo_root: repo_root.into(),
            data_dir,
            http_port,
            tcp_port,
            interserver_port,
            extra_config,
        }
    }

    /// `127.0.0.1:<http port>`.
    pub fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    pub fn tcp_port(&self) -> u16 {
        self.tcp_port
    }

    /// `clickhouse/dev/`: the config templates.
    pub fn template_dir(&self) -> PathBuf {
        self.repo_root.join("clickhouse").join("dev")
    }

    /// `target/clickhouse-dev/`: effective config, data, logs, pidfile.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone()
    }

    pub fn pid_file(&self) -> PathBuf {
        self.data_dir().join("clickhouse-server.pid")
    }

    pub fn config_file(&self) -> PathBuf {
        self.data_dir().join("config.xml")
    }

    pub fn log_dir(&self) -> PathBuf {
        self.data_dir().join("log")
    }

    /// The server's HTTP URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.http_addr())
    }

    /// Writes `config.xml` and `users.xml` for this checkout into the data dir.
    pub fn write_config(&self) -> io::Result<PathBuf> {
        let data = self.data_dir();
        for sub in ["data", "tmp", "log", "user_files", "format_schemas"] {
            fs::create_dir_all(data.join(sub))?;
        }
        let data_text = data.to_string_lossy();
        if data_text.contains(['<', '>', '&']) {
            return Err(io::Error::other(format!(
                "data dir {data_text} cannot go into XML"
            )));
        }
        let config = fs::read_to_string(self.template_dir().join("config.xml"))?
            .replace("@DATA_DIR@", &data_text)
            .replace(
                "<http_port>18123</http_port>",
                &format!("<http_port>{}</http_port>", self.http_port),
            )
            .replace(
                &format!("<tcp_port>{TCP_PORT}</tcp_port>"),
                &format!("<tcp_port>{}</tcp_port>", self.tcp_port),
            )
            .replace(
                "<interserver_http_port>19009</interserver_http_port>",
                &format!(
                    "<interserver_http_port>{}</interserver_http_port>",
                    self.interserver_port
                ),
            )
            .replace("</yandex>", &format!("{}\n</yandex>", self.extra_config));
        fs::write(self.config_file(), config)?;
        fs::copy(
            self.template_dir().join("users.xml"),
            data.join("users.xml"),
        )?;
        Ok(self.config_file())
    }

    /// Whether `/ping` answers `Ok.`.
    pub fn is_up(&self) -> bool {
        ping(&self.http_addr())
    }

    /// The live server process of our pidfile, if any.
    pub fn running_pid(&self) -> Option<u32> {
        let pid: u32 = fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        is_server_process(pid).then_some(pid)
    }

    pub fn status(&self) -> Status {
        Status {
            answering: self.is_up(),
            pid: self.running_pid(),
        }
    }

    /// Starts the server unless something answers already; returns once `/ping` says `Ok.`.
    /// Safe to call from several threads and processes at once (a lock file serialises them).
    pub fn start(&self) -> Result<Started, String> {
        if self.is_up() {
            return Ok(Started::AlreadyRunning);
        }
        fs::create_dir_all(self.data_dir())
            .map_err(|e| format!("creating {}: {e}", self.data_dir().display()))?;
        let _lock = StartLock::acquire(&self.data_dir().join("start.lock"))?;
        if self.is_up() {
            return Ok(Started::AlreadyRunning);
        }
        if let Some(pid) = self.running_pid() {
            // Started by someone else and still coming up.
            self.wait_until_up(pid, None)?;
            return Ok(Started::AlreadyRunning);
        }
        let config = self
            .write_config()
            .map_err(|e| format!("writing the config: {e}"))?;
        let binary = server_binary();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_dir().join("stdout.log"))
            .map_err(|e| format!("opening the log: {e}"))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let mut child = Command::new(&binary)
            .arg(format!("--config-file={}", config.display()))
            .current_dir(self.data_dir())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            // Its own process group: Ctrl-C in the terminal that started it (or the end of a
            // test run) does not take it down; `stop` does.
            .process_group(0)
            .spawn()
            .map_err(|e| {
                format!(
                    "could not start {}: {e} (run `cargo xtask setup`)",
                    binary.display()
                )
            })?;
        let pid = child.id();
        fs::write(self.pid_file(), format!("{pid}\n"))
            .map_err(|e| format!("writing the pidfile: {e}"))?;
        self.wait_until_up(pid, Some(&mut child))?;
        Ok(Started::Spawned { pid })
    }

    fn wait_until_up(
        &self,
        pid: u32,
        mut child: Option<&mut std::process::Child>,
    ) -> Result<(), String> {
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            if self.is_up() {
                return Ok(());
            }
            let exited = match child.as_mut() {
                Some(c) => matches!(c.try_wait(), Ok(Some(_))),
                None => !is_server_process(pid),
            };
            if exited {
                let _ = fs::remove_file(self.pid_file());
                return Err(format!(
                    "clickhouse-server (pid {pid}) exited during start-up; last log lines:\n{}",
                    self.log_tail(15)
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "clickhouse-server (pid {pid}) did not answer {}/ping within {START_TIMEOUT:?}; log:\n{}",
            self.http_addr(),
            self.log_tail(15)
        ))
    }

    /// SIGTERM to the server of our pidfile, and wait for it to exit.
    pub fn stop(&self) -> Result<Stopped, String> {
        let Some(pid) = self.running_pid() else {
            let _ = fs::remove_file(self.pid_file());
            return Ok(if self.is_up() {
                Stopped::NotOurs
            } else {
                Stopped::NotRunning
            });
        };
        signal(pid, "TERM")?;
        let started = Instant::now();
        while is_server_process(pid) {
            if started.elapsed() > STOP_TIMEOUT {
                signal(pid, "KILL")?;
                thread::sleep(Duration::from_millis(500));
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
        let _ = fs::remove_file(self.pid_file());
        Ok(Stopped::Terminated { pid })
    }

    /// The last `n` lines of the server's error log (or stdout log).
    pub fn log_tail(&self, n: usize) -> String {
        for name in ["clickhouse-server.err.log", "stdout.log"] {
            if let Ok(text) = fs::read_to_string(self.log_dir().join(name)) {
                let lines: Vec<&str> = text.lines().collect();
                if !lines.is_empty() {
                    return lines[lines.len().saturating_sub(n)..].join("\n");
                }
            }
        }
        "(no log)".into()
    }
}

/// `TOLLGATE_CLICKHOUSE_SERVER`, else `/usr/sbin/clickhouse-server`, else `clickhouse-server`
/// on PATH.
pub fn server_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("TOLLGATE_CLICKHOUSE_SERVER") {
        return PathBuf::from(p);
    }
    let default = Path::new(DEFAULT_SERVER_BINARY);
    if default.exists() {
        return default.to_path_buf();
    }
    PathBuf::from("clickhouse-server")
}

/// A live clickhouse-server process.
fn is_server_process(pid: u32) -> bool {
    is_live(pid, "clickhouse")
}

/// A live (not zombie) process whose command line mentions `needle` — so a reused pid of an
/// unrelated process is never signalled. (Also the dev cluster's check for ZooKeeper.)
pub fn is_live(pid: u32, needle: &str) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) S …`: the state follows the last `)`.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    if matches!(state, Some('Z' | 'X') | None) {
        return false;
    }
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(needle))
        .unwrap_or(false)
}

fn signal(pid: u32, sig: &str) -> Result<(), String> {
    let status = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .map_err(|e| format!("kill -{sig} {pid}: {e}"))?;
    if status.success() || !is_server_process(pid) {
        Ok(())
    } else {
        Err(format!("kill -{sig} {pid} failed ({status})"))
    }
}

/// A lock file held while one caller starts the server; stale after a minute.
struct StartLock {
    path: PathBuf,
}

impl StartLock {
    fn acquire(path: &Path) -> Result<StartLock, String> {
        let started = Instant::now();
        loop {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
            {
                Ok(mut f) => {
                    let _ = writeln!(f, "{}", std::process::id());
                    return Ok(StartLock {
                        path: path.to_path_buf(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let age = fs::metadata(path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|m| SystemTime::now().duration_since(m).ok())
                        .unwrap_or_default();
                    if age > Duration::from_secs(60) {
                        let _ = fs::remove_file(path);
                        continue;
                    }
                    if started.elapsed() > START_TIMEOUT {
                        return Err(format!(
                            "{} is held by another start for too long",
                            path.display()
                        ));
                    }
                    thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
    }
}

impl Drop for StartLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Whether `GET /ping` on `addr` (`host:port`) answers `Ok.`.
pub fn ping(addr: &str) -> bool {
    matches!(http_request(addr, "GET", "/ping", "", Duration::from_secs(2)), Ok((200, body)) if body.trim() == "Ok.")
}

/// A minimal HTTP/1.0 exchange (no TLS, no chunking: what talking to a local ClickHouse
/// needs). Returns the status code and body.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> io::Result<(u16, String)> {
    let sock: SocketAddr = addr
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: {e}")))?;
    let mut stream = TcpStream::connect_timeout(&sock, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an HTTP response"))?;
    Ok((status, body.to_string()))
}

/// `host:port` of an `http://host:port[/]` URL (what [`http_request`] takes).
pub fn http_addr_of(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let hostport = rest.split('/').next()?;
    let hostport = hostport.replace("localhost", "127.0.0.1");
    if hostport.contains(':') {
        Some(hostport)
    } else {
        Some(format!("{hostport}:80"))
    }
}
