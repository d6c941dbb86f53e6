//! The sink against a store double that fails on command.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;

use super::*;
use crate::spool::{AppendBatch, SpoolConfig};
use crate::testdata::record;

/// An in-memory store: rows by event id with their batch id, and scripted failures.
#[derive(Default)]
struct FakeStore {
    rows: Mutex<Vec<(Uuid, String)>>,
    rejects: Mutex<Vec<Reject>>,
    batches: Mutex<Vec<BatchInfo>>,
    /// Fail the next N inserts *before* storing anything.
    fail_before: AtomicUsize,
    /// Store the rows, then report a transient failure (a timeout after the server committed).
    fail_after: AtomicUsize,
    /// Refuse the data of the next N inserts.
    refuse_data: AtomicUsize,
    /// Report a transient failure for the next N inserts while the "server" goes on running
    /// them: their rows land only after `LANDS_AFTER_POLLS` polls of `running_attempts`.
    still_running: AtomicUsize,
    /// Inserts the server is still running: (batch id, rows, polls until they land).
    running: Mutex<Vec<(String, Vec<Uuid>, usize)>>,
}

/// How many `running_attempts` polls an insert in `FakeStore::running` outlives.
const LANDS_AFTER_POLLS: usize = 3;

fn take(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl FakeStore {
    /// Time passes for the inserts the "server" is still running: each store call brings
    /// them one step closer to landing.
    fn tick(&self) {
        let mut running = self.running.lock().unwrap();
        let mut landed = Vec::new();
        for (b, ids, polls) in running.iter_mut() {
            *polls = polls.saturating_sub(1);
            if *polls == 0 {
                landed.extend(ids.iter().map(|id| (*id, b.clone())));
            }
        }
        running.retain(|(_, _, polls)| *polls > 0);
        self.rows.lock().unwrap().extend(landed);
    }
}

impl Store for FakeStore {
    async fn insert_events(
        &self,
        attempt: &InsertAttempt,
        records: &[EncodedEvent],
    ) -> Result<(), StoreError> {
        let batch_id = attempt.batch_id.as_str();
        if take(&self.still_running) {
            let ids = records.iter().map(EncodedEvent::event_id).collect();
            self.running
                .lock()
                .unwrap()
                .push((batch_id.to_string(), ids, LANDS_AFTER_POLLS));
            return Err(StoreError::Transient("timeout waiting for response".into()));
        }
        self.tick();
        if take(&self.fail_before) {
            return Err(StoreError::Transient("connection refused".into()));
        }
        if take(&self.refuse_data) {
            return Err(StoreError::Data("Code: 53. Type mismatch".into()));
        }
        self.rows
            .lock()
            .unwrap()
            .extend(records.iter().map(|r| (r.event_id(), batch_id.to_string())));
        if take(&self.fail_after) {
            return Err(StoreError::Transient("timeout waiting for response".into()));
        }
        Ok(())
    }

    async fn running_attempts(&self, batch_id: &str) -> Result<u64, StoreError> {
        self.tick();
        let running = self.running.lock().unwrap();
        Ok(running.iter().filter(|(b, _, _)| b == batch_id).count() as u64)
    }

    async fn stored_event_ids(&self, _seconds: &[i64]) -> Result<HashSet<Uuid>, StoreError> {
        self.tick();
        Ok(self
            .rows
            .lock()
            .unwrap()
            .iter()
            .map(|(id, _)| *id)
            .collect())
    }

    async fn record_batch(&self, batch: &BatchInfo) -> Result<(), StoreError> {
        self.tick();
        self.batches.lock().unwrap().push(batch.clone());
        Ok(())
    }

    async fn insert_rejects(&self, rejects: &[Reject]) -> Result<(), StoreError> {
        self.rejects.lock().unwrap().extend(rejects.iter().cloned());
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

fn sink_config() -> SinkConfig {
    SinkConfig {
        max_rows: 50,
        max_bytes: 1 << 20,
        max_delay_ms: 20,
        retry_initial_ms: 1,
        retry_max_ms: 5,
    }
}

fn open(dir: &std::path::Path) -> Spool {
    Spool::open(SpoolConfig {
        dir: dir.to_path_buf(),
        segment_bytes: 1 << 16,
        high_water_bytes: 1 << 30,
        dedup_window: Duration::from_secs(600),
        fsync: false,
    })
    .unwrap()
    .0
}

/// Runs the sink until the spool is committed up to its durable LSN.
async fn run_until_drained(spool: &Spool, store: Arc<FakeStore>) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let health = Arc::new(StoreHealth::default());
    let sink = Sink::new(
        spool.clone(),
        store,
        sink_config(),
        Metrics::default(),
        health,
    );
    let task = tokio::spawn(sink.run(stop_rx, Duration::from_secs(5)));
    let deadline = Instant::now() + Duration::from_secs(10);
    while spool.committed_lsn() < spool.durable_lsn() {
        assert!(Instant::now() < deadline, "sink did not drain");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop_tx.send(true).unwrap();
    task.await.unwrap().unwrap();
}

/// A spool in `dir` holding one entry per `(first, end)` range of test records.
async fn spool_with(dir: &std::path::Path, entries: &[(u128, u128)]) -> Spool {
    let spool = open(dir);
    for &(first, end) in entries {
        spool
            .append(AppendBatch::from_records(
                &(first..end).map(record).collect::<Vec<_>>(),
            ))
            .await
            .unwrap();
    }
    spool
}

/// The store holds `n` distinct records, each exactly once.
fn assert_each_once(store: &FakeStore, n: usize, why: &str) {
    let c = counts(store);
    assert_eq!(c.len(), n, "{why}");
    assert!(c.values().all(|k| *k == 1), "{why}: a record stored twice");
}

fn counts(store: &FakeStore) -> HashMap<Uuid, usize> {
    let mut m = HashMap::new();
    for (id, _) in store.rows.lock().unwrap().iter() {
        *m.entry(*id).or_default() += 1;
    }
    m
}

#[tokio::test]
async fn every_record_is_stored_once_in_bounded_batches() {
    let dir = tempfile::tempdir().unwrap();
    let entries: Vec<_> = (0..20u128).map(|i| (i * 10, i * 10 + 10)).collect();
    let spool = spool_with(dir.path(), &entries).await;
    let store = Arc::new(FakeStore::default());
    run_until_drained(&spool, store.clone()).await;
    assert_each_once(&store, 200, "20 entries in batches of at most 50");
    let batches = store.batches.lock().unwrap();
    assert!(batches.iter().all(|b| b.rows <= 50), "max_rows respected");
    assert_eq!(batches.iter().map(|b| b.rows).sum::<u64>(), 200);
    assert_eq!(spool.unsent_bytes(), 0);
}

#[tokio::test]
async fn transient_failures_are_retried_and_a_landed_insert_is_not_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let spool = spool_with(dir.path(), &[(0, 30)]).await;
    let store = Arc::new(FakeStore::default());
    store.fail_before.store(3, Ordering::SeqCst);
    store.fail_after.store(1, Ordering::SeqCst);
    run_until_drained(&spool, store.clone()).await;
    assert_each_once(&store, 30, "a retry after a landed insert");
}

#[tokio::test]
async fn a_batch_pending_at_a_crash_is_completed_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let spool = spool_with(dir.path(), &[(0, 10), (10, 20)]).await;
    // The previous process began batch LSN 1..=2, and 7 of its rows reached ClickHouse.
    let batch_id = format!("{}-1-2", spool.spool_id());
    spool
        .begin_batch(PendingBatch {
            batch_id: batch_id.clone(),
            first_lsn: 1,
            last_lsn: 2,
            rows: 20,
        })
        .unwrap();
    let store = Arc::new(FakeStore::default());
    store
        .rows
        .lock()
        .unwrap()
        .extend((0..7).map(|i| (record(i).event_id, batch_id.clone())));
    drop(spool);

    let spool = spool_with(dir.path(), &[(20, 25)]).await;
    run_until_drained(&spool, store.clone()).await;
    assert_each_once(&store, 25, "a batch pending at a crash");
    assert!(spool.state().unwrap().pending.is_none());
}

#[tokio::test]
async fn an_insert_the_server_still_runs_is_waited_for_not_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let spool = spool_with(dir.path(), &[(0, 30)]).await;
    let store = Arc::new(FakeStore::default());
    // The first attempt times out on our side, and the server commits it a little later.
    store.still_running.store(1, Ordering::SeqCst);
    run_until_drained(&spool, store.clone()).await;
    assert_each_once(
        &store,
        30,
        "a retry that must wait for the attempt still running",
    );
}

