//! The integrity job: one pass of `tollgate_clickhouse::integrity` (rollup buckets rebuilt
//! where they differ from the raw rows, events stored twice kept once) every
//! `integrity.interval_secs`, counted in [`crate::metrics::JobMetrics`].

use chrono::Utc;
use std::time::Duration;

use crate::error::JobResult;
use crate::Context;

/// One integrity pass over the last `integrity.lookback_hours`.
pub async fn integrity_once(state: &Context) -> JobResult<()> {
    let lookback = Duration::from_secs(u64::from(state.config().integrity.lookback_hours) * 3_600);
    let metrics = state.metrics();
    let outcome = |o: &str| vec![("outcome", o.to_string())];
    let kind = |k: &str| vec![("kind", k.to_string())];
    match tollgate_clickhouse::integrity::run(state.client(), lookback).await {
        Ok(report) => {
            metrics.integrity_passes.get_or_create(&outcome("ok")).inc();
            for (k, n) in [
                ("rollup", report.buckets_repaired),
                ("rollup_still_different", report.buckets_still_different),
                ("duplicate_event", report.duplicate_events_removed),
            ] {
                metrics
                    .integrity_repairs
                    .get_or_create(&kind(k))
                    .inc_by(n as u64);
            }
            metrics.integrity_last_pass.set(Utc::now().timestamp());
            tracing::info!(?report, "integrity pass done");
            Ok(())
        }
        Err(e) => {
            metrics
                .integrity_passes
                .get_or_create(&outcome("failed"))
                .inc();
            Err(e.into())
        }
    }
}
