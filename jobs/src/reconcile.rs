//! Bill reconciliation: what Tollgate recorded per provider and UTC day against what the
//! provider itself reports, stored in `cost_reconciliation` (migration 0007) and watched by
//! `cost_drift` rules ([`crate::evaluator`]).
//!
//! - **OpenAI** — the Costs API, `GET {openai_base_url}/v1/organization/costs?start_time=…&
//!   end_time=…&bucket_width=1d` with the admin key: one bucket per UTC day, the day's figure is
//!   the sum of `data[].results[].amount.value` (USD). [`reconcile_once`] (daily, and once at
//!   start) re-checks the last `pollers.reconcile_lookback_days` complete days, because costs
//!   settle late; a later check of a day replaces the earlier one.
//! - **OpenRouter** — has no per-day history API: `GET /api/v1/key` reports `usage_daily`, the
//!   key's spend in the *current* UTC day. Each credit poll ([`crate::pollers`], every
//!   `pollers.interval_secs`) stores a same-day snapshot: that figure against what Tollgate
//!   recorded from midnight until the poll (hourly rollup, current hour included). The
//!   day's final row is the last poll before midnight, so spend in the minutes after the last
//!   poll is missing from *both* sides of that comparison; what is left is the difference the
//!   two counted in the same span (plus records still in flight from the edge, seconds).
//!
//! Recorded cost is the deployment's (every org): provider keys are the deployment's, so their
//! bills cover every org. Spend through the same provider account that bypasses Tollgate
//! (another app with the same key or organisation) shows up as drift — which is the point.
//! `drift_percent` is `(reported − recorded) ÷ reported × 100`: positive when the provider
//! billed more than Tollgate recorded. A fetch that fails writes nothing (an earlier good
//! check of a day must not be replaced by an error); the failure is logged and reported.

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde_json::Value;
use tollgate_clickhouse::clickhouse::Client;
use tollgate_clickhouse::Scope;
use usage_core::Nanos;

use crate::error::JobResult;
use crate::evaluator::midnight;
use crate::evaluator::usage::days_cost;
use crate::outbound::{self, Request};
use crate::Context;
pub use tollgate_clickhouse::reconciliation::{
    drift_percent, range, row, write, ReconciliationRow,
};
use tollgate_clickhouse::Filter;

/// Most pages of the Costs API one reconciliation follows.
const MAX_PAGES: usize = 20;

