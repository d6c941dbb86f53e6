//! The sink's [`Store`] on ClickHouse: `usage_events` inserts tagged with the batch id, the
//! recovery lookup of a batch's stored `event_id`s, `ingest_batches` and `usage_rejects`
//! (tables in `clickhouse/migrations/0001` and `0004`; the row types below follow them).

use chrono::{DateTime, Timelike, Utc};
use std::collections::HashSet;

use serde::Serialize;
use tollgate_clickhouse::clickhouse::{self, Client, Row};
use tollgate_clickhouse::{read_query, EncodedEvent};
use uuid::Uuid;

use crate::ingest::Reject;
use crate::sink::{BatchInfo, InsertAttempt, Store, StoreError};

/// Distinct seconds per `stored_event_ids` query (bounds the statement's size).
const STORED_IDS_SECONDS_PER_QUERY: usize = 2_000;

/// ClickHouse exception codes that mean "these rows are wrong", not "try again later". Codes
/// a truncated request body also produces (27, 32, 33: a connection cut mid-insert, a server
/// stopping) are deliberately not here: they are retried.
const DATA_ERROR_CODES: &[u32] = &[
    38,  // CANNOT_PARSE_DATE
    41,  // CANNOT_PARSE_DATETIME
    53,  // TYPE_MISMATCH
    69,  // ARGUMENT_OUT_OF_BOUND
    70,  // CANNOT_CONVERT_TYPE
    72,  // CANNOT_PARSE_NUMBER
    117, // INCORRECT_DATA
    130, // CANNOT_READ_ARRAY_FROM_TEXT
    131, // TOO_LARGE_STRING_SIZE
    349, // CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
];

/// Splits ClickHouse failures into the sink's retry decision.
pub fn classify(e: tollgate_clickhouse::Error) -> StoreError {
    match e.server_code() {
        Some(code) if DATA_ERROR_CODES.contains(&code) => StoreError::Data(e.to_string()),
        _ => StoreError::Transient(e.to_string()),
    }
}

fn classify_raw(e: clickhouse::error::Error) -> StoreError {
    classify(tollgate_clickhouse::Error::ClickHouse(e))
}

/// Writes to the Tollgate database.
#[derive(Clone)]
pub struct ClickHouseStore {
    client: Client,
    source: String,
}

impl std::fmt::Debug for ClickHouseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseStore")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl ClickHouseStore {
    /// `source` names this collector in `ingest_batches` and `usage_rejects`.
    pub fn new(config: &crate::config::ClickHouseConfig, source: impl Into<String>) -> Self {
        let mut ch =
            tollgate_clickhouse::ClickHouseConfig::new(config.url.clone(), config.database.clone());
        ch.user = config.user();
        ch.password = config.password();
        ClickHouseStore {
            client: ch.client().with_compression(clickhouse::Compression::Lz4),
            source: source.into(),
        }
    }
}

#[derive(Row, serde::Deserialize)]
struct EventIdRow {
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: Uuid,
}

/// An `ingest_batches` row (migration 0004).
#[derive(Row, Serialize)]
struct IngestBatchRow<'a> {
    batch_id: &'a str,
    source: &'a str,
    records: u32,
    accepted: u32,
    duplicates: u32,
    rejected: u32,
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    min_ts: DateTime<Utc>,
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    max_ts: DateTime<Utc>,
    body_sha256: &'a str,
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    received_at: DateTime<Utc>,
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    inserted_at: DateTime<Utc>,
}

/// A `usage_rejects` row (migration 0004).
#[derive(Row, Serialize)]
struct RejectRow<'a> {
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    received_at: DateTime<Utc>,
    batch_id: &'a str,
    record_index: u32,
    org_id: String,
    field: &'a str,
    reason: &'a str,
    raw_record: &'a str,
    source: &'a str,
}

fn whole_second(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(0).unwrap_or(t)
}

