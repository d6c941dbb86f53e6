//! Budgets that hold under concurrency: the ledger one `BudgetGuard` Durable Object keeps for
//! one budget, and the worst-case cost a call reserves before it is sent.
//!
//! Every call a budget applies to goes through that budget's single guard, which handles one
//! request at a time. Before forwarding, the edge **reserves** the call's worst-case cost
//! ([`worst_case_cost`]); a hard budget refuses the reservation when
//! `spent + reserved + this > limit`. After the call the reservation is **settled** to the
//! actual cost (or released when nothing was spent). So 200 concurrent calls against a budget
//! with room for N get exactly N through, and spend never passes the limit.
//!
//! Safety margins, all on the side of never leaking: the input bound is the request's byte
//! count (a token is at least one byte); the output bound is `max_tokens` or the model's output
//! limit (or [`DEFAULT_OUTPUT_BOUND`]); a reservation never settled within
//! [`RESERVATION_TTL_SECS`] (an isolate died mid-call) is counted as spent. The guard's spend is
//! resynced from ClickHouse's truth and only ever raised by it (`max`), so a restarted guard
//! starts from what was recorded and a live one never forgets calls still in flight to the
//! collector. Periods are UTC: days, weeks from Monday, calendar months.
//!
//! The one deliberate exception: a budget with `reserve_output_tokens` (the admin's choice)
//! lets a call *without* `max_tokens` reserve that many output tokens instead of the model's
//! limit. Such a call may then cost more than it reserved, and spend can pass the limit by at
//! most (model's output limit − the cap) × output price per such call in flight. Calls with
//! `max_tokens`, and budgets without the cap, keep the guarantee above.
//!
//! Thresholds (soft warnings, and the `budget_threshold` alerts the edge raises) are crossed
//! by spend, never by reservations: `usage_core::budget_use`, the dashboard's definition.

use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use usage_core::{ModelPrice, Nanos, Period, PriceTable};

use serde_json::Value;

use crate::json::{Fields, FromJson};

/// Output tokens assumed when neither the request nor the price table bounds them.
pub const DEFAULT_OUTPUT_BOUND: u32 = 16_384;
/// Seconds after which an unsettled reservation is treated as spent.
pub const RESERVATION_TTL_SECS: i64 = 600;

/// A budget as the dashboard defines it (what the edge fetches and hands to its guard).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BudgetSpec {
    pub budget_id: String,
    pub name: String,
    /// `org`, `org_user` or `app`.
    pub scope: String,
    pub user_id: String,
    pub app_id: String,
    /// `daily`, `weekly` or `monthly`.
    pub period: String,
    pub limit_nusd: i64,
    /// `hard` (enforced) or `soft` (warns).
    pub mode: String,
    pub soft_thresholds: Vec<u8>,
    /// Output tokens a call without `max_tokens` reserves here; 0: the model's maximum
    /// (see [`worst_case_cost`]).
    pub reserve_output_tokens: u32,
}

impl BudgetSpec {
    /// Whether a call of `user` through `app` is under this budget (the org already matched).
    pub fn applies(&self, user: &str, app: &str) -> bool {
        match self.scope.as_str() {
            "org" => true,
            "org_user" => !user.is_empty() && self.user_id == user,
            "app" => self.app_id == app,
            _ => false,
        }
    }

    pub fn is_hard(&self) -> bool {
        self.mode == "hard"
    }
}

/// Start of the period named `period` containing `now`, and the start of the next one (UTC,
/// unix seconds); an unknown name counts as daily.
pub fn period_bounds(period: &str, now: i64) -> (i64, i64) {
    Period::parse(period)
        .unwrap_or(Period::Daily)
        .unix_bounds(now)
}

/// A guard's answer to a reservation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub allowed: bool,
    pub limit_nusd: i64,
    pub spent_nusd: i64,
    pub reserved_nusd: i64,
    /// When the period (and so the budget) resets, unix seconds.
    pub reset_at: i64,
    /// Thresholds (percent) the budget's spend has reached, reported for the first time this
    /// period to this call (`usage_core::budget_use`: spend, not reservations).
    pub crossed: Vec<u8>,
    /// Decided without the recorded spend: the guard never synced and could not (a soft
    /// budget goes on with what it has; the worker records the call as unchecked).
    pub spend_unknown: bool,
}

