//! Rollups that cannot drift, and no record stored twice: the integrity job's checks and
//! repairs. [`run`] does one pass; dashboard-api runs it on a schedule in one instance (the
//! jobs lease), and records what it did in `integrity_repairs` (migration 0009).
//!
//! # What can make the tables disagree, and what a pass does about it
//!
//! - **A rollup short of (or past) its raw rows.** A materialized view is written by the same
//!   INSERT as the raw rows, *after* them, and not atomically: a ClickHouse crash (SIGKILL, OOM,
//!   power) between the two leaves raw rows whose rollup rows were never written, and the
//!   collector, which finds the raw rows stored, never sends them again. A pass compares every
//!   rollup ([`ROLLUPS`]) with `usage_events` per org and bucket (requests, cost, input and
//!   output tokens) over the last `lookback`, looks again after [`CONFIRM_AFTER`], and rebuilds
//!   each bucket that is off by the same amounts both times ([`rebuild_bucket`]). An INSERT in
//!   flight shows its raw rows a moment before its rollup rows: that difference changes or goes
//!   between the looks, while a torn INSERT's stays, also in a bucket that keeps receiving
//!   calls (today's day).
//! - **An event stored twice.** The collectors check ClickHouse before every insert (see
//!   `collector/src/sink.rs`), which leaves one gap: two collectors inserting the same
//!   re-posted record at the same moment. A pass looks for hours whose row count differs from
//!   their distinct `event_id`s, keeps one copy of each duplicated event (the copy of the first
//!   batch; see `remove_duplicates` for copies of one batch), and then rebuilds the rollup
//!   buckets the extra copies inflated through the check above. Deleting rows is a mutation:
//!   it rewrites the parts of the hour's month, so it is for the rare duplicate only.
//!
//! # How a bucket is rebuilt, and its race
//!
//! 1. The view's own query (read from the migration that defines the view, so the two cannot
//!    differ) over the bucket's raw rows fills the rollup's `*_repair` staging table.
//! 2. `ALTER TABLE <rollup> DELETE` of the bucket; the pass waits until the mutation is done.
//!    A mutation rewrites only the parts that existed when it was issued: rows the views add
//!    meanwhile survive it.
//! 3. The staged rows are inserted into the rollup, and the bucket is compared again.
//!
//! Readers see the bucket empty between 2 and 3 (an under-count for seconds, never a double
//! count: a budget guard resyncing then keeps its own, higher, spend). A row inserted between
//! 1 and 2 is missing from the rebuilt bucket; the comparison in 3 then records
//! `still_different` and the next pass rebuilds the bucket again.

use chrono::{DateTime, Timelike, Utc};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::events::{insert_events, UsageEventRow};
use crate::migrate::MIGRATION_FILES;
use crate::read_query;

const RAW_BUCKETS: &str = include_str!("../queries/integrity/raw_buckets.sql");
const ROLLUP_BUCKETS: &str = include_str!("../queries/integrity/rollup_buckets.sql");

/// How long a pass waits before it checks a differing bucket again.
pub const CONFIRM_AFTER: Duration = Duration::from_secs(2);
/// How long a pass waits for a mutation (a bucket's delete, a duplicate's removal).
pub const MUTATION_PATIENCE: Duration = Duration::from_secs(300);

/// A rollup the job keeps equal to the raw rows.
#[derive(Debug, Clone, Copy)]
pub struct Rollup {
    pub table: &'static str,
    /// The materialized view that feeds it (its query rebuilds a bucket).
    pub view: &'static str,
    /// The bucket of a raw row (`ts`).
    pub raw_bucket: &'static str,
    /// The bucket's start in unix seconds, from the rollup's own column.
    pub rollup_bucket: &'static str,
    /// Bucket width in seconds.
    pub width: i64,
}

/// Every rollup fed from `usage_events`.
pub const ROLLUPS: &[Rollup] = &[
    Rollup {
        table: "usage_hourly",
        view: "usage_hourly_mv",
        raw_bucket: "toStartOfHour(ts)",
        rollup_bucket: "toUInt32(hour)",
        width: 3_600,
    },
    Rollup {
        table: "usage_daily",
        view: "usage_daily_mv",
        raw_bucket: "toStartOfDay(ts)",
        rollup_bucket: "toUInt32(toUInt32(day) * 86400)",
        width: 86_400,
    },
    Rollup {
        table: "org_model_daily",
        view: "org_model_daily_mv",
        raw_bucket: "toStartOfDay(ts)",
        rollup_bucket: "toUInt32(toUInt32(day) * 86400)",
        width: 86_400,
    },
    Rollup {
        table: "org_daily",
        view: "org_daily_mv",
        raw_bucket: "toStartOfDay(ts)",
        rollup_bucket: "toUInt32(toUInt32(day) * 86400)",
        width: 86_400,
    },
];