impl Store for ClickHouseStore {
    async fn insert_events(
        &self,
        attempt: &InsertAttempt,
        rows: &[EncodedEvent],
    ) -> Result<(), StoreError> {
        tollgate_clickhouse::insert_encoded(
            &self.client,
            rows,
            &attempt.batch_id,
            Utc::now(),
            Some(&attempt.query_id()),
        )
        .await
        .map_err(classify)
    }

    async fn running_attempts(&self, batch_id: &str) -> Result<u64, StoreError> {
        read_query(
            &self.client,
            "SELECT count() FROM system.processes WHERE startsWith(query_id, ?)",
        )
        .bind(InsertAttempt::query_id_prefix(batch_id))
        .fetch_one::<u64>()
        .await
        .map_err(classify_raw)
    }

    async fn stored_event_ids(&self, seconds: &[i64]) -> Result<HashSet<Uuid>, StoreError> {
        // `ts IN (…)` over the batch's distinct seconds: the primary key (org_id, ts, event_id)
        // and the monthly partitions keep this to the granules of those seconds, whatever
        // the batch's spread (one record delayed by hours does not widen it to hours).
        let mut stored = HashSet::new();
        for chunk in seconds.chunks(STORED_IDS_SECONDS_PER_QUERY) {
            let placeholders = vec!["?"; chunk.len()].join(", ");
            let sql = format!("SELECT event_id FROM usage_events WHERE ts IN ({placeholders})");
            let mut query = read_query(&self.client, &sql);
            for s in chunk {
                query = query.bind(*s);
            }
            let rows = query
                .fetch_all::<EventIdRow>()
                .await
                .map_err(classify_raw)?;
            stored.extend(rows.into_iter().map(|r| r.event_id));
        }
        Ok(stored)
    }

    async fn record_batch(&self, batch: &BatchInfo) -> Result<(), StoreError> {
        let now = whole_second(Utc::now());
        let rows = u32::try_from(batch.rows).unwrap_or(u32::MAX);
        let source = format!("{} lsn {}-{}", self.source, batch.first_lsn, batch.last_lsn);
        let row = IngestBatchRow {
            batch_id: &batch.batch_id,
            source: &source,
            records: rows,
            accepted: rows,
            duplicates: 0,
            rejected: 0,
            min_ts: whole_second(batch.min_ts),
            max_ts: whole_second(batch.max_ts),
            body_sha256: "",
            received_at: now,
            inserted_at: now,
        };
        let mut insert = self
            .client
            .insert::<IngestBatchRow>("ingest_batches")
            .await
            .map_err(classify_raw)?;
        insert.write(&row).await.map_err(classify_raw)?;
        insert.end().await.map_err(classify_raw)
    }

    async fn insert_rejects(&self, rejects: &[Reject]) -> Result<(), StoreError> {
        if rejects.is_empty() {
            return Ok(());
        }
        let mut insert = self
            .client
            .insert::<RejectRow>("usage_rejects")
            .await
            .map_err(classify_raw)?;
        for r in rejects {
            let field = r.reason.split_once(':').map_or("", |(f, _)| f);
            let org_id = serde_json::from_str::<serde_json::Value>(&r.raw)
                .ok()
                .and_then(|v| v.get("org_id").and_then(|o| o.as_str()).map(str::to_string))
                .unwrap_or_default();
            insert
                .write(&RejectRow {
                    received_at: whole_second(r.received_at),
                    batch_id: "",
                    record_index: u32::try_from(r.index).unwrap_or(u32::MAX),
                    org_id,
                    field: if field.contains(' ') { "" } else { field },
                    reason: &r.reason,
                    raw_record: &r.raw,
                    source: &self.source,
                })
                .await
                .map_err(classify_raw)?;
        }
        insert.end().await.map_err(classify_raw)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        read_query(&self.client, "SELECT 1")
            .fetch_one::<u8>()
            .await
            .map(|_| ())
            .map_err(classify_raw)
    }
}
