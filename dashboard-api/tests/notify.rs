//! Alert notifications against a local webhook receiver: signed generic and Slack bodies,
//! retries with backoff logged attempt by attempt, no retry where it cannot help, the
//! test-send endpoint and who may use it, the delivery log through the API, and the
//! private-address guard.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

mod common;
mod evaluator_support;

use axum::http::StatusCode;
use chrono::TimeDelta;
use common::Env;
use evaluator_support::*;
use serde_json::{json, Value};
use tollgate_clickhouse::alerts::{deliveries_of_rule, DeliveryRow};
use tollgate_jobs::notify::{deliver, Event, Notice};
use uuid::Uuid;

async fn log(env: &Env, rule_id: Uuid) -> Vec<DeliveryRow> {
    deliveries_of_rule(env.db.client(), None, rule_id, 100)
        .await
        .unwrap()
}

/// An env with one unpriced call, so an `unpriced_requests` rule fires at [`noon`].
async fn firing_env(configure: impl FnOnce(&mut tollgate_dashboard_api::config::Config)) -> Env {
    let env = env_with(configure).await;
    seed(
        &env,
        &[unpriced(call(
            "acme",
            "openrouter",
            noon() - TimeDelta::minutes(5),
            "0",
        ))],
    )
    .await;
    env
}

