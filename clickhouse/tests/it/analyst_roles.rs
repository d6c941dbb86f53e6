//! Per-org analyst roles (`tollgate_clickhouse::analyst_roles`) on the server we run.

use std::collections::BTreeSet;

use tollgate_clickhouse::analyst_roles::{
    self, Outcome, OPERATOR_TABLES, ORG_TABLES, SHARED_TABLES, VIEWS,
};
use tollgate_clickhouse::read_query;
use tollgate_clickhouse::testing::TestDb;

/// Every table and view the migrations create is placed in exactly one of the four lists, and
/// a table is in `ORG_TABLES` exactly when it has an `org_id` (the scratch tables of the
/// integrity job and the materialized views aside): a new table cannot be forgotten.
#[tokio::test]
async fn every_table_the_migrations_create_is_placed_for_the_org_analysts() {
    let db = TestDb::new().await.unwrap();
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct T {
        name: String,
        has_org: u8,
    }
    let tables: Vec<T> = read_query(
        &db.config().server_client(),
        "SELECT name, toUInt8(name IN (SELECT table FROM system.columns \
         WHERE database = ? AND name = 'org_id')) AS has_org \
         FROM system.tables WHERE database = ? ORDER BY name",
    )
    .bind(db.name())
    .bind(db.name())
    .fetch_all()
    .await
    .unwrap();
    let created: BTreeSet<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    let mut placed = BTreeSet::new();
    for list in [ORG_TABLES, VIEWS, SHARED_TABLES, OPERATOR_TABLES] {
        for t in list {
            assert!(placed.insert(*t), "{t} is in two lists");
        }
    }
    assert_eq!(
        created, placed,
        "tables created vs placed for the org analysts"
    );
    for t in &tables {
        if ORG_TABLES.contains(&t.name.as_str()) {
            assert_eq!(
                t.has_org, 1,
                "{} is filtered by org_id but has none",
                t.name
            );
        }
        if SHARED_TABLES.contains(&t.name.as_str()) {
            assert_eq!(t.has_org, 0, "{} has org_id but is shared whole", t.name);
        }
    }
    // And the key and token tables are not in the usage database at all (migration 0015).
    assert!(!created.contains("api_tokens") && !created.contains("app_keys"));
}

/// On 18.16 nothing is created, and the outcome says why; switched off, nothing is asked.
#[tokio::test]
async fn a_server_without_row_policies_is_left_alone_with_the_reason() {
    let db = TestDb::new().await.unwrap();
    db.keys_client()
        .query(
            "INSERT INTO api_tokens (token_hash, token_id, name, role, org_id, user_id, \
             created_by, created_at, revoked, version) \
             VALUES ('h1', 't1', 'a', 'org_admin', 'acme', '', 'test', now(), 0, 1)",
        )
        .execute()
        .await
        .unwrap();
    db.keys_client()
        .query(
            "INSERT INTO app_keys (key_hash, key_id, org_id, user_id, app_id, name, \
             budget_scope, created_at, version) \
             VALUES ('k1', 'k1', 'globex', '', 'app', 'k', 'org:globex', now(), 1)",
        )
        .execute()
        .await
        .unwrap();
    let orgs = analyst_roles::orgs(db.config()).await.unwrap();
    assert_eq!(
        orgs,
        ["acme", "globex"].iter().map(|s| s.to_string()).collect()
    );

    let supported = analyst_roles::server_supports_roles(&db.config().server_client())
        .await
        .unwrap();
    assert!(
        supported.as_ref().is_err_and(|v| v.starts_with("18.16")),
        "the dev server is 18.16, which has no roles: {supported:?}"
    );
    let outcome = analyst_roles::sync(db.config(), None).await.unwrap();
    match &outcome {
        Outcome::Unsupported { server_version } => {
            assert!(server_version.starts_with("18.16"), "{server_version}")
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    assert!(outcome
        .to_string()
        .contains("every analyst reads every org"));

    let mut off = db.config().clone();
    off.analyst_roles = false;
    off.url = "http://127.0.0.1:1".into(); // nothing is asked of the server when off
    assert_eq!(analyst_roles::sync(&off, None).await.unwrap(), Outcome::Off);
}

/// The statements run as written: an org id may hold a `?`, which the client's query builder
/// would take for a bind placeholder (and fail, or bind something else).
#[tokio::test]
async fn a_statement_with_a_question_mark_runs_as_written() {
    let db = TestDb::new().await.unwrap();
    let table = format!("`{}`.`org?x ??`", db.name());
    analyst_roles::execute_all(
        &db.config().server_client(),
        &[
            format!("CREATE TABLE {table} (org_id String) ENGINE = Memory"),
            format!("INSERT INTO {table} VALUES ('a?b ??')"),
        ],
    )
    .await
    .unwrap();
    // (Read back raw too: `read_query` would take the `?`s for placeholders.)
    let got: String = db
        .client()
        .query_raw(&format!("SELECT any(org_id) FROM {table}"))
        .fetch_one()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got, "a?b ??");
}
