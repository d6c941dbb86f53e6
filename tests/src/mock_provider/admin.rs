//! The providers' admin APIs, mocked: OpenRouter `GET /api/v1/credits` and `GET /api/v1/key`,
//! OpenAI `GET /v1/organization/costs` — the shapes the providers document, with values a test
//! sets through a shared [`MockAdmin`].
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/v1/credits` | `{"data": {"total_credits", "total_usage"}}` |
//! | `GET /api/v1/key` | `{"data": {"label", "limit", "limit_remaining", "limit_reset", "usage", "usage_daily", "usage_weekly", "usage_monthly", "is_free_tier"}}` |
//! | `GET /v1/organization/costs?start_time=&end_time=&bucket_width=1d&limit=&page=` | `{"object": "page", "data": [{"object": "bucket", "start_time", "end_time", "results": [{"object": "organization.costs.result", "amount": {"value", "currency": "usd"}, "line_item": null, "project_id": null}]}], "has_more", "next_page"}`, one bucket per UTC day, `limit` buckets per page |
//!
//! Every route wants `Authorization: Bearer <key>` with the key of [`MockAdmin::set_key`]
//! (default [`DEFAULT_KEY`]): anything else is a 401 with an OpenAI-style error body.
//! [`MockAdmin::set_status`] makes every route answer a fixed status instead (429, 500, …).
//!
//! Used by the end-to-end tests through [`super::MockProvider`] (same port as the
//! completions), and by dashboard-api's tests, which include this file by path
//! (dashboard-api cannot depend on this crate: this crate depends on it).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

/// The key the mock accepts unless a test sets another.
pub const DEFAULT_KEY: &str = "mock-admin-key";

const DAY: i64 = 86_400;

/// What the mock answers, shared between a test and the running mock.
#[derive(Clone, Debug, Default)]
pub struct MockAdmin {
    inner: Arc<Mutex<AdminState>>,
}

#[derive(Debug)]
struct AdminState {
    key: String,
    status: Option<u16>,
    total_credits: f64,
    total_usage: f64,
    key_info: KeyInfo,
    /// USD per UTC day (unix seconds of its midnight).
    costs: BTreeMap<i64, f64>,
    /// Most buckets per page whatever `limit` asks (pagination tests).
    page_size: Option<i64>,
    calls: BTreeMap<String, u64>,
}

/// What `GET /api/v1/key` reports.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyInfo {
    pub label: String,
    pub limit: Option<f64>,
    pub limit_remaining: Option<f64>,
    pub usage: f64,
    pub usage_daily: f64,
    pub usage_weekly: f64,
    pub usage_monthly: f64,
}

impl Default for AdminState {
    fn default() -> Self {
        AdminState {
            key: DEFAULT_KEY.into(),
            status: None,
            total_credits: 100.0,
            total_usage: 25.5,
            key_info: KeyInfo {
                label: "sk-or-v1-moc...key".into(),
                limit: None,
                limit_remaining: None,
                usage: 25.5,
                usage_daily: 0.0,
                usage_weekly: 0.0,
                usage_monthly: 0.0,
            },
            costs: BTreeMap::new(),
            page_size: None,
            calls: BTreeMap::new(),
        }
    }
}

impl MockAdmin {
    fn lock(&self) -> MutexGuard<'_, AdminState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The bearer key every route accepts.
    pub fn set_key(&self, key: &str) {
        self.lock().key = key.to_string();
    }

    /// Answer every route with this status (`None`: answer normally).
    pub fn set_status(&self, status: Option<u16>) {
        self.lock().status = status;
    }

    /// OpenRouter's account credits and usage, USD.
    pub fn set_credits(&self, total_credits: f64, total_usage: f64) {
        let mut s = self.lock();
        s.total_credits = total_credits;
        s.total_usage = total_usage;
    }

    /// What `GET /api/v1/key` reports.
    pub fn set_key_info(&self, info: KeyInfo) {
        self.lock().key_info = info;
    }

    pub fn key_info(&self) -> KeyInfo {
        self.lock().key_info.clone()
    }

    /// OpenAI's cost of the UTC day starting at `day_start_unix` (a midnight), USD.
    pub fn set_daily_cost(&self, day_start_unix: i64, usd: f64) {
        self.lock()
            .costs
            .insert(day_start_unix.div_euclid(DAY) * DAY, usd);
    }

    /// At most this many buckets per Costs API page (`None`: as `limit` asks).
    pub fn set_page_size(&self, size: Option<i64>) {
        self.lock().page_size = size;
    }

    /// Calls per path so far.
    pub fn calls(&self, path: &str) -> u64 {
        self.lock().calls.get(path).copied().unwrap_or(0)
    }
}

fn error(status: u16, message: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        code,
        Json(json!({"error": {"message": message, "code": status, "type": "mock_error"}})),
    )
        .into_response()
}

/// Counts the call and checks the key; `Some` is the answer to send instead.
fn refuse(admin: &MockAdmin, path: &str, headers: &HeaderMap) -> Option<Response> {
    let mut s = admin.lock();
    *s.calls.entry(path.to_string()).or_default() += 1;
    if let Some(status) = s.status {
        return Some(error(status, "mock: forced status"));
    }
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given != Some(s.key.as_str()) {
        return Some(error(401, "No auth credentials found (mock)"));
    }
    None
}

async fn credits(State(admin): State<MockAdmin>, headers: HeaderMap) -> Response {
    if let Some(r) = refuse(&admin, "/api/v1/credits", &headers) {
        return r;
    }
    let s = admin.lock();
    Json(json!({"data": {"total_credits": s.total_credits, "total_usage": s.total_usage}}))
        .into_response()
}

async fn key(State(admin): State<MockAdmin>, headers: HeaderMap) -> Response {
    if let Some(r) = refuse(&admin, "/api/v1/key", &headers) {
        return r;
    }
    let k = admin.lock().key_info.clone();
    Json(json!({"data": {
        "label": k.label, "limit": k.limit, "limit_remaining": k.limit_remaining,
        "limit_reset": k.limit.map(|_| "monthly"), "include_byok_in_limit": false,
        "usage": k.usage, "usage_daily": k.usage_daily, "usage_weekly": k.usage_weekly,
        "usage_monthly": k.usage_monthly, "byok_usage": 0, "byok_usage_daily": 0,
        "is_free_tier": false,
    }}))
    .into_response()
}

async fn costs(
    State(admin): State<MockAdmin>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if let Some(r) = refuse(&admin, "/v1/organization/costs", &headers) {
        return r;
    }
    let num = |k: &str| q.get(k).and_then(|v| v.parse::<i64>().ok());
    let Some(start) = num("start_time") else {
        return error(400, "start_time is required");
    };
    if q.get("bucket_width").is_some_and(|w| w != "1d") {
        return error(400, "the mock knows bucket_width=1d only");
    }
    let mut limit = num("limit").unwrap_or(7).clamp(1, 180);
    if let Some(size) = admin.lock().page_size {
        limit = limit.min(size.max(1));
    }
    let first = match q.get("page").and_then(|p| p.strip_prefix("page_")) {
        Some(p) => match p.parse::<i64>() {
            Ok(t) => t,
            Err(_) => return error(400, "bad page cursor"),
        },
        None => start.div_euclid(DAY) * DAY,
    };
    let end = num("end_time").unwrap_or(first + limit * DAY);
    let s = admin.lock();
    let mut data = Vec::new();
    let mut t = first;
    while t < end && (data.len() as i64) < limit {
        let results: Vec<Value> = s
            .costs
            .get(&t)
            .map(|usd| {
                vec![json!({"object": "organization.costs.result",
                    "amount": {"value": usd, "currency": "usd"}, "line_item": null, "project_id": null})]
            })
            .unwrap_or_default();
        data.push(
            json!({"object": "bucket", "start_time": t, "end_time": t + DAY, "results": results}),
        );
        t += DAY;
    }
    let has_more = t < end;
    Json(json!({"object": "page", "data": data, "has_more": has_more,
        "next_page": if has_more { Value::String(format!("page_{t}")) } else { Value::Null }}))
    .into_response()
}

/// The admin routes, answering from `admin`.
pub fn router(admin: MockAdmin) -> Router {
    Router::new()
        .route("/api/v1/credits", get(credits))
        .route("/api/v1/key", get(key))
        .route("/v1/organization/costs", get(costs))
        .with_state(admin)
}

/// The admin routes alone on `127.0.0.1:<free port>`, until dropped.
#[derive(Debug)]
pub struct MockAdminServer {
    pub addr: SocketAddr,
    pub admin: MockAdmin,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl MockAdminServer {
    pub async fn start(admin: MockAdmin) -> std::io::Result<MockAdminServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = router(admin.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(MockAdminServer {
            addr,
            admin,
            shutdown: Some(tx),
        })
    }

    /// `http://127.0.0.1:<port>`: both providers' API root.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for MockAdminServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