/// What the worker asks of a budget's guard (JSON, tagged by `op`).
// One short-lived message per guard call, serialized at once: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum GuardRequest {
    /// Reserve `amount` for call `id`, creating or updating the ledger for `spec`.
    Reserve {
        spec: BudgetSpec,
        id: String,
        amount: i64,
        now: i64,
    },
    /// Settle call `id`'s reservation at its `actual` cost.
    Settle { id: String, actual: i64, now: i64 },
}

/// One budget's running state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Ledger {
    pub spec: BudgetSpec,
    pub period_start: i64,
    pub period_end: i64,
    pub spent_nusd: i64,
    /// reservation id → (amount, taken at)
    pub reserved: BTreeMap<String, (i64, i64)>,
    /// Thresholds already announced this period.
    pub warned: BTreeSet<u8>,
    /// When the spend was last resynced from ClickHouse (unix seconds; 0 = never).
    pub synced_at: i64,
}

impl Ledger {
    pub fn new(spec: BudgetSpec, now: i64) -> Ledger {
        let (period_start, period_end) = period_bounds(&spec.period, now);
        Ledger {
            spec,
            period_start,
            period_end,
            spent_nusd: 0,
            reserved: BTreeMap::new(),
            warned: BTreeSet::new(),
            synced_at: 0,
        }
    }

    /// Moves to the period containing `now` (spend starts again at zero; open reservations
    /// carry over and settle into the new period) and expires stale reservations as spent.
    pub fn tick(&mut self, now: i64) {
        if now >= self.period_end || now < self.period_start {
            let (s, e) = period_bounds(&self.spec.period, now);
            self.period_start = s;
            self.period_end = e;
            self.spent_nusd = 0;
            self.warned.clear();
            self.synced_at = 0;
        }
        let stale: Vec<String> = self
            .reserved
            .iter()
            .filter(|(_, (_, at))| now - at > RESERVATION_TTL_SECS)
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            if let Some((amount, _)) = self.reserved.remove(&id) {
                self.spent_nusd = self.spent_nusd.saturating_add(amount);
            }
        }
    }

    /// Updates the definition (the dashboard may have changed the limit or mode).
    pub fn update_spec(&mut self, spec: BudgetSpec, now: i64) {
        if spec.period != self.spec.period {
            self.spec = spec;
            self.period_end = 0; // recompute on tick
            self.tick(now);
        } else {
            self.spec = spec;
        }
    }

    pub fn reserved_total(&self) -> i64 {
        self.reserved.values().map(|(a, _)| *a).sum()
    }

    /// Raises the spend to ClickHouse's figure for this period (never lowers it).
    pub fn resync(&mut self, period_start: i64, truth_nusd: i64, now: i64) {
        if period_start == self.period_start {
            self.spent_nusd = self.spent_nusd.max(truth_nusd);
        }
        self.synced_at = now;
    }

    /// Reserves `amount` for `id` if the budget allows it.
    pub fn reserve(&mut self, id: &str, amount: i64, now: i64) -> Decision {
        self.tick(now);
        let committed = self.spent_nusd.saturating_add(self.reserved_total());
        let after = committed.saturating_add(amount.max(0));
        let allowed = !self.spec.is_hard() || after <= self.spec.limit_nusd;
        let mut crossed = Vec::new();
        if allowed {
            self.reserved.insert(id.to_string(), (amount.max(0), now));
            // A threshold is crossed by spend (finished calls), as the dashboard counts it —
            // not by this call's worst case, which may never be spent. The first call after
            // the spend reaches it carries the warning.
            if self.spec.limit_nusd > 0 {
                let (spent, limit) = (
                    i128::from(self.spent_nusd),
                    i128::from(self.spec.limit_nusd),
                );
                for &pct in &self.spec.soft_thresholds {
                    if usage_core::budget_use::reached(spent, limit, pct) && self.warned.insert(pct)
                    {
                        crossed.push(pct);
                    }
                }
            }
        }
        Decision {
            allowed,
            limit_nusd: self.spec.limit_nusd,
            spent_nusd: self.spent_nusd,
            reserved_nusd: self.reserved_total(),
            reset_at: self.period_end,
            crossed,
            spend_unknown: self.synced_at == 0,
        }
    }

    /// Settles a reservation to what the call cost (`actual`; 0 releases it).
    pub fn settle(&mut self, id: &str, actual: i64, now: i64) {
        self.tick(now);
        self.reserved.remove(id);
        self.spent_nusd = self.spent_nusd.saturating_add(actual.max(0));
    }
}

