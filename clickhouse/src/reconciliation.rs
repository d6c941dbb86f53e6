//! The `cost_reconciliation` table (migration 0007): its rows, how one is made from a recorded
//! and a reported figure, and the reads and writes. The jobs that fill it are `tollgate-jobs`'
//! reconciliation (OpenAI, daily) and its pollers (OpenRouter's same-day snapshot).

use chrono::{DateTime, NaiveDate, Timelike, Utc};
use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};
use usage_core::Nanos;

use crate::error::Result;
use crate::queries::{day_param, NamedQuery};
use crate::{read_query, row_version};

const RECONCILIATION_RANGE: NamedQuery = NamedQuery {
    name: "admin/reconciliation_range",
    sql: include_str!("../queries/admin/reconciliation_range.sql"),
};

const RECONCILIATION_DAYS: NamedQuery = NamedQuery {
    name: "admin/reconciliation_days",
    sql: include_str!("../queries/admin/reconciliation_days.sql"),
};

/// A row of `cost_reconciliation` (migration 0007), column for column.
#[derive(Clone, Debug, PartialEq, Row, Serialize, Deserialize)]
pub struct ReconciliationRow {
    pub provider: String,
    #[serde(with = "clickhouse::serde::chrono::date")]
    pub day: NaiveDate,
    /// Nano-USD.
    pub recorded_nusd: i64,
    /// Nano-USD; `None` when the provider figure could not be read.
    pub reported_nusd: Option<i64>,
    pub drift_percent: f64,
    /// `openai_costs` or `openrouter_key_usage_daily`.
    pub source: String,
    /// `ok` or `error`.
    pub status: String,
    pub error: String,
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    pub checked_at: DateTime<Utc>,
    pub version: u64,
}

/// `(reported − recorded) ÷ reported × 100`; 0 when both are 0, −100 when only Tollgate
/// recorded anything.
pub fn drift_percent(recorded: i128, reported: i128) -> f64 {
    if reported == 0 {
        return if recorded == 0 { 0.0 } else { -100.0 };
    }
    (reported - recorded) as f64 * 100.0 / reported as f64
}

/// A row comparing `recorded` with `reported` for `provider` on `day`.
pub fn row(
    provider: &str,
    day: NaiveDate,
    recorded: i128,
    reported: i128,
    source: &str,
    checked_at: DateTime<Utc>,
) -> ReconciliationRow {
    ReconciliationRow {
        provider: provider.to_string(),
        day,
        recorded_nusd: Nanos::clamped(recorded).get(),
        reported_nusd: Some(Nanos::clamped(reported).get()),
        drift_percent: drift_percent(recorded, reported),
        source: source.to_string(),
        status: "ok".into(),
        error: String::new(),
        checked_at: checked_at.with_nanosecond(0).unwrap_or(checked_at),
        version: row_version(),
    }
}

/// Writes reconciliation rows.
pub async fn write(client: &Client, rows: &[ReconciliationRow]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = client
        .insert::<ReconciliationRow>("cost_reconciliation")
        .await?;
    for r in rows {
        insert.write(r).await?;
    }
    insert.end().await?;
    Ok(())
}

/// The latest check of each day in `[from, to)` for `provider`.
pub async fn range(
    client: &Client,
    provider: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<ReconciliationRow>> {
    Ok(read_query(client, &RECONCILIATION_RANGE.body())
        .bind(provider)
        .bind(day_param(from))
        .bind(day_param(to))
        .fetch_all::<ReconciliationRow>()
        .await?)
}

/// The latest check of each day in `[from, to)` for every provider, by day then provider.
pub async fn days(
    client: &Client,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<ReconciliationRow>> {
    Ok(read_query(client, &RECONCILIATION_DAYS.body())
        .bind(day_param(from))
        .bind(day_param(to))
        .fetch_all::<ReconciliationRow>()
        .await?)
}
