//! `GET /api/v1/projections` against seeded ClickHouse data: the weekly pattern is forecast,
//! the month-end adds up, short histories say so, and each token sees its own org only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

mod common;

use std::collections::BTreeMap;

use axum::http::StatusCode;
use chrono::{Datelike, NaiveDate, TimeDelta, Utc};
use common::Env;
use serde_json::Value;
use tollgate_clickhouse::UsageEventRow;
use usage_core::{
    CostSource, Endpoint, ErrorClass, Nanos, UsageRecord, UsageSource, SCHEMA_VERSION,
};
use uuid::Uuid;

fn record(n: u128, org: &str, day: NaiveDate, cost_usd: i64) -> UsageRecord {
    UsageRecord {
        event_id: Uuid::from_u128((0x0190_0000_0000_7000_8000u128 << 48) | n),
        schema_version: SCHEMA_VERSION,
        ts: day.and_hms_opt(12, 0, 0).unwrap().and_utc(),
        latency_ms: 100,
        ttft_ms: None,
        upstream_ms: 90,
        org_id: org.into(),
        user_id: "u".into(),
        app_id: "a".into(),
        key_id: "k".into(),
        tags: BTreeMap::new(),
        provider: "openai".into(),
        model_requested: "gpt-4o".into(),
        model_served: "gpt-4o".into(),
        endpoint: Endpoint::ChatCompletions,
        task_type: "chat".into(),
        stream: false,
        edge_region: String::new(),
        status_code: 200,
        error_class: ErrorClass::None,
        input_tokens: 10,
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
        cost_nusd: Nanos::from_usd(cost_usd).unwrap(),
        cost_source: CostSource::PriceTable,
        pricing_version: "pt".into(),
        request_bytes: 1,
        response_bytes: 1,
    }
}

