//! Exports: the raw events in scope, in table order, as CSV (header, quoting) or NDJSON (each
//! line a `UsageRecord` equal to the one seeded), streamed in chunks, capped, filtered, and
//! never beyond the caller's tenant scope.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

mod common;

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use chrono::{DateTime, TimeDelta, Timelike, Utc};
use common::Env;
use http_body_util::BodyExt;
use serde_json::Value;
use tollgate_clickhouse::UsageEventRow;
use tollgate_dashboard_api::{app, AppState};
use tower::ServiceExt;
use usage_core::{
    CostSource, Endpoint, ErrorClass, Nanos, UsageRecord, UsageSource, SCHEMA_VERSION,
};
use uuid::Uuid;

const HEADER: &str = "event_id,schema_version,ts,latency_ms,ttft_ms,upstream_ms,org_id,user_id,app_id,key_id,tags,provider,\
model_requested,model_served,endpoint,task_type,stream,edge_region,status_code,error_class,input_tokens,output_tokens,\
cached_input_tokens,cache_write_tokens,reasoning_tokens,audio_input_tokens,image_input_tokens,audio_output_tokens,\
image_output_tokens,usage_source,web_search_calls,file_search_calls,service_tier_requested,service_tier,cost_nusd,cost_source,\
pricing_version,request_bytes,response_bytes";

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    chunks: usize,
    body: String,
}

async fn get(state: &AppState, uri: &str, token: &str) -> Resp {
    let req = Request::builder()
        .uri(uri)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let resp = app(state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let mut body = resp.into_body();
    let mut bytes = Vec::new();
    let mut chunks = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            chunks += 1;
            bytes.extend_from_slice(&data);
        }
    }
    Resp {
        status,
        headers,
        chunks,
        body: String::from_utf8(bytes).unwrap(),
    }
}

fn error_field(r: &Resp) -> String {
    let v: Value = serde_json::from_str(&r.body).unwrap_or_else(|_| panic!("{}", r.body));
    v["error"]["field"].as_str().unwrap_or("").to_string()
}

struct Spec<'a> {
    org: &'a str,
    user: &'a str,
    provider: &'a str,
    model: &'a str,
    served: &'a str,
}

fn record(n: u128, s: &Spec<'_>, ts: DateTime<Utc>) -> UsageRecord {
    UsageRecord {
        event_id: Uuid::from_u128((0x0190_0000_0000_7000_8000u128 << 48) | n),
        schema_version: SCHEMA_VERSION,
        ts,
        latency_ms: 100 + n as u32,
        ttft_ms: n.is_multiple_of(2).then_some(40 + n as u32),
        upstream_ms: 90,
        org_id: s.org.into(),
        user_id: s.user.into(),
        app_id: "web".into(),
        key_id: "key_1".into(),
        tags: BTreeMap::from([("env".to_string(), "prod".to_string())]),
        provider: s.provider.into(),
        model_requested: s.model.into(),
        model_served: s.served.into(),
        endpoint: Endpoint::ChatCompletions,
        task_type: "chat".into(),
        stream: n.is_multiple_of(3),
        edge_region: "FRA".into(),
        status_code: 200,
        error_class: ErrorClass::None,
        input_tokens: 1000 + n as u32,
        output_tokens: 50,
        cached_input_tokens: 10,
        cache_write_tokens: 0,
        reasoning_tokens: 5,
        audio_input_tokens: 0,
        image_input_tokens: 0,
        audio_output_tokens: 0,
        image_output_tokens: 0,
        web_search_calls: 0,
        file_search_calls: 0,
        service_tier_requested: String::new(),
        service_tier: String::new(),
        usage_source: UsageSource::Provider,
        cost_nusd: Nanos::new(123_456_789 + n as i64),
        cost_source: CostSource::PriceTable,
        pricing_version: "pt-test".into(),
        request_bytes: 512,
        response_bytes: 2048,
    }
}

