//! The sink: spool → ClickHouse, in batches, each record stored exactly once.
//!
//! [`Sink`] reads durable entries from the spool and gathers them into a batch until it holds
//! `max_rows` rows or `max_bytes` spool bytes, or its first entry has waited `max_delay`. Then:
//!
//! 1. The batch's identity — `batch_id = <spool id>-<first LSN>-<last LSN>` and its LSN range —
//!    is written to the spool's checkpoint ([`Spool::begin_batch`]) *before* the insert.
//! 2. **Fence** (only when an earlier attempt of this batch may exist: a retry, or a batch found
//!    pending at start): wait until the server runs no INSERT of this batch. Every attempt is
//!    named on the server by its query id ([`InsertAttempt`]), so `system.processes` tells.
//! 3. **Check**: ask ClickHouse which of the batch's `event_id`s it already holds, under any
//!    batch, from any collector ([`Store::stored_event_ids`], by the batch's distinct seconds).
//! 4. **Insert** only the others, with `batch_id` in every row.
//! 5. The batch is recorded in `ingest_batches`, and the checkpoint moves past it
//!    ([`Spool::commit`]), which lets the spool delete the segments.
//!
//! # Exactly once, and the failures it covers
//!
//! Where the memory of accepted `event_id`s lives, and for how long:
//! - **The spool** of each collector remembers the ids of its retained segments, and of every
//!   segment for `spool.dedup_window_secs` (15 min) after it closed, across restarts (rebuilt from
//!   disk). It answers a re-post *at accept time* (`duplicates` in the 202).
//! - **`usage_events` itself** remembers every stored id for as long as the row is kept
//!   (retention drops whole months). Step 3 consults it before every insert, so a record is never
//!   inserted while a copy of it is stored, whichever collector stored it and however long ago.
//!   That is enough for any re-post: a record can only be re-posted with its original `ts`, and
//!   step 3 looks exactly at the seconds of the batch's records.
//!
//! Failure cases, each with a test (`sink/tests.rs` injects them into a store double;
//! `tests/tests/collector_e2e.rs` SIGKILLs the real process against real ClickHouse):
//! - *SIGKILL before the insert*: the batch is pending in the checkpoint; at start it is
//!   rebuilt from the spool and delivered (step 2 onwards).
//! - *SIGKILL during the insert, or between the insert and the commit*: the server may still be
//!   running the dead process's INSERT when the new one starts. Step 2 waits for it to end
//!   (before this fence, the check could run before that INSERT was visible, and the batch was
//!   stored twice); step 3 then sees whatever it stored and step 4 adds only the rest.
//! - *A timed-out or failed insert that the server completed anyway*: the same fence and check
//!   before every retry.
//! - *ClickHouse restarted or unreachable*: transient errors are retried forever with jittered
//!   backoff while the spool absorbs incoming records (backpressure at the high-water mark).
//! - *A client re-posts a batch whose 202 it never saw*: the same collector answers
//!   `duplicates` from its spool; a collector that no longer remembers it (after the dedup
//!   window, a lost disk) or another collector behind the load balancer accepts it again, and
//!   step 3 drops the records already stored.
//!
//! What it does not cover on its own: a re-post that reaches a second collector while the first
//! still holds the record in its spool, not yet inserted (its ack was lost; the first is
//! batching, or waiting out a ClickHouse outage). Both checks can run before either insert is
//! visible, and both insert. This is not rare: the 3-minute CI soak with 2 collectors, beside a
//! CPU hog, stored 25 records twice this way (of ~10,000; two lost-ack windows, one overlapping
//! a ClickHouse restart). The integrity job (`tollgate_clickhouse::integrity`, run by
//! dashboard-api every `integrity.interval_secs`) finds such duplicates in the recent days,
//! deletes the later copy and rebuilds the affected rollup buckets; until its next pass,
//! dashboards count those records twice (docs/OPERATIONS.md). A record of accepted ids shared by
//! the collectors, or a re-post routed back to the collector that holds it, would close it.
//!
//! Failures are classified by [`StoreError`] (the retry decision): transient ones (network,
//! server overload, a missing table during a deploy) are retried; data errors are not retried —
//! the batch goes to `usage_rejects` with the server's message.
//!
//! The rollups (materialized views) are written by the same INSERT, after the raw rows: a
//! reader can see a batch's raw rows a moment before its rollup rows. A ClickHouse crash in
//! that moment leaves a rollup short; the integrity job repairs it.

