//! Repricing: stored costs recomputed with the price book in force now, raw rows and rollups
//! alike. Run by `POST /api/v1/admin/reprice` and `tollgate-jobs reprice`; each run is kept in
//! `reprice_runs` (migration 0014).
//!
//! # What a run does
//!
//! 1. Reads the raw rows of `[from, to)` (optionally one provider and/or requested model) an
//!    hour at a time, and prices each with `usage_core::cost` — the function the edge's own
//!    pricing is built on — at the row's timestamp: the entry in force then. Costs the provider
//!    reported (`cost_source = provider`, OpenRouter's `usage.cost`) are what was billed and
//!    stay; unpriced rows whose model now has a price become priced; a row whose model has
//!    lost its price keeps its cost.
//! 2. Updates the rows whose cost, cost source or pricing version differ, by `event_id`, with
//!    `ALTER TABLE usage_events UPDATE` (a mutation: applied per part, atomically; a crash
//!    leaves a part either old or new, and the next run finishes the job), and waits for it.
//! 3. Rebuilds, per org, every rollup bucket the changed rows fall in from the raw rows
//!    (`integrity::rebuild_range`, the integrity job's repair), then compares those buckets
//!    with the raw rows and reports any that differ.
//!
//! A second run over the same range finds nothing to change and changes nothing. A call
//! recorded while a bucket is rebuilt is missing from it until the integrity job's next pass
//! (the race `integrity` documents); repricing past days, the common case, has none.

use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, BTreeSet};

use clickhouse::{Client, Row};
use serde::Serialize;
use usage_core::{PriceTable, UsageRecord};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::events::UsageEventRow;
use crate::integrity::{self, ROLLUPS};
use crate::read_query;
use crate::version::now_second;

/// Rows updated by one mutation (its SQL carries two values per row).
const ROWS_PER_MUTATION: usize = 2_000;

/// What to reprice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepriceRequest {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Only this provider's calls.
    pub provider: Option<String>,
    /// Only calls that asked for this model.
    pub model: Option<String>,
    /// Who asked (an admin token's id, or `cli`).
    pub requested_by: String,
}

/// What a run found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RepriceReport {
    pub run_id: Uuid,
    pub pricing_version: String,
    /// Rows in the range that the price book prices (provider-reported costs excluded).
    pub rows_seen: u64,
    pub rows_changed: u64,
    /// Their summed cost before and after, in nano-USD.
    pub cost_before_nusd: i128,
    pub cost_after_nusd: i128,
    /// Rows that were unpriced and now have a price.
    pub rows_newly_priced: u64,
    /// Rollup buckets rebuilt, over every rollup.
    pub buckets_rebuilt: u64,
    /// Rebuilt buckets that still differ from the raw rows (a call recorded meanwhile; the
    /// integrity job repairs them).
    pub buckets_still_different: u64,
}

/// One row's new cost.
struct Change {
    event_id: Uuid,
    org_id: String,
    ts: i64,
    cost_nusd: i64,
    cost_source: &'static str,
    pricing_version: String,
}

/// Reprices `req`'s range with `table` (see the module docs).
pub async fn reprice(
    client: &Client,
    table: &PriceTable,
    req: &RepriceRequest,
) -> Result<RepriceReport> {
    if req.to <= req.from {
        return Err(Error::Integrity(format!(
            "reprice: `to` ({}) must be after `from` ({})",
            req.to, req.from
        )));
    }
    let started_at = now_second();
    let mut report = RepriceReport {
        run_id: Uuid::new_v4(),
        pricing_version: table.version().to_string(),
        ..RepriceReport::default()
    };
    let mut changes = Vec::new();
    let (from, to) = (req.from.timestamp(), req.to.timestamp());
    let mut at = from;
    while at < to {
        let end = (at - at.rem_euclid(3_600) + 3_600).min(to);
        for row in rows(client, req, at, end).await? {
            let record =
                UsageRecord::try_from(&row).map_err(|e| Error::Integrity(e.to_string()))?;
            let priced = usage_core::cost(&record, table);
            report.rows_seen += 1;
            let unchanged = priced.cost == record.cost_nusd
                && priced.source == record.cost_source
                && priced.pricing_version == record.pricing_version;
            if unchanged {
                continue;
            }
            report.rows_changed += 1;
            report.cost_before_nusd += i128::from(record.cost_nusd.get());
            report.cost_after_nusd += i128::from(priced.cost.get());
            if record.cost_source == usage_core::CostSource::Unpriced
                && priced.source == usage_core::CostSource::PriceTable
            {
                report.rows_newly_priced += 1;
            }
            changes.push(Change {
                event_id: record.event_id,
                org_id: record.org_id,
                ts: row.ts.timestamp(),
                cost_nusd: priced.cost.get(),
                cost_source: priced.source.as_str(),
                pricing_version: priced.pricing_version,
            });
        }
        at = end;
    }
    for chunk in changes.chunks(ROWS_PER_MUTATION) {
        update(client, chunk, from, to).await?;
    }
    if !changes.is_empty() {
        integrity::wait_for_mutations(client, "usage_events").await?;
    }
    for rollup in ROLLUPS {
        // Per org, the span of buckets the changes fall in.
        let mut spans: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
        let mut buckets: BTreeSet<(&str, i64)> = BTreeSet::new();
        for c in &changes {
            let bucket = c.ts - c.ts.rem_euclid(rollup.width);
            buckets.insert((c.org_id.as_str(), bucket));
            let span = spans.entry(&c.org_id).or_insert((bucket, bucket));
            span.0 = span.0.min(bucket);
            span.1 = span.1.max(bucket);
        }
        for (org, (first, last)) in &spans {
            integrity::rebuild_range(client, rollup, org, *first, *last + rollup.width).await?;
        }
        report.buckets_rebuilt += buckets.len() as u64;
        if let Some(first) = spans.values().map(|s| s.0).min() {
            let (_, mismatches) = integrity::compare(client, rollup, first).await?;
            report.buckets_still_different += mismatches
                .iter()
                .filter(|m| buckets.contains(&(m.org_id.as_str(), i64::from(m.bucket))))
                .count() as u64;
        }
    }
    record_run(client, req, &report, started_at).await?;
    tracing::info!(
        run_id = %report.run_id, rows_seen = report.rows_seen, rows_changed = report.rows_changed,
        cost_before_nusd = %report.cost_before_nusd, cost_after_nusd = %report.cost_after_nusd,
        pricing_version = %report.pricing_version, "reprice: done"
    );
    Ok(report)
}

