//! The alert tables' rows (migration 0003): rules and alerts, column for column, and their
//! writes. A table is versioned (`ReplacingMergeTree(version)`): a change is a new row with a
//! higher `version`, a deletion one with `deleted = 1`.

use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::Result;

/// A row of `alert_rules` (migration 0003), column for column.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub struct RuleRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub rule_id: Uuid,
    pub org_id: String,
    pub name: String,
    pub kind: String,
    /// JSON object.
    pub params: String,
    pub severity: String,
    pub channels: Vec<String>,
    pub enabled: u8,
    pub created_by: String,
    #[serde(with = "clickhouse::serde::time::datetime")]
    pub created_at: OffsetDateTime,
    #[serde(with = "clickhouse::serde::time::datetime")]
    pub updated_at: OffsetDateTime,
    pub deleted: u8,
    pub version: u64,
}

/// A row of `alerts` (migration 0003), column for column.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct AlertRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub alert_id: Uuid,
    pub org_id: String,
    #[serde(with = "clickhouse::serde::uuid")]
    pub rule_id: Uuid,
    pub kind: String,
    pub severity: String,
    pub state: String,
    pub dedup_key: String,
    pub title: String,
    /// JSON with the observed values.
    pub details: String,
    #[serde(with = "clickhouse::serde::time::datetime")]
    pub opened_at: OffsetDateTime,
    pub acknowledged_by: String,
    #[serde(with = "clickhouse::serde::time::datetime::option")]
    pub acknowledged_at: Option<OffsetDateTime>,
    pub resolved_by: String,
    #[serde(with = "clickhouse::serde::time::datetime::option")]
    pub resolved_at: Option<OffsetDateTime>,
    #[serde(with = "clickhouse::serde::time::datetime")]
    pub updated_at: OffsetDateTime,
    pub version: u64,
}

/// Writes a rule row (a new rule, or a new version of one).
pub async fn write_rule(client: &Client, row: &RuleRow) -> Result<()> {
    let mut insert = client.insert::<RuleRow>("alert_rules").await?;
    insert.write(row).await?;
    insert.end().await?;
    Ok(())
}

/// Writes alert rows (new alerts and new versions of existing ones).
pub async fn write_alert(client: &Client, rows: &[AlertRow]) -> Result<()> {
    let mut insert = client.insert::<AlertRow>("alerts").await?;
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await?;
    Ok(())
}
