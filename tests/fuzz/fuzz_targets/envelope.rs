//! Envelope wire bytes: decode, verify against the fixed roster, open by every node.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ewx_fuzz::envelope(data));
