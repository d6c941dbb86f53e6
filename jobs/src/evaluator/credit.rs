//! Checks over provider money: `low_balance`, `credit_runway` and `cost_drift` (semantics in
//! the [module docs](super)).

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::Deserialize;
use serde_json::json;
use tollgate_clickhouse::clickhouse::{self, Row};
use tollgate_clickhouse::queries::{day_param, NamedQuery};
use tollgate_clickhouse::{read_query, Scope};
use uuid::Uuid;

use super::usage::{days_cost, dollars, usd};
use super::{midnight, Ctx, Finding, Rule};
use crate::error::JobResult;
use tollgate_clickhouse::reconciliation::{self, ReconciliationRow};
use tollgate_clickhouse::Filter;
use tollgate_forecast::Forecast;

const CREDIT_BALANCES: NamedQuery = NamedQuery {
    name: "admin/credit_balances",
    sql: include_str!("../../../clickhouse/queries/admin/credit_balances.sql"),
};

/// Complete days of spend the runway forecast is fitted on.
pub const RUNWAY_HISTORY_DAYS: i64 = 28;
/// Longest runway computed; beyond it the balance is considered safe.
pub const RUNWAY_HORIZON_DAYS: i64 = 365;

/// A row of `credit_balances.sql`.
#[derive(Clone, Debug, Row, Deserialize)]
pub struct BalanceRow {
    pub provider: String,
    pub key_label: String,
    pub org_id: String,
    /// Nano-USD.
    pub latest_balance_nusd: i64,
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    pub balance_observed_at: DateTime<Utc>,
}

/// The last known balances of the rule's provider (and key) that the rule's org may watch:
/// its own, plus the deployment's when it is an operator org.
async fn balances(ctx: &Ctx<'_>, rule: &Rule) -> JobResult<Vec<BalanceRow>> {
    let provider = rule.text("provider").unwrap_or_default();
    let operator = ctx.is_operator_org(rule.org());
    let orgs = if operator {
        "(org_id = ? OR org_id = '')"
    } else {
        "org_id = ?"
    };
    let sql = CREDIT_BALANCES.body().replace("{orgs}", orgs);
    let rows = read_query(ctx.state.client(), &sql)
        .bind(rule.org())
        .bind(provider)
        .fetch_all::<BalanceRow>()
        .await?;
    Ok(rows
        .into_iter()
        .filter(|b| rule.text("key_label").is_none_or(|k| k == b.key_label))
        .collect())
}

fn balance_scope(b: &BalanceRow) -> String {
    format!(
        "org={},provider={},key={}",
        if b.org_id.is_empty() { "*" } else { &b.org_id },
        b.provider,
        b.key_label
    )
}

fn observed(b: &BalanceRow) -> String {
    usage_core::rfc3339::format(&b.balance_observed_at).unwrap_or_default()
}

pub(super) async fn low_balance(ctx: &Ctx<'_>, rule: &Rule) -> JobResult<Vec<Finding>> {
    let threshold = rule.usd("threshold_usd")?;
    Ok(balances(ctx, rule)
        .await?
        .iter()
        .map(|b| {
            let balance = i128::from(b.latest_balance_nusd);
            Finding::new(
                balance_scope(b),
                "balance",
                balance < threshold,
                format!(
                    "{} balance of {} is {} (alert below {})",
                    b.provider,
                    b.key_label,
                    dollars(balance),
                    dollars(threshold)
                ),
                json!({
                    "provider": b.provider, "key_label": b.key_label, "balance_usd": usd(balance),
                    "threshold_usd": usd(threshold), "observed_at": observed(b),
                }),
            )
        })
        .collect())
}

/// Days until `balance` (USD) is spent at `forecast`'s daily burn, starting `now` (the rest of
/// today first), as a fractional day; `None` beyond [`RUNWAY_HORIZON_DAYS`] or without burn.
pub fn runway_days(forecast: &Forecast, balance: f64, now: DateTime<Utc>) -> Option<f64> {
    if balance <= 0.0 {
        return Some(0.0);
    }
    let today = now.date_naive();
    let elapsed = (now - midnight(today)).as_seconds_f64() / 86_400.0;
    let mut left = balance;
    let mut days = 0.0;
    for k in 0..=RUNWAY_HORIZON_DAYS {
        let per_day = forecast.at(today + TimeDelta::days(k)).value;
        let share = if k == 0 { 1.0 - elapsed } else { 1.0 };
        let burn = per_day * share;
        if burn > 0.0 && burn >= left {
            return Some(days + left / per_day);
        }
        left -= burn;
        days += share;
    }
    None
}

