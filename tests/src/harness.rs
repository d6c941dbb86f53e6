//! Running the real pieces for end-to-end tests: the collector binary, the wasm worker under
//! `workerd`, the OpenAI Python SDK, HTTP calls — each process killed when its guard drops,
//! also when a test panics.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edge_worker::local::{self, LocalWorker};
use service_kit::Secret;
use tollgate_collector::config::Config as CollectorConfig;

/// The repository root.
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// A workspace binary next to the running test (`cargo test --workspace` builds them all).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    // A test runs from target/<profile>/deps/, a binary from target/<profile>/.
    let mut dir = exe
        .parent()
        .unwrap_or_else(|| panic!("unexpected executable path {exe:?}"));
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().unwrap_or(dir);
    }
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built; run `cargo build --workspace` (cargo xtask test does)",
        path.display()
    );
    path
}

/// Waits until `addr` accepts TCP connections.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// A child process killed (SIGKILL) on drop.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, log: PathBuf) -> Proc {
        // The child gets its settings from its config file and what the caller set, never from
        // the test run's own TOLLGATE_* variables (`cargo xtask test` sets
        // TOLLGATE_CLICKHOUSE_URL, which would silently override a config pointing elsewhere).
        let explicit: Vec<String> = cmd
            .get_envs()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        for (k, _) in std::env::vars() {
            if k.starts_with("TOLLGATE_") && !explicit.contains(&k) {
                cmd.env_remove(&k);
            }
        }
        let file =
            std::fs::File::create(&log).unwrap_or_else(|e| panic!("log {}: {e}", log.display()));
        let err = file.try_clone().unwrap_or_else(|e| panic!("log: {e}"));
        let child = cmd
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err))
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait up to `timeout` for a clean exit; returns its exit status code.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The process's output so far (for assertion messages).
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The signing secret the tests' collectors and workers share.
pub const SIGNING_SECRET: &str = "e2e-signing-secret-0123456789abcdef";

