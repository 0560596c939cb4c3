//! Times as people read them: UTC dates and countdowns.

/// `YYYY-MM-DD HH:MM:SSZ` for ms since the Unix epoch (proleptic Gregorian, UTC).
pub fn utc(ms: u64) -> String {
    let rem = ms / 1000 % 86_400;
    let (y, m, d) = civil(ms);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The UTC calendar year of ms since the Unix epoch.
pub fn year_of(ms: u64) -> i32 {
    i32::try_from(civil(ms).0).unwrap_or(i32::MAX)
}

/// (year, month, day) in UTC of ms since the Unix epoch.
fn civil(ms: u64) -> (i64, i64, i64) {
    let days = (ms / 1000 / 86_400) as i64;
    // Howard Hinnant's civil_from_days
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A span of ms as `2d 03h 05m`, `3h 05m`, `5m 07s` or `12s`.
pub fn span(ms: u64) -> String {
    let s = ms / 1000;
    let (d, h, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    if d > 0 {
        format!("{d}d {h:02}h {m:02}m")
    } else if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m {sec:02}s")
    } else {
        format!("{sec}s")
    }
}

/// `T+25h 00m`: a time relative to a case's opening.
pub fn after(start_ms: u64, at_ms: u64) -> String {
    if at_ms >= start_ms {
        format!("T+{}", span(at_ms - start_ms))
    } else {
        format!("T-{}", span(start_ms - at_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_as_people_write_them() {
        assert_eq!(span(0), "0s");
        assert_eq!(span(65_000), "1m 05s");
        assert_eq!(span(3 * 3_600_000 + 5 * 60_000), "3h 05m");
        assert_eq!(span(72 * 3_600_000), "3d 00h 00m");
        assert_eq!(after(1000, 1000 + 25 * 3_600_000), "T+1d 01h 00m");
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(1_798_761_599_000), "2026-12-31 23:59:59Z");
        assert_eq!(year_of(1_798_761_599_000), 2026);
        assert_eq!(year_of(1_798_761_600_000), 2027);
    }
}
