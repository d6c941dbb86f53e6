//! The alert evaluator: turns alert rules into alerts — once, with the rule's severity, and
//! resolved again when the condition clears — in exactly one running instance.
//!
//! # Main types
//! - [`evaluate_once`] — one tick at an explicit clock: creates the default rules of orgs it
//!   has not seen ([`crate::default_rules`]), reads every enabled rule, asks its
//!   kind's check for [`Finding`]s, reconciles them with the alerts already there
//!   ([`plan`], pure), writes the changes with [`tollgate_clickhouse::alerts::write_alert`] and sends the
//!   notifications ([`crate::notify`]). Tests call it with the clock they need.
//! - [`Finding`] — what one check says about one *scope* (the provider/model/key/budget it
//!   looked at) in one *window* (the period or rolling window): [`Condition::Firing`],
//!   [`Condition::Clear`] or [`Condition::Unknown`] (no data to judge: the alert, if any, stays
//!   as it is).
//! - [`crate::lease::Lease`] — which instance runs the background jobs; [`crate::runner`] — the
//!   loops ([`crate::spawn`]): this evaluator, the credit pollers, the reconciliation and the
//!   integrity pass.
//!
//! # Rule kinds
//! `params` are defined and checked by [`crate::rules`]; windows are UTC.
//!
//! | kind | fires when | scope · window of the key | reads |
//! |---|---|---|---|
//! | `spend_threshold` | spend in the current hour/day/week/month ≥ `threshold_usd` | provider, model · period start | rollups |
//! | `budget_threshold` | budget's period spend ≥ `percent` % of its limit (disabled or deleted budget: nothing) | budget · period start | `usage_daily` |
//! | `error_rate` | ≥ `min_requests` calls in the last `window_minutes` and errors ≥ `threshold_percent` % of them | provider, model · `<n>m` | `usage_events` |
//! | `latency_p95` | ≥ `min_requests` successful calls and their p95 latency ≥ `threshold_ms` | provider, model · `<n>m` | `usage_events` |
//! | `unpriced_requests` | ≥ `threshold_count` calls priced `unpriced` in the last `window_minutes` | org · `<n>m` | `usage_events` |
//! | `spend_anomaly` | z-score of today so far (or the last complete hour) against the same hours of the 14 days before ≥ `sensitivity`, and spend ≥ `min_spend_usd` | provider · day / hour | `usage_hourly` |
//! | `low_balance` | a key's last known balance < `threshold_usd` | org, provider, key · `balance` | `provider_credits` |
//! | `credit_runway` | days until a balance reaches zero at the forecast burn < `min_days` | org, provider, key · `runway` | `provider_credits`, `usage_daily` |
//! | `cost_drift` | recorded vs provider-reported cost over the last `days` complete days differs by more than `threshold_percent` % | provider · `days=<n>` | `cost_reconciliation` |
//! | `records_rejected` | ≥ `threshold_count` of the org's usage records refused by the collectors (kept in `usage_rejects` for replay) in the last `window_minutes` | org · `<n>m` | `usage_rejects` |
//!
//! Details of the checks that are not obvious:
//! - Calls the edge blocked for a budget are not errors (`error_rate` leaves them out of both
//!   counts); latency is of successful calls. A window with fewer than `min_requests` calls is
//!   clear: too few calls to judge.
//! - `spend_anomaly` compares *complete* hours: with `window = day`, today from midnight to the
//!   last full hour against the same span on each of the 14 days before (mean and sample
//!   standard deviation, the latter floored at 10 % of the mean and at one cent, so a flat
//!   history does not make every cent an anomaly); with `window = hour`, the last full hour
//!   against the same hour of those days. It needs 3 of those days with any spend, otherwise
//!   it is `Unknown`. Only rises fire.
//! - `credit_runway` burns at the forecast of [`tollgate_forecast`] (trend and weekly
//!   seasonality, fitted on up to 28 complete days of the provider's spend in the balance's
//!   scope: the balance's org, or every org for a deployment-wide balance), starting with the
//!   part of today that is left; the runway is the fractional day on which the cumulative
//!   forecast reaches the balance (a flat $10/day against $75 at noon: 7.5 days). No spend in
//!   the history, or no run-out within 365 days, is clear.
//! - Balances and reconciliation that belong to the deployment rather than to an org (polled
//!   provider keys, admins' manual entries without an org, every `cost_drift`) are watched
//!   only by rules of `evaluator.operator_orgs`: an org admin does not learn the deployment's
//!   figures from an alert. A `cost_drift` rule elsewhere never fires (logged once).
//!
//! # One alert per rule × scope × window
//! Each finding has the deterministic `dedup_key` `<rule_id>|<scope>|<window>`
//! ([`dedup_key`]), e.g. `…|provider=openai,model=*|day=2026-03-04` or `…|org=acme|60m`. The
//! newest alert of a key decides:
//!
//! | newest alert of the key | firing | clear | unknown | key not reported (window over) |
//! |---|---|---|---|---|
//! | none, or resolved by the evaluator | open a new alert | — | — | — |
//! | open / acknowledged | keep it (no new notification) | resolve | keep | resolve |
//! | resolved by a person, condition not yet cleared | keep quiet | mark cleared | — | — |
//! | resolved by a person, marked cleared | open a new alert | — | — | — |
//!
//! So ticks never duplicate an alert; a person's acknowledgement stays on the row (who and
//! when) until the evaluator resolves it; and a person who resolves an alert whose condition
//! still holds silences it until the condition has cleared once. Auto-resolutions record
//! `resolved_by = "evaluator"` and add a `resolution` object (reason, last observation) to the
//! details. Alerts of rules that were disabled or deleted are resolved too; alerts of a rule
//! whose check failed this tick are left alone (a failed query must not resolve anything).
//! If duplicates of a key ever exist (see the lease's race below) the oldest is kept and the
//! others are resolved as duplicates. New alert ids are derived from the key and the minute,
//! so two instances that open the same alert in the same minute write the same row.
//!
//! Alerts the edge raised for a budget's soft threshold have no rule (`rule_id` nil): the
//! evaluator never resolves them as "rule gone"; they stay open until a person acknowledges
//! or resolves them, or until the budget period named in their details is over (resolved
//! then as "window ended").
//!
//! Writes are new versions of `alerts` rows (ReplacingMergeTree), versioned by the wall clock
//! like every other writer's. The alerts are read after the checks, right before the write,
//! which keeps the window in which a person's acknowledgement can be overwritten to
//! milliseconds.
//!
//! # Exactly one evaluator
//! Every instance runs the loops; before each run a loop asks the shared [`crate::lease::Lease`]
//! (table `job_leases`, one row per take-over or renewal, the newest version wins). An
//! instance may write itself into the lease when the lease is free — never taken, or
//! `expires_at` passed by the *server's* clock, so instance clocks do not matter — or already
//! its own; it then holds it for `evaluator.lease_secs`. After taking a free lease it waits
//! `evaluator.lease_settle_ms` and reads back: it runs only if the newest version is its own.
//! Two instances that find the lease free at the same moment both write; the read-back makes
//! the one with the lower version stand down.
//!
//! The race window, honestly: instance B reads "free", stalls for longer than the settle
//! time (a pause, a slow network), and then writes *after* instance A has already read back
//! and started. Both run until B's next renewal, when A sees B's newer version and stops. In
//! that overlap a finding may be turned into two alerts (the same id if both ticks fall in the
//! same minute, otherwise a duplicate that the next tick resolves) and be notified twice. A
//! strict mutex would need a coordination service (ZooKeeper/Keeper), which 18.16 and a
//! single-node install do not have. A holder that dies stops renewing; another instance takes
//! over within `lease_secs`. On shutdown the holder releases the lease. On a cluster the lease
//! table is replicated asynchronously, so replication lag adds to the race window: point the
//! instances at one node (not a load balancer over replicas) if that matters.

