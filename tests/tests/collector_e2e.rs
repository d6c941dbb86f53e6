//! The collector process against real ClickHouse: records come back field for field, every
//! acknowledged record lands exactly once through SIGKILLs and a ClickHouse outage, and a
//! SIGTERM drains before exiting.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use chrono::{TimeDelta, Timelike, Utc};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_clickhouse::clickhouse::{Client, Row};
use tollgate_clickhouse::synthetic::{Shape, Synthetic};
use tollgate_clickhouse::testing::TestDb;
use tollgate_clickhouse::UsageEventRow;
use tollgate_e2e::harness::CollectorProc;
use tollgate_e2e::private_clickhouse::PrivateClickHouse;
use usage_core::UsageRecord;

fn records(seed: u64, n: u64) -> Vec<UsageRecord> {
    let now = Utc::now();
    let shape = Shape {
        orgs: 3,
        users_per_org: 5,
        apps_per_org: 2,
        start: now - TimeDelta::hours(3),
        span: TimeDelta::hours(2),
    };
    Synthetic::new(seed, n, shape).collect()
}

/// POSTs one signed batch; `Ok(status)` if the collector answered.
fn post(url: &str, batch: &[UsageRecord]) -> Result<u16, String> {
    tollgate_e2e::harness::post_signed_batch(url, batch)
}