/// One org's bucket: what is compared.
#[derive(Debug, Clone, PartialEq, Eq, Row, Deserialize)]
pub struct BucketTotals {
    pub org_id: String,
    /// Start of the bucket, unix seconds (UTC).
    pub bucket: u32,
    pub requests: u64,
    /// `Decimal(38,9)` USD as nano-USD.
    pub cost_nusd: i128,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// A bucket where a rollup and the raw rows disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub table: &'static str,
    pub org_id: String,
    pub bucket: u32,
    /// What the raw rows say (zero when the rollup has a bucket the raw rows do not).
    pub raw: Totals,
    pub rollup: Totals,
}

impl Mismatch {
    /// Raw minus rollup, per compared figure.
    pub fn offset(&self) -> (i128, i128, i128, i128) {
        (
            i128::from(self.raw.requests) - i128::from(self.rollup.requests),
            self.raw.cost_nusd - self.rollup.cost_nusd,
            i128::from(self.raw.input_tokens) - i128::from(self.rollup.input_tokens),
            i128::from(self.raw.output_tokens) - i128::from(self.rollup.output_tokens),
        )
    }
}

/// The compared figures of a bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub requests: u64,
    pub cost_nusd: i128,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl From<&BucketTotals> for Totals {
    fn from(b: &BucketTotals) -> Self {
        Totals {
            requests: b.requests,
            cost_nusd: b.cost_nusd,
            input_tokens: b.input_tokens,
            output_tokens: b.output_tokens,
        }
    }
}

/// What one pass found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Buckets compared, over every rollup.
    pub buckets_checked: usize,
    /// Buckets that differed twice and were rebuilt.
    pub buckets_repaired: usize,
    /// Rebuilt buckets that still differed afterwards (repaired again next pass).
    pub buckets_still_different: usize,
    /// Events that were stored more than once and now are stored once.
    pub duplicate_events_removed: usize,
}

/// One pass over the last `lookback` (at least the current bucket of each rollup).
pub async fn run(client: &Client, lookback: Duration) -> Result<PassReport> {
    let now = Utc::now().timestamp();
    let since = now - i64::try_from(lookback.as_secs()).unwrap_or(i64::MAX / 2);
    let mut report = PassReport {
        duplicate_events_removed: remove_duplicates(client, since, now).await?,
        ..PassReport::default()
    };
    for rollup in ROLLUPS {
        let from = since.div_euclid(rollup.width) * rollup.width;
        let (checked, first) = compare(client, rollup, from).await?;
        report.buckets_checked += checked;
        if first.is_empty() {
            continue;
        }
        tokio::time::sleep(CONFIRM_AFTER).await;
        let (_, again) = compare(client, rollup, from).await?;
        let confirmed: Vec<&Mismatch> = again
            .iter()
            .filter(|m| first.iter().any(|f| same_difference(f, m)))
            .collect();
        for m in confirmed {
            let after = rebuild_bucket(client, rollup, &m.org_id, m.bucket).await?;
            let outcome = if after.is_none() {
                report.buckets_repaired += 1;
                "repaired"
            } else {
                report.buckets_still_different += 1;
                "still_different"
            };
            tracing::warn!(
                table = m.table, org_id = %m.org_id, bucket = m.bucket,
                raw_requests = m.raw.requests, rollup_requests = m.rollup.requests,
                outcome, "integrity: a rollup bucket differed from the raw rows; rebuilt it"
            );
            record(client, "rollup", m, outcome).await?;
        }
    }
    Ok(report)
}

/// The same bucket, off by the same amounts: a difference that new rows did not change. An
/// INSERT in flight (raw part written, view parts not yet) makes a difference that comes and
/// goes; a torn INSERT or a duplicate makes one that stays while new calls keep arriving.
fn same_difference(a: &Mismatch, b: &Mismatch) -> bool {
    a.table == b.table && a.org_id == b.org_id && a.bucket == b.bucket && a.offset() == b.offset()
}

