//! The alert evaluator against the real ClickHouse: every rule kind fires on data that should
//! fire it (once, however many ticks), stays quiet on data that should not, and resolves
//! itself when the condition clears; people's acknowledgements and resolutions are kept; one
//! instance holds the jobs lease; `serve`'s loops run and stop. (`cost_drift` is in
//! reconcile.rs, notifications in notify.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

mod common;
mod evaluator_support;

use std::time::Duration as StdDuration;

use axum::http::StatusCode;
use chrono::{DateTime, TimeDelta, Timelike, Utc};
use common::Env;
use evaluator_support::*;
use serde_json::json;
use tollgate_jobs::lease::Lease;
use usage_core::ErrorClass;

#[tokio::test]
async fn spend_threshold_fires_once_and_resolves_when_it_clears() {
    let env = env_with(|_| {}).await;
    let now = noon();
    let mut recs = Vec::new();
    for i in 0..6 {
        recs.push(call(
            "acme",
            "openai",
            now - TimeDelta::minutes(10 + i),
            "10",
        ));
    }
    recs.push(call(
        "acme",
        "openrouter",
        now - TimeDelta::minutes(5),
        "100",
    ));
    recs.push(call("acme", "openai", now - TimeDelta::days(1), "500"));
    recs.push(call(
        "globex",
        "openai",
        now - TimeDelta::minutes(5),
        "1000",
    ));
    seed(&env, &recs).await;
    let fires = rule(
        &env,
        "spend_threshold",
        json!({"threshold_usd": "50", "provider": "openai"}),
        &["dashboard"],
    )
    .await;
    let quiet = rule(
        &env,
        "spend_threshold",
        json!({"threshold_usd": "70", "provider": "openai"}),
        &["dashboard"],
    )
    .await;
    let this_hour = rule(
        &env,
        "spend_threshold",
        json!({"threshold_usd": "1", "window": "hour"}),
        &["dashboard"],
    )
    .await;
    let all_providers = rule(
        &env,
        "spend_threshold",
        json!({"threshold_usd": "150"}),
        &["dashboard"],
    )
    .await;

    let alert = assert_fires_once(&env, fires, now).await;
    assert_eq!(alert["kind"], "spend_threshold");
    assert_eq!(alert["severity"], "high");
    assert_eq!(alert["org_id"], "acme");
    assert_eq!(alert["details"]["spent_usd"], "60.000000000");
    assert_eq!(alert["details"]["window"], "day");
    let title = alert["title"].as_str().unwrap();
    assert!(
        title.contains("$60.00") && title.contains("$50.00") && title.contains("openai"),
        "{title}"
    );
    assert!(
        alerts_of(&env, quiet).await.is_empty(),
        "yesterday and other orgs do not count"
    );
    assert!(
        alerts_of(&env, this_hour).await.is_empty(),
        "nothing was spent since noon"
    );
    assert_eq!(
        open_alerts_of(&env, all_providers).await.len(),
        1,
        "$160 over every provider"
    );

    // The condition clears (the threshold moves above the spend): resolved by the evaluator.
    set_params(
        &env,
        fires,
        json!({"threshold_usd": "80", "provider": "openai"}),
    )
    .await;
    let resolved = assert_auto_resolves(&env, fires, now + TimeDelta::minutes(2)).await;
    assert_eq!(
        resolved["details"]["resolution"]["reason"],
        "condition cleared"
    );
    assert_eq!(resolved["details"]["spent_usd"], "60.000000000");
    // The day ends: tomorrow is another window, and today's alert resolves with it.
    let report = tick(&env, now + TimeDelta::days(1)).await;
    let gone: Vec<_> = report
        .resolved
        .iter()
        .filter(|a| a.rule_id == all_providers)
        .collect();
    assert_eq!(gone.len(), 1);
    assert!(gone[0].details.contains("window ended"));
}