use chrono::{DateTime, Utc};
use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use usage_core::UsageRecord;
use uuid::Uuid;

use crate::config::SinkConfig;
use crate::ingest::Reject;
use crate::metrics::Metrics;
use crate::spool::{Entry, PendingBatch, Spool, SpoolError};
use tollgate_clickhouse::EncodedEvent;

/// Why a store operation failed, and so whether to retry it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Worth retrying: the server or the network may recover.
    #[error("transient: {0}")]
    Transient(String),
    /// The rows themselves were refused; retrying cannot help.
    #[error("data refused: {0}")]
    Data(String),
}

/// A committed batch, for the `ingest_batches` audit table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchInfo {
    pub batch_id: String,
    pub spool_id: String,
    pub first_lsn: u64,
    pub last_lsn: u64,
    pub rows: u64,
    pub min_ts: DateTime<Utc>,
    pub max_ts: DateTime<Utc>,
}

/// One attempt at inserting a batch, named so that a later attempt can wait for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsertAttempt {
    pub batch_id: String,
    /// Unique per attempt, also across processes.
    pub attempt: Uuid,
}

impl InsertAttempt {
    pub fn new(batch_id: &str) -> Self {
        InsertAttempt {
            batch_id: batch_id.to_string(),
            attempt: Uuid::new_v4(),
        }
    }

    /// The INSERT's `query_id` on the server.
    pub fn query_id(&self) -> String {
        format!(
            "{}{}",
            Self::query_id_prefix(&self.batch_id),
            self.attempt.simple()
        )
    }

    /// What every attempt's `query_id` for `batch_id` starts with.
    pub fn query_id_prefix(batch_id: &str) -> String {
        format!("tollgate-sink/{batch_id}/")
    }
}

