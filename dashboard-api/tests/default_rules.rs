//! The default alert rules (tollgate_jobs::default_rules) against the real ClickHouse: an org's
//! first app key brings its rules, listed before any evaluator tick; budgets without
//! thresholds and balances get theirs at the next tick; a rule an admin deleted or edited is
//! never brought back or reset; two seedings at once make one rule each; the rules fire on the
//! traffic they describe; the switch turns it all off.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

mod common;
mod evaluator_support;
mod web_support;

use std::collections::BTreeMap;

use axum::http::StatusCode;
use chrono::TimeDelta;
use common::Env;
use evaluator_support::*;
use serde_json::{json, Value};
use tollgate_jobs::default_rules;
use uuid::Uuid;

async fn env(on: bool) -> Env {
    env_with(|c| c.evaluator.default_rules = on).await
}

/// The org's rules as its admin lists them: name → rule.
async fn rules_of(env: &Env, token: &str) -> BTreeMap<String, Value> {
    let (status, out) = env.get("/api/v1/alert-rules", token).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    out.as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap().to_string(), r.clone()))
        .collect()
}

fn id(rule: &Value) -> Uuid {
    rule["rule_id"].as_str().unwrap().parse().unwrap()
}

async fn create_key(env: &Env, token: &str, app: &str) {
    let (status, out) = env
        .call(
            "POST",
            "/api/v1/keys",
            Some(token),
            Some(json!({"app_id": app, "name": app})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{out}");
}

async fn budget(env: &Env, name: &str, thresholds: &[u8]) -> String {
    let (status, out) = env
        .call(
            "POST",
            "/api/v1/budgets",
            Some(&env.acme_admin),
            Some(
                json!({"name": name, "scope": "org", "period": "daily", "limit_usd": "10",
                        "mode": "hard", "soft_thresholds": thresholds}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{out}");
    out["budget_id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn an_orgs_first_app_key_brings_its_rules_listed_before_any_tick() {
    let env = env(true).await;
    assert!(rules_of(&env, &env.acme_admin).await.is_empty());
    create_key(&env, &env.acme_admin, "chat").await;
    let rules = rules_of(&env, &env.acme_admin).await;
    let names: Vec<&str> = rules.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "Calls to unpriced models",
            "Daily spend anomaly",
            "Error rate above 5 %"
        ]
    );
    for r in rules.values() {
        assert_eq!(r["org_id"], "acme");
        assert_eq!(r["enabled"], true);
        assert_eq!(r["channels"], json!(["dashboard"]));
        assert_eq!(r["created_by"], default_rules::CREATED_BY);
    }
    assert_eq!(rules["Error rate above 5 %"]["kind"], "error_rate");
    assert_eq!(
        rules["Error rate above 5 %"]["params"]["threshold_percent"],
        5.0
    );
    // The web Alerts tab lists them for the org's admin on their first visit.
    let (status, html) = web_support::page(&env, "/alerts", &env.acme_admin).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    for (name, rule) in &rules {
        let row = format!("data-rule-id=\"{}\"", id(rule));
        assert!(html.contains(&row), "{name} not listed: {html}");
    }
    assert!(html.contains("Error rate above 5 %") && html.contains("tollgate defaults"));
    // Another key of the same org adds nothing; globex's rules are its own.
    create_key(&env, &env.acme_admin, "search").await;
    assert_eq!(rules_of(&env, &env.acme_admin).await.len(), 3);
    assert!(rules_of(&env, &env.globex_admin).await.is_empty());
}

#[tokio::test]
async fn a_tick_covers_every_org_budget_without_thresholds_and_balance() {
    let env = env(true).await;
    let bare = budget(&env, "team cap", &[]).await;
    budget(&env, "warned cap", &[50, 80]).await;
    let now = noon();
    tollgate_clickhouse::credits::insert(
        env.db.client(),
        &[
            tollgate_clickhouse::credits::CreditInsertRow {
                provider: "openrouter".into(),
                key_label: "main".into(),
                org_id: String::new(), // the deployment's: acme is an operator org here
                balance_nusd: Some(50_000_000_000),
                total_credits_nusd: 100_000_000_000,
                total_usage_nusd: 50_000_000_000,
                status: "ok".into(),
                error: String::new(),
                observed_at: now - TimeDelta::minutes(5),
            },
            tollgate_clickhouse::credits::CreditInsertRow {
                provider: "openai".into(),
                key_label: "globex".into(),
                org_id: "globex".into(),
                balance_nusd: Some(5_000_000_000),
                total_credits_nusd: 0,
                total_usage_nusd: 0,
                status: "ok".into(),
                error: String::new(),
                observed_at: now - TimeDelta::minutes(5),
            },
        ],
    )
    .await
    .unwrap();
    let report = tick(&env, now).await;
    assert_eq!(
        report.rules,
        3 + 2 + 3 + 1,
        "acme: 3 + budget + openrouter; globex: 3 + openai"
    );
    let acme = rules_of(&env, &env.acme_admin).await;
    assert_eq!(acme.len(), 5, "{:?}", acme.keys());
    let b = &acme["Budget team cap at 80 %"];
    assert_eq!(b["kind"], "budget_threshold");
    assert_eq!(b["params"]["budget_id"], bare);
    assert_eq!(
        acme["openrouter credits run out within 7 days"]["kind"],
        "credit_runway"
    );
    let globex = rules_of(&env, &env.globex_admin).await;
    assert!(
        globex.contains_key("openai credits run out within 7 days"),
        "{:?}",
        globex.keys()
    );
    assert!(!globex.contains_key("openrouter credits run out within 7 days"));
    // The next tick writes nothing.
    let keys = env.db.keys_client();
    let again = default_rules::seed(env.db.client(), &keys, &["acme".into()], None, now)
        .await
        .unwrap();
    assert!(again.created.is_empty(), "{:?}", again.created);
}

#[tokio::test]
async fn deleted_and_edited_default_rules_stay_as_the_admin_left_them() {
    let env = env(true).await;
    create_key(&env, &env.acme_admin, "chat").await;
    let rules = rules_of(&env, &env.acme_admin).await;
    let anomaly = id(&rules["Daily spend anomaly"]);
    let errors = id(&rules["Error rate above 5 %"]);
    let (status, out) = env
        .call(
            "DELETE",
            &format!("/api/v1/alert-rules/{anomaly}"),
            Some(&env.acme_admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{out}");
    set_params(&env, errors, json!({"threshold_percent": 20})).await;
    // Ticks, and a new key of the org, seed again: nothing comes back, nothing is reset.
    tick(&env, noon()).await;
    create_key(&env, &env.acme_admin, "search").await;
    tick(&env, noon() + TimeDelta::minutes(1)).await;
    let rules = rules_of(&env, &env.acme_admin).await;
    assert!(
        !rules.contains_key("Daily spend anomaly"),
        "{:?}",
        rules.keys()
    );
    assert_eq!(
        rules["Error rate above 5 %"]["params"]["threshold_percent"],
        20.0
    );
    // Even a seeding that writes the rows again (a stale read of the rules) cannot undo them:
    // version 1 loses to the edit and the deletion.
    let org = default_rules::for_org("acme");
    assert_eq!(org[0].rule_id(), anomaly);
    let stale: Vec<_> = org
        .iter()
        .map(|r| {
            let mut row = tollgate_clickhouse::alerts::RuleRow {
                rule_id: r.rule_id(),
                org_id: "acme".into(),
                name: r.name.clone(),
                kind: r.kind.as_str().into(),
                params: r.params.to_string(),
                severity: r.severity.into(),
                channels: vec!["dashboard".into()],
                enabled: 1,
                created_by: default_rules::CREATED_BY.into(),
                created_at: noon(),
                updated_at: noon(),
                deleted: 0,
                version: 1,
            };
            row.params = r.params.to_string();
            row
        })
        .collect();
    tollgate_clickhouse::alerts::write_rules(env.db.client(), &stale)
        .await
        .unwrap();
    let rules = rules_of(&env, &env.acme_admin).await;
    assert!(!rules.contains_key("Daily spend anomaly"));
    assert_eq!(
        rules["Error rate above 5 %"]["params"]["threshold_percent"],
        20.0
    );
}

#[tokio::test]
async fn two_seedings_at_once_make_one_rule_each() {
    let env = env(true).await;
    create_key(&env, &env.globex_admin, "chat").await;
    let c = env.db.client();
    let keys = env.db.keys_client();
    let ops = ["acme".to_string()];
    let (a, b) = tokio::join!(
        default_rules::seed(c, &keys, &ops, None, noon()),
        default_rules::seed(c, &keys, &ops, None, noon()),
    );
    assert!(!a.unwrap().created.is_empty() || !b.unwrap().created.is_empty());
    let (status, out) = env.get("/api/v1/alert-rules", &env.admin).await;
    assert_eq!(status, StatusCode::OK);
    let mut ids: Vec<&str> = out
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule_id"].as_str().unwrap())
        .collect();
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        (n, ids.len()),
        (6, 6),
        "acme 3 + globex 3, once each: {out}"
    );
}

#[tokio::test]
async fn the_default_rules_fire_on_the_traffic_they_describe() {
    let env = env(true).await;
    let now = noon();
    let mut recs = Vec::new();
    for i in 0..30 {
        let c = call(
            "acme",
            "openai",
            now - TimeDelta::minutes(1 + i % 10),
            "0.01",
        );
        recs.push(if i % 3 == 0 { failed(c, 500) } else { c });
    }
    recs.push(unpriced(call(
        "acme",
        "openai",
        now - TimeDelta::minutes(3),
        "0",
    )));
    seed(&env, &recs).await;
    let report = tick(&env, now).await;
    let opened: BTreeMap<&str, &str> = report
        .opened
        .iter()
        .map(|a| (a.kind.as_str(), a.org_id.as_str()))
        .collect();
    assert_eq!(
        opened,
        BTreeMap::from([("error_rate", "acme"), ("unpriced_requests", "acme")]),
        "{:?}",
        report.opened
    );
}

#[tokio::test]
async fn switched_off_no_org_gets_default_rules() {
    let env = env(false).await;
    create_key(&env, &env.acme_admin, "chat").await;
    budget(&env, "team cap", &[]).await;
    tick(&env, noon()).await;
    let (_, out) = env.get("/api/v1/alert-rules", &env.admin).await;
    assert_eq!(out, json!([]));
}