/// Posts until the collector answers 202, as the edge does (retrying refusals and failures).
fn post_until_accepted(url: &str, batch: &[UsageRecord], deadline: Instant) {
    loop {
        match post(url, batch) {
            Ok(202) => return,
            Ok(s) if s == 503 || s == 429 => {}
            Ok(s) => panic!("collector refused a good batch with {s}"),
            Err(_) => {}
        }
        assert!(Instant::now() < deadline, "batch never accepted");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[derive(Row, serde::Deserialize, Debug, PartialEq)]
struct Totals {
    rows: u64,
    ids: u64,
    input: u64,
    cost: i128,
}

async fn raw_totals(client: &Client) -> Totals {
    client
        .query("SELECT count() AS rows, uniqExact(event_id) AS ids, sum(toUInt64(input_tokens)) AS input, sum(cost_nusd) AS cost FROM usage_events")
        .with_setting("wait_end_of_query", "1")
        .fetch_one::<Totals>()
        .await
        .unwrap()
}

#[derive(Row, serde::Deserialize, Debug, PartialEq)]
struct DailyTotals {
    requests: u64,
    input: u64,
    cost: i128,
}

async fn daily_totals(client: &Client) -> DailyTotals {
    client
        .query("SELECT sum(requests) AS requests, sum(total_input_tokens) AS input, sum(total_cost_nusd) AS cost FROM usage_daily")
        .with_setting("wait_end_of_query", "1")
        .fetch_one::<DailyTotals>()
        .await
        .unwrap()
}

fn expected(records: &[UsageRecord]) -> (u64, u64, i128) {
    let input = records.iter().map(|r| u64::from(r.input_tokens)).sum();
    let cost = records.iter().map(|r| i128::from(r.cost_nusd.get())).sum();
    (records.len() as u64, input, cost)
}

/// What the tables should hold once every record in `records` is stored exactly once.
fn want(records: &[UsageRecord]) -> (Totals, DailyTotals) {
    let (n, input, cost) = expected(records);
    (
        Totals {
            rows: n,
            ids: n,
            input,
            cost,
        },
        DailyTotals {
            requests: n,
            input,
            cost,
        },
    )
}

/// Polls the raw table *and* the daily rollup until both hold `want`, or the deadline; returns
/// what they held last. The rollup is written after the raw rows by the same INSERT, so the
/// raw rows alone are no proof that the rollup is complete.
async fn wait_for_totals(
    client: &Client,
    want: &(Totals, DailyTotals),
    within: Duration,
) -> (Totals, DailyTotals) {
    let deadline = Instant::now() + within;
    loop {
        let got = (raw_totals(client).await, daily_totals(client).await);
        if &got == want || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A ClickHouse of the test's own (to stop, restart or kill), migrated, and a client of it.
async fn private_clickhouse(dir: &std::path::Path) -> (PrivateClickHouse, Client) {
    let ch = PrivateClickHouse::start(dir);
    let config = tollgate_clickhouse::ClickHouseConfig::new(ch.url(), "tollgate");
    tollgate_clickhouse::Migrator::new(config.clone())
        .unwrap()
        .run(&mut |_| {})
        .await
        .unwrap();
    (ch, config.client())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_come_back_field_for_field_and_rollups_match() {
    let db = TestDb::new().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let collector = CollectorProc::start(db.url(), db.name(), dir.path(), |_| {});
    let sent = records(7, 2_000);
    let url = collector.records_url();
    let batches = sent.clone();
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        for b in batches.chunks(250) {
            post_until_accepted(&url, b, deadline);
        }
    })
    .await
    .unwrap();
    let want_totals = want(&sent);
    let got = wait_for_totals(db.client(), &want_totals, Duration::from_secs(60)).await;
    assert_eq!(got, want_totals);

    let rows = db
        .client()
        .query("SELECT ?fields FROM usage_events ORDER BY event_id")
        .with_setting("wait_end_of_query", "1")
        .fetch_all::<UsageEventRow>()
        .await
        .unwrap();
    assert!(rows.iter().all(|r| !r.batch_id.is_empty()));
    // ClickHouse orders UUIDs its own way: compare in Rust's order.
    let mut got: Vec<UsageRecord> = rows
        .iter()
        .map(|r| UsageRecord::try_from(r).unwrap())
        .collect();
    got.sort_by_key(|r| r.event_id);
    let mut want = sent.clone();
    want.sort_by_key(|r| r.event_id);
    for r in &mut want {
        r.ts = r.ts.with_nanosecond(0).unwrap(); // the table keeps seconds
    }
    assert_eq!(got.len(), want.len());
    for (got, want) in got.iter().zip(&want) {
        assert_eq!(got, want);
    }

    // Merged, the rollup still sums to the same.
    db.client()
        .query("OPTIMIZE TABLE usage_daily FINAL")
        .execute()
        .await
        .unwrap();
    assert_eq!(daily_totals(db.client()).await, want_totals.1);
    drop(collector);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    const N: u64 = 200_000;
    let db = TestDb::new().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let collector = CollectorProc::start(db.url(), db.name(), dir.path(), |c| {
        c.sink.max_rows = 20_000;
        c.sink.max_delay_ms = 200;
    });
    let (config_path, addr) = (collector.config_path.clone(), collector.addr);
    let url = collector.records_url();
    let sent = records(11, N);
    let want_totals = want(&sent);

    let done = Arc::new(AtomicBool::new(false));
    let posted = Arc::new(AtomicU64::new(0));
    let generator = {
        let (done, posted) = (done.clone(), posted.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(300);
            for b in sent.chunks(1_000) {
                post_until_accepted(&url, b, deadline);
                posted.fetch_add(b.len() as u64, Ordering::SeqCst);
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    // Kill the collector at random moments while the generator posts, and start it again.
    let mut collector = collector;
    let mut kills = 0;
    let mut rng = fastrand::Rng::with_seed(42);
    while !done.load(Ordering::SeqCst) && kills < 6 {
        std::thread::sleep(Duration::from_millis(rng.u64(300..1_500)));
        if done.load(Ordering::SeqCst) {
            break;
        }
        collector.proc.kill();
        kills += 1;
        std::thread::sleep(Duration::from_millis(rng.u64(0..300)));
        collector = CollectorProc::start_with(&config_path, addr);
    }
    generator.join().unwrap();
    assert!(
        kills >= 3,
        "only {kills} kills happened before the generator finished ({} posted)",
        posted.load(Ordering::SeqCst)
    );

    let got = wait_for_totals(db.client(), &want_totals, Duration::from_secs(120)).await;
    assert_eq!(got, want_totals, "after {kills} SIGKILLs");
    // Nothing more arrives after a clean stop (no late duplicate from an insert in flight).
    let code = collector.proc.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0), "collector log:\n{}", collector.proc.log());
    assert_eq!(
        (
            raw_totals(db.client()).await,
            daily_totals(db.client()).await
        ),
        want_totals
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clickhouse_outage_is_absorbed_by_the_spool() {
    let ch_dir = tempfile::tempdir().unwrap();
    let (mut ch, client) = private_clickhouse(ch_dir.path()).await;
    let dir = tempfile::tempdir().unwrap();
    let collector = CollectorProc::start(&ch.url(), "tollgate", dir.path(), |c| {
        c.sink.retry_initial_ms = 100;
        c.sink.retry_max_ms = 1_000;
    });
    let url = collector.records_url();
    let sent = records(13, 30_000);
    let want_totals = want(&sent);
    let (first, rest) = sent.split_at(10_000);
    let deadline = Instant::now() + Duration::from_secs(180);
    for b in first.chunks(1_000) {
        post_until_accepted(&url, b, deadline);
    }

    ch.stop();
    let outage_started = Instant::now();
    // The collector keeps accepting into its spool, and says it is not ready.
    let url2 = url.clone();
    let rest = rest.to_vec();
    let poster = std::thread::spawn(move || {
        for b in rest.chunks(1_000) {
            post_until_accepted(&url2, b, deadline);
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let ready_url = format!("http://{}/readyz", collector.addr);
    let mut saw_unready = false;
    while outage_started.elapsed() < Duration::from_secs(30) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        if let Ok(mut r) = agent.get(&ready_url).call() {
            if r.status().as_u16() == 503 {
                let body = r.body_mut().read_to_string().unwrap_or_default();
                assert!(body.contains("unreachable"), "{body}");
                saw_unready = true;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(saw_unready, "/readyz never reported the outage");
    ch.restart();
    poster.join().unwrap();

    let got = wait_for_totals(&client, &want_totals, Duration::from_secs(90)).await;
    assert_eq!(got, want_totals, "collector log:\n{}", collector.proc.log());
    drop(collector);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_accepting_flushes_and_exits_zero() {
    let db = TestDb::new().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut collector = CollectorProc::start(db.url(), db.name(), dir.path(), |c| {
        // A long batching delay: only the shutdown flush can deliver these in time.
        c.sink.max_delay_ms = 60_000;
    });
    let sent = records(17, 3_000);
    let url = collector.records_url();
    let batch = sent.clone();
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        for b in batch.chunks(500) {
            post_until_accepted(&url, b, deadline);
        }
    })
    .await
    .unwrap();
    let code = collector.proc.terminate(Duration::from_secs(20));
    assert_eq!(code, Some(0), "collector log:\n{}", collector.proc.log());
    // The drain is synchronous with the exit: everything is stored, rollups included, now.
    assert_eq!(
        (
            raw_totals(db.client()).await,
            daily_totals(db.client()).await
        ),
        want(&sent)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_killed_mid_insert_loses_nothing_and_the_integrity_job_evens_the_rollups() {
    use tollgate_clickhouse::integrity::{self, ROLLUPS};

    let ch_dir = tempfile::tempdir().unwrap();
    let (mut ch, client) = private_clickhouse(ch_dir.path()).await;
    let dir = tempfile::tempdir().unwrap();
    let collector = CollectorProc::start(&ch.url(), "tollgate", dir.path(), |c| {
        c.sink.max_rows = 5_000;
        c.sink.max_delay_ms = 100;
        c.sink.retry_initial_ms = 100;
        c.sink.retry_max_ms = 1_000;
    });
    let url = collector.records_url();
    let sent = records(19, 60_000);
    let want_totals = want(&sent);
    let done = Arc::new(AtomicBool::new(false));
    let poster = {
        let (done, sent) = (done.clone(), sent.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(240);
            for b in sent.chunks(1_000) {
                post_until_accepted(&url, b, deadline);
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    // SIGKILL ClickHouse at random moments while the collector inserts.
    let mut rng = fastrand::Rng::with_seed(7);
    let mut kills = 0;
    while !done.load(Ordering::SeqCst) && kills < 4 {
        std::thread::sleep(Duration::from_millis(rng.u64(300..1_200)));
        ch.kill();
        kills += 1;
        std::thread::sleep(Duration::from_millis(rng.u64(50..400)));
        ch.restart();
    }
    poster.join().unwrap();

    // Every record is stored once in the raw table…
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut raw = raw_totals(&client).await;
    while raw != want_totals.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        raw = raw_totals(&client).await;
    }
    assert_eq!(
        raw,
        want_totals.0,
        "after {kills} ClickHouse kills:\n{}",
        collector.proc.log()
    );
    // …and integrity passes even every rollup with it, whatever the kills tore. A pass
    // repairs only differences that hold still between its two looks, so a torn bucket that
    // the collector's last INSERT was still writing to (raw rows land a moment before their
    // rollup rows) is left to the next pass: run passes until every rollup equals the raw
    // rows, as the scheduled job would.
    let from = Utc::now().timestamp() - 6 * 3600;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut passes = 0;
    loop {
        let report = integrity::run(&client, Duration::from_secs(6 * 3600))
            .await
            .unwrap();
        passes += 1;
        eprintln!("{kills} ClickHouse kills; integrity pass {passes}: {report:?}");
        let mut left = Vec::new();
        for r in ROLLUPS {
            let (_, mismatches) =
                integrity::compare(&client, r, from.div_euclid(r.width) * r.width)
                    .await
                    .unwrap();
            left.extend(mismatches);
        }
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline && passes < 6,
            "after {passes} passes: {left:?}"
        );
    }
    assert_eq!(daily_totals(&client).await, want_totals.1);
    drop(collector);
}
