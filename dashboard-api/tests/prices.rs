//! The price book through the API (read, set with history, removed, served to the edge signed)
//! and repricing on the real server: raw rows and every rollup exact to the nano-dollar, and a
//! second run that changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

mod common;

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{DateTime, Datelike, NaiveTime, TimeDelta, Utc};
use common::Env;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use service_kit::Secret;
use tollgate_clickhouse::clickhouse::Row;
use tollgate_clickhouse::integrity::{compare, ROLLUPS};
use tollgate_clickhouse::{insert_events, read_query, UsageEventRow};
use tollgate_dashboard_api::{app, AppState};
use tower::ServiceExt;
use usage_core::{
    wire, CostSource, Endpoint, ErrorClass, Nanos, PriceFile, PriceTable, UsageRecord, UsageSource,
    SCHEMA_VERSION,
};
use uuid::Uuid;

const SECRET: &str = "internal-secret-0123456789abcdef";

fn field_of(out: &Value) -> &str {
    out["error"]["field"].as_str().unwrap_or("")
}

fn usd(s: &str) -> Nanos {
    Nanos::parse_usd(s).unwrap()
}

/// The app with internal signing secrets (a new one being rotated in first).
fn signed_state(env: &Env) -> AppState {
    let mut config = env.state.config().clone();
    config.internal.signing_secrets = vec![
        Secret::new("another-secret-being-rotated-in".to_string()),
        Secret::new(SECRET.to_string()),
    ];
    AppState::new(config)
}

/// `GET /internal/v1/prices` as the edge asks: (status, headers, body).
async fn edge_fetch(
    state: &AppState,
    signed: bool,
    if_none_match: Option<&str>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut req = Request::builder().uri("/internal/v1/prices");
    if signed {
        let now = Utc::now().timestamp();
        req = req.header(
            wire::SIGNATURE_HEADER,
            wire::sign(SECRET.as_bytes(), now, b"/internal/v1/prices"),
        );
    }
    if let Some(tag) = if_none_match {
        req = req.header("if-none-match", tag);
    }
    let resp = app(state.clone())
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, bytes.to_vec())
}

/// The edge's reading of an answer: the table, if signature and version check out.
fn edge_reads(headers: &axum::http::HeaderMap, body: &[u8]) -> PriceTable {
    let now = Utc::now().timestamp();
    PriceTable::from_signed_lines(
        body,
        headers
            .get(wire::SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok()),
        headers["x-tollgate-pricing-version"].to_str().unwrap(),
        SECRET.as_bytes(),
        now,
    )
    .unwrap()
}

