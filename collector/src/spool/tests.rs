use std::io::Write as _;
use std::time::Duration;

use proptest::prelude::*;
use usage_core::UsageRecord;

use super::*;
use crate::testdata::record;

fn config(dir: &Path) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_path_buf(),
        segment_bytes: 4096,
        high_water_bytes: 1 << 20,
        dedup_window: Duration::from_secs(600),
        fsync: true,
    }
}

fn records(ids: std::ops::Range<u128>) -> Vec<UsageRecord> {
    ids.map(record).collect()
}

fn batch_of(ids: std::ops::Range<u128>) -> AppendBatch {
    AppendBatch::from_records(&records(ids))
}

fn read_all(spool: &Spool) -> Vec<u128> {
    let mut reader = spool.reader();
    let mut ids = Vec::new();
    loop {
        let entries = reader.read(1 << 20).unwrap();
        if entries.is_empty() {
            return ids;
        }
        for e in entries {
            ids.extend(e.event_ids().into_iter().map(crate::testdata::id_of));
        }
    }
}

#[tokio::test]
async fn appended_records_read_back_in_order_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, rec) = Spool::open(config(dir.path())).unwrap();
    assert_eq!(rec.entries, 0);
    for chunk in 0..20u128 {
        let out = spool
            .append(batch_of(chunk * 10..chunk * 10 + 10))
            .await
            .unwrap();
        assert_eq!((out.accepted, out.duplicates.len()), (10, 0));
    }
    assert!(spool.segment_count() > 1, "small segments rotate");
    assert_eq!(read_all(&spool), (0..200).collect::<Vec<_>>());
    drop(spool);

    let (spool, rec) = Spool::open(config(dir.path())).unwrap();
    assert_eq!((rec.entries, rec.unsent_entries), (20, 20));
    assert_eq!(read_all(&spool), (0..200).collect::<Vec<_>>());
    assert!(spool.unsent_bytes() > 0);
}

#[tokio::test]
async fn duplicates_are_dropped_within_a_batch_across_batches_and_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(dir.path())).unwrap();
    let mut batch = records(0..5);
    batch.push(record(2));
    let out = spool
        .append(AppendBatch::from_records(&batch))
        .await
        .unwrap();
    assert_eq!((out.accepted, out.duplicates), (5, vec![5]));
    let out = spool.append(batch_of(3..8)).await.unwrap();
    assert_eq!((out.accepted, out.duplicates), (3, vec![0, 1]));
    drop(spool);

    let (spool, _) = Spool::open(config(dir.path())).unwrap();
    let out = spool.append(batch_of(0..10)).await.unwrap();
    assert_eq!((out.accepted, out.duplicates.len()), (2, 8));
    let out = spool.append(batch_of(0..3)).await.unwrap();
    assert_eq!((out.accepted, out.lsn), (0, None));
    assert_eq!(read_all(&spool), (0..10).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_torn_tail_is_truncated_and_corrupt_bytes_are_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(dir.path())).unwrap();
    spool.append(batch_of(0..3)).await.unwrap();
    drop(spool);
    let (_, seg) = list_segments(dir.path()).unwrap().pop().unwrap();
    // a crash mid-write: half an entry
    let mut torn = Vec::new();
    entry::encode(99, entry::Format::EncodedRows, b"\x10\0\0\0rows", &mut torn);
    OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all(&torn[..15])
        .unwrap();

    let (spool, rec) = Spool::open(config(dir.path())).unwrap();
    assert_eq!(
        (
            rec.entries,
            rec.torn_bytes_truncated,
            rec.corrupt_bytes_moved
        ),
        (1, 15, 0)
    );
    assert_eq!(read_all(&spool), vec![0, 1, 2]);
    spool.append(batch_of(3..4)).await.unwrap();
    drop(spool);

    // garbage in the middle of the newest segment
    let (_, seg) = list_segments(dir.path()).unwrap().pop().unwrap();
    OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all(&[0xAB; 64])
        .unwrap();
    let (spool, rec) = Spool::open(config(dir.path())).unwrap();
    assert_eq!(rec.corrupt_bytes_moved, 64);
    assert_eq!(read_all(&spool), vec![0, 1, 2, 3]);
    let aside = fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("corrupt")
        })
        .count();
    assert_eq!(aside, 1);
}

