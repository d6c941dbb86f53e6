//! A ClickHouse server of a test's own — same config templates as the dev server
//! (`clickhouse/dev/`), its own ports and data directory — for tests that stop and start the
//! server (an outage) without disturbing the shared dev server other tests use.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{free_port, repo_root, Proc};

/// A private `clickhouse-server`; killed when dropped.
#[derive(Debug)]
pub struct PrivateClickHouse {
    dir: PathBuf,
    pub http_port: u16,
    proc: Option<Proc>,
}

impl PrivateClickHouse {
    /// Starts a server with its data under `dir`.
    pub fn start(dir: &Path) -> PrivateClickHouse {
        let http_port = free_port();
        let tcp_port = free_port();
        let interserver = free_port();
        for sub in ["data", "tmp", "log", "user_files", "format_schemas"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap_or_else(|e| panic!("{e}"));
        }
        let templates = repo_root().join("clickhouse/dev");
        let config = std::fs::read_to_string(templates.join("config.xml"))
            .unwrap_or_else(|e| panic!("{e}"))
            .replace("@DATA_DIR@", &dir.to_string_lossy())
            .replace(
                "<http_port>18123</http_port>",
                &format!("<http_port>{http_port}</http_port>"),
            )
            .replace(
                "<tcp_port>19000</tcp_port>",
                &format!("<tcp_port>{tcp_port}</tcp_port>"),
            )
            .replace(
                "<interserver_http_port>19009</interserver_http_port>",
                &format!("<interserver_http_port>{interserver}</interserver_http_port>"),
            );
        assert!(
            config.contains(&format!("<http_port>{http_port}</http_port>")),
            "template ports changed"
        );
        std::fs::write(dir.join("config.xml"), config).unwrap_or_else(|e| panic!("{e}"));
        std::fs::copy(templates.join("users.xml"), dir.join("users.xml"))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut server = PrivateClickHouse {
            dir: dir.to_path_buf(),
            http_port,
            proc: None,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Starts the server (again) and waits for `/ping`.
    pub fn restart(&mut self) {
        let proc = Proc::spawn(
            "clickhouse-server",
            Command::new(tollgate_clickhouse::dev_server::server_binary())
                .arg(format!(
                    "--config-file={}",
                    self.dir.join("config.xml").display()
                ))
                .current_dir(&self.dir),
            self.dir.join(format!("log/stdout-{}.log", free_port())),
        );
        let addr = format!("127.0.0.1:{}", self.http_port);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !tollgate_clickhouse::dev_server::ping(&addr) {
            assert!(
                Instant::now() < deadline,
                "private ClickHouse did not start:\n{}",
                proc.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.proc = Some(proc);
    }

    /// Kills the server (SIGKILL: a crash). An INSERT in flight may leave its raw rows stored
    /// and its rollup rows not.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Stops the server (SIGTERM, as an operator would) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.terminate(Duration::from_secs(30));
        }
    }
}

impl Drop for PrivateClickHouse {
    fn drop(&mut self) {
        self.stop();
    }
}
