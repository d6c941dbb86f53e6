//! Every named query runs on the real server, decodes into its row type, and agrees with the
//! raw rows and with totals computed in Rust.

use tollgate_clickhouse::queries::{self, Scope};
use tollgate_clickhouse::testing::TestDb;
use usage_core::{utc, ymd};
use usage_core::{ErrorClass, UsageRecord};

use crate::support::{fixture, insert_in_batches};

fn in_scope(r: &UsageRecord, scope: &Scope) -> bool {
    match scope {
        Scope::AllOrgs => true,
        Scope::Org { org_id } => &r.org_id == org_id,
        Scope::OrgUser { org_id, user_id } => &r.org_id == org_id && &r.user_id == user_id,
        Scope::OrgApp { org_id, app_id } => &r.org_id == org_id && &r.app_id == app_id,
    }
}

#[tokio::test]
async fn named_queries_agree_with_the_raw_rows_for_every_scope() {
    let db = TestDb::new().await.unwrap();
    let records = fixture(2500);
    insert_in_batches(db.client(), &records, 4).await;
    let (from, to) = (ymd(2026, 1, 1), ymd(2026, 3, 1));
    let heavy = &records[100];
    let scopes = [
        Scope::AllOrgs,
        Scope::Org {
            org_id: heavy.org_id.clone(),
        },
        Scope::OrgUser {
            org_id: heavy.org_id.clone(),
            user_id: heavy.user_id.clone(),
        },
        Scope::OrgApp {
            org_id: heavy.org_id.clone(),
            app_id: heavy.app_id.clone(),
        },
    ];
    for scope in &scopes {
        let mine: Vec<&UsageRecord> = records.iter().filter(|r| in_scope(r, scope)).collect();
        assert!(!mine.is_empty());
        let requests = mine.len() as u64;
        let cost: i128 = mine.iter().map(|r| i128::from(r.cost_nusd.get())).sum();

        let daily = queries::daily_overview(db.client(), scope, from, to)
            .await
            .unwrap();
        let raw = queries::daily_overview_raw(db.client(), scope, from, to)
            .await
            .unwrap();
        assert_eq!(daily, raw, "{scope:?}");
        assert_eq!(daily.iter().map(|d| d.requests).sum::<u64>(), requests);
        assert_eq!(daily.iter().map(|d| d.cost_usd).sum::<i128>(), cost);
        assert_eq!(daily.first().map(|d| d.day), Some(ymd(2026, 1, 29)));

        let totals = queries::overview_totals(db.client(), scope, from, to)
            .await
            .unwrap();
        assert_eq!(totals.requests, requests, "{scope:?}");
        assert_eq!(totals.cost_usd, cost);
        assert_eq!(
            totals.errors,
            mine.iter()
                .filter(|r| r.error_class != ErrorClass::None)
                .count() as u64
        );
        assert_eq!(
            totals.cached_input_tokens,
            mine.iter()
                .map(|r| u64::from(r.cached_input_tokens))
                .sum::<u64>()
        );
        assert_eq!(totals.latency_quantiles_ms.len(), 4);
        let lq = &totals.latency_quantiles_ms;
        assert!(lq[0] <= lq[1] && lq[1] <= lq[2] && lq[2] <= lq[3], "{lq:?}");

        let hourly = queries::hourly_timeseries(
            db.client(),
            scope,
            utc(2026, 1, 1, 0, 0, 0),
            utc(2026, 3, 1, 0, 0, 0),
        )
        .await
        .unwrap();
        assert_eq!(hourly.iter().map(|h| h.requests).sum::<u64>(), requests);
        assert_eq!(hourly.iter().map(|h| h.cost_usd).sum::<i128>(), cost);
        assert!(hourly.windows(2).all(|w| w[0].hour < w[1].hour));

        let providers = queries::by_provider(db.client(), scope, from, to)
            .await
            .unwrap();
        assert_eq!(providers.iter().map(|p| p.requests).sum::<u64>(), requests);
        assert_eq!(providers.iter().map(|p| p.cost_usd).sum::<i128>(), cost);

        let models = queries::model_performance(db.client(), scope, from, to)
            .await
            .unwrap();
        assert_eq!(models.iter().map(|m| m.requests).sum::<u64>(), requests);
        assert_eq!(
            models.iter().map(|m| m.ttft_count).sum::<u64>(),
            mine.iter().filter(|r| r.ttft_ms.is_some()).count() as u64
        );
        for m in &models {
            assert_eq!(m.latency_quantiles_ms.len(), 4);
            assert!(m.ttft_quantiles_ms.iter().all(|q| q.is_finite()), "{m:?}");
            assert!(m.avg_latency_ms > 0.0);
        }

        let top = queries::top_spenders(db.client(), scope, from, to, 5)
            .await
            .unwrap();
        assert!(!top.is_empty() && top.len() <= 5);
        assert!(top.windows(2).all(|w| w[0].cost_usd >= w[1].cost_usd));
    }
}

