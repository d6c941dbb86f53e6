//! `UsageEventRow` round-trips through the real table field for field.

use chrono::{DateTime, Timelike};
use tollgate_clickhouse::testing::TestDb;
use tollgate_clickhouse::{insert_encoded, insert_events, read_query, EncodedEvent, UsageEventRow};
use usage_core::UsageRecord;

use crate::support::fixture;

#[tokio::test]
async fn usage_event_rows_round_trip_field_for_field() {
    let db = TestDb::new().await.unwrap();
    let records = fixture(400);
    let inserted_at = DateTime::from_timestamp_secs(1_790_000_000).unwrap();
    let rows: Vec<UsageEventRow> = records
        .iter()
        .enumerate()
        .map(|(i, r)| UsageEventRow::from_record(r, &format!("batch-{}", i / 100), inserted_at))
        .collect();
    insert_events(db.client(), &rows).await.unwrap();

    let mut back: Vec<UsageEventRow> = read_query(db.client(), "SELECT ?fields FROM usage_events")
        .fetch_all()
        .await
        .unwrap();
    back.sort_by_key(|r| r.event_id);
    let mut sorted = rows.clone();
    sorted.sort_by_key(|r| r.event_id);
    assert_eq!(back.len(), sorted.len());
    for (got, want) in back.iter().zip(&sorted) {
        assert_eq!(got, want);
    }

    // And back to the domain type: equal to the originals but for sub-second time.
    for (row, original) in back.iter().zip({
        let mut o = records.clone();
        o.sort_by_key(|r| r.event_id);
        o
    }) {
        let record = UsageRecord::try_from(row).unwrap();
        let expected = UsageRecord {
            ts: original.ts.with_nanosecond(0).unwrap(),
            ..original
        };
        assert_eq!(record, expected);
    }
}

#[tokio::test]
async fn the_row_type_matches_the_table_column_for_column() {
    // With validation off a misordered struct would decode garbage; check names and order.
    let db = TestDb::new().await.unwrap();
    let columns = crate::support::tsv(db.client(), "DESCRIBE TABLE usage_events").await;
    let table: Vec<&str> = columns
        .lines()
        .filter_map(|l| l.split('\t').next())
        .collect();
    let fields: Vec<&str> =
        <UsageEventRow as tollgate_clickhouse::clickhouse::Row>::COLUMN_NAMES.to_vec();
    assert_eq!(table, fields);
}

/// Pre-encoded rows (the collector's spool format) land exactly as the crate's own serializer
/// would have written them.
#[tokio::test]
async fn encoded_rows_land_field_for_field() {
    let db = TestDb::new().await.unwrap();
    let mut records = fixture(300);
    for (i, r) in records.iter_mut().enumerate() {
        if i % 4 == 0 {
            r.tags.insert("team".into(), format!("équipe-{i}"));
            r.tags.insert("note".into(), "n".repeat(300));
        }
        if i % 7 == 0 {
            r.ttft_ms = None;
        }
    }
    let inserted_at = DateTime::from_timestamp_secs(1_790_000_000).unwrap();
    let encoded: Vec<EncodedEvent> = records.iter().map(EncodedEvent::from_record).collect();
    insert_encoded(db.client(), &encoded, "batch-enc", inserted_at, None)
        .await
        .unwrap();

    let mut back: Vec<UsageEventRow> = read_query(db.client(), "SELECT ?fields FROM usage_events")
        .fetch_all()
        .await
        .unwrap();
    back.sort_by_key(|r| r.event_id);
    let mut want: Vec<UsageEventRow> = records
        .iter()
        .map(|r| UsageEventRow::from_record(r, "batch-enc", inserted_at))
        .collect();
    want.sort_by_key(|r| r.event_id);
    assert_eq!(back.len(), want.len());
    for (got, want) in back.iter().zip(&want) {
        assert_eq!(got, want);
    }
}
