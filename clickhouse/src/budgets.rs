//! The `budgets` table (migration 0003): its row, the usage a budget counts, and its write.
//! Read by the API (CRUD, the edge's budget list) and by the alert evaluator
//! (`budget_threshold` rules).

use chrono::{DateTime, Utc};
use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::Result;
use crate::Scope;

/// A row of `budgets` (migration 0003), column for column.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub struct BudgetRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub budget_id: Uuid,
    pub org_id: String,
    /// `org`, `org_user` or `app`.
    pub scope: String,
    pub user_id: String,
    pub app_id: String,
    pub name: String,
    pub period: String,
    pub limit_nusd: i64,
    pub soft_thresholds: Vec<u8>,
    pub mode: String,
    pub enabled: u8,
    pub created_by: String,
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    pub updated_at: DateTime<Utc>,
    pub deleted: u8,
    pub version: u64,
    /// Output tokens a call without `max_tokens` reserves (0: the model's maximum; 0011).
    pub reserve_output_tokens: u32,
}

impl BudgetRow {
    /// The usage a budget counts: its org, narrowed to its user or app.
    pub fn usage_scope(&self) -> Scope {
        match self.scope.as_str() {
            "org_user" => Scope::OrgUser {
                org_id: self.org_id.clone(),
                user_id: self.user_id.clone(),
            },
            "app" => Scope::OrgApp {
                org_id: self.org_id.clone(),
                app_id: self.app_id.clone(),
            },
            _ => Scope::Org {
                org_id: self.org_id.clone(),
            },
        }
    }
}

/// Writes a new version of a budget.
pub async fn write(client: &Client, row: &BudgetRow) -> Result<()> {
    let mut insert = client.insert::<BudgetRow>("budgets").await?;
    insert.write(row).await?;
    insert.end().await?;
    Ok(())
}