/// The most a call can cost: every request byte an input token, plus the output bound, at the
/// model's prices in the tier the request names (`service_tier`; the standard rates without
/// one). `None` when the model is not priced (the caller decides what a hard budget does then).
pub fn worst_case_cost(
    price: Option<&ModelPrice>,
    request_bytes: u64,
    max_output_tokens: Option<u32>,
    service_tier: &str,
) -> Option<Nanos> {
    let price = price?;
    let input = u32::try_from(request_bytes).unwrap_or(u32::MAX);
    let output = max_output_tokens
        .or(price.max_output_tokens)
        .unwrap_or(DEFAULT_OUTPUT_BOUND);
    // The dearest classes: input at the highest input-side rate (plain, cache write, audio,
    // image), output at the highest output-side rate (plain, reasoning, audio, image). Search
    // fees are not bounded: how many searches a call makes is not known before it.
    let tier = price.tier(service_tier);
    let dearest =
        |first: Nanos, rest: [Option<Nanos>; 3]| rest.into_iter().flatten().fold(first, Nanos::max);
    let mut p = usage_core::ModelPrice::new(
        &price.provider,
        &price.model,
        price.effective_from,
        dearest(
            tier.map_or(price.input, |t| t.input),
            [price.cache_write, price.audio_input, price.image_input],
        ),
        dearest(
            tier.map_or(price.output, |t| t.output),
            [price.reasoning, price.audio_output, price.image_output],
        ),
    );
    p.per_request = price.per_request;
    Some(usage_core::price_tokens(
        usage_core::TokenCounts {
            input,
            output,
            ..Default::default()
        },
        &p,
    ))
}