/// POSTs `batch` to a collector's `url` as the edge does (NDJSON, signed with
/// [`SIGNING_SECRET`]); `Ok(status)` if the collector answered.
pub fn post_signed_batch(url: &str, batch: &[usage_core::UsageRecord]) -> Result<u16, String> {
    use usage_core::wire::{self, BatchFormat};
    let body = wire::encode_batch(batch, BatchFormat::Ndjson);
    let sig = wire::sign(
        SIGNING_SECRET.as_bytes(),
        chrono::Utc::now().timestamp(),
        &body,
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    agent
        .post(url)
        .header(wire::SIGNATURE_HEADER, &sig)
        .header("content-type", "application/x-ndjson")
        .send(&body[..])
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

/// A collector process writing to `database` on the test ClickHouse.
#[derive(Debug)]
pub struct CollectorProc {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub config_path: PathBuf,
}

impl CollectorProc {
    /// Writes a config for `database` with its spool in `spool_dir`, and starts `collector serve`.
    pub fn start(
        clickhouse_url: &str,
        database: &str,
        spool_dir: &Path,
        tweak: impl FnOnce(&mut CollectorConfig),
    ) -> CollectorProc {
        let port = free_port();
        let mut config = CollectorConfig::default();
        config.listen = format!("127.0.0.1:{port}");
        config.clickhouse.url = clickhouse_url.to_string();
        config.clickhouse.database = database.to_string();
        config.ingest.signing_secrets = vec![Secret::new(SIGNING_SECRET.to_string())];
        config.spool.dir = spool_dir.join("spool");
        config.sink.max_delay_ms = 100;
        tweak(&mut config);
        std::fs::create_dir_all(spool_dir).unwrap_or_else(|e| panic!("{e}"));
        let config_path = spool_dir.join("collector.json");
        Self::write_config(&config_path, &config);
        Self::start_with(
            &config_path,
            config.listen.parse().unwrap_or_else(|e| panic!("{e}")),
        )
    }

    /// Writes `config` where [`CollectorProc::start_with`] reads it.
    pub fn write_config(path: &Path, config: &CollectorConfig) {
        // The config file is TOML; serialize through serde_json → toml-compatible values.
        let mut value = serde_json::to_value(config).unwrap_or_else(|e| panic!("{e}"));
        // Secrets serialize redacted: put the real ones back for the file.
        let secrets: Vec<&String> = config
            .ingest
            .signing_secrets
            .iter()
            .map(Secret::expose)
            .collect();
        value["ingest"]["signing_secrets"] = serde_json::json!(secrets);
        value["clickhouse"]["password"] = serde_json::json!("");
        let headers: Vec<&String> = config.otlp.headers.iter().map(Secret::expose).collect();
        value["otlp"]["headers"] = serde_json::json!(headers);
        let toml = json_to_toml(&value);
        std::fs::write(path.with_extension("toml"), toml).unwrap_or_else(|e| panic!("{e}"));
    }

    /// (Re)starts the collector process with the config written by [`CollectorProc::start`].
    pub fn start_with(config_path: &Path, addr: SocketAddr) -> CollectorProc {
        let log = config_path.with_file_name(format!("collector-{}.log", free_port()));
        let proc = Proc::spawn(
            "collector",
            Command::new(binary("collector"))
                .args(["serve", "--config"])
                .arg(config_path.with_extension("toml"))
                .env("RUST_LOG", "warn"),
            log,
        );
        assert!(
            wait_for_port(addr, Duration::from_secs(30)),
            "collector did not start:\n{}",
            proc.log()
        );
        CollectorProc {
            proc,
            addr,
            config_path: config_path.to_path_buf(),
        }
    }

    pub fn records_url(&self) -> String {
        format!("http://{}/v1/records", self.addr)
    }
}

/// Renders a JSON object of scalars, arrays and one level of tables as TOML.
fn json_to_toml(v: &serde_json::Value) -> String {
    let scalar = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => format!("{s:?}"),
        serde_json::Value::Array(a) => {
            format!(
                "[{}]",
                a.iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
        other => other.to_string(),
    };
    let mut top = String::new();
    let mut tables = String::new();
    if let Some(obj) = v.as_object() {
        for (k, v) in obj {
            if let Some(t) = v.as_object() {
                tables.push_str(&format!("\n[{k}]\n"));
                for (k2, v2) in t {
                    tables.push_str(&format!("{k2} = {}\n", scalar(v2)));
                }
            } else {
                top.push_str(&format!("{k} = {}\n", scalar(v)));
            }
        }
    }
    top + &tables
}

/// The wasm worker under workerd.
#[derive(Debug)]
pub struct WorkerdProc {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl WorkerdProc {
    /// Serves the built bundle (`cargo xtask edge build`) with `bindings`.
    pub fn start(bindings: Vec<(String, String)>) -> WorkerdProc {
        Self::start_with(bindings, Vec::new())
    }

    /// [`WorkerdProc::start`], plus JavaScript `baselines` in the same workerd.
    pub fn start_with(
        bindings: Vec<(String, String)>,
        baselines: Vec<edge_worker::local::JsBaseline>,
    ) -> WorkerdProc {
        Self::start_full(bindings, baselines, local::StandIns::default())
    }

    /// [`WorkerdProc::start_with`], plus local stand-ins for KV and Queues.
    pub fn start_full(
        bindings: Vec<(String, String)>,
        baselines: Vec<edge_worker::local::JsBaseline>,
        stand_ins: local::StandIns,
    ) -> WorkerdProc {
        Self::start_bundle(
            local::bundle_dir(&repo_root()),
            bindings,
            baselines,
            stand_ins,
        )
    }

    /// [`WorkerdProc::start_full`] of the bundle in `bundle_dir` (another build of the worker,
    /// e.g. the benchmark's before/after comparison).
    pub fn start_bundle(
        bundle_dir: PathBuf,
        bindings: Vec<(String, String)>,
        baselines: Vec<edge_worker::local::JsBaseline>,
        stand_ins: local::StandIns,
    ) -> WorkerdProc {
        Self::start_inspected(bundle_dir, bindings, baselines, stand_ins, None)
    }

    /// [`WorkerdProc::start_bundle`], with V8's inspector on `inspector` (`127.0.0.1:<port>`)
    /// when given: what `bench-edge-profile` records CPU profiles through.
    pub fn start_inspected(
        bundle_dir: PathBuf,
        bindings: Vec<(String, String)>,
        baselines: Vec<edge_worker::local::JsBaseline>,
        stand_ins: local::StandIns,
        inspector: Option<&str>,
    ) -> WorkerdProc {
        let root = repo_root();
        let port = free_port();
        let worker = LocalWorker {
            bundle_dir,
            listen: format!("127.0.0.1:{port}"),
            bindings,
            baselines,
            stand_ins,
        };
        assert!(
            worker.bundle_present(),
            "the edge bundle is missing in {}: run `cargo xtask edge build` (cargo xtask test does)",
            worker.bundle_dir.display()
        );
        let config = worker
            .write_config(&format!("e2e-{port}.capnp"))
            .unwrap_or_else(|e| panic!("workerd config: {e}"));
        let workerd = root.join("edge-worker/node_modules/.bin/workerd");
        assert!(
            workerd.exists(),
            "workerd is not installed: run `cargo xtask setup`"
        );
        let log = std::env::temp_dir().join(format!("tollgate-workerd-{port}.log"));
        let proc = Proc::spawn(
            "workerd",
            Command::new(workerd)
                .args(["serve", "--experimental"])
                .args(inspector.map(|addr| format!("--inspector-addr={addr}")))
                .arg(&config),
            log,
        );
        let addr: SocketAddr = worker.listen.parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(
            wait_for_port(addr, Duration::from_secs(30)),
            "workerd did not start:\n{}",
            proc.log()
        );
        WorkerdProc { proc, addr }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

/// Bindings for a worker whose providers are the mock and whose collector is `collector_url`.
pub fn worker_bindings(
    mock_base_url: &str,
    collector_url: &str,
    app_keys_json: &str,
) -> Vec<(String, String)> {
    let providers = format!(
        r#"[{{"name":"openai","base_url":"{mock_base_url}","secret":"OPENAI_API_KEY"}},{{"name":"openrouter","base_url":"{mock_base_url}","secret":"OPENROUTER_API_KEY"}}]"#
    );
    [
        ("PROVIDERS", providers.as_str()),
        ("DEFAULT_PROVIDER", "openai"),
        ("OPENAI_API_KEY", "sk-mock-openai"),
        ("OPENROUTER_API_KEY", "sk-or-mock"),
        ("COLLECTOR_URL", collector_url),
        ("COLLECTOR_SIGNING_SECRET", SIGNING_SECRET),
        ("APP_KEYS", app_keys_json),
        ("EDGE_REGION", "E2E"),
        ("SHIP_BATCH_DELAY_MS", "10"),
        ("UPSTREAM_TIMEOUT_MS", "3000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// An app key and its `APP_KEYS` entry.
pub fn app_key(n: u32, org: &str, user: &str, app: &str) -> (String, String) {
    let key = format!("tg_e2e{n:04}_{}", "k".repeat(36));
    let entry = format!(
        r#""{}":{{"key_id":"key{n}","org_id":"{org}","user_id":"{user}","app_id":"{app}"}}"#,
        usage_core::keys::hash_secret(&key)
    );
    (key, entry)
}

/// [`app_key`] for a server app acting for users of its own: its calls may name their end
/// user in `x-tollgate-user`.
pub fn end_user_app_key(n: u32, org: &str, user: &str, app: &str) -> (String, String) {
    let (key, entry) = app_key(n, org, user, app);
    let entry = entry.replace("\"app_id\"", "\"acts_for_end_users\":true,\"app_id\"");
    (key, entry)
}

/// The Python of the venv `cargo xtask setup` creates (with the official `openai` SDK).
pub fn python() -> PathBuf {
    let p = repo_root().join("target/py-venv/bin/python");
    assert!(
        p.exists(),
        "the Python venv with the openai SDK is missing: run `cargo xtask setup`"
    );
    p
}

/// Runs `tests/python/<script>` with the venv's Python; returns its stdout parsed as JSON.
pub fn run_python(script: &str, env: &[(&str, &str)]) -> serde_json::Value {
    let path = repo_root().join("tests/python").join(script);
    let out = Command::new(python())
        .arg(&path)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("python {script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python {script} failed:\n{stdout}\n{stderr}"
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("python {script} printed no JSON ({e}):\n{stdout}\n{stderr}"))
}

/// The edge as users run it locally: `wrangler dev --local` (wrangler pinned in
/// `edge-worker/package.json`, installed by `cargo xtask setup`) on the repository's own
/// `wrangler.toml` and the bundle `cargo xtask edge build` makes. `env` is written to an env
/// file (`.dev.vars` format: secrets, and vars that override the file's `[vars]`, as a user
/// overrides the example URLs). The process group (wrangler and its workerd) is killed on drop.
#[derive(Debug)]
pub struct WranglerDev {
    child: Option<Child>,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl WranglerDev {
    pub fn start(env: &[(&str, &str)]) -> WranglerDev {
        use std::os::unix::process::CommandExt;
        let root = repo_root();
        let wrangler = root.join("edge-worker/node_modules/.bin/wrangler");
        assert!(
            wrangler.exists(),
            "{} is missing: run `cargo xtask setup`",
            wrangler.display()
        );
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let env_file = dir.path().join(".env");
        let text: String = env.iter().map(|(k, v)| format!("{k}='{v}'\n")).collect();
        std::fs::write(&env_file, text).unwrap_or_else(|e| panic!("{e}"));
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}")
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let log = dir.path().join("wrangler.log");
        let file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
        let err = file.try_clone().unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new(&wrangler)
            .current_dir(&root)
            .args([
                "dev",
                "--config",
                "wrangler.toml",
                "--local",
                "--ip",
                "127.0.0.1",
            ])
            .arg("--port")
            .arg(port.to_string())
            .arg("--inspector-port")
            .arg(free_port().to_string())
            .arg("--persist-to")
            .arg(dir.path().join("state"))
            .arg("--env-file")
            .arg(&env_file)
            .arg("--show-interactive-dev-session=false")
            // No prompts, no telemetry, nothing written to the user's home.
            .env("CI", "true")
            .env("WRANGLER_SEND_METRICS", "false")
            .env("HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err))
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start wrangler: {e}"));
        let mut w = WranglerDev {
            child: Some(child),
            addr,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        while !w.log().contains("Ready on") {
            let exited = w.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "wrangler dev did not start ({exited:?}):\n{}",
                w.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            wait_for_port(addr, Duration::from_secs(30)),
            "wrangler dev is not listening:\n{}",
            w.log()
        );
        w
    }

    /// `http://127.0.0.1:<port>/v1`, as an SDK's `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// What wrangler (and the worker's console) printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WranglerDev {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // The whole group: wrangler runs its CLI and workerd as children. (`--`: without
            // it util-linux's kill reads `-<pgid>` as an option and kills nothing.)
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{}", c.id())])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