#[tokio::test]
async fn acknowledgements_are_kept_and_a_person_resolving_silences_until_the_condition_clears() {
    let env = env_with(|_| {}).await;
    let now = noon();
    seed(
        &env,
        &[call("acme", "openai", now - TimeDelta::minutes(5), "60")],
    )
    .await;
    let id = rule(
        &env,
        "spend_threshold",
        json!({"threshold_usd": "50"}),
        &["dashboard"],
    )
    .await;
    let first = assert_fires_once(&env, id, now).await;
    let alert_id = first["alert_id"].as_str().unwrap().to_string();

    let (status, acked) = env
        .call(
            "POST",
            &format!("/api/v1/alerts/{alert_id}/acknowledge"),
            Some(&env.acme_admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{acked}");
    let report = tick(&env, now + TimeDelta::minutes(2)).await;
    assert!(report.opened.is_empty() && report.resolved.is_empty());
    let still = open_alerts_of(&env, id).await;
    assert_eq!(still[0]["state"], "acknowledged");
    assert_eq!(still[0]["acknowledged_by"], acked["acknowledged_by"]);

    // Cleared: resolved by the evaluator, the acknowledgement (who and when) kept.
    set_params(&env, id, json!({"threshold_usd": "100"})).await;
    let resolved = assert_auto_resolves(&env, id, now + TimeDelta::minutes(3)).await;
    assert_eq!(resolved["acknowledged_by"], acked["acknowledged_by"]);
    assert_eq!(resolved["acknowledged_at"], acked["acknowledged_at"]);

    // Fires again: a new alert. A person resolves it while the condition still holds: the
    // evaluator keeps quiet until the condition has cleared once.
    set_params(&env, id, json!({"threshold_usd": "50"})).await;
    let report = tick(&env, now + TimeDelta::minutes(4)).await;
    assert_eq!(opened_by(&report, id).len(), 1);
    let second = report.opened[0].alert_id;
    let (status, by_hand) = env
        .call(
            "POST",
            &format!("/api/v1/alerts/{second}/resolve"),
            Some(&env.acme_admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{by_hand}");
    for m in 5..8 {
        let report = tick(&env, now + TimeDelta::minutes(m)).await;
        assert!(
            report.opened.is_empty(),
            "reopened after a person resolved it"
        );
    }
    set_params(&env, id, json!({"threshold_usd": "100"})).await;
    let report = tick(&env, now + TimeDelta::minutes(8)).await;
    assert!(report.opened.is_empty() && report.resolved.is_empty());
    let all = alerts_of(&env, id).await;
    let by_person = all
        .iter()
        .find(|a| a["alert_id"] == second.to_string())
        .unwrap();
    assert_eq!(
        by_person["resolved_by"], by_hand["resolved_by"],
        "the person stays on record"
    );
    set_params(&env, id, json!({"threshold_usd": "50"})).await;
    let report = tick(&env, now + TimeDelta::minutes(9)).await;
    assert_eq!(
        opened_by(&report, id).len(),
        1,
        "cleared once, so it may fire again"
    );
    assert_eq!(alerts_of(&env, id).await.len(), 3);

    // Deleting the rule resolves its open alert.
    let (status, _) = env
        .call(
            "DELETE",
            &format!("/api/v1/alert-rules/{id}"),
            Some(&env.acme_admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let report = tick(&env, now + TimeDelta::minutes(10)).await;
    assert_eq!(report.resolved.len(), 1);
    assert!(report.resolved[0]
        .details
        .contains("rule disabled or deleted"));
    assert!(open_alerts_of(&env, id).await.is_empty());
}

#[tokio::test]
async fn budget_threshold_follows_the_budget() {
    let env = env_with(|_| {}).await;
    let now = noon();
    let budget = |limit: &str| json!({"name": "acme monthly", "scope": "org", "period": "monthly", "limit_usd": limit, "mode": "soft"});
    let (status, b) = env
        .call(
            "POST",
            "/api/v1/budgets",
            Some(&env.acme_admin),
            Some(budget("100")),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
    let budget_id = b["budget_id"].as_str().unwrap().to_string();
    seed(
        &env,
        &[
            call("acme", "openai", now - TimeDelta::minutes(5), "85"),
            call("globex", "openai", now - TimeDelta::minutes(5), "500"),
        ],
    )
    .await;
    let fires = rule(
        &env,
        "budget_threshold",
        json!({"budget_id": budget_id, "percent": 80}),
        &["dashboard"],
    )
    .await;
    let quiet = rule(
        &env,
        "budget_threshold",
        json!({"budget_id": budget_id, "percent": 90}),
        &["dashboard"],
    )
    .await;

    let alert = assert_fires_once(&env, fires, now).await;
    assert_eq!(alert["details"]["percent_used"], 85.0);
    assert_eq!(alert["details"]["spent_usd"], "85.000000000");
    assert!(alerts_of(&env, quiet).await.is_empty());

    let (status, out) = env
        .call(
            "PUT",
            &format!("/api/v1/budgets/{budget_id}"),
            Some(&env.acme_admin),
            Some(budget("200")),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_auto_resolves(&env, fires, now + TimeDelta::minutes(2)).await;
}

#[tokio::test]
async fn error_rate_counts_failures_in_the_window_but_not_budget_blocks() {
    let env = env_with(|_| {}).await;
    let now = noon();
    let mut recs = Vec::new();
    for i in 0..24 {
        recs.push(call(
            "acme",
            "openai",
            now - TimeDelta::seconds(30 + i * 20),
            "0.01",
        ));
    }
    for i in 0..6 {
        recs.push(failed(
            call("acme", "openai", now - TimeDelta::seconds(40 + i * 20), "0"),
            503,
        ));
    }
    for i in 0..10 {
        let mut blocked = call("acme", "openai", now - TimeDelta::seconds(50 + i * 20), "0");
        blocked.error_class = ErrorClass::BudgetBlocked;
        blocked.status_code = 429;
        recs.push(blocked);
    }
    for i in 0..30 {
        recs.push(failed(
            call(
                "globex",
                "openai",
                now - TimeDelta::seconds(30 + i * 10),
                "0",
            ),
            500,
        ));
    }
    // An hour ago: outside the window.
    for i in 0..50 {
        recs.push(failed(
            call(
                "acme",
                "openai",
                now - TimeDelta::minutes(60) - TimeDelta::seconds(i),
                "0",
            ),
            500,
        ));
    }
    seed(&env, &recs).await;
    let fires = rule(
        &env,
        "error_rate",
        json!({"threshold_percent": 10, "window_minutes": 15, "min_requests": 20}),
        &["dashboard"],
    )
    .await;
    let quiet = rule(
        &env,
        "error_rate",
        json!({"threshold_percent": 25}),
        &["dashboard"],
    )
    .await;
    let too_few = rule(
        &env,
        "error_rate",
        json!({"threshold_percent": 10, "min_requests": 50}),
        &["dashboard"],
    )
    .await;
    let other_provider = rule(
        &env,
        "error_rate",
        json!({"threshold_percent": 1, "min_requests": 1, "provider": "openrouter"}),
        &["dashboard"],
    )
    .await;

    let alert = assert_fires_once(&env, fires, now).await;
    assert_eq!(alert["details"]["errors"], 6);
    assert_eq!(alert["details"]["requests"], 30);
    assert_eq!(alert["details"]["error_rate_percent"], 20.0);
    for q in [quiet, too_few, other_provider] {
        assert!(alerts_of(&env, q).await.is_empty());
    }
    // Half an hour later the window holds no calls: clear.
    assert_auto_resolves(&env, fires, now + TimeDelta::minutes(30)).await;
}

#[tokio::test]
async fn latency_p95_of_successful_calls() {
    let env = env_with(|_| {}).await;
    let now = noon();
    let mut recs = Vec::new();
    for i in 0..20 {
        let mut r = call(
            "acme",
            "openai",
            now - TimeDelta::seconds(30 + i * 20),
            "0.01",
        );
        r.latency_ms = 2000;
        recs.push(r);
    }
    for i in 0..10 {
        let mut r = failed(
            call("acme", "openai", now - TimeDelta::seconds(35 + i * 20), "0"),
            429,
        );
        r.latency_ms = 10;
        recs.push(r);
    }
    seed(&env, &recs).await;
    let fires = rule(
        &env,
        "latency_p95",
        json!({"threshold_ms": 1500, "min_requests": 10, "model": "gpt-4o"}),
        &["dashboard"],
    )
    .await;
    let quiet = rule(
        &env,
        "latency_p95",
        json!({"threshold_ms": 2500, "min_requests": 10}),
        &["dashboard"],
    )
    .await;
    let other_model = rule(
        &env,
        "latency_p95",
        json!({"threshold_ms": 1, "min_requests": 1, "model": "gpt-4.1"}),
        &["dashboard"],
    )
    .await;

    let alert = assert_fires_once(&env, fires, now).await;
    assert_eq!(alert["details"]["latency_p95_ms"], 2000.0);
    assert_eq!(alert["details"]["successful_requests"], 20);
    assert!(alerts_of(&env, quiet).await.is_empty());
    assert!(alerts_of(&env, other_model).await.is_empty());
    assert_auto_resolves(&env, fires, now + TimeDelta::minutes(30)).await;
}

#[tokio::test]
async fn unpriced_requests_are_alerted() {
    let env = env_with(|_| {}).await;
    let now = noon();
    seed(
        &env,
        &[
            unpriced(call("acme", "openrouter", now - TimeDelta::minutes(5), "0")),
            unpriced(call("acme", "openrouter", now - TimeDelta::minutes(7), "0")),
            call("acme", "openai", now - TimeDelta::minutes(7), "1"),
        ],
    )
    .await;
    let fires = rule(&env, "unpriced_requests", json!({}), &["dashboard"]).await;
    let quiet = rule(
        &env,
        "unpriced_requests",
        json!({"threshold_count": 3}),
        &["dashboard"],
    )
    .await;
    let alert = assert_fires_once(&env, fires, now).await;
    assert_eq!(alert["details"]["unpriced_requests"], 2);
    assert!(alerts_of(&env, quiet).await.is_empty());
    assert_auto_resolves(&env, fires, now + TimeDelta::hours(2)).await;
}

/// #19 (4): records the collectors refused (the dead-letter table `usage_rejects`) raise an
/// alert; another org's rejects do not.
#[tokio::test]
async fn records_refused_by_the_collectors_are_alerted() {
    let env = env_with(|_| {}).await;
    let now = noon();
    let reject = |org: &str, at: DateTime<Utc>, index: u32| {
        format!(
            "('{}', 'batch-1', {index}, '{org}', 'cost_nusd', 'negative', '{{}}', 'edge')",
            at.format("%Y-%m-%d %H:%M:%S")
        )
    };
    env.db
        .client()
        .query(&format!(
            "INSERT INTO usage_rejects (received_at, batch_id, record_index, org_id, field, reason, raw_record, source) VALUES {}, {}, {}",
            reject("acme", now - TimeDelta::minutes(5), 0),
            reject("acme", now - TimeDelta::minutes(9), 1),
            reject("globex", now - TimeDelta::minutes(5), 0),
        ))
        .execute()
        .await
        .unwrap();
    let fires = rule(&env, "records_rejected", json!({}), &["dashboard"]).await;
    let quiet = rule(
        &env,
        "records_rejected",
        json!({"threshold_count": 3}),
        &["dashboard"],
    )
    .await;
    let alert = assert_fires_once(&env, fires, now).await;
    assert_eq!(
        alert["details"]["records_rejected"], 2,
        "acme's only: {alert}"
    );
    assert!(alerts_of(&env, quiet).await.is_empty());
    assert_auto_resolves(&env, fires, now + TimeDelta::hours(2)).await;
}

#[tokio::test]
async fn low_balance_watches_the_last_known_balance_of_the_orgs_it_may_see() {
    let env = env_with(|_| {}).await;
    let now = noon();
    let t0 = Utc::now().with_nanosecond(0).unwrap() - TimeDelta::minutes(10);
    balance_at(&env, "acme", "openai", "prod", "5", t0).await;
    balance_at(&env, "globex", "openai", "prod", "1", t0).await;
    // The deployment's own OpenRouter balance: only operator orgs (acme here) watch it.
    balance_at(&env, "", "openrouter", "account", "1", t0).await;
    let fires = rule(
        &env,
        "low_balance",
        json!({"provider": "openai", "threshold_usd": "10"}),
        &["dashboard"],
    )
    .await;
    let quiet = rule(
        &env,
        "low_balance",
        json!({"provider": "openai", "threshold_usd": "2"}),
        &["dashboard"],
    )
    .await;
    let other_key = rule(
        &env,
        "low_balance",
        json!({"provider": "openai", "threshold_usd": "10", "key_label": "staging"}),
        &["dashboard"],
    )
    .await;
    let operator = rule(
        &env,
        "low_balance",
        json!({"provider": "openrouter", "threshold_usd": "10"}),
        &["dashboard"],
    )
    .await;
    let not_operator = rule_as(
        &env,
        &env.globex_admin,
        "low_balance",
        json!({"provider": "openrouter", "threshold_usd": "10"}),
        &["dashboard"],
    )
    .await;

    let alert = assert_fires_once(&env, fires, now).await;
    assert_eq!(alert["details"]["balance_usd"], "5.000000000");
    assert_eq!(alert["details"]["key_label"], "prod");
    assert!(alerts_of(&env, quiet).await.is_empty());
    assert!(alerts_of(&env, other_key).await.is_empty());
    let deployment = open_alerts_of(&env, operator).await;
    assert_eq!(deployment.len(), 1);
    assert_eq!(deployment[0]["details"]["key_label"], "account");
    assert!(
        alerts_of(&env, not_operator).await.is_empty(),
        "globex must not see the deployment's balance"
    );

    // A failed poll records no balance: the last known one still counts.
    tollgate_clickhouse::credits::insert(
        env.db.client(),
        &[tollgate_clickhouse::credits::CreditInsertRow {
            provider: "openai".into(),
            key_label: "prod".into(),
            org_id: "acme".into(),
            balance_nusd: None,
            total_credits_nusd: 0,
            total_usage_nusd: 0,
            status: "invalid".into(),
            error: "HTTP 401".into(),
            observed_at: t0 + TimeDelta::minutes(1),
        }],
    )
    .await
    .unwrap();
    let report = tick(&env, now + TimeDelta::minutes(2)).await;
    assert!(report.resolved.is_empty() && report.opened.is_empty());

    balance_at(
        &env,
        "acme",
        "openai",
        "prod",
        "50",
        t0 + TimeDelta::minutes(2),
    )
    .await;
    assert_auto_resolves(&env, fires, now + TimeDelta::minutes(3)).await;
}

#[tokio::test]
async fn credit_runway_is_balance_over_the_forecast_burn() {
    let env = env_with(|_| {}).await;
    let now = noon();
    let today = now.date_naive();
    // Two weeks of $10 a day on OpenAI, then $75 left: 7.5 days from noon.
    let recs: Vec<_> = (1..=14)
        .map(|k| call("acme", "openai", at(today - TimeDelta::days(k), 6, 0), "10"))
        .collect();
    seed(&env, &recs).await;
    let t0 = Utc::now().with_nanosecond(0).unwrap() - TimeDelta::minutes(10);
    balance_at(&env, "acme", "openai", "prod", "75", t0).await;
    let fires = rule(
        &env,
        "credit_runway",
        json!({"provider": "openai", "min_days": 10}),
        &["dashboard"],
    )
    .await;
    let quiet = rule(
        &env,
        "credit_runway",
        json!({"provider": "openai", "min_days": 5}),
        &["dashboard"],
    )
    .await;
    let no_spend = rule(
        &env,
        "credit_runway",
        json!({"provider": "openrouter", "min_days": 30}),
        &["dashboard"],
    )
    .await;
    balance_at(&env, "acme", "openrouter", "prod", "1", t0).await;

    let alert = assert_fires_once(&env, fires, now).await;
    let days = alert["details"]["runway_days"].as_f64().unwrap();
    assert!(
        (days - 7.5).abs() <= 1.0,
        "runway {days} days, expected 7.5 ± 1"
    );
    assert_eq!(alert["details"]["burn_per_day_usd"], "10.00");
    let expected_day = tollgate_clickhouse::queries::day_param(today + TimeDelta::days(7));
    assert_eq!(alert["details"]["runs_out_on"], expected_day);
    assert!(alerts_of(&env, quiet).await.is_empty());
    assert!(
        alerts_of(&env, no_spend).await.is_empty(),
        "no spend: no run-out"
    );

    balance_at(
        &env,
        "acme",
        "openai",
        "prod",
        "500",
        t0 + TimeDelta::minutes(1),
    )
    .await;
    let resolved = assert_auto_resolves(&env, fires, now + TimeDelta::minutes(2)).await;
    let later = resolved["details"]["resolution"]["observed"]["runway_days"]
        .as_f64()
        .unwrap();
    assert!((later - 50.0).abs() <= 1.0, "{later}");
}

#[tokio::test]
async fn spend_anomaly_compares_today_with_the_same_hours_of_recent_days() {
    let env = env_with(|_| {}).await;
    let now = noon();
    let today = now.date_naive();
    let mut recs = Vec::new();
    for k in 1..=14 {
        let day = today - TimeDelta::days(k);
        for h in 0..24 {
            let cost = if k % 2 == 0 { "1.1" } else { "0.9" };
            recs.push(call("acme", "openai", at(day, h, 30), cost));
            recs.push(call("acme", "openrouter", at(day, h, 30), cost));
        }
    }
    for h in 0..12 {
        recs.push(call("acme", "openai", at(today, h, 30), "5"));
        recs.push(call("acme", "openrouter", at(today, h, 30), "1"));
    }
    // After the last complete hour: not compared yet.
    recs.push(call(
        "acme",
        "openrouter",
        now + TimeDelta::minutes(1),
        "500",
    ));
    seed(&env, &recs).await;
    let fires = rule(
        &env,
        "spend_anomaly",
        json!({"provider": "openai"}),
        &["dashboard"],
    )
    .await;
    let hourly = rule(
        &env,
        "spend_anomaly",
        json!({"provider": "openai", "window": "hour", "sensitivity": 5}),
        &["dashboard"],
    )
    .await;
    let quiet = rule(
        &env,
        "spend_anomaly",
        json!({"provider": "openrouter"}),
        &["dashboard"],
    )
    .await;
    let too_small = rule(
        &env,
        "spend_anomaly",
        json!({"provider": "openai", "min_spend_usd": "100"}),
        &["dashboard"],
    )
    .await;
    let no_history = rule_as(
        &env,
        &env.globex_admin,
        "spend_anomaly",
        json!({}),
        &["dashboard"],
    )
    .await;

    let alert = assert_fires_once(&env, fires, now).await;
    assert_eq!(alert["details"]["spent_usd"], "60.000000000");
    assert_eq!(alert["details"]["baseline_mean_usd"], "12.00");
    assert!(alert["details"]["z_score"].as_f64().unwrap() > 3.0);
    assert_eq!(open_alerts_of(&env, hourly).await.len(), 1);
    for q in [quiet, too_small, no_history] {
        assert!(alerts_of(&env, q).await.is_empty());
    }
    set_params(
        &env,
        fires,
        json!({"provider": "openai", "min_spend_usd": "1000"}),
    )
    .await;
    assert_auto_resolves(&env, fires, now + TimeDelta::minutes(2)).await;
}

#[tokio::test]
async fn one_instance_holds_the_jobs_lease() {
    let env = Env::new().await;
    let c = env.db.client().clone();
    let lease_settling = |name: &str, holder: &str, ttl: u64, settle_ms: u64| {
        Lease::new(
            c.clone(),
            name,
            holder,
            StdDuration::from_secs(ttl),
            StdDuration::from_millis(settle_ms),
        )
    };
    let lease = |name: &str, holder: &str, ttl: u64| lease_settling(name, holder, ttl, 300);
    let (a, b) = (lease("jobs", "a", 60), lease("jobs", "b", 60));
    assert!(a.acquire().await.unwrap());
    assert!(!b.acquire().await.unwrap(), "a holds it");
    assert!(a.acquire().await.unwrap(), "a renews");
    a.release().await.unwrap();
    assert!(b.acquire().await.unwrap(), "released: b takes over at once");
    assert!(!a.acquire().await.unwrap());

    // A holder that stops renewing loses the lease when it expires. (Lease times are whole
    // server seconds, so a 1 s lease can look expired 1 ms after it was taken: 3 s leaves a
    // busy CI machine two seconds between the take and the check.)
    let (c1, d1) = (lease("short", "c", 3), lease("short", "d", 3));
    assert!(c1.acquire().await.unwrap());
    assert!(!d1.acquire().await.unwrap());
    tokio::time::sleep(StdDuration::from_millis(4100)).await;
    assert!(d1.acquire().await.unwrap());

    // Two instances that find it free at the same moment: exactly one wins (given a settle
    // time longer than either's read-to-write stall: 1 s here, as in production).
    for round in 0..3 {
        let name = format!("race{round}");
        let (x, y) = (
            lease_settling(&name, "x", 60, 1000),
            lease_settling(&name, "y", 60, 1000),
        );
        let (rx, ry) = tokio::join!(x.acquire(), y.acquire());
        assert!(
            rx.unwrap() ^ ry.unwrap(),
            "round {round}: exactly one holder"
        );
    }
}

#[tokio::test]
async fn serve_runs_the_evaluator_loop_and_stops_it() {
    let env = env_with(|c| {
        c.evaluator.interval_secs = 1;
        c.evaluator.lease_secs = 5;
        c.evaluator.lease_settle_ms = 100;
    })
    .await;
    let now = Utc::now();
    seed(
        &env,
        &[unpriced(call(
            "acme",
            "openrouter",
            now - TimeDelta::minutes(1),
            "0",
        ))],
    )
    .await;
    let id = rule(&env, "unpriced_requests", json!({}), &["dashboard"]).await;
    let jobs = tollgate_jobs::spawn(env.state.jobs().clone());
    let mut open = Vec::new();
    for _ in 0..40 {
        open = open_alerts_of(&env, id).await;
        if !open.is_empty() {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(250)).await;
    }
    assert_eq!(open.len(), 1, "the loop opened the alert");
    tokio::time::sleep(StdDuration::from_millis(1500)).await;
    assert_eq!(
        alerts_of(&env, id).await.len(),
        1,
        "later ticks do not duplicate it"
    );
    jobs.shutdown().await;
    // Released on shutdown: another instance takes over at once.
    let next = Lease::new(
        env.db.client().clone(),
        "jobs",
        "next",
        StdDuration::from_secs(60),
        StdDuration::from_millis(100),
    );
    assert!(next.acquire().await.unwrap());
}
