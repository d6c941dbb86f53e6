//! The spool: a write-ahead log of accepted usage records, between the HTTP accept path and the
//! ClickHouse sink.
//!
//! [`Spool`] owns a directory of segment files (`00000000000000000001.wal`, …) and one writer
//! thread; [`SpoolReader`] reads entries back for the sink; [`SpoolState`] is the checkpoint the
//! sink writes after each committed batch.
//!
//! # Guarantees
//!
//! - **Durable before acknowledged.** [`Spool::append`] returns only after the entry is written
//!   and `fdatasync`'d (group commit: all appends that arrive while one fsync runs share the
//!   next). A record the collector answered `202` for survives `kill -9` and power loss.
//! - **Never misread.** Every entry carries its length, LSN and a CRC-32. Recovery reads each
//!   segment up to the first entry that is incomplete or fails its checksum, truncates the file
//!   there (a torn tail from a crash mid-write), and moves corrupt bytes aside to a `.corrupt`
//!   file for inspection instead of guessing.
//! - **Deduplicated.** Each record's `event_id` is checked against every id in the spool's
//!   retained segments; a segment is retained until its records are committed to ClickHouse
//!   *and* it closed longer ago than the dedup window. The id sets are rebuilt from disk on
//!   start, so the window survives restarts. This is the accept-time memory (the `duplicates`
//!   count of a 202); what makes storage exactly once past this window and across collectors
//!   is the sink's check against `usage_events` before every insert ([`crate::sink`]).
//! - **Bounded.** [`Spool::unsent_bytes`] is what is durable but not yet committed; the accept
//!   path refuses new batches above the high-water mark (backpressure), so an outage of
//!   ClickHouse fills the disk only up to a configured size.
//! - **Deleted only when safe.** A segment file is removed only after every entry in it has a
//!   committed LSN ([`Spool::commit`]).
//!
//! If a write or fsync fails, the spool stops accepting (every append fails and readiness goes
//! down) rather than continue with an unknown state; a restart recovers from disk.

mod entry;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::ops::Range;
use tokio::sync::{oneshot, Notify};
use tollgate_clickhouse::EncodedEvent;
use usage_core::UsageRecord;
use uuid::Uuid;

pub use entry::Entry;
use entry::Stop;

/// How a spool is laid out and bounded.
#[derive(Clone, Debug)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// A segment is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// Unsent bytes above which new batches are refused.
    pub high_water_bytes: u64,
    /// How long an `event_id` is remembered after its segment closed.
    pub dedup_window: Duration,
    /// `fdatasync` before acknowledging (turn off only for throwaway benchmarks).
    pub fsync: bool,
}

/// Spool failures. Messages are for logs; clients get a generic 503.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    #[error("spool I/O error at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("spool state file {path} is invalid: {reason}")]
    State { path: PathBuf, reason: String },
    #[error("spool has failed and accepts nothing until restart: {0}")]
    Failed(String),
    #[error("spool writer has stopped")]
    Stopped,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The result of one append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Records written (durably) by this append.
    pub accepted: usize,
    /// Indices (into the appended records) of records already in the spool.
    pub duplicates: Vec<usize>,
    /// The entry's LSN, if anything was written.
    pub lsn: Option<u64>,
}

/// A batch the sink is inserting: recorded before the insert so that after a crash the sink
/// can find out whether it reached ClickHouse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingBatch {
    pub batch_id: String,
    pub first_lsn: u64,
    pub last_lsn: u64,
    pub rows: u64,
}

/// The checkpoint file (`spool.state`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolState {
    /// Names this spool in batch ids, so that two collectors never produce the same id.
    pub spool_id: String,
    /// Every entry up to this LSN is in ClickHouse.
    pub committed_lsn: u64,
    #[serde(default)]
    pub pending: Option<PendingBatch>,
}

#[derive(Debug, Clone)]
struct SegmentMeta {
    path: PathBuf,
    first_lsn: Option<u64>,
    last_lsn: Option<u64>,
    closed_at: Option<SystemTime>,
}