#[tokio::test]
async fn alerts_are_posted_signed_to_webhook_and_slack_channels() {
    let receiver = Receiver::start(0, 500).await;
    let env = firing_env(|_| {}).await;
    let hook = format!("webhook:{}", receiver.url("/hooks/tollgate?token=abc"));
    let id = rule(&env, "unpriced_requests", json!({}), &["dashboard", &hook]).await;

    let report = tick(&env, noon()).await;
    assert_eq!(report.opened.len(), 1);
    let alert = &report.opened[0];
    // Rules accept only https Slack hooks; the local receiver speaks http, so the Slack body is
    // sent through the same delivery path directly, beside an email channel of a rule stored
    // while SMTP was configured (without notifications.smtp_url it is logged as skipped).
    let slack = format!("slack:{}", receiver.url("/services/T0/B0/secret"));
    let notice = Notice {
        event: Event::Opened,
        rule_name: "unpriced_requests test",
        alert,
    };
    let slack_results = deliver(
        env.state.jobs(),
        &notice,
        &[slack, "email:ops@acme.example".to_string()],
    )
    .await;
    let mut statuses: Vec<_> = report
        .deliveries
        .iter()
        .chain(&slack_results)
        .map(|d| (d.channel.clone(), d.status.clone(), d.attempts))
        .collect();
    statuses.sort();
    let port = receiver.addr.port();
    assert_eq!(
        statuses,
        vec![
            (
                "email:ops@acme.example".to_string(),
                "skipped".to_string(),
                0
            ),
            (
                format!("slack:http://127.0.0.1:{port}/…"),
                "delivered".to_string(),
                1
            ),
            (
                format!("webhook:http://127.0.0.1:{port}/…"),
                "delivered".to_string(),
                1
            ),
        ]
    );

    let got = receiver.received();
    assert_eq!(got.len(), 2);
    let generic = got.iter().find(|r| r.path == "/hooks/tollgate").unwrap();
    generic.verify().unwrap();
    assert_eq!(generic.headers["x-tollgate-event"], "alert.opened");
    assert_eq!(generic.headers["content-type"], "application/json");
    let body = generic.json();
    assert_eq!(body["event"], "alert.opened");
    assert_eq!(body["test"], false);
    assert_eq!(
        body["delivery_id"],
        generic.headers["x-tollgate-delivery"].to_str().unwrap()
    );
    assert_eq!(body["alert"]["alert_id"], alert.alert_id.to_string());
    assert_eq!(body["alert"]["rule_id"], id.to_string());
    assert_eq!(body["alert"]["rule_name"], "unpriced_requests test");
    assert_eq!(body["alert"]["severity"], "high");
    assert_eq!(body["alert"]["state"], "open");
    assert_eq!(body["alert"]["details"]["unpriced_requests"], 1);
    assert_eq!(body["alert"]["title"], alert.title);

    let slack_post = got
        .iter()
        .find(|r| r.path == "/services/T0/B0/secret")
        .unwrap();
    slack_post.verify().unwrap();
    let body = slack_post.json();
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .starts_with("[HIGH] Alert: 1 calls without a price"),
        "{body}"
    );
    assert!(body["blocks"].as_array().unwrap().len() >= 2);
    assert_eq!(body["blocks"][0]["type"], "section");

    // A body changed in transit fails verification.
    let mut tampered = generic.clone();
    tampered.body = axum::body::Bytes::from(
        String::from_utf8(generic.body.to_vec())
            .unwrap()
            .replace("high", "low"),
    );
    assert!(tampered.verify().is_err());

    // The next tick opens nothing, so nothing is sent.
    tick(&env, noon() + TimeDelta::minutes(1)).await;
    assert_eq!(receiver.received().len(), 2);

    // Resolved by the evaluator: the channels hear about it.
    let report = tick(&env, noon() + TimeDelta::hours(2)).await;
    assert_eq!(report.resolved.len(), 1);
    let got = receiver.received();
    assert_eq!(got.len(), 3);
    let resolved = got
        .iter()
        .rev()
        .find(|r| r.path == "/hooks/tollgate")
        .unwrap();
    resolved.verify().unwrap();
    let body = resolved.json();
    assert_eq!(body["event"], "alert.resolved");
    assert_eq!(body["alert"]["state"], "resolved");
    assert_eq!(body["alert"]["resolved_by"], "evaluator");

    // Every attempt is logged, without the hook paths.
    let rows = log(&env, id).await;
    assert_eq!(rows.len(), 4, "{rows:#?}");
    assert!(rows
        .iter()
        .all(|r| !r.channel.contains("secret") && !r.channel.contains("token")));
    assert_eq!(rows.iter().filter(|r| r.status == "delivered").count(), 3);
    assert_eq!(rows.iter().filter(|r| r.status == "skipped").count(), 1);
    assert!(rows
        .iter()
        .all(|r| r.alert_id == alert.alert_id && r.org_id == "acme"));

    // The same log through the API, for whoever may see the rule; another org's admin gets 404.
    let uri = format!("/api/v1/alert-rules/{id}/deliveries");
    let (status, listed) = env.get(&uri, &env.acme_viewer).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), rows.len());
    for (api, row) in listed.iter().zip(&rows) {
        assert_eq!(api["delivery_id"], row.delivery_id.to_string());
        assert_eq!(api["channel"], row.channel);
        assert_eq!(api["status"], row.status);
    }
    assert!(listed
        .iter()
        .any(|d| d["status"] == "delivered" && d["http_status"].as_u64().is_some()));
    assert_eq!(
        env.get(&uri, &env.globex_admin).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_receiver_failing_twice_gets_it_on_the_third_attempt_and_the_log_shows_all_three() {
    let receiver = Receiver::start(2, 500).await;
    let env = firing_env(|_| {}).await;
    let id = rule(
        &env,
        "unpriced_requests",
        json!({}),
        &[&format!("webhook:{}", receiver.url("/h"))],
    )
    .await;
    let started = std::time::Instant::now();
    let report = tick(&env, noon()).await;
    let elapsed = started.elapsed();
    assert_eq!(report.deliveries.len(), 1);
    let d = &report.deliveries[0];
    assert_eq!(
        (d.status.as_str(), d.attempts, d.http_status),
        ("delivered", 3, Some(200))
    );
    assert!(
        elapsed >= std::time::Duration::from_millis(150),
        "backoff 50 ms then 100 ms: {elapsed:?}"
    );

    let got = receiver.received();
    assert_eq!(
        got.iter().map(|r| r.answered).collect::<Vec<_>>(),
        [500, 500, 200]
    );
    let ids: Vec<_> = got
        .iter()
        .map(|r| r.headers["x-tollgate-delivery"].clone())
        .collect();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "one delivery, three attempts"
    );
    for r in &got {
        r.verify().unwrap();
    }

    let rows = log(&env, id).await;
    let summary: Vec<_> = rows
        .iter()
        .map(|r| (r.attempt, r.status.as_str(), r.http_status))
        .collect();
    assert_eq!(
        summary,
        [
            (1, "failed", 500),
            (2, "failed", 500),
            (3, "delivered", 200)
        ]
    );
    assert!(rows
        .iter()
        .all(|r| r.delivery_id == d.delivery_id && r.event == "alert.opened"));
    assert!(rows[0].error.starts_with("HTTP 500"), "{}", rows[0].error);
    assert!(rows[2].error.is_empty());
}

