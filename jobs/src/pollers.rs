//! Provider credit pollers: OpenRouter's balance and key, recorded into `provider_credits`
//! ([`crate::credits::insert`]) every `pollers.interval_secs` by the instance that holds the
//! jobs lease ([`crate::runner`]).
//!
//! | call | key | row (`provider` `openrouter`) |
//! |---|---|---|
//! | `GET {openrouter_base_url}/api/v1/credits` → `{data: {total_credits, total_usage}}` | management key | `key_label` `account`: balance = credits − usage |
//! | `GET {openrouter_base_url}/api/v1/key` → `{data: {label, limit, limit_remaining, usage, usage_daily, …}}` | API key (else the management key) | `key_label` `api-key`: balance = `limit_remaining` (none without a limit), credits = `limit`, usage = `usage` |
//!
//! Each row carries the key's status from the poll: `valid` (200), `invalid` (401/403),
//! `rate_limited` (429) or `error` (anything else, or no answer) with a short reason — never
//! the key. A failed poll records no balance, so the last known one still counts for
//! `low_balance`. The key poll also stores the OpenRouter reconciliation snapshot
//! ([`crate::reconcile`]). OpenAI has no balance API: its balances are entered by hand
//! (`POST /api/v1/credits`). Polled balances belong to the deployment (`org_id` empty): admins
//! see them, and rules of `evaluator.operator_orgs` watch them.

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use std::time::Duration as StdDuration;

use serde_json::Value;
use usage_core::Nanos;

use crate::error::JobResult;
use crate::evaluator::midnight;
use crate::outbound::{self, Request};
use crate::Context;
use tollgate_clickhouse::credits::{self, CreditInsertRow};
use tollgate_clickhouse::reconciliation::{self, ReconciliationRow};
use tollgate_clickhouse::Filter;

/// `key_label` of the account balance row.
pub const ACCOUNT_LABEL: &str = "account";
/// `key_label` of the API key row.
pub const KEY_LABEL: &str = "api-key";

/// The key `GET /api/v1/key` is called with, if any.
pub fn openrouter_key(state: &Context) -> Option<&str> {
    let p = &state.config().pollers;
    [
        p.openrouter_api_key.expose(),
        p.openrouter_management_key.expose(),
    ]
    .into_iter()
    .find(|k| !k.is_empty())
    .map(String::as_str)
}

/// The answer's `data` object, or the row's status and error.
async fn fetch(state: &Context, path: &str, key: &str) -> Result<Value, (&'static str, String)> {
    let p = &state.config().pollers;
    let url = format!("{}{path}", p.openrouter_base_url.trim_end_matches('/'));
    let answer = outbound::send(
        Request::get(url, StdDuration::from_millis(p.timeout_ms))
            .header("authorization", format!("Bearer {key}")),
    )
    .await
    .map_err(|e| ("error", e.to_string()))?;
    match answer.status {
        200 => {}
        401 | 403 => {
            return Err((
                "invalid",
                format!("HTTP {}: the key was refused", answer.status),
            ))
        }
        429 => return Err(("rate_limited", "HTTP 429: rate limited".into())),
        s => return Err(("error", format!("HTTP {s}"))),
    }
    serde_json::from_str::<Value>(&answer.body)
        .ok()
        .and_then(|v| v.get("data").cloned())
        .filter(Value::is_object)
        .ok_or_else(|| ("error", format!("{path}: no `data` object in the answer")))
}

