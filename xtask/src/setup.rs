//! `cargo xtask setup`: install what this machine lacks. Idempotent and quiet when all is there.

use std::process::Command;

use crate::util::{exec, have, output, step, Result};

pub fn run() -> Result {
    disk_space();
    wasm_target()?;
    clickhouse()?;
    zookeeper()?;
    crate::edge::setup()?;
    python_sdk()?;
    browser()?;
    cpu_hog()?;
    println!("setup: done");
    Ok(())
}

/// Free bytes a full `cargo xtask test` from a fresh clone needs under `target/`, measured:
/// about 6 GB of debug, release and wasm builds, 1.3 GB of Python environments and up to
/// 3 GB of soak data while the soak runs (removed when it passes).
const TEST_RUN_BYTES: u64 = 10 << 30;

/// Warns, with the figures, when the disk is too full for a whole test run: running out of
/// space half-way fails a compile with `No space left on device` minutes later and far from
/// the cause (a CI run did, on a machine where stale clones had filled the disk).
fn disk_space() {
    let target = crate::util::repo_root().join("target");
    let probe = if target.exists() {
        target
    } else {
        crate::util::repo_root()
    };
    let out = output(
        Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&probe),
    );
    let free = out.and_then(|o| o.lines().nth(1).and_then(|l| l.trim().parse::<u64>().ok()));
    if let Some(free) = free {
        if free < TEST_RUN_BYTES {
            eprintln!(
                "setup: WARNING: {:.1} GB free at {}; a full `cargo xtask test` needs about {} GB \
                 (remove stale clones or `cargo clean` an old target/)",
                free as f64 / 1e9,
                probe.display(),
                TEST_RUN_BYTES >> 30
            );
        }
    }
}

fn wasm_target() -> Result {
    let installed =
        output(Command::new("rustup").args(["target", "list", "--installed"])).unwrap_or_default();
    if installed
        .lines()
        .any(|l| l.trim() == "wasm32-unknown-unknown")
    {
        return Ok(());
    }
    step("setup: rust target wasm32-unknown-unknown");
    exec(
        "rustup target add",
        Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]),
    )
}

/// Debian's `clickhouse-server` (18.16) and `clickhouse-client`; see docs/CLICKHOUSE.md.
fn clickhouse() -> Result {
    if have("/usr/sbin/clickhouse-server") && have("/usr/bin/clickhouse-client") {
        return Ok(());
    }
    step("setup: ClickHouse server and client (apt)");
    apt_install(&["clickhouse-server", "clickhouse-client"])
}

/// Debian's `zookeeper` (3.8, with a headless JRE): the coordination service of the dev
/// cluster (`cargo xtask ch cluster`, clickhouse/src/dev_cluster.rs). Only its jar is used; the
/// package's own service is not started.
fn zookeeper() -> Result {
    if have("/usr/share/java/zookeeper.jar") && have("/usr/bin/java") {
        return Ok(());
    }
    step("setup: ZooKeeper for the dev cluster (apt)");
    apt_install(&["zookeeper"])
}

/// Debian's `chromium` and `chromium-driver`: the dashboard's browser tests drive them over
/// WebDriver (`dashboard-api/tests/web_browser.rs`).
fn browser() -> Result {
    if have("/usr/bin/chromium") && have("/usr/bin/chromedriver") {
        return Ok(());
    }
    step("setup: Chromium and chromedriver for the dashboard's browser tests (apt)");
    apt_install(&["chromium", "chromium-driver"])
}

/// Debian's `stress-ng`: the CPU hog the suites are proven green beside (`stress-ng --cpu 2`
/// next to `cargo xtask test`; docs/BENCHMARKS.md, "Reliability"). `cargo xtask repeat --hog N`
/// has a hog of its own.
fn cpu_hog() -> Result {
    if have("/usr/bin/stress-ng") {
        return Ok(());
    }
    step("setup: stress-ng, the CPU hog for reliability runs (apt)");
    apt_install(&["stress-ng"])
}

/// `apt-get update` (once per run) and install `packages` non-interactively.
pub fn apt_install(packages: &[&str]) -> Result {
    let sudo = !is_root();
    let apt = |args: &[&str]| {
        let mut c = if sudo {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        } else {
            Command::new("apt-get")
        };
        c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    exec("apt-get update", &mut apt(&["update", "-qq"]))?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend_from_slice(packages);
    exec("apt-get install", &mut apt(&args))
}

fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_some_and(|s| s.trim() == "0")
}

/// A venv under `target/py-venv` with the official `openai` SDK (pinned in
/// `tests/python/requirements.txt`): the client of the end-to-end tests.
fn python_sdk() -> Result {
    let root = crate::util::repo_root();
    let venv = root.join("target/py-venv");
    let python = venv.join("bin/python");
    let requirements = root.join("tests/python/requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).unwrap_or_default();
    let marker = venv.join(".requirements");
    if python.exists() && std::fs::read_to_string(&marker).is_ok_and(|m| m == wanted) {
        return Ok(());
    }
    step("setup: Python venv with the openai SDK (target/py-venv)");
    if !python.exists() {
        exec(
            "python venv",
            std::process::Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv),
        )?;
    }
    exec(
        "pip install",
        std::process::Command::new(&python)
            .args(["-m", "pip", "install", "-q", "-r"])
            .arg(&requirements),
    )?;
    std::fs::write(marker, wanted)?;
    Ok(())
}