/// What the deployment recorded for `provider` per UTC day of `[from, to)` (every org).
pub async fn recorded_per_day(
    client: &Client,
    provider: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> JobResult<BTreeMap<NaiveDate, i128>> {
    let filter = Filter {
        scope: Scope::AllOrgs,
        provider: Some(provider.to_string()),
        model: None,
    };
    days_cost(client, &filter, from, to).await
}

/// OpenAI's cost per UTC day of `[from, to)` from the Costs API.
pub async fn openai_costs(
    state: &Context,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<BTreeMap<NaiveDate, i128>, String> {
    let p = &state.config().pollers;
    let base = p.openai_base_url.trim_end_matches('/');
    let days = (to - from).num_days().max(1);
    let mut out: BTreeMap<NaiveDate, i128> = BTreeMap::new();
    let mut page: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut url = format!(
            "{base}/v1/organization/costs?start_time={}&end_time={}&bucket_width=1d&limit={days}",
            midnight(from).timestamp(),
            midnight(to).timestamp()
        );
        if let Some(cursor) = &page {
            url.push_str("&page=");
            url.extend(form_urlencoded::byte_serialize(cursor.as_bytes()));
        }
        let answer = outbound::send(
            Request::get(url, StdDuration::from_millis(p.timeout_ms)).header(
                "authorization",
                format!("Bearer {}", p.openai_admin_key.expose()),
            ),
        )
        .await
        .map_err(|e| format!("OpenAI Costs API: {e}"))?;
        match answer.status {
            200 => {}
            401 | 403 => {
                return Err(format!(
                    "OpenAI Costs API: the admin key was refused (HTTP {})",
                    answer.status
                ))
            }
            429 => return Err("OpenAI Costs API: rate limited (HTTP 429)".into()),
            s => return Err(format!("OpenAI Costs API: HTTP {s}")),
        }
        let body: Value = serde_json::from_str(&answer.body)
            .map_err(|e| format!("OpenAI Costs API: not JSON: {e}"))?;
        let buckets = body
            .get("data")
            .and_then(Value::as_array)
            .ok_or("OpenAI Costs API: no `data` array")?;
        for b in buckets {
            let start = b
                .get("start_time")
                .and_then(Value::as_i64)
                .and_then(DateTime::from_timestamp_secs)
                .ok_or("OpenAI Costs API: a bucket without `start_time`")?;
            let mut day_total = 0i128;
            for r in b
                .get("results")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let amount = r.get("amount").unwrap_or(&Value::Null);
                let currency = amount
                    .get("currency")
                    .and_then(Value::as_str)
                    .unwrap_or("usd");
                if !currency.eq_ignore_ascii_case("usd") {
                    return Err(format!(
                        "OpenAI Costs API: amounts in `{currency}`, not USD"
                    ));
                }
                day_total += amount
                    .get("value")
                    .and_then(Nanos::from_json_usd)
                    .map(i128::from)
                    .ok_or("OpenAI Costs API: a result without `amount.value`")?;
            }
            *out.entry(start.date_naive()).or_default() += day_total;
        }
        page = match (
            body.get("has_more").and_then(Value::as_bool),
            body.get("next_page").and_then(Value::as_str),
        ) {
            (Some(true), Some(next)) => Some(next.to_string()),
            _ => break,
        };
    }
    Ok(out)
}

/// What one reconciliation did.
#[derive(Debug, Default)]
pub struct ReconcileReport {
    /// The rows written.
    pub rows: Vec<ReconciliationRow>,
    /// Providers that could not be read, and why.
    pub errors: Vec<String>,
}

/// Re-checks the last `pollers.reconcile_lookback_days` complete UTC days before `now` for
/// OpenAI (with an admin key), and takes an OpenRouter same-day snapshot (with a key).
pub async fn reconcile_once(state: &Context, now: DateTime<Utc>) -> JobResult<ReconcileReport> {
    let p = &state.config().pollers;
    let client = state.client();
    let mut report = ReconcileReport::default();
    let today = now.date_naive();
    if !p.openai_admin_key.expose().is_empty() {
        let from = today - TimeDelta::days(i64::from(p.reconcile_lookback_days));
        match openai_costs(state, from, today).await {
            Ok(reported) => {
                let recorded = recorded_per_day(client, "openai", from, today).await?;
                let mut d = from;
                while d < today {
                    report.rows.push(row(
                        "openai",
                        d,
                        recorded.get(&d).copied().unwrap_or(0),
                        reported.get(&d).copied().unwrap_or(0),
                        "openai_costs",
                        now,
                    ));
                    d += TimeDelta::days(1);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reconciliation: cannot read OpenAI costs");
                report.errors.push(e);
            }
        }
    }
    write(client, &report.rows).await?;
    if crate::pollers::openrouter_key(state).is_some() {
        match crate::pollers::poll_openrouter_key(state, now).await? {
            (_, Some(snapshot)) => report.rows.push(snapshot),
            (credit, None) => report.errors.push(format!(
                "OpenRouter /api/v1/key: {} {}",
                credit.status, credit.error
            )),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_is_relative_to_the_bill() {
        assert_eq!(drift_percent(90, 100), 10.0);
        assert_eq!(drift_percent(110, 100), -10.0);
        assert_eq!(drift_percent(0, 0), 0.0);
        assert_eq!(drift_percent(5, 0), -100.0);
    }
}