pub mod credit;
pub mod usage;

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta, Timelike, Utc};
use serde_json::{json, Map, Value};
use tollgate_clickhouse::queries::{hour_param, NamedQuery};
use tollgate_clickhouse::read_query;
use uuid::Uuid;

use crate::error::{JobError, JobResult};
use crate::notify::{self, DeliveryResult, Event, Notice};
use crate::rules::{self, RuleKind};
use crate::Context;
use tollgate_clickhouse::alerts::{write_alert, AlertRow, NewAlert, RuleRow};
use tollgate_clickhouse::row_version;

/// Who the evaluator's writes name (`resolved_by`).
pub const WHO: &str = "evaluator";

/// How far back resolved alerts are read: a person's resolution silences a still-firing
/// condition at most this long.
pub const RESOLVED_MEMORY_DAYS: i64 = 35;

const EVALUATOR_RULES: NamedQuery = NamedQuery {
    name: "admin/evaluator_rules",
    sql: include_str!("../../../clickhouse/queries/admin/evaluator_rules.sql"),
};
const EVALUATOR_ALERTS: NamedQuery = NamedQuery {
    name: "admin/evaluator_alerts",
    sql: include_str!("../../../clickhouse/queries/admin/evaluator_alerts.sql"),
};

/// What a check concluded about one scope × window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    Firing,
    Clear,
    /// Not enough data to say: an existing alert stays as it is, none is opened.
    Unknown,
}

