//! Retention drops exactly the monthly partitions past the cut-off, per table family, and its
//! dry run names exactly those.

use chrono::TimeDelta;
use tollgate_clickhouse::retention::{self, DroppedPartition, RetentionPolicy};
use tollgate_clickhouse::synthetic::{Shape, Synthetic};
use tollgate_clickhouse::testing::TestDb;
use tollgate_clickhouse::{insert_events, UsageEventRow};
use usage_core::{utc, ymd};

use crate::support::tsv;

async fn partitions(db: &TestDb, table: &str) -> Vec<String> {
    tsv(
        db.client(),
        &format!(
            "SELECT DISTINCT partition FROM system.parts WHERE database = '{}' AND table = '{table}' AND active ORDER BY partition",
            db.name()
        ),
    )
    .await
    .lines()
    .map(|l| l.trim_matches('\'').to_string())
    .collect()
}

#[tokio::test]
async fn old_raw_months_are_dropped_and_rollups_kept_by_their_own_policy() {
    let db = TestDb::new().await.unwrap();
    // January to June 2026, evenly.
    let shape = Shape {
        orgs: 2,
        users_per_org: 3,
        apps_per_org: 1,
        start: utc(2026, 1, 1, 0, 0, 0),
        span: TimeDelta::days(181),
    };
    let rows: Vec<UsageEventRow> = Synthetic::new(1, 600, shape)
        .map(|r| UsageEventRow::from(&r))
        .collect();
    insert_events(db.client(), &rows).await.unwrap();
    let all = ["202601", "202602", "202603", "202604", "202605", "202606"];
    assert_eq!(partitions(&db, "usage_events").await, all);

    let today = ymd(2026, 6, 15);
    let expired = retention::expired_partitions(db.client(), db.name(), "usage_events", today, 2)
        .await
        .unwrap();
    assert_eq!(expired, [202601, 202602, 202603]);

    let policy = RetentionPolicy {
        raw_months: Some(2),
        hourly_months: Some(4),
        daily_months: None,
        org_rollup_months: Some(4),
        credits_months: None,
        job_log_months: None,
    };
    // The dry run names what would go and drops nothing.
    let planned = retention::plan(db.client(), db.name(), &policy, today)
        .await
        .unwrap();
    assert_eq!(partitions(&db, "usage_events").await, all);
    let dropped = retention::apply(db.client(), db.name(), &policy, today, None)
        .await
        .unwrap();
    let raw: Vec<u32> = dropped
        .iter()
        .filter(|d| d.table == "usage_events")
        .map(|d| d.partition)
        .collect();
    assert_eq!(raw, [202601, 202602, 202603]);
    assert_eq!(
        planned, dropped,
        "the dry run named exactly what was dropped"
    );
    assert!(dropped.contains(&DroppedPartition {
        table: "usage_hourly",
        partition: 202601
    }));

    assert_eq!(
        partitions(&db, "usage_events").await,
        ["202604", "202605", "202606"]
    );
    assert_eq!(
        partitions(&db, "usage_hourly").await,
        ["202602", "202603", "202604", "202605", "202606"]
    );
    assert_eq!(
        partitions(&db, "usage_daily").await,
        all,
        "daily kept forever"
    );
    assert_eq!(
        partitions(&db, "org_daily").await,
        all[1..],
        "org rollups: 5 months"
    );

    let min_ts = tsv(db.client(), "SELECT toDate(min(ts)) FROM usage_events").await;
    assert_eq!(min_ts.trim(), "2026-04-01");
    // Idempotent: nothing more to drop.
    let again = retention::apply(db.client(), db.name(), &policy, today, None)
        .await
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
}