#[tokio::test]
async fn retries_stop_at_the_limit_and_answers_that_retrying_cannot_fix_are_not_retried() {
    let down = Receiver::start(100, 503).await;
    let gone = Receiver::start(100, 404).await;
    let env = firing_env(|_| {}).await;
    let id = rule(
        &env,
        "unpriced_requests",
        json!({}),
        &[
            &format!("webhook:{}", down.url("/a")),
            &format!("webhook:{}", gone.url("/b")),
        ],
    )
    .await;
    let report = tick(&env, noon()).await;
    let mut results: Vec<_> = report
        .deliveries
        .iter()
        .map(|d| (d.attempts, d.status.as_str(), d.http_status))
        .collect();
    results.sort();
    assert_eq!(
        results,
        [(1, "gave_up", Some(404)), (3, "gave_up", Some(503))]
    );
    assert_eq!(down.received().len(), 3);
    assert_eq!(gone.received().len(), 1);
    let rows = log(&env, id).await;
    let mut statuses: Vec<_> = rows
        .iter()
        .map(|r| (r.http_status, r.attempt, r.status.as_str()))
        .collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [
            (404, 1, "gave_up"),
            (503, 1, "failed"),
            (503, 2, "failed"),
            (503, 3, "gave_up")
        ]
    );
}

