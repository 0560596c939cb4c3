//! The wall clock, read in one place. `ewx-proto` takes time as an argument; this is
//! where the broker, the client and the command line get it from.

/// Wall-clock time in ms since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    now_us() / 1000
}

/// Wall-clock time in µs since the Unix epoch (0 if the clock is before 1970): the floor
/// of a client's sequence numbers, so they keep increasing across restarts.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}