/// The buckets of `rollup` from `from` on, and those that differ from the raw rows.
pub async fn compare(
    client: &Client,
    rollup: &Rollup,
    from: i64,
) -> Result<(usize, Vec<Mismatch>)> {
    let raw = read_query(client, &RAW_BUCKETS.replace("{bucket}", rollup.raw_bucket))
        .bind(from)
        .fetch_all::<BucketTotals>()
        .await?;
    let sql = ROLLUP_BUCKETS
        .replace("{rollup}", rollup.table)
        .replace("{bucket}", rollup.rollup_bucket);
    let rolled = read_query(client, &sql)
        .bind(from)
        .fetch_all::<BucketTotals>()
        .await?;
    let mut by_key: BTreeMap<(String, u32), (Totals, Totals)> = BTreeMap::new();
    for b in &raw {
        by_key.entry((b.org_id.clone(), b.bucket)).or_default().0 = b.into();
    }
    for b in &rolled {
        by_key.entry((b.org_id.clone(), b.bucket)).or_default().1 = b.into();
    }
    let checked = by_key.len();
    let mismatches = by_key
        .into_iter()
        .filter(|(_, (raw, rollup))| raw != rollup)
        .map(|((org_id, bucket), (raw, rolled))| Mismatch {
            table: rollup.table,
            org_id,
            bucket,
            raw,
            rollup: rolled,
        })
        .collect();
    Ok((checked, mismatches))
}

/// Rebuilds one org's bucket of `rollup` from the raw rows (module docs: steps and race).
/// Returns the bucket's mismatch afterwards, `None` when it now agrees.
pub async fn rebuild_bucket(
    client: &Client,
    rollup: &Rollup,
    org_id: &str,
    bucket: u32,
) -> Result<Option<Mismatch>> {
    let start = i64::from(bucket);
    rebuild_range(client, rollup, org_id, start, start + rollup.width).await?;
    let (_, after) = compare(client, rollup, start).await?;
    Ok(after
        .into_iter()
        .find(|m| m.org_id == org_id && m.bucket == bucket))
}

/// Rebuilds one org's buckets of `rollup` in `[start, end)` (unix seconds, bucket starts) from
/// the raw rows, as [`rebuild_bucket`] does one: one staging fill, one delete mutation, one
/// insert. The reprice job rebuilds the buckets its updates touched this way.
pub async fn rebuild_range(
    client: &Client,
    rollup: &Rollup,
    org_id: &str,
    start: i64,
    end: i64,
) -> Result<()> {
    // One rebuild at a time in this process: the integrity pass and a reprice share the
    // staging tables.
    static REBUILDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one_at_a_time = REBUILDING.lock().await;
    let staging = format!("{}_repair", rollup.table);
    let view_query = view_query(rollup.view)?;
    let filtered = view_query.replacen(
        "FROM usage_events",
        "FROM (SELECT * FROM usage_events WHERE org_id = ? AND ts >= toDateTime(?, 'UTC') AND ts < toDateTime(?, 'UTC'))",
        1,
    );
    client
        .query(&format!("TRUNCATE TABLE {staging}"))
        .execute()
        .await?;
    client
        .query(&format!("INSERT INTO {staging} {filtered}"))
        .bind(org_id)
        .bind(start)
        .bind(end)
        .execute()
        .await?;
    client
        .query(&format!(
            "ALTER TABLE {} DELETE WHERE org_id = ? AND {bucket} >= ? AND {bucket} < ?",
            mutation_target(client, rollup.table).await?,
            bucket = rollup.rollup_bucket
        ))
        .bind(org_id)
        .bind(start)
        .bind(end)
        .execute()
        .await?;
    wait_for_mutations(client, rollup.table).await?;
    client
        .query(&format!(
            "INSERT INTO {} SELECT * FROM {staging}",
            rollup.table
        ))
        .execute()
        .await?;
    client
        .query(&format!("TRUNCATE TABLE {staging}"))
        .execute()
        .await?;
    Ok(())
}

/// The `SELECT` of materialized view `view`, from the latest migration that creates it (a
/// later migration may drop and re-create a view with a new query).
pub fn view_query(view: &str) -> Result<String> {
    let head = format!("CREATE MATERIALIZED VIEW IF NOT EXISTS {view} TO ");
    for (file, sql) in MIGRATION_FILES.iter().rev() {
        if let Some(at) = sql.find(&head) {
            let rest = &sql[at..];
            let select = rest
                .find(" AS\n")
                .map(|i| &rest[i + 4..])
                .and_then(|s| s.find(';').map(|end| s[..end].trim().to_string()));
            return select.ok_or_else(|| Error::InvalidMigration {
                file: (*file).to_string(),
                reason: format!("the view {view} has no `AS SELECT …;` the integrity job can read"),
            });
        }
    }
    Err(Error::InvalidMigration {
        file: "(none)".into(),
        reason: format!("no migration creates the view {view}"),
    })
}