/// Seeds `n` calls over the last two days across orgs, users, providers and models.
async fn seed(env: &Env, n: u128) -> Vec<UsageRecord> {
    let now = Utc::now().with_nanosecond(0).unwrap();
    let specs = [
        Spec {
            org: "acme",
            user: "alice",
            provider: "openai",
            model: "gpt-4o-mini",
            served: "gpt-4o-mini-2024-07-18",
        },
        Spec {
            org: "acme",
            user: "bob",
            provider: "openrouter",
            model: "openrouter/anthropic/claude-sonnet-4.5",
            served: "",
        },
        Spec {
            org: "globex",
            user: "carol",
            provider: "openai",
            model: "gpt-4o-mini",
            served: "gpt-4o-mini-2024-07-18",
        },
    ];
    let records: Vec<UsageRecord> = (1..=n)
        .map(|i| {
            record(
                i,
                &specs[(i % 3) as usize],
                now - TimeDelta::minutes(i64::try_from(i).unwrap() * 2 % 2880),
            )
        })
        .collect();
    let rows: Vec<UsageEventRow> = records
        .iter()
        .map(|r| UsageEventRow::from_record(r, "b1", now))
        .collect();
    tollgate_clickhouse::insert_events(env.db.client(), &rows)
        .await
        .unwrap();
    records
}

/// The records the server should return, in table order.
fn expected(records: &[UsageRecord], keep: impl Fn(&UsageRecord) -> bool) -> Vec<&UsageRecord> {
    let mut out: Vec<&UsageRecord> = records.iter().filter(|r| keep(r)).collect();
    out.sort_by_key(|r| (r.org_id.clone(), r.ts, r.event_id));
    out
}

fn ndjson(body: &str) -> Vec<UsageRecord> {
    body.lines()
        .map(|l| serde_json::from_str::<UsageRecord>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test]
async fn ndjson_lines_are_the_records_and_csv_has_a_header_and_quotes() {
    let env = Env::new().await;
    let mut records = seed(&env, 30).await;
    // One call with values that need CSV quoting.
    let mut odd = record(
        1000,
        &Spec {
            org: "acme",
            user: "o'neil, \"jr\"",
            provider: "openai",
            model: "m",
            served: "",
        },
        Utc::now().with_nanosecond(0).unwrap() - TimeDelta::days(3),
    );
    odd.tags = BTreeMap::from([("note".to_string(), "two\nlines".to_string())]);
    odd.audio_input_tokens = 30;
    odd.web_search_calls = 2;
    odd.service_tier_requested = "auto".into();
    odd.service_tier = "flex".into();
    odd.ttft_ms = None;
    tollgate_clickhouse::insert_events(
        env.db.client(),
        &[UsageEventRow::from_record(&odd, "", odd.ts)],
    )
    .await
    .unwrap();
    records.push(odd.clone());

    let r = get(&env.state, "/api/v1/export?format=ndjson", &env.acme_admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.headers["content-type"], "application/x-ndjson");
    let disposition = r.headers["content-disposition"].to_str().unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\"tollgate-usage-")
            && disposition.ends_with(".ndjson\""),
        "{disposition}"
    );
    let want: Vec<UsageRecord> = expected(&records, |r| r.org_id == "acme")
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(want.len(), 21);
    assert_eq!(ndjson(&r.body), want);

    let r = get(&env.state, "/api/v1/export?format=csv", &env.acme_admin).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-type"], "text/csv; charset=utf-8");
    assert!(r.headers["content-disposition"]
        .to_str()
        .unwrap()
        .ends_with(".csv\""));
    assert!(
        r.body.starts_with(&format!("{HEADER}\r\n")),
        "{}",
        &r.body[..200]
    );
    // The odd call is the oldest of acme's, so the first row; every other row is one line.
    let odd_line = format!(
        "{},1,{},1100,,90,acme,\"o'neil, \"\"jr\"\"\",web,key_1,\"{{\"\"note\"\":\"\"two\\nlines\"\"}}\",openai,m,,chat.completions,chat,false,FRA,200,none,2000,50,10,0,5,30,0,0,0,provider,2,0,auto,flex,0.123457789,price_table,pt-test,512,2048\r\n",
        odd.event_id,
        usage_core::rfc3339::format(&odd.ts).unwrap(),
    );
    let rest = r.body.strip_prefix(&format!("{HEADER}\r\n")).unwrap();
    assert!(
        rest.starts_with(&odd_line),
        "{}\nvs\n{odd_line}",
        &rest[..odd_line.len().min(rest.len())]
    );
    let lines: Vec<&str> = rest[odd_line.len()..].split_terminator("\r\n").collect();
    assert_eq!(lines.len(), 20);
    for (line, rec) in lines.iter().zip(&want[1..]) {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells.len(), 39, "{line}");
        assert_eq!(cells[0], rec.event_id.to_string());
        assert_eq!(
            cells[4],
            rec.ttft_ms.map(|t| t.to_string()).unwrap_or_default()
        );
        assert_eq!(cells[7], rec.user_id);
        assert_eq!(cells[10], "\"{\"\"env\"\":\"\"prod\"\"}\"");
        assert_eq!(cells[16], rec.stream.to_string());
        assert_eq!(cells[34], rec.cost_nusd.to_string());
    }
    // No format means CSV.
    assert_eq!(
        get(&env.state, "/api/v1/export", &env.acme_admin)
            .await
            .body,
        r.body
    );
}