#[tokio::test]
async fn a_dead_process_insert_still_running_at_restart_is_not_duplicated() {
    let dir = tempfile::tempdir().unwrap();
    let spool = spool_with(dir.path(), &[(0, 10)]).await;
    let batch_id = format!("{}-1-1", spool.spool_id());
    spool
        .begin_batch(PendingBatch {
            batch_id: batch_id.clone(),
            first_lsn: 1,
            last_lsn: 1,
            rows: 10,
        })
        .unwrap();
    drop(spool);
    // SIGKILL after the body was sent: the server is still running that INSERT.
    let store = Arc::new(FakeStore::default());
    store.running.lock().unwrap().push((
        batch_id,
        (0..10).map(|i| record(i).event_id).collect(),
        LANDS_AFTER_POLLS,
    ));
    let spool = open(dir.path());
    run_until_drained(&spool, store.clone()).await;
    assert_each_once(&store, 10, "recovery beside the dead process's insert");
}

#[tokio::test]
async fn records_stored_by_another_batch_are_not_inserted_again() {
    // A re-post accepted after the spool forgot it, or by another collector: ClickHouse
    // already holds 6 of these records under some other batch.
    let dir = tempfile::tempdir().unwrap();
    let spool = spool_with(dir.path(), &[(0, 10)]).await;
    let store = Arc::new(FakeStore::default());
    store
        .rows
        .lock()
        .unwrap()
        .extend((0..6).map(|i| (record(i).event_id, "other-collector-7-9".to_string())));
    run_until_drained(&spool, store.clone()).await;
    assert_each_once(&store, 10, "records another batch stored");
    let batches = store.batches.lock().unwrap();
    assert_eq!(
        batches.iter().map(|b| b.rows).sum::<u64>(),
        4,
        "rows inserted"
    );
}

