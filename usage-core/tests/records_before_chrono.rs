//! Records as the edge wrote them before `chrono` replaced `time` read back and write out byte
//! for byte the same (`tests/golden/records_pre_chrono.ndjson`, never regenerated), and the
//! collector accepts and rejects exactly the `ts` strings it did before.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use usage_core::UsageRecord;

const GOLDEN: &str = include_str!("golden/records_pre_chrono.ndjson");

fn with_ts(ts: &str) -> Result<UsageRecord, serde_json::Error> {
    let line = GOLDEN.lines().next().unwrap();
    let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["ts"] = ts.into();
    serde_json::from_value(v)
}

#[test]
fn golden_records_write_out_byte_for_byte() {
    let mut n = 0;
    for line in GOLDEN.lines() {
        let record: UsageRecord = serde_json::from_str(line).unwrap();
        assert_eq!(serde_json::to_string(&record).unwrap(), line);
        n += 1;
    }
    assert_eq!(n, 9);
}

#[test]
fn the_fraction_is_written_trimmed_and_utc_as_z() {
    let ts: Vec<String> = GOLDEN
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["ts"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        ts,
        [
            "2026-12-07T01:02:03Z",
            "2026-12-07T01:02:03.5Z",
            "2026-12-07T01:02:03.12Z",
            "2026-12-07T01:02:03.123Z",
            "2026-12-07T01:02:03.1234Z",
            "2026-12-07T01:02:03.123456789Z",
            "2026-12-07T01:02:03.0000001Z",
            "1970-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999999Z",
        ]
    );
}

/// Other spellings RFC 3339 allows are read as the same instant.
#[test]
fn accepted_spellings_are_the_same_instant() {
    for (input, same_as) in [
        ("2026-12-07T02:02:03.5+01:00", "2026-12-07T01:02:03.5Z"),
        ("2026-12-06T20:02:03-05:00", "2026-12-07T01:02:03Z"),
        ("2026-12-07T01:02:03-00:00", "2026-12-07T01:02:03Z"),
        ("2026-12-07t01:02:03.5z", "2026-12-07T01:02:03.5Z"),
        ("2026-12-07 01:02:03Z", "2026-12-07T01:02:03Z"),
        // Any one character between date and time, as `time` read it.
        ("2026-12-07_01:02:03Z", "2026-12-07T01:02:03Z"),
        (
            "2026-12-07T01:02:03.1234567891Z",
            "2026-12-07T01:02:03.123456789Z",
        ),
        // A leap second on a month's last day reads as its last nanosecond.
        ("2026-12-31T23:59:60Z", "2026-12-31T23:59:59.999999999Z"),
    ] {
        let a = with_ts(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        let b = with_ts(same_as).unwrap();
        assert_eq!(a.ts, b.ts, "{input}");
    }
}

#[test]
fn malformed_times_are_rejected() {
    for input in [
        "2026-12-07T01:02:03+0100",
        "2026-12-07T01:02:03\u{2212}01:00",
        "2026-12-07T01:02:03+01:00:00",
        "2026-12-07T23:59:60Z",
        "+2026-12-07T01:02:03Z",
        " 2026-12-07T01:02:03Z",
        "2026-12-07T01:02:03Z ",
        "2026-12-07T1:02:03Z",
        "2026-12-07T01:02Z",
        "2026-12-07T01:02:03.Z",
        "2026-12-07T01:02:03,5Z",
        "2026-12-07",
        "2026-12-07T01:02:03",
        "",
    ] {
        assert!(with_ts(input).is_err(), "{input:?} was accepted");
    }
}

/// The batch decoder's seed batches (what edges sent) decode as before.
#[test]
fn seed_batches_decode() {
    for (name, n) in [("array.json", 2), ("unpriced_and_old.json", 3)] {
        let path = format!(
            "{}/../fuzz/seeds/batch_decoder/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let body = std::fs::read(&path).unwrap();
        let got = usage_core::wire::decode_batch(&body, 1000).unwrap();
        assert_eq!(got.len(), n, "{name}");
    }
}
