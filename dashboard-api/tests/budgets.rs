//! Budgets: CRUD with exact values, every bad field named, tenant isolation for every role, and
//! a status whose spend equals the sum of the seeded records in the budget's own scope and
//! period (computed here, independently of the server).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

mod common;

use std::collections::BTreeMap;

use axum::http::StatusCode;
use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Timelike, Utc};
use common::Env;
use serde_json::{json, Value};
use tollgate_clickhouse::UsageEventRow;
use usage_core::{
    CostSource, Endpoint, ErrorClass, Nanos, UsageRecord, UsageSource, SCHEMA_VERSION,
};
use uuid::Uuid;

fn budget(name: &str) -> Value {
    json!({"name": name, "scope": "org", "period": "monthly", "limit_usd": "250.5", "mode": "hard"})
}

async fn create(env: &Env, token: &str, body: Value) -> Value {
    let (status, out) = env
        .call("POST", "/api/v1/budgets", Some(token), Some(body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{out}");
    out
}

fn field_of(out: &Value) -> &str {
    out["error"]["field"].as_str().unwrap_or("")
}

#[tokio::test]
async fn a_budget_is_created_read_replaced_and_deleted() {
    let env = Env::new().await;
    let created = create(&env, &env.acme_admin, budget("Acme monthly")).await;
    let id = created["budget_id"].as_str().unwrap().to_string();
    assert_eq!(Uuid::parse_str(&id).unwrap().get_version_num(), 4);
    assert!(
        created["created_by"]
            .as_str()
            .unwrap()
            .starts_with("acme admin (tok_"),
        "{created}"
    );
    let mut expected = json!({
        "budget_id": id, "org_id": "acme", "name": "Acme monthly", "scope": "org", "user_id": null,
        "app_id": null, "period": "monthly", "limit_usd": "250.500000000", "soft_thresholds": [50, 80, 100],
        "mode": "hard", "enabled": true, "reserve_output_tokens": null,
        "created_by": created["created_by"], "created_at": created["created_at"],
        "updated_at": created["updated_at"],
    });
    assert_eq!(created, expected);

    let (status, got) = env
        .get(&format!("/api/v1/budgets/{id}"), &env.acme_viewer)
        .await;
    assert_eq!((status, &got), (StatusCode::OK, &expected));
    let (status, list) = env.get("/api/v1/budgets", &env.acme_admin).await;
    assert_eq!((status, list), (StatusCode::OK, json!([expected.clone()])));

    let replacement = json!({"name": "Alice weekly", "scope": "user", "user_id": "alice", "period": "weekly",
        "limit_usd": "10", "soft_thresholds": [90, 25], "mode": "soft", "enabled": false});
    let (status, replaced) = env
        .call(
            "PUT",
            &format!("/api/v1/budgets/{id}"),
            Some(&env.acme_admin),
            Some(replacement),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    for (k, v) in [
        ("name", json!("Alice weekly")),
        ("scope", json!("user")),
        ("user_id", json!("alice")),
        ("period", json!("weekly")),
        ("limit_usd", json!("10.000000000")),
        ("soft_thresholds", json!([25, 90])),
        ("mode", json!("soft")),
        ("enabled", json!(false)),
        ("updated_at", replaced["updated_at"].clone()),
    ] {
        expected[k] = v;
    }
    assert_eq!(replaced, expected);
    assert_eq!(
        env.get(&format!("/api/v1/budgets/{id}"), &env.admin)
            .await
            .1,
        expected
    );

    let (status, _) = env
        .call(
            "DELETE",
            &format!("/api/v1/budgets/{id}"),
            Some(&env.acme_admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        env.get(&format!("/api/v1/budgets/{id}"), &env.acme_admin)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        env.get(&format!("/api/v1/budgets/{id}/status"), &env.acme_admin)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        env.get("/api/v1/budgets", &env.acme_admin).await.1,
        json!([])
    );
    let (status, _) = env
        .call(
            "DELETE",
            &format!("/api/v1/budgets/{id}"),
            Some(&env.acme_admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The delete is a new version of the row, not a removal.
    let versions: u64 = env
        .db
        .client()
        .query("SELECT count() FROM budgets WHERE budget_id = toUUID(?)")
        .bind(&id)
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(versions, 3);
}

#[tokio::test]
async fn every_bad_field_is_a_400_naming_it() {
    let env = Env::new().await;
    let with = |k: &str, v: Value| {
        let mut b = budget("b");
        b[k] = v;
        b
    };
    let without = |k: &str| {
        let mut b = budget("b");
        b.as_object_mut().unwrap().remove(k);
        b
    };
    let cases: Vec<(Value, &str)> = vec![
        (with("name", json!("")), "name"),
        (with("name", json!("a\u{0}b")), "name"),
        (with("name", json!(42)), "name"),
        (without("name"), "name"),
        (with("scope", json!("team")), "scope"),
        (with("scope", json!("user")), "user_id"),
        (with("scope", json!("app")), "app_id"),
        (with("user_id", json!("alice")), "user_id"),
        (with("period", json!("yearly")), "period"),
        (without("period"), "period"),
        (with("limit_usd", json!("abc")), "limit_usd"),
        (with("limit_usd", json!("0")), "limit_usd"),
        (with("limit_usd", json!("-5")), "limit_usd"),
        (with("limit_usd", json!(100)), "limit_usd"),
        (with("limit_usd", json!("1000000000")), "limit_usd"),
        (with("soft_thresholds", json!([0])), "soft_thresholds"),
        (with("soft_thresholds", json!([101])), "soft_thresholds"),
        (with("soft_thresholds", json!([300])), "soft_thresholds"),
        (with("soft_thresholds", json!([50, 50])), "soft_thresholds"),
        (with("soft_thresholds", json!("50")), "soft_thresholds"),
        (with("mode", json!("strict")), "mode"),
        (with("enabled", json!("yes")), "enabled"),
        (
            with("reserve_output_tokens", json!(0)),
            "reserve_output_tokens",
        ),
        (
            with("reserve_output_tokens", json!(2_000_000)),
            "reserve_output_tokens",
        ),
        (
            with("reserve_output_tokens", json!(-1)),
            "reserve_output_tokens",
        ),
        (
            with("reserve_output_tokens", json!("many")),
            "reserve_output_tokens",
        ),
        (with("colour", json!("red")), "colour"),
    ];
    for (body, field) in cases {
        let (status, out) = env
            .call(
                "POST",
                "/api/v1/budgets",
                Some(&env.acme_admin),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {out}");
        assert_eq!(field_of(&out), field, "{body} → {out}");
        assert_eq!(out["error"]["code"], "bad_request");
    }
    // Admins must say which org.
    let (status, out) = env
        .call(
            "POST",
            "/api/v1/budgets",
            Some(&env.admin),
            Some(budget("b")),
        )
        .await;
    assert_eq!(
        (status, field_of(&out)),
        (StatusCode::BAD_REQUEST, "org_id")
    );
    // A PUT is checked the same way, and cannot move a budget to another org.
    let id = create(&env, &env.acme_admin, budget("b")).await["budget_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, out) = env
        .call(
            "PUT",
            &format!("/api/v1/budgets/{id}"),
            Some(&env.admin),
            Some(with("period", json!(7))),
        )
        .await;
    assert_eq!(
        (status, field_of(&out)),
        (StatusCode::BAD_REQUEST, "period")
    );
    let (status, out) = env
        .call(
            "PUT",
            &format!("/api/v1/budgets/{id}"),
            Some(&env.admin),
            Some(with("org_id", json!("globex"))),
        )
        .await;
    assert_eq!(
        (status, field_of(&out)),
        (StatusCode::BAD_REQUEST, "org_id")
    );
    // Not JSON at all.
    let (status, _) = env
        .call(
            "POST",
            "/api/v1/budgets",
            Some(&env.acme_admin),
            Some(json!([1, 2])),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, out) = env.get("/api/v1/budgets?orgg=acme", &env.admin).await;
    assert_eq!((status, field_of(&out)), (StatusCode::BAD_REQUEST, "orgg"));
}

#[tokio::test]
async fn tenants_never_see_or_change_each_others_budgets() {
    let env = Env::new().await;
    let org = create(&env, &env.acme_admin, budget("acme org")).await;
    let alice = create(
        &env,
        &env.acme_admin,
        json!({"name": "alice", "scope": "user", "user_id": "alice",
        "period": "daily", "limit_usd": "5", "mode": "soft"}),
    )
    .await;
    let bob = create(
        &env,
        &env.acme_admin,
        json!({"name": "bob", "scope": "user", "user_id": "bob",
        "period": "daily", "limit_usd": "5", "mode": "soft"}),
    )
    .await;
    let app = create(
        &env,
        &env.acme_admin,
        json!({"name": "web app", "scope": "app", "app_id": "web",
        "period": "weekly", "limit_usd": "50", "mode": "hard"}),
    )
    .await;
    let globex = create(&env, &env.globex_admin, budget("globex org")).await;
    let mut admin_body = budget("by admin");
    admin_body["org_id"] = json!("initech");
    let initech = create(&env, &env.admin, admin_body).await;
    assert_eq!(initech["org_id"], "initech");
    assert_eq!(app["app_id"], "web");
    let id = |b: &Value| b["budget_id"].as_str().unwrap().to_string();
    let ids = |v: &Value| -> Vec<String> { v.as_array().unwrap().iter().map(id).collect() };

    // Another org's ids are 404 for every verb, as if they did not exist.
    let acme_id = id(&org);
    for (method, uri) in [
        ("GET", format!("/api/v1/budgets/{acme_id}")),
        ("GET", format!("/api/v1/budgets/{acme_id}/status")),
        ("PUT", format!("/api/v1/budgets/{acme_id}")),
        ("DELETE", format!("/api/v1/budgets/{acme_id}")),
    ] {
        let body = (method == "PUT").then(|| budget("stolen"));
        let (status, out) = env.call(method, &uri, Some(&env.globex_admin), body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri}: {out}");
    }
    // Viewers never write, not even their own org's budgets.
    let (status, _) = env
        .call(
            "POST",
            "/api/v1/budgets",
            Some(&env.acme_viewer),
            Some(budget("x")),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = env
        .call(
            "PUT",
            &format!("/api/v1/budgets/{acme_id}"),
            Some(&env.acme_viewer),
            Some(budget("x")),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = env
        .call(
            "DELETE",
            &format!("/api/v1/budgets/{acme_id}"),
            Some(&env.acme_viewer),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = env
        .call(
            "DELETE",
            &format!("/api/v1/budgets/{}", id(&alice)),
            Some(&env.alice),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // An org admin cannot write into another org.
    let mut other = budget("x");
    other["org_id"] = json!("globex");
    let (status, _) = env
        .call(
            "POST",
            "/api/v1/budgets",
            Some(&env.acme_admin),
            Some(other),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Nothing without a token; garbage ids are just unknown.
    assert_eq!(
        env.call("GET", "/api/v1/budgets", None, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        env.get("/api/v1/budgets/not-a-uuid", &env.admin).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        env.get("/api/v1/budgets/%27%20OR%201%3D1", &env.admin)
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    let mut acme_all = ids(&json!([
        org.clone(),
        alice.clone(),
        app.clone(),
        bob.clone()
    ]));
    acme_all.sort_by_key(|i| {
        [&org, &alice, &app, &bob]
            .iter()
            .find(|b| id(b) == *i)
            .unwrap()["name"]
            .as_str()
            .unwrap()
            .to_string()
    });
    assert_eq!(
        ids(&env.get("/api/v1/budgets", &env.acme_admin).await.1),
        acme_all
    );
    assert_eq!(
        ids(&env.get("/api/v1/budgets", &env.acme_viewer).await.1),
        acme_all
    );
    assert_eq!(
        ids(&env.get("/api/v1/budgets", &env.globex_admin).await.1),
        vec![id(&globex)]
    );
    assert_eq!(
        ids(&env.get("/api/v1/budgets?org=globex", &env.admin).await.1),
        vec![id(&globex)]
    );
    assert_eq!(
        env.get("/api/v1/budgets", &env.admin)
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        6
    );
    assert_eq!(
        env.get("/api/v1/budgets?org=globex", &env.acme_admin)
            .await
            .0,
        StatusCode::FORBIDDEN
    );

    // Alice (a viewer bound to her user) sees her own budget only: an org budget's status
    // would show everybody's spend.
    assert_eq!(
        ids(&env.get("/api/v1/budgets", &env.alice).await.1),
        vec![id(&alice)]
    );
    assert_eq!(
        env.get(
            &format!("/api/v1/budgets/{}/status", id(&alice)),
            &env.alice
        )
        .await
        .0,
        StatusCode::OK
    );
    for other in [&org, &bob, &app, &globex] {
        assert_eq!(
            env.get(&format!("/api/v1/budgets/{}", id(other)), &env.alice)
                .await
                .0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            env.get(&format!("/api/v1/budgets/{}/status", id(other)), &env.alice)
                .await
                .0,
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(
        env.get("/api/v1/budgets?org=globex", &env.alice).await.0,
        StatusCode::FORBIDDEN
    );
}

fn record(
    n: u128,
    org: &str,
    user: &str,
    app: &str,
    ts: DateTime<Utc>,
    cost: Nanos,
) -> UsageRecord {
    UsageRecord {
        event_id: Uuid::from_u128((0x0190_0000_0000_7000_8000u128 << 48) | n),
        schema_version: SCHEMA_VERSION,
        ts,
        latency_ms: 300,
        ttft_ms: None,
        upstream_ms: 250,
        org_id: org.into(),
        user_id: user.into(),
        app_id: app.into(),
        key_id: format!("key_{org}"),
        tags: BTreeMap::new(),
        provider: "openai".into(),
        model_requested: "gpt-4o-mini".into(),
        model_served: "gpt-4o-mini".into(),
        endpoint: Endpoint::ChatCompletions,
        task_type: "chat".into(),
        stream: false,
        edge_region: "TST".into(),
        status_code: 200,
        error_class: ErrorClass::None,
        input_tokens: 100,
        output_tokens: 10,
        cached_input_tokens: 0,
        cache_write_tokens: 0,
        reasoning_tokens: 0,
        audio_input_tokens: 0,
        image_input_tokens: 0,
        audio_output_tokens: 0,
        image_output_tokens: 0,
        web_search_calls: 0,
        file_search_calls: 0,
        service_tier_requested: String::new(),
        service_tier: String::new(),
        usage_source: UsageSource::Provider,
        cost_nusd: cost,
        cost_source: CostSource::PriceTable,
        pricing_version: "test".into(),
        request_bytes: 100,
        response_bytes: 100,
    }
}

/// The current period of `period` around `today`, computed without the server's code.
fn expected_period(period: &str, today: NaiveDate) -> (NaiveDate, NaiveDate) {
    match period {
        "daily" => (today, today + TimeDelta::days(1)),
        "weekly" => {
            let mut start = today;
            while start.weekday() != chrono::Weekday::Mon {
                start -= TimeDelta::days(1);
            }
            (start, start + TimeDelta::days(7))
        }
        _ => {
            let start = NaiveDate::from_ymd_opt(today.year(), today.month(), 1).unwrap();
            let mut end = start;
            while end.month() == start.month() {
                end += TimeDelta::days(1);
            }
            assert_eq!(end.day(), 1);
            assert!(
                end.month() == start.month() + 1
                    || (start.month() == 12 && end.month() == 1 && end.year() == start.year() + 1)
            );
            (start, end)
        }
    }
}

#[tokio::test]
async fn status_counts_exactly_the_budgets_scope_and_period() {
    let env = Env::new().await;
    let now = Utc::now().with_nanosecond(0).unwrap();
    let today = now.date_naive();
    // Calls over the last 40 days by several users, apps and orgs, at odd costs.
    let who = [
        ("acme", "alice", "web"),
        ("acme", "bob", "api"),
        ("acme", "alice", "api"),
        ("globex", "alice", "web"),
    ];
    let mut records = Vec::new();
    for (i, back) in [0i64, 0, 1, 2, 5, 6, 7, 8, 13, 27, 31, 40]
        .iter()
        .enumerate()
    {
        for (j, (org, user, app)) in who.iter().enumerate() {
            let n = (i * who.len() + j) as u128 + 1;
            let ts = (now - TimeDelta::days(*back))
                .with_hour(if *back == 0 { now.hour() } else { 12 })
                .unwrap();
            records.push(record(
                n,
                org,
                user,
                app,
                ts,
                Nanos::new(1_234_567_891 * n as i64 + 7),
            ));
        }
    }
    let rows: Vec<UsageEventRow> = records
        .iter()
        .map(|r| UsageEventRow::from_record(r, "", now))
        .collect();
    tollgate_clickhouse::insert_events(env.db.client(), &rows)
        .await
        .unwrap();

    let cases = [
        (
            json!({"name": "org month", "scope": "org", "period": "monthly", "limit_usd": "400", "mode": "hard"}),
            "monthly",
            None,
            None,
        ),
        (
            json!({"name": "alice week", "scope": "user", "user_id": "alice", "period": "weekly", "limit_usd": "150.25",
                   "soft_thresholds": [10, 50, 75, 100], "mode": "soft"}),
            "weekly",
            Some("alice"),
            None,
        ),
        (
            json!({"name": "api today", "scope": "app", "app_id": "api", "period": "daily", "limit_usd": "20", "mode": "hard"}),
            "daily",
            None,
            Some("api"),
        ),
    ];
    for (body, period, user, app) in cases {
        let b = create(&env, &env.acme_admin, body.clone()).await;
        let (status, s) = env
            .get(
                &format!(
                    "/api/v1/budgets/{}/status",
                    b["budget_id"].as_str().unwrap()
                ),
                &env.acme_viewer,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{s}");

        let (start, end) = expected_period(period, today);
        let counted: Vec<&UsageRecord> = records
            .iter()
            .filter(|r| r.org_id == "acme")
            .filter(|r| user.is_none_or(|u| r.user_id == u))
            .filter(|r| app.is_none_or(|a| r.app_id == a))
            .filter(|r| r.ts.date_naive() >= start && r.ts.date_naive() < end)
            .collect();
        assert!(!counted.is_empty());
        let spent: i64 = counted.iter().map(|r| r.cost_nusd.get()).sum();
        let limit = Nanos::parse_usd(body["limit_usd"].as_str().unwrap())
            .unwrap()
            .get();
        let thresholds: Vec<u64> = b["soft_thresholds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap())
            .collect();
        let crossed: Vec<u64> = thresholds
            .iter()
            .copied()
            .filter(|t| i128::from(spent) * 100 >= i128::from(limit) * i128::from(*t))
            .collect();
        let expected = json!({
            "budget_id": b["budget_id"], "name": body["name"], "scope": body["scope"], "period": period,
            "mode": body["mode"], "enabled": true,
            "period_start": format!("{}T00:00:00Z", start), "period_end": format!("{}T00:00:00Z", end),
            "days_left": (end - today).num_days(),
            "limit_usd": Nanos::new(limit).to_string(),
            "spent_usd": Nanos::new(spent).to_string(),
            "remaining_usd": Nanos::new((limit - spent).max(0)).to_string(),
            "percent_used": (i128::from(spent) * 10_000 / i128::from(limit)) as f64 / 100.0,
            "thresholds_crossed": crossed,
            "exceeded": spent >= limit,
            "requests": counted.len(),
        });
        assert_eq!(s, expected, "{period} budget");
    }
}

/// The edge's budget list keeps answering through a ClickHouse outage with the last list read
/// (budgets cannot change meanwhile: writing them needs ClickHouse), so fresh edge isolates do
/// not refuse every call; an org never read before still gets the error.
#[tokio::test]
async fn the_internal_budget_list_outlives_a_clickhouse_outage_with_the_last_list_read() {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    const SECRET: &str = "internal-secret-0123456789abcdef";
    let env = Env::new().await;
    create(&env, &env.acme_admin, budget("Acme monthly")).await;
    let mut config = env.state.config().clone();
    config.internal.signing_secrets = vec![service_kit::Secret::new(SECRET.to_string())];
    let state = tollgate_dashboard_api::AppState::new(config);
    let list = |org: &'static str| {
        let state = state.clone();
        async move {
            let path = format!("/internal/v1/budgets?org={org}");
            let sig =
                usage_core::wire::sign(SECRET.as_bytes(), Utc::now().timestamp(), path.as_bytes());
            let req = Request::builder()
                .uri(&path)
                .header(usage_core::wire::SIGNATURE_HEADER, sig)
                .body(Body::empty())
                .unwrap();
            let resp = tollgate_dashboard_api::app(state)
                .oneshot(req)
                .await
                .unwrap();
            let status = resp.status();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null),
            )
        }
    };
    let (status, before) = list("acme").await;
    assert_eq!(status, StatusCode::OK, "{before}");
    assert_eq!(before[0]["name"], "Acme monthly");
    assert_eq!(before[0]["mode"], "hard");

    // ClickHouse can no longer answer for budgets.
    env.db
        .client()
        .query("RENAME TABLE budgets TO budgets_away")
        .execute()
        .await
        .unwrap();
    let (status, during) = list("acme").await;
    assert_eq!((status, &during), (StatusCode::OK, &before));
    let (status, other) = list("globex").await;
    assert!(status.is_server_error(), "{status} {other}");
}