/// One check's conclusion about one scope in one window.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    /// What was looked at, as `key=value` pairs: `provider=openai,model=*`.
    pub scope: String,
    /// When: `day=2026-03-04`, `15m`, `balance`.
    pub window: String,
    pub condition: Condition,
    /// The alert's title when this opens one.
    pub title: String,
    /// The observed values (the alert's `details`).
    pub details: Value,
}

impl Finding {
    pub fn new(
        scope: impl Into<String>,
        window: impl Into<String>,
        firing: bool,
        title: impl Into<String>,
        details: Value,
    ) -> Finding {
        Finding {
            scope: scope.into(),
            window: window.into(),
            condition: if firing {
                Condition::Firing
            } else {
                Condition::Clear
            },
            title: title.into(),
            details,
        }
    }

    pub fn unknown(scope: impl Into<String>, window: impl Into<String>, why: &str) -> Finding {
        Finding {
            scope: scope.into(),
            window: window.into(),
            condition: Condition::Unknown,
            title: String::new(),
            details: json!({ "unknown": why }),
        }
    }
}

/// The key of "the same condition still firing": `<rule_id>|<scope>|<window>`.
pub fn dedup_key(rule_id: Uuid, scope: &str, window: &str) -> String {
    format!("{rule_id}|{scope}|{window}")
}

/// A rule as the evaluator reads it.
#[derive(Clone, Debug)]
pub struct Rule {
    pub row: RuleRow,
    pub kind: RuleKind,
    params: Map<String, Value>,
}

impl Rule {
    pub fn from_row(row: RuleRow) -> Result<Rule, String> {
        let kind =
            RuleKind::parse(&row.kind).ok_or_else(|| format!("unknown kind `{}`", row.kind))?;
        let stored = serde_json::from_str::<Value>(&row.params)
            .map_err(|e| format!("params are not JSON: {e}"))?;
        // The same check the API made when it wrote the rule (any provider: the API's list
        // may have changed since), which also fills in defaults a rule written by an older
        // build did not store.
        let params = match rules::validate_params(kind, stored, None) {
            Ok((Value::Object(m), _)) => m,
            Ok(_) => return Err("params are not a JSON object".into()),
            Err(e) => return Err(e.to_string()),
        };
        Ok(Rule { row, kind, params })
    }

    fn bad(&self, key: &str, what: &str) -> JobError {
        JobError::BadStoredRow(format!(
            "alert rule {}: params.{key} {what}",
            self.row.rule_id
        ))
    }

    /// An optional string parameter.
    pub fn text(&self, key: &str) -> Option<&str> {
        self.params.get(key).and_then(Value::as_str)
    }

    pub fn int(&self, key: &str) -> JobResult<u64> {
        self.params
            .get(key)
            .and_then(Value::as_u64)
            .ok_or_else(|| self.bad(key, "is not a whole number"))
    }

    pub fn number(&self, key: &str) -> JobResult<f64> {
        self.params
            .get(key)
            .and_then(Value::as_f64)
            .ok_or_else(|| self.bad(key, "is not a number"))
    }

    /// A USD parameter in nano-USD.
    pub fn usd(&self, key: &str) -> JobResult<i128> {
        self.text(key)
            .and_then(|t| usage_core::Nanos::parse_usd(t).ok())
            .map(|n| i128::from(n.get()))
            .ok_or_else(|| self.bad(key, "is not a USD amount"))
    }

    pub fn org(&self) -> &str {
        &self.row.org_id
    }
}

/// What a check may use: the app state and the tick's clock.
#[derive(Clone, Copy, Debug)]
pub struct Ctx<'a> {
    pub state: &'a Context,
    pub now: DateTime<Utc>,
}

impl Ctx<'_> {
    pub fn today(&self) -> NaiveDate {
        self.now.date_naive()
    }

    /// Whether rules of `org` watch deployment-wide provider data.
    pub fn is_operator_org(&self, org: &str) -> bool {
        self.state
            .config()
            .evaluator
            .operator_orgs
            .iter()
            .any(|o| o == org)
    }
}