/// Waits until `table` has no mutation left to apply.
/// Where a mutation of a usage table runs: `table` on one server; on a cluster (where `table`
/// is the `Distributed` table over `table_local`, see `migrate::render`) `table_local ON
/// CLUSTER <its cluster>`, read from the Distributed table's own definition.
pub(crate) async fn mutation_target(client: &Client, table: &str) -> Result<String> {
    let engine_full: Option<String> = read_query(
        client,
        "SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = ? \
         AND engine = 'Distributed'",
    )
    .bind(table)
    .fetch_optional::<String>()
    .await?;
    Ok(match engine_full.as_deref().and_then(distributed_cluster) {
        Some(cluster) => format!("{table}_local ON CLUSTER {cluster}"),
        None => table.to_string(),
    })
}

/// The cluster of `Distributed('c', 'db', t, key)` (quoted or not).
fn distributed_cluster(engine_full: &str) -> Option<String> {
    let args = engine_full.strip_prefix("Distributed(")?;
    let first = args.split(',').next()?.trim().trim_matches('\'');
    crate::migrate::is_plain_name(first).then(|| first.to_string())
}

/// Waits until no mutation of `table` is pending — on every host of its cluster, if it has one.
pub(crate) async fn wait_for_mutations(client: &Client, table: &str) -> Result<()> {
    let target = mutation_target(client, table).await?;
    if let Some((local, cluster)) = target.split_once(" ON CLUSTER ") {
        for host in crate::migrate::cluster_hosts(client, cluster).await? {
            let mutations = format!("remote('{host}', system.mutations)");
            wait_for_mutations_at(client, &mutations, local).await?;
        }
        return Ok(());
    }
    wait_for_mutations_at(client, "system.mutations", table).await
}

