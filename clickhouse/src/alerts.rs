//! The alert tables' rows: rules and alerts (migration 0003) and notification delivery
//! attempts (0007), column for column, and their reads and writes. A table is versioned (`ReplacingMergeTree(version)`): a change is a new row with a
//! higher `version`, a deletion one with `deleted = 1`.

use chrono::{DateTime, Utc};
use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::Result;
use crate::queries::NamedQuery;
use crate::read_query;

const NOTIFICATION_DELIVERIES: NamedQuery = NamedQuery {
    name: "admin/notification_deliveries",
    sql: include_str!("../queries/admin/notification_deliveries.sql"),
};
const RECENT_DELIVERIES: NamedQuery = NamedQuery {
    name: "admin/recent_deliveries",
    sql: include_str!("../queries/admin/recent_deliveries.sql"),
};

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
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    pub updated_at: DateTime<Utc>,
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
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    pub opened_at: DateTime<Utc>,
    pub acknowledged_by: String,
    #[serde(with = "clickhouse::serde::chrono::datetime::option")]
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub resolved_by: String,
    #[serde(with = "clickhouse::serde::chrono::datetime::option")]
    pub resolved_at: Option<DateTime<Utc>>,
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    pub updated_at: DateTime<Utc>,
    pub version: u64,
}

/// What a new alert says; [`AlertRow::open`] fills in the rest of its row.
#[derive(Debug, Clone)]
pub struct NewAlert {
    pub alert_id: Uuid,
    pub org_id: String,
    /// Nil for alerts no rule raised (the edge's budget warnings).
    pub rule_id: Uuid,
    pub kind: String,
    pub severity: String,
    pub dedup_key: String,
    pub title: String,
    /// JSON with the observed values.
    pub details: String,
}

impl AlertRow {
    /// A new alert, open since `now`, nobody having acknowledged or resolved it yet.
    pub fn open(a: NewAlert, now: DateTime<Utc>, version: u64) -> AlertRow {
        AlertRow {
            alert_id: a.alert_id,
            org_id: a.org_id,
            rule_id: a.rule_id,
            kind: a.kind,
            severity: a.severity,
            state: "open".into(),
            dedup_key: a.dedup_key,
            title: a.title,
            details: a.details,
            opened_at: now,
            acknowledged_by: String::new(),
            acknowledged_at: None,
            resolved_by: String::new(),
            resolved_at: None,
            updated_at: now,
            version,
        }
    }
}

/// Writes a rule row (a new rule, or a new version of one).
pub async fn write_rule(client: &Client, row: &RuleRow) -> Result<()> {
    let mut insert = client.insert::<RuleRow>("alert_rules").await?;
    insert.write(row).await?;
    insert.end().await?;
    Ok(())
}

/// Writes rule rows in one insert.
pub async fn write_rules(client: &Client, rows: &[RuleRow]) -> Result<()> {
    let mut insert = client.insert::<RuleRow>("alert_rules").await?;
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await?;
    Ok(())
}

/// The id of every rule that was ever written, deleted ones included.
pub async fn rule_ids(client: &Client) -> Result<Vec<Uuid>> {
    #[derive(Row, Deserialize)]
    struct Id {
        #[serde(with = "clickhouse::serde::uuid")]
        rule_id: Uuid,
    }
    let rows = read_query(client, "SELECT DISTINCT rule_id FROM alert_rules")
        .fetch_all::<Id>()
        .await?;
    Ok(rows.into_iter().map(|r| r.rule_id).collect())
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

/// A row of `notification_deliveries` (migration 0007), column for column.
#[derive(Clone, Debug, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct DeliveryRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub delivery_id: Uuid,
    pub org_id: String,
    #[serde(with = "clickhouse::serde::uuid")]
    pub rule_id: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    pub alert_id: Uuid,
    pub event: String,
    pub channel: String,
    pub attempt: u8,
    /// `delivered`, `failed` (will retry), `gave_up`, `skipped`.
    pub status: String,
    pub http_status: u16,
    pub error: String,
    pub duration_ms: u32,
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    pub attempted_at: DateTime<Utc>,
}

/// Writes one delivery attempt.
pub async fn write_delivery(client: &Client, row: &DeliveryRow) -> Result<()> {
    let mut insert = client
        .insert::<DeliveryRow>("notification_deliveries")
        .await?;
    insert.write(row).await?;
    insert.end().await?;
    Ok(())
}

/// `nq` with `{orgs}` filled: `org_id = ?` bound to `org`, or every org (`None`, for
/// deployment admins).
fn for_orgs(client: &Client, nq: &NamedQuery, org: Option<&str>) -> clickhouse::query::Query {
    let sql = nq
        .body()
        .replace("{orgs}", if org.is_none() { "1 = 1" } else { "org_id = ?" });
    let q = read_query(client, &sql);
    match org {
        Some(org) => q.bind(org),
        None => q,
    }
}

/// The newest `limit` delivery attempts of every rule of `org` (`None`: every org), newest
/// first.
pub async fn recent_deliveries(
    client: &Client,
    org: Option<&str>,
    limit: u32,
) -> Result<Vec<DeliveryRow>> {
    Ok(for_orgs(client, &RECENT_DELIVERIES, org)
        .bind(limit)
        .fetch_all::<DeliveryRow>()
        .await?)
}

/// The newest `limit` delivery attempts of one rule, oldest first; `org` narrows them to one
/// org (`None`: every org, for deployment admins).
pub async fn deliveries_of_rule(
    client: &Client,
    org: Option<&str>,
    rule_id: Uuid,
    limit: u32,
) -> Result<Vec<DeliveryRow>> {
    let mut rows = for_orgs(client, &NOTIFICATION_DELIVERIES, org)
        .bind(rule_id.to_string())
        .bind(limit)
        .fetch_all::<DeliveryRow>()
        .await?;
    rows.reverse();
    Ok(rows)
}
