//! The migration runner against a real server: fresh apply, no-op re-run, four concurrent
//! runners, edited files refused, gating, the lock.

use std::process::Command;
use std::time::Duration;

use tollgate_clickhouse::testing::TestDb;
use tollgate_clickhouse::{Error, Migration, Migrator};

use crate::support::tsv;

/// The files without a `requires:` header (they run on every server).
fn baseline() -> usize {
    Migration::builtin()
        .unwrap()
        .iter()
        .filter(|m| m.requires.is_none())
        .count()
}

async fn tables(db: &TestDb) -> String {
    tsv(
        db.client(),
        &format!(
            "SELECT name, engine FROM system.tables WHERE database = '{}' ORDER BY name",
            db.name()
        ),
    )
    .await
}

#[tokio::test]
async fn a_fresh_database_migrates_and_a_second_run_is_a_no_op() {
    let db = TestDb::unused_name().unwrap();
    let mut events = Vec::new();
    let first = Migrator::new(db.config().clone())
        .unwrap()
        .run(&mut |e| events.push(e.to_string()))
        .await
        .unwrap();
    let version = Migrator::new(db.config().clone())
        .unwrap()
        .server_version()
        .await
        .unwrap();
    let gated = Migration::builtin()
        .unwrap()
        .iter()
        .filter(|m| !m.runs_on(&version))
        .count();
    assert_eq!(
        first.applied.len() + first.skipped.len(),
        Migration::builtin().unwrap().len()
    );
    assert_eq!(first.skipped.len(), gated);
    assert!(
        events.iter().any(|e| e.contains("✓ 0001_usage_events.sql")),
        "{events:?}"
    );

    let schema = tables(&db).await;
    for table in [
        "usage_events\tMergeTree",
        "usage_hourly\tSummingMergeTree",
        "usage_daily\tSummingMergeTree",
        "usage_hourly_mv\tMaterializedView",
        "usage_daily_mv\tMaterializedView",
        "org_model_daily\tSummingMergeTree",
        "org_daily\tSummingMergeTree",
        "org_model_daily_mv\tMaterializedView",
        "org_daily_mv\tMaterializedView",
        "budgets\tReplacingMergeTree",
        "alert_rules\tReplacingMergeTree",
        "alerts\tReplacingMergeTree",
        "provider_credits\tMergeTree",
        "model_prices\tReplacingMergeTree",
        "ingest_batches\tReplacingMergeTree",
        "usage_rejects\tMergeTree",
        "ai_usage_summary\tView",
        "ai_daily_usage\tView",
        "ai_model_performance\tView",
        "schema_migrations\tReplacingMergeTree",
    ] {
        assert!(
            schema.contains(&format!("{table}\n")),
            "{table} missing from:\n{schema}"
        );
    }
    assert!(
        !schema.contains("schema_migrations_lock"),
        "the lock is released"
    );
    // The key and token tables live in their own database (0015), out of the analyst's reach.
    let keys = tsv(
        db.client(),
        &format!(
            "SELECT name, engine FROM system.tables WHERE database = '{}' ORDER BY name",
            tollgate_clickhouse::keys_database(db.name())
        ),
    )
    .await;
    assert_eq!(
        keys,
        "api_tokens\tReplacingMergeTree\napp_keys\tReplacingMergeTree\n"
    );

    let second = Migrator::new(db.config().clone())
        .unwrap()
        .run(&mut |_| {})
        .await
        .unwrap();
    assert!(second.applied.is_empty());
    assert_eq!(second.already_applied, first.applied);
    assert_eq!(tables(&db).await, schema);
    let recorded = tsv(db.client(), "SELECT count() FROM schema_migrations FINAL").await;
    assert_eq!(recorded.trim(), first.applied.len().to_string());
}

