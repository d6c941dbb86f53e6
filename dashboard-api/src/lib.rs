//! Tollgate's dashboard API: the HTTP face of what admins see and change — the JSON API, its
//! OpenAPI document, the web dashboard and their authentication. The timed work (alert
//! evaluation, notifications, credit polls, reconciliation, integrity) is `tollgate_jobs`,
//! which `serve` starts; the tables' rows and SQL are `tollgate_clickhouse`.
//!
//! - [`analytics`] — overview, time series, providers, models, top spenders (rollups only).
//! - [`projections`] — 30-day forecasts ([`forecast`] is the model), month-end, runway.
//! - [`budgets`], [`alerts`], [`credits`], [`keys`] — configuration and state, per org.
//! - [`export`] — raw events in scope, streamed as CSV or NDJSON.
//! - [`prices`] — the price book (read, set, reprice), and the edge's signed copy of it.
//! - [`auth`] — bearer tokens → [`auth::Principal`] → the tenant scope of every query.
//! - [`params`] — strict parsing of query parameters; [`error`] — the one error type.
//! - [`openapi`] — the OpenAPI document, generated from the handlers.
//! - [`web`] — the web dashboard: server-rendered pages over the same computations.
//!
//! [`app`] builds the router (tested with `oneshot`, no socket). Request path, outermost
//! first: the body limit (1 MiB) → [`metrics::track`] (counts and times by route) → routing →
//! the handler, whose [`auth::Principal`] extractor authenticates before any parameter is read.

pub mod alerts;
pub mod analytics;
pub mod auth;
pub mod budgets;
pub mod config;
pub mod credits;
pub mod error;
pub mod export;
pub mod internal_budgets;
pub mod keys;
pub mod metrics;
pub mod openapi;
pub mod params;
pub mod prices;
pub mod projections;
pub mod reconciliation;
pub mod web;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::{Json, Router};
use tollgate_clickhouse::clickhouse::Client;

use crate::auth::TokenCache;
use crate::config::Config;

/// Shared state of the handlers.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    client: Client,
    keys_client: Client,
    jobs: tollgate_jobs::Context,
    tokens: TokenCache,
    metrics: metrics::Metrics,
    budget_lists: internal_budgets::LastLists,
    price_book: prices::BookCache,
}

impl AppState {
    pub fn new(config: Config) -> Self {
        let ch = config.clickhouse();
        let client = ch.client();
        let keys_client = ch.keys_client();
        let jobs = tollgate_jobs::Context::new(&ch, config.jobs());
        AppState {
            inner: Arc::new(Inner {
                config,
                client,
                keys_client,
                jobs,
                tokens: TokenCache::default(),
                metrics: metrics::Metrics::default(),
                budget_lists: internal_budgets::LastLists::default(),
                price_book: prices::BookCache::default(),
            }),
        }
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The key and token database (`api_tokens`, `app_keys`): apart from the usage data so the
    /// analyst user cannot read them (migration 0015).
    pub fn keys_client(&self) -> &Client {
        &self.inner.keys_client
    }

    /// What the timed jobs share (the rule kinds' test send uses it too); [`tollgate_jobs::spawn`]
    /// starts them with it.
    pub fn jobs(&self) -> &tollgate_jobs::Context {
        &self.inner.jobs
    }

    pub fn token_cache(&self) -> &TokenCache {
        &self.inner.tokens
    }

    pub fn metrics(&self) -> &metrics::Metrics {
        &self.inner.metrics
    }

    /// The price book as last read (see [`prices`]).
    pub fn price_book(&self) -> &prices::BookCache {
        &self.inner.price_book
    }

    /// The last budget list read per org, served while ClickHouse cannot be read.
    pub fn budget_lists(&self) -> &internal_budgets::LastLists {
        &self.inner.budget_lists
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The dashboard API's routes.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/overview", get(analytics::overview))
        .route("/api/v1/usage/timeseries", get(analytics::timeseries))
        .route("/api/v1/providers", get(analytics::providers))
        .route("/api/v1/models", get(analytics::models))
        .route("/api/v1/top/users", get(analytics::top_users))
        .route("/api/v1/top/apps", get(analytics::top_apps))
        .route("/api/v1/projections", get(projections::projections))
        .route("/api/v1/credits", get(credits::list).post(credits::record))
        .route("/api/v1/reconciliation", get(reconciliation::list))
        .route("/openapi.json", get(|| async { Json(openapi::document()) }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics::endpoint))
        .merge(budgets::routes())
        .merge(alerts::routes())
        .merge(keys::routes())
        .merge(prices::routes())
        .merge(internal_budgets::routes())
        .merge(export::routes())
        .merge(web::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(DefaultBodyLimit::max(1 << 20))
        .with_state(state)
}
