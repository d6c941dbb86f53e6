//! The loops that run the jobs (started by `dashboard-api serve` or `tollgate-jobs`), each also
//! once right after start: alert evaluation every `evaluator.interval_secs`, credit polls every
//! `pollers.interval_secs`, reconciliation every `pollers.reconcile_interval_secs`, the
//! integrity pass ([`crate::integrity`]) every `integrity.interval_secs`, retention
//! ([`crate::retention`]) every `retention.interval_secs`. Every instance runs the loops; a
//! loop does its work only while this instance holds the shared [`Lease`] (named `jobs`), so
//! one instance of several does it. [`BackgroundJobs::shutdown`] lets a run in progress finish
//! (up to [`SHUTDOWN_GRACE`]), then releases the lease.
//!
//! Each instance's loops keep their own schedule (from its start), so after a take-over the
//! new holder polls and evaluates within one interval, but may reconcile up to
//! `pollers.reconcile_interval_secs` late; `pollers.reconcile_lookback_days` re-checks the
//! days it missed. A failed run is logged and retried at the next tick.

use chrono::{DateTime, Utc};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::JobResult;
use crate::lease::{holder_id, Lease};
use crate::Context;

/// The lease's name in `job_leases`.
pub const LEASE_NAME: &str = "jobs";

/// How long shutdown waits for a run in progress.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The running loops.
#[derive(Debug)]
pub struct BackgroundJobs {
    stop: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    lease: Arc<Lease>,
}

/// Starts the enabled loops in the current runtime.
pub fn spawn(state: Context) -> BackgroundJobs {
    let config = state.config().clone();
    let lease = Arc::new(Lease::new(
        state.client().clone(),
        LEASE_NAME,
        holder_id(),
        Duration::from_secs(config.evaluator.lease_secs),
        Duration::from_millis(config.evaluator.lease_settle_ms),
    ));
    let (stop, stopped) = watch::channel(false);
    let mut tasks = Vec::new();
    if config.evaluator.enabled {
        tasks.push((
            "evaluator",
            run_loop(
                "evaluator",
                Duration::from_secs(config.evaluator.interval_secs),
                state.clone(),
                lease.clone(),
                stopped.clone(),
                |state, now| async move {
                    crate::evaluator::evaluate_once(&state, now)
                        .await
                        .map(|_| ())
                },
            ),
        ));
    }
    if config.pollers.enabled {
        tasks.push((
            "pollers",
            run_loop(
                "pollers",
                Duration::from_secs(config.pollers.interval_secs),
                state.clone(),
                lease.clone(),
                stopped.clone(),
                |state, now| async move { crate::pollers::poll_once(&state, now).await.map(|_| ()) },
            ),
        ));
    }
    if config.pollers.reconcile_enabled {
        tasks.push((
            "reconcile",
            run_loop(
                "reconcile",
                Duration::from_secs(config.pollers.reconcile_interval_secs),
                state.clone(),
                lease.clone(),
                stopped.clone(),
                |state, now| async move {
                    crate::reconcile::reconcile_once(&state, now)
                        .await
                        .map(|_| ())
                },
            ),
        ));
    }
    if config.integrity.enabled {
        tasks.push((
            "integrity",
            run_loop(
                "integrity",
                Duration::from_secs(config.integrity.interval_secs),
                state.clone(),
                lease.clone(),
                stopped.clone(),
                |state, _now| async move { crate::integrity::integrity_once(&state).await },
            ),
        ));
    }
    if config.retention.enabled {
        tasks.push((
            "retention",
            run_loop(
                "retention",
                Duration::from_secs(config.retention.interval_secs),
                state.clone(),
                lease.clone(),
                stopped.clone(),
                |state, now| async move {
                    crate::retention::retention_once(&state, now)
                        .await
                        .map(|_| ())
                },
            ),
        ));
    }
    tracing::info!(
        holder = lease.holder(),
        jobs = tasks.len(),
        "background jobs started"
    );
    BackgroundJobs { stop, tasks, lease }
}

fn run_loop<F, Fut>(
    name: &'static str,
    every: Duration,
    state: Context,
    lease: Arc<Lease>,
    mut stopped: watch::Receiver<bool>,
    job: F,
) -> JoinHandle<()>
where
    F: Fn(Context, DateTime<Utc>) -> Fut + Send + 'static,
    Fut: Future<Output = JobResult<()>> + Send,
{
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stopped.changed() => break,
            }
            if *stopped.borrow() {
                break;
            }
            match lease.acquire().await {
                Ok(true) => {
                    if let Err(e) = job(state.clone(), Utc::now()).await {
                        tracing::warn!(job = name, error = ?e, "background job failed; next run as scheduled");
                    }
                }
                Ok(false) => tracing::debug!(job = name, "another instance holds the jobs lease"),
                Err(e) => tracing::warn!(job = name, error = ?e, "cannot read the jobs lease"),
            }
        }
    })
}

impl BackgroundJobs {
    /// Stops the loops (a run in progress may finish within [`SHUTDOWN_GRACE`]) and releases
    /// the lease.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for (name, task) in self.tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout(SHUTDOWN_GRACE, task).await.is_err() {
                tracing::warn!(job = name, "background job did not stop in time; aborted");
                abort.abort();
            }
        }
        if let Err(e) = self.lease.release().await {
            tracing::warn!(error = ?e, "cannot release the jobs lease");
        }
    }
}
