//! The `BudgetGuard` Durable Object (one per budget) and the worker-side calls to it. The
//! ledger logic is [`crate::budget`]; this file moves it in and out of storage and answers
//! the worker's reserve / settle requests.
//!
//! A guard handles its requests one at a time between awaits: the check-and-reserve is
//! synchronous, so no two calls can both take the last room in a budget. Its ledger is saved in
//! Durable Object storage after every change; when it is new (or has not synced for a minute)
//! it asks dashboard-api for the spend recorded in ClickHouse and raises its own to it.
//!
//! # When the spend cannot be known
//!
//! A guard that has never synced (a new Durable Object, or one whose stored ledger was lost)
//! knows nothing of the spend recorded so far. If its first resync fails or takes longer than
//! [`RESYNC_TIMEOUT_MS`], it answers a *hard* budget's reservation with 503 and the reason
//! instead of deciding on a spend of zero; the worker then refuses the call
//! (`budget_unavailable`) unless `BUDGET_FAIL_MODE=open`. A guard that has synced before keeps
//! enforcing with its own ledger when a later resync fails: every reservation made through
//! it since is counted there, so what it lacks is only spend from outside this edge.
//! The worker gives a guard [`GUARD_TIMEOUT_MS`] to answer.

use std::cell::RefCell;
use std::rc::Rc;

use wasm_bindgen::{JsCast, JsValue};
use worker::{durable_object, DurableObject, ObjectNamespace, State as DurableObjectState};

use crate::bindings::secret;
use crate::budget::{BudgetSpec, Decision, GuardRequest, Ledger};
use crate::cf::{self, console_error, Env};
use crate::json::{self, FromJson};
use crate::web;

/// Seconds between resyncs with the recorded spend.
const RESYNC_SECS: i64 = 60;
/// How long a resync may take before the guard goes on without it.
pub const RESYNC_TIMEOUT_MS: u64 = 10_000;
/// How long the worker waits for a guard's answer (a resync included).
pub const GUARD_TIMEOUT_MS: u64 = 30_000;
/// The guard's answer when it cannot decide (a hard budget whose spend is unknown).
const UNDECIDED_STATUS: u16 = 503;

/// The Durable Object class bound as `BUDGET_GUARD` (exported to JavaScript by this name; only
/// its constructor and `fetch`).
#[durable_object(fetch)]
pub struct BudgetGuard {
    inner: Rc<Guard>,
}

impl DurableObject for BudgetGuard {
    fn new(state: DurableObjectState, env: Env) -> BudgetGuard {
        BudgetGuard {
            inner: Rc::new(Guard {
                state,
                env,
                ledger: RefCell::new(None),
                resync_failed_at: std::cell::Cell::new(None),
            }),
        }
    }

    /// The runtime's `fetch` into this object: one [`GuardRequest`] as JSON.
    async fn fetch(&self, req: worker::Request) -> worker::Result<worker::Response> {
        let (status, body) = match self.inner.answer(req.inner()).await {
            Ok(body) => (200, body),
            Err(GuardError::Undecided(why)) => (UNDECIDED_STATUS, why.into_bytes()),
            Err(GuardError::Failed(why)) => {
                console_error!("tollgate: budget guard: {why}");
                (500, why.into_bytes())
            }
        };
        Ok(worker::Response::from_bytes(body)?.with_status(status))
    }
}

impl std::fmt::Debug for BudgetGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BudgetGuard").finish_non_exhaustive()
    }
}

/// Why a guard gave no decision.
enum GuardError {
    /// The spend of a hard budget is unknown (never synced, and the resync failed).
    Undecided(String),
    /// Anything else: a bad request, storage failing.
    Failed(String),
}

impl From<String> for GuardError {
    fn from(why: String) -> Self {
        GuardError::Failed(why)
    }
}

