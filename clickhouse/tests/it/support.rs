//! Shared helpers: fixtures and text results.

use chrono::TimeDelta;
use tollgate_clickhouse::clickhouse::Client;
use tollgate_clickhouse::synthetic::{Shape, Synthetic};
use tollgate_clickhouse::{insert_events, UsageEventRow};
use usage_core::utc;
use usage_core::UsageRecord;

/// The rollup fixture: three orgs over six days across a month boundary, every class covered.
pub fn fixture(count: u64) -> Vec<UsageRecord> {
    let shape = Shape {
        orgs: 3,
        users_per_org: 9,
        apps_per_org: 3,
        start: utc(2026, 1, 29, 0, 0, 0),
        span: TimeDelta::days(6),
    };
    Synthetic::new(42, count, shape).collect()
}

/// Inserts `records` in `batches` separate INSERTs (so the rollups get several parts per key).
pub async fn insert_in_batches(client: &Client, records: &[UsageRecord], batches: usize) {
    let rows: Vec<UsageEventRow> = records.iter().map(UsageEventRow::from).collect();
    let size = rows.len().div_ceil(batches.max(1)).max(1);
    for chunk in rows.chunks(size) {
        insert_events(client, chunk).await.unwrap();
    }
}

/// The result of `sql` as TSV text.
pub async fn tsv(client: &Client, sql: &str) -> String {
    let mut cursor = client
        .query(sql)
        .with_setting("wait_end_of_query", "1")
        .fetch_bytes("TabSeparated")
        .unwrap();
    let bytes = cursor.collect().await.unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}
