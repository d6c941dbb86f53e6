//! Checks over usage: `spend_threshold`, `budget_threshold`, `error_rate`, `latency_p95`,
//! `unpriced_requests` and `spend_anomaly` (semantics in the [module docs](super)).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, TimeDelta, Timelike, Utc};
use serde::Deserialize;
use serde_json::json;
use tollgate_clickhouse::clickhouse::{Client, Row};
use tollgate_clickhouse::queries::{self, day_param, hour_param, NamedQuery};
use tollgate_clickhouse::{read_query, Scope};
use usage_core::Nanos;
use uuid::Uuid;

use super::{floor_hour, midnight, Ctx, Finding, Rule};
use crate::error::{JobError, JobResult};
use tollgate_clickhouse::budgets::BudgetRow;
use tollgate_clickhouse::Filter;
use usage_core::Period;

const WINDOW_STATS: NamedQuery = NamedQuery {
    name: "admin/window_stats",
    sql: include_str!("../../../clickhouse/queries/admin/window_stats.sql"),
};
const BUDGET_BY_ID: NamedQuery = NamedQuery {
    name: "admin/budget_by_id",
    sql: include_str!("../../../clickhouse/queries/admin/budget_by_id.sql"),
};
const BUDGET_SPEND: NamedQuery = NamedQuery {
    name: "admin/budget_spend",
    sql: include_str!("../../../clickhouse/queries/admin/budget_spend.sql"),
};

/// Days of history `spend_anomaly` compares with.
pub const ANOMALY_BASELINE_DAYS: i64 = 14;
/// Baseline days with any spend that `spend_anomaly` needs.
pub const ANOMALY_MIN_ACTIVE_DAYS: usize = 3;

/// Money for titles: `$12.35` (rounded to the cent).
pub fn dollars(nanos: i128) -> String {
    let cents = (nanos + nanos.signum() * 5_000_000) / 10_000_000;
    let sign = if cents < 0 { "-" } else { "" };
    let c = cents.unsigned_abs();
    format!("{sign}${}.{:02}", c / 100, c % 100)
}

/// Money for details: the exact decimal.
pub fn usd(nanos: i128) -> String {
    Nanos::clamped(nanos).to_string()
}

fn filter_of(rule: &Rule) -> Filter {
    Filter {
        scope: Scope::Org {
            org_id: rule.org().to_string(),
        },
        provider: rule.text("provider").map(str::to_string),
        model: rule.text("model").map(str::to_string),
    }
}

/// The scope part of a key for the provider/model filters.
fn filter_scope(rule: &Rule) -> String {
    format!(
        "provider={},model={}",
        rule.text("provider").unwrap_or("*"),
        rule.text("model").unwrap_or("*")
    )
}