/// Text a caller chose (user, model, task, app) that a spreadsheet would run as a formula is
/// exported with a leading `'`, quoted; numbers and the NDJSON export are unchanged.
#[tokio::test]
async fn spreadsheet_formulas_in_exported_text_are_neutralised() {
    let env = Env::new().await;
    let mut r = record(
        7,
        &Spec {
            org: "acme",
            user: "=HYPERLINK(\"http://evil.example/\",\"x\")",
            provider: "openai",
            model: "+cmd|' /C calc'!A0",
            served: "@SUM(1+1)",
        },
        Utc::now().with_nanosecond(0).unwrap() - TimeDelta::hours(1),
    );
    r.task_type = "-2+3".into();
    r.app_id = "\tapp".into();
    tollgate_clickhouse::insert_events(
        env.db.client(),
        &[UsageEventRow::from_record(&r, "", r.ts)],
    )
    .await
    .unwrap();

    let csv = get(&env.state, "/api/v1/export?format=csv", &env.acme_admin).await;
    assert_eq!(csv.status, StatusCode::OK, "{}", csv.body);
    let row = csv.body.split("\r\n").nth(1).unwrap();
    for cell in [
        "\"'=HYPERLINK(\"\"http://evil.example/\"\",\"\"x\"\")\"",
        "\"'\tapp\"",
        "\"'+cmd|' /C calc'!A0\"",
        "\"'@SUM(1+1)\"",
        "\"'-2+3\"",
    ] {
        assert!(row.contains(&format!(",{cell},")), "{cell} not in {row}");
    }
    assert!(row.contains(&format!(",{},", r.cost_nusd)), "{row}");

    let nd = get(&env.state, "/api/v1/export?format=ndjson", &env.acme_admin).await;
    assert_eq!(ndjson(&nd.body), vec![r]);
}

