//! `tollgate-jobs retention` on the real server: the dry run prints the partitions the
//! `[retention]` policy has expired and drops nothing; the real run drops exactly those, and
//! the data inside the kept months is untouched.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::process::Command;

use chrono::{TimeDelta, Utc};
use tollgate_clickhouse::synthetic::{Shape, Synthetic};
use tollgate_clickhouse::testing::TestDb;
use tollgate_clickhouse::{insert_events, read_query, UsageEventRow};

async fn raw_months(db: &TestDb) -> Vec<u32> {
    read_query(
        db.client(),
        "SELECT DISTINCT toYYYYMM(ts) AS m FROM usage_events ORDER BY m",
    )
    .fetch_all::<u32>()
    .await
    .unwrap()
}

fn retention(db: &TestDb, dry_run: bool) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate-jobs"));
    cmd.env_clear()
        .env("TOLLGATE_CLICKHOUSE_URL", db.url())
        .env("TOLLGATE_CLICKHOUSE_DATABASE", db.name())
        .env("TOLLGATE_RETENTION_RAW_MONTHS", "2")
        .arg("retention");
    if dry_run {
        cmd.arg("--dry-run");
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[tokio::test]
async fn the_dry_run_names_what_the_real_run_drops() {
    let db = TestDb::new().await.unwrap();
    // Six months of calls up to now: with raw_months = 2, the oldest three months expire.
    let now = Utc::now();
    let shape = Shape {
        orgs: 1,
        users_per_org: 2,
        apps_per_org: 1,
        start: now - TimeDelta::days(170),
        span: TimeDelta::days(170),
    };
    let rows: Vec<UsageEventRow> = Synthetic::new(3, 340, shape)
        .map(|r| UsageEventRow::from(&r))
        .collect();
    insert_events(db.client(), &rows).await.unwrap();
    let before = raw_months(&db).await;
    assert!(before.len() >= 6, "{before:?}");
    let expired: Vec<u32> = before[..before.len() - 3].to_vec();

    let planned = retention(&db, true);
    for m in &expired {
        assert!(
            planned.contains(&format!("would drop usage_events partition {m}")),
            "{m} not planned:\n{planned}"
        );
    }
    assert_eq!(raw_months(&db).await, before, "a dry run drops nothing");

    let done = retention(&db, false);
    for m in &expired {
        assert!(
            done.contains(&format!("dropped usage_events partition {m}")),
            "{done}"
        );
    }
    assert_eq!(raw_months(&db).await, before[before.len() - 3..]);
}