struct Shared {
    dir: PathBuf,
    state_path: PathBuf,
    spool_id: String,
    durable_lsn: AtomicU64,
    committed_lsn: AtomicU64,
    /// Bytes of durable entries above the committed LSN.
    unsent_bytes: AtomicU64,
    segments: Mutex<BTreeMap<u64, SegmentMeta>>,
    failed: Mutex<Option<String>>,
    new_data: Notify,
    state_lock: Mutex<()>,
    /// (last LSN of a group commit, when it became durable), for the oldest-unsent age.
    unsent_since: Mutex<VecDeque<(u64, Instant)>>,
}

/// What recovery found, for the log and for the sink.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    pub segments: usize,
    pub entries: u64,
    pub unsent_entries: u64,
    pub torn_bytes_truncated: u64,
    pub corrupt_bytes_moved: u64,
    pub pending: Option<PendingBatch>,
}

/// Records to append: each one's `event_id` and its `usage_events` row (RowBinary, encoded by
/// the accept path), as a range of a shared buffer. Entry formats: `entry.rs`.
#[derive(Clone, Debug)]
pub struct AppendBatch {
    body: Bytes,
    items: Vec<(Uuid, Range<usize>)>,
}

impl AppendBatch {
    /// `items` are (event id, byte range of the record's encoded row in `body`): rows made by
    /// [`tollgate_clickhouse::EncodedEvent::encode_into`].
    pub fn new(body: Bytes, items: Vec<(Uuid, Range<usize>)>) -> Self {
        AppendBatch { body, items }
    }

    /// Encodes `records` (for callers that hold records rather than encoded rows).
    pub fn from_records(records: &[UsageRecord]) -> Self {
        let mut body = Vec::with_capacity(records.len() * 300);
        let items = records
            .iter()
            .map(|r| (r.event_id, EncodedEvent::encode_into(r, &mut body)))
            .collect();
        AppendBatch {
            body: Bytes::from(body),
            items,
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

struct AppendRequest {
    batch: AppendBatch,
    reply: oneshot::Sender<Result<AppendOutcome, SpoolError>>,
}

/// The write-ahead log. Cheap to clone; all clones share one writer thread.
#[derive(Clone)]
pub struct Spool {
    tx: mpsc::Sender<AppendRequest>,
    shared: Arc<Shared>,
    config: Arc<SpoolConfig>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.shared.dir)
            .finish_non_exhaustive()
    }
}

impl Spool {
    /// Opens (recovering) or creates the spool in `config.dir` and starts its writer thread.
    pub fn open(config: SpoolConfig) -> Result<(Spool, Recovery), SpoolError> {
        let dir = config.dir.clone();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let state_path = dir.join("spool.state");
        let state = match fs::read(&state_path) {
            Ok(bytes) => {
                serde_json::from_slice::<SpoolState>(&bytes).map_err(|e| SpoolError::State {
                    path: state_path.clone(),
                    reason: e.to_string(),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let s = SpoolState {
                    spool_id: Uuid::new_v4().simple().to_string()[..12].to_string(),
                    committed_lsn: 0,
                    pending: None,
                };
                write_state(&state_path, &dir, &s)?;
                s
            }
            Err(e) => return Err(io_err(&state_path)(e)),
        };

        let mut recovery = Recovery {
            pending: state.pending.clone(),
            ..Recovery::default()
        };
        let mut segments = BTreeMap::new();
        let mut dedup: VecDeque<(u64, HashSet<Uuid>)> = VecDeque::new();
        let mut last_lsn = state.committed_lsn;
        let mut unsent_bytes = 0u64;
        for (seq, path) in list_segments(&dir)? {
            let scan = scan_segment(&path, &mut recovery)?;
            if scan.first_lsn.is_none() {
                fs::remove_file(&path).map_err(io_err(&path))?;
                continue;
            }
            for (lsn, len) in &scan.entry_lens {
                if *lsn > state.committed_lsn {
                    unsent_bytes += len;
                    recovery.unsent_entries += 1;
                }
            }
            last_lsn = last_lsn.max(scan.last_lsn.unwrap_or(0));
            let closed_at = fs::metadata(&path).and_then(|m| m.modified()).ok();
            segments.insert(
                seq,
                SegmentMeta {
                    path,
                    first_lsn: scan.first_lsn,
                    last_lsn: scan.last_lsn,
                    closed_at: closed_at.or(Some(SystemTime::now())),
                },
            );
            dedup.push_back((seq, scan.ids));
        }
        recovery.segments = segments.len();
        sync_dir(&dir)?;

        let next_seq = segments.keys().next_back().map_or(1, |s| s + 1);
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            state_path,
            spool_id: state.spool_id.clone(),
            durable_lsn: AtomicU64::new(last_lsn),
            committed_lsn: AtomicU64::new(state.committed_lsn),
            unsent_bytes: AtomicU64::new(unsent_bytes),
            segments: Mutex::new(segments),
            failed: Mutex::new(None),
            new_data: Notify::new(),
            state_lock: Mutex::new(()),
            // Recovered entries count as unsent since now (their true age is unknown).
            unsent_since: Mutex::new(if last_lsn > state.committed_lsn {
                VecDeque::from([(last_lsn, Instant::now())])
            } else {
                VecDeque::new()
            }),
        });
        let config = Arc::new(config);
        let mut writer = Writer::new(
            shared.clone(),
            config.clone(),
            next_seq,
            last_lsn + 1,
            dedup,
        )?;
        let (tx, rx) = mpsc::channel::<AppendRequest>();
        std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(io_err(&dir))?;
        Ok((Spool { tx, shared, config }, recovery))
    }

