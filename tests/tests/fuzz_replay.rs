//! The fuzz targets' inputs on stable Rust: every committed seed (`fuzz/seeds/<target>/`), every
//! crash turned regression (`fuzz/regressions/<target>/`) and every fixture listed in
//! `fuzz/fixtures.txt` goes through the same checks the libFuzzer targets run (`fuzz/checks.rs`,
//! compiled here too), so CI keeps every finding fixed without nightly or libFuzzer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

#[path = "../../fuzz/checks.rs"]
mod checks;
#[path = "../../fuzz/seed_dirs.rs"]
mod seed_dirs;

use tollgate_e2e::harness::repo_root;

fn replay(target: &str) {
    let files = seed_dirs::input_files(&repo_root(), target).unwrap();
    assert!(!files.is_empty(), "no seeds for {target}");
    for file in &files {
        let data = std::fs::read(file).unwrap();
        eprintln!("{target}: {}", file.display());
        assert!(checks::run(target, &data), "unknown target {target}");
    }
}

/// A new fuzz target needs its replay here (and its checks in fuzz/checks.rs).
#[test]
fn every_target_has_a_replay() {
    assert_eq!(
        seed_dirs::targets(&repo_root()),
        ["batch_decoder", "query_params", "signature", "sse_scanner"]
    );
    for target in checks::TARGETS {
        assert!(checks::run(target, b""), "{target}");
    }
}

#[test]
fn sse_scanner_inputs_hold() {
    replay("sse_scanner");
}

#[test]
fn batch_decoder_inputs_hold() {
    replay("batch_decoder");
}

#[test]
fn signature_inputs_hold() {
    replay("signature");
}

#[test]
fn query_params_inputs_hold() {
    replay("query_params");
}