/// Runs the check of `rule`'s kind.
pub async fn check(ctx: &Ctx<'_>, rule: &Rule) -> JobResult<Vec<Finding>> {
    match rule.kind {
        RuleKind::SpendThreshold => usage::spend_threshold(ctx, rule).await,
        RuleKind::BudgetThreshold => usage::budget_threshold(ctx, rule).await,
        RuleKind::ErrorRate => usage::error_rate(ctx, rule).await,
        RuleKind::LatencyP95 => usage::latency_p95(ctx, rule).await,
        RuleKind::UnpricedRequests => usage::unpriced_requests(ctx, rule).await,
        RuleKind::SpendAnomaly => usage::spend_anomaly(ctx, rule).await,
        RuleKind::LowBalance => credit::low_balance(ctx, rule).await,
        RuleKind::CreditRunway => credit::credit_runway(ctx, rule).await,
        RuleKind::CostDrift => credit::cost_drift(ctx, rule).await,
        RuleKind::RecordsRejected => usage::records_rejected(ctx, rule).await,
    }
}

/// What one tick did.
#[derive(Debug, Default)]
pub struct TickReport {
    /// Enabled rules seen.
    pub rules: usize,
    /// Alerts opened this tick.
    pub opened: Vec<AlertRow>,
    /// Alerts resolved by the evaluator this tick.
    pub resolved: Vec<AlertRow>,
    /// Rules whose check failed, and why (their alerts were left alone).
    pub failed: Vec<(Uuid, String)>,
    /// Every notification delivery of the tick.
    pub deliveries: Vec<DeliveryResult>,
}

/// A rule and what its check found this tick.
#[derive(Clone, Debug)]
pub struct Evaluated {
    pub rule: Rule,
    pub findings: Vec<Finding>,
}

/// Why the evaluator resolves an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Cleared,
    WindowEnded,
    RuleGone,
    Duplicate,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Cleared => "condition cleared",
            Reason::WindowEnded => "window ended (or what it watched is gone)",
            Reason::RuleGone => "rule disabled or deleted",
            Reason::Duplicate => "duplicate of an open alert with the same key",
        }
    }
}

/// One change the tick makes.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    Open(AlertRow),
    Resolve(AlertRow, Reason),
    /// A person resolved this alert while its condition held; the condition has now cleared
    /// (the row's details get `condition_cleared_at`), so the next firing opens a new alert.
    Rearm(AlertRow),
}