#[tokio::test]
async fn the_price_book_is_read_set_with_history_removed_and_served_to_the_edge_signed() {
    let env = Env::new().await;
    let builtin = PriceTable::builtin().unwrap();
    let (status, book) = env.get("/api/v1/prices", &env.acme_viewer).await;
    assert_eq!(status, StatusCode::OK, "{book}");
    assert_eq!(book["pricing_version"], builtin.version());
    assert_eq!(book["models"].as_array().unwrap().len(), builtin.len());
    assert_eq!(book["overrides"], json!([]));
    let (_, mini) = env
        .get(
            "/api/v1/prices?provider=openai&model=gpt-4o-mini",
            &env.alice,
        )
        .await;
    assert_eq!(mini["models"].as_array().unwrap().len(), 1, "{mini}");
    assert_eq!(mini["models"][0]["input"], "0.150000000");
    let (status, out) = env.get("/api/v1/prices?provder=openai", &env.alice).await;
    assert_eq!(
        (status, field_of(&out)),
        (StatusCode::BAD_REQUEST, "provder")
    );

    // Only admins change prices; every bad field is named.
    let entry = json!({"provider": "openai", "model": "gpt-4o-mini", "effective_from": "2026-12-01",
        "input": "0.2", "cached_input": "0.1", "output": "0.8",
        "tiers": {"flex": {"input": "0.1", "output": "0.4"}}});
    let (status, _) = env
        .call(
            "PUT",
            "/api/v1/prices",
            Some(&env.acme_admin),
            Some(entry.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for (patch, field) in [
        (json!({"effective_from": "2026-13-01"}), "effective_from"),
        (json!({"effective_from": "1999-12-31"}), "effective_from"),
        (json!({"input": "-0.1"}), "entry"),
        (json!({"inptu": "1"}), "inptu"),
        (json!({"output": "cheap"}), "output"),
        (
            json!({"tiers": {"flex": {"input": "x", "output": "1"}}}),
            "tiers.flex.input",
        ),
        (
            json!({"tiers": {"default": {"input": "1", "output": "1"}}}),
            "tiers.default",
        ),
        (json!({"model": ""}), "model"),
        (json!({"provider": "open\tai"}), "provider"),
    ] {
        let mut body = entry.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, out) = env
            .call("PUT", "/api/v1/prices", Some(&env.admin), Some(body))
            .await;
        assert_eq!(
            (status, field_of(&out)),
            (StatusCode::BAD_REQUEST, field),
            "{patch}: {out}"
        );
    }
    let mut missing = entry.clone();
    missing.as_object_mut().unwrap().remove("output");
    let (status, out) = env
        .call("PUT", "/api/v1/prices", Some(&env.admin), Some(missing))
        .await;
    assert_eq!(
        (status, field_of(&out)),
        (StatusCode::BAD_REQUEST, "output"),
        "{out}"
    );

    let (status, set) = env
        .call(
            "PUT",
            "/api/v1/prices",
            Some(&env.admin),
            Some(entry.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{set}");
    let new_version = set["pricing_version"].as_str().unwrap().to_string();
    assert_ne!(new_version, builtin.version());
    let (_, book) = env
        .get("/api/v1/prices?model=gpt-4o-mini", &env.alice)
        .await;
    assert_eq!(book["pricing_version"], new_version.as_str());
    let days: Vec<&str> = book["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["effective_from"].as_str().unwrap())
        .collect();
    assert_eq!(
        days,
        ["2020-01-01", "2026-12-01"],
        "the old price is kept: {book}"
    );
    assert_eq!(book["overrides"][0]["effective_from"], "2026-12-01");
    assert!(book["overrides"][0]["created_by"]
        .as_str()
        .unwrap()
        .starts_with("tok_"));

    // The edge's copy: signed (with every secret), versioned, and 304 once it has it.
    let state = signed_state(&env);
    let (status, _, _) = edge_fetch(&state, false, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, headers, body) = edge_fetch(&state, true, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["etag"], format!("\"{new_version}\"").as_str());
    let table = edge_reads(&headers, &body);
    assert_eq!(table.version(), new_version);
    let at = |d: &str| usage_core::rfc3339::parse(d).unwrap();
    let dec = table
        .resolve("openai", "gpt-4o-mini", at("2026-12-05T10:00:00Z"))
        .unwrap();
    assert_eq!(
        (dec.input, dec.tiers["flex"].output),
        (usd("0.2"), usd("0.4"))
    );
    let nov = table
        .resolve("openai", "gpt-4o-mini", at("2026-11-30T23:59:59Z"))
        .unwrap();
    assert_eq!(
        nov.input,
        usd("0.15"),
        "calls before the change keep the old price"
    );
    let (status, _, body) = edge_fetch(&state, true, Some(&format!("\"{new_version}\""))).await;
    assert_eq!((status, body.len()), (StatusCode::NOT_MODIFIED, 0));
    // The version is recorded for analysts, with the whole entry.
    let rows = read_query(
        env.db.client(),
        "SELECT count() FROM model_prices WHERE pricing_version = ? AND model = 'gpt-4o-mini' AND entry LIKE '%flex%'",
    )
    .bind(new_version.as_str())
    .fetch_one::<u64>()
    .await
    .unwrap();
    assert_eq!(rows, 1);

    // Removing the entry brings the built-in book back.
    let del = "/api/v1/prices?provider=openai&model=gpt-4o-mini&effective_from=2026-12-01";
    let (status, _) = env.call("DELETE", del, Some(&env.acme_admin), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, out) = env.call("DELETE", del, Some(&env.admin), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{out}");
    let (_, book) = env.get("/api/v1/prices", &env.alice).await;
    assert_eq!(book["pricing_version"], builtin.version());
    let (status, _) = env.call("DELETE", del, Some(&env.admin), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, out) = env
        .call(
            "DELETE",
            "/api/v1/prices?provider=openai&model=m&effective_from=soon",
            Some(&env.admin),
            None,
        )
        .await;
    assert_eq!(
        (status, field_of(&out)),
        (StatusCode::BAD_REQUEST, "effective_from")
    );
}

fn record(n: u128, org: &str, model: &str, ts: DateTime<Utc>) -> UsageRecord {
    UsageRecord {
        event_id: Uuid::from_u128((0x0190_0000_0000_7000_8000u128 << 48) | n),
        schema_version: SCHEMA_VERSION,
        ts,
        latency_ms: 300,
        ttft_ms: None,
        upstream_ms: 250,
        org_id: org.into(),
        user_id: format!("u{}", n % 3),
        app_id: "app".into(),
        key_id: format!("key_{org}"),
        tags: BTreeMap::new(),
        provider: "openai".into(),
        model_requested: model.into(),
        model_served: String::new(),
        endpoint: Endpoint::ChatCompletions,
        task_type: "chat".into(),
        stream: false,
        edge_region: "TST".into(),
        status_code: 200,
        error_class: ErrorClass::None,
        input_tokens: 1_000 + (n as u32 * 37) % 5_000,
        output_tokens: 100 + (n as u32 * 13) % 900,
        cached_input_tokens: (n as u32 * 7) % 500,
        cache_write_tokens: 0,
        reasoning_tokens: 0,
        audio_input_tokens: 0,
        image_input_tokens: 0,
        audio_output_tokens: 0,
        image_output_tokens: 0,
        web_search_calls: u32::from(n.is_multiple_of(5)),
        file_search_calls: 0,
        service_tier_requested: String::new(),
        service_tier: if n.is_multiple_of(4) {
            "flex".into()
        } else {
            String::new()
        },
        usage_source: UsageSource::Provider,
        cost_nusd: Nanos::ZERO,
        cost_source: CostSource::Unpriced,
        pricing_version: String::new(),
        request_bytes: 100,
        response_bytes: 100,
    }
}

#[derive(Row, serde::Deserialize)]
struct Stored {
    #[serde(with = "tollgate_clickhouse::clickhouse::serde::uuid")]
    event_id: Uuid,
    cost_nusd: i64,
    cost_source: String,
    pricing_version: String,
}

async fn stored(env: &Env) -> BTreeMap<Uuid, (i64, String, String)> {
    read_query(
        env.db.client(),
        "SELECT event_id, cost_nusd, cost_source, pricing_version FROM usage_events",
    )
    .fetch_all::<Stored>()
    .await
    .unwrap()
    .into_iter()
    .map(|s| (s.event_id, (s.cost_nusd, s.cost_source, s.pricing_version)))
    .collect()
}

#[tokio::test]
async fn a_reprice_makes_raw_rows_and_every_rollup_exact_and_a_second_run_changes_nothing() {
    let env = Env::new().await;
    let day = (Utc::now() - TimeDelta::days(3))
        .date_naive()
        .and_time(NaiveTime::MIN)
        .and_utc();
    let builtin = PriceTable::builtin().unwrap();
    // The day before, the day, and the day after; priced with the built-in book, an unknown
    // model unpriced, and an OpenRouter call at the cost OpenRouter reported.
    let mut records = Vec::new();
    for n in 0..180u128 {
        let ts = day - TimeDelta::hours(12) + TimeDelta::minutes(n as i64 * 19);
        let org = if n % 2 == 0 { "acme" } else { "globex" };
        let model = if n % 6 == 0 {
            "acme-llm-1"
        } else {
            "gpt-4o-mini"
        };
        let mut r = record(n, org, model, ts);
        let priced = usage_core::cost(&r, &builtin);
        (r.cost_nusd, r.cost_source, r.pricing_version) =
            (priced.cost, priced.source, priced.pricing_version);
        if n % 17 == 0 {
            r.provider = "openrouter".into();
            r.model_requested = "openai/gpt-4o-mini".into();
            (r.cost_nusd, r.cost_source, r.pricing_version) =
                (usd("0.0123"), CostSource::Provider, String::new());
        }
        records.push(r);
    }
    assert!(records
        .iter()
        .any(|r| r.cost_source == CostSource::Unpriced));
    let rows: Vec<UsageEventRow> = records.iter().map(UsageEventRow::from).collect();
    insert_events(env.db.client(), &rows).await.unwrap();
    let before = stored(&env).await;

    // New prices: gpt-4o-mini from the day on (with a flex tier and a search fee), and a price
    // for the model that had none.
    let d = |t: DateTime<Utc>| format!("{:04}-{:02}-{:02}", t.year(), t.month(), t.day());
    for entry in [
        json!({"provider": "openai", "model": "gpt-4o-mini", "effective_from": d(day), "input": "0.3",
               "cached_input": "0.03", "output": "1.2", "web_search": "0.025",
               "tiers": {"flex": {"input": "0.15", "output": "0.6"}}}),
        json!({"provider": "openai", "model": "acme-llm-1", "effective_from": "2020-01-01",
               "input": "0.7", "output": "2.1"}),
    ] {
        let (status, out) = env
            .call("PUT", "/api/v1/prices", Some(&env.admin), Some(entry))
            .await;
        assert_eq!(status, StatusCode::OK, "{out}");
    }
    let (_, book) = env.get("/api/v1/prices", &env.admin).await;
    let version = book["pricing_version"].as_str().unwrap().to_string();
    let builtin_file = PriceFile::builtin().unwrap();
    let mut file = builtin_file.clone();
    file.models = serde_json::from_value(book["models"].clone()).unwrap();
    let table = PriceTable::from_file(file).unwrap();
    assert_eq!(table.version(), version);

    let body = json!({"from": usage_core::rfc3339::format(&day).unwrap(),
                      "to": usage_core::rfc3339::format(&(day + TimeDelta::days(1))).unwrap()});
    let (status, _) = env
        .call(
            "POST",
            "/api/v1/admin/reprice",
            Some(&env.acme_admin),
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, out) = env
        .call(
            "POST",
            "/api/v1/admin/reprice",
            Some(&env.admin),
            Some(json!({"from": body["to"], "to": body["from"]})),
        )
        .await;
    assert_eq!((status, field_of(&out)), (StatusCode::BAD_REQUEST, "to"));
    let (status, report) = env
        .call(
            "POST",
            "/api/v1/admin/reprice",
            Some(&env.admin),
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");

    // Expected, computed here: rows of the day repriced with the new book (provider costs
    // kept), every other row untouched.
    let in_range = |r: &UsageRecord| r.ts >= day && r.ts < day + TimeDelta::days(1);
    let mut expected = BTreeMap::new();
    let (mut changed, mut newly_priced) = (0u64, 0u64);
    for r in &records {
        let old = &before[&r.event_id];
        let want = if in_range(r) && r.cost_source != CostSource::Provider {
            let p = usage_core::cost(r, &table);
            let new = (
                p.cost.get(),
                p.source.as_str().to_string(),
                p.pricing_version,
            );
            if new != *old {
                changed += 1;
                newly_priced += u64::from(r.cost_source == CostSource::Unpriced);
            }
            new
        } else {
            old.clone()
        };
        expected.insert(r.event_id, want);
    }
    assert!(changed > 50 && newly_priced > 5, "{changed} {newly_priced}");
    assert_eq!(report["rows_changed"], changed, "{report}");
    assert_eq!(report["rows_newly_priced"], newly_priced, "{report}");
    assert_eq!(report["pricing_version"], version.as_str());
    assert_eq!(report["buckets_still_different"], 0, "{report}");
    assert_eq!(
        stored(&env).await,
        expected,
        "raw rows = the new book's costs, to the nano"
    );
    // A flex call with a search is priced at the flex rates plus the fee (spot check).
    let flex = records
        .iter()
        .find(|r| {
            in_range(r)
                && r.service_tier == "flex"
                && r.web_search_calls == 1
                && r.model_requested == "gpt-4o-mini"
        })
        .unwrap();
    let t = usage_core::TokenCounts::of(flex);
    let by_hand = (i128::from(t.input - t.cached_input) * 150_000_000
        + i128::from(t.cached_input) * 30_000_000
        + i128::from(t.output) * 600_000_000
        + 500_000)
        / 1_000_000
        + 25_000_000;
    assert_eq!(i128::from(expected[&flex.event_id].0), by_hand);

    // Every rollup equals the raw rows over the three days.
    let from = (day - TimeDelta::days(1)).timestamp();
    for rollup in ROLLUPS {
        let (checked, mismatches) = compare(env.db.client(), rollup, from).await.unwrap();
        assert!(checked > 0, "{}", rollup.table);
        assert!(mismatches.is_empty(), "{}: {mismatches:?}", rollup.table);
    }
    // And the day's total in the daily rollup is the expected sum.
    let day_sum: i128 = records
        .iter()
        .filter(|r| in_range(r))
        .map(|r| i128::from(expected[&r.event_id].0))
        .sum();
    let rolled = read_query(
        env.db.client(),
        "SELECT toString(sum(total_cost_nusd)) FROM usage_daily WHERE day = toDate(toDateTime(?, 'UTC'))",
    )
    .bind(day.timestamp())
    .fetch_one::<String>()
    .await
    .unwrap();
    assert_eq!(i128::from(usd(&rolled).get()), day_sum);

    // Run twice: nothing changes.
    let (status, again) = env
        .call(
            "POST",
            "/api/v1/admin/reprice",
            Some(&env.admin),
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(
        (
            again["rows_changed"].as_u64(),
            again["buckets_rebuilt"].as_u64()
        ),
        (Some(0), Some(0)),
        "{again}"
    );
    assert_eq!(stored(&env).await, expected);
    let runs = read_query(env.db.client(), "SELECT count() FROM reprice_runs")
        .fetch_one::<u64>()
        .await
        .unwrap();
    assert_eq!(runs, 2);
}
