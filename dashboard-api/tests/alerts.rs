//! Alert rules (CRUD, params checked per kind with the key named) and alerts (filtered, newest
//! first, acknowledged and resolved with who and when; a resolved alert cannot be
//! acknowledged), and tenant isolation for every role. Alerts are seeded as rows: evaluation is
//! not this module's job.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

mod common;

use axum::http::StatusCode;
use chrono::{TimeDelta, Timelike, Utc};
use common::Env;
use serde_json::{json, Value};
use tollgate_clickhouse::alerts::{write_alert, AlertRow};
use uuid::Uuid;

fn field_of(out: &Value) -> &str {
    out["error"]["field"].as_str().unwrap_or("")
}

fn rule(kind: &str, params: Value) -> Value {
    json!({"name": format!("{kind} rule"), "kind": kind, "params": params, "severity": "high"})
}

async fn create(env: &Env, token: &str, body: Value) -> Value {
    let (status, out) = env
        .call("POST", "/api/v1/alert-rules", Some(token), Some(body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{out}");
    out
}

#[tokio::test]
async fn rules_are_created_read_replaced_and_deleted() {
    let env = Env::new().await;
    let created = create(
        &env,
        &env.acme_admin,
        json!({"name": "Daily spend", "kind": "spend_threshold", "params": {"threshold_usd": "125.5", "provider": "openai"},
               "severity": "critical", "channels": ["dashboard", "webhook:https://hooks.acme.example/tollgate"]}),
    )
    .await;
    let id = created["rule_id"].as_str().unwrap().to_string();
    assert_eq!(Uuid::parse_str(&id).unwrap().get_version_num(), 4);
    let mut expected = json!({
        "rule_id": id, "org_id": "acme", "name": "Daily spend", "kind": "spend_threshold",
        "params": {"threshold_usd": "125.500000000", "window": "day", "provider": "openai"},
        "severity": "critical", "channels": ["dashboard", "webhook:https://hooks.acme.example/tollgate"], "enabled": true,
        "created_by": created["created_by"], "created_at": created["created_at"], "updated_at": created["updated_at"],
    });
    assert_eq!(created, expected);
    assert!(created["created_by"]
        .as_str()
        .unwrap()
        .starts_with("acme admin (tok_"));
    assert_eq!(
        env.get(&format!("/api/v1/alert-rules/{id}"), &env.acme_viewer)
            .await,
        (StatusCode::OK, expected.clone())
    );
    assert_eq!(
        env.get("/api/v1/alert-rules", &env.acme_admin).await,
        (StatusCode::OK, json!([expected.clone()]))
    );

    let (status, replaced) = env
        .call(
            "PUT",
            &format!("/api/v1/alert-rules/{id}"),
            Some(&env.acme_admin),
            Some(json!({"name": "Errors", "kind": "error_rate", "params": {"threshold_percent": 5.5}, "severity": "low",
                        "enabled": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    expected["name"] = json!("Errors");
    expected["kind"] = json!("error_rate");
    expected["params"] =
        json!({"threshold_percent": 5.5, "window_minutes": 15, "min_requests": 20});
    expected["severity"] = json!("low");
    expected["channels"] = json!(["dashboard"]);
    expected["enabled"] = json!(false);
    expected["updated_at"] = replaced["updated_at"].clone();
    assert_eq!(replaced, expected);

    let (status, _) = env
        .call(
            "DELETE",
            &format!("/api/v1/alert-rules/{id}"),
            Some(&env.acme_admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        env.get(&format!("/api/v1/alert-rules/{id}"), &env.acme_admin)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        env.get("/api/v1/alert-rules", &env.acme_admin).await.1,
        json!([])
    );
}

#[tokio::test]
async fn every_kind_checks_its_params_and_names_the_bad_one() {
    let env = Env::new().await;
    let budget = env
        .call(
            "POST",
            "/api/v1/budgets",
            Some(&env.acme_admin),
            Some(json!({"name": "b", "scope": "org", "period": "daily", "limit_usd": "5", "mode": "soft"})),
        )
        .await
        .1;
    let budget_id = budget["budget_id"].as_str().unwrap().to_string();
    let globex_budget = env
        .call(
            "POST",
            "/api/v1/budgets",
            Some(&env.globex_admin),
            Some(json!({"name": "g", "scope": "org", "period": "daily", "limit_usd": "5", "mode": "soft"})),
        )
        .await
        .1["budget_id"]
        .as_str()
        .unwrap()
        .to_string();

    // Each kind accepts its documented params, with defaults filled in.
    let good: Vec<(&str, Value, Value)> = vec![
        (
            "spend_threshold",
            json!({"threshold_usd": "10", "window": "hour", "model": "gpt-4o"}),
            json!({"threshold_usd": "10.000000000", "window": "hour", "model": "gpt-4o"}),
        ),
        (
            "budget_threshold",
            json!({"budget_id": budget_id, "percent": 80}),
            json!({"budget_id": budget_id, "percent": 80}),
        ),
        (
            "error_rate",
            json!({"threshold_percent": 2, "window_minutes": 60, "min_requests": 5, "provider": "openrouter"}),
            json!({"threshold_percent": 2.0, "window_minutes": 60, "min_requests": 5, "provider": "openrouter"}),
        ),
        (
            "latency_p95",
            json!({"threshold_ms": 2500}),
            json!({"threshold_ms": 2500, "window_minutes": 15, "min_requests": 20}),
        ),
        (
            "low_balance",
            json!({"provider": "openrouter", "threshold_usd": "20", "key_label": "prod"}),
            json!({"provider": "openrouter", "threshold_usd": "20.000000000", "key_label": "prod"}),
        ),
        (
            "credit_runway",
            json!({"provider": "openai", "min_days": 7}),
            json!({"provider": "openai", "min_days": 7}),
        ),
        (
            "spend_anomaly",
            json!({}),
            json!({"window": "day", "sensitivity": 3.0, "min_spend_usd": "0.000000000"}),
        ),
        (
            "unpriced_requests",
            json!({"threshold_count": 3}),
            json!({"threshold_count": 3, "window_minutes": 60}),
        ),
        (
            "cost_drift",
            json!({"provider": "openai", "threshold_percent": 10}),
            json!({"provider": "openai", "threshold_percent": 10.0, "days": 1}),
        ),
        (
            "records_rejected",
            json!({}),
            json!({"threshold_count": 1, "window_minutes": 60}),
        ),
    ];
    for (kind, params, stored) in good {
        let out = create(&env, &env.acme_admin, rule(kind, params)).await;
        assert_eq!(out["params"], stored, "{kind}");
    }

    let bad: Vec<(Value, &str)> = vec![
        (rule("spend_threshold", json!({})), "params.threshold_usd"),
        (
            rule("spend_threshold", json!({"threshold_usd": "0"})),
            "params.threshold_usd",
        ),
        (
            rule("spend_threshold", json!({"threshold_usd": 10})),
            "params.threshold_usd",
        ),
        (
            rule(
                "spend_threshold",
                json!({"threshold_usd": "10", "window": "year"}),
            ),
            "params.window",
        ),
        (
            rule(
                "spend_threshold",
                json!({"threshold_usd": "10", "provider": "azure"}),
            ),
            "params.provider",
        ),
        (
            rule(
                "spend_threshold",
                json!({"threshold_usd": "10", "model": ""}),
            ),
            "params.model",
        ),
        (
            rule(
                "budget_threshold",
                json!({"budget_id": "nope", "percent": 80}),
            ),
            "params.budget_id",
        ),
        (
            rule(
                "budget_threshold",
                json!({"budget_id": globex_budget, "percent": 80}),
            ),
            "params.budget_id",
        ),
        (
            rule(
                "budget_threshold",
                json!({"budget_id": Uuid::new_v4().to_string(), "percent": 80}),
            ),
            "params.budget_id",
        ),
        (
            rule(
                "budget_threshold",
                json!({"budget_id": budget_id, "percent": 101}),
            ),
            "params.percent",
        ),
        (
            rule("error_rate", json!({"threshold_percent": 0})),
            "params.threshold_percent",
        ),
        (
            rule(
                "error_rate",
                json!({"threshold_percent": 5, "window_minutes": 0}),
            ),
            "params.window_minutes",
        ),
        (
            rule("latency_p95", json!({"threshold_ms": -1})),
            "params.threshold_ms",
        ),
        (
            rule("latency_p95", json!({"threshold_ms": 1.5})),
            "params.threshold_ms",
        ),
        (
            rule("low_balance", json!({"threshold_usd": "5"})),
            "params.provider",
        ),
        (
            rule(
                "credit_runway",
                json!({"provider": "openai", "min_days": 400}),
            ),
            "params.min_days",
        ),
        (
            rule("spend_anomaly", json!({"sensitivity": 11})),
            "params.sensitivity",
        ),
        (
            rule("unpriced_requests", json!({"threshold_count": 0})),
            "params.threshold_count",
        ),
        (
            rule(
                "cost_drift",
                json!({"provider": "openai", "threshold_percent": 5, "extra": true}),
            ),
            "params.extra",
        ),
        (rule("cost_drift", json!("provider=openai")), "params"),
        (rule("credit_low", json!({})), "kind"),
        (
            json!({"name": "x", "kind": "error_rate", "params": {"threshold_percent": 5}, "severity": "urgent"}),
            "severity",
        ),
        (
            json!({"name": "", "kind": "error_rate", "params": {"threshold_percent": 5}, "severity": "low"}),
            "name",
        ),
        (
            json!({"kind": "error_rate", "params": {"threshold_percent": 5}, "severity": "low"}),
            "name",
        ),
        (
            json!({"name": "x", "kind": "error_rate", "params": {"threshold_percent": 5}, "severity": "low",
                "channels": ["pager:123"]}),
            "channels",
        ),
        (
            json!({"name": "x", "kind": "error_rate", "params": {"threshold_percent": 5}, "severity": "low",
                "channels": "dashboard"}),
            "channels",
        ),
        (
            json!({"name": "x", "kind": "error_rate", "params": {"threshold_percent": 5}, "severity": "low",
                "enabled": 1}),
            "enabled",
        ),
        (
            json!({"name": "x", "kind": "error_rate", "params": {"threshold_percent": 5}, "severity": "low",
                "priority": 1}),
            "priority",
        ),
    ];
    for (body, field) in bad {
        let (status, out) = env
            .call(
                "POST",
                "/api/v1/alert-rules",
                Some(&env.acme_admin),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {out}");
        assert_eq!(field_of(&out), field, "{body} → {out}");
    }
    // A budget of another org cannot be watched by naming it, even by an admin.
    let mut by_admin = rule(
        "budget_threshold",
        json!({"budget_id": globex_budget, "percent": 50}),
    );
    by_admin["org_id"] = json!("acme");
    let (status, out) = env
        .call(
            "POST",
            "/api/v1/alert-rules",
            Some(&env.admin),
            Some(by_admin),
        )
        .await;
    assert_eq!(
        (status, field_of(&out)),
        (StatusCode::BAD_REQUEST, "params.budget_id")
    );
}

fn alert(org: &str, severity: &str, state: &str, opened_minutes_ago: i64) -> AlertRow {
    let now = Utc::now().with_nanosecond(0).unwrap();
    AlertRow {
        alert_id: Uuid::new_v4(),
        org_id: org.into(),
        rule_id: Uuid::new_v4(),
        kind: "spend_threshold".into(),
        severity: severity.into(),
        state: state.into(),
        dedup_key: format!("{org}:{opened_minutes_ago}"),
        title: format!("{org} spend {opened_minutes_ago}"),
        details: json!({"spent_usd": "12.500000000", "threshold_usd": "10.000000000"}).to_string(),
        opened_at: now - TimeDelta::minutes(opened_minutes_ago),
        acknowledged_by: String::new(),
        acknowledged_at: None,
        resolved_by: String::new(),
        resolved_at: None,
        updated_at: now - TimeDelta::minutes(opened_minutes_ago),
        version: 1,
    }
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|a| a["alert_id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn alerts_are_listed_newest_first_and_acknowledged_and_resolved_with_who_and_when() {
    let env = Env::new().await;
    let a1 = alert("acme", "high", "open", 10);
    let a2 = alert("acme", "critical", "open", 5);
    let a3 = alert("acme", "low", "resolved", 60);
    let g1 = alert("globex", "high", "open", 1);
    write_alert(
        env.db.client(),
        &[a1.clone(), a2.clone(), a3.clone(), g1.clone()],
    )
    .await
    .unwrap();
    let s = |a: &AlertRow| a.alert_id.to_string();

    let (status, list) = env.get("/api/v1/alerts", &env.acme_viewer).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&list), vec![s(&a2), s(&a1), s(&a3)]);
    assert_eq!(
        list[1],
        json!({"alert_id": s(&a1), "org_id": "acme", "rule_id": a1.rule_id.to_string(), "kind": "spend_threshold",
               "severity": "high", "state": "open", "title": "acme spend 10",
               "details": {"spent_usd": "12.500000000", "threshold_usd": "10.000000000"},
               "opened_at": usage_core::rfc3339::format(&a1.opened_at).unwrap(),
               "acknowledged_by": null, "acknowledged_at": null, "resolved_by": null, "resolved_at": null,
               "updated_at": usage_core::rfc3339::format(&a1.updated_at).unwrap()})
    );
    assert_eq!(
        ids(&env
            .get("/api/v1/alerts?state=open", &env.acme_admin)
            .await
            .1),
        vec![s(&a2), s(&a1)]
    );
    assert_eq!(
        ids(&env
            .get("/api/v1/alerts?severity=low", &env.acme_admin)
            .await
            .1),
        vec![s(&a3)]
    );
    assert_eq!(
        ids(&env
            .get("/api/v1/alerts?state=open&severity=high", &env.acme_admin)
            .await
            .1),
        vec![s(&a1)]
    );
    assert_eq!(
        ids(&env.get("/api/v1/alerts?limit=1", &env.acme_admin).await.1),
        vec![s(&a2)]
    );
    assert_eq!(
        ids(&env.get("/api/v1/alerts", &env.admin).await.1),
        vec![s(&g1), s(&a2), s(&a1), s(&a3)]
    );
    assert_eq!(
        ids(&env.get("/api/v1/alerts?org=globex", &env.admin).await.1),
        vec![s(&g1)]
    );
    for (q, field) in [
        ("state=closed", "state"),
        ("severity=urgent", "severity"),
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("sort=asc", "sort"),
    ] {
        let (status, out) = env
            .get(&format!("/api/v1/alerts?{q}"), &env.acme_admin)
            .await;
        assert_eq!(
            (status, field_of(&out)),
            (StatusCode::BAD_REQUEST, field),
            "{q}"
        );
    }

    // Acknowledge: who (token name and id) and when; again is a no-op.
    let before = Utc::now().with_nanosecond(0).unwrap();
    let (status, acked) = env
        .call(
            "POST",
            &format!("/api/v1/alerts/{}/acknowledge", s(&a1)),
            Some(&env.acme_admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{acked}");
    assert_eq!(acked["state"], "acknowledged");
    assert!(
        acked["acknowledged_by"]
            .as_str()
            .unwrap()
            .starts_with("acme admin (tok_"),
        "{acked}"
    );
    let at = usage_core::rfc3339::parse(acked["acknowledged_at"].as_str().unwrap()).unwrap();
    assert!(at >= before && at <= Utc::now(), "{at}");
    let (status, again) = env
        .call(
            "POST",
            &format!("/api/v1/alerts/{}/acknowledge", s(&a1)),
            Some(&env.admin),
            None,
        )
        .await;
    assert_eq!((status, &again), (StatusCode::OK, &acked));
    assert_eq!(
        ids(&env
            .get("/api/v1/alerts?state=acknowledged", &env.acme_viewer)
            .await
            .1),
        vec![s(&a1)]
    );

    // Resolve (by the admin this time); then neither acknowledging nor resolving is possible.
    let (status, resolved) = env
        .call(
            "POST",
            &format!("/api/v1/alerts/{}/resolve", s(&a1)),
            Some(&env.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resolved}");
    assert_eq!(resolved["state"], "resolved");
    assert_eq!(resolved["acknowledged_by"], acked["acknowledged_by"]);
    assert!(
        resolved["resolved_by"]
            .as_str()
            .unwrap()
            .starts_with("admin (tok_"),
        "{resolved}"
    );
    assert!(resolved["resolved_at"].is_string());
    let (status, out) = env
        .call(
            "POST",
            &format!("/api/v1/alerts/{}/acknowledge", s(&a1)),
            Some(&env.acme_admin),
            None,
        )
        .await;
    assert_eq!(
        (status, out["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("conflict"))
    );
    let (status, _) = env
        .call(
            "POST",
            &format!("/api/v1/alerts/{}/resolve", s(&a1)),
            Some(&env.acme_admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    // An open alert can be resolved directly.
    let (status, out) = env
        .call(
            "POST",
            &format!("/api/v1/alerts/{}/resolve", s(&a2)),
            Some(&env.acme_admin),
            None,
        )
        .await;
    assert_eq!(
        (status, out["acknowledged_by"].clone(), out["state"].clone()),
        (StatusCode::OK, Value::Null, json!("resolved"))
    );
    assert_eq!(
        ids(&env
            .get("/api/v1/alerts?state=resolved", &env.acme_admin)
            .await
            .1),
        vec![s(&a2), s(&a1), s(&a3)]
    );
    assert_eq!(
        ids(&env
            .get("/api/v1/alerts?state=open", &env.acme_admin)
            .await
            .1),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn tenants_never_see_or_change_each_others_rules_and_alerts() {
    let env = Env::new().await;
    let acme_rule = create(
        &env,
        &env.acme_admin,
        rule("latency_p95", json!({"threshold_ms": 900})),
    )
    .await;
    let globex_rule = create(
        &env,
        &env.globex_admin,
        rule("latency_p95", json!({"threshold_ms": 900})),
    )
    .await;
    let rid = |r: &Value| r["rule_id"].as_str().unwrap().to_string();
    let a = alert("acme", "high", "open", 3);
    let g = alert("globex", "high", "open", 3);
    write_alert(env.db.client(), &[a.clone(), g.clone()])
        .await
        .unwrap();

    for (method, uri) in [
        ("GET", format!("/api/v1/alert-rules/{}", rid(&acme_rule))),
        ("PUT", format!("/api/v1/alert-rules/{}", rid(&acme_rule))),
        ("DELETE", format!("/api/v1/alert-rules/{}", rid(&acme_rule))),
        ("POST", format!("/api/v1/alerts/{}/acknowledge", a.alert_id)),
        ("POST", format!("/api/v1/alerts/{}/resolve", a.alert_id)),
    ] {
        let body = (method == "PUT").then(|| rule("latency_p95", json!({"threshold_ms": 1})));
        let (status, out) = env.call(method, &uri, Some(&env.globex_admin), body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri}: {out}");
    }
    let rule_ids = |v: Value| -> Vec<String> { v.as_array().unwrap().iter().map(rid).collect() };
    assert_eq!(
        rule_ids(env.get("/api/v1/alert-rules", &env.globex_admin).await.1),
        vec![rid(&globex_rule)]
    );
    assert_eq!(
        rule_ids(env.get("/api/v1/alert-rules", &env.acme_viewer).await.1),
        vec![rid(&acme_rule)]
    );
    assert_eq!(
        rule_ids(env.get("/api/v1/alert-rules?org=acme", &env.admin).await.1),
        vec![rid(&acme_rule)]
    );
    assert_eq!(
        env.get("/api/v1/alert-rules", &env.admin)
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        env.get("/api/v1/alert-rules?org=acme", &env.globex_admin)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        ids(&env.get("/api/v1/alerts", &env.globex_admin).await.1),
        vec![g.alert_id.to_string()]
    );
    assert_eq!(
        env.get("/api/v1/alerts?org=acme", &env.globex_admin)
            .await
            .0,
        StatusCode::FORBIDDEN
    );

    // Viewers read but never write; org admins never write into another org.
    let (status, _) = env
        .call(
            "POST",
            "/api/v1/alert-rules",
            Some(&env.acme_viewer),
            Some(rule("latency_p95", json!({"threshold_ms": 1}))),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = env
        .call(
            "PUT",
            &format!("/api/v1/alert-rules/{}", rid(&acme_rule)),
            Some(&env.acme_viewer),
            Some(rule("latency_p95", json!({"threshold_ms": 1}))),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = env
        .call(
            "DELETE",
            &format!("/api/v1/alert-rules/{}", rid(&acme_rule)),
            Some(&env.acme_viewer),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = env
        .call(
            "POST",
            &format!("/api/v1/alerts/{}/acknowledge", a.alert_id),
            Some(&env.acme_viewer),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = env
        .call(
            "POST",
            &format!("/api/v1/alerts/{}/resolve", a.alert_id),
            Some(&env.acme_viewer),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let mut other = rule("latency_p95", json!({"threshold_ms": 1}));
    other["org_id"] = json!("globex");
    let (status, _) = env
        .call(
            "POST",
            "/api/v1/alert-rules",
            Some(&env.acme_admin),
            Some(other),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The alert is untouched by all of that.
    assert_eq!(
        env.get("/api/v1/alerts", &env.acme_admin).await.1[0]["state"],
        "open"
    );

    // Alice (bound to her user) sees no org-level rules or alerts at all.
    assert_eq!(
        env.get("/api/v1/alert-rules", &env.alice).await,
        (StatusCode::OK, json!([]))
    );
    assert_eq!(
        env.get("/api/v1/alerts", &env.alice).await,
        (StatusCode::OK, json!([]))
    );
    assert_eq!(
        env.get(
            &format!("/api/v1/alert-rules/{}", rid(&acme_rule)),
            &env.alice
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        env.call(
            "POST",
            &format!("/api/v1/alerts/{}/acknowledge", a.alert_id),
            Some(&env.alice),
            None
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        env.get("/api/v1/alerts?org=globex", &env.alice).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        env.call("GET", "/api/v1/alerts", None, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        env.call(
            "POST",
            "/api/v1/alerts/garbage/resolve",
            Some(&env.admin),
            None
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
}
