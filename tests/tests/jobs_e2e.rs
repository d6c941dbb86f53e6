//! `tollgate-jobs` on its own: the timed jobs without the HTTP API, as a deployment that scales
//! the API out runs them. The binary takes the jobs lease, runs the integrity pass (seen on
//! its `/metrics`), opens an alert for a rule whose condition holds, and on SIGTERM stops and
//! gives the lease back so another instance takes over at once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use chrono::{DateTime, TimeDelta, Utc};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use tollgate_clickhouse::alerts::{write_rule, RuleRow};
use tollgate_clickhouse::synthetic::{Shape, Synthetic};
use tollgate_clickhouse::testing::TestDb;
use tollgate_clickhouse::UsageEventRow;
use tollgate_clickhouse::{now_second, read_query, row_version};
use tollgate_e2e::harness::{binary, free_port, wait_for_port, Proc};
use uuid::Uuid;

const DEADLINE: Duration = Duration::from_secs(90);

fn get(url: &str) -> Option<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    agent
        .get(url)
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
}

/// Polls `check` until it answers `Some`, or panics with `what` at the deadline.
async fn until<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(t) = check().await {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn lease_holder(db: &TestDb) -> (String, DateTime<Utc>) {
    #[derive(Debug, clickhouse::Row, serde::Deserialize)]
    struct Lease {
        holder: String,
        #[serde(with = "clickhouse::serde::chrono::datetime")]
        expires_at: DateTime<Utc>,
    }
    let rows = read_query(
        db.client(),
        "SELECT argMax(holder, version) AS holder, argMax(expires_at, version) AS expires_at \
         FROM job_leases WHERE name = 'jobs'",
    )
    .fetch_all::<Lease>()
    .await
    .unwrap();
    rows.into_iter()
        .next()
        .map(|l| (l.holder, l.expires_at))
        .unwrap_or((String::new(), DateTime::UNIX_EPOCH))
}

fn start_jobs(db: &TestDb, listen: SocketAddr, log: &str) -> Proc {
    let dir = std::env::temp_dir();
    let mut cmd = Command::new(binary("tollgate-jobs"));
    cmd.env("TOLLGATE_LISTEN", listen.to_string())
        .env("TOLLGATE_CLICKHOUSE_URL", db.url())
        .env("TOLLGATE_CLICKHOUSE_DATABASE", db.name())
        .env("TOLLGATE_EVALUATOR_INTERVAL_SECS", "1")
        .env("TOLLGATE_EVALUATOR_LEASE_SECS", "30")
        .env("TOLLGATE_EVALUATOR_LEASE_SETTLE_MS", "50")
        .env("TOLLGATE_INTEGRITY_INTERVAL_SECS", "10")
        .env("TOLLGATE_POLLERS_ENABLED", "false")
        .env("TOLLGATE_POLLERS_RECONCILE_ENABLED", "false");
    let proc = Proc::spawn(
        "tollgate-jobs",
        &mut cmd,
        dir.join(format!("{log}-{}.log", std::process::id())),
    );
    assert!(
        wait_for_port(listen, Duration::from_secs(30)),
        "tollgate-jobs did not listen on {listen}:\n{}",
        proc.log()
    );
    proc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jobs_run_alone_take_the_lease_alert_and_hand_over_on_shutdown() {
    let db = TestDb::new().await.unwrap();
    // A rule that fires once acme has spent anything today.
    let now = now_second();
    let rule_id = Uuid::new_v4();
    write_rule(
        db.client(),
        &RuleRow {
            rule_id,
            org_id: "acme".into(),
            name: "any spend".into(),
            kind: "spend_threshold".into(),
            params: r#"{"threshold_usd": "0.000000001", "window": "day"}"#.into(),
            severity: "low".into(),
            channels: vec!["dashboard".into()],
            enabled: 1,
            created_by: "jobs_e2e".into(),
            created_at: now,
            updated_at: now,
            deleted: 0,
            version: row_version(),
        },
    )
    .await
    .unwrap();

    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut jobs = start_jobs(&db, listen, "jobs-e2e-first");
    assert_eq!(
        get(&format!("http://{listen}/healthz")).as_deref(),
        Some("ok")
    );

    // The integrity pass ran (it runs right after start, then every 10 s).
    let metrics_url = format!("http://{listen}/metrics");
    until("an integrity pass on /metrics", async || {
        get(&metrics_url).filter(|m| {
            m.lines().any(|l| {
                l.starts_with("tollgate_jobs_integrity_passes_total{outcome=\"ok\"}")
                    && !l.ends_with(" 0")
            })
        })
    })
    .await;
    let (holder, _) = lease_holder(&db).await;
    assert!(!holder.is_empty(), "the running instance holds the lease");

    // No spend yet, so nothing fires; one priced call makes the rule's condition hold.
    let shape = Shape {
        orgs: 1,
        users_per_org: 1,
        apps_per_org: 1,
        start: Utc::now(),
        span: TimeDelta::seconds(1),
    };
    let rows: Vec<UsageEventRow> = Synthetic::new(7, 20, shape)
        .filter(|r| r.cost_nusd.get() > 0)
        .take(1)
        .map(|mut r| {
            r.org_id = "acme".into();
            UsageEventRow::from_record(&r, "jobs_e2e", Utc::now())
        })
        .collect();
    assert_eq!(rows.len(), 1, "a priced synthetic call");
    tollgate_clickhouse::insert_events(db.client(), &rows)
        .await
        .unwrap();
    let opened = until("the rule's alert", async || {
        read_query(
            db.client(),
            "SELECT count() FROM alerts FINAL WHERE rule_id = toUUID(?) AND state = 'open'",
        )
        .bind(rule_id.to_string())
        .fetch_one::<u64>()
        .await
        .ok()
        .filter(|n| *n > 0)
    })
    .await;
    assert_eq!(opened, 1, "one alert for one condition");

    // SIGTERM: a clean exit that releases the lease (expires_at no later than now), so a
    // second instance takes over at its first tick instead of waiting out lease_secs.
    assert_eq!(
        jobs.terminate(Duration::from_secs(30)),
        Some(0),
        "clean exit:\n{}",
        jobs.log()
    );
    let (_, expires) = lease_holder(&db).await;
    assert!(
        expires <= Utc::now(),
        "the lease was released on shutdown (expires {expires})"
    );
    let listen2: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _second = start_jobs(&db, listen2, "jobs-e2e-second");
    until("the second instance to hold the lease", async || {
        let (h, _) = lease_holder(&db).await;
        (!h.is_empty() && h != holder).then_some(())
    })
    .await;
}