#[tokio::test]
async fn filters_limits_and_the_row_cap_apply() {
    let env = Env::new().await;
    let records = seed(&env, 1500).await;
    let all = expected(&records, |_| true);

    // Big exports stream in many chunks and lose nothing.
    let r = get(&env.state, "/api/v1/export?format=ndjson", &env.admin).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.chunks > 3, "{} chunks", r.chunks);
    assert_eq!(ndjson(&r.body).iter().collect::<Vec<_>>(), all);
    assert_eq!(r.headers["x-tollgate-row-limit"], "1000000");

    let ids = |body: &str| {
        ndjson(body)
            .into_iter()
            .map(|r| r.event_id)
            .collect::<Vec<_>>()
    };
    let want_ids = |keep: &dyn Fn(&UsageRecord) -> bool| {
        expected(&records, keep)
            .into_iter()
            .map(|r| r.event_id)
            .collect::<Vec<_>>()
    };
    let r = get(
        &env.state,
        "/api/v1/export?format=ndjson&provider=openrouter",
        &env.admin,
    )
    .await;
    assert_eq!(ids(&r.body), want_ids(&|r| r.provider == "openrouter"));
    // `model` is the requested model, as in the rollups (migration 0010); the served variant
    // is a column of the export, not a second identity.
    let r = get(
        &env.state,
        "/api/v1/export?format=ndjson&model=gpt-4o-mini&org=acme",
        &env.admin,
    )
    .await;
    assert_eq!(
        ids(&r.body),
        want_ids(&|r| r.org_id == "acme" && r.model_requested == "gpt-4o-mini")
    );
    let r = get(
        &env.state,
        "/api/v1/export?format=ndjson&model=gpt-4o-mini-2024-07-18&org=acme",
        &env.admin,
    )
    .await;
    assert_eq!(
        ids(&r.body).len(),
        0,
        "the served variant is not a model filter"
    );
    let r = get(
        &env.state,
        "/api/v1/export?format=ndjson&model=openrouter%2Fanthropic%2Fclaude-sonnet-4.5",
        &env.admin,
    )
    .await;
    assert_eq!(ids(&r.body), want_ids(&|r| r.provider == "openrouter"));
    let r = get(
        &env.state,
        "/api/v1/export?format=ndjson&org=acme&user=bob",
        &env.admin,
    )
    .await;
    assert_eq!(ids(&r.body), want_ids(&|r| r.user_id == "bob"));
    // A time window: [from, to).
    let from = all[100].ts;
    let to = all[200].ts;
    let q = format!(
        "/api/v1/export?format=ndjson&org=acme&from={}&to={}",
        usage_core::rfc3339::format(&from)
            .unwrap()
            .replace('+', "%2B"),
        usage_core::rfc3339::format(&to)
            .unwrap()
            .replace('+', "%2B")
    );
    let r = get(&env.state, &q, &env.admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        ids(&r.body),
        want_ids(&|r| r.org_id == "acme" && r.ts >= from && r.ts < to)
    );
    // limit.
    let r = get(
        &env.state,
        "/api/v1/export?format=ndjson&limit=7",
        &env.admin,
    )
    .await;
    assert_eq!(
        ids(&r.body),
        all[..7].iter().map(|r| r.event_id).collect::<Vec<_>>()
    );
    assert_eq!(r.headers["x-tollgate-row-limit"], "7");

    // The server's cap bounds the default and the limit.
    let mut config = env.state.config().clone();
    config.api.export_row_cap = 5;
    let capped = AppState::new(config);
    let r = get(&capped, "/api/v1/export?format=csv", &env.admin).await;
    assert_eq!(r.body.split_terminator("\r\n").count(), 1 + 5);
    let r = get(&capped, "/api/v1/export?limit=6", &env.admin).await;
    assert_eq!(
        (r.status, error_field(&r)),
        (StatusCode::BAD_REQUEST, "limit".to_string())
    );

    for (q, field) in [
        ("format=xml", "format"),
        ("limit=0", "limit"),
        ("limit=-1", "limit"),
        ("limit=99999999999999999999999", "limit"),
        ("from=yesterday", "from"),
        ("from=2026-01-02&to=2026-01-01", "from"),
        ("provider=azure", "provider"),
        ("provider=%27%20OR%201%3D1%20--", "provider"),
        ("model=%00", "model"),
        ("limt=5", "limt"),
        ("format=csv&format=ndjson", "format"),
    ] {
        let r = get(&env.state, &format!("/api/v1/export?{q}"), &env.admin).await;
        assert_eq!(
            (r.status, error_field(&r)),
            (StatusCode::BAD_REQUEST, field.to_string()),
            "{q}: {}",
            r.body
        );
    }
    // Hostile but well-formed values are values: nothing matches.
    let r = get(
        &env.state,
        "/api/v1/export?format=ndjson&org=acme%27%20OR%20%271%27%3D%271",
        &env.admin,
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, ""));
}

#[tokio::test]
async fn nobody_exports_beyond_their_scope() {
    let env = Env::new().await;
    let records = seed(&env, 60).await;
    let ids = |body: &str| {
        ndjson(body)
            .into_iter()
            .map(|r| r.event_id)
            .collect::<Vec<_>>()
    };
    let want = |keep: &dyn Fn(&UsageRecord) -> bool| {
        expected(&records, keep)
            .into_iter()
            .map(|r| r.event_id)
            .collect::<Vec<_>>()
    };

    let r = get(
        &env.state,
        "/api/v1/export?format=ndjson",
        &env.globex_admin,
    )
    .await;
    assert_eq!(ids(&r.body), want(&|r| r.org_id == "globex"));
    let r = get(&env.state, "/api/v1/export?format=ndjson", &env.acme_viewer).await;
    assert_eq!(ids(&r.body), want(&|r| r.org_id == "acme"));
    // Alice sees only her own calls, even when she asks for nothing in particular.
    let r = get(&env.state, "/api/v1/export?format=ndjson", &env.alice).await;
    assert_eq!(ids(&r.body), want(&|r| r.user_id == "alice"));
    assert!(!ids(&r.body).is_empty());
    let r = get(
        &env.state,
        "/api/v1/export?format=ndjson&user=alice&org=acme",
        &env.alice,
    )
    .await;
    assert_eq!(ids(&r.body), want(&|r| r.user_id == "alice"));
    for (token, q) in [
        (&env.alice, "user=bob"),
        (&env.alice, "org=globex"),
        (&env.acme_viewer, "org=globex"),
        (&env.acme_admin, "org=globex"),
        (&env.globex_admin, "org=acme&user=alice"),
    ] {
        let r = get(&env.state, &format!("/api/v1/export?{q}"), token).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{q}: {}", r.body);
    }
    let r = get(&env.state, "/api/v1/export", "tga_not_a_token").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}
