//! libFuzzer target `sse_scanner`: see `tollgate_fuzz::sse_scanner` (fuzz/checks.rs) for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::sse_scanner(data));