#[tokio::test]
async fn four_runners_at_once_end_in_the_same_state() {
    // Real processes (the migrate binary), as four services starting together would be.
    let reference = TestDb::new().await.unwrap();
    let db = TestDb::unused_name().unwrap();
    let spawned: Vec<_> = (0..4)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_tollgate-migrate"))
                .args([
                    "--url",
                    db.url(),
                    "--database",
                    db.name(),
                    "--lock-timeout",
                    "120",
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut applied_total = 0;
    for child in spawned {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        applied_total += stdout.lines().filter(|l| l.contains('✓')).count();
    }
    assert_eq!(
        applied_total,
        baseline(),
        "each file applied exactly once across the runners"
    );
    let normalise = |s: String, name: &str| s.replace(name, "DB");
    assert_eq!(
        normalise(tables(&db).await, db.name()),
        normalise(tables(&reference).await, reference.name())
    );
    let rows = tsv(
        db.client(),
        "SELECT version, name, checksum FROM schema_migrations ORDER BY version",
    )
    .await;
    let reference_rows = tsv(
        reference.client(),
        "SELECT version, name, checksum FROM schema_migrations ORDER BY version",
    )
    .await;
    assert_eq!(rows, reference_rows, "one row per migration, no duplicates");
}

#[tokio::test]
async fn in_process_concurrent_runners_converge_too() {
    let db = TestDb::unused_name().unwrap();
    let runs = (0..4).map(|_| {
        let config = db.config().clone();
        tokio::spawn(async move { Migrator::new(config).unwrap().run(&mut |_| {}).await })
    });
    let mut applied = 0;
    for run in runs {
        applied += run.await.unwrap().unwrap().applied.len();
    }
    assert_eq!(applied, baseline());
}

#[tokio::test]
async fn an_edited_applied_migration_is_refused() {
    let db = TestDb::new().await.unwrap();
    let edited: Vec<Migration> = tollgate_clickhouse::migrate::MIGRATION_FILES
        .iter()
        .map(|(name, text)| {
            let text = if name.starts_with("0003") {
                text.replace(
                    "limit_nusd      Decimal(18, 9)",
                    "limit_nusd      Decimal(18, 6)",
                )
            } else {
                text.to_string()
            };
            Migration::parse(name, &text).unwrap()
        })
        .collect();
    let err = Migrator::with_migrations(db.config().clone(), edited)
        .run(&mut |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::ChangedAfterApply { ref file, .. } if file == "0003_config_and_state.sql"),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("0003_config_and_state.sql was changed after it was applied"),
        "{message}"
    );
    assert!(message.contains("new migration"), "{message}");
    // And the lock is released after the refusal.
    let lock = tsv(
        db.client(),
        &format!("EXISTS TABLE {}.schema_migrations_lock", db.name()),
    )
    .await;
    assert_eq!(lock.trim(), "0");
}

#[tokio::test]
async fn gated_migrations_apply_only_where_the_server_is_new_enough() {
    let db = TestDb::new().await.unwrap();
    let mut migrations = Migration::builtin().unwrap();
    migrations.push(
        Migration::parse(
            "0900_future.sql",
            "-- requires: 999.1\nCREATE TABLE IF NOT EXISTS future (a UInt8) ENGINE = Log;\n",
        )
        .unwrap(),
    );
    migrations.push(
        Migration::parse(
            "0901_old_enough.sql",
            "-- requires: 18.1\nCREATE TABLE IF NOT EXISTS old_enough (a UInt8) ENGINE = Log;\n",
        )
        .unwrap(),
    );
    let report = Migrator::with_migrations(db.config().clone(), migrations)
        .run(&mut |_| {})
        .await
        .unwrap();
    assert!(report.skipped.contains(&"0900_future.sql".to_string()));
    assert_eq!(report.applied, ["0901_old_enough.sql"]);
    let names = tables(&db).await;
    assert!(
        names.contains("old_enough\t") && !names.contains("future\t"),
        "{names}"
    );
}

#[tokio::test]
async fn a_stale_lock_times_out_with_its_holder_and_can_be_broken() {
    let db = TestDb::empty().await.unwrap();
    db.client()
        .query("CREATE TABLE schema_migrations_lock ENGINE = Log AS SELECT 'crashed-host:1234' AS holder, now() AS acquired_at")
        .execute()
        .await
        .unwrap();
    let err = Migrator::new(db.config().clone())
        .unwrap()
        .lock_timeout(Duration::from_millis(600))
        .run(&mut |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LockTimeout { .. }), "{err}");
    assert!(err.to_string().contains("crashed-host:1234"), "{err}");
    assert!(err.to_string().contains("--break-lock"), "{err}");

    let report = Migrator::new(db.config().clone())
        .unwrap()
        .break_lock(true)
        .run(&mut |_| {})
        .await
        .unwrap();
    assert_eq!(report.applied.len(), baseline());
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_build_is_refused() {
    let db = TestDb::new().await.unwrap();
    db.client()
        .query("INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (9999, 'from_the_future', 'x', now())")
        .execute()
        .await
        .unwrap();
    let err = Migrator::new(db.config().clone())
        .unwrap()
        .run(&mut |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::UnknownApplied { version: 9999, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn the_migrate_binary_prints_cluster_ddl_without_a_server() {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate-migrate"))
        .args([
            "--print",
            "--cluster",
            "prod",
            "--server-version",
            "26.9",
            "--database",
            "tollgate",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let sql = String::from_utf8(out.stdout).unwrap();
    assert!(sql.contains("CREATE TABLE IF NOT EXISTS tollgate.usage_events_local ON CLUSTER prod"));
    assert!(sql.contains("ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/tollgate/usage_daily_local', '{replica}')"));
    assert!(sql.contains(
        "ENGINE = Distributed('prod', 'tollgate', usage_events_local, cityHash64(org_id))"
    ));
    assert!(sql.contains("-- 0006_modern_codecs_and_index.sql"));
}

#[test]
fn a_panicking_test_still_drops_its_database() {
    let payload = std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let db = TestDb::new().await.unwrap();
            std::panic::panic_any(db.name().to_string());
        })
    })
    .join()
    .unwrap_err();
    let name = payload.downcast::<String>().unwrap();
    let url = tollgate_clickhouse::testing::server_url();
    let addr = tollgate_clickhouse::dev_server::http_addr_of(&url).unwrap();
    let (status, body) = tollgate_clickhouse::dev_server::http_request(
        &addr,
        "POST",
        "/",
        &format!("SELECT count() FROM system.databases WHERE name = '{name}'"),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(
        (status, body.trim()),
        (200, "0"),
        "{name} survived the panic"
    );
}

/// A runner killed after a file's `ADD COLUMN` but before its `schema_migrations` row re-runs
/// the file: 18.16 has no `ADD COLUMN IF NOT EXISTS`, so the statement's `-- unless-column`
/// guard skips it when the column is there, and the re-run succeeds.
#[tokio::test]
async fn a_file_re_run_after_its_add_column_skips_the_column() {
    let db = TestDb::new().await.unwrap();
    let last = Migration::builtin()
        .unwrap()
        .into_iter()
        .filter(|m| m.statements.iter().any(|s| s.unless_column.is_some()))
        .map(|m| m.version)
        .max()
        .expect("a migration adds a column");
    db.client()
        .query(&format!(
            "ALTER TABLE schema_migrations DELETE WHERE version = {last}"
        ))
        .execute()
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left: u64 = db
            .client()
            .query("SELECT count() FROM schema_migrations WHERE version = ?")
            .bind(last)
            .fetch_one()
            .await
            .unwrap();
        if left == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the delete did not apply"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = Migrator::new(db.config().clone())
        .unwrap()
        .run(&mut |_| {})
        .await
        .unwrap();
    assert_eq!(report.applied.len(), 1, "{report:?}");
    let columns = tsv(
        db.client(),
        "SELECT count() FROM system.columns WHERE database = currentDatabase() \
         AND table = 'budgets' AND name = 'reserve_output_tokens'",
    )
    .await;
    assert_eq!(columns.trim(), "1");
}

/// 0015 moves the key and token tables with a RENAME per table, each guarded by
/// `-- if-table`: a runner killed after the first RENAME (its file not recorded) re-runs the
/// file, skips the table already moved, moves the other, and keeps every row.
#[tokio::test]
async fn a_keys_move_cut_short_is_finished_by_the_next_run_with_every_row() {
    let db = TestDb::new().await.unwrap();
    let keys_db = tollgate_clickhouse::keys_database(db.name());
    let c = db.client();
    c.query(&format!(
        "INSERT INTO {keys_db}.app_keys (key_hash, key_id, org_id, user_id, app_id, name, budget_scope, created_at, version) \
         VALUES ('h1', 'k1', 'acme', '', 'app', 'n', '', now(), 1)"
    ))
    .execute()
    .await
    .unwrap();
    // As if the runner died between the two RENAMEs: app_keys still in the main database, and
    // 0015 not recorded.
    c.query(&format!(
        "RENAME TABLE {keys_db}.app_keys TO {}.app_keys",
        db.name()
    ))
    .execute()
    .await
    .unwrap();
    c.query("ALTER TABLE schema_migrations DELETE WHERE version = 15")
        .execute()
        .await
        .unwrap();
    // 18.16 runs the mutation in the background (it has no `mutations_sync`): wait for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let n: u64 = c
            .query("SELECT count() FROM schema_migrations WHERE version = 15")
            .fetch_one()
            .await
            .unwrap();
        if n == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the DELETE never finished"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rerun = Migrator::new(db.config().clone())
        .unwrap()
        .run(&mut |_| {})
        .await
        .unwrap();
    assert_eq!(rerun.applied, ["0015_keys_database.sql"], "{rerun:?}");
    let rows: u64 = db
        .keys_client()
        .query("SELECT count() FROM app_keys WHERE key_id = 'k1'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(rows, 1, "the row moved with its table");
    let left: u64 = c
        .query("SELECT count() FROM system.tables WHERE database = currentDatabase() AND name IN ('app_keys', 'api_tokens')")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(left, 0);
}