/// One guard's state: its ledger, loaded from storage on first use.
struct Guard {
    state: DurableObjectState,
    env: Env,
    ledger: RefCell<Option<Ledger>>,
    /// When the last resync failed (budget clock): the next try waits [`RESYNC_RETRY_SECS`],
    /// so an outage of dashboard-api does not cost every call the resync timeout.
    resync_failed_at: std::cell::Cell<Option<i64>>,
}

/// Seconds between resync attempts after one failed.
const RESYNC_RETRY_SECS: i64 = 5;

impl Guard {
    async fn answer(&self, req: &web_sys::Request) -> Result<Vec<u8>, GuardError> {
        let cmd: GuardRequest = json::parse(&web::request_bytes(req).await?)
            .map_err(|e| format!("bad request: {e}"))?;
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
                .and_then(|text| json::parse::<Ledger>(text.as_bytes()).ok());
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
                self.prepare(spec, now)
                    .await
                    .map_err(GuardError::Undecided)?;
                let decision = {
                    let mut slot = self.ledger.borrow_mut();
                    match slot.as_mut() {
                        Some(l) => l.reserve(&id, amount, now),
                        None => return Err(GuardError::Failed("guard has no ledger".into())),
                    }
                };
                serde_json::to_vec(&decision).map_err(|e| e.to_string())?
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
            let json = serde_json::to_string(&l).map_err(|e| e.to_string())?;
            self.state
                .storage()
                .put_raw("ledger", JsValue::from_str(&json))
                .await
                .map_err(|e| format!("storing the ledger: {e}"))?;
        }
        Ok(out)
    }

    /// Creates or updates the ledger for `spec`, rolls the period and resyncs when due. Fails
    /// when `spec` is hard and the spend is unknown: never synced, and the resync failed.
    async fn prepare(&self, spec: BudgetSpec, now: i64) -> Result<(), String> {
        let (period_start, due, never_synced) = {
            let mut slot = self.ledger.borrow_mut();
            let l = slot.get_or_insert_with(|| Ledger::new(spec.clone(), now));
            l.update_spec(spec.clone(), now);
            l.tick(now);
            (
                l.period_start,
                l.synced_at == 0 || now - l.synced_at > RESYNC_SECS,
                l.synced_at == 0,
            )
        };
        if !due {
            return Ok(());
        }
        let retry_later = self
            .resync_failed_at
            .get()
            .is_some_and(|at| (0..RESYNC_RETRY_SECS).contains(&(now - at)));
        let truth = if retry_later {
            None
        } else {
            let lookup = Box::pin(recorded_spend(&self.env, &spec.budget_id, period_start));
            let truth = web::within(lookup, RESYNC_TIMEOUT_MS).await.flatten();
            self.resync_failed_at
                .set(if truth.is_none() { Some(now) } else { None });
            truth
        };
        match truth {
            Some(truth) => {
                if let Some(l) = self.ledger.borrow_mut().as_mut() {
                    l.resync(period_start, truth, now);
                }
                Ok(())
            }
            None if never_synced && spec.is_hard() => Err(format!(
                "its recorded spend could not be read from dashboard-api (no good answer within {RESYNC_TIMEOUT_MS} ms)"
            )),
            // Known spend and a late resync (or a soft budget): go on with the ledger.
            None => Ok(()),
        }
    }
}

/// A signed GET or POST of dashboard-api's internal API (`KEYS_URL` + `KEYS_SIGNING_SECRET`);
/// the signature covers the path and query. `None` (logged) unless it answers 2xx.
pub async fn internal_call(
    env: &Env,
    method: &str,
    path_and_query: &str,
) -> Option<web_sys::Response> {
    let base = crate::bindings::settings(env).keys_url.clone()?;
    let signing = secret(env, crate::config::names::KEYS_SIGNING_SECRET)?;
    let now = (cf::now_ms() / 1000) as i64;
    let headers = web_sys::Headers::new().ok()?;
    headers
        .set(
            usage_core::wire::SIGNATURE_HEADER,
            &usage_core::wire::sign(signing.as_bytes(), now, path_and_query.as_bytes()),
        )
        .ok()?;
    let init = web::request_init(method, &headers, None);
    let url = format!("{}{path_and_query}", base.trim_end_matches('/'));
    match web::fetch(&url, &init).await {
        Ok(resp) if (200..300).contains(&resp.status()) => Some(resp),
        Ok(resp) => {
            console_error!(
                "tollgate: internal call {path_and_query} answered {}",
                resp.status()
            );
            None
        }
        Err(e) => {
            console_error!("tollgate: internal call {path_and_query} failed: {e}");
            None
        }
    }
}

