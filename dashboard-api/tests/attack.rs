//! The attack suite's dashboard part: every token that may not change org `acme`'s
//! configuration (acme's viewer, acme's user-bound viewer, globex's admin, no token, a made-up
//! token, a dashboard token on the edge's internal routes) tries every write against acme's
//! budgets, alert rules, keys and credits, and gets its exact refusal, with acme's state
//! unchanged; and SQL-injection strings in every parameter, path id and body field of the
//! configuration endpoints get a 400, a 404 or a literal value — never a 500, never executed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

mod common;

use axum::http::StatusCode;
use common::Env;
use serde_json::{json, Value};

const SQLI: &[&str] = &[
    "'",
    "' OR '1'='1",
    "acme' OR org_id != '",
    "x'); DROP TABLE budgets; --",
    "1; DROP TABLE usage_events; --",
    "' UNION SELECT * FROM api_tokens --",
    "{scope}",
    "\\'",
];

/// Acme's objects, made by acme's admin.
struct Acme {
    budget: String,
    rule: String,
    key: String,
}

async fn created(env: &Env, uri: &str, body: Value) -> Value {
    let (status, out) = env
        .call("POST", uri, Some(&env.acme_admin), Some(body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{uri}: {out}");
    out
}

async fn seed_acme(env: &Env) -> Acme {
    let budget = created(
        env,
        "/api/v1/budgets",
        json!({"name": "acme monthly", "scope": "org", "period": "monthly", "limit_usd": "100", "mode": "hard"}),
    )
    .await;
    let rule = created(
        env,
        "/api/v1/alert-rules",
        json!({"name": "acme spend", "kind": "spend_threshold", "params": {"threshold_usd": "10"}, "severity": "high"}),
    )
    .await;
    let key = created(
        env,
        "/api/v1/keys",
        json!({"app_id": "web", "name": "acme web"}),
    )
    .await;
    created(
        env,
        "/api/v1/credits",
        json!({"provider": "openai", "key_label": "acme main", "balance_usd": "50"}),
    )
    .await;
    Acme {
        budget: budget["budget_id"].as_str().unwrap().to_string(),
        rule: rule["rule_id"].as_str().unwrap().to_string(),
        key: key["key"]["key_id"].as_str().unwrap().to_string(),
    }
}

/// Everything an admin sees of acme's configuration.
async fn acme_state(env: &Env) -> Vec<Value> {
    let mut out = Vec::new();
    for uri in [
        "/api/v1/budgets?org=acme",
        "/api/v1/alert-rules?org=acme",
        "/api/v1/keys?org=acme",
        "/api/v1/credits",
    ] {
        let (status, mut body) = env.get(uri, &env.admin).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        // Ages grow by themselves; everything else must stay.
        for item in body.as_array_mut().into_iter().flatten() {
            item.as_object_mut().map(|o| o.remove("age_seconds"));
        }
        out.push(body);
    }
    out
}

#[tokio::test]
async fn no_token_but_acmes_own_admin_can_change_acmes_configuration() {
    let env = Env::new().await;
    let acme = seed_acme(&env).await;
    let before = acme_state(&env).await;
    assert!(before.iter().all(|v| v.to_string().contains("acme")));

    let budget_body = json!({"name": "hijacked", "scope": "org", "period": "daily", "limit_usd": "1", "mode": "soft", "org_id": "acme"});
    let rule_body = json!({"name": "hijacked", "kind": "spend_threshold", "params": {"threshold_usd": "1"}, "severity": "low", "org_id": "acme"});
    let writes: Vec<(&str, String, Option<Value>)> = vec![
        ("POST", "/api/v1/budgets".into(), Some(budget_body.clone())),
        (
            "PUT",
            format!("/api/v1/budgets/{}", acme.budget),
            Some(budget_body),
        ),
        ("DELETE", format!("/api/v1/budgets/{}", acme.budget), None),
        (
            "POST",
            "/api/v1/alert-rules".into(),
            Some(rule_body.clone()),
        ),
        (
            "PUT",
            format!("/api/v1/alert-rules/{}", acme.rule),
            Some(rule_body),
        ),
        ("DELETE", format!("/api/v1/alert-rules/{}", acme.rule), None),
        (
            "POST",
            format!("/api/v1/alert-rules/{}/test", acme.rule),
            None,
        ),
        (
            "POST",
            "/api/v1/keys".into(),
            Some(json!({"app_id": "stolen", "name": "stolen", "org_id": "acme"})),
        ),
        ("DELETE", format!("/api/v1/keys/{}", acme.key), None),
        (
            "POST",
            "/api/v1/credits".into(),
            Some(
                json!({"provider": "openai", "key_label": "acme main", "balance_usd": "0", "org_id": "acme"}),
            ),
        ),
    ];
    // Refusals: a viewer is read-only whatever it names (403); globex's admin may not name
    // acme (403) and does not see acme's objects (404); no token or a made-up one is a 401.
    let creates = |uri: &str, method: &str| method == "POST" && !uri.contains("/test");
    for (method, uri, body) in &writes {
        let cases: [(&str, Option<&str>, StatusCode); 5] = [
            ("acme viewer", Some(&env.acme_viewer), StatusCode::FORBIDDEN),
            // Bound to her user, alice does not even see acme's org-wide objects.
            (
                "alice (viewer)",
                Some(&env.alice),
                if creates(uri, method) {
                    StatusCode::FORBIDDEN
                } else {
                    StatusCode::NOT_FOUND
                },
            ),
            (
                "globex admin",
                Some(&env.globex_admin),
                if creates(uri, method) {
                    StatusCode::FORBIDDEN
                } else {
                    StatusCode::NOT_FOUND
                },
            ),
            ("no token", None, StatusCode::UNAUTHORIZED),
            (
                "made-up token",
                Some("tga_0123456789abcdef0123456789abcdef"),
                StatusCode::UNAUTHORIZED,
            ),
        ];
        for (who, token, expected) in cases {
            let (status, out) = env.call(method, uri, token, body.clone()).await;
            assert_eq!(status, expected, "{who}: {method} {uri}: {out}");
            assert!(
                out["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "{who}: {method} {uri}: {out}"
            );
        }
    }
    // The edge's internal routes take the edge's signature, not a dashboard token, even an
    // admin's.
    for (method, uri) in [
        ("GET", format!("/internal/v1/keys/{}", "0".repeat(64))),
        ("GET", "/internal/v1/budgets?org=acme".to_string()),
        ("GET", format!("/internal/v1/budgets/{}/spent", acme.budget)),
        (
            "POST",
            format!(
                "/internal/v1/budgets/{}/warning?percent=50&period_start=0",
                acme.budget
            ),
        ),
    ] {
        let (status, out) = env.call(method, &uri, Some(&env.admin), None).await;
        assert!(
            status == StatusCode::UNAUTHORIZED || status == StatusCode::NOT_FOUND,
            "{method} {uri}: {status} {out}"
        );
    }
    assert_eq!(
        acme_state(&env).await,
        before,
        "a refused write changed acme"
    );
}

#[tokio::test]
async fn sql_injection_in_configuration_parameters_paths_and_bodies_is_inert() {
    let env = Env::new().await;
    let acme = seed_acme(&env).await;
    let before = acme_state(&env).await;
    let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let not_500 = |status: StatusCode, what: &str, out: &Value| {
        assert!(!status.is_server_error(), "{what}: {status} {out}");
    };

    for s in SQLI {
        let e = encode(s);
        // Query parameters of every list, status, projection and export endpoint.
        for uri in [
            format!("/api/v1/budgets?org={e}"),
            format!("/api/v1/alert-rules?org={e}"),
            format!("/api/v1/alerts?org={e}"),
            format!("/api/v1/keys?org={e}"),
            format!("/api/v1/projections?org={e}"),
            format!("/api/v1/projections?horizon_days={e}"),
            format!("/api/v1/export?org={e}"),
            format!("/api/v1/export?model={e}"),
            format!("/api/v1/export?format={e}"),
            format!("/api/v1/export?limit={e}"),
            format!("/api/v1/budgets/{}/status?at={e}", acme.budget),
        ] {
            for token in [&env.admin, &env.acme_admin] {
                let (status, out) = env.get(&uri, token).await;
                not_500(status, &uri, &out);
                if status == StatusCode::OK {
                    // At most acme's own (an admin naming a made-up org gets nothing).
                    let text = out.to_string();
                    assert!(!text.contains("globex"), "{uri}: {text}");
                }
            }
        }
        // Path ids.
        for uri in [
            format!("/api/v1/budgets/{e}"),
            format!("/api/v1/budgets/{e}/status"),
            format!("/api/v1/alert-rules/{e}"),
            format!("/api/v1/keys/{e}"),
        ] {
            for method in ["GET", "DELETE"] {
                let (status, out) = env.call(method, &uri, Some(&env.acme_admin), None).await;
                assert!(
                    status == StatusCode::NOT_FOUND
                        || status == StatusCode::BAD_REQUEST
                        || status == StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {uri}: {status} {out}"
                );
            }
        }
        // Body fields: refused, or stored as the literal text.
        let (status, out) = env
            .call(
                "POST",
                "/api/v1/budgets",
                Some(&env.acme_admin),
                Some(json!({"name": s, "scope": "user", "user_id": s, "period": "monthly", "limit_usd": "1", "mode": "soft"})),
            )
            .await;
        not_500(status, "budget body", &out);
        if status == StatusCode::CREATED {
            assert_eq!(
                (out["name"].as_str(), out["user_id"].as_str()),
                (Some(*s), Some(*s))
            );
            let id = out["budget_id"].as_str().unwrap();
            let (st, back) = env
                .get(&format!("/api/v1/budgets/{id}"), &env.acme_admin)
                .await;
            assert_eq!((st, back["name"].as_str()), (StatusCode::OK, Some(*s)));
            env.call(
                "DELETE",
                &format!("/api/v1/budgets/{id}"),
                Some(&env.acme_admin),
                None,
            )
            .await;
        }
        let (status, out) = env
            .call(
                "POST",
                "/api/v1/keys",
                Some(&env.acme_admin),
                Some(json!({"app_id": s, "user_id": s, "name": s})),
            )
            .await;
        not_500(status, "key body", &out);
        if status == StatusCode::CREATED {
            assert_eq!(out["key"]["name"].as_str(), Some(*s));
            let id = out["key"]["key_id"].as_str().unwrap();
            env.call(
                "DELETE",
                &format!("/api/v1/keys/{id}"),
                Some(&env.acme_admin),
                None,
            )
            .await;
        }
        let (status, out) = env
            .call(
                "POST",
                "/api/v1/credits",
                Some(&env.acme_admin),
                Some(json!({"provider": s, "key_label": s, "balance_usd": s})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "credits body: {out}");
        assert_eq!(out["error"]["field"], "balance_usd", "{out}");
    }

    // Nothing was executed: every table is still there and acme's configuration is as it was
    // (the budgets and keys made above with literal names were deleted again, which the
    // lists show as before: deleted budgets vanish, revoked keys stay listed as revoked).
    let after = acme_state(&env).await;
    assert_eq!(after[0], before[0], "budgets changed");
    assert_eq!(after[1], before[1], "rules changed");
    assert_eq!(after[3], before[3], "credits changed");
    let tables: Vec<String> = env
        .db
        .client()
        .query("SELECT name FROM system.tables WHERE database = currentDatabase()")
        .fetch_all()
        .await
        .unwrap();
    for t in ["usage_events", "budgets", "alert_rules"] {
        assert!(
            tables.iter().any(|n| n == t),
            "table {t} is gone: {tables:?}"
        );
    }
    let key_tables: Vec<String> = env
        .db
        .keys_client()
        .query("SELECT name FROM system.tables WHERE database = currentDatabase()")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(
        key_tables,
        ["api_tokens", "app_keys"],
        "the key and token tables"
    );
}
