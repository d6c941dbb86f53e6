//! The integrity job against the real server: a rollup bucket that lost rows, or gained some,
//! is rebuilt from the raw rows; an event stored twice is kept once; a consistent database is
//! left alone.

use chrono::{TimeDelta, Utc};
use std::time::Duration;

use tollgate_clickhouse::integrity::{self, ROLLUPS};
use tollgate_clickhouse::synthetic::{Shape, Synthetic};
use tollgate_clickhouse::testing::TestDb;
use tollgate_clickhouse::{insert_events, UsageEventRow};
use usage_core::UsageRecord;

use crate::support::tsv;

/// Records over the last few hours, so that the job's lookback covers them.
fn recent(seed: u64, n: u64) -> Vec<UsageRecord> {
    let now = Utc::now();
    let shape = Shape {
        orgs: 2,
        users_per_org: 3,
        apps_per_org: 2,
        start: now - TimeDelta::hours(3),
        span: TimeDelta::hours(2),
    };
    Synthetic::new(seed, n, shape).collect()
}

const LOOKBACK: Duration = Duration::from_secs(6 * 3600);

/// Every rollup equals the raw rows over the lookback.
async fn assert_all_agree(db: &TestDb) {
    let since = Utc::now().timestamp() - 6 * 3600;
    for r in ROLLUPS {
        let from = since.div_euclid(r.width) * r.width;
        let (checked, mismatches) = integrity::compare(db.client(), r, from).await.unwrap();
        assert!(checked > 0, "{} has buckets", r.table);
        assert!(mismatches.is_empty(), "{}: {mismatches:?}", r.table);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consistent_database_is_left_alone() {
    let db = TestDb::new().await.unwrap();
    let rows: Vec<UsageEventRow> = recent(1, 3_000).iter().map(UsageEventRow::from).collect();
    insert_events(db.client(), &rows).await.unwrap();
    let report = integrity::run(db.client(), LOOKBACK).await.unwrap();
    assert!(report.buckets_checked > 0);
    assert_eq!(
        (report.buckets_repaired, report.duplicate_events_removed),
        (0, 0)
    );
    assert_eq!(
        tsv(db.client(), "SELECT count() FROM integrity_repairs").await,
        "0\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_rollup_buckets_are_rebuilt_from_the_raw_rows() {
    let db = TestDb::new().await.unwrap();
    let records = recent(2, 4_000);
    let rows: Vec<UsageEventRow> = records.iter().map(UsageEventRow::from).collect();
    insert_events(db.client(), &rows).await.unwrap();
    let org = records[0].org_id.clone();

    // A rollup short of rows: what a crash between the raw part and the view's part leaves.
    // (Written as a view would have written it for half of one org's raw rows, then the other
    // half lost: delete the org's hourly rows and put back only half of them.)
    let client = db.client();
    client
        .query("ALTER TABLE usage_hourly DELETE WHERE org_id = ?")
        .bind(&org)
        .execute()
        .await
        .unwrap();
    // And a daily rollup with rows the raw table does not have: a whole batch counted twice.
    client
        .query(&format!(
            "INSERT INTO org_daily {}",
            integrity::view_query("org_daily_mv").unwrap().replacen(
                "FROM usage_events",
                "FROM (SELECT * FROM usage_events LIMIT 500)",
                1
            )
        ))
        .execute()
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while tsv(
        client,
        "SELECT count() FROM system.mutations WHERE database = currentDatabase() AND is_done = 0",
    )
    .await
        != "0\n"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "mutation never finished"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let report = integrity::run(client, LOOKBACK).await.unwrap();
    assert!(report.buckets_repaired >= 2, "{report:?}");
    assert_eq!(report.buckets_still_different, 0, "{report:?}");
    assert_all_agree(&db).await;
    // Quantile states are rebuilt too: the org's hourly p50 equals the raw rows' p50.
    let rebuilt = tsv(
        client,
        &format!(
            "SELECT toString(arrayMap(x -> round(x, 3), quantilesMerge(0.5, 0.9, 0.95, 0.99)(latency_quantiles))) FROM usage_hourly WHERE org_id = '{org}'"
        ),
    )
    .await;
    let raw = tsv(
        client,
        &format!(
            "SELECT toString(arrayMap(x -> round(x, 3), quantiles(0.5, 0.9, 0.95, 0.99)(toFloat64(latency_ms)))) FROM usage_events WHERE org_id = '{org}'"
        ),
    )
    .await;
    assert_eq!(rebuilt, raw);
    let recorded = tsv(
        client,
        "SELECT table_name, outcome FROM integrity_repairs WHERE kind = 'rollup' GROUP BY table_name, outcome ORDER BY table_name",
    )
    .await;
    assert_eq!(recorded, "org_daily\trepaired\nusage_hourly\trepaired\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stored_twice_is_kept_once_and_its_rollups_corrected() {
    let db = TestDb::new().await.unwrap();
    let records = recent(3, 2_000);
    let rows: Vec<UsageEventRow> = records.iter().map(UsageEventRow::from).collect();
    insert_events(db.client(), &rows).await.unwrap();
    // Two collectors inserted the same 300 re-posted records at the same moment.
    let again: Vec<UsageEventRow> = rows[..300]
        .iter()
        .cloned()
        .map(|mut r| {
            r.batch_id = "other-collector-1-1".into();
            r
        })
        .collect();
    insert_events(db.client(), &again).await.unwrap();
    assert_eq!(
        tsv(
            db.client(),
            "SELECT count(), uniqExact(event_id) FROM usage_events"
        )
        .await,
        "2300\t2000\n"
    );

    let report = integrity::run(db.client(), LOOKBACK).await.unwrap();
    assert_eq!(report.duplicate_events_removed, 300, "{report:?}");
    assert_eq!(
        tsv(
            db.client(),
            "SELECT count(), uniqExact(event_id) FROM usage_events"
        )
        .await,
        "2000\t2000\n"
    );
    assert_all_agree(&db).await;
    let cost: i128 = records.iter().map(|r| i128::from(r.cost_nusd.get())).sum();
    let daily: i128 = db
        .client()
        .query("SELECT sum(total_cost_nusd) FROM usage_daily")
        .with_setting("wait_end_of_query", "1")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(daily, cost);
}