/// Where batches go: ClickHouse in production ([`crate::store::ClickHouseStore`]), a fault
/// injecting double in tests.
pub trait Store: Send + Sync + 'static {
    /// Inserts `rows` tagged with the attempt's `batch_id`, as one insert named by the attempt.
    fn insert_events(
        &self,
        attempt: &InsertAttempt,
        rows: &[EncodedEvent],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// How many inserts of `batch_id` the server is running now (attempts of a dead process,
    /// or timed out on our side, included).
    fn running_attempts(
        &self,
        batch_id: &str,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// The `event_id`s already stored, under any batch, among rows whose `ts` is one of
    /// `seconds` (unix seconds).
    fn stored_event_ids(
        &self,
        seconds: &[i64],
    ) -> impl Future<Output = Result<HashSet<Uuid>, StoreError>> + Send;
    fn record_batch(
        &self,
        batch: &BatchInfo,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn insert_rejects(
        &self,
        rejects: &[Reject],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Whether ClickHouse answered the sink lately; read by `/readyz`.
#[derive(Debug, Default)]
pub struct StoreHealth {
    down: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl StoreHealth {
    pub fn is_up(&self) -> bool {
        !self.down.load(Ordering::Relaxed)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    pub fn set_up(&self) {
        self.down.store(false, Ordering::Relaxed);
    }

    pub fn set_down(&self, error: &str) {
        self.down.store(true, Ordering::Relaxed);
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(error.to_string());
        }
    }
}

/// The spool → store pump. See the module docs.
pub struct Sink<S> {
    spool: Spool,
    store: Arc<S>,
    config: SinkConfig,
    metrics: Metrics,
    health: Arc<StoreHealth>,
    /// Where stored records go next, if anywhere ([`crate::otlp`]).
    exporter: Option<crate::otlp::Exporter>,
}

impl<S> std::fmt::Debug for Sink<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("spool", &self.spool)
            .finish_non_exhaustive()
    }
}

struct Batch {
    first_lsn: u64,
    last_lsn: u64,
    bytes: u64,
    /// The records as `usage_events` rows, encoded when they were accepted.
    records: Vec<EncodedEvent>,
}

impl<S: Store> Sink<S> {
    pub fn new(
        spool: Spool,
        store: Arc<S>,
        config: SinkConfig,
        metrics: Metrics,
        health: Arc<StoreHealth>,
    ) -> Self {
        Sink {
            spool,
            store,
            config,
            metrics,
            health,
            exporter: None,
        }
    }

    /// Offers every record an insert stored to `exporter` (after the insert, never waiting).
    pub fn with_exporter(mut self, exporter: Option<crate::otlp::Exporter>) -> Self {
        self.exporter = exporter;
        self
    }

    /// Runs until `shutdown` turns true, then drains what is durable (for at most `drain`)
    /// and returns. Whatever is left stays in the spool for the next start.
    pub async fn run(
        self,
        shutdown: watch::Receiver<bool>,
        drain: Duration,
    ) -> Result<(), SpoolError> {
        if !self.recover_pending(&shutdown, drain).await? {
            return Ok(());
        }
        // Two stages, so that decoding the next batch overlaps inserting this one: a gatherer
        // task reads and decodes, this loop inserts and commits, in LSN order. The channel
        // holds one batch: the gatherer runs at most one batch ahead.
        let mut gatherer = Gatherer {
            spool: self.spool.clone(),
            config: self.config.clone(),
            reader: self.spool.reader(),
            leftover: VecDeque::new(),
        };
        let (tx, mut rx) = mpsc::channel::<Batch>(1);
        let mut stop = shutdown.clone();
        let producer = tokio::spawn(async move {
            let mut drain_deadline: Option<Instant> = None;
            loop {
                if drain_deadline.is_none() && *stop.borrow() {
                    drain_deadline = Some(Instant::now() + drain);
                }
                if let Some(deadline) = drain_deadline {
                    if Instant::now() >= deadline || gatherer.caught_up() {
                        return Ok(());
                    }
                }
                if let Some(batch) = gatherer.next(&mut stop, drain_deadline.is_some()).await? {
                    if tx.send(batch).await.is_err() {
                        return Ok(());
                    }
                }
            }
        });
        while let Some(batch) = rx.recv().await {
            if !self.deliver(batch, &shutdown, drain).await? {
                break; // gave up at shutdown: the batch stays pending for the next start
            }
        }
        drop(rx);
        producer.await.map_err(|_| SpoolError::Stopped)?
    }

    /// Finishes a batch left pending by a crash, before anything else is sent.
    async fn recover_pending(
        &self,
        shutdown: &watch::Receiver<bool>,
        drain: Duration,
    ) -> Result<bool, SpoolError> {
        let Some(pending) = self.spool.state()?.pending else {
            return Ok(true);
        };
        if pending.last_lsn <= self.spool.committed_lsn() {
            return Ok(true);
        }
        let mut reader = self.spool.reader();
        reader.seek(pending.first_lsn);
        let mut batch = Batch {
            first_lsn: pending.first_lsn,
            last_lsn: pending.first_lsn,
            bytes: 0,
            records: Vec::new(),
        };
        while reader.next_lsn() <= pending.last_lsn {
            let entries = reader.read(u64::MAX)?;
            if entries.is_empty() {
                break;
            }
            for e in entries.into_iter().filter(|e| e.lsn <= pending.last_lsn) {
                append_entry(&mut batch, e);
            }
        }
        tracing::info!(batch_id = %pending.batch_id, rows = batch.records.len(), "recovering a batch pending at the last stop");
        self.deliver_as(batch, pending.batch_id, true, shutdown, drain)
            .await
    }

    /// Inserts and commits `batch`; `Ok(false)` if it gave up because of a shutdown.
    async fn deliver(
        &self,
        batch: Batch,
        shutdown: &watch::Receiver<bool>,
        drain: Duration,
    ) -> Result<bool, SpoolError> {
        let batch_id = format!(
            "{}-{}-{}",
            self.spool.spool_id(),
            batch.first_lsn,
            batch.last_lsn
        );
        self.deliver_as(batch, batch_id, false, shutdown, drain)
            .await
    }

    async fn deliver_as(
        &self,
        batch: Batch,
        batch_id: String,
        mut earlier_attempts: bool,
        shutdown: &watch::Receiver<bool>,
        drain: Duration,
    ) -> Result<bool, SpoolError> {
        let (min_ts, max_ts) = time_range(&batch.records);
        let spool = self.spool.clone();
        let pending = PendingBatch {
            batch_id: batch_id.clone(),
            first_lsn: batch.first_lsn,
            last_lsn: batch.last_lsn,
            rows: batch.records.len() as u64,
        };
        blocking(move || spool.begin_batch(pending)).await?;

        let mut backoff = Backoff::new(&self.config);
        let started = Instant::now();
        let rows_inserted;
        let mut shutdown_seen: Option<Instant> = None;
        let mut data_attempts = 0u32;
        loop {
            let result = self
                .insert_once(&batch_id, &batch.records, earlier_attempts)
                .await;
            match result {
                Ok(n) => {
                    rows_inserted = n;
                    self.health.set_up();
                    break;
                }
                Err(StoreError::Transient(e)) => {
                    self.metrics.count_insert_failure("transient");
                    self.health.set_down(&e);
                    let delay = backoff.next();
                    tracing::warn!(%batch_id, error = %e, retry_in_ms = delay.as_millis() as u64, "insert failed; will retry");
                    tokio::time::sleep(delay).await;
                    earlier_attempts = true;
                    if *shutdown.borrow()
                        && shutdown_seen.get_or_insert_with(Instant::now).elapsed() >= drain
                    {
                        tracing::warn!(%batch_id, "shutting down with ClickHouse unavailable; the batch stays in the spool");
                        return Ok(false);
                    }
                }
                Err(StoreError::Data(e)) if data_attempts < 2 => {
                    // Confirm before giving rows up: a glitch can look like bad data once.
                    data_attempts += 1;
                    self.metrics.count_insert_failure("data");
                    tracing::warn!(%batch_id, error = %e, "ClickHouse refused the batch's data; retrying before dead-lettering");
                    tokio::time::sleep(backoff.next()).await;
                    earlier_attempts = true;
                }
                Err(StoreError::Data(e)) => {
                    self.metrics.count_insert_failure("data");
                    tracing::error!(%batch_id, error = %e, rows = batch.records.len(),
                        "ClickHouse refused the batch's data; sending it to usage_rejects");
                    self.dead_letter(&batch.records, &e).await;
                    rows_inserted = 0;
                    break;
                }
            }
        }
        self.metrics
            .insert_seconds
            .observe(started.elapsed().as_secs_f64());

        let info = BatchInfo {
            batch_id: batch_id.clone(),
            spool_id: self.spool.spool_id().to_string(),
            first_lsn: batch.first_lsn,
            last_lsn: batch.last_lsn,
            rows: rows_inserted,
            min_ts,
            max_ts,
        };
        // The audit row is worth a few tries, but the rows are already safe: never block on it.
        for _ in 0..3 {
            match self.store.record_batch(&info).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(%batch_id, error = %e, "could not record the batch in ingest_batches");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        let spool = self.spool.clone();
        let (last, bytes) = (batch.last_lsn, batch.bytes);
        blocking(move || spool.commit(last, bytes)).await?;
        self.metrics.insert_batches.inc();
        self.metrics.insert_rows.inc_by(rows_inserted);
        tracing::debug!(%batch_id, rows = rows_inserted, "batch committed");
        Ok(true)
    }

    /// One attempt: fence (after `earlier_attempts`), check, insert what is not stored yet.
    /// Returns how many rows it inserted.
    async fn insert_once(
        &self,
        batch_id: &str,
        records: &[EncodedEvent],
        earlier_attempts: bool,
    ) -> Result<u64, StoreError> {
        if earlier_attempts {
            self.await_running_attempts(batch_id).await?;
        }
        let stored = self
            .store
            .stored_event_ids(&distinct_seconds(records))
            .await?;
        // `stored` holds every id of the batch's seconds, other batches' too. Usually none of
        // this batch's is among them: then the batch goes as it is, uncopied.
        let is_stored = |r: &EncodedEvent| stored.contains(&r.event_id());
        let missing: std::borrow::Cow<[EncodedEvent]> = if !records.iter().any(is_stored) {
            records.into()
        } else {
            records
                .iter()
                .filter(|r| !is_stored(r))
                .cloned()
                .collect::<Vec<_>>()
                .into()
        };
        let already = (records.len() - missing.len()) as u64;
        if already > 0 {
            tracing::info!(
                batch_id,
                already,
                missing = missing.len(),
                "some of the batch's records are stored already; inserting the rest"
            );
            self.metrics.insert_rows_already_stored.inc_by(already);
        }
        if !missing.is_empty() {
            self.store
                .insert_events(&InsertAttempt::new(batch_id), &missing)
                .await?;
            if let Some(exporter) = &self.exporter {
                exporter.offer(&missing);
            }
        }
        Ok(missing.len() as u64)
    }

    /// Waits until the server runs no insert of `batch_id`: one still running (from a process
    /// that died, or an attempt we gave up waiting for) could commit after our check.
    async fn await_running_attempts(&self, batch_id: &str) -> Result<(), StoreError> {
        let started = Instant::now();
        let mut logged = false;
        loop {
            let running = self.store.running_attempts(batch_id).await?;
            if running == 0 {
                return Ok(());
            }
            if started.elapsed() > RUNNING_ATTEMPT_PATIENCE {
                return Err(StoreError::Transient(format!(
                    "{running} earlier insert(s) of batch {batch_id} still running on the server after {}s",
                    RUNNING_ATTEMPT_PATIENCE.as_secs()
                )));
            }
            if !logged {
                tracing::info!(
                    batch_id,
                    running,
                    "waiting for an earlier insert of the batch to end on the server"
                );
                logged = true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn dead_letter(&self, records: &[EncodedEvent], error: &str) {
        let now = Utc::now();
        let rejects: Vec<Reject> = records
            .iter()
            .enumerate()
            .map(|(index, r)| Reject {
                received_at: now,
                index,
                reason: format!("insert refused by ClickHouse: {error}"),
                raw: record_json(r),
            })
            .collect();
        let mut backoff = Backoff::new(&self.config);
        while let Err(e) = self.store.insert_rejects(&rejects).await {
            tracing::warn!(error = %e, "could not write usage_rejects; retrying");
            tokio::time::sleep(backoff.next()).await;
        }
    }
}

/// The reading half of the sink: spool entries → decoded batches.
struct Gatherer {
    spool: Spool,
    config: SinkConfig,
    reader: crate::spool::SpoolReader,
    /// Entries read past the end of the last batch.
    leftover: VecDeque<Entry>,
}

impl Gatherer {
    /// Everything durable has been gathered.
    fn caught_up(&self) -> bool {
        self.leftover.is_empty() && self.reader.next_lsn() > self.spool.durable_lsn()
    }

    /// Collects the next batch; `None` if there was nothing to send yet. A batch closes at the
    /// entry that brings it to `max_rows` rows or `max_bytes` bytes (entries are never split:
    /// commits are by LSN); entries read past that wait in `leftover` for the next batch.
    async fn next(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
        draining: bool,
    ) -> Result<Option<Batch>, SpoolError> {
        let (reader, leftover) = (&mut self.reader, &mut self.leftover);
        let max_delay = Duration::from_millis(self.config.max_delay_ms);
        let mut batch: Option<Batch> = None;
        let mut started: Option<Instant> = None;
        loop {
            let entries: Vec<Entry> = if leftover.is_empty() {
                let have_bytes = batch.as_ref().map_or(0, |b| b.bytes);
                reader.read(self.config.max_bytes.saturating_sub(have_bytes).max(1))?
            } else {
                leftover.drain(..).collect()
            };
            if !entries.is_empty() {
                started.get_or_insert_with(Instant::now);
                let b = batch.get_or_insert_with(|| Batch {
                    first_lsn: entries[0].lsn,
                    last_lsn: entries[0].lsn,
                    bytes: 0,
                    records: Vec::new(),
                });
                let mut entries = entries.into_iter();
                for e in entries.by_ref() {
                    append_entry(b, e);
                    if b.records.len() as u64 >= self.config.max_rows
                        || b.bytes >= self.config.max_bytes
                    {
                        leftover.extend(entries);
                        return Ok(batch);
                    }
                }
                continue;
            }
            // Nothing more durable right now.
            match started {
                None if draining => return Ok(None),
                None => {
                    tokio::select! {
                        () = self.spool.wait_for_data_after(reader.next_lsn().saturating_sub(1)) => {}
                        _ = shutdown.changed() => return Ok(None),
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
                Some(t) => {
                    let waited = t.elapsed();
                    if waited >= max_delay || draining {
                        return Ok(batch);
                    }
                    tokio::select! {
                        () = self.spool.wait_for_data_after(reader.next_lsn().saturating_sub(1)) => {}
                        () = tokio::time::sleep(max_delay - waited) => {}
                        // Shutting down: send what is gathered now rather than wait it out.
                        _ = shutdown.changed() => return Ok(batch),
                    }
                }
            }
        }
    }
}

fn append_entry(batch: &mut Batch, entry: Entry) {
    let (lsn, disk_len) = (entry.lsn, entry.disk_len);
    match entry.rows() {
        Ok(rows) => batch.records.extend(rows),
        // Entries are written by this program from validated records and checksummed; one
        // that does not decode means a bug. Log loudly and move on rather than stall.
        Err(e) => tracing::error!(lsn, error = %e, "spool entry does not decode; skipped"),
    }
    batch.last_lsn = lsn;
    batch.bytes += disk_len;
}

/// How long a retry waits for an earlier attempt still running on the server before it
/// counts as a transient failure (and is retried with backoff, fence first).
const RUNNING_ATTEMPT_PATIENCE: Duration = Duration::from_secs(60);

/// The distinct `ts` seconds of `records`, sorted.
fn distinct_seconds(records: &[EncodedEvent]) -> Vec<i64> {
    let mut seconds: Vec<i64> = records.iter().map(|r| r.ts().timestamp()).collect();
    seconds.sort_unstable();
    seconds.dedup();
    seconds
}

fn time_range(records: &[EncodedEvent]) -> (DateTime<Utc>, DateTime<Utc>) {
    let min = records
        .iter()
        .map(EncodedEvent::ts)
        .min()
        .unwrap_or(DateTime::UNIX_EPOCH);
    let max = records
        .iter()
        .map(EncodedEvent::ts)
        .max()
        .unwrap_or(DateTime::UNIX_EPOCH);
    (min, max)
}

/// A refused row as the JSON record it came from, for `usage_rejects` (the row's text, with
/// why, if it does not even decode).
fn record_json(row: &EncodedEvent) -> String {
    let record = row
        .decode()
        .map_err(|e| e.to_string())
        .and_then(|r| UsageRecord::try_from(&r).map_err(|e| e.to_string()));
    match record {
        Ok(r) => serde_json::to_string(&r).unwrap_or_default(),
        Err(e) => {
            serde_json::json!({ "undecodable_row": e, "event_id": row.event_id() }).to_string()
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SpoolError> + Send + 'static,
) -> Result<T, SpoolError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| SpoolError::Stopped)?
}

/// Exponential backoff with full jitter, capped.
struct Backoff {
    next_ms: u64,
    max_ms: u64,
}

impl Backoff {
    fn new(config: &SinkConfig) -> Self {
        Backoff {
            next_ms: config.retry_initial_ms,
            max_ms: config.retry_max_ms,
        }
    }

    fn next(&mut self) -> Duration {
        let cap = self.next_ms.min(self.max_ms);
        self.next_ms = self.next_ms.saturating_mul(2).min(self.max_ms);
        // Full jitter between half the cap and the cap: never zero, never synchronized.
        Duration::from_millis(cap / 2 + fastrand::u64(0..=cap / 2))
    }
}

/// Writes dead letters from the accept path in small batches (best effort: they are
/// diagnostics, the accepted records never depend on them).
pub async fn run_reject_writer<S: Store>(store: Arc<S>, mut rx: mpsc::Receiver<Vec<Reject>>) {
    while let Some(mut rejects) = rx.recv().await {
        while let Ok(more) = rx.try_recv() {
            rejects.extend(more);
            if rejects.len() >= 10_000 {
                break;
            }
        }
        for attempt in 0..5u32 {
            match store.insert_rejects(&rejects).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, attempt, rows = rejects.len(), "could not write usage_rejects");
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
