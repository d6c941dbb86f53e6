//! The peers of `cargo xtask bench peers` (Tollgate's edge beside Portkey's gateway and
//! LiteLLM's proxy on one mock provider, `tests/src/bin/bench-peers.rs`).
//!
//! [`install`] puts both peers, pinned, into `target/peers/` for this command only (never in `setup`
//! or CI): Portkey from npm ([`PORTKEY_VERSION`]) and LiteLLM's proxy from PyPI
//! ([`LITELLM_PROXY_VERSION`]; not the cost check's newer pin, whose `proxy` extra needs a
//! `litellm-proxy` package that PyPI does not have).

use std::process::Command;

use crate::fail;
use crate::util::{exec, have, output, repo_root, step, Result};

pub const PORTKEY_VERSION: &str = "1.15.2";
pub const LITELLM_PROXY_VERSION: &str = "1.108.7";

/// Installs what is missing and returns `bench-peers`'s arguments naming the peers.
pub fn install() -> Result<Vec<String>> {
    let root = repo_root();
    let portkey = root.join("target/peers/portkey");
    let module = portkey.join("node_modules/@portkey-ai/gateway");
    let installed = output(
        Command::new("node")
            .arg("-p")
            .arg("require(process.argv[1]).version")
            .arg(module.join("package.json")),
    );
    if installed.as_deref().map(str::trim) != Some(PORTKEY_VERSION) {
        if !have("npm") {
            return Err(fail!("npm is not on PATH (needed for Portkey's gateway)"));
        }
        step(&format!(
            "peers: @portkey-ai/gateway {PORTKEY_VERSION} in target/peers/portkey (npm)"
        ));
        std::fs::create_dir_all(&portkey)?;
        if !portkey.join("package.json").exists() {
            std::fs::write(portkey.join("package.json"), "{\"private\": true}\n")?;
        }
        exec(
            "npm install @portkey-ai/gateway",
            Command::new("npm")
                .current_dir(&portkey)
                .args(["install", "--no-audit", "--no-fund", "--silent"])
                .arg(format!("@portkey-ai/gateway@{PORTKEY_VERSION}")),
        )?;
    }
    let venv = root.join("target/peers/litellm-venv");
    crate::costcheck::ensure_litellm_venv(
        &venv,
        &venv.join("bin/python"),
        "litellm[proxy]",
        LITELLM_PROXY_VERSION,
    )?;
    Ok(vec![
        "--portkey".into(),
        portkey.join("node_modules").display().to_string(),
        "--portkey-version".into(),
        PORTKEY_VERSION.into(),
        "--litellm".into(),
        venv.join("bin/litellm").display().to_string(),
        "--litellm-version".into(),
        LITELLM_PROXY_VERSION.into(),
    ])
}
