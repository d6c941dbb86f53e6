//! The `tollgate-jobs` binary refuses a bad configuration before it connects to anything, naming
//! each key at fault, with exit code 2 (the code every Tollgate service uses for "fix your
//! config"). Running the jobs for real is `tests/tests/jobs_e2e.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::process::Command;

#[test]
fn a_bad_config_is_refused_naming_each_key() {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate-jobs"))
        .env_clear()
        .env("TOLLGATE_LISTEN", "not-an-address")
        .env("TOLLGATE_CLICKHOUSE_URL", "ftp://x")
        .env("TOLLGATE_EVALUATOR_LEASE_SECS", "1")
        .env("TOLLGATE_NOTIFICATIONS_SIGNING_SECRET", "short-secret")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "listen:",
        "clickhouse.url:",
        "evaluator.lease_secs:",
        "notifications.signing_secret:",
    ] {
        assert!(err.contains(key), "{key} not named in:\n{err}");
    }
    assert!(!err.contains("short-secret"), "secrets never print:\n{err}");
}
