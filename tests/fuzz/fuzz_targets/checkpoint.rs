//! Signed checkpoints, audit entries and Merkle inclusion/consistency proofs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ewx_fuzz::checkpoint(data));
