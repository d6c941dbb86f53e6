//! The OpenRouter credit poller against the mocked admin APIs: balances and key figures land in
//! `provider_credits` for admins only, the key's status follows the answer (valid, invalid,
//! rate-limited, error), and a failed poll does not hide the last known balance.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

mod common;
mod evaluator_support;

use axum::http::StatusCode;
use chrono::{TimeDelta, Timelike, Utc};
use common::Env;
use evaluator_support::provider_admin::{KeyInfo, MockAdmin, MockAdminServer, DEFAULT_KEY};
use evaluator_support::*;
use serde_json::{json, Value};
use service_kit::Secret;
use tollgate_jobs::pollers::poll_once;

async fn polling_env(mock: &MockAdminServer, api_key: &str) -> Env {
    let base = mock.base_url();
    let api_key = api_key.to_string();
    env_with(move |c| {
        c.pollers.openrouter_base_url = base;
        c.pollers.openrouter_management_key = Secret::new(DEFAULT_KEY.to_string());
        c.pollers.openrouter_api_key = Secret::new(api_key);
        c.pollers.timeout_ms = 2000;
    })
    .await
}

async fn credit(env: &Env, token: &str, label: &str) -> Option<Value> {
    let (status, out) = env.get("/api/v1/credits", token).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    out.as_array()
        .unwrap()
        .iter()
        .find(|c| c["provider"] == "openrouter" && c["key_label"] == label)
        .cloned()
}

#[tokio::test]
async fn openrouter_credits_and_key_are_recorded_for_admins() {
    let mock = MockAdminServer::start(MockAdmin::default()).await.unwrap();
    mock.admin.set_credits(100.0, 25.5);
    mock.admin.set_key_info(KeyInfo {
        label: "sk-or-v1-abc...xyz".into(),
        limit: Some(50.0),
        limit_remaining: Some(20.25),
        usage: 29.75,
        usage_daily: 1.5,
        usage_weekly: 9.0,
        usage_monthly: 29.75,
    });
    let env = polling_env(&mock, "").await;
    let now = noon();
    seed(
        &env,
        &[
            call("acme", "openrouter", now - TimeDelta::hours(2), "1.2"),
            call("globex", "openrouter", now - TimeDelta::minutes(2), "0.3"),
            call("acme", "openrouter", now - TimeDelta::days(1), "40"),
        ],
    )
    .await;

    let report = poll_once(env.state.jobs(), now).await.unwrap();
    assert_eq!(report.credits.len(), 2);
    assert!(
        report.credits.iter().all(|c| c.status == "valid"),
        "{:?}",
        report.credits
    );
    assert_eq!(
        (
            mock.admin.calls("/api/v1/credits"),
            mock.admin.calls("/api/v1/key")
        ),
        (1, 1)
    );

    let account = credit(&env, &env.admin, "account").await.unwrap();
    assert_eq!(account["balance_usd"], "74.500000000");
    assert_eq!(account["total_credits_usd"], "100.000000000");
    assert_eq!(account["total_usage_usd"], "25.500000000");
    assert_eq!(account["status"], "valid");
    assert_eq!(account["org_id"], "");
    let key = credit(&env, &env.admin, "api-key").await.unwrap();
    assert_eq!(key["balance_usd"], "20.250000000");
    assert_eq!(key["total_credits_usd"], "50.000000000");
    assert_eq!(key["total_usage_usd"], "29.750000000");
    assert!(
        credit(&env, &env.acme_admin, "account").await.is_none(),
        "the deployment's balance is for admins"
    );

    // The key's usage today against what Tollgate recorded today (every org) until the poll.
    let snapshot = report.snapshot.unwrap();
    assert_eq!(snapshot.day, now.date_naive());
    assert_eq!(snapshot.reported_nusd, Some(1_500_000_000));
    assert_eq!(snapshot.recorded_nusd, 1_500_000_000);
    assert_eq!(snapshot.drift_percent, 0.0);

    // A key without a limit reports no balance (the list keeps showing the last known one).
    mock.admin.set_key_info(KeyInfo {
        limit: None,
        limit_remaining: None,
        ..mock.admin.key_info()
    });
    let report = poll_once(env.state.jobs(), now + TimeDelta::minutes(1))
        .await
        .unwrap();
    let key_row = report
        .credits
        .iter()
        .find(|c| c.key_label == "api-key")
        .unwrap();
    assert_eq!(
        (key_row.balance_nusd, key_row.total_credits_nusd),
        (None, 0)
    );
    let key = credit(&env, &env.admin, "api-key").await.unwrap();
    assert_eq!(
        (key["balance_usd"].clone(), key["status"].clone()),
        (json!("20.250000000"), json!("valid"))
    );
}

#[tokio::test]
async fn the_key_status_follows_the_answer_and_the_last_balance_survives_a_failed_poll() {
    let mock = MockAdminServer::start(MockAdmin::default()).await.unwrap();
    mock.admin.set_credits(10.0, 6.0);
    let env = polling_env(&mock, "").await;
    let t0 = Utc::now().with_nanosecond(0).unwrap() - TimeDelta::minutes(30);
    poll_once(env.state.jobs(), t0).await.unwrap();
    assert_eq!(
        credit(&env, &env.admin, "account").await.unwrap()["balance_usd"],
        "4.000000000"
    );

    let cases = [
        (Some(401), "invalid"),
        (Some(429), "rate_limited"),
        (Some(500), "error"),
    ];
    for (i, (forced, expected)) in cases.into_iter().enumerate() {
        mock.admin.set_status(forced);
        let report = poll_once(env.state.jobs(), t0 + TimeDelta::minutes(1 + i as i64))
            .await
            .unwrap();
        assert!(
            report
                .credits
                .iter()
                .all(|c| c.status == expected && c.balance_nusd.is_none()),
            "{:?}",
            report.credits
        );
        let account = credit(&env, &env.admin, "account").await.unwrap();
        assert_eq!(account["status"], expected);
        assert_eq!(
            account["balance_usd"], "4.000000000",
            "the last known balance"
        );
        assert!(!account["error"].as_str().unwrap().is_empty());
        assert!(
            !account["error"].as_str().unwrap().contains(DEFAULT_KEY),
            "the key is never recorded"
        );
    }
    // A wrong key is a 401 from the provider: invalid.
    mock.admin.set_status(None);
    mock.admin.set_key("rotated-key");
    let report = poll_once(env.state.jobs(), t0 + TimeDelta::minutes(5))
        .await
        .unwrap();
    assert!(report.credits.iter().all(|c| c.status == "invalid"));
    assert!(
        report.credits[0].error.contains("401"),
        "{}",
        report.credits[0].error
    );

    // The last known balance ($4) still fires a low-balance rule of an operator org.
    let id = rule(
        &env,
        "low_balance",
        json!({"provider": "openrouter", "threshold_usd": "5", "key_label": "account"}),
        &["dashboard"],
    )
    .await;
    let alert = assert_fires_once(&env, id, noon()).await;
    assert_eq!(alert["details"]["balance_usd"], "4.000000000");

    // Nothing listening: error.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let env2 = env_with(move |c| {
        c.pollers.openrouter_base_url = format!("http://{closed}");
        c.pollers.openrouter_management_key = Secret::new("k".into());
    })
    .await;
    let report = poll_once(env2.state.jobs(), t0).await.unwrap();
    assert!(
        report.credits.iter().all(|c| c.status == "error"),
        "{:?}",
        report.credits
    );
}
