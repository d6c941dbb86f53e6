//! Versions and timestamps of the admin tables' rows. Every admin table is a
//! `ReplacingMergeTree(version)`: a change is a new row whose `version` is higher, and every
//! writer (the API, the jobs, the edge-facing routes) versions by the wall clock in
//! nanoseconds, so the newest write wins across instances whose clocks agree to the second.

use chrono::{DateTime, Timelike, Utc};

/// The version of a row written now: Unix time in nanoseconds.
pub fn row_version() -> u64 {
    u64::try_from(Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)).unwrap_or(u64::MAX)
}

/// Now, to the second (what a `DateTime` column keeps), so a row reads back as it was written.
pub fn now_second() -> DateTime<Utc> {
    let now = Utc::now();
    now.with_nanosecond(0).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_grow_and_seconds_are_whole() {
        let a = row_version();
        let b = row_version();
        assert!(b >= a && a > 1_700_000_000_000_000_000);
        assert_eq!(now_second().nanosecond(), 0);
    }
}