/// ` (openai, gpt-4o)` for titles; empty without filters.
fn filter_label(rule: &Rule) -> String {
    let parts: Vec<&str> = [rule.text("provider"), rule.text("model")]
        .into_iter()
        .flatten()
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

/// Cost per hour of `filter` in `[from, to)`.
pub(crate) async fn hourly_costs(
    client: &Client,
    filter: &Filter,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> JobResult<BTreeMap<DateTime<Utc>, i128>> {
    Ok(filter
        .query(client, &queries::HOURLY_TIMESERIES)
        .bind(hour_param(from))
        .bind(hour_param(to))
        .fetch_all::<queries::HourlyRow>()
        .await?
        .into_iter()
        .map(|r| (r.hour, r.cost_usd))
        .collect())
}

/// Cost of `filter` over the UTC days `[from, to)`.
pub(crate) async fn days_cost(
    client: &Client,
    filter: &Filter,
    from: NaiveDate,
    to: NaiveDate,
) -> JobResult<BTreeMap<NaiveDate, i128>> {
    Ok(filter
        .query(client, &queries::DAILY_OVERVIEW)
        .bind(day_param(from))
        .bind(day_param(to))
        .fetch_all::<queries::DailyOverviewRow>()
        .await?
        .into_iter()
        .map(|r| (r.day, r.cost_usd))
        .collect())
}

pub(super) async fn spend_threshold(ctx: &Ctx<'_>, rule: &Rule) -> JobResult<Vec<Finding>> {
    let client = ctx.state.client();
    let threshold = rule.usd("threshold_usd")?;
    let window = rule.text("window").unwrap_or("day");
    let filter = filter_of(rule);
    let (label, period_start, spent) = match window {
        "hour" => {
            let h = floor_hour(ctx.now);
            let costs = hourly_costs(client, &filter, h, h + TimeDelta::hours(1)).await?;
            (
                format!("hour={}", hour_param(h)),
                hour_param(h),
                costs.values().sum::<i128>(),
            )
        }
        "day" | "week" | "month" => {
            let period = match window {
                "day" => Period::Daily,
                "week" => Period::Weekly,
                _ => Period::Monthly,
            };
            let (start, end) = period.bounds(ctx.today());
            let costs = days_cost(client, &filter, start, end).await?;
            (
                format!("{window}={}", day_param(start)),
                day_param(start),
                costs.values().sum::<i128>(),
            )
        }
        other => {
            return Err(JobError::BadStoredRow(format!(
                "alert rule {}: unknown window `{other}`",
                rule.row.rule_id
            )))
        }
    };
    let firing = spent >= threshold;
    let what = match window {
        "hour" => "Hourly",
        "day" => "Daily",
        "week" => "Weekly",
        _ => "Monthly",
    };
    Ok(vec![Finding::new(
        filter_scope(rule),
        label,
        firing,
        format!(
            "{what} spend {} reached {}{}",
            dollars(spent),
            dollars(threshold),
            filter_label(rule)
        ),
        json!({
            "spent_usd": usd(spent), "threshold_usd": usd(threshold), "window": window,
            "period_start": period_start, "provider": rule.text("provider"), "model": rule.text("model"),
        }),
    )])
}

/// A row of `budget_spend.sql`.
#[derive(Debug, Row, Deserialize)]
struct BudgetSpendRow {
    /// Nano-USD (`Decimal(38,9)`).
    cost_usd: i128,
    #[allow(dead_code)]
    requests: u64,
}

pub(super) async fn budget_threshold(ctx: &Ctx<'_>, rule: &Rule) -> JobResult<Vec<Finding>> {
    let client = ctx.state.client();
    let budget_id = rule
        .text("budget_id")
        .and_then(|t| Uuid::parse_str(t).ok())
        .ok_or_else(|| {
            JobError::BadStoredRow(format!("alert rule {}: no budget_id", rule.row.rule_id))
        })?;
    let percent = rule.int("percent")?;
    let org = Scope::Org {
        org_id: rule.org().to_string(),
    };
    let Some(budget) = BUDGET_BY_ID
        .scoped(client, &org)
        .bind(budget_id.to_string())
        .fetch_optional::<BudgetRow>()
        .await?
        .filter(|b| b.enabled != 0)
    else {
        return Ok(Vec::new()); // deleted or disabled: nothing to watch
    };
    let period = match budget.period.as_str() {
        "daily" => Period::Daily,
        "weekly" => Period::Weekly,
        "monthly" => Period::Monthly,
        other => {
            return Err(JobError::BadStoredRow(format!(
                "budget {budget_id} has an unknown period `{other}`"
            )))
        }
    };
    let usage_scope = match budget.scope.as_str() {
        "org_user" => Scope::OrgUser {
            org_id: budget.org_id.clone(),
            user_id: budget.user_id.clone(),
        },
        "app" => Scope::OrgApp {
            org_id: budget.org_id.clone(),
            app_id: budget.app_id.clone(),
        },
        _ => Scope::Org {
            org_id: budget.org_id.clone(),
        },
    };
    let (start, end) = period.bounds(ctx.today());
    let spent = BUDGET_SPEND
        .scoped(client, &usage_scope)
        .bind(day_param(start))
        .bind(day_param(end))
        .fetch_one::<BudgetSpendRow>()
        .await?
        .cost_usd;
    let limit = i128::from(budget.limit_nusd).max(1);
    let firing = spent.saturating_mul(100) >= limit * i128::from(percent);
    let used = (spent.saturating_mul(10_000) / limit) as f64 / 100.0;
    Ok(vec![Finding::new(
        format!("budget={budget_id}"),
        format!("{}={}", period.as_str(), day_param(start)),
        firing,
        format!(
            "Budget \"{}\" at {used}% of {} ({} spent; alert at {percent}%)",
            budget.name,
            dollars(limit),
            dollars(spent)
        ),
        json!({
            "budget_id": budget_id, "budget_name": budget.name, "period": period.as_str(),
            "period_start": day_param(start), "limit_usd": usd(limit), "spent_usd": usd(spent),
            "percent_used": used, "alert_percent": percent, "mode": budget.mode,
        }),
    )])
}

/// A row of `window_stats.sql`.
#[derive(Clone, Debug, PartialEq, Row, Deserialize)]
pub struct WindowStatsRow {
    pub requests: u64,
    pub errors: u64,
    pub unpriced_requests: u64,
    pub ok_requests: u64,
    pub latency_p95_ms: f64,
}

/// Calls of the rule's org (and provider/model filters) in the last `minutes` before now.
async fn window_stats(
    ctx: &Ctx<'_>,
    rule: &Rule,
    minutes: u64,
    filters: bool,
) -> JobResult<WindowStatsRow> {
    let mut predicate = String::from("org_id = ?");
    let mut values = vec![rule.org().to_string()];
    if filters {
        if let Some(p) = rule.text("provider") {
            predicate.push_str(" AND provider = ?");
            values.push(p.to_string());
        }
        if let Some(m) = rule.text("model") {
            // Either name: what the app asked for or what the provider served.
            predicate.push_str(" AND (model_requested = ? OR model_served = ?)");
            values.push(m.to_string());
            values.push(m.to_string());
        }
    }
    let sql = WINDOW_STATS.body().replace("{scope}", &predicate);
    let mut q = read_query(ctx.state.client(), &sql);
    for v in &values {
        q = q.bind(v.as_str());
    }
    let from = ctx.now - TimeDelta::minutes(i64::try_from(minutes).unwrap_or(1440));
    Ok(q.bind(hour_param(from))
        .bind(hour_param(ctx.now))
        .fetch_one::<WindowStatsRow>()
        .await?)
}

pub(super) async fn error_rate(ctx: &Ctx<'_>, rule: &Rule) -> JobResult<Vec<Finding>> {
    let threshold = rule.number("threshold_percent")?;
    let minutes = rule.int("window_minutes")?;
    let min_requests = rule.int("min_requests")?;
    let s = window_stats(ctx, rule, minutes, true).await?;
    let rate = if s.requests == 0 {
        0.0
    } else {
        s.errors as f64 * 100.0 / s.requests as f64
    };
    let firing = s.requests >= min_requests && rate >= threshold;
    Ok(vec![Finding::new(
        filter_scope(rule),
        format!("{minutes}m"),
        firing,
        format!(
            "Error rate {:.1}% over the last {minutes} min ({} of {} calls; alert at {threshold}%){}",
            rate,
            s.errors,
            s.requests,
            filter_label(rule)
        ),
        json!({
            "error_rate_percent": (rate * 100.0).round() / 100.0, "errors": s.errors, "requests": s.requests,
            "threshold_percent": threshold, "window_minutes": minutes, "min_requests": min_requests,
            "provider": rule.text("provider"), "model": rule.text("model"),
        }),
    )])
}

pub(super) async fn latency_p95(ctx: &Ctx<'_>, rule: &Rule) -> JobResult<Vec<Finding>> {
    let threshold = rule.int("threshold_ms")?;
    let minutes = rule.int("window_minutes")?;
    let min_requests = rule.int("min_requests")?;
    let s = window_stats(ctx, rule, minutes, true).await?;
    let firing = s.ok_requests >= min_requests && s.latency_p95_ms >= threshold as f64;
    Ok(vec![Finding::new(
        filter_scope(rule),
        format!("{minutes}m"),
        firing,
        format!(
            "p95 latency {:.0} ms over the last {minutes} min ({} successful calls; alert at {threshold} ms){}",
            s.latency_p95_ms,
            s.ok_requests,
            filter_label(rule)
        ),
        json!({
            "latency_p95_ms": s.latency_p95_ms.round(), "successful_requests": s.ok_requests,
            "threshold_ms": threshold, "window_minutes": minutes, "min_requests": min_requests,
            "provider": rule.text("provider"), "model": rule.text("model"),
        }),
    )])
}

pub(super) async fn unpriced_requests(ctx: &Ctx<'_>, rule: &Rule) -> JobResult<Vec<Finding>> {
    let threshold = rule.int("threshold_count")?;
    let minutes = rule.int("window_minutes")?;
    let s = window_stats(ctx, rule, minutes, false).await?;
    Ok(vec![Finding::new(
        format!("org={}", rule.org()),
        format!("{minutes}m"),
        s.unpriced_requests >= threshold,
        format!(
            "{} calls without a price in the last {minutes} min (their cost is unknown, not $0)",
            s.unpriced_requests
        ),
        json!({
            "unpriced_requests": s.unpriced_requests, "requests": s.requests,
            "threshold_count": threshold, "window_minutes": minutes,
        }),
    )])
}

const REJECTS_COUNT: &str = include_str!("../../../clickhouse/queries/admin/rejects_count.sql");

/// Records of the rule's org that the collectors refused (and kept in `usage_rejects` for
/// replay) in the last `window_minutes`: a usage record that never counts anywhere else.
pub(super) async fn records_rejected(ctx: &Ctx<'_>, rule: &Rule) -> JobResult<Vec<Finding>> {
    let threshold = rule.int("threshold_count")?;
    let minutes = rule.int("window_minutes")?;
    let from = ctx.now - TimeDelta::minutes(i64::try_from(minutes).unwrap_or(1440));
    let sql = NamedQuery {
        name: "rejects_count",
        sql: REJECTS_COUNT,
    }
    .body();
    let rejected: u64 = read_query(ctx.state.client(), &sql)
        .bind(rule.org())
        .bind(hour_param(from))
        .bind(hour_param(ctx.now))
        .fetch_one()
        .await?;
    Ok(vec![Finding::new(
        format!("org={}", rule.org()),
        format!("{minutes}m"),
        rejected >= threshold,
        format!(
            "{rejected} usage records refused by the collectors in the last {minutes} min (kept in usage_rejects for replay; they count nowhere else until replayed)"
        ),
        json!({
            "records_rejected": rejected, "threshold_count": threshold, "window_minutes": minutes,
        }),
    )])
}

/// Mean, and the sample standard deviation floored at 10% of the mean and at one cent.
pub fn baseline(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    if values.is_empty() {
        return (0.0, 0.01);
    }
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt().max(0.1 * mean).max(0.01))
}

pub(super) async fn spend_anomaly(ctx: &Ctx<'_>, rule: &Rule) -> JobResult<Vec<Finding>> {
    let window = rule.text("window").unwrap_or("day");
    let sensitivity = rule.number("sensitivity")?;
    let min_spend = rule.usd("min_spend_usd")?;
    let filter = Filter {
        model: None,
        ..filter_of(rule)
    };
    let scope = format!("provider={}", rule.text("provider").unwrap_or("*"));
    let today = midnight(ctx.today());
    let end = floor_hour(ctx.now);
    // [from, to) of the span compared, on day `k` days back.
    let (label, span_from, span_to) = match window {
        "hour" => {
            let from = end - TimeDelta::hours(1);
            (format!("hour={}", hour_param(from)), from, end)
        }
        _ => (format!("day={}", day_param(ctx.today())), today, end),
    };
    if span_to <= span_from {
        return Ok(vec![Finding::unknown(
            scope,
            label,
            "no complete hour yet today",
        )]);
    }
    let history_from = midnight(span_from.date_naive()) - TimeDelta::days(ANOMALY_BASELINE_DAYS);
    let costs = hourly_costs(ctx.state.client(), &filter, history_from, end).await?;
    let sum = |from: DateTime<Utc>, to: DateTime<Utc>| -> i128 {
        costs.range(from..to).map(|(_, c)| *c).sum()
    };
    let current = sum(span_from, span_to);
    let mut past = Vec::new();
    let mut active_days = 0;
    for k in 1..=ANOMALY_BASELINE_DAYS {
        let shift = TimeDelta::days(k);
        past.push(sum(span_from - shift, span_to - shift) as f64 / 1e9);
        let day = midnight(span_from.date_naive()) - shift;
        if sum(day, day + TimeDelta::days(1)) > 0 {
            active_days += 1;
        }
    }
    if active_days < ANOMALY_MIN_ACTIVE_DAYS {
        return Ok(vec![Finding::unknown(
            scope,
            label,
            "fewer than 3 of the 14 days before have any spend",
        )]);
    }
    let (mean, sigma) = baseline(&past);
    let z = (current as f64 / 1e9 - mean) / sigma;
    let firing = z >= sensitivity && current >= min_spend;
    let span = if window == "hour" {
        "the last hour".to_string()
    } else {
        format!("today until {:02}:00 UTC", span_to.hour())
    };
    Ok(vec![Finding::new(
        scope,
        label,
        firing,
        format!(
            "Unusual spend: {} {span}, usually {} (z = {z:.1}){}",
            dollars(current),
            dollars((mean * 1e9) as i128),
            rule.text("provider")
                .map(|p| format!(" ({p})"))
                .unwrap_or_default()
        ),
        json!({
            "spent_usd": usd(current), "baseline_mean_usd": format!("{mean:.2}"),
            "baseline_stddev_usd": format!("{sigma:.2}"), "z_score": (z * 100.0).round() / 100.0,
            "sensitivity": sensitivity, "min_spend_usd": usd(min_spend),
            "span_from": hour_param(span_from), "span_to": hour_param(span_to),
            "baseline_days": ANOMALY_BASELINE_DAYS, "provider": rule.text("provider"),
        }),
    )])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_for_people() {
        assert_eq!(dollars(12_345_000_000), "$12.35");
        assert_eq!(dollars(0), "$0.00");
        assert_eq!(dollars(-1_004_000_000), "-$1.00");
        assert_eq!(usd(1_500_000_000), "1.500000000");
    }

    #[test]
    fn baseline_floors_the_spread() {
        let (m, s) = baseline(&[10.0; 14]);
        assert_eq!((m, s), (10.0, 1.0));
        let (m, s) = baseline(&[0.0; 14]);
        assert_eq!((m, s), (0.0, 0.01));
        let (m, s) = baseline(&[8.0, 12.0]);
        assert!((m - 10.0).abs() < 1e-9 && (s - 8f64.sqrt()).abs() < 1e-9);
    }
}
