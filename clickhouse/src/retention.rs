//! Retention: dropping whole monthly partitions, the one mechanism that is instant and works on
//! every server version (TTL may come later in a gated migration for modern servers).
//!
//! A table kept for N months keeps the current (partial) month and the N full months before it:
//! on 2026-11-17 with N = 3, partitions 202608…202611 stay and 202607 and older go. So at
//! least N months of history always remain.

use chrono::{Datelike, NaiveDate};
use clickhouse::sql::Identifier;
use clickhouse::{Client, Row};
use serde::Deserialize;

use crate::config::read_query;
use crate::error::{Error, Result};

/// How long each family of tables is kept, in months. `None` keeps it forever. Tables that are
/// not partitioned by month (alert rules and alerts, budgets, keys, tokens, the reconciliation
/// and the lease) are small and kept: they hold configuration and its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// `usage_events` (and the collector's `ingest_batches` / `usage_rejects`, which describe it).
    pub raw_months: Option<u32>,
    /// `usage_hourly`.
    pub hourly_months: Option<u32>,
    /// `usage_daily`.
    pub daily_months: Option<u32>,
    /// `org_daily` and `org_model_daily` (what the overview and the provider pages read).
    pub org_rollup_months: Option<u32>,
    /// `provider_credits` (balance observations).
    pub credits_months: Option<u32>,
    /// `notification_deliveries` and `integrity_repairs` (what the jobs did).
    pub job_log_months: Option<u32>,
}

impl Default for RetentionPolicy {
    /// Raw events 13 months (a year-over-year comparison of last month still works), hourly
    /// 13 months, daily rollups forever, balances and the jobs' logs 13 months.
    fn default() -> Self {
        RetentionPolicy {
            raw_months: Some(13),
            hourly_months: Some(13),
            daily_months: None,
            org_rollup_months: None,
            credits_months: Some(13),
            job_log_months: Some(13),
        }
    }
}

impl RetentionPolicy {
    /// Every monthly-partitioned table and how long it is kept.
    pub fn tables(&self) -> [(&'static str, Option<u32>); 10] {
        [
            ("usage_events", self.raw_months),
            ("ingest_batches", self.raw_months),
            ("usage_rejects", self.raw_months),
            ("usage_hourly", self.hourly_months),
            ("usage_daily", self.daily_months),
            ("org_daily", self.org_rollup_months),
            ("org_model_daily", self.org_rollup_months),
            ("provider_credits", self.credits_months),
            ("notification_deliveries", self.job_log_months),
            ("integrity_repairs", self.job_log_months),
        ]
    }
}

/// One partition that was dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DroppedPartition {
    pub table: &'static str,
    /// `YYYYMM`.
    pub partition: u32,
}

/// The oldest `YYYYMM` kept when keeping `months` months before `today`'s month.
pub fn first_kept_month(today: NaiveDate, months: u32) -> u32 {
    let index = today.year() * 12 + today.month() as i32 - 1 - months.min(100_000) as i32;
    let year = index.div_euclid(12);
    let month = index.rem_euclid(12) + 1;
    (year * 100 + month).max(0) as u32
}

#[derive(Debug, Row, Deserialize)]
struct PartitionRow {
    partition: String,
}

/// Monthly partitions of `table` (in the client's database) older than `months` before
/// `today`, oldest first.
pub async fn expired_partitions(
    client: &Client,
    database: &str,
    table: &str,
    today: NaiveDate,
    months: u32,
) -> Result<Vec<u32>> {
    let rows: Vec<PartitionRow> = read_query(
        client,
        "SELECT DISTINCT partition FROM system.parts \
         WHERE database = ? AND table = ? AND active ORDER BY partition",
    )
    .bind(database)
    .bind(table)
    .fetch_all()
    .await?;
    let cutoff = first_kept_month(today, months);
    let mut expired = Vec::new();
    for row in rows {
        // toYYYYMM partitions print as 6 digits (quoted on some versions).
        let text = row.partition.trim_matches('\'');
        let month: u32 = text.parse().map_err(|_| Error::NotMonthly {
            table: table.to_string(),
            partition: text.to_string(),
        })?;
        if month < cutoff {
            expired.push(month);
        }
    }
    Ok(expired)
}

/// Drops the expired monthly partitions of `table`.
pub async fn drop_partitions_older_than(
    client: &Client,
    database: &str,
    table: &'static str,
    today: NaiveDate,
    months: u32,
    cluster: Option<&str>,
) -> Result<Vec<DroppedPartition>> {
    let mut dropped = Vec::new();
    for partition in expired_partitions(client, database, table, today, months).await? {
        let sql = match cluster {
            None => "ALTER TABLE ? DROP PARTITION ?".to_string(),
            Some(_) => "ALTER TABLE ? ON CLUSTER ? DROP PARTITION ?".to_string(),
        };
        let mut q = client.query(&sql).bind(Identifier(table));
        if let Some(c) = cluster {
            q = q.bind(Identifier(c));
        }
        q.bind(partition).execute().await?;
        dropped.push(DroppedPartition { table, partition });
    }
    Ok(dropped)
}

/// What `policy` would drop on `today`, table by table, without dropping anything.
pub async fn plan(
    client: &Client,
    database: &str,
    policy: &RetentionPolicy,
    today: NaiveDate,
) -> Result<Vec<DroppedPartition>> {
    let mut expired = Vec::new();
    for (table, months) in policy.tables() {
        if let Some(months) = months {
            for partition in expired_partitions(client, database, table, today, months).await? {
                expired.push(DroppedPartition { table, partition });
            }
        }
    }
    Ok(expired)
}

/// Applies `policy` to every table it covers; returns what was dropped.
pub async fn apply(
    client: &Client,
    database: &str,
    policy: &RetentionPolicy,
    today: NaiveDate,
    cluster: Option<&str>,
) -> Result<Vec<DroppedPartition>> {
    let mut dropped = Vec::new();
    for (table, months) in policy.tables() {
        if let Some(months) = months {
            dropped.extend(
                drop_partitions_older_than(client, database, table, today, months, cluster).await?,
            );
        }
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    use usage_core::ymd;

    #[test]
    fn cutoff_keeps_the_current_month_and_n_before() {
        assert_eq!(first_kept_month(ymd(2026, 11, 17), 3), 202608);
        assert_eq!(first_kept_month(ymd(2026, 1, 1), 1), 202512);
        assert_eq!(first_kept_month(ymd(2026, 1, 31), 13), 202412);
        assert_eq!(first_kept_month(ymd(2026, 3, 1), 0), 202603);
    }
}