#[tokio::test]
async fn an_empty_range_answers_zeros_not_errors() {
    let db = TestDb::new().await.unwrap();
    let scope = Scope::Org {
        org_id: "nobody".into(),
    };
    let (from, to) = (ymd(2026, 1, 1), ymd(2026, 2, 1));
    assert!(queries::daily_overview(db.client(), &scope, from, to)
        .await
        .unwrap()
        .is_empty());
    let totals = queries::overview_totals(db.client(), &scope, from, to)
        .await
        .unwrap();
    assert_eq!((totals.requests, totals.cost_usd), (0, 0));
    assert_eq!(totals.latency_quantiles_ms, [0.0; 4]);
    assert!(queries::model_performance(db.client(), &scope, from, to)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn the_analyst_user_is_read_only() {
    // Only meaningful on the dev server, whose users.xml defines `analyst`.
    let db = TestDb::new().await.unwrap();
    if !db.url().contains("127.0.0.1:18123") {
        return;
    }
    let analyst = tollgate_clickhouse::ClickHouseConfig {
        user: Some("analyst".into()),
        ..tollgate_clickhouse::ClickHouseConfig::new(db.url(), "default")
    };
    let client = analyst.server_client();
    let one: u8 = client.query("SELECT 1").fetch_one().await.unwrap();
    assert_eq!(one, 1);
    let denied = client
        .query(&format!("SELECT count() FROM {}.usage_events", db.name()))
        .fetch_one::<u64>()
        .await
        .unwrap_err();
    assert!(denied.to_string().contains("Access denied"), "{denied}");
    let readonly = client
        .query("CREATE TABLE tollgate.analyst_probe (a UInt8) ENGINE = Log")
        .execute()
        .await
        .unwrap_err();
    assert!(readonly.to_string().contains("readonly"), "{readonly}");
    // #25 (7): a result past the profile's 1,000,000 rows is an error, not a silent cut at a
    // block boundary (it answered 1,048,576 rows as if complete with `break`).
    let cut = client
        .query("SELECT number FROM system.numbers LIMIT 1000005")
        .with_setting("wait_end_of_query", "1")
        .fetch_all::<u64>()
        .await
        .unwrap_err();
    assert!(
        cut.to_string().contains("Limit for result exceeded"),
        "{cut}"
    );
    let under: Vec<u64> = client
        .query("SELECT number FROM system.numbers LIMIT 1000000")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(under.len(), 1_000_000);
}

/// docs/ANALYSTS.md, "Who sees what", on the server we run (18.16, the dev users.xml): the
/// analyst reads the usage data and its views in a Tollgate database, and cannot read the
/// admin tokens or the app keys — they live in `<database>_keys` (migration 0015), which the
/// analyst is not allowed.
#[tokio::test]
async fn the_analyst_reads_usage_but_not_keys_or_tokens() {
    let probe = TestDb::new().await.unwrap(); // the dev server, started if needed
    let db = "tollgate_analyst_probe"; // allowed to `analyst` in clickhouse/dev/users.xml
    let admin = tollgate_clickhouse::ClickHouseConfig::new(probe.url(), db);
    let drop_all = || async {
        for name in [db.to_string(), tollgate_clickhouse::keys_database(db)] {
            admin
                .server_client()
                .query(&format!("DROP DATABASE IF EXISTS {name}"))
                .execute()
                .await
                .unwrap();
        }
    };
    drop_all().await;
    tollgate_clickhouse::Migrator::new(admin.clone())
        .unwrap()
        .run(&mut |_| {})
        .await
        .unwrap();
    let rows: Vec<_> = fixture(50)
        .iter()
        .map(|r| tollgate_clickhouse::UsageEventRow::from_record(r, "seed", chrono::Utc::now()))
        .collect();
    tollgate_clickhouse::insert_events(&admin.client(), &rows)
        .await
        .unwrap();
    admin
        .keys_client()
        .query(
            "INSERT INTO api_tokens (token_hash, token_id, name, role, org_id, user_id, created_by, created_at, revoked, version) \
             VALUES ('secret-hash', 'tok_1', 'n', 'admin', '', '', 't', now(), 0, 1)",
        )
        .execute()
        .await
        .unwrap();

    let analyst = tollgate_clickhouse::ClickHouseConfig {
        user: Some("analyst".into()),
        ..tollgate_clickhouse::ClickHouseConfig::new(probe.url(), db)
    };
    // Not `client()`: its insert setting is refused in readonly mode.
    let client = analyst.server_client().with_database(db);
    let usage: u64 = client
        .query("SELECT count() FROM usage_events")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(usage, 50);
    let daily: u64 = client
        .query("SELECT sum(requests) FROM ai_daily_usage")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(daily, 50, "the analyst views answer");
    for table in ["api_tokens", "app_keys"] {
        let qualified = format!("{}.{table}", tollgate_clickhouse::keys_database(db));
        let denied = client
            .query(&format!("SELECT count() FROM {qualified}"))
            .fetch_one::<u64>()
            .await
            .unwrap_err();
        assert!(
            denied.to_string().contains("Access denied"),
            "{qualified}: {denied}"
        );
        let gone = client
            .query(&format!("SELECT count() FROM {table}"))
            .fetch_one::<u64>()
            .await
            .unwrap_err();
        assert!(
            gone.to_string().contains("doesn't exist"),
            "{table}: {gone}"
        );
    }
    drop_all().await;
}
