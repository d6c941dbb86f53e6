//! `cargo xtask costcheck`: Tollgate's cost corpus priced by LiteLLM as well, side by side in
//! `docs/COST.md`.
//!
//! Makes `target/costcheck-venv` (`python3 -m venv`) with LiteLLM pinned to
//! [`LITELLM_VERSION`] from PyPI — for this command only, not in `setup` nor in CI — and reuses
//! it while that version is installed. Then runs `tests/python/costcheck.py` over
//! `usage-core/tests/corpus/`: it registers the corpus's own prices with LiteLLM, prices every
//! case with LiteLLM's cost function, and rewrites the table between the
//! `<!-- costcheck:table -->` markers of `docs/COST.md`, keeping the explanations around it.
//! LiteLLM is kept to its bundled price map (`LITELLM_LOCAL_MODEL_COST_MAP=True`): nothing is
//! fetched but the package.

use std::path::Path;
use std::process::Command;

use crate::fail;
use crate::util::{exec, have, output, repo_root, step, Result};

/// The LiteLLM release the comparison runs, and that `docs/COST.md` names.
pub const LITELLM_VERSION: &str = "1.110.2";

pub fn run() -> Result {
    let root = repo_root();
    let venv = root.join("target/costcheck-venv");
    let python = venv.join("bin/python");
    ensure_litellm(&venv, &python)?;
    step(&format!(
        "costcheck: the cost corpus priced by LiteLLM {LITELLM_VERSION} (docs/COST.md)"
    ));
    exec(
        "costcheck.py",
        Command::new(&python)
            .arg(root.join("tests/python/costcheck.py"))
            .arg(root.join("usage-core/tests/corpus"))
            .arg(root.join("docs/COST.md"))
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .env("PYTHONDONTWRITEBYTECODE", "1"),
    )
}

/// The venv with `litellm==LITELLM_VERSION`, made or upgraded only when it lacks that version.
fn ensure_litellm(venv: &Path, python: &Path) -> Result {
    ensure_litellm_venv(venv, python, "litellm", LITELLM_VERSION)
}

/// A venv at `venv` with `package==version` (`package` may name extras, `litellm[proxy]`),
/// made or upgraded only when its litellm is not `version`.
pub(crate) fn ensure_litellm_venv(
    venv: &Path,
    python: &Path,
    package: &str,
    version: &str,
) -> Result {
    if python.exists() && installed_version(python).as_deref() == Some(version) {
        return Ok(());
    }
    if !have("python3") {
        return Err(fail!(
            "python3 is not on PATH (needed for the LiteLLM venv)"
        ));
    }
    step(&format!("{package} {version} in {} (PyPI)", venv.display()));
    if !python.exists() {
        exec(
            "python venv",
            Command::new("python3").args(["-m", "venv"]).arg(venv),
        )?;
    }
    exec(
        "pip install litellm",
        Command::new(python)
            .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
            .arg(format!("{package}=={version}")),
    )?;
    match installed_version(python) {
        Some(v) if v == version => Ok(()),
        other => Err(fail!(
            "{} has litellm {} after pip install, not {version}",
            venv.display(),
            other.as_deref().unwrap_or("(none)")
        )),
    }
}

/// The litellm version installed in the venv of `python`, if any.
fn installed_version(python: &Path) -> Option<String> {
    output(Command::new(python).args([
        "-c",
        "import importlib.metadata as m; print(m.version('litellm'))",
    ]))
    .map(|v| v.trim().to_string())
}