#[tokio::test]
async fn refused_data_goes_to_rejects_not_into_a_retry_loop() {
    let dir = tempfile::tempdir().unwrap();
    let spool = spool_with(dir.path(), &[(0, 5)]).await;
    let store = Arc::new(FakeStore::default());
    store.refuse_data.store(3, Ordering::SeqCst); // refused every time it is tried
    run_until_drained(&spool, store.clone()).await;
    assert!(store.rows.lock().unwrap().is_empty());
    let rejects = store.rejects.lock().unwrap();
    assert_eq!(rejects.len(), 5);
    assert!(rejects[0].reason.contains("Type mismatch"));
    assert!(rejects[0].raw.contains(&record(0).event_id.to_string()));
}

#[tokio::test]
async fn a_one_off_data_error_is_retried_not_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let spool = spool_with(dir.path(), &[(0, 5)]).await;
    let store = Arc::new(FakeStore::default());
    store.refuse_data.store(1, Ordering::SeqCst);
    run_until_drained(&spool, store.clone()).await;
    assert_eq!(store.rows.lock().unwrap().len(), 5);
    assert!(store.rejects.lock().unwrap().is_empty());
}

#[test]
fn backoff_grows_with_jitter_and_stays_capped() {
    let mut b = Backoff::new(&SinkConfig {
        retry_initial_ms: 100,
        retry_max_ms: 1000,
        ..sink_config()
    });
    let delays: Vec<u64> = (0..8).map(|_| b.next().as_millis() as u64).collect();
    assert!((50..=100).contains(&delays[0]));
    assert!((100..=200).contains(&delays[1]));
    assert!(
        delays[4..].iter().all(|d| (500..=1000).contains(d)),
        "{delays:?}"
    );
}