fn clamp(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

fn failed_row(label: &str, status: &str, error: String, now: DateTime<Utc>) -> CreditInsertRow {
    CreditInsertRow {
        provider: "openrouter".into(),
        key_label: label.into(),
        org_id: String::new(),
        balance_nusd: None,
        total_credits_nusd: 0,
        total_usage_nusd: 0,
        status: status.into(),
        error,
        observed_at: now,
    }
}

fn to_second(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(0).unwrap_or(t)
}

/// Polls `/api/v1/credits` with the management key and records the account balance.
pub async fn poll_openrouter_credits(
    state: &Context,
    now: DateTime<Utc>,
) -> JobResult<CreditInsertRow> {
    let now = to_second(now);
    let key = state.config().pollers.openrouter_management_key.expose();
    let row = match fetch(state, "/api/v1/credits", key).await {
        Err((status, error)) => failed_row(ACCOUNT_LABEL, status, error, now),
        Ok(data) => match (
            data.get("total_credits")
                .and_then(Nanos::from_json_usd)
                .map(i128::from),
            data.get("total_usage")
                .and_then(Nanos::from_json_usd)
                .map(i128::from),
        ) {
            (Some(credits), Some(usage)) => CreditInsertRow {
                provider: "openrouter".into(),
                key_label: ACCOUNT_LABEL.into(),
                org_id: String::new(),
                balance_nusd: Some(clamp(credits - usage)),
                total_credits_nusd: clamp(credits),
                total_usage_nusd: clamp(usage),
                status: "valid".into(),
                error: String::new(),
                observed_at: now,
            },
            _ => failed_row(
                ACCOUNT_LABEL,
                "error",
                "/api/v1/credits: no numeric total_credits and total_usage".into(),
                now,
            ),
        },
    };
    credits::insert(state.client(), std::slice::from_ref(&row)).await?;
    Ok(row)
}

/// Polls `/api/v1/key`, records the key's row and, when the answer has `usage_daily`, the
/// same-day reconciliation snapshot.
pub async fn poll_openrouter_key(
    state: &Context,
    now: DateTime<Utc>,
) -> JobResult<(CreditInsertRow, Option<ReconciliationRow>)> {
    let now = to_second(now);
    let Some(key) = openrouter_key(state) else {
        return Ok((
            failed_row(
                KEY_LABEL,
                "error",
                "no OpenRouter key configured".into(),
                now,
            ),
            None,
        ));
    };
    let (row, usage_daily) = match fetch(state, "/api/v1/key", key).await {
        Err((status, error)) => (failed_row(KEY_LABEL, status, error, now), None),
        Ok(data) => {
            let usd = |k: &str| data.get(k).and_then(Nanos::from_json_usd).map(i128::from);
            match usd("usage") {
                None => (
                    failed_row(
                        KEY_LABEL,
                        "error",
                        "/api/v1/key: no numeric usage".into(),
                        now,
                    ),
                    None,
                ),
                Some(usage) => (
                    CreditInsertRow {
                        provider: "openrouter".into(),
                        key_label: KEY_LABEL.into(),
                        org_id: String::new(),
                        balance_nusd: usd("limit_remaining").map(clamp),
                        total_credits_nusd: usd("limit").map_or(0, clamp),
                        total_usage_nusd: clamp(usage),
                        status: "valid".into(),
                        error: String::new(),
                        observed_at: now,
                    },
                    usd("usage_daily"),
                ),
            }
        }
    };
    credits::insert(state.client(), std::slice::from_ref(&row)).await?;
    let snapshot = match usage_daily {
        Some(reported) => {
            let filter = Filter {
                scope: tollgate_clickhouse::Scope::AllOrgs,
                provider: Some("openrouter".into()),
                model: None,
            };
            // Hourly buckets from midnight up to the one holding `now`: what was recorded
            // until the poll, the span usage_daily covers.
            let recorded: i128 = crate::evaluator::usage::hourly_costs(
                state.client(),
                &filter,
                midnight(now.date_naive()),
                now + TimeDelta::seconds(1),
            )
            .await?
            .values()
            .sum();
            let r = reconciliation::row(
                "openrouter",
                now.date_naive(),
                recorded,
                reported,
                "openrouter_key_usage_daily",
                now,
            );
            reconciliation::write(state.client(), std::slice::from_ref(&r)).await?;
            Some(r)
        }
        None => None,
    };
    Ok((row, snapshot))
}

/// What one poll did.
#[derive(Debug, Default)]
pub struct PollReport {
    pub credits: Vec<CreditInsertRow>,
    pub snapshot: Option<ReconciliationRow>,
}

/// One poll of every provider with a key.
pub async fn poll_once(state: &Context, now: DateTime<Utc>) -> JobResult<PollReport> {
    let mut report = PollReport::default();
    if !state
        .config()
        .pollers
        .openrouter_management_key
        .expose()
        .is_empty()
    {
        report
            .credits
            .push(poll_openrouter_credits(state, now).await?);
    }
    if openrouter_key(state).is_some() {
        let (row, snapshot) = poll_openrouter_key(state, now).await?;
        report.credits.push(row);
        report.snapshot = snapshot;
    }
    for r in report.credits.iter().filter(|r| r.status != "valid") {
        tracing::warn!(provider = %r.provider, key = %r.key_label, status = %r.status, error = %r.error, "credit poll failed");
    }
    Ok(report)
}
