//! The dashboard on a cluster (`cargo xtask ch cluster`: 2 shards × 2 replicas) gives the same
//! answer as on one server, for every analytics endpoint, every scope and windows of whole days,
//! whole hours and seconds: the same rows, written to each, read through each.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{DateTime, TimeDelta, Timelike, Utc};
use http_body_util::BodyExt;
use serde_json::Value;
use tollgate_clickhouse::synthetic::{Shape, Synthetic};
use tollgate_clickhouse::testing::{ClusterDb, TestDb};
use tollgate_clickhouse::{insert_events, ClickHouseConfig, UsageEventRow};
use tollgate_dashboard_api::auth::{create_token, Role};
use tollgate_dashboard_api::config::Config;
use tollgate_dashboard_api::{app, AppState};
use tower::ServiceExt;

/// The app over `ch`, and an admin token of its database.
async fn app_over(ch: &ClickHouseConfig) -> (AppState, String) {
    let mut config = Config::default();
    config.clickhouse.url = ch.url.clone();
    config.clickhouse.database = ch.database.clone();
    let (_, token) = create_token(&ch.keys_client(), "admin", Role::Admin, "", "", "test")
        .await
        .unwrap();
    (AppState::new(config), token)
}

async fn get(state: &AppState, token: &str, uri: &str) -> (StatusCode, Value) {
    let req = Request::builder()
        .uri(uri)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let resp = app(state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn rfc3339(t: DateTime<Utc>) -> String {
    usage_core::rfc3339::format(&t).unwrap()
}

#[tokio::test]
async fn every_analytics_endpoint_answers_on_the_cluster_as_on_one_server() {
    let cluster = ClusterDb::new().await.unwrap();
    let single = TestDb::new().await.unwrap();
    let now = Utc::now().with_nanosecond(0).unwrap();
    let shape = Shape {
        orgs: 6,
        users_per_org: 5,
        apps_per_org: 3,
        start: now - TimeDelta::days(9),
        span: TimeDelta::days(9),
    };
    let rows: Vec<UsageEventRow> = Synthetic::new(7, 4000, shape)
        .map(|r| UsageEventRow::from(&r))
        .collect();
    for chunk in rows.chunks(1000) {
        insert_events(&cluster.node(2).client(), chunk)
            .await
            .unwrap();
        insert_events(single.client(), chunk).await.unwrap();
    }
    let (one, one_token) = app_over(single.config()).await;
    // Through a host of the other shard than the one written to, and through one of the same.
    let mut hosts = Vec::new();
    for i in [0, 3] {
        hosts.push(app_over(cluster.node(i)).await);
    }

    let org = "org_000";
    let windows = [
        // whole days, whole hours, and a window cut to the second at both ends
        format!(
            "from={}&to={}",
            rfc3339(now - TimeDelta::days(8)),
            rfc3339(now)
        ),
        format!(
            "from={}&to={}",
            rfc3339(
                (now - TimeDelta::hours(30))
                    .with_minute(0)
                    .unwrap()
                    .with_second(0)
                    .unwrap()
            ),
            rfc3339(
                (now - TimeDelta::hours(2))
                    .with_minute(0)
                    .unwrap()
                    .with_second(0)
                    .unwrap()
            )
        ),
        format!(
            "from={}&to={}",
            rfc3339(now - TimeDelta::hours(50) - TimeDelta::seconds(17)),
            rfc3339(now - TimeDelta::hours(3) + TimeDelta::seconds(41))
        ),
    ];
    let mut uris = Vec::new();
    for w in &windows {
        for scope in ["", "&org=org_000", "&org=org_003&user=user_003_0001"] {
            uris.push(format!("/api/v1/overview?{w}{scope}"));
            uris.push(format!(
                "/api/v1/usage/timeseries?{w}{scope}&granularity=day"
            ));
            uris.push(format!("/api/v1/providers?{w}{scope}"));
            uris.push(format!("/api/v1/models?{w}{scope}"));
            uris.push(format!("/api/v1/top/users?{w}{scope}"));
            uris.push(format!("/api/v1/top/apps?{w}{scope}"));
        }
        uris.push(format!(
            "/api/v1/usage/timeseries?{w}&org={org}&granularity=hour"
        ));
    }
    uris.push(format!("/api/v1/projections?org={org}"));
    uris.push("/api/v1/projections".to_string());
    let mut compared = 0;
    for uri in &uris {
        let (status, want) = get(&one, &one_token, uri).await;
        assert_eq!(status, StatusCode::OK, "{uri} on one server: {want}");
        for (i, (state, token)) in hosts.iter().enumerate() {
            let (status, got) = get(state, token, uri).await;
            assert_eq!(status, StatusCode::OK, "{uri} on host {i}: {got}");
            assert_eq!(
                got, want,
                "{uri}: the cluster (host {i}) differs from one server"
            );
            compared += 1;
        }
    }
    assert!(compared >= 100, "{compared}");
    // Not an empty comparison: every scope has calls in every window.
    for w in &windows {
        for scope in ["", "&org=org_000", "&org=org_003&user=user_003_0001"] {
            let (_, overview) =
                get(&one, &one_token, &format!("/api/v1/overview?{w}{scope}")).await;
            let requests = overview["current"]["requests"].as_u64().unwrap_or(0);
            assert!(requests > 0, "{w}{scope}: {overview}");
        }
    }
}
