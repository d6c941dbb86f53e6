//! App keys: the secret is shown once and stored only as its SHA-256, lists never carry either,
//! revocation is a new version; the signed internal lookup answers the edge's `AppKey` for a
//! live key only, refuses bad signatures, and does not exist without configured secrets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::Utc;
use common::Env;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use service_kit::Secret;
use tollgate_dashboard_api::{app, AppState};
use tower::ServiceExt;
use usage_core::keys::{hash_secret, looks_like_app_key};
use usage_core::wire;
use uuid::Uuid;

const INTERNAL_SECRET: &str = "internal-secret-0123456789abcdef";

fn field_of(out: &Value) -> &str {
    out["error"]["field"].as_str().unwrap_or("")
}

async fn create(env: &Env, token: &str, body: Value) -> Value {
    let (status, out) = env
        .call("POST", "/api/v1/keys", Some(token), Some(body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{out}");
    out
}

/// The app with internal signing secrets configured.
fn signed_state(env: &Env) -> AppState {
    let mut config = env.state.config().clone();
    config.internal.signing_secrets = vec![
        Secret::new("another-secret-being-rotated-in".to_string()),
        Secret::new(INTERNAL_SECRET.to_string()),
    ];
    AppState::new(config)
}

async fn lookup(state: &AppState, hash: &str, signature: Option<String>) -> (StatusCode, Value) {
    let mut req = Request::builder().uri(format!("/internal/v1/keys/{hash}"));
    if let Some(s) = signature {
        req = req.header(wire::SIGNATURE_HEADER, s);
    }
    let resp = app(state.clone())
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A signature for the lookup of `hash` (the signed message is the request path).
fn sign_now(secret: &str, hash: &str) -> String {
    wire::sign(
        secret.as_bytes(),
        Utc::now().timestamp(),
        format!("/internal/v1/keys/{hash}").as_bytes(),
    )
}

#[tokio::test]
async fn a_key_is_shown_once_stored_as_a_hash_listed_and_revoked() {
    let env = Env::new().await;
    let created = create(
        &env,
        &env.acme_admin,
        json!({"user_id": "alice", "app_id": "web", "name": "web prod"}),
    )
    .await;
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(
        looks_like_app_key(&secret)
            && secret.len() == 3 + 64
            && secret[3..].bytes().all(|b| b.is_ascii_hexdigit()),
        "{secret}"
    );
    let key = &created["key"];
    let key_id = key["key_id"].as_str().unwrap().to_string();
    assert_eq!(Uuid::parse_str(&key_id).unwrap().get_version_num(), 4);
    let expected = json!({"key_id": key_id, "org_id": "acme", "user_id": "alice", "app_id": "web", "name": "web prod",
                          "acts_for_end_users": false, "created_at": key["created_at"], "revoked_at": null});
    assert_eq!(key, &expected);

    // Stored: the hash, never the secret.
    let stored: Vec<String> = env
        .db
        .keys_client()
        .query("SELECT key_hash FROM app_keys")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(stored, vec![hash_secret(&secret)]);
    let dump: Vec<String> = env
        .db
        .keys_client()
        .query("SELECT concat(key_hash, key_id, org_id, user_id, app_id, name, budget_scope) FROM app_keys")
        .fetch_all()
        .await
        .unwrap();
    assert!(!dump[0].contains(&secret[3..]));

    // Listed without secret or hash.
    let (status, list) = env.get("/api/v1/keys", &env.acme_viewer).await;
    assert_eq!(
        (status, &list),
        (StatusCode::OK, &json!([expected.clone()]))
    );
    let text = list.to_string();
    assert!(!text.contains(&secret) && !text.contains(&hash_secret(&secret)));

    // A key with no user, and one acting for end users (#19, 3).
    let org_key = create(
        &env,
        &env.acme_admin,
        json!({"app_id": "etl", "name": "etl"}),
    )
    .await;
    assert_eq!(
        (
            org_key["key"]["acts_for_end_users"].as_bool(),
            org_key["key"]["user_id"].as_str()
        ),
        (Some(false), None)
    );
    let app_key = create(
        &env,
        &env.acme_admin,
        json!({"app_id": "etl", "name": "etl 2", "acts_for_end_users": true}),
    )
    .await;
    assert_eq!(app_key["key"]["acts_for_end_users"], true);
    assert_ne!(app_key["secret"], org_key["secret"]);

    // Revoke: a new version with revoked_at; again changes nothing.
    let (status, _) = env
        .call(
            "DELETE",
            &format!("/api/v1/keys/{key_id}"),
            Some(&env.acme_admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, list) = env.get("/api/v1/keys", &env.acme_admin).await;
    let revoked = list
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"] == key_id.as_str())
        .unwrap()
        .clone();
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let (status, _) = env
        .call(
            "DELETE",
            &format!("/api/v1/keys/{key_id}"),
            Some(&env.acme_admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let versions: u64 = env
        .db
        .keys_client()
        .query("SELECT count() FROM app_keys WHERE key_id = ?")
        .bind(&key_id)
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(versions, 2);
}

#[tokio::test]
async fn bad_fields_are_named_and_tenants_are_isolated() {
    let env = Env::new().await;
    let good = json!({"app_id": "web", "name": "k"});
    let with = |k: &str, v: Value| {
        let mut b = good.clone();
        b[k] = v;
        b
    };
    for (body, field) in [
        (with("app_id", json!("")), "app_id"),
        (with("app_id", json!("x".repeat(129))), "app_id"),
        (json!({"name": "k"}), "app_id"),
        (with("name", json!("\n")), "name"),
        (with("user_id", json!(7)), "user_id"),
        // Removed (#19, 3): budgets apply by the call's org, user and app.
        (with("budget_scope", json!("user")), "budget_scope"),
        (
            with("acts_for_end_users", json!("yes")),
            "acts_for_end_users",
        ),
        (with("secret", json!("tg_mine")), "secret"),
    ] {
        let (status, out) = env
            .call(
                "POST",
                "/api/v1/keys",
                Some(&env.acme_admin),
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            (status, field_of(&out)),
            (StatusCode::BAD_REQUEST, field),
            "{body} → {out}"
        );
    }
    let (status, out) = env
        .call("POST", "/api/v1/keys", Some(&env.admin), Some(good.clone()))
        .await;
    assert_eq!(
        (status, field_of(&out)),
        (StatusCode::BAD_REQUEST, "org_id")
    );

    let acme = create(
        &env,
        &env.acme_admin,
        json!({"app_id": "web", "name": "acme web"}),
    )
    .await;
    let alices = create(
        &env,
        &env.acme_admin,
        json!({"app_id": "web", "user_id": "alice", "name": "alice"}),
    )
    .await;
    let globex = create(&env, &env.globex_admin, good.clone()).await;
    let initech = create(&env, &env.admin, with("org_id", json!("initech"))).await;
    assert_eq!(initech["key"]["org_id"], "initech");
    let kid = |k: &Value| k["key"]["key_id"].as_str().unwrap().to_string();
    let listed = |v: Value| -> Vec<String> {
        let mut ids: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["key_id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };

    assert_eq!(
        listed(env.get("/api/v1/keys", &env.acme_admin).await.1),
        sorted(vec![kid(&acme), kid(&alices)])
    );
    assert_eq!(
        listed(env.get("/api/v1/keys", &env.globex_admin).await.1),
        vec![kid(&globex)]
    );
    assert_eq!(
        listed(env.get("/api/v1/keys", &env.alice).await.1),
        vec![kid(&alices)]
    );
    assert_eq!(
        listed(env.get("/api/v1/keys?org=initech", &env.admin).await.1),
        vec![kid(&initech)]
    );
    assert_eq!(
        env.get("/api/v1/keys", &env.admin)
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(
        env.get("/api/v1/keys?org=acme", &env.globex_admin).await.0,
        StatusCode::FORBIDDEN
    );

    // Another org's key: 404; viewers: 403; org admins into another org: 403.
    let (status, _) = env
        .call(
            "DELETE",
            &format!("/api/v1/keys/{}", kid(&acme)),
            Some(&env.globex_admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = env
        .call(
            "DELETE",
            &format!("/api/v1/keys/{}", kid(&acme)),
            Some(&env.acme_viewer),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = env
        .call(
            "DELETE",
            &format!("/api/v1/keys/{}", kid(&alices)),
            Some(&env.alice),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = env
        .call(
            "DELETE",
            &format!("/api/v1/keys/{}", kid(&acme)),
            Some(&env.alice),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = env
        .call(
            "POST",
            "/api/v1/keys",
            Some(&env.acme_viewer),
            Some(good.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = env
        .call(
            "POST",
            "/api/v1/keys",
            Some(&env.acme_admin),
            Some(with("org_id", json!("globex"))),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = env
        .call(
            "DELETE",
            "/api/v1/keys/%27%20OR%20%271%27%3D%271",
            Some(&env.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Nothing was revoked by any of that.
    let all = env.get("/api/v1/keys", &env.admin).await.1;
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .all(|k| k["revoked_at"].is_null()),
        "{all}"
    );
}

#[tokio::test]
async fn the_internal_lookup_is_signed_and_answers_live_keys_only() {
    let env = Env::new().await;
    let created = create(
        &env,
        &env.acme_admin,
        json!({"user_id": "alice", "app_id": "web", "name": "web", "acts_for_end_users": true}),
    )
    .await;
    let secret = created["secret"].as_str().unwrap().to_string();
    let key_id = created["key"]["key_id"].as_str().unwrap().to_string();
    let hash = hash_secret(&secret);

    // Without configured secrets the endpoint does not exist, signed or not.
    assert_eq!(
        lookup(&env.state, &hash, Some(sign_now(INTERNAL_SECRET, &hash)))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        lookup(&env.state, &hash, None).await.0,
        StatusCode::NOT_FOUND
    );

    let state = signed_state(&env);
    let (status, out) = lookup(&state, &hash, Some(sign_now(INTERNAL_SECRET, &hash))).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(
        out,
        json!({"key_id": key_id, "org_id": "acme", "user_id": "alice", "app_id": "web", "acts_for_end_users": true})
    );

    // Bad signatures: 401, whatever the hash.
    let now = Utc::now().timestamp();
    for sig in [
        None,
        Some("garbage".to_string()),
        Some(sign_now("a-different-secret-0123456789", &hash)),
        Some(sign_now(INTERNAL_SECRET, &hash_secret("tg_someone_else"))),
        Some(wire::sign(INTERNAL_SECRET.as_bytes(), now - 400, b"")),
        Some(wire::sign(INTERNAL_SECRET.as_bytes(), now + 400, b"")),
        Some(wire::sign(INTERNAL_SECRET.as_bytes(), now, b"a body")),
    ] {
        let (status, out) = lookup(&state, &hash, sig.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{sig:?}: {out}");
        assert_eq!(out["error"]["code"], "unauthorized");
    }
    // Unknown and malformed hashes: 404.
    for h in [
        hash_secret("tg_unknown"),
        "abc".to_string(),
        hash.to_uppercase(),
        "%27%20OR%201%3D1".to_string(),
    ] {
        assert_eq!(
            lookup(&state, &h, Some(sign_now(INTERNAL_SECRET, &h)))
                .await
                .0,
            StatusCode::NOT_FOUND,
            "{h}"
        );
    }
    // Revoked: 404.
    let (status, _) = env
        .call(
            "DELETE",
            &format!("/api/v1/keys/{key_id}"),
            Some(&env.acme_admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        lookup(&state, &hash, Some(sign_now(INTERNAL_SECRET, &hash)))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}