fn usd(v: &Value) -> f64 {
    v.as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_weekly_pattern_is_projected_and_scoped() {
    let env = Env::new().await;
    let today = Utc::now().date_naive();
    // acme: 28 complete days of a weekday/weekend pattern; globex: 5 days of a flat $7.
    let pattern = |d: NaiveDate| {
        if d.weekday().num_days_from_monday() >= 5 {
            10
        } else {
            100
        }
    };
    let mut recs = Vec::new();
    let mut n = 0u128;
    for i in 1..=28 {
        let d = today - TimeDelta::days(i);
        n += 1;
        recs.push(record(n, "acme", d, pattern(d)));
    }
    for i in 1..=5 {
        n += 1;
        recs.push(record(n, "globex", today - TimeDelta::days(i), 7));
    }
    let now = Utc::now();
    let rows: Vec<UsageEventRow> = recs
        .iter()
        .map(|r| UsageEventRow::from_record(r, "seed", now))
        .collect();
    tollgate_clickhouse::insert_events(env.db.client(), &rows)
        .await
        .unwrap();

    let (status, body) = env
        .get("/api/v1/projections?horizon_days=14", &env.acme_admin)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["method"], "trend+weekly");
    assert_eq!(body["history_days"], 28);
    let daily = body["daily"].as_array().unwrap();
    assert_eq!(daily.len(), 14);
    for (i, d) in daily.iter().enumerate() {
        let day = today + TimeDelta::days(i as i64);
        let want = pattern(day) as f64;
        assert!((usd(&d["forecast_usd"]) - want).abs() < 1e-6, "{day}: {d}");
        assert!(
            usd(&d["lower_usd"]) <= usd(&d["forecast_usd"])
                && usd(&d["forecast_usd"]) <= usd(&d["upper_usd"])
        );
    }
    let sum: f64 = (0..14)
        .map(|i| pattern(today + TimeDelta::days(i)) as f64)
        .sum();
    assert!((usd(&body["next_horizon_usd"]) - sum).abs() < 1e-6);
    // Month end = spent this month so far + forecast for the rest of the month.
    let me = &body["month_end"];
    assert!(
        (usd(&me["total_usd"]) - usd(&me["actual_to_date_usd"]) - usd(&me["forecast_rest_usd"]))
            .abs()
            < 1e-6
    );
    let month_start = today.with_day(1).unwrap();
    let spent: i64 = recs
        .iter()
        .filter(|r| r.org_id == "acme" && r.ts.date_naive() >= month_start)
        .map(|r| r.cost_nusd.get())
        .sum();
    assert_eq!(me["actual_to_date_usd"], Nanos::new(spent).to_string());
    assert_eq!(body["providers"][0]["provider"], "openai");

    // globex sees its own flat $7 with a trend fallback, and a note saying why.
    let (status, body) = env
        .get("/api/v1/projections?horizon_days=3", &env.globex_admin)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["method"], "trend");
    assert_eq!(body["history_days"], 5);
    assert!(
        (usd(&body["daily"][0]["forecast_usd"]) - 7.0).abs() < 1e-6,
        "{body}"
    );
    assert!(body["notes"][0].as_str().unwrap().contains("5 days"));

    // Budgets in scope, each with the day the forecast says it runs out: half of today's
    // forecast over what the month has spent runs out today; a huge limit does not run out.
    let spent_usd = spent as f64 / 1e9;
    let tight = format!("{:.2}", spent_usd + pattern(today) as f64 / 2.0);
    for (name, limit) in [("tight", tight.as_str()), ("roomy", "1000000")] {
        let (status, out) = env
            .call(
                "POST",
                "/api/v1/budgets",
                Some(&env.acme_admin),
                Some(
                    serde_json::json!({"name": name, "scope": "org", "period": "monthly",
                    "limit_usd": limit, "mode": "soft"}),
                ),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{out}");
    }
    let (status, body) = env
        .get("/api/v1/projections?provider=openai", &env.acme_admin)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let budgets = body["budgets"].as_array().unwrap();
    assert_eq!(budgets.len(), 2, "{body}");
    let by_name = |n: &str| {
        budgets
            .iter()
            .find(|b| b["budget"]["name"] == n)
            .unwrap_or_else(|| panic!("no budget {n}: {body}"))
    };
    assert_eq!(by_name("tight")["exhausts_on"], today.to_string(), "{body}");
    assert_eq!(by_name("tight")["method"], "trend+weekly");
    assert!(by_name("roomy")["exhausts_on"].is_null(), "{body}");
    assert_eq!(
        by_name("roomy")["status"]["spent_usd"],
        me["actual_to_date_usd"]
    );
    let (_, body) = env.get("/api/v1/projections", &env.globex_admin).await;
    assert_eq!(
        body["budgets"],
        serde_json::json!([]),
        "globex sees acme's budgets"
    );

    // Scope: another org's projection is refused; the admin sees the sum.
    let (status, _) = env
        .get("/api/v1/projections?org=acme", &env.globex_admin)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = env
        .get("/api/v1/projections?horizon_days=1", &env.admin)
        .await;
    assert_eq!(status, StatusCode::OK);
    // Both orgs' history counts (globex's recent $7 a day is a step the robust fit takes slowly).
    let v = usd(&body["daily"][0]["forecast_usd"]);
    assert!(
        v >= pattern(today) as f64 - 1e-6 && v <= pattern(today) as f64 + 7.0 + 1e-6,
        "{body}"
    );
    let spent_all: i64 = recs
        .iter()
        .filter(|r| r.ts.date_naive() >= month_start)
        .map(|r| r.cost_nusd.get())
        .sum();
    assert_eq!(
        body["month_end"]["actual_to_date_usd"],
        Nanos::new(spent_all).to_string()
    );
}

#[tokio::test]
async fn no_history_is_a_clear_note_not_an_error() {
    let env = Env::new().await;
    let (status, body) = env.get("/api/v1/projections", &env.acme_viewer).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["method"].is_null());
    assert_eq!(body["daily"].as_array().unwrap().len(), 0);
    assert!(body["notes"][0]
        .as_str()
        .unwrap()
        .starts_with("insufficient history"));
}
