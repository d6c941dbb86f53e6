//! The `provider_credits` table (migration 0003): balance observations, written by the credit
//! pollers and by admins' manual entries.

use chrono::{DateTime, Utc};
use clickhouse::{Client, Row};
use serde::Serialize;

use crate::error::Result;

/// A `provider_credits` row (migration 0003).
#[derive(Debug, Row, Serialize)]
pub struct CreditInsertRow {
    pub provider: String,
    pub key_label: String,
    pub org_id: String,
    pub balance_nusd: Option<i64>,
    pub total_credits_nusd: i64,
    pub total_usage_nusd: i64,
    pub status: String,
    pub error: String,
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    pub observed_at: DateTime<Utc>,
}

/// Writes credit observations.
pub async fn insert(client: &Client, rows: &[CreditInsertRow]) -> Result<()> {
    let mut insert = client.insert::<CreditInsertRow>("provider_credits").await?;
    for r in rows {
        insert.write(r).await?;
    }
    insert.end().await?;
    Ok(())
}
