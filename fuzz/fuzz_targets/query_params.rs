//! libFuzzer target `query_params`: see `tollgate_fuzz::query_params` (fuzz/checks.rs) for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::query_params(data));
