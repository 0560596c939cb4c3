//! Signed roster wire bytes: decode, verify, verify as an update of the fixed roster.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ewx_fuzz::roster(data));
