//! The OpenAPI document is valid (checked by `openapi-spec-validator` from PyPI, in the venv
//! `cargo xtask setup` creates) and matches the router: every documented operation exists and
//! asks for a token, and every route is documented.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

mod common;

use std::path::Path;
use std::process::Command;

use axum::http::StatusCode;
use common::Env;

fn venv_python() -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let p = root.join("target/py-venv/bin/python");
    assert!(
        p.exists(),
        "the Python venv is missing: run `cargo xtask setup`"
    );
    p
}

#[test]
fn the_document_is_valid_openapi() {
    let doc = serde_json::to_string_pretty(&tollgate_dashboard_api::openapi::document()).unwrap();
    let dir = tempfile_dir();
    let file = dir.join("openapi.json");
    std::fs::write(&file, doc).unwrap();
    let out = Command::new(venv_python())
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openapi-spec-validator refused the document:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tollgate-openapi-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test]
async fn every_documented_operation_exists_and_requires_a_token() {
    let env = Env::new().await;
    let doc = serde_json::to_value(tollgate_dashboard_api::openapi::document()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 7, "{} paths documented", paths.len());
    for (path, ops) in paths {
        let concrete = path
            .replace("{id}", "00000000-0000-4000-8000-000000000000")
            .replace("{key_id}", "key_x");
        for method in ops.as_object().unwrap().keys() {
            let m = method.to_uppercase();
            let (status, body) = env.call(&m, &concrete, None, None).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{m} {path}: documented but answers {status}: {body}"
            );
        }
    }
}

#[tokio::test]
async fn every_route_is_documented() {
    let doc = serde_json::to_value(tollgate_dashboard_api::openapi::document()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    // The public API's routes, as mounted in lib.rs and the modules' routes().
    for route in [
        "/api/v1/overview",
        "/api/v1/usage/timeseries",
        "/api/v1/providers",
        "/api/v1/models",
        "/api/v1/top/users",
        "/api/v1/top/apps",
        "/api/v1/credits",
        "/api/v1/projections",
        "/api/v1/budgets",
        "/api/v1/budgets/{id}",
        "/api/v1/budgets/{id}/status",
        "/api/v1/alert-rules",
        "/api/v1/alert-rules/{id}",
        "/api/v1/alerts",
        "/api/v1/alerts/{id}/acknowledge",
        "/api/v1/alerts/{id}/resolve",
        "/api/v1/keys",
        "/api/v1/keys/{key_id}",
        "/api/v1/export",
    ] {
        assert!(
            paths.contains_key(route),
            "{route} is not in the OpenAPI document"
        );
    }
}

#[tokio::test]
async fn a_revoked_token_stops_working() {
    let env = Env::new().await;
    let c = env.db.keys_client();
    let (id, secret) = tollgate_dashboard_api::auth::create_token(
        &c,
        "temp",
        tollgate_dashboard_api::auth::Role::Viewer,
        "acme",
        "",
        "test",
    )
    .await
    .unwrap();
    let (status, _) = env.get("/api/v1/credits", &secret).await;
    assert_eq!(status, StatusCode::OK);
    tollgate_dashboard_api::auth::revoke_token(&c, &id)
        .await
        .unwrap();
    env.state.token_cache().clear();
    let (status, _) = env.get("/api/v1/credits", &secret).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a revoked token still works"
    );
}

/// `docs/openapi.json` is the API reference readers get without running anything; it stays
/// equal to what the server serves. `TOLLGATE_UPDATE_DOCS=1 cargo test -p
/// tollgate-dashboard-api --test openapi` rewrites it.
#[test]
fn the_committed_reference_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let file = root.join("docs/openapi.json");
    let doc =
        serde_json::to_string_pretty(&tollgate_dashboard_api::openapi::document()).unwrap() + "\n";
    if std::env::var("TOLLGATE_UPDATE_DOCS").as_deref() == Ok("1") {
        std::fs::write(&file, &doc).unwrap();
    }
    let committed = std::fs::read_to_string(&file).unwrap_or_default();
    assert!(
        committed == doc,
        "docs/openapi.json is stale: run `TOLLGATE_UPDATE_DOCS=1 cargo test -p tollgate-dashboard-api --test openapi`"
    );
}

/// Every documented path is described in `docs/API.md`.
#[test]
fn the_api_guide_covers_every_path() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let guide = std::fs::read_to_string(root.join("docs/API.md")).unwrap();
    let doc = serde_json::to_value(tollgate_dashboard_api::openapi::document()).unwrap();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let line = format!("`{} {path}`", method.to_uppercase());
            assert!(
                guide.contains(&line),
                "docs/API.md does not describe {line}"
            );
        }
    }
}