#[tokio::test]
async fn committed_segments_are_deleted_only_after_commit_and_window() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.dedup_window = Duration::ZERO;
    let (spool, _) = Spool::open(cfg.clone()).unwrap();
    for i in 0..30u128 {
        spool.append(batch_of(i * 10..i * 10 + 10)).await.unwrap();
    }
    let segments_before = spool.segment_count();
    assert!(segments_before > 3);
    // nothing committed: nothing deleted, even after housekeeping ran
    tokio::time::sleep(Duration::from_millis(1200)).await;
    spool.append(batch_of(1000..1001)).await.unwrap();
    assert_eq!(
        spool.segment_count(),
        segments_before + usize::from(spool.segment_count() > segments_before)
    );

    let mut reader = spool.reader();
    let entries = reader.read(u64::MAX).unwrap();
    let bytes: u64 = entries.iter().map(|e| e.disk_len).sum();
    let last = entries.last().unwrap().lsn;
    spool.commit(last, bytes).unwrap();
    assert_eq!(spool.unsent_bytes(), 0);
    assert_eq!(spool.state().unwrap().committed_lsn, last);
    // the next append triggers housekeeping in the writer
    tokio::time::sleep(Duration::from_millis(1200)).await;
    spool.append(batch_of(2000..2001)).await.unwrap();
    assert!(
        spool.segment_count() <= 2,
        "{} segments left",
        spool.segment_count()
    );

    // after a restart only the uncommitted entry is unsent
    drop(spool);
    let (spool, rec) = Spool::open(cfg).unwrap();
    assert_eq!(rec.unsent_entries, 1);
    assert_eq!(read_all(&spool), vec![2000]);
}

#[tokio::test]
async fn concurrent_appends_share_fsyncs_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(dir.path())).unwrap();
    let mut tasks = Vec::new();
    for t in 0..16u128 {
        let spool = spool.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20u128 {
                let base = (t * 20 + i) * 5;
                spool.append(batch_of(base..base + 5)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut ids = read_all(&spool);
    ids.sort_unstable();
    assert_eq!(ids, (0..1600).collect::<Vec<_>>());
}

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<u128>),
    Commit,
    /// Restart after a torn, never-acknowledged write of this many bytes.
    Crash(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec(0u128..60, 1..6).prop_map(Op::Append),
        1 => Just(Op::Commit),
        1 => (0usize..40).prop_map(Op::Crash),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The spool against a model: what was acknowledged and not cut off by a crash is read back
    /// exactly once, in order; ids are never accepted twice.
    #[test]
    fn spool_matches_its_model(ops in prop::collection::vec(op(), 1..25)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let (mut spool, _) = Spool::open(config(dir.path())).unwrap();
            // acknowledged entries: (lsn, ids), and which ids the model has seen
            let mut model: Vec<(u64, Vec<u128>)> = Vec::new();
            let mut seen = std::collections::HashSet::new();
            let mut committed = 0u64;
            for op in ops {
                match op {
                    Op::Append(ids) => {
                        let out = spool.append(AppendBatch::from_records(&ids.iter().map(|i| record(*i)).collect::<Vec<_>>())).await.unwrap();
                        let mut fresh = Vec::new();
                        for (i, id) in ids.iter().enumerate() {
                            if seen.insert(*id) {
                                fresh.push(*id);
                                prop_assert!(!out.duplicates.contains(&i));
                            } else {
                                prop_assert!(out.duplicates.contains(&i));
                            }
                        }
                        prop_assert_eq!(out.accepted, fresh.len());
                        if let Some(lsn) = out.lsn {
                            model.push((lsn, fresh));
                        }
                    }
                    Op::Commit => {
                        let mut reader = spool.reader();
                        let entries = reader.read(u64::MAX).unwrap();
                        if let Some(last) = entries.last() {
                            committed = last.lsn;
                            spool.commit(last.lsn, entries.iter().map(|e| e.disk_len).sum()).unwrap();
                        }
                    }
                    Op::Crash(cut) => {
                        // kill -9 during a write that was never acknowledged: part of an entry
                        // reaches the newest segment
                        drop(spool);
                        if let Some((_, seg)) = list_segments(dir.path()).unwrap().pop() {
                            let mut partial = Vec::new();
                            let mut payload = Vec::new();
                            entry::push_row(&mut payload, EncodedEvent::from_record(&record(999)).as_bytes());
                            entry::encode(u64::MAX / 2, entry::Format::EncodedRows, &payload, &mut partial);
                            let cut = cut.min(partial.len() - 1);
                            OpenOptions::new().append(true).open(&seg).unwrap().write_all(&partial[..cut]).unwrap();
                        }
                        spool = Spool::open(config(dir.path())).unwrap().0;
                    }
                }
            }
            let expect: Vec<u128> = model.iter().filter(|(lsn, _)| *lsn > committed).flat_map(|(_, ids)| ids.clone()).collect();
            prop_assert_eq!(read_all(&spool), expect);
            Ok(())
        })?;
    }
}
