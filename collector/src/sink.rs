//! The sink: spool → ClickHouse, in batches, exactly once per batch across crashes.
//!
//! [`Sink`] reads durable entries from the spool and gathers them into a batch until it holds
//! `max_rows` rows or `max_bytes` spool bytes, or its first entry has waited `max_delay`. Then:
//!
//! 1. The batch's identity — `batch_id = <spool id>-<first LSN>-<last LSN>` and its time range —
//!    is written to the spool's checkpoint ([`Spool::begin_batch`]) *before* the insert.
//! 2. The rows are inserted with `batch_id` in every row.
//! 3. The batch is recorded in `ingest_batches`, and the checkpoint moves past it
//!    ([`Spool::commit`]), which lets the spool delete the segments.
//!
//! A crash between 1 and 3 leaves a pending batch in the checkpoint. On start — and before any
//! retry of a failed insert, since a timed-out insert may still have landed — the sink asks
//! ClickHouse which `event_id`s of that batch are already stored and inserts only the others.
//! Hence every record is stored once, whatever fails when.
//!
//! Failures are classified by [`StoreError`] (the retry decision): transient ones (network,
//! server overload, a missing table during a deploy) are retried forever with jittered
//! exponential backoff while the spool absorbs incoming records; data errors are not retried —
//! the batch goes to `usage_rejects` with the server's message.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
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
    pub min_ts: OffsetDateTime,
    pub max_ts: OffsetDateTime,
}

/// Where batches go: ClickHouse in production ([`crate::store::ClickHouseStore`]), a fault
/// injecting double in tests.
pub trait Store: Send + Sync + 'static {
    /// Inserts `rows` tagged with `batch_id`, as one insert.
    fn insert_events(
        &self,
        batch_id: &str,
        rows: &[EncodedEvent],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The `event_id`s already stored under `batch_id` (rows have `ts` within the range).
    fn batch_event_ids(
        &self,
        batch_id: &str,
        min_ts: OffsetDateTime,
        max_ts: OffsetDateTime,
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
        }
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
        mut check_first: bool,
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
                .insert_once(&batch_id, &batch.records, min_ts, max_ts, check_first)
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
                    check_first = true;
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
                    check_first = true;
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

    /// One attempt; with `check_first`, inserts only the rows not already stored under the id.
    async fn insert_once(
        &self,
        batch_id: &str,
        records: &[EncodedEvent],
        min_ts: OffsetDateTime,
        max_ts: OffsetDateTime,
        check_first: bool,
    ) -> Result<u64, StoreError> {
        if !check_first {
            self.store.insert_events(batch_id, records).await?;
            return Ok(records.len() as u64);
        }
        let stored = self.store.batch_event_ids(batch_id, min_ts, max_ts).await?;
        let missing: Vec<EncodedEvent> = records
            .iter()
            .filter(|r| !stored.contains(&r.event_id()))
            .cloned()
            .collect();
        if !stored.is_empty() {
            tracing::info!(
                batch_id,
                already = stored.len(),
                missing = missing.len(),
                "batch partly or wholly stored before; inserting the rest"
            );
        }
        if !missing.is_empty() {
            self.store.insert_events(batch_id, &missing).await?;
        }
        Ok(records.len() as u64)
    }

    async fn dead_letter(&self, records: &[EncodedEvent], error: &str) {
        let now = OffsetDateTime::now_utc();
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

fn time_range(records: &[EncodedEvent]) -> (OffsetDateTime, OffsetDateTime) {
    let min = records
        .iter()
        .map(EncodedEvent::ts)
        .min()
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let max = records
        .iter()
        .map(EncodedEvent::ts)
        .max()
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
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
