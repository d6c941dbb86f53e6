//! Bill reconciliation against the mocked provider admin APIs, and `cost_drift` on top of it:
//! a 10% gap raises one alert, a 0.5% gap none; the Costs API is paged; a failed fetch writes
//! nothing; OpenRouter is reconciled from same-day snapshots of its key's daily usage.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

mod common;
mod evaluator_support;

use chrono::{NaiveDate, TimeDelta};
use common::Env;
use evaluator_support::provider_admin::{KeyInfo, MockAdmin, MockAdminServer, DEFAULT_KEY};
use evaluator_support::*;
use serde_json::json;
use service_kit::Secret;
use tollgate_clickhouse::reconciliation as reconcile;
use tollgate_jobs::evaluator::midnight;
use tollgate_jobs::reconcile::reconcile_once;

async fn reconciling_env(mock: &MockAdminServer) -> Env {
    let base = mock.base_url();
    env_with(move |c| {
        c.pollers.openai_base_url = base.clone();
        c.pollers.openrouter_base_url = base;
        c.pollers.openai_admin_key = Secret::new(DEFAULT_KEY.to_string());
        c.pollers.reconcile_lookback_days = 3;
        c.pollers.timeout_ms = 2000;
    })
    .await
}

/// OpenAI calls on `day` adding up to `usd`, split between two orgs (the bill covers both).
fn spend(day: NaiveDate, usd: &str) -> Vec<usage_core::UsageRecord> {
    let total = usage_core::Nanos::parse_usd(usd).unwrap().get();
    let part = usage_core::Nanos::new(total / 4).to_string();
    let rest = usage_core::Nanos::new(total - total / 4).to_string();
    vec![
        call("globex", "openai", at(day, 9, 0), &part),
        call("acme", "openai", at(day, 15, 0), &rest),
    ]
}

#[tokio::test]
async fn a_ten_percent_gap_raises_one_cost_drift_alert() {
    let mock = MockAdminServer::start(MockAdmin::default()).await.unwrap();
    let env = reconciling_env(&mock).await;
    let now = noon();
    let today = now.date_naive();
    let (d1, d2, d3) = (
        today - TimeDelta::days(1),
        today - TimeDelta::days(2),
        today - TimeDelta::days(3),
    );
    // Yesterday: the bill says $100, Tollgate recorded $90. The day before: $50 against $49.75.
    let mut recs = spend(d1, "90");
    recs.extend(spend(d2, "49.75"));
    recs.extend(spend(today, "1000")); // today is not complete: not reconciled
    seed(&env, &recs).await;
    mock.admin.set_daily_cost(midnight(d1).timestamp(), 100.0);
    mock.admin.set_daily_cost(midnight(d2).timestamp(), 50.0);

    let report = reconcile_once(env.state.jobs(), now).await.unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let rows = reconcile::range(env.db.client(), "openai", d3, today)
        .await
        .unwrap();
    let got: Vec<_> = rows
        .iter()
        .map(|r| (r.day, r.recorded_nusd, r.reported_nusd, r.drift_percent))
        .collect();
    assert_eq!(
        got,
        vec![
            (d3, 0, Some(0), 0.0),
            (d2, 49_750_000_000, Some(50_000_000_000), 0.5),
            (d1, 90_000_000_000, Some(100_000_000_000), 10.0),
        ]
    );
    assert!(rows
        .iter()
        .all(|r| r.source == "openai_costs" && r.status == "ok"));

    let fires = rule(
        &env,
        "cost_drift",
        json!({"provider": "openai", "threshold_percent": 5}),
        &["dashboard"],
    )
    .await;
    let wide = rule(
        &env,
        "cost_drift",
        json!({"provider": "openai", "threshold_percent": 15}),
        &["dashboard"],
    )
    .await;
    let other_provider = rule(
        &env,
        "cost_drift",
        json!({"provider": "openrouter", "threshold_percent": 1}),
        &["dashboard"],
    )
    .await;
    let not_operator = rule_as(
        &env,
        &env.globex_admin,
        "cost_drift",
        json!({"provider": "openai", "threshold_percent": 1}),
        &["dashboard"],
    )
    .await;

    let alert = assert_fires_once(&env, fires, now).await;
    assert_eq!(alert["kind"], "cost_drift");
    assert_eq!(alert["details"]["drift_percent"], 10.0);
    assert_eq!(alert["details"]["recorded_usd"], "90.000000000");
    assert_eq!(alert["details"]["reported_usd"], "100.000000000");
    assert_eq!(
        alert["details"]["days"],
        json!([tollgate_clickhouse::queries::day_param(d1)])
    );
    for q in [wide, other_provider, not_operator] {
        assert!(alerts_of(&env, q).await.is_empty());
    }
    // A second reconciliation of the same days changes nothing.
    reconcile_once(env.state.jobs(), now + TimeDelta::minutes(5))
        .await
        .unwrap();
    tick(&env, now + TimeDelta::minutes(6)).await;
    assert_eq!(alerts_of(&env, fires).await.len(), 1);

    // The provider revises its figure (costs settle late): the drift is gone, so is the alert.
    mock.admin.set_daily_cost(midnight(d1).timestamp(), 90.0);
    reconcile_once(env.state.jobs(), now + TimeDelta::minutes(10))
        .await
        .unwrap();
    let resolved = assert_auto_resolves(&env, fires, now + TimeDelta::minutes(11)).await;
    assert_eq!(
        resolved["details"]["resolution"]["observed"]["drift_percent"],
        0.0
    );
}