impl Change {
    pub fn row(&self) -> &AlertRow {
        match self {
            Change::Open(r) | Change::Resolve(r, _) | Change::Rearm(r) => r,
        }
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    usage_core::rfc3339::format(&t).unwrap_or_default()
}

fn with_details(row: &AlertRow, key: &str, value: Value) -> String {
    let mut details = match serde_json::from_str::<Value>(&row.details) {
        Ok(Value::Object(m)) => m,
        Ok(other) => Map::from_iter([("observed".to_string(), other)]),
        Err(_) => Map::from_iter([("observed".to_string(), Value::String(row.details.clone()))]),
    };
    details.insert(key.to_string(), value);
    Value::Object(details).to_string()
}

fn is_rearmed(row: &AlertRow) -> bool {
    serde_json::from_str::<Value>(&row.details)
        .ok()
        .is_some_and(|d| d.get("condition_cleared_at").is_some())
}

fn resolved_by_person(row: &AlertRow) -> bool {
    row.state == "resolved" && row.resolved_by != WHO
}

/// A new alert's id: derived from its rule, key and minute, so two instances that open the
/// same alert in the same minute write one row; a random id if that one is taken.
fn alert_id(rule_id: Uuid, key: &str, now: DateTime<Utc>, taken: &[&AlertRow]) -> Uuid {
    let minute = now.timestamp().div_euclid(60);
    let digest = usage_core::keys::hash_secret(&format!("{rule_id}\n{key}\n{minute}"));
    let derived = u128::from_str_radix(digest.get(..32).unwrap_or("0"), 16)
        .map(|n| {
            let mut b = n.to_be_bytes();
            b[6] = (b[6] & 0x0f) | 0x80; // version 8: custom
            b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
            Uuid::from_bytes(b)
        })
        .unwrap_or_else(|_| Uuid::new_v4());
    if taken.iter().any(|a| a.alert_id == derived) {
        Uuid::new_v4()
    } else {
        derived
    }
}

fn resolve(row: &AlertRow, reason: Reason, observed: Option<&Value>, now: DateTime<Utc>) -> Change {
    let mut r = row.clone();
    let mut resolution = json!({ "reason": reason.as_str(), "at": rfc3339(now) });
    if let Some(o) = observed {
        resolution["observed"] = o.clone();
    }
    r.details = with_details(row, "resolution", resolution);
    r.state = "resolved".into();
    r.resolved_by = WHO.into();
    r.resolved_at = Some(now);
    r.updated_at = now;
    r.version = row_version();
    Change::Resolve(r, reason)
}

/// Reconciles this tick's findings with the alerts already there (the table in the module
/// docs). `failed` rules are left alone; alerts of rules in neither set are resolved.
pub fn plan(
    evaluated: &[Evaluated],
    failed: &HashSet<Uuid>,
    alerts: Vec<AlertRow>,
    now: DateTime<Utc>,
) -> Vec<Change> {
    // Alerts per rule and key, oldest first.
    let mut by_key: BTreeMap<(Uuid, String), Vec<AlertRow>> = BTreeMap::new();
    for a in alerts {
        by_key
            .entry((a.rule_id, a.dedup_key.clone()))
            .or_default()
            .push(a);
    }
    for group in by_key.values_mut() {
        group.sort_by_key(|a| (a.opened_at, a.version));
    }
    let mut changes = Vec::new();
    let mut seen: HashSet<(Uuid, String)> = HashSet::new();
    for e in evaluated {
        let rule = &e.rule.row;
        for f in &e.findings {
            let key = dedup_key(rule.rule_id, &f.scope, &f.window);
            if !seen.insert((rule.rule_id, key.clone())) {
                continue; // a check reported the same key twice: the first one counts
            }
            let group = by_key
                .get(&(rule.rule_id, key.clone()))
                .map(Vec::as_slice)
                .unwrap_or_default();
            let live: Vec<&AlertRow> = group.iter().filter(|a| a.state != "resolved").collect();
            let newest = group.last();
            match f.condition {
                Condition::Unknown => {}
                Condition::Firing if !live.is_empty() => {
                    for dup in &live[1..] {
                        changes.push(resolve(dup, Reason::Duplicate, None, now));
                    }
                }
                Condition::Firing => {
                    if newest.is_some_and(|n| resolved_by_person(n) && !is_rearmed(n)) {
                        continue;
                    }
                    let taken: Vec<&AlertRow> = group.iter().collect();
                    changes.push(Change::Open(AlertRow::open(
                        NewAlert {
                            alert_id: alert_id(rule.rule_id, &key, now, &taken),
                            org_id: rule.org_id.clone(),
                            rule_id: rule.rule_id,
                            kind: rule.kind.clone(),
                            severity: rule.severity.clone(),
                            dedup_key: key.clone(),
                            title: f.title.chars().take(500).collect(),
                            details: f.details.to_string(),
                        },
                        now,
                        row_version(),
                    )));
                }
                Condition::Clear => {
                    for a in &live {
                        changes.push(resolve(a, Reason::Cleared, Some(&f.details), now));
                    }
                    if let Some(n) = newest.filter(|n| resolved_by_person(n) && !is_rearmed(n)) {
                        let mut r = n.clone();
                        r.details = with_details(n, "condition_cleared_at", json!(rfc3339(now)));
                        r.version = row_version();
                        changes.push(Change::Rearm(r));
                    }
                }
            }
        }
    }
    let evaluated_rules: HashSet<Uuid> = evaluated.iter().map(|e| e.rule.row.rule_id).collect();
    for ((rule_id, key), group) in &by_key {
        if rule_id.is_nil() {
            // Raised by the edge (a budget's soft threshold), not by a rule: open until a
            // person acknowledges or resolves it, or its budget period ends.
            for a in group.iter().filter(|a| a.state != "resolved") {
                if edge_alert_period_over(a, now) {
                    changes.push(resolve(a, Reason::WindowEnded, None, now));
                }
            }
            continue;
        }
        if failed.contains(rule_id) || seen.contains(&(*rule_id, key.clone())) {
            continue;
        }
        let reason = if evaluated_rules.contains(rule_id) {
            Reason::WindowEnded
        } else {
            Reason::RuleGone
        };
        for a in group.iter().filter(|a| a.state != "resolved") {
            changes.push(resolve(a, reason, None, now));
        }
    }
    changes
}

/// Whether the budget period of an alert the edge raised (`details`: `period`, `period_start`)
/// is over at `now`. An alert that does not say its period stays until a person resolves it.
fn edge_alert_period_over(alert: &AlertRow, now: DateTime<Utc>) -> bool {
    let Ok(details) = serde_json::from_str::<Value>(&alert.details) else {
        return false;
    };
    let period = details["period"]
        .as_str()
        .and_then(usage_core::Period::parse);
    let start = details["period_start"].as_i64();
    match (period, start) {
        (Some(period), Some(start)) => {
            let (_, end) = period.unix_bounds(start);
            now.timestamp() >= end
        }
        _ => false,
    }
}

fn to_second(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(0).unwrap_or(t)
}

/// Midnight (UTC) starting `d`.
pub fn midnight(d: NaiveDate) -> DateTime<Utc> {
    d.and_time(NaiveTime::MIN).and_utc()
}

/// The start of the hour containing `t`.
pub fn floor_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    midnight(t.date_naive()) + TimeDelta::hours(i64::from(t.hour()))
}

