//! The lease that lets one dashboard-api instance of several run the background jobs, kept in
//! ClickHouse (`job_leases`, migration 0007). The protocol and its race window are in the
//! [module docs of the evaluator](super).

use chrono::{DateTime, TimeDelta, Utc};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tollgate_clickhouse::clickhouse::{self, Client, Row};
use tollgate_clickhouse::queries::NamedQuery;
use tollgate_clickhouse::read_query;

use crate::error::JobResult;
use tollgate_clickhouse::row_version;

const JOB_LEASE: NamedQuery = NamedQuery {
    name: "admin/job_lease",
    sql: include_str!("../../clickhouse/queries/admin/job_lease.sql"),
};

/// Below this much time left, a renewal is read back like a take-over.
const RENEWAL_MARGIN_SECS: i64 = 5;

/// A row of `job_lease.sql`.
#[derive(Clone, Debug, Row, Deserialize)]
struct LeaseRow {
    current_holder: String,
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    current_expires_at: DateTime<Utc>,
    current_version: u64,
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    server_now: DateTime<Utc>,
}

/// A row of `job_leases` (migration 0007), column for column.
#[derive(Clone, Debug, Row, Serialize)]
struct LeaseInsertRow<'a> {
    name: &'a str,
    holder: &'a str,
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    acquired_at: DateTime<Utc>,
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    expires_at: DateTime<Utc>,
    version: u64,
}

/// One instance's handle on a named lease.
#[derive(Clone, Debug)]
pub struct Lease {
    client: Client,
    name: String,
    holder: String,
    ttl: Duration,
    settle: Duration,
}

/// Who this process is, for the lease: host, process id and a random suffix (two instances
/// in one process — tests — are two holders).
pub fn holder_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "{host}:{}:{}",
        std::process::id(),
        suffix.get(..8).unwrap_or("0")
    )
}

impl Lease {
    pub fn new(
        client: Client,
        name: impl Into<String>,
        holder: impl Into<String>,
        ttl: Duration,
        settle: Duration,
    ) -> Lease {
        Lease {
            client,
            name: name.into(),
            holder: holder.into(),
            ttl,
            settle,
        }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    async fn read(&self) -> JobResult<LeaseRow> {
        Ok(read_query(&self.client, &JOB_LEASE.body())
            .bind(self.name.as_str())
            .fetch_one::<LeaseRow>()
            .await?)
    }

    async fn write(
        &self,
        at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        after: u64,
    ) -> JobResult<()> {
        let mut insert = self
            .client
            .insert::<LeaseInsertRow<'_>>("job_leases")
            .await?;
        insert
            .write(&LeaseInsertRow {
                name: &self.name,
                holder: &self.holder,
                acquired_at: at,
                expires_at,
                version: row_version().max(after.saturating_add(1)),
            })
            .await?;
        insert.end().await?;
        Ok(())
    }

    /// Takes the lease if it is free, renews it if it is ours; whether we hold it now.
    pub async fn acquire(&self) -> JobResult<bool> {
        let current = self.read().await?;
        let now = current.server_now;
        let ours = current.current_holder == self.holder;
        let live = current.current_expires_at > now;
        if live && !ours {
            return Ok(false);
        }
        let ttl = TimeDelta::seconds(i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX));
        self.write(now, now + ttl, current.current_version).await?;
        let comfortable =
            ours && (current.current_expires_at - now).num_seconds() > RENEWAL_MARGIN_SECS;
        if comfortable {
            // Nobody else can have read our live lease as free.
            return Ok(true);
        }
        tokio::time::sleep(self.settle).await;
        Ok(self.read().await?.current_holder == self.holder)
    }

    /// Gives the lease up if we hold it, so another instance takes over at once (shutdown).
    pub async fn release(&self) -> JobResult<()> {
        let current = self.read().await?;
        if current.current_holder == self.holder {
            self.write(
                current.server_now,
                DateTime::UNIX_EPOCH,
                current.current_version,
            )
            .await?;
        }
        Ok(())
    }
}
