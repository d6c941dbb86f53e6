//! A call's record: what was decided before the upstream call ([`Prepared`]), the facts
//! measured, and [`finish`] — build the record, settle the budget reservations, ship it.

use chrono::{DateTime, Datelike, Utc};
use usage_core::{ErrorClass, PriceTable};
use uuid::Uuid;

use crate::attribution::Attribution;
use crate::budget::GuardRequest;
use crate::call::{Plan, Route};
use crate::cf::{self, console_error, now_ms, Context, Env};
use crate::guard;
use crate::keys::AppKey;
use crate::measure::{self, CallFacts};
use crate::ship;

/// Everything decided before the upstream call, carried to the record.
pub struct Prepared {
    pub route: Route,
    pub plan: Plan,
    pub key: AppKey,
    pub attribution: Attribution,
    pub region: String,
    pub request_bytes: u64,
    pub event_id: Uuid,
    /// Budgets this call holds a reservation in (settled when its record is built).
    pub reservations: Vec<String>,
    /// The budget clock (unix seconds): now, or the test clock when enabled.
    pub budget_now: i64,
    /// Budgets that applied but could not be checked, and let the call through (soft ones, or
    /// any under `BUDGET_FAIL_MODE=open`): the record's `tollgate.budget_fail_open` tag.
    pub unchecked_budgets: Vec<String>,
}

/// A time in ms since the epoch as a date-time (the epoch itself if out of range).
pub fn datetime_ms(ms: u64) -> DateTime<Utc> {
    i64::try_from(ms)
        .ok()
        .and_then(DateTime::from_timestamp_millis)
        .filter(|t| t.year() <= 9999)
        .unwrap_or(DateTime::UNIX_EPOCH)
}

/// Milliseconds since `since` (ms since the epoch).
pub fn elapsed_ms(since: u64) -> u32 {
    u32::try_from(now_ms().saturating_sub(since)).unwrap_or(u32::MAX)
}

/// `f` over the isolate's price table ([`crate::prices::current`]: the dashboard's book, else
/// the built-in table); `None` if there is none.
pub fn with_prices<T>(f: impl FnOnce(&PriceTable) -> T) -> Option<T> {
    crate::prices::current().map(|t| f(&t))
}

/// The app's tags, plus Tollgate's own `tollgate.budget_fail_open` when a budget went unchecked.
fn record_tags(p: &Prepared) -> std::collections::BTreeMap<String, String> {
    let mut tags = p.attribution.tags.clone();
    if !p.unchecked_budgets.is_empty() {
        let mut value = p.unchecked_budgets.join(",");
        value.truncate(usage_core::record::limits::MAX_TAG_VALUE_LEN);
        tags.insert(
            usage_core::record::limits::BUDGET_FAIL_OPEN_TAG.to_string(),
            value,
        );
    }
    tags
}

/// The facts of a call known before its answer; the proxy fills in what it measures.
pub fn facts(p: &Prepared, started: u64, event_id: Uuid) -> CallFacts {
    CallFacts {
        event_id,
        started: datetime_ms(started),
        latency_ms: elapsed_ms(started),
        ttft_ms: None,
        upstream_ms: 0,
        key: p.key.clone(),
        user: p.attribution.user.clone(),
        task: p.attribution.task.clone(),
        tags: record_tags(p),
        provider: p.plan.provider.name.clone(),
        model_requested: p.plan.facts.model.clone(),
        endpoint: p.route.endpoint,
        stream: p.plan.facts.stream,
        edge_region: p.region.clone(),
        status_code: 0,
        error_class: ErrorClass::None,
        usage: None,
        model_served: None,
        estimated: None,
        request_bytes: p.request_bytes,
        response_bytes: 0,
        service_tier_requested: p.plan.facts.service_tier.clone(),
        service_tier_served: None,
    }
}

/// A UUIDv7 from the call's start: event ids sort by time.
pub fn new_event_id(started: u64) -> Uuid {
    let ts = uuid::Timestamp::from_unix(
        uuid::NoContext,
        started / 1000,
        ((started % 1000) * 1_000_000) as u32,
    );
    Uuid::new_v7(ts)
}

/// Records the call in `wait_until` (see [`finish`]).
pub fn record_later(
    env: &Env,
    ctx: &Context,
    facts: CallFacts,
    reservations: Vec<String>,
    budget_now: i64,
) {
    let env = env.clone();
    cf::wait_until(ctx, finish(env, facts, reservations, budget_now));
}

/// Builds the record, settles the call's budget reservations to its cost, and ships it.
pub async fn finish(env: Env, facts: CallFacts, reservations: Vec<String>, budget_now: i64) {
    let Some(record) = with_prices(|t| measure::build_record(facts, t)) else {
        return;
    };
    for b in &reservations {
        let cmd = GuardRequest::Settle {
            id: record.event_id.to_string(),
            actual: record.cost_nusd.get(),
            now: budget_now,
        };
        if let Err(e) = guard::call_guard(&env, b, &cmd).await {
            console_error!("tollgate: settling budget {b} failed: {e}");
        }
    }
    ship::ship(&env, record).await;
}