/// One evaluation of every enabled rule at `now` (see the module docs). Writes the alert
/// changes, then sends their notifications and waits for them (retries included).
pub async fn evaluate_once(state: &Context, now: DateTime<Utc>) -> JobResult<TickReport> {
    let now = to_second(now);
    let client = state.client();
    // A failure to create default rules must not stop the rules that exist from being checked.
    if let Err(e) = crate::default_rules::seed_all(state, now).await {
        tracing::warn!(error = %e, "default alert rules could not be created; next tick retries");
    }
    // A new org's analysts get their ClickHouse role within a tick (where the server has roles).
    match tollgate_clickhouse::analyst_roles::sync(state.clickhouse(), None).await {
        Ok(
            o @ tollgate_clickhouse::analyst_roles::Outcome::Synced {
                statements: 1.., ..
            },
        ) => tracing::info!(outcome = %o, "analyst roles brought up to date"),
        Ok(o) => tracing::debug!(outcome = %o, "analyst roles"),
        Err(e) => {
            tracing::warn!(error = %e, "analyst roles could not be synced; next tick retries")
        }
    }
    let rows = read_query(client, &EVALUATOR_RULES.body())
        .fetch_all::<RuleRow>()
        .await?;
    let ctx = Ctx { state, now };
    let mut report = TickReport {
        rules: rows.len(),
        ..TickReport::default()
    };
    let mut evaluated = Vec::new();
    let mut failed = HashSet::new();
    for row in rows {
        let id = row.rule_id;
        let outcome = match Rule::from_row(row) {
            Ok(rule) => check(&ctx, &rule)
                .await
                .map(|findings| Evaluated { rule, findings })
                .map_err(|e| format!("{e:?}")),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(e) => evaluated.push(e),
            Err(why) => {
                tracing::warn!(rule_id = %id, error = %why, "alert rule check failed; its alerts are left as they are");
                failed.insert(id);
                report.failed.push((id, why));
            }
        }
    }
    let alerts = read_query(client, &EVALUATOR_ALERTS.body())
        .bind(hour_param(now - TimeDelta::days(RESOLVED_MEMORY_DAYS)))
        .fetch_all::<AlertRow>()
        .await?;
    let changes = plan(&evaluated, &failed, alerts, now);
    if changes.is_empty() {
        return Ok(report);
    }
    let rows: Vec<AlertRow> = changes.iter().map(|c| c.row().clone()).collect();
    write_alert(client, &rows).await?;

    let rules: BTreeMap<Uuid, &Rule> = evaluated
        .iter()
        .map(|e| (e.rule.row.rule_id, &e.rule))
        .collect();
    let mut notices = Vec::new();
    for change in &changes {
        match change {
            Change::Open(r) => report.opened.push(r.clone()),
            Change::Resolve(r, _) => report.resolved.push(r.clone()),
            Change::Rearm(_) => {}
        }
        // People hear about openings and about conditions that ended; not about duplicates
        // tidied up, nor about rules that are gone (they have no channels any more).
        let (event, row) = match change {
            Change::Open(r) => (Event::Opened, r),
            Change::Resolve(r, Reason::Cleared | Reason::WindowEnded) => (Event::Resolved, r),
            _ => continue,
        };
        if let Some(rule) = rules.get(&row.rule_id) {
            notices.push((event, *rule, row));
        }
    }
    let deliveries = futures_util::future::join_all(notices.iter().map(|(event, rule, row)| {
        let notice = Notice {
            event: *event,
            rule_name: &rule.row.name,
            alert: row,
        };
        async move { notify::deliver(state, &notice, &rule.row.channels).await }
    }))
    .await;
    report.deliveries = deliveries.into_iter().flatten().collect();
    if !report.opened.is_empty() || !report.resolved.is_empty() {
        tracing::info!(
            opened = report.opened.len(),
            resolved = report.resolved.len(),
            "alert evaluation"
        );
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;
    use usage_core::utc;

    fn rule(kind: &str) -> Rule {
        let now = utc(2026, 3, 4, 12, 0, 0);
        Rule::from_row(RuleRow {
            rule_id: Uuid::from_u128(7),
            org_id: "acme".into(),
            name: "r".into(),
            kind: kind.into(),
            params: r#"{"threshold_usd": "1"}"#.into(),
            severity: "high".into(),
            channels: vec!["dashboard".into()],
            enabled: 1,
            created_by: "t".into(),
            created_at: now,
            updated_at: now,
            deleted: 0,
            version: 1,
        })
        .unwrap()
    }

    fn eval(findings: Vec<Finding>) -> Vec<Evaluated> {
        vec![Evaluated {
            rule: rule("spend_threshold"),
            findings,
        }]
    }

    fn firing() -> Finding {
        Finding::new(
            "org=acme",
            "day=2026-03-04",
            true,
            "over",
            json!({"spent": 1}),
        )
    }

    fn clear() -> Finding {
        Finding::new("org=acme", "day=2026-03-04", false, "", json!({"spent": 0}))
    }

    fn opened(changes: &[Change]) -> AlertRow {
        match changes {
            [Change::Open(r)] => r.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_firing_condition_opens_once_and_resolves_when_it_clears() {
        let t0 = utc(2026, 3, 4, 12, 0, 0);
        let none = HashSet::new();
        let first = opened(&plan(&eval(vec![firing()]), &none, vec![], t0));
        assert_eq!(
            first.dedup_key,
            format!("{}|org=acme|day=2026-03-04", Uuid::from_u128(7))
        );
        assert_eq!(
            (first.state.as_str(), first.severity.as_str()),
            ("open", "high")
        );
        // Same minute, same id: a racing second instance writes the same row.
        assert_eq!(
            opened(&plan(&eval(vec![firing()]), &none, vec![], t0)).alert_id,
            first.alert_id
        );
        // Still firing: nothing.
        let t1 = t0 + TimeDelta::minutes(1);
        assert!(plan(&eval(vec![firing()]), &none, vec![first.clone()], t1).is_empty());
        // Unknown: nothing either.
        let unknown = Finding::unknown("org=acme", "day=2026-03-04", "no data");
        assert!(plan(&eval(vec![unknown]), &none, vec![first.clone()], t1).is_empty());
        // A failed check leaves it alone, even though the rule reported nothing.
        let failed = HashSet::from([Uuid::from_u128(7)]);
        assert!(plan(&[], &failed, vec![first.clone()], t1).is_empty());
        // Cleared: resolved by the evaluator, acknowledgement kept.
        let mut acked = first.clone();
        acked.state = "acknowledged".into();
        acked.acknowledged_by = "ops (tok_1)".into();
        acked.acknowledged_at = Some(t1);
        let changes = plan(&eval(vec![clear()]), &none, vec![acked], t1);
        let [Change::Resolve(r, Reason::Cleared)] = changes.as_slice() else {
            panic!("{changes:?}")
        };
        assert_eq!(
            (r.state.as_str(), r.resolved_by.as_str()),
            ("resolved", WHO)
        );
        assert_eq!(r.acknowledged_by, "ops (tok_1)");
        assert_eq!(r.resolved_at, Some(t1));
        let d: Value = serde_json::from_str(&r.details).unwrap();
        assert_eq!(d["resolution"]["reason"], "condition cleared");
        assert_eq!(d["spent"], 1);
        // Firing again after an evaluator resolution: a new alert with a new id.
        let again = opened(&plan(
            &eval(vec![firing()]),
            &none,
            vec![r.clone()],
            t1 + TimeDelta::minutes(1),
        ));
        assert_ne!(again.alert_id, first.alert_id);
    }

    #[test]
    fn a_window_that_ended_or_a_rule_that_is_gone_resolves_its_alerts() {
        let t0 = utc(2026, 3, 4, 23, 59, 0);
        let none = HashSet::new();
        let a = opened(&plan(&eval(vec![firing()]), &none, vec![], t0));
        let next_day = Finding::new("org=acme", "day=2026-03-05", false, "", json!({}));
        let changes = plan(
            &eval(vec![next_day]),
            &none,
            vec![a.clone()],
            t0 + TimeDelta::minutes(2),
        );
        assert!(matches!(
            changes.as_slice(),
            [Change::Resolve(_, Reason::WindowEnded)]
        ));
        let changes = plan(&[], &none, vec![a], t0 + TimeDelta::minutes(2));
        assert!(matches!(
            changes.as_slice(),
            [Change::Resolve(_, Reason::RuleGone)]
        ));
    }

    #[test]
    fn a_person_resolving_a_firing_alert_silences_it_until_the_condition_clears() {
        let t0 = utc(2026, 3, 4, 12, 0, 0);
        let none = HashSet::new();
        let mut a = opened(&plan(&eval(vec![firing()]), &none, vec![], t0));
        a.state = "resolved".into();
        a.resolved_by = "ops (tok_1)".into();
        a.resolved_at = Some(t0);
        let t1 = t0 + TimeDelta::minutes(1);
        assert!(plan(&eval(vec![firing()]), &none, vec![a.clone()], t1).is_empty());
        let changes = plan(&eval(vec![clear()]), &none, vec![a.clone()], t1);
        let [Change::Rearm(r)] = changes.as_slice() else {
            panic!("{changes:?}")
        };
        assert_eq!(
            (r.state.as_str(), r.resolved_by.as_str()),
            ("resolved", "ops (tok_1)")
        );
        assert!(is_rearmed(r));
        opened(&plan(
            &eval(vec![firing()]),
            &none,
            vec![r.clone()],
            t1 + TimeDelta::minutes(1),
        ));
    }

    #[test]
    fn duplicates_are_resolved_keeping_the_oldest() {
        let t0 = utc(2026, 3, 4, 12, 0, 0);
        let none = HashSet::new();
        let a = opened(&plan(&eval(vec![firing()]), &none, vec![], t0));
        let mut b = a.clone();
        b.alert_id = Uuid::new_v4();
        b.opened_at = t0 + TimeDelta::minutes(1);
        let changes = plan(
            &eval(vec![firing()]),
            &none,
            vec![b.clone(), a],
            t0 + TimeDelta::minutes(2),
        );
        let [Change::Resolve(r, Reason::Duplicate)] = changes.as_slice() else {
            panic!("{changes:?}")
        };
        assert_eq!(r.alert_id, b.alert_id);
    }

    #[test]
    fn an_alert_the_edge_raised_stays_open_until_its_budget_period_ends() {
        let t0 = utc(2026, 3, 4, 12, 0, 0);
        let day_start = utc(2026, 3, 4, 0, 0, 0).timestamp();
        let mut a = opened(&plan(&eval(vec![firing()]), &HashSet::new(), vec![], t0));
        a.rule_id = Uuid::nil();
        a.kind = "budget_threshold".into();
        a.dedup_key = format!("budget:b1:75:{day_start}");
        a.details = json!({"budget_id": "b1", "percent": 75, "period": "daily",
            "period_start": day_start, "source": "edge"})
        .to_string();
        // No rule evaluated it, and it is not "rule deleted": it stays while the day lasts.
        assert!(plan(
            &[],
            &HashSet::new(),
            vec![a.clone()],
            t0 + TimeDelta::hours(11)
        )
        .is_empty());
        let next_day = t0 + TimeDelta::hours(12);
        let changes = plan(&[], &HashSet::new(), vec![a.clone()], next_day);
        assert!(
            matches!(
                changes.as_slice(),
                [Change::Resolve(_, Reason::WindowEnded)]
            ),
            "{changes:?}"
        );
        // One that does not say its period waits for a person.
        a.details = json!({"budget_id": "b1", "percent": 75}).to_string();
        assert!(plan(&[], &HashSet::new(), vec![a], next_day).is_empty());
    }

    #[test]
    fn hours_and_midnights() {
        assert_eq!(
            floor_hour(utc(2026, 3, 4, 12, 34, 56)),
            utc(2026, 3, 4, 12, 0, 0)
        );
        assert_eq!(
            midnight(usage_core::ymd(2026, 3, 4)),
            utc(2026, 3, 4, 0, 0, 0)
        );
    }
}
