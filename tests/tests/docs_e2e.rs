//! The docs run as written: every SQL block of docs/ANALYSTS.md executes against seeded data in
//! a migrated database and returns rows.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use chrono::{TimeDelta, Utc};
use std::collections::BTreeMap;

use tollgate_clickhouse::synthetic::{Shape, Synthetic};
use tollgate_clickhouse::testing::TestDb;
use tollgate_clickhouse::UsageEventRow;
use tollgate_e2e::harness::repo_root;

fn sql_blocks(markdown: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut heading = String::new();
    let mut lines = markdown.lines();
    while let Some(line) = lines.next() {
        if let Some(h) = line.strip_prefix("### ") {
            heading = h.to_string();
        }
        if line.trim() == "```sql" {
            let sql: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            out.push((heading.clone(), sql.join("\n")));
        }
    }
    out
}

#[tokio::test]
async fn analyst_guide() {
    let db = TestDb::new().await.unwrap();
    let now = Utc::now();
    let shape = Shape {
        orgs: 3,
        users_per_org: 5,
        apps_per_org: 2,
        start: now - TimeDelta::days(20),
        span: TimeDelta::days(20),
    };
    let mut records: Vec<_> = Synthetic::new(3, 20_000, shape).collect();
    // the guide's examples name org `acme` and tag `team`
    for (i, r) in records.iter_mut().enumerate() {
        if i % 3 == 0 {
            r.org_id = "acme".into();
        }
        r.tags = BTreeMap::from([("team".to_string(), format!("t{}", i % 4))]);
    }
    let rows: Vec<UsageEventRow> = records
        .iter()
        .map(|r| UsageEventRow::from_record(r, "seed", now))
        .collect();
    tollgate_clickhouse::insert_events(db.client(), &rows)
        .await
        .unwrap();

    let doc = std::fs::read_to_string(repo_root().join("docs/ANALYSTS.md")).unwrap();
    let blocks = sql_blocks(&doc);
    assert!(blocks.len() >= 10, "the guide has {} queries", blocks.len());
    let url = format!(
        "{}/?database={}&default_format=JSONCompact",
        db.url(),
        db.name()
    );
    for (heading, sql) in blocks {
        let (url, sql2) = (url.clone(), sql.clone());
        let (status, body) = tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let mut r = agent.post(&url).send(sql2.as_bytes()).unwrap();
            (
                r.status().as_u16(),
                r.body_mut().read_to_string().unwrap_or_default(),
            )
        })
        .await
        .unwrap();
        assert_eq!(status, 200, "{heading}:\n{sql}\n→ {body}");
        let v: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{heading}: {e}: {body}"));
        assert!(
            v["rows"].as_u64().unwrap_or(0) > 0,
            "{heading} returned no rows:\n{sql}"
        );
    }
}
