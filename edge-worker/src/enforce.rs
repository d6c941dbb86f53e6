//! Budgets at the edge for one call: the org's budget list (cached from dashboard-api), a
//! reservation of the call's worst-case cost in each applicable budget's guard, and the refusal
//! (429, or 503 when a hard budget cannot be checked) the client gets. The guard itself is
//! [`crate::guard`]; the ledger math [`crate::budget`].

use chrono::DateTime;
use std::cell::RefCell;
use std::collections::HashMap;

use crate::budget::GuardRequest;
use crate::budget::{self, BudgetSpec};
use crate::cf::{self, console_error, now_ms, Context, Env};
use crate::config::Settings;
use crate::errors::ApiError;
use crate::guard;
use crate::json;
use crate::record::{datetime_ms, with_prices, Prepared};
use crate::web;

thread_local! {
    /// org → (budgets, fetched at ms)
    static ORG_BUDGETS: RefCell<HashMap<String, (Vec<BudgetSpec>, u64)>> = RefCell::new(HashMap::new());
    /// org → when a call of this isolate started fetching its list. A cold isolate hit by a
    /// burst (200 concurrent calls) sent dashboard-api one list request per call; with the
    /// machine busy, the guard's resync queued behind them past its timeout and hard budgets
    /// answered 503. Now one call fetches and the others wait for its answer in the cache.
    /// (They poll on their own timer: in Workers a request cannot await I/O another request
    /// started — the runtime cancels it as hung.)
    static LIST_FETCHING: RefCell<HashMap<String, u64>> = RefCell::new(HashMap::new());
}

/// How long a call waits for another call's fetch of the same list before it fetches itself.
const LIST_WAIT_MS: u64 = 10_000;
/// How often a waiting call looks at the cache.
const LIST_POLL_MS: u64 = 20;

const BUDGET_LIST_TTL_MS: u64 = 30_000;
/// How long a stale list is still used when dashboard-api cannot be reached. Long: budgets
/// are changed through dashboard-api, so while it is down the last list read is as current
/// as any (only a change made in the last `BUDGET_LIST_TTL_MS` before the outage is missed).
const BUDGET_LIST_STALE_MS: u64 = 24 * 3_600_000;

/// The org's budgets (cached), or why they cannot be had (dashboard-api unreachable, and no
/// list read in the last [`BUDGET_LIST_STALE_MS`]).
async fn org_budgets(env: &Env, org: &str) -> Result<Vec<BudgetSpec>, String> {
    let now = now_ms();
    let cached = ORG_BUDGETS.with(|c| c.borrow().get(org).cloned());
    if let Some((specs, at)) = &cached {
        if now - at < BUDGET_LIST_TTL_MS {
            return Ok(specs.clone());
        }
    }
    let fresh = || {
        ORG_BUDGETS.with(|c| {
            c.borrow()
                .get(org)
                .filter(|(_, at)| now_ms() - at < BUDGET_LIST_TTL_MS)
                .map(|(specs, _)| specs.clone())
        })
    };
    let someone_fetching = || {
        LIST_FETCHING
            .with(|m| m.borrow().get(org).copied())
            .is_some_and(|since| now_ms() - since < LIST_WAIT_MS)
    };
    while someone_fetching() {
        if !web::sleep(LIST_POLL_MS).await {
            break;
        }
        if let Some(specs) = fresh() {
            return Ok(specs);
        }
    }
    LIST_FETCHING.with(|m| m.borrow_mut().insert(org.to_string(), now_ms()));
    let fetched = fetch_list(env, org).await;
    LIST_FETCHING.with(|m| m.borrow_mut().remove(org));
    match fetched {
        Ok(specs) => Ok(specs),
        Err(why) => match cached {
            Some((specs, at)) if now - at < BUDGET_LIST_STALE_MS => Ok(specs),
            _ => Err(why),
        },
    }
}

