//! libFuzzer target `batch_decoder`: see `tollgate_fuzz::batch_decoder` (fuzz/checks.rs) for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::batch_decoder(data));
