//! # ewx-tests — end-to-end tests
//!
//! Shared helpers for the integration tests in `tests/tests/`. Today they build a small
//! Compact network in memory (roster, node keys) from fixed seeds; when the broker lands
//! they will also start a real broker on `127.0.0.1:0` with a temporary sled directory.
