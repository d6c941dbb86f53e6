//! Shared by the dashboard-api tests: a fresh migrated database, tokens of every role, and
//! `oneshot` calls that return status and JSON.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tollgate_clickhouse::testing::TestDb;
use tollgate_dashboard_api::auth::{create_token, Role};
use tollgate_dashboard_api::config::Config;
use tollgate_dashboard_api::{app, AppState};
use tower::ServiceExt;

/// A database, the app over it, and one token per role.
pub struct Env {
    pub db: TestDb,
    pub state: AppState,
    /// Every org.
    pub admin: String,
    /// Org `acme`.
    pub acme_admin: String,
    /// Org `acme`, read-only.
    pub acme_viewer: String,
    /// Org `acme`, read-only, only user `alice`.
    pub alice: String,
    /// Org `globex`.
    pub globex_admin: String,
}

impl Env {
    pub async fn new() -> Env {
        let db = TestDb::new().await.unwrap();
        let mut config = Config::default();
        config.clickhouse.url = db.url().to_string();
        config.clickhouse.database = db.name().to_string();
        // Tests see only the rules they make; default_rules.rs turns the default rules on.
        config.evaluator.default_rules = false;
        let state = AppState::new(config);
        let keys = db.keys_client();
        let c = &keys;
        let admin = create_token(c, "admin", Role::Admin, "", "", "test")
            .await
            .unwrap()
            .1;
        let acme_admin = create_token(c, "acme admin", Role::OrgAdmin, "acme", "", "test")
            .await
            .unwrap()
            .1;
        let acme_viewer = create_token(c, "acme viewer", Role::Viewer, "acme", "", "test")
            .await
            .unwrap()
            .1;
        let alice = create_token(c, "alice", Role::Viewer, "acme", "alice", "test")
            .await
            .unwrap()
            .1;
        let globex_admin = create_token(c, "globex admin", Role::OrgAdmin, "globex", "", "test")
            .await
            .unwrap()
            .1;
        Env {
            db,
            state,
            admin,
            acme_admin,
            acme_viewer,
            alice,
            globex_admin,
        }
    }

    /// Calls the app; returns the status and the body as JSON (`Value::String` if not JSON).
    pub async fn call(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let resp = app(self.state.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, json)
    }

    pub async fn get(&self, uri: &str, token: &str) -> (StatusCode, Value) {
        self.call("GET", uri, Some(token), None).await
    }
}
