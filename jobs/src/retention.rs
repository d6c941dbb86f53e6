//! The retention job: `[retention]`'s policy applied by the lease holder every
//! `retention.interval_secs` (and right after start), dropping whole monthly partitions
//! (`tollgate_clickhouse::retention`), counted in [`crate::metrics::JobMetrics`]. The same
//! policy as a dry run: `tollgate-jobs retention --dry-run`.

use chrono::{DateTime, Utc};
use tollgate_clickhouse::read_query;
use tollgate_clickhouse::retention::{self, DroppedPartition};

use crate::error::JobResult;
use crate::Context;

/// The database the client works in (the retention functions read `system.parts` by name).
async fn database(state: &Context) -> JobResult<String> {
    Ok(read_query(state.client(), "SELECT currentDatabase()")
        .fetch_one::<String>()
        .await?)
}

/// What the policy would drop today, dropping nothing.
pub async fn plan(state: &Context, now: DateTime<Utc>) -> JobResult<Vec<DroppedPartition>> {
    let db = database(state).await?;
    let policy = state.config().retention.policy();
    Ok(retention::plan(state.client(), &db, &policy, now.date_naive()).await?)
}

/// One pass: drops what the policy says has expired; returns what was dropped.
pub async fn retention_once(
    state: &Context,
    now: DateTime<Utc>,
) -> JobResult<Vec<DroppedPartition>> {
    let db = database(state).await?;
    let policy = state.config().retention.policy();
    let dropped = retention::apply(state.client(), &db, &policy, now.date_naive(), None).await?;
    for d in &dropped {
        state
            .metrics()
            .retention_dropped
            .get_or_create(&vec![("table", d.table.to_string())])
            .inc();
        tracing::info!(
            table = d.table,
            partition = d.partition,
            "retention: partition dropped"
        );
    }
    Ok(dropped)
}
