//! Frames as read from a QUIC stream: Request, Response and Push bodies and what they carry.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ewx_fuzz::frame(data));
