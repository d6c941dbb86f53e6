//! `cargo xtask edge build|dev`: the edge worker's deployable bundle, built offline, and a
//! local `workerd` running it.
//!
//! The build: `cargo build --target wasm32-unknown-unknown --profile wasm-release`, then
//! `wasm-bindgen --target module` (the CLI pinned to the lockfile's version), `wasm-opt -Oz`
//! (npm `binaryen`, pinned in `edge-worker/package.json`), and a small ES-module entry
//! (`shim.js`) that hands `fetch`/`queue` to the wasm. Output: `target/edge/`, which is what
//! `wrangler.toml` deploys and what `workerd` serves.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use edge_worker::local::{self, LocalWorker};

use crate::fail;
use crate::util::{cargo, exec, have, repo_root, step, Result};

#[derive(clap::Subcommand)]
pub enum EdgeCommand {
    /// Build target/edge/ (shim.js, index.js, index_bg.wasm) and print its sizes.
    Build,
    /// Build, then serve the worker with workerd on 127.0.0.1:8787 against local services.
    Dev {
        #[arg(long, default_value = "127.0.0.1:8787")]
        listen: String,
        /// Base URL of an OpenAI-compatible upstream (e.g. the mock provider).
        #[arg(long, default_value = "http://127.0.0.1:8799/v1")]
        upstream: String,
        #[arg(long, default_value = "http://127.0.0.1:8081/v1/records")]
        collector: String,
    },
}

pub fn run(cmd: &EdgeCommand) -> Result {
    match cmd {
        EdgeCommand::Build => build().map(|_| ()),
        EdgeCommand::Dev {
            listen,
            upstream,
            collector,
        } => {
            let dir = build()?;
            let worker = LocalWorker {
                bundle_dir: dir,
                listen: listen.clone(),
                bindings: dev_bindings(upstream, collector),
                baselines: Vec::new(),
                stand_ins: Default::default(),
            };
            let config = worker.write_config("dev.capnp")?;
            step(&format!(
                "workerd serving the edge worker on http://{listen}"
            ));
            exec(
                "workerd",
                Command::new(workerd_bin())
                    .args(["serve", "--experimental"])
                    .arg(&config),
            )
        }
    }
}

/// Vars for a local run: a mock upstream for both built-in providers and a dev app key.
fn dev_bindings(upstream: &str, collector: &str) -> Vec<(String, String)> {
    let providers = format!(
        r#"[{{"name":"openai","base_url":"{upstream}","secret":"OPENAI_API_KEY"}},{{"name":"openrouter","base_url":"{upstream}","secret":"OPENROUTER_API_KEY"}}]"#
    );
    let dev_key = "tg_dev_0000000000000000000000000000000000";
    let keys = format!(
        r#"{{"{}":{{"key_id":"dev","org_id":"org_dev","app_id":"dev-app"}}}}"#,
        usage_core::keys::hash_secret(dev_key)
    );
    println!("    dev app key: {dev_key}");
    [
        ("PROVIDERS", providers.as_str()),
        ("DEFAULT_PROVIDER", "openai"),
        ("OPENAI_API_KEY", "sk-mock"),
        ("OPENROUTER_API_KEY", "sk-or-mock"),
        ("COLLECTOR_URL", collector),
        ("COLLECTOR_SIGNING_SECRET", "dev-signing-secret-0123456789"),
        ("APP_KEYS", keys.as_str()),
        ("EDGE_REGION", "DEV"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The pinned workerd from `edge-worker/node_modules`.
pub fn workerd_bin() -> PathBuf {
    repo_root().join("edge-worker/node_modules/.bin/workerd")
}

fn wasm_opt_bin() -> PathBuf {
    repo_root().join("edge-worker/node_modules/.bin/wasm-opt")
}

/// The pinned wrangler (`tests/tests/wrangler_e2e.rs` runs the shipped `wrangler.toml` with it).
fn wrangler_bin() -> PathBuf {
    repo_root().join("edge-worker/node_modules/.bin/wrangler")
}

fn wasm_bindgen_bin() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"));
    home.join("bin/wasm-bindgen")
}

/// The wasm-bindgen version in Cargo.lock (the CLI must match it exactly).
pub fn locked_wasm_bindgen_version() -> Result<String> {
    let lock = std::fs::read_to_string(repo_root().join("Cargo.lock"))?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "name = \"wasm-bindgen\"" {
            if let Some(v) = lines
                .next()
                .and_then(|l| l.trim().strip_prefix("version = \""))
            {
                return Ok(v.trim_end_matches('"').to_string());
            }
        }
    }
    Err(fail!("edge: wasm-bindgen is not in Cargo.lock"))
}

/// Installs the tools the build needs, when missing (called by `cargo xtask setup`).
pub fn setup() -> Result {
    let version = locked_wasm_bindgen_version()?;
    let installed =
        crate::util::output(Command::new(wasm_bindgen_bin()).arg("--version")).unwrap_or_default();
    if !installed.contains(&version) {
        step(&format!(
            "setup: wasm-bindgen-cli {version} (matches Cargo.lock; a few minutes)"
        ));
        // Not --locked: its lockfile wants a crate version the registry mirror lacks
        // (a webpki-roots version); without it the install resolves and works.
        exec(
            "cargo install wasm-bindgen-cli",
            cargo().args([
                "install",
                "wasm-bindgen-cli",
                "--version",
                &version,
                "--force",
            ]),
        )?;
    }
    // (`ws`: the profiler's inspector client, added after the others.)
    let ws = repo_root().join("edge-worker/node_modules/ws/package.json");
    if !(workerd_bin().exists()
        && wasm_opt_bin().exists()
        && wrangler_bin().exists()
        && ws.exists())
    {
        step("setup: workerd, binaryen, wrangler and ws (npm ci in edge-worker/)");
        if !have("npm") {
            return Err(fail!(
                "setup: npm is not installed (Node 20 is required for workerd)"
            ));
        }
        exec(
            "npm ci",
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(repo_root().join("edge-worker")),
        )?;
    }
    Ok(())
}

/// Builds the bundle into `target/edge/` and returns that directory.
pub fn build() -> Result<PathBuf> {
    let root = repo_root();
    let out = local::bundle_dir(&root);
    build_wasm("edge-worker", &out, Names::Strip)?;
    std::fs::write(out.join("shim.js"), local::SHIM_JS)?;
    report_sizes(&out)?;
    Ok(out)
}

/// Builds the benchmark's Rust floor (crate `edge-floor`) into `target/edge-floor/`.
pub fn build_floor() -> Result<PathBuf> {
    let out = repo_root().join("target/edge-floor");
    build_wasm("edge-floor", &out, Names::Strip)?;
    Ok(out)
}

/// The worker built with its Rust function names kept (and not shrunk by wasm-opt, which
/// drops them), into `target/edge-names`: what `cargo xtask bench edge-profile` profiles.
pub fn build_with_names() -> Result<PathBuf> {
    let out = repo_root().join("target/edge-names");
    build_wasm("edge-worker", &out, Names::Keep)?;
    std::fs::write(out.join("shim.js"), local::SHIM_JS)?;
    Ok(out)
}

/// Whether a wasm build keeps its name section (for profiles) or is shrunk for shipping.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Names {
    Strip,
    Keep,
}