/// The rows of `[from, to)` a reprice considers.
async fn rows(
    client: &Client,
    req: &RepriceRequest,
    from: i64,
    to: i64,
) -> Result<Vec<UsageEventRow>> {
    let mut sql = String::from(
        "SELECT ?fields FROM usage_events WHERE ts >= toDateTime(?, 'UTC') \
         AND ts < toDateTime(?, 'UTC') AND cost_source != 'provider'",
    );
    if req.provider.is_some() {
        sql += " AND provider = ?";
    }
    if req.model.is_some() {
        sql += " AND model_requested = ?";
    }
    let mut q = read_query(client, &sql).bind(from).bind(to);
    if let Some(p) = &req.provider {
        q = q.bind(p.as_str());
    }
    if let Some(m) = &req.model {
        q = q.bind(m.as_str());
    }
    Ok(q.fetch_all::<UsageEventRow>().await?)
}

/// One mutation setting each changed row's cost, source and version by `event_id`.
async fn update(client: &Client, changes: &[Change], from: i64, to: i64) -> Result<()> {
    let ids: Vec<String> = changes.iter().map(|c| c.event_id.to_string()).collect();
    let costs: Vec<String> = changes
        .iter()
        .map(|c| usage_core::Nanos::new(c.cost_nusd).to_string())
        .collect();
    let sources: Vec<&str> = changes.iter().map(|c| c.cost_source).collect();
    let versions: Vec<&str> = changes.iter().map(|c| c.pricing_version.as_str()).collect();
    let target = integrity::mutation_target(client, "usage_events").await?;
    client
        .query(&format!(
            "ALTER TABLE {target} UPDATE \
             cost_nusd = toDecimal64(transform(toString(event_id), ?, ?, toString(cost_nusd)), 9), \
             cost_source = transform(toString(event_id), ?, ?, toString(cost_source)), \
             pricing_version = transform(toString(event_id), ?, ?, toString(pricing_version)) \
             WHERE ts >= toDateTime(?, 'UTC') AND ts < toDateTime(?, 'UTC') \
             AND has(?, toString(event_id))"
        ))
        .bind(&ids)
        .bind(&costs)
        .bind(&ids)
        .bind(&sources)
        .bind(&ids)
        .bind(&versions)
        .bind(from)
        .bind(to)
        .bind(&ids)
        .execute()
        .await?;
    Ok(())
}

#[derive(Row, Serialize)]
struct RepriceRunRow {
    #[serde(with = "clickhouse::serde::uuid")]
    run_id: Uuid,
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    started_at: DateTime<Utc>,
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    finished_at: DateTime<Utc>,
    requested_by: String,
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    from_ts: DateTime<Utc>,
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    to_ts: DateTime<Utc>,
    provider: String,
    model: String,
    pricing_version: String,
    rows_seen: u64,
    rows_changed: u64,
    cost_before: i64,
    cost_after: i64,
}

async fn record_run(
    client: &Client,
    req: &RepriceRequest,
    report: &RepriceReport,
    started_at: DateTime<Utc>,
) -> Result<()> {
    let clamp = |n: i128| i64::try_from(n).unwrap_or(i64::MAX);
    let mut insert = client.insert::<RepriceRunRow>("reprice_runs").await?;
    insert
        .write(&RepriceRunRow {
            run_id: report.run_id,
            started_at,
            finished_at: now_second(),
            requested_by: req.requested_by.clone(),
            from_ts: req.from,
            to_ts: req.to,
            provider: req.provider.clone().unwrap_or_default(),
            model: req.model.clone().unwrap_or_default(),
            pricing_version: report.pricing_version.clone(),
            rows_seen: report.rows_seen,
            rows_changed: report.rows_changed,
            cost_before: clamp(report.cost_before_nusd),
            cost_after: clamp(report.cost_after_nusd),
        })
        .await?;
    insert.end().await?;
    Ok(())
}
