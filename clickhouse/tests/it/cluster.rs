//! Tollgate on a real cluster (`cargo xtask ch cluster`: ZooKeeper, 2 shards × 2 replicas):
//! migrations create every table on every host, runners on two hosts exclude each other, and
//! usage written through the `Distributed` table is sharded, replicated, rolled up per shard
//! and read back merged — the same answers as one server given the same rows.

use std::time::{Duration, Instant};

use tollgate_clickhouse::dev_cluster::{CLUSTER, NODES};
use tollgate_clickhouse::testing::{ClusterDb, TestDb};
use tollgate_clickhouse::{ClickHouseConfig, Migrator};

use crate::rollups::{expected_totals, GRAINS, TOTALS_SQL};
use crate::support::{fixture, insert_in_batches, tsv};

/// `system.tables` of the database on one host: name and engine, sorted.
async fn tables(config: &ClickHouseConfig) -> String {
    tsv(
        &config.server_client(),
        &format!(
            "SELECT name, engine FROM system.tables WHERE database = '{}' ORDER BY name",
            config.database
        ),
    )
    .await
}

/// Waits until no replica of the database has replication work queued (every host has what
/// its shard has), at most 60 s.
async fn replicas_converged(db: &ClusterDb) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut pending = 0u64;
        for node in db.nodes() {
            let out = tsv(
                &node.server_client(),
                &format!(
                    "SELECT sum(queue_size) + sum(inserts_in_queue) FROM system.replicas WHERE database = '{}'",
                    node.database
                ),
            )
            .await;
            pending += out.trim().parse::<u64>().unwrap_or(1);
        }
        if pending == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replication queues never emptied ({pending} left)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn migrations_create_every_table_on_every_host_and_two_runners_exclude_each_other() {
    let db = ClusterDb::new().await.unwrap();
    let first = tables(db.node(0)).await;
    for (i, node) in db.nodes().iter().enumerate().skip(1) {
        assert_eq!(tables(node).await, first, "host {} differs", NODES[i].0);
    }
    let engine = |name: &str| {
        first
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}\t")))
            .unwrap_or("")
            .to_string()
    };
    for sharded in [
        "usage_events",
        "usage_hourly",
        "usage_daily",
        "org_daily",
        "org_model_daily",
    ] {
        assert_eq!(engine(sharded), "Distributed", "{sharded}");
        assert!(
            engine(&format!("{sharded}_local")).starts_with("Replicated"),
            "{sharded}_local"
        );
    }
    // The key and token tables, moved to their own database (0015), on every host, still
    // replicated.
    for node in db.nodes() {
        let keys = tables(&ClickHouseConfig::new(
            node.url.clone(),
            tollgate_clickhouse::keys_database(db.name()),
        ))
        .await;
        for t in ["api_tokens", "app_keys"] {
            let engine = keys
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{t}\t")))
                .unwrap_or("");
            assert!(
                engine.starts_with("Replicated"),
                "{t} on {}: {keys}",
                node.url
            );
        }
    }
    for everywhere in [
        "budgets",
        "job_leases",
        "price_overrides",
        "schema_migrations",
    ] {
        assert!(
            engine(everywhere).starts_with("Replicated"),
            "{everywhere}: {}",
            engine(everywhere)
        );
    }
    // Every host has every applied migration in its own copy of schema_migrations.
    let applied = tsv(
        &db.node(0).client(),
        "SELECT count() FROM schema_migrations FINAL",
    )
    .await;
    for node in db.nodes() {
        assert_eq!(
            tsv(
                &node.client(),
                "SELECT count() FROM schema_migrations FINAL"
            )
            .await,
            applied
        );
    }

    // Two runners, on hosts of different shards, at once, on a new database: each migration
    // is applied once.
    let name = format!("{}_second", db.name());
    let runner = |i: usize| {
        let config = ClickHouseConfig::new(db.node(i).url.clone(), name.clone());
        async move {
            Migrator::new(config)
                .unwrap()
                .on_cluster(Some(CLUSTER.to_string()))
                .run(&mut |_| {})
                .await
        }
    };
    let (a, b) = tokio::join!(runner(1), runner(3));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        a.applied.len() + b.applied.len(),
        a.applied.len().max(b.applied.len()),
        "{a:?} {b:?}"
    );
    for (i, (host, ..)) in NODES.iter().enumerate() {
        let c = ClickHouseConfig::new(db.node(i).url.clone(), name.clone()).client();
        let rows = tsv(
            &c,
            "SELECT count(), uniqExact(version) FROM schema_migrations",
        )
        .await;
        let cells: Vec<&str> = rows.trim().split('\t').collect();
        assert_eq!(
            cells[0], cells[1],
            "host {host}: a migration recorded twice: {rows}"
        );
    }
    for db_name in [name.to_string(), tollgate_clickhouse::keys_database(&name)] {
        let _ = db
            .node(0)
            .server_client()
            .query(&format!(
                "DROP DATABASE IF EXISTS {db_name} ON CLUSTER {CLUSTER}"
            ))
            .execute()
            .await;
    }
}

#[tokio::test]
async fn usage_is_sharded_replicated_and_read_back_as_one_server_reads_it() {
    let db = ClusterDb::new().await.unwrap();
    let single = TestDb::new().await.unwrap();
    let records = fixture(3000);
    // Through the Distributed table of host s2r2, in five INSERTs; the same rows on one server.
    insert_in_batches(&db.node(3).client(), &records, 5).await;
    insert_in_batches(single.client(), &records, 5).await;
    replicas_converged(&db).await;

    // Each shard has its share, both replicas the same rows; together all of them.
    let mut local = Vec::new();
    for node in db.nodes() {
        let n = tsv(&node.client(), "SELECT count() FROM usage_events_local").await;
        local.push(n.trim().parse::<u64>().unwrap());
    }
    let (s1r1, s1r2, s2r1, s2r2) = (local[0], local[1], local[2], local[3]);
    assert_eq!((s1r1, s2r1), (s1r2, s2r2), "replicas of a shard differ");
    assert!(
        s1r1 > 0 && s2r1 > 0,
        "one shard got nothing: {s1r1} / {s2r1}"
    );
    assert_eq!(s1r1 + s2r1, records.len() as u64);

    // Every rollup, read through any host, equals one server's — and the raw rows.
    let expected = expected_totals(&records);
    for (i, node) in db.nodes().iter().enumerate() {
        let c = node.client();
        for grain in GRAINS {
            let on_cluster = tsv(&c, &grain.rollup_sql()).await;
            assert_eq!(
                on_cluster,
                tsv(single.client(), &grain.rollup_sql()).await,
                "{} via {}",
                grain.table,
                NODES[i].0
            );
            assert_eq!(
                on_cluster,
                tsv(&c, &grain.raw_sql()).await,
                "{} vs raw via {}",
                grain.table,
                NODES[i].0
            );
            assert_eq!(
                tsv(&c, &format!("{TOTALS_SQL}{}", grain.table)).await,
                expected,
                "{}",
                grain.table
            );
        }
    }
}