/// Reads `org`'s budget list from dashboard-api and caches it.
async fn fetch_list(env: &Env, org: &str) -> Result<Vec<BudgetSpec>, String> {
    let path = format!("/internal/v1/budgets?org={}", form_encode(org));
    let specs = match guard::internal_call(env, "GET", &path).await {
        Some(resp) => web::response_json(&resp)
            .await
            .and_then(|v| json::list::<BudgetSpec>(&v, "budgets"))
            .map_err(|e| format!("the budget list from dashboard-api is unreadable: {e}"))?,
        None => return Err("dashboard-api did not return the budget list".into()),
    };
    ORG_BUDGETS.with(|c| {
        c.borrow_mut()
            .insert(org.to_string(), (specs.clone(), now_ms()))
    });
    Ok(specs)
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Reserves the call's worst-case cost in every budget that applies; a refusal is the 429 the
/// client gets. Returns the soft-threshold warnings to show.
pub async fn guard_budgets(
    env: &Env,
    ctx: &Context,
    settings: &Settings,
    p: &mut Prepared,
) -> Result<Vec<String>, ApiError> {
    // Without `BUDGET_GUARD` bound, the org's budgets are still read: a budget that applies
    // then "cannot be checked" (a hard one refuses with 503 unless BUDGET_FAIL_MODE=open), so a
    // binding lost in `wrangler.toml` never turns budgets off silently.
    if settings.keys_url.is_none() {
        return Ok(Vec::new());
    }
    let user = p
        .attribution
        .user
        .clone()
        .unwrap_or_else(|| p.key.user_id.clone());
    let specs: Vec<BudgetSpec> = match org_budgets(env, &p.key.org_id).await {
        Ok(specs) => specs
            .into_iter()
            .filter(|s| s.applies(&user, &p.key.app_id))
            .collect(),
        Err(why) if settings.budget_fail_open => {
            console_error!(
                "tollgate: budgets of org {} unavailable ({why}); BUDGET_FAIL_MODE=open lets the call through unchecked",
                p.key.org_id
            );
            p.unchecked_budgets.push("budget_list".into());
            return Ok(Vec::new());
        }
        Err(why) => {
            console_error!(
                "tollgate: budgets of org {} unavailable ({why}); call refused",
                p.key.org_id
            );
            return Err(ApiError::budget_unavailable(
                &format!("the budgets of org `{}`", p.key.org_id),
                &why,
            ));
        }
    };
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    let at = datetime_ms(u64::try_from(p.budget_now).unwrap_or(0) * 1000);
    // The call's worst case, with the output bound it set, else `cap` (a budget's
    // `reserve_output_tokens`; 0: the model's maximum output).
    let worst = |cap: u32| {
        let bound = p.plan.facts.max_output_tokens.or((cap > 0).then_some(cap));
        with_prices(|t| {
            budget::worst_case_cost(
                budget::price_for(t, &p.plan.provider.name, &p.plan.facts.model, at),
                p.request_bytes,
                bound,
                &p.plan.facts.service_tier,
            )
        })
        .flatten()
    };
    if worst(0).is_none()
        && specs.iter().any(BudgetSpec::is_hard)
        && !settings.unpriced_under_hard_budget
    {
        return Err(ApiError::budget_exceeded(format!(
            "model `{}` is not in the price table, so its cost cannot be bounded under a hard budget (set UNPRICED_UNDER_HARD_BUDGET=allow to let it through)",
            p.plan.facts.model
        )));
    }
    let id = p.event_id.to_string();
    let mut warnings = Vec::new();
    for spec in &specs {
        let amount = worst(spec.reserve_output_tokens).map_or(0, |n| n.get());
        let cmd = GuardRequest::Reserve {
            spec: spec.clone(),
            id: id.clone(),
            amount,
            now: p.budget_now,
        };
        let decision = match guard::call_guard(env, &spec.budget_id, &cmd).await {
            Ok(Some(d)) => Ok(d),
            Ok(None) => Err("the guard gave no decision".to_string()),
            Err(why) => Err(why),
        };
        let decision = match decision {
            Ok(d) => d,
            Err(why) if !spec.is_hard() || settings.budget_fail_open => {
                console_error!(
                    "tollgate: budget {} could not be checked ({why}); the call goes through unchecked",
                    spec.budget_id
                );
                p.unchecked_budgets.push(spec.budget_id.clone());
                continue;
            }
            Err(why) => {
                console_error!(
                    "tollgate: hard budget {} could not be checked ({why}); call refused",
                    spec.budget_id
                );
                release(env, &p.reservations, &id, p.budget_now).await;
                p.reservations.clear();
                return Err(ApiError::budget_unavailable(
                    &format!("budget \"{}\" ({})", spec.name, spec.budget_id),
                    &why,
                ));
            }
        };
        if !decision.allowed {
            release(env, &p.reservations, &id, p.budget_now).await;
            p.reservations.clear();
            let reset = DateTime::from_timestamp_secs(decision.reset_at)
                .and_then(|t| usage_core::rfc3339::format(&t))
                .unwrap_or_default();
            let committed = decision.spent_nusd.saturating_add(decision.reserved_nusd);
            if committed >= decision.limit_nusd {
                return Err(ApiError::budget_exceeded(format!(
                    "budget \"{}\" ({}) is exhausted: limit ${}, spent ${}, reserved by calls in flight ${}; it resets at {reset}",
                    spec.name,
                    spec.period,
                    usage_core::Nanos::new(decision.limit_nusd),
                    usage_core::Nanos::new(decision.spent_nusd),
                    usage_core::Nanos::new(decision.reserved_nusd),
                )));
            }
            // Room is left, but not for the most this call could cost: say so, and how to
            // ask for less, rather than calling the budget exhausted.
            return Err(ApiError::budget_insufficient(format!(
                "budget \"{}\" ({}) has ${} left (limit ${}, spent ${}, reserved by calls in flight ${}), but this call could cost up to ${} at `{}`'s prices; set max_tokens (or max_completion_tokens) to bound its output (an admin can also cap what calls without it reserve: the budget's reserve_output_tokens), or wait until the budget resets at {reset}",
                spec.name,
                spec.period,
                usage_core::Nanos::new(decision.limit_nusd.saturating_sub(committed)),
                usage_core::Nanos::new(decision.limit_nusd),
                usage_core::Nanos::new(decision.spent_nusd),
                usage_core::Nanos::new(decision.reserved_nusd),
                usage_core::Nanos::new(amount),
                p.plan.facts.model,
            )));
        }
        p.reservations.push(spec.budget_id.clone());
        if decision.spend_unknown {
            p.unchecked_budgets.push(spec.budget_id.clone());
        }
        for pct in decision.crossed {
            // The dashboard's `percent_used` for the same spend (one function).
            let used = usage_core::budget_use::used_basis_points(
                i128::from(decision.spent_nusd),
                i128::from(decision.limit_nusd),
            );
            warnings.push(format!(
                "budget \"{}\" ({}) has reached {pct}%: {} used",
                spec.name,
                spec.period,
                usage_core::budget_use::percent_text(used)
            ));
            let env = env.clone();
            let path = format!(
                "/internal/v1/budgets/{}/warning?percent={pct}&period_start={}",
                spec.budget_id,
                budget::period_bounds(&spec.period, p.budget_now).0
            );
            cf::wait_until(ctx, async move {
                let _ = guard::internal_call(&env, "POST", &path).await;
            });
        }
    }
    Ok(warnings)
}

/// Releases reservations (settled at zero).
async fn release(env: &Env, budgets: &[String], id: &str, now: i64) {
    for b in budgets {
        let cmd = GuardRequest::Settle {
            id: id.to_string(),
            actual: 0,
            now,
        };
        let _ = guard::call_guard(env, b, &cmd).await;
    }
}