pub(super) async fn credit_runway(ctx: &Ctx<'_>, rule: &Rule) -> JobResult<Vec<Finding>> {
    let min_days = rule.int("min_days")?;
    let today = ctx.today();
    let from = today - TimeDelta::days(RUNWAY_HISTORY_DAYS);
    let mut findings = Vec::new();
    for b in balances(ctx, rule).await? {
        let filter = Filter {
            scope: if b.org_id.is_empty() {
                Scope::AllOrgs
            } else {
                Scope::Org {
                    org_id: b.org_id.clone(),
                }
            },
            provider: Some(b.provider.clone()),
            model: None,
        };
        let costs = days_cost(ctx.state.client(), &filter, from, today).await?;
        let history: Vec<f64> = (0..RUNWAY_HISTORY_DAYS)
            .map(|i| {
                let d: NaiveDate = from + TimeDelta::days(i);
                costs.get(&d).map_or(0.0, |c| *c as f64 / 1e9)
            })
            .collect();
        let balance = b.latest_balance_nusd as f64 / 1e9;
        let first = history.iter().position(|c| *c > 0.0);
        let forecast =
            first.and_then(|i| Forecast::fit(from + TimeDelta::days(i as i64), &history[i..]).ok());
        let days = forecast
            .as_ref()
            .and_then(|f| runway_days(f, balance, ctx.now));
        let burn = forecast.as_ref().map_or(0.0, |f| f.at(today).value);
        let firing = days.is_some_and(|d| d < min_days as f64);
        let runs_out = days.map(|d| day_param(today + TimeDelta::days(d.floor() as i64)));
        findings.push(Finding::new(
            balance_scope(&b),
            "runway",
            firing,
            format!(
                "{} balance of {} runs out in {} days at {}/day (alert under {min_days} days)",
                b.provider,
                b.key_label,
                days.map_or("365+".to_string(), |d| format!("{d:.1}")),
                dollars((burn * 1e9) as i128)
            ),
            json!({
                "provider": b.provider, "key_label": b.key_label,
                "balance_usd": usd(i128::from(b.latest_balance_nusd)), "observed_at": observed(&b),
                "burn_per_day_usd": format!("{burn:.2}"),
                "runway_days": days.map(|d| (d * 10.0).round() / 10.0), "runs_out_on": runs_out,
                "min_days": min_days, "method": forecast.as_ref().map(|f| f.method),
                "history_days": first.map(|i| RUNWAY_HISTORY_DAYS as usize - i),
            }),
        ));
    }
    Ok(findings)
}

fn warn_once(rule_id: Uuid, org: &str) {
    static WARNED: OnceLock<Mutex<HashSet<Uuid>>> = OnceLock::new();
    let first = WARNED
        .get_or_init(|| Mutex::new(HashSet::new()))
        .lock()
        .map(|mut w| w.insert(rule_id))
        .unwrap_or(false);
    if first {
        tracing::warn!(%rule_id, org, "cost_drift rule of an org that is not in evaluator.operator_orgs: \
            reconciliation is deployment-wide, so this rule never fires");
    }
}

pub(super) async fn cost_drift(ctx: &Ctx<'_>, rule: &Rule) -> JobResult<Vec<Finding>> {
    if !ctx.is_operator_org(rule.org()) {
        warn_once(rule.row.rule_id, rule.org());
        return Ok(Vec::new());
    }
    let provider = rule.text("provider").unwrap_or_default();
    let threshold = rule.number("threshold_percent")?;
    let days = rule.int("days")?;
    let today = ctx.today();
    let from = today - TimeDelta::days(i64::try_from(days).unwrap_or(31));
    let scope = format!("provider={provider}");
    let window = format!("days={days}");
    let rows: Vec<ReconciliationRow> =
        reconciliation::range(ctx.state.client(), provider, from, today)
            .await?
            .into_iter()
            .filter(|r| r.status == "ok" && r.reported_nusd.is_some())
            .collect();
    if rows.is_empty() {
        return Ok(vec![Finding::unknown(
            scope,
            window,
            "no reconciliation of these days yet",
        )]);
    }
    let recorded: i128 = rows.iter().map(|r| i128::from(r.recorded_nusd)).sum();
    let reported: i128 = rows
        .iter()
        .filter_map(|r| r.reported_nusd.map(i128::from))
        .sum();
    let drift = reconciliation::drift_percent(recorded, reported);
    let checked: Vec<String> = rows.iter().map(|r| day_param(r.day)).collect();
    Ok(vec![Finding::new(
        scope,
        window,
        drift.abs() > threshold,
        format!(
            "Recorded {} cost differs from the provider's figure by {drift:.1}% over {} day(s) (alert above {threshold}%)",
            provider,
            rows.len()
        ),
        json!({
            "provider": provider, "drift_percent": (drift * 100.0).round() / 100.0,
            "recorded_usd": usd(recorded), "reported_usd": usd(reported),
            "threshold_percent": threshold, "days": checked,
            "meaning": "positive: the provider billed more than Tollgate recorded",
        }),
    )])
}

#[cfg(test)]
mod tests {
    use super::*;

    use usage_core::{utc, ymd};

    #[test]
    fn runway_of_a_flat_burn() {
        let f = Forecast::fit(ymd(2026, 2, 1), &[10.0; 14]).unwrap();
        let noon = utc(2026, 2, 15, 12, 0, 0);
        let d = runway_days(&f, 75.0, noon).unwrap();
        assert!((d - 7.5).abs() < 1e-9, "{d}");
        assert!((runway_days(&f, 3.0, noon).unwrap() - 0.3).abs() < 1e-9);
        assert_eq!(runway_days(&f, 0.0, noon), Some(0.0));
        assert_eq!(runway_days(&f, 1e9, noon), None);
    }
}
