//! libFuzzer target `signature`: see `tollgate_fuzz::signature` (fuzz/checks.rs) for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::signature(data));