#[tokio::test]
async fn the_test_send_endpoint_sends_a_sample_to_the_rules_channels() {
    let receiver = Receiver::start(0, 500).await;
    let env = env_with(|_| {}).await;
    let id = rule(
        &env,
        "low_balance",
        json!({"provider": "openai", "threshold_usd": "5"}),
        &["dashboard", &format!("webhook:{}", receiver.url("/t"))],
    )
    .await;
    let uri = format!("/api/v1/alert-rules/{id}/test");
    let (status, out) = env.call("POST", &uri, Some(&env.acme_admin), None).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["rule_id"], id.to_string());
    let results = out["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "dashboard needs no delivery: {out}");
    assert_eq!(results[0]["status"], "delivered");
    assert_eq!(results[0]["attempts"], 1);
    assert_eq!(results[0]["http_status"], 200);
    assert_eq!(results[0]["error"], Value::Null);
    assert_eq!(
        results[0]["channel"],
        format!("webhook:http://127.0.0.1:{}/…", receiver.addr.port())
    );

    let got = receiver.received();
    assert_eq!(got.len(), 1);
    got[0].verify().unwrap();
    let body = got[0].json();
    assert_eq!(
        (body["event"].as_str(), body["test"].as_bool()),
        (Some("alert.test"), Some(true))
    );
    assert_eq!(body["alert"]["kind"], "low_balance");
    assert_eq!(body["alert"]["alert_id"], Uuid::nil().to_string());
    let rows = log(&env, id).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].event.as_str(), rows[0].alert_id),
        ("alert.test", Uuid::nil())
    );

    // Admins may; viewers may not; another org's admin does not see the rule.
    assert_eq!(
        env.call("POST", &uri, Some(&env.admin), None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        env.call("POST", &uri, Some(&env.acme_viewer), None).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        env.call("POST", &uri, Some(&env.globex_admin), None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        env.call("POST", &uri, None, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let unknown = format!("/api/v1/alert-rules/{}/test", Uuid::new_v4());
    assert_eq!(
        env.call("POST", &unknown, Some(&env.admin), None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(receiver.received().len(), 2);
}

#[tokio::test]
async fn webhooks_may_not_reach_private_addresses_unless_allowed_and_are_unsigned_without_a_secret()
{
    let receiver = Receiver::start(0, 500).await;
    let env = env_with(|c| c.notifications.allow_private_targets = false).await;
    let id = rule(
        &env,
        "unpriced_requests",
        json!({}),
        &[&format!("webhook:{}", receiver.url("/x"))],
    )
    .await;
    let (status, out) = env
        .call(
            "POST",
            &format!("/api/v1/alert-rules/{id}/test"),
            Some(&env.acme_admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["results"][0]["status"], "gave_up");
    assert_eq!(
        out["results"][0]["attempts"], 1,
        "a refused target is not retried"
    );
    assert!(
        out["results"][0]["error"]
            .as_str()
            .unwrap()
            .contains("refused"),
        "{out}"
    );
    assert!(receiver.received().is_empty());

    let env = env_with(|c| c.notifications.signing_secret = service_kit::Secret::default()).await;
    let id = rule(
        &env,
        "unpriced_requests",
        json!({}),
        &[&format!("webhook:{}", receiver.url("/y"))],
    )
    .await;
    let (status, _) = env
        .call(
            "POST",
            &format!("/api/v1/alert-rules/{id}/test"),
            Some(&env.acme_admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    assert!(got[0].headers.get("x-tollgate-signature").is_none());
}

/// #19 (5): every channel a rule may name delivers. Email goes through a real SMTP server
/// (aiosmtpd, started here) and Slack channels by name through `chat.postMessage` (a stand-in
/// for Slack's API) with the bot token; Slack's `ok: false` is final, and every attempt is in
/// the delivery log the API serves.
#[tokio::test]
async fn alerts_reach_email_over_smtp_and_slack_channels_by_name() {
    let smtp = SmtpServer::start();
    let slack = SlackApi::start().await;
    let env = firing_env(|c| {
        c.notifications.smtp_url =
            service_kit::Secret::new(format!("smtp://127.0.0.1:{}", smtp.port));
        c.notifications.email_from = "Tollgate <alerts@tollgate.example>".into();
        c.notifications.slack_bot_token = service_kit::Secret::new("xoxb-test-token".into());
        c.notifications.slack_api_url = slack.url();
    })
    .await;
    let id = rule(
        &env,
        "unpriced_requests",
        json!({}),
        &["email:ops@acme.example", "slack:#alerts", "slack:#missing"],
    )
    .await;
    let report = tick(&env, noon()).await;
    assert_eq!(report.opened.len(), 1);
    let mut outcomes: Vec<_> = report
        .deliveries
        .iter()
        .map(|d| {
            (
                d.channel.clone(),
                d.status.clone(),
                d.attempts,
                d.error.clone(),
            )
        })
        .collect();
    outcomes.sort();
    assert_eq!(
        outcomes,
        vec![
            ("email:ops@acme.example".into(), "delivered".into(), 1, None),
            ("slack:#alerts".into(), "delivered".into(), 1, None),
            (
                "slack:#missing".into(),
                "gave_up".into(),
                1,
                Some("Slack: channel_not_found".into())
            ),
        ]
    );

    let mail = smtp.messages();
    assert_eq!(mail.len(), 1, "{mail:?}");
    let m = &mail[0];
    assert!(m.contains("To: ops@acme.example"), "{m}");
    assert!(
        m.contains("From: Tollgate <alerts@tollgate.example>"),
        "{m}"
    );
    assert!(
        m.contains("Subject: [Tollgate HIGH] Alert: 1 calls without a price"),
        "{m}"
    );
    assert!(m.contains("Rule:     unpriced_requests test"), "{m}");

    let posts = slack.posts();
    assert_eq!(posts.len(), 2);
    for (headers, body) in &posts {
        assert_eq!(headers["authorization"], "Bearer xoxb-test-token");
        assert!(
            body["text"].as_str().unwrap().starts_with("[HIGH] Alert:"),
            "{body}"
        );
    }
    assert!(posts.iter().any(|(_, b)| b["channel"] == "#alerts"));

    let (status, listed) = env
        .get(
            &format!("/api/v1/alert-rules/{id}/deliveries"),
            &env.acme_viewer,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed.as_array().unwrap().len(), 3);
    assert!(!listed.to_string().contains("xoxb"), "no token in the log");
}