/// `cargo build` of `package` for wasm32 (`wasm-release`), then wasm-bindgen and wasm-opt into
/// a fresh `out` (`index.js`, `index_bg.wasm`, snippets).
fn build_wasm(package: &str, out: &Path, names: Names) -> Result {
    let root = repo_root();
    step(&format!(
        "edge: cargo build {package} (wasm32, wasm-release)"
    ));
    exec(
        "edge wasm build",
        cargo().args([
            "build",
            "-p",
            package,
            "--target",
            "wasm32-unknown-unknown",
            "--profile",
            "wasm-release",
        ]),
    )?;
    if out.exists() {
        std::fs::remove_dir_all(out)?;
    }
    std::fs::create_dir_all(out)?;
    let wasm = root.join(format!(
        "target/wasm32-unknown-unknown/wasm-release/{}.wasm",
        package.replace('-', "_")
    ));
    step("edge: wasm-bindgen");
    exec(
        "wasm-bindgen",
        Command::new(wasm_bindgen_bin())
            .args([
                "--target",
                "module",
                "--out-name",
                "index",
                "--no-typescript",
            ])
            .args((names == Names::Keep).then_some("--keep-debug"))
            .arg("--out-dir")
            .arg(out)
            .arg(&wasm),
    )?;
    // workerd and wrangler load the wasm as a module import, not a source-phase import.
    let index = out.join("index.js");
    let js =
        std::fs::read_to_string(&index)?.replace("import source wasmModule", "import wasmModule");
    std::fs::write(&index, js)?;

    if names == Names::Keep {
        return Ok(());
    }
    step("edge: wasm-opt -Oz");
    let bg = out.join("index_bg.wasm");
    exec(
        "wasm-opt",
        Command::new(wasm_opt_bin())
            .arg("-Oz")
            .args([
                "--enable-bulk-memory",
                "--enable-nontrapping-float-to-int",
                "--enable-sign-ext",
            ])
            .args([
                "--enable-reference-types",
                "--enable-mutable-globals",
                "--enable-exception-handling",
            ])
            .args(["--strip-debug", "--strip-producers"])
            .arg(&bg)
            .arg("-o")
            .arg(&bg),
    )?;
    Ok(())
}

fn report_sizes(out: &Path) -> Result {
    let mut total = 0u64;
    let mut total_gz = 0u64;
    let mut files: Vec<String> = local::BUNDLE_FILES.iter().map(|s| s.to_string()).collect();
    files.extend(local::snippet_modules(out));
    for f in &files {
        let bytes = std::fs::read(out.join(f))?;
        let gz = gzip_len(&bytes)?;
        println!("    {f:<48} {:>8} B raw {:>8} B gzip", bytes.len(), gz);
        total += bytes.len() as u64;
        total_gz += gz;
    }
    println!("    {:<48} {total:>8} B raw {total_gz:>8} B gzip", "total");
    Ok(())
}

/// Gzipped size via the system `gzip` (xtask stays free of compression crates).
pub fn gzip_len(bytes: &[u8]) -> Result<u64> {
    let mut child = Command::new("gzip")
        .args(["-9", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(bytes)?;
    }
    let out = child.wait_with_output()?;
    Ok(out.stdout.len() as u64)
}