/// The price the table has for a call (served model unknown yet: the requested one).
pub fn price_for<'a>(
    table: &'a PriceTable,
    provider: &str,
    model: &str,
    at: DateTime<Utc>,
) -> Option<&'a ModelPrice> {
    table.resolve(provider, model, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    use usage_core::utc;

    fn spec(limit: i64, mode: &str) -> BudgetSpec {
        BudgetSpec {
            budget_id: "b1".into(),
            name: "team".into(),
            scope: "org".into(),
            user_id: String::new(),
            app_id: String::new(),
            period: "daily".into(),
            limit_nusd: limit,
            mode: mode.into(),
            soft_thresholds: vec![50, 80, 100],
            reserve_output_tokens: 0,
        }
    }

    const NOW: i64 = 1_795_800_000; // 2026-11-27 14:40 UTC

    #[test]
    fn a_hard_budget_admits_exactly_what_fits_however_interleaved() {
        let mut l = Ledger::new(spec(1000, "hard"), NOW);
        let mut allowed = 0;
        for i in 0..20 {
            if l.reserve(&format!("r{i}"), 100, NOW).allowed {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 10);
        // settling for less frees room; settling everything never exceeds the limit
        for i in 0..10 {
            l.settle(&format!("r{i}"), 60, NOW);
        }
        assert_eq!(l.spent_nusd, 600);
        assert!(l.reserve("x", 400, NOW).allowed);
        assert!(!l.reserve("y", 1, NOW).allowed);
    }

    /// Thresholds are crossed by spend, once each: a worst-case reservation that would pass
    /// one warns nobody (#25: the header said 75% while 74.02% was spent).
    #[test]
    fn soft_budgets_warn_once_per_threshold_when_spend_reaches_it() {
        let mut l = Ledger::new(spec(1000, "soft"), NOW);
        assert_eq!(l.reserve("a", 900, NOW).crossed, Vec::<u8>::new());
        l.settle("a", 400, NOW);
        assert_eq!(l.reserve("b", 900, NOW).crossed, Vec::<u8>::new());
        l.settle("b", 200, NOW);
        assert_eq!(
            l.reserve("c", 10, NOW).crossed,
            vec![50],
            "600 of 1000 spent"
        );
        l.settle("c", 300, NOW);
        let d = l.reserve("d", 500, NOW);
        assert_eq!(d.crossed, vec![80], "900 spent");
        l.settle("d", 500, NOW);
        let e = l.reserve("e", 1, NOW);
        assert!(e.allowed, "soft budgets never refuse");
        assert_eq!(e.crossed, vec![100]);
        assert_eq!(l.reserve("f", 1, NOW).crossed, Vec::<u8>::new());
    }

    #[test]
    fn periods_roll_over_at_utc_boundaries() {
        assert_eq!(
            period_bounds("daily", NOW),
            (
                utc(2026, 11, 27, 0, 0, 0).timestamp(),
                utc(2026, 11, 28, 0, 0, 0).timestamp()
            )
        );
        assert_eq!(
            period_bounds("weekly", NOW).0,
            utc(2026, 11, 23, 0, 0, 0).timestamp()
        ); // Monday
        assert_eq!(
            period_bounds("monthly", NOW),
            (
                utc(2026, 11, 1, 0, 0, 0).timestamp(),
                utc(2026, 12, 1, 0, 0, 0).timestamp()
            )
        );
        assert_eq!(
            period_bounds("monthly", utc(2026, 12, 31, 23, 0, 0).timestamp()).1,
            utc(2027, 1, 1, 0, 0, 0).timestamp()
        );
        let mut l = Ledger::new(spec(100, "hard"), NOW);
        assert!(l.reserve("a", 100, NOW).allowed);
        l.settle("a", 100, NOW);
        assert!(!l.reserve("b", 1, NOW).allowed);
        let tomorrow = NOW + 86_400;
        let d = l.reserve("c", 100, tomorrow);
        assert!(d.allowed, "a new day, a new budget");
        assert_eq!(d.reset_at, utc(2026, 11, 29, 0, 0, 0).timestamp());
    }

    #[test]
    fn resync_only_raises_and_stale_reservations_count_as_spent() {
        let mut l = Ledger::new(spec(1000, "hard"), NOW);
        l.settle("x", 300, NOW);
        l.resync(l.period_start, 200, NOW);
        assert_eq!(
            l.spent_nusd, 300,
            "the guard's own settled calls are not forgotten"
        );
        l.resync(l.period_start, 700, NOW);
        assert_eq!(
            l.spent_nusd, 700,
            "a restarted guard starts from the recorded truth"
        );
        assert!(l.reserve("lost", 200, NOW).allowed);
        l.tick(NOW + RESERVATION_TTL_SECS + 1);
        assert_eq!((l.spent_nusd, l.reserved_total()), (900, 0));
    }

    #[test]
    fn worst_case_bounds_every_token_class() {
        let table = PriceTable::builtin().unwrap();
        let at = utc(2026, 11, 1, 0, 0, 0);
        let p = price_for(&table, "openai", "gpt-4o-mini", at);
        // 1,000 bytes of input at $0.15/1M + 500 output at $0.60/1M
        assert_eq!(
            worst_case_cost(p, 1000, Some(500), ""),
            Some(Nanos::new(150_000 + 300_000))
        );
        // without max_tokens: the model's output limit (16,384 for gpt-4o-mini)
        assert_eq!(
            worst_case_cost(p, 0, None, ""),
            Some(Nanos::new(16_384 * 600))
        );
        assert_eq!(
            worst_case_cost(price_for(&table, "openai", "nope", at), 10, Some(10), ""),
            None
        );
        // A request naming a tier is bounded at the tier's rates.
        let gpt5 = price_for(&table, "openai", "gpt-5", at).unwrap();
        let priority = &gpt5.tiers["priority"];
        assert_eq!(
            worst_case_cost(Some(gpt5), 1_000_000, Some(1_000_000), "priority"),
            Some(Nanos::new(priority.input.get() + priority.output.get()))
        );
        assert_eq!(
            worst_case_cost(Some(gpt5), 1_000_000, Some(1_000_000), "auto"),
            Some(Nanos::new(gpt5.input.get() + gpt5.output.get()))
        );
    }

    /// OpenRouter calls under a hard budget are priced (and so admitted) for the models of its
    /// list, through the vendors' entries of the built-in table.
    #[test]
    fn openrouter_slugs_have_a_worst_case() {
        let table = PriceTable::builtin().unwrap();
        let at = utc(2026, 11, 1, 0, 0, 0);
        for slug in [
            "anthropic/claude-sonnet-4.5",
            "anthropic/claude-4.5-sonnet-20250929",
            "anthropic/claude-haiku-4.5",
            "anthropic/claude-opus-4.5",
            "openai/gpt-4o-mini",
            "openai/gpt-4.1",
            "openai/gpt-5",
            "google/gemini-2.5-flash",
            "google/gemini-2.5-pro",
            "deepseek/deepseek-chat",
            "x-ai/grok-4.20",
            "mistralai/mistral-large-latest",
        ] {
            let price = price_for(&table, "openrouter", slug, at);
            assert!(
                worst_case_cost(price, 1_000, Some(100), "").is_some(),
                "{slug} would be refused under a hard budget"
            );
        }
    }

    #[test]
    fn scopes() {
        let mut s = spec(1, "hard");
        assert!(s.applies("", "any"));
        s.scope = "org_user".into();
        s.user_id = "alice".into();
        assert!(s.applies("alice", "x") && !s.applies("bob", "x") && !s.applies("", "x"));
        s.scope = "app".into();
        s.app_id = "web".into();
        assert!(s.applies("", "web") && !s.applies("", "cli"));
    }
}

impl FromJson for BudgetSpec {
    fn from_json(v: &Value) -> Result<Self, String> {
        let f = Fields::of(v)?;
        Ok(BudgetSpec {
            budget_id: f.str("budget_id")?,
            name: f.str("name")?,
            scope: f.str("scope")?,
            user_id: f.str_or_empty("user_id")?,
            app_id: f.str_or_empty("app_id")?,
            period: f.str("period")?,
            limit_nusd: f.i64("limit_nusd")?,
            mode: f.str("mode")?,
            soft_thresholds: f.u8s_or_empty("soft_thresholds")?,
            reserve_output_tokens: f.u32_or_zero("reserve_output_tokens")?,
        })
    }
}

impl FromJson for Decision {
    fn from_json(v: &Value) -> Result<Self, String> {
        let f = Fields::of(v)?;
        Ok(Decision {
            allowed: f.bool("allowed")?,
            limit_nusd: f.i64("limit_nusd")?,
            spent_nusd: f.i64("spent_nusd")?,
            reserved_nusd: f.i64("reserved_nusd")?,
            reset_at: f.i64("reset_at")?,
            crossed: f.u8s_or_empty("crossed")?,
            spend_unknown: f.bool_or_false("spend_unknown")?,
        })
    }
}

impl FromJson for Ledger {
    fn from_json(v: &Value) -> Result<Self, String> {
        let f = Fields::of(v)?;
        let bad_reserved = || "field `reserved` must map ids to [amount, taken_at]".to_string();
        let mut reserved = BTreeMap::new();
        for (id, entry) in f
            .required("reserved")?
            .as_object()
            .ok_or_else(bad_reserved)?
        {
            let pair = match entry.as_array().map(Vec::as_slice) {
                Some([amount, at]) => amount.as_i64().zip(at.as_i64()),
                _ => None,
            };
            reserved.insert(id.clone(), pair.ok_or_else(bad_reserved)?);
        }
        // Inserted one by one: `collect` into a set sorts first, and sort code is heavy in wasm.
        let mut warned = BTreeSet::new();
        for pct in f.u8s_or_empty("warned")? {
            warned.insert(pct);
        }
        Ok(Ledger {
            spec: f.nested("spec")?,
            period_start: f.i64("period_start")?,
            period_end: f.i64("period_end")?,
            spent_nusd: f.i64("spent_nusd")?,
            reserved,
            warned,
            synced_at: f.i64("synced_at")?,
        })
    }
}

impl FromJson for GuardRequest {
    fn from_json(v: &Value) -> Result<Self, String> {
        let f = Fields::of(v)?;
        match f.str("op")?.as_str() {
            "reserve" => Ok(GuardRequest::Reserve {
                spec: f.nested("spec")?,
                id: f.str("id")?,
                amount: f.i64("amount")?,
                now: f.i64("now")?,
            }),
            "settle" => Ok(GuardRequest::Settle {
                id: f.str("id")?,
                actual: f.i64("actual")?,
                now: f.i64("now")?,
            }),
            other => Err(format!("unknown op `{other}` (expected reserve or settle)")),
        }
    }
}

/// The documents the worker, the guard and dashboard-api exchange, read back.
#[cfg(test)]
mod documents {
    use super::*;
    use crate::json::{list, parse};

    fn spec() -> BudgetSpec {
        BudgetSpec {
            budget_id: "b1".into(),
            name: "Team \"A\"".into(),
            scope: "org_user".into(),
            user_id: "u1".into(),
            app_id: String::new(),
            period: "monthly".into(),
            limit_nusd: 5_000_000_000,
            mode: "hard".into(),
            soft_thresholds: vec![50, 80],
            reserve_output_tokens: 2_000,
        }
    }

    /// What serde writes reads back the same: the worker serializes these for the guard, the
    /// guard for its storage and answers.
    #[test]
    fn serialized_documents_read_back_equal() {
        let mut ledger = Ledger::new(spec(), 1_764_288_000);
        ledger.reserve("call-1", 1_000, 1_764_288_001);
        ledger.warned.insert(50);
        ledger.synced_at = 1_764_288_002;
        let text = serde_json::to_string(&ledger).unwrap();
        assert_eq!(parse::<Ledger>(text.as_bytes()).unwrap(), ledger);

        let decision = Decision {
            allowed: false,
            limit_nusd: 10,
            spent_nusd: 7,
            reserved_nusd: 3,
            reset_at: 1_764_547_200,
            crossed: vec![80],
            spend_unknown: true,
        };
        let text = serde_json::to_string(&decision).unwrap();
        assert_eq!(parse::<Decision>(text.as_bytes()).unwrap(), decision);
    }

    #[test]
    fn guard_requests_read_back_by_op() {
        for cmd in [
            GuardRequest::Reserve {
                spec: spec(),
                id: "e1".into(),
                amount: 42,
                now: 7,
            },
            GuardRequest::Settle {
                id: "e1".into(),
                actual: 40,
                now: 8,
            },
        ] {
            let text = serde_json::to_string(&cmd).unwrap();
            let back = parse::<GuardRequest>(text.as_bytes()).unwrap();
            assert_eq!(format!("{back:?}"), format!("{cmd:?}"));
        }
        let err = parse::<GuardRequest>(br#"{"op":"refund","id":"e1"}"#).unwrap_err();
        assert_eq!(err, "unknown op `refund` (expected reserve or settle)");
        let err = parse::<GuardRequest>(br#"{"op":"settle","id":"e1","now":1}"#).unwrap_err();
        assert_eq!(err, "missing field `actual`");
    }

    #[test]
    fn ledgers_with_bad_reservations_and_lists_name_the_index() {
        let mut v = serde_json::to_value(Ledger::new(spec(), 0)).unwrap();
        v["reserved"] = serde_json::json!({"c": [1]});
        assert!(Ledger::from_json(&v).unwrap_err().contains("reserved"));
        v["reserved"] = serde_json::json!({});
        v["spec"]["mode"] = Value::Null;
        assert_eq!(
            Ledger::from_json(&v).unwrap_err(),
            "spec: missing field `mode`"
        );

        let specs = serde_json::json!([serde_json::to_value(spec()).unwrap(), {"name": "x"}]);
        let err = list::<BudgetSpec>(&specs, "budgets").unwrap_err();
        assert_eq!(err, "budgets[1]: missing field `budget_id`");
        let err = list::<BudgetSpec>(&serde_json::json!({}), "budgets").unwrap_err();
        assert_eq!(err, "budgets: expected a JSON array");
    }

    /// Budgets as dashboard-api writes them: optional fields may be missing or null.
    #[test]
    fn optional_fields_default_and_required_ones_are_named() {
        let minimal = br#"{"budget_id":"b","name":"n","scope":"org","period":"daily","limit_nusd":1,"mode":"soft"}"#;
        let b = parse::<BudgetSpec>(minimal).unwrap();
        assert_eq!((b.user_id.as_str(), b.soft_thresholds.len()), ("", 0));
        let with_nulls = br#"{"budget_id":"b","name":"n","scope":"org","user_id":null,"period":"daily","limit_nusd":1,"mode":"soft","soft_thresholds":null}"#;
        assert_eq!(parse::<BudgetSpec>(with_nulls).unwrap(), b);
        let err = parse::<BudgetSpec>(br#"{"budget_id":"b","name":"n","scope":"org","period":"daily","limit_nusd":1.5,"mode":"soft"}"#).unwrap_err();
        assert_eq!(err, "field `limit_nusd` must be a whole number (64-bit)");
        let err = parse::<BudgetSpec>(br#"{"budget_id":"b","name":"n","scope":"org","period":"daily","limit_nusd":1,"mode":"soft","soft_thresholds":[50,300]}"#).unwrap_err();
        assert_eq!(
            err,
            "field `soft_thresholds` must be a list of integers 0-255"
        );
    }
}