    /// Durably appends `records` (minus duplicates) as one entry. Resolves after the fsync.
    pub async fn append(&self, batch: AppendBatch) -> Result<AppendOutcome, SpoolError> {
        if let Some(reason) = self.failure() {
            return Err(SpoolError::Failed(reason));
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(AppendRequest { batch, reply })
            .map_err(|_| SpoolError::Stopped)?;
        rx.await.map_err(|_| SpoolError::Stopped)?
    }

    /// A reader positioned after the committed LSN.
    pub fn reader(&self) -> SpoolReader {
        SpoolReader {
            shared: self.shared.clone(),
            next_lsn: self.committed_lsn() + 1,
            position: None,
        }
    }

    pub fn spool_id(&self) -> &str {
        &self.shared.spool_id
    }

    pub fn durable_lsn(&self) -> u64 {
        self.shared.durable_lsn.load(Ordering::Acquire)
    }

    pub fn committed_lsn(&self) -> u64 {
        self.shared.committed_lsn.load(Ordering::Acquire)
    }

    /// Durable bytes not yet committed to ClickHouse.
    pub fn unsent_bytes(&self) -> u64 {
        self.shared.unsent_bytes.load(Ordering::Relaxed)
    }

    pub fn over_high_water(&self) -> bool {
        self.unsent_bytes() > self.config.high_water_bytes
    }

    pub fn high_water_bytes(&self) -> u64 {
        self.config.high_water_bytes
    }

    /// How long the oldest durable-but-uncommitted record has waited (zero when none).
    pub fn oldest_unsent_age(&self) -> Duration {
        self.shared
            .unsent_since
            .lock()
            .ok()
            .and_then(|q| q.front().map(|(_, t)| t.elapsed()))
            .unwrap_or_default()
    }

    /// Why the spool stopped accepting, if it did.
    pub fn failure(&self) -> Option<String> {
        self.shared.failed.lock().ok().and_then(|f| f.clone())
    }

    /// Resolves when entries past `lsn` are durable (or at once if they already are).
    pub async fn wait_for_data_after(&self, lsn: u64) {
        let notified = self.shared.new_data.notified();
        if self.durable_lsn() > lsn {
            return;
        }
        notified.await;
    }

    /// Records that a batch is about to be inserted (before the insert).
    pub fn begin_batch(&self, pending: PendingBatch) -> Result<(), SpoolError> {
        self.write_state(self.committed_lsn(), Some(pending))
    }

    /// Records that every entry up to `lsn` is in ClickHouse and frees the bytes they held.
    /// `bytes` is the disk size of the entries committed by this call.
    pub fn commit(&self, lsn: u64, bytes: u64) -> Result<(), SpoolError> {
        self.write_state(lsn, None)?;
        let previous = self.shared.committed_lsn.fetch_max(lsn, Ordering::AcqRel);
        if let Ok(mut q) = self.shared.unsent_since.lock() {
            while q.front().is_some_and(|(l, _)| *l <= lsn) {
                q.pop_front();
            }
        }
        if lsn > previous {
            let _ =
                self.shared
                    .unsent_bytes
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                        Some(v.saturating_sub(bytes))
                    });
        }
        Ok(())
    }