#[tokio::test]
async fn a_half_percent_gap_raises_none() {
    let mock = MockAdminServer::start(MockAdmin::default()).await.unwrap();
    let env = reconciling_env(&mock).await;
    let now = noon();
    let d1 = now.date_naive() - TimeDelta::days(1);
    seed(&env, &spend(d1, "99.5")).await;
    mock.admin.set_daily_cost(midnight(d1).timestamp(), 100.0);
    reconcile_once(env.state.jobs(), now).await.unwrap();
    let id = rule(
        &env,
        "cost_drift",
        json!({"provider": "openai", "threshold_percent": 5}),
        &["dashboard"],
    )
    .await;
    let over_two_days = rule(
        &env,
        "cost_drift",
        json!({"provider": "openai", "threshold_percent": 1, "days": 2}),
        &["dashboard"],
    )
    .await;
    tick(&env, now).await;
    tick(&env, now + TimeDelta::minutes(1)).await;
    assert!(alerts_of(&env, id).await.is_empty());
    assert!(alerts_of(&env, over_two_days).await.is_empty());
    let rows = reconcile::range(env.db.client(), "openai", d1, now.date_naive())
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].drift_percent, 0.5);
}

#[tokio::test]
async fn the_costs_api_is_paged_and_a_failed_fetch_writes_nothing() {
    let mock = MockAdminServer::start(MockAdmin::default()).await.unwrap();
    mock.admin.set_page_size(Some(1));
    let env = reconciling_env(&mock).await;
    let now = noon();
    let days: Vec<NaiveDate> = (1..=3)
        .map(|k| now.date_naive() - TimeDelta::days(k))
        .collect();
    for (i, d) in days.iter().enumerate() {
        mock.admin
            .set_daily_cost(midnight(*d).timestamp(), 10.0 * (i + 1) as f64);
    }
    let report = reconcile_once(env.state.jobs(), now).await.unwrap();
    assert_eq!(
        mock.admin.calls("/v1/organization/costs"),
        3,
        "one bucket per page"
    );
    let mut reported: Vec<_> = report
        .rows
        .iter()
        .map(|r| (r.day, r.reported_nusd))
        .collect();
    reported.sort();
    assert_eq!(
        reported,
        vec![
            (days[2], Some(30_000_000_000)),
            (days[1], Some(20_000_000_000)),
            (days[0], Some(10_000_000_000)),
        ]
    );

    mock.admin.set_key("rotated");
    let report = reconcile_once(env.state.jobs(), now + TimeDelta::minutes(1))
        .await
        .unwrap();
    assert!(report.rows.is_empty());
    assert!(report.errors[0].contains("refused"), "{:?}", report.errors);
    let rows = reconcile::range(env.db.client(), "openai", days[2], now.date_naive())
        .await
        .unwrap();
    assert_eq!(rows.len(), 3, "the good rows stay");
    assert!(rows
        .iter()
        .all(|r| r.status == "ok" && r.reported_nusd.is_some()));
}

#[tokio::test]
async fn openrouter_is_reconciled_from_same_day_snapshots_of_the_key() {
    let mock = MockAdminServer::start(MockAdmin::default()).await.unwrap();
    let base = mock.base_url();
    let env = env_with(move |c| {
        c.pollers.openrouter_base_url = base;
        c.pollers.openrouter_api_key = Secret::new(DEFAULT_KEY.to_string());
    })
    .await;
    let now = noon();
    let today = now.date_naive();
    seed(
        &env,
        &[
            call("acme", "openrouter", now - TimeDelta::hours(3), "6"),
            call("globex", "openrouter", now - TimeDelta::minutes(10), "4"),
        ],
    )
    .await;
    mock.admin.set_key_info(KeyInfo {
        usage_daily: 11.0,
        ..mock.admin.key_info()
    });
    // The reconciliation job takes a snapshot too (the poller does it every poll).
    let report = reconcile_once(env.state.jobs(), now).await.unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let rows = reconcile::range(
        env.db.client(),
        "openrouter",
        today,
        today + TimeDelta::days(1),
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(
        (r.recorded_nusd, r.reported_nusd, r.source.as_str()),
        (
            10_000_000_000,
            Some(11_000_000_000),
            "openrouter_key_usage_daily"
        )
    );
    assert!(
        (r.drift_percent - 9.0909).abs() < 1e-3,
        "{}",
        r.drift_percent
    );

    // Today is not complete: nothing yet. Tomorrow, yesterday's last snapshot counts.
    let id = rule(
        &env,
        "cost_drift",
        json!({"provider": "openrouter", "threshold_percent": 5}),
        &["dashboard"],
    )
    .await;
    tick(&env, now).await;
    assert!(alerts_of(&env, id).await.is_empty());
    let alert = assert_fires_once(&env, id, now + TimeDelta::days(1)).await;
    assert_eq!(alert["details"]["reported_usd"], "11.000000000");
}