/// The spend ClickHouse has recorded for the period. A failed answer is asked again after a
/// pause (dashboard-api answers 503 while it cannot reach ClickHouse for a moment; one such
/// blip once refused a hard budget's calls for [`RESYNC_RETRY_SECS`]); the caller's
/// [`RESYNC_TIMEOUT_MS`] bounds the whole.
async fn recorded_spend(env: &Env, budget_id: &str, period_start: i64) -> Option<i64> {
    for pause_ms in [0, 100, 300, 1_000, 2_000] {
        if pause_ms > 0 && !web::sleep(pause_ms).await {
            return None;
        }
        if let Some(spent) = recorded_spend_once(env, budget_id, period_start).await {
            return Some(spent);
        }
    }
    None
}

async fn recorded_spend_once(env: &Env, budget_id: &str, period_start: i64) -> Option<i64> {
    let resp = internal_call(
        env,
        "GET",
        &format!("/internal/v1/budgets/{budget_id}/spent?period_start={period_start}"),
    )
    .await?;
    let answer = web::response_json(&resp).await.ok()?;
    json::Fields::of(&answer).ok()?.i64("spent_nusd").ok()
}

/// Sends `request` to the guard named `name` (created on first use) and awaits its answer.
/// Through the stub's runtime object: the request and the answer stay the runtime's own,
/// with no copy into workers-rs's `Request`/`Response` and back on every budget check.
async fn guard_fetch(
    ns: &ObjectNamespace,
    name: &str,
    request: &web_sys::Request,
) -> Result<web_sys::Response, String> {
    let stub = ns
        .id_from_name(name)
        .and_then(|id| id.get_stub())
        .map_err(|e| e.to_string())?
        .into_rpc::<worker::worker_sys::DurableObject>();
    web::settle(stub.fetch_with_request(request))
        .await?
        .dyn_into::<web_sys::Response>()
        .map_err(|_| "the Durable Object answered something other than a Response".into())
}

/// Sends `cmd` to the guard of `budget_id`; a reservation's answer is its decision.
pub async fn call_guard(
    env: &Env,
    budget_id: &str,
    cmd: &GuardRequest,
) -> Result<Option<Decision>, String> {
    let ns = env
        .durable_object(crate::config::names::BUDGET_GUARD)
        .map_err(|_| "BUDGET_GUARD is not bound")?;
    let body = serde_json::to_vec(cmd).map_err(|e| e.to_string())?;
    let headers = web_sys::Headers::new().map_err(|e| web::error_text(&e))?;
    let init = web::request_init("POST", &headers, Some(&body));
    let req = web_sys::Request::new_with_str_and_init("https://budget-guard/", &init)
        .map_err(|e| web::error_text(&e))?;
    let resp = web::within(
        Box::pin(guard_fetch(&ns, budget_id, &req)),
        GUARD_TIMEOUT_MS,
    )
    .await
    .ok_or_else(|| format!("the guard did not answer within {GUARD_TIMEOUT_MS} ms"))??;
    if resp.status() == UNDECIDED_STATUS {
        let why = web::response_bytes(&resp).await.unwrap_or_default();
        return Err(String::from_utf8_lossy(&why).into_owned());
    }
    if !(200..300).contains(&resp.status()) {
        return Err(format!("the guard answered {}", resp.status()));
    }
    if matches!(cmd, GuardRequest::Reserve { .. }) {
        Decision::from_json(&web::response_json(&resp).await?).map(Some)
    } else {
        Ok(None)
    }
}
