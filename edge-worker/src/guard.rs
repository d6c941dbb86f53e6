//! The `BudgetGuard` Durable Object (one per budget) and the worker-side calls to it. The
//! ledger logic is [`crate::budget`]; this file moves it in and out of storage and answers
//! the worker's reserve / settle requests.
//!
//! A guard handles its requests one at a time between awaits: the check-and-reserve is
//! synchronous, so no two calls can both take the last room in a budget. Its ledger is saved in
//! Durable Object storage after every change; when it is new (or has not synced for a minute)
//! it asks dashboard-api for the spend recorded in ClickHouse and raises its own to it.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};
use worker::{
    console_error, durable_object, DurableObject, Env, Headers, Method, Request, RequestInit,
    Response, State,
};

use crate::bindings::secret;
use crate::budget::{BudgetSpec, Decision, Ledger};

/// Seconds between resyncs with the recorded spend.
const RESYNC_SECS: i64 = 60;

/// What the worker asks of a guard.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum GuardRequest {
    Reserve {
        spec: BudgetSpec,
        id: String,
        amount: i64,
        now: i64,
    },
    Settle {
        id: String,
        actual: i64,
        now: i64,
    },
}

#[durable_object]
pub struct BudgetGuard {
    state: State,
    env: Env,
    ledger: RefCell<Option<Ledger>>,
}

impl std::fmt::Debug for BudgetGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BudgetGuard").finish_non_exhaustive()
    }
}

impl DurableObject for BudgetGuard {
    fn new(state: State, env: Env) -> Self {
        BudgetGuard {
            state,
            env,
            ledger: RefCell::new(None),
        }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        let cmd: GuardRequest = req.json().await?;
        if self.ledger.borrow().is_none() {
            // Kept as JSON text. A ledger an older version stored as an object does not read
            // back: the guard then starts afresh and resyncs the spend from ClickHouse.
            let stored: Option<Ledger> = self
                .state
                .storage()
                .get::<String>("ledger")
                .await
                .ok()
                .flatten()
                .and_then(|json| serde_json::from_str(&json).ok());
            let mut slot = self.ledger.borrow_mut();
            if slot.is_none() {
                *slot = stored;
            }
        }
        let out = match cmd {
            GuardRequest::Reserve {
                spec,
                id,
                amount,
                now,
            } => {
                self.prepare(spec, now).await;
                let decision = {
                    let mut slot = self.ledger.borrow_mut();
                    match slot.as_mut() {
                        Some(l) => l.reserve(&id, amount, now),
                        None => return Response::error("guard has no ledger", 500),
                    }
                };
                serde_json::to_vec(&decision)
                    .map_err(|e| worker::Error::RustError(e.to_string()))?
            }
            GuardRequest::Settle { id, actual, now } => {
                if let Some(l) = self.ledger.borrow_mut().as_mut() {
                    l.settle(&id, actual, now);
                }
                b"{}".to_vec()
            }
        };
        let snapshot = self.ledger.borrow().clone();
        if let Some(l) = snapshot {
            let json =
                serde_json::to_string(&l).map_err(|e| worker::Error::RustError(e.to_string()))?;
            self.state.storage().put("ledger", json).await?;
        }
        Response::from_bytes(out)
    }
}

impl BudgetGuard {
    /// Creates or updates the ledger for `spec`, rolls the period and resyncs when due.
    async fn prepare(&self, spec: BudgetSpec, now: i64) {
        let (period_start, due) = {
            let mut slot = self.ledger.borrow_mut();
            let l = slot.get_or_insert_with(|| Ledger::new(spec.clone(), now));
            l.update_spec(spec.clone(), now);
            l.tick(now);
            (
                l.period_start,
                l.synced_at == 0 || now - l.synced_at > RESYNC_SECS,
            )
        };
        if !due {
            return;
        }
        match recorded_spend(&self.env, &spec.budget_id, period_start).await {
            Some(truth) => {
                if let Some(l) = self.ledger.borrow_mut().as_mut() {
                    l.resync(period_start, truth, now);
                }
            }
            None => {
                // Dashboard unreachable: keep enforcing with what the guard knows; retry soon.
                if let Some(l) = self.ledger.borrow_mut().as_mut() {
                    l.synced_at = now - RESYNC_SECS + 5;
                }
            }
        }
    }
}

/// A signed GET or POST of dashboard-api's internal API (`KEYS_URL` + `KEYS_SIGNING_SECRET`);
/// the signature covers the path and query.
pub async fn internal_call(env: &Env, method: Method, path_and_query: &str) -> Option<Response> {
    let base = crate::bindings::settings(env).keys_url.clone()?;
    let signing = secret(env, "KEYS_SIGNING_SECRET")?;
    let now = (worker::Date::now().as_millis() / 1000) as i64;
    let headers = Headers::new();
    headers
        .set(
            usage_core::wire::SIGNATURE_HEADER,
            &usage_core::wire::sign(signing.as_bytes(), now, path_and_query.as_bytes()),
        )
        .ok()?;
    let mut init = RequestInit::new();
    init.with_method(method).with_headers(headers);
    let url = format!("{}{path_and_query}", base.trim_end_matches('/'));
    let req = Request::new_with_init(&url, &init).ok()?;
    match worker::Fetch::Request(req).send().await {
        Ok(resp) if (200..300).contains(&resp.status_code()) => Some(resp),
        Ok(resp) => {
            console_error!(
                "tollgate: internal call {path_and_query} answered {}",
                resp.status_code()
            );
            None
        }
        Err(e) => {
            console_error!("tollgate: internal call {path_and_query} failed: {e}");
            None
        }
    }
}

#[derive(Deserialize)]
struct Spent {
    spent_nusd: i64,
}

async fn recorded_spend(env: &Env, budget_id: &str, period_start: i64) -> Option<i64> {
    let mut resp = internal_call(
        env,
        Method::Get,
        &format!("/internal/v1/budgets/{budget_id}/spent?period_start={period_start}"),
    )
    .await?;
    resp.json::<Spent>().await.ok().map(|s| s.spent_nusd)
}

/// Sends `cmd` to the guard of `budget_id`.
pub async fn call_guard(
    env: &Env,
    budget_id: &str,
    cmd: &GuardRequest,
) -> worker::Result<Option<Decision>> {
    let ns = env.durable_object("BUDGET_GUARD")?;
    let stub = ns.id_from_name(budget_id)?.get_stub()?;
    let body = serde_json::to_vec(cmd).map_err(|e| worker::Error::RustError(e.to_string()))?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_body(Some(js_sys::Uint8Array::from(body.as_slice()).into()));
    let req = Request::new_with_init("https://budget-guard/", &init)?;
    let mut resp = stub.fetch_with_request(req).await?;
    if matches!(cmd, GuardRequest::Reserve { .. }) {
        Ok(Some(resp.json::<Decision>().await?))
    } else {
        Ok(None)
    }
}