    /// The checkpoint as it is on disk.
    pub fn state(&self) -> Result<SpoolState, SpoolError> {
        let bytes = fs::read(&self.shared.state_path).map_err(io_err(&self.shared.state_path))?;
        serde_json::from_slice(&bytes).map_err(|e| SpoolError::State {
            path: self.shared.state_path.clone(),
            reason: e.to_string(),
        })
    }

    /// Segment files currently on disk.
    pub fn segment_count(&self) -> usize {
        self.shared.segments.lock().map(|s| s.len()).unwrap_or(0)
    }

    fn write_state(
        &self,
        committed_lsn: u64,
        pending: Option<PendingBatch>,
    ) -> Result<(), SpoolError> {
        let _guard = self
            .shared
            .state_lock
            .lock()
            .map_err(|_| SpoolError::Stopped)?;
        let state = SpoolState {
            spool_id: self.shared.spool_id.clone(),
            committed_lsn: committed_lsn.max(self.committed_lsn()),
            pending,
        };
        write_state(&self.shared.state_path, &self.shared.dir, &state)
    }
}

/// Writes the state file atomically: temp file, fsync, rename, fsync the directory.
fn write_state(path: &Path, dir: &Path, state: &SpoolState) -> Result<(), SpoolError> {
    let tmp = path.with_extension("state.tmp");
    let bytes = serde_json::to_vec(state).map_err(|e| SpoolError::State {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(&bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.wal"))
}

fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, SpoolError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        let seq = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(seq) = seq {
            out.push((seq, path));
        }
    }
    out.sort();
    Ok(out)
}

struct SegmentScan {
    first_lsn: Option<u64>,
    last_lsn: Option<u64>,
    entry_lens: Vec<(u64, u64)>,
    ids: HashSet<Uuid>,
}

/// Reads a segment to its last intact entry, truncating (and keeping aside) anything after.
fn scan_segment(path: &Path, recovery: &mut Recovery) -> Result<SegmentScan, SpoolError> {
    let file = File::open(path).map_err(io_err(path))?;
    let file_len = file.metadata().map_err(io_err(path))?.len();
    let mut reader = BufReader::new(file);
    let mut scan = SegmentScan {
        first_lsn: None,
        last_lsn: None,
        entry_lens: Vec::new(),
        ids: HashSet::new(),
    };
    let mut good_len = 0u64;
    let stop = loop {
        match entry::read_entry(&mut reader).map_err(io_err(path))? {
            Ok(e) => {
                if scan.last_lsn.is_some_and(|last| e.lsn <= last) {
                    break Stop::Corrupt; // LSNs only grow within a segment
                }
                scan.first_lsn.get_or_insert(e.lsn);
                scan.last_lsn = Some(e.lsn);
                scan.entry_lens.push((e.lsn, e.disk_len));
                scan.ids.extend(e.event_ids());
                good_len += e.disk_len;
                recovery.entries += 1;
            }
            Err(stop) => break stop,
        }
    };
    if good_len < file_len {
        let lost = file_len - good_len;
        if stop == Stop::Corrupt {
            let aside = path.with_extension(format!("corrupt-{good_len}"));
            let bytes = fs::read(path).map_err(io_err(path))?;
            fs::write(&aside, &bytes[good_len as usize..]).map_err(io_err(&aside))?;
            recovery.corrupt_bytes_moved += lost;
            tracing::error!(segment = %path.display(), offset = good_len, bytes = lost,
                kept_in = %aside.display(), "spool segment has corrupt bytes; moved aside");
        } else {
            recovery.torn_bytes_truncated += lost;
            tracing::warn!(segment = %path.display(), offset = good_len, bytes = lost,
                "spool segment ends in a torn write; truncated");
        }
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        f.set_len(good_len).map_err(io_err(path))?;
        f.sync_all().map_err(io_err(path))?;
    }
    Ok(scan)
}

/// The writer thread's state: the open segment and the dedup sets.
struct Writer {
    shared: Arc<Shared>,
    config: Arc<SpoolConfig>,
    seq: u64,
    file: File,
    path: PathBuf,
    bytes: u64,
    opened_at: SystemTime,
    next_lsn: u64,
    /// Ids per retained segment (oldest first), plus the open segment's.
    dedup: VecDeque<(u64, HashSet<Uuid>)>,
    current_ids: HashSet<Uuid>,
    buf: Vec<u8>,
}

impl Writer {
    fn new(
        shared: Arc<Shared>,
        config: Arc<SpoolConfig>,
        seq: u64,
        next_lsn: u64,
        dedup: VecDeque<(u64, HashSet<Uuid>)>,
    ) -> Result<Writer, SpoolError> {
        let (file, path) = Self::create_segment(&shared, seq)?;
        Ok(Writer {
            shared,
            config,
            seq,
            file,
            path,
            bytes: 0,
            opened_at: SystemTime::now(),
            next_lsn,
            dedup,
            current_ids: HashSet::new(),
            buf: Vec::with_capacity(1 << 20),
        })
    }

    fn create_segment(shared: &Shared, seq: u64) -> Result<(File, PathBuf), SpoolError> {
        let path = segment_path(&shared.dir, seq);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        sync_dir(&shared.dir)?;
        if let Ok(mut segs) = shared.segments.lock() {
            segs.insert(
                seq,
                SegmentMeta {
                    path: path.clone(),
                    first_lsn: None,
                    last_lsn: None,
                    closed_at: None,
                },
            );
        }
        Ok((file, path))
    }

    fn run(&mut self, rx: mpsc::Receiver<AppendRequest>) {
        loop {
            let first = match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(req) => req,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.housekeeping();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            // Group commit: everything already queued shares this write and fsync.
            let mut group = vec![first];
            while group.len() < 1024 {
                match rx.try_recv() {
                    Ok(req) => group.push(req),
                    Err(_) => break,
                }
            }
            self.write_group(group);
            self.housekeeping();
        }
    }

    fn is_duplicate(&self, id: &Uuid) -> bool {
        self.current_ids.contains(id) || self.dedup.iter().any(|(_, ids)| ids.contains(id))
    }

    fn write_group(&mut self, group: Vec<AppendRequest>) {
        if let Some(reason) = self.shared.failed.lock().ok().and_then(|f| f.clone()) {
            for req in group {
                let _ = req.reply.send(Err(SpoolError::Failed(reason.clone())));
            }
            return;
        }
        if self.bytes >= self.config.segment_bytes {
            if let Err(e) = self.rotate() {
                self.fail(group, e);
                return;
            }
        }
        self.buf.clear();
        let mut outcomes = Vec::with_capacity(group.len());
        let mut last_lsn = None;
        let mut appended = 0u64;
        for req in &group {
            let mut duplicates = Vec::new();
            // The payload is the fresh records' encoded rows, as the accept path encoded them.
            let mut payload = Vec::with_capacity(req.batch.body.len() + 4 * req.batch.len());
            let mut fresh = 0usize;
            for (i, (id, range)) in req.batch.items.iter().enumerate() {
                if self.is_duplicate(id) {
                    duplicates.push(i);
                } else if let Some(row) = req.batch.body.get(range.clone()) {
                    self.current_ids.insert(*id);
                    entry::push_row(&mut payload, row);
                    fresh += 1;
                }
            }
            let lsn = if fresh == 0 {
                None
            } else {
                let lsn = self.next_lsn;
                self.next_lsn += 1;
                let before = self.buf.len();
                entry::encode(lsn, entry::Format::EncodedRows, &payload, &mut self.buf);
                appended += (self.buf.len() - before) as u64;
                last_lsn = Some(lsn);
                Some(lsn)
            };
            outcomes.push(AppendOutcome {
                accepted: fresh,
                duplicates,
                lsn,
            });
        }
        if let Some(last) = last_lsn {
            let written = self.file.write_all(&self.buf).and_then(|()| {
                if self.config.fsync {
                    self.file.sync_data()
                } else {
                    Ok(())
                }
            });
            if let Err(e) = written {
                let path = self.path.clone();
                self.fail(group, io_err(&path)(e));
                return;
            }
            self.bytes += appended;
            if let Ok(mut segs) = self.shared.segments.lock() {
                if let Some(meta) = segs.get_mut(&self.seq) {
                    meta.first_lsn
                        .get_or_insert(outcomes.iter().find_map(|o| o.lsn).unwrap_or(last));
                    meta.last_lsn = Some(last);
                }
            }
            self.shared
                .unsent_bytes
                .fetch_add(appended, Ordering::AcqRel);
            if let Ok(mut q) = self.shared.unsent_since.lock() {
                q.push_back((last, Instant::now()));
            }
            self.shared.durable_lsn.store(last, Ordering::Release);
            self.shared.new_data.notify_waiters();
        }
        for (req, outcome) in group.into_iter().zip(outcomes) {
            let _ = req.reply.send(Ok(outcome));
        }
    }

    fn fail(&mut self, group: Vec<AppendRequest>, error: SpoolError) {
        let reason = error.to_string();
        tracing::error!(error = %reason, "spool write failed; refusing further appends until restart");
        if let Ok(mut f) = self.shared.failed.lock() {
            *f = Some(reason.clone());
        }
        for req in group {
            let _ = req.reply.send(Err(SpoolError::Failed(reason.clone())));
        }
    }

    fn rotate(&mut self) -> Result<(), SpoolError> {
        let closed_at = SystemTime::now();
        if let Ok(mut segs) = self.shared.segments.lock() {
            if let Some(meta) = segs.get_mut(&self.seq) {
                meta.closed_at = Some(closed_at);
            }
        }
        let ids = std::mem::take(&mut self.current_ids);
        self.dedup.push_back((self.seq, ids));
        self.seq += 1;
        let (file, path) = Self::create_segment(&self.shared, self.seq)?;
        self.file = file;
        self.path = path;
        self.bytes = 0;
        self.opened_at = closed_at;
        Ok(())
    }

    /// Closes an old open segment and deletes segments that are committed and past the window.
    fn housekeeping(&mut self) {
        let now = SystemTime::now();
        let window = self.config.dedup_window;
        let open_for = now.duration_since(self.opened_at).unwrap_or_default();
        if self.bytes > 0 && open_for > window.max(Duration::from_secs(60)) {
            if let Err(e) = self.rotate() {
                tracing::error!(error = %e, "spool rotation failed");
                return;
            }
        }
        let committed = self.shared.committed_lsn.load(Ordering::Acquire);
        let deletable: Vec<(u64, PathBuf)> = match self.shared.segments.lock() {
            Ok(segs) => segs
                .iter()
                .filter(|(seq, meta)| {
                    **seq != self.seq
                        && meta.last_lsn.is_none_or(|l| l <= committed)
                        && meta
                            .closed_at
                            .is_some_and(|c| now.duration_since(c).unwrap_or_default() >= window)
                })
                .map(|(seq, meta)| (*seq, meta.path.clone()))
                .collect(),
            Err(_) => return,
        };
        for (seq, path) in deletable {
            match fs::remove_file(&path) {
                Ok(()) => {
                    if let Ok(mut segs) = self.shared.segments.lock() {
                        segs.remove(&seq);
                    }
                    self.dedup.retain(|(s, _)| *s != seq);
                }
                Err(e) => {
                    tracing::warn!(segment = %path.display(), error = %e, "could not delete committed segment")
                }
            }
        }
    }
}

/// Reads durable entries in LSN order, for the sink.
#[derive(Debug)]
pub struct SpoolReader {
    shared: Arc<Shared>,
    next_lsn: u64,
    /// (segment seq, byte offset of `next_lsn`'s entry) when known.
    position: Option<(u64, u64)>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl SpoolReader {
    /// The LSN of the next entry [`read`](Self::read) returns.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Repositions to read from `lsn` on.
    pub fn seek(&mut self, lsn: u64) {
        self.next_lsn = lsn;
        self.position = None;
    }

    /// Up to `max_bytes` (at least one entry, if any) of durable entries from `next_lsn` on.
    pub fn read(&mut self, max_bytes: u64) -> Result<Vec<Entry>, SpoolError> {
        let durable = self.shared.durable_lsn.load(Ordering::Acquire);
        let mut out = Vec::new();
        let mut bytes = 0u64;
        while self.next_lsn <= durable && (out.is_empty() || bytes < max_bytes) {
            let Some((seq, offset)) = self.locate()? else {
                break;
            };
            let path = match self.shared.segments.lock() {
                Ok(segs) => match segs.get(&seq) {
                    Some(m) => m.path.clone(),
                    None => break,
                },
                Err(_) => return Err(SpoolError::Stopped),
            };
            let mut file = File::open(&path).map_err(io_err(&path))?;
            file.seek(SeekFrom::Start(offset)).map_err(io_err(&path))?;
            let mut reader = BufReader::with_capacity(256 << 10, file);
            let mut pos = offset;
            let mut progressed = false;
            while self.next_lsn <= durable && (out.is_empty() || bytes < max_bytes) {
                match entry::read_entry(&mut reader).map_err(io_err(&path))? {
                    Ok(e) if e.lsn < self.next_lsn => pos += e.disk_len,
                    Ok(e) => {
                        pos += e.disk_len;
                        bytes += e.disk_len;
                        self.next_lsn = e.lsn + 1;
                        out.push(e);
                        progressed = true;
                    }
                    Err(_) => break,
                }
            }
            self.position = Some((seq, pos));
            if !progressed {
                // This segment holds nothing more for us: move to the next one, if any.
                let next = match self.shared.segments.lock() {
                    Ok(segs) => segs.range(seq + 1..).next().map(|(s, _)| *s),
                    Err(_) => None,
                };
                match next {
                    Some(s) => self.position = Some((s, 0)),
                    None => break,
                }
            }
        }
        Ok(out)
    }

    /// The segment and offset to read `next_lsn` from.
    fn locate(&mut self) -> Result<Option<(u64, u64)>, SpoolError> {
        if let Some(p) = self.position {
            return Ok(Some(p));
        }
        let segs = self
            .shared
            .segments
            .lock()
            .map_err(|_| SpoolError::Stopped)?;
        let found = segs
            .iter()
            .find(|(_, m)| m.last_lsn.is_some_and(|l| l >= self.next_lsn))
            .map(|(s, _)| (*s, 0));
        Ok(found)
    }
}

#[cfg(test)]
mod tests;