async fn wait_for_mutations_at(client: &Client, mutations: &str, table: &str) -> Result<()> {
    let started = Instant::now();
    loop {
        let pending = read_query(
            client,
            &format!(
                "SELECT count() FROM {mutations} WHERE database = currentDatabase() AND table = ? AND is_done = 0"
            ),
        )
        .bind(table)
        .fetch_one::<u64>()
        .await?;
        if pending == 0 {
            return Ok(());
        }
        if started.elapsed() > MUTATION_PATIENCE {
            return Err(Error::Integrity(format!(
                "{pending} mutation(s) of {table} not done after {} s",
                MUTATION_PATIENCE.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[derive(Debug, Row, Deserialize)]
struct HourCount {
    rows: u64,
    ids: u64,
}

/// An event stored more than once, and the batches its copies came in.
#[derive(Debug, Row, Deserialize)]
struct Copies {
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: Uuid,
    batches: Vec<String>,
}

/// Suffix of the batch id a kept copy is re-inserted under (copies from one batch only).
const KEPT_SUFFIX: &str = "/kept";

/// Keeps one copy of every event stored more than once since `since`, hour by hour (one
/// hour's ids at a time bound the memory it takes). Returns how many events had copies.
///
/// Copies from different batches (two collectors) are told apart by `batch_id`: the copies
/// outside the first batch are deleted, nothing is re-inserted. Copies from one batch cannot
/// be told apart: one is first inserted again under `<batch_id>/kept`, then the batch's
/// copies are deleted — so a crash in between leaves a copy too many (removed next pass),
/// never none.
async fn remove_duplicates(client: &Client, since: i64, now: i64) -> Result<usize> {
    let mut removed = 0;
    let mut hour = since.div_euclid(3_600) * 3_600;
    while hour <= now {
        let (from, to) = (hour, hour + 3_600);
        hour = to;
        let count = read_query(
            client,
            "SELECT count() AS rows, uniqExact(event_id) AS ids FROM usage_events \
             WHERE ts >= toDateTime(?, 'UTC') AND ts < toDateTime(?, 'UTC')",
        )
        .bind(from)
        .bind(to)
        .fetch_one::<HourCount>()
        .await?;
        if count.rows == count.ids {
            continue;
        }
        let copies = read_query(
            client,
            "SELECT event_id, groupArray(batch_id) AS batches FROM usage_events \
             WHERE ts >= toDateTime(?, 'UTC') AND ts < toDateTime(?, 'UTC') \
             GROUP BY event_id HAVING count() > 1",
        )
        .bind(from)
        .bind(to)
        .fetch_all::<Copies>()
        .await?;
        if copies.is_empty() {
            continue;
        }
        // (event, batch) pairs to delete, and events whose copies all share one batch.
        let mut other_batches: Vec<(Uuid, String)> = Vec::new();
        let mut one_batch: Vec<(Uuid, String)> = Vec::new();
        for c in &copies {
            let mut batches = c.batches.clone();
            batches.sort();
            batches.dedup();
            match batches.split_first() {
                Some((only, [])) => one_batch.push((c.event_id, only.clone())),
                Some((_keep, rest)) => {
                    other_batches.extend(rest.iter().map(|b| (c.event_id, b.clone())));
                }
                None => {}
            }
        }
        if !one_batch.is_empty() {
            let ids = uuid_list(one_batch.iter().map(|(id, _)| id));
            let mut keep = read_query(
                client,
                &format!(
                    "SELECT ?fields FROM usage_events WHERE ts >= toDateTime(?, 'UTC') \
                     AND ts < toDateTime(?, 'UTC') AND event_id IN ({ids}) LIMIT 1 BY event_id"
                ),
            )
            .bind(from)
            .bind(to)
            .fetch_all::<UsageEventRow>()
            .await?;
            for row in &mut keep {
                row.batch_id.push_str(KEPT_SUFFIX);
            }
            insert_events(client, &keep).await?;
            delete_copies(client, from, to, &one_batch).await?;
        }
        if !other_batches.is_empty() {
            delete_copies(client, from, to, &other_batches).await?;
        }
        wait_for_mutations(client, "usage_events").await?;
        tracing::warn!(
            hour = from,
            events = copies.len(),
            rows = count.rows,
            distinct = count.ids,
            "integrity: events stored more than once; kept one copy of each"
        );
        let m = Mismatch {
            table: "usage_events",
            org_id: String::new(),
            bucket: u32::try_from(from).unwrap_or(0),
            raw: Totals {
                requests: count.ids,
                ..Totals::default()
            },
            rollup: Totals {
                requests: count.rows,
                ..Totals::default()
            },
        };
        record(client, "duplicate", &m, "repaired").await?;
        removed += copies.len();
    }
    Ok(removed)
}

/// Deletes the rows of these (event, batch) pairs within the hour (a mutation).
async fn delete_copies(
    client: &Client,
    from: i64,
    to: i64,
    pairs: &[(Uuid, String)],
) -> Result<()> {
    let target = mutation_target(client, "usage_events").await?;
    for chunk in pairs.chunks(1_000) {
        let placeholders = vec!["(toUUID(?), ?)"; chunk.len()].join(", ");
        let mut q = client.query(&format!(
            "ALTER TABLE {target} DELETE WHERE ts >= toDateTime(?, 'UTC') \
             AND ts < toDateTime(?, 'UTC') AND (event_id, batch_id) IN ({placeholders})"
        ));
        q = q.bind(from).bind(to);
        for (id, batch) in chunk {
            q = q.bind(id.to_string()).bind(batch.as_str());
        }
        q.execute().await?;
    }
    Ok(())
}

/// `toUUID('…'), …` for an `IN` list (ids are our own parsed UUIDs: nothing to escape).
fn uuid_list<'a>(ids: impl Iterator<Item = &'a Uuid>) -> String {
    ids.map(|id| format!("toUUID('{id}')"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An `integrity_repairs` row (migration 0009), column for column.
#[derive(Debug, Row, Serialize)]
struct RepairRow<'a> {
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    at: DateTime<Utc>,
    kind: &'a str,
    table_name: &'a str,
    org_id: &'a str,
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    bucket: DateTime<Utc>,
    raw_requests: u64,
    rollup_requests: u64,
    raw_cost_nusd: i128,
    rollup_cost_nusd: i128,
    outcome: &'a str,
}

async fn record(client: &Client, kind: &str, m: &Mismatch, outcome: &str) -> Result<()> {
    let now = Utc::now();
    let row = RepairRow {
        at: now.with_nanosecond(0).unwrap_or(now),
        kind,
        table_name: m.table,
        org_id: &m.org_id,
        bucket: DateTime::from_timestamp_secs(i64::from(m.bucket)).unwrap_or(DateTime::UNIX_EPOCH),
        raw_requests: m.raw.requests,
        rollup_requests: m.rollup.requests,
        raw_cost_nusd: m.raw.cost_nusd,
        rollup_cost_nusd: m.rollup.cost_nusd,
        outcome,
    };
    let mut insert = client.insert::<RepairRow>("integrity_repairs").await?;
    insert.write(&row).await?;
    insert.end().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rollup_view_query_is_found_and_reads_usage_events_once() {
        for r in ROLLUPS {
            let q = view_query(r.view).unwrap();
            assert!(q.starts_with("SELECT"), "{}: {q}", r.view);
            assert_eq!(q.matches("FROM usage_events").count(), 1, "{}", r.view);
            assert!(q.contains("GROUP BY"), "{}", r.view);
        }
        assert!(view_query("no_such_mv").is_err());
    }
}
