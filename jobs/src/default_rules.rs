//! The alert rules every organisation has without writing any: created by the evaluator for
//! each org it has not seen before (and by dashboard-api when it creates an org's first token
//! or app key), so a fresh install watches spend, errors, prices, balances and budgets from
//! its first call. Off with `evaluator.default_rules = false`.
//!
//! | rule (name) | kind | params | severity | created for |
//! |---|---|---|---|---|
//! | Daily spend anomaly | `spend_anomaly` | `window` day, `sensitivity` 3, `min_spend_usd` 1 | medium | each org |
//! | Error rate above 5 % | `error_rate` | `threshold_percent` 5, `window_minutes` 15, `min_requests` 20 | high | each org |
//! | Calls to unpriced models | `unpriced_requests` | `threshold_count` 1, `window_minutes` 60 | low | each org |
//! | `<provider>` credits run out within 7 days | `credit_runway` | `provider`, `min_days` 7 | high | each provider with a balance in the org (the deployment's balances: each of `evaluator.operator_orgs`) |
//! | Budget `<name>` at 80 % | `budget_threshold` | `budget_id`, `percent` 80 | medium | each budget without soft thresholds (a budget with them already warns at each: the edge raises those alerts) |
//!
//! An org is an org id that has an admin token or an app key (orgs have no table of their
//! own). Every default rule notifies the dashboard only; an admin edits, disables or deletes
//! it like any other rule.
//!
//! # Created once, never brought back
//! A default rule's id is derived from its org and what it covers ([`rule_id`]), and it is
//! written with version 1 — below every version an edit or a deletion writes (the wall clock
//! in nanoseconds). So:
//! - a rule that exists in any version (deleted ones included: a deletion is a row with
//!   `deleted = 1`, kept by `ReplacingMergeTree`) is not written again: an admin who deletes a
//!   default rule does not see it come back;
//! - two instances (or the evaluator and dashboard-api) seeding the same org at once write the
//!   same row, which `ReplacingMergeTree` collapses to one rule;
//! - a seeding that stops half-way (a crash, ClickHouse away) is finished by the next tick;
//!   one that reads a stale list of rules (replication lag) and writes a rule again cannot undo
//!   an edit or a deletion: version 1 loses to both.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use tollgate_clickhouse::alerts::{write_rules, RuleRow};
use tollgate_clickhouse::clickhouse::{Client, Row};
use tollgate_clickhouse::queries::NamedQuery;
use tollgate_clickhouse::read_query;
use uuid::Uuid;

use crate::error::JobResult;
use crate::rules::{self, RuleKind};
use crate::Context;

/// Who a default rule's `created_by` names.
pub const CREATED_BY: &str = "tollgate defaults";

/// The version default rules are written with: lower than any edit's or deletion's.
const SEED_VERSION: u64 = 1;

const SCOPES: NamedQuery = NamedQuery {
    name: "admin/default_rule_scopes",
    sql: include_str!("../../clickhouse/queries/admin/default_rule_scopes.sql"),
};
const ORGS: NamedQuery = tollgate_clickhouse::queries::ORGS_WITH_KEYS;

/// What one default rule covers, as `default_rule_orgs` and `default_rule_scopes` report it.
#[derive(Debug, Clone, PartialEq, Eq, Row, Deserialize)]
struct ScopeRow {
    org_id: String,
    /// `org`, `budget` or `credits`.
    what: String,
    /// The budget id or the provider.
    id: String,
    /// The budget's name.
    name: String,
}

/// What a seeding pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Seeded {
    /// The rules written, as `(org, name)`.
    pub created: Vec<(String, String)>,
}

/// One default rule of one org, before it is a row.
#[derive(Debug, Clone, PartialEq)]
pub struct DefaultRule {
    pub org_id: String,
    /// What the rule covers within the org: `org/<kind>`, `budget/<id>`, `credits/<provider>`.
    pub covers: String,
    pub name: String,
    pub kind: RuleKind,
    pub params: Value,
    pub severity: &'static str,
}

impl DefaultRule {
    /// The rule's id: the same for the same org and coverage on every instance and every run.
    pub fn rule_id(&self) -> Uuid {
        rule_id(&self.org_id, &self.covers)
    }

    fn row(&self, now: DateTime<Utc>) -> JobResult<RuleRow> {
        let (params, _) = rules::validate_params(self.kind, self.params.clone(), None)
            .map_err(|e| crate::JobError::Internal(format!("default rule {}: {e}", self.name)))?;
        Ok(RuleRow {
            rule_id: self.rule_id(),
            org_id: self.org_id.clone(),
            name: self.name.clone(),
            kind: self.kind.as_str().to_string(),
            params: params.to_string(),
            severity: self.severity.to_string(),
            channels: vec!["dashboard".to_string()],
            enabled: 1,
            created_by: CREATED_BY.to_string(),
            created_at: now,
            updated_at: now,
            deleted: 0,
            version: SEED_VERSION,
        })
    }
}

/// A default rule's id: a version-8 UUID from the SHA-256 of its org and coverage.
pub fn rule_id(org_id: &str, covers: &str) -> Uuid {
    let digest =
        usage_core::keys::hash_secret(&format!("tollgate default rule\n{org_id}\n{covers}"));
    let n = u128::from_str_radix(digest.get(..32).unwrap_or("0"), 16).unwrap_or(0);
    let mut b = n.to_be_bytes();
    b[6] = (b[6] & 0x0f) | 0x80; // version 8: custom
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    Uuid::from_bytes(b)
}

/// The rules every org gets.
pub fn for_org(org_id: &str) -> Vec<DefaultRule> {
    let rule = |kind: RuleKind, name: &str, params: Value, severity| DefaultRule {
        org_id: org_id.to_string(),
        covers: format!("org/{}", kind.as_str()),
        name: name.to_string(),
        kind,
        params,
        severity,
    };
    vec![
        rule(
            RuleKind::SpendAnomaly,
            "Daily spend anomaly",
            json!({"window": "day", "sensitivity": 3, "min_spend_usd": "1"}),
            "medium",
        ),
        rule(
            RuleKind::ErrorRate,
            "Error rate above 5 %",
            json!({"threshold_percent": 5, "window_minutes": 15, "min_requests": 20}),
            "high",
        ),
        rule(
            RuleKind::UnpricedRequests,
            "Calls to unpriced models",
            json!({"threshold_count": 1, "window_minutes": 60}),
            "low",
        ),
    ]
}

/// The rule for a budget without soft thresholds.
pub fn for_budget(org_id: &str, budget_id: &str, budget_name: &str) -> DefaultRule {
    DefaultRule {
        org_id: org_id.to_string(),
        covers: format!("budget/{budget_id}"),
        name: format!("Budget {budget_name} at 80 %"),
        kind: RuleKind::BudgetThreshold,
        params: json!({"budget_id": budget_id, "percent": 80}),
        severity: "medium",
    }
}

/// The rule for a provider balance the org sees.
pub fn for_credits(org_id: &str, provider: &str) -> DefaultRule {
    DefaultRule {
        org_id: org_id.to_string(),
        covers: format!("credits/{provider}"),
        name: format!("{provider} credits run out within 7 days"),
        kind: RuleKind::CreditRunway,
        params: json!({"provider": provider, "min_days": 7}),
        severity: "high",
    }
}

/// Every default rule the scopes call for; `only_org` narrows it to one org.
fn wanted(
    scopes: &[ScopeRow],
    operator_orgs: &[String],
    only_org: Option<&str>,
) -> Vec<DefaultRule> {
    let mut out = Vec::new();
    let mut orgs_seen = HashSet::new();
    for s in scopes {
        match s.what.as_str() {
            "org" if orgs_seen.insert(s.org_id.clone()) => out.extend(for_org(&s.org_id)),
            "budget" => out.push(for_budget(&s.org_id, &s.id, &s.name)),
            "credits" if s.org_id.is_empty() => {
                out.extend(operator_orgs.iter().map(|o| for_credits(o, &s.id)));
            }
            "credits" => out.push(for_credits(&s.org_id, &s.id)),
            _ => {}
        }
    }
    let mut ids = HashSet::new();
    out.retain(|r| only_org.is_none_or(|o| r.org_id == o) && ids.insert(r.rule_id()));
    out
}

/// Writes the default rules that were never written (see the module docs), for every org or
/// only for `only_org`. `keys_client` reads the orgs from the key and token database.
pub async fn seed(
    client: &Client,
    keys_client: &Client,
    operator_orgs: &[String],
    only_org: Option<&str>,
    now: DateTime<Utc>,
) -> JobResult<Seeded> {
    let mut scopes = read_query(keys_client, &ORGS.body())
        .fetch_all::<ScopeRow>()
        .await?;
    scopes.extend(
        read_query(client, &SCOPES.body())
            .fetch_all::<ScopeRow>()
            .await?,
    );
    let mut wanted = wanted(&scopes, operator_orgs, only_org);
    if let Some(org) = only_org {
        if !wanted.iter().any(|r| r.covers.starts_with("org/")) {
            wanted.extend(for_org(org));
        }
    }
    if wanted.is_empty() {
        return Ok(Seeded::default());
    }
    let existing: HashSet<Uuid> = tollgate_clickhouse::alerts::rule_ids(client)
        .await?
        .into_iter()
        .collect();
    let mut rows = Vec::new();
    let mut created = Vec::new();
    for rule in wanted.iter().filter(|r| !existing.contains(&r.rule_id())) {
        rows.push(rule.row(now)?);
        created.push((rule.org_id.clone(), rule.name.clone()));
    }
    if !rows.is_empty() {
        write_rules(client, &rows).await?;
        tracing::info!(rules = rows.len(), "default alert rules created");
    }
    Ok(Seeded { created })
}

/// [`seed`] for one org that was just given a token or an app key, when
/// `evaluator.default_rules` is on, so its admins find the rules on their first visit. A
/// failure is logged, not returned: the token or key is already made, and the evaluator's
/// next tick creates the rules.
pub async fn seed_new_org(
    client: &Client,
    keys_client: &Client,
    config: &crate::config::EvaluatorConfig,
    org_id: &str,
) {
    if !config.default_rules || org_id.is_empty() {
        return;
    }
    let now = tollgate_clickhouse::now_second();
    if let Err(e) = seed(
        client,
        keys_client,
        &config.operator_orgs,
        Some(org_id),
        now,
    )
    .await
    {
        tracing::warn!(org_id, error = %e, "default alert rules not created yet; the evaluator retries");
    }
}

/// The evaluator's step: [`seed`] for every org, when `evaluator.default_rules` is on.
pub async fn seed_all(state: &Context, now: DateTime<Utc>) -> JobResult<Seeded> {
    let config = &state.config().evaluator;
    if !config.default_rules {
        return Ok(Seeded::default());
    }
    seed(
        state.client(),
        state.keys_client(),
        &config.operator_orgs,
        None,
        now,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(org: &str, what: &str, id: &str) -> ScopeRow {
        ScopeRow {
            org_id: org.into(),
            what: what.into(),
            id: id.into(),
            name: "n".into(),
        }
    }

    #[test]
    fn every_default_rule_passes_the_apis_validation() {
        let budget = Uuid::from_u128(9).to_string();
        let mut all = for_org("acme");
        all.push(for_budget("acme", &budget, "team"));
        all.push(for_credits("acme", "openrouter"));
        let now = usage_core::utc(2026, 3, 4, 12, 0, 0);
        for r in &all {
            let row = r.row(now).unwrap();
            assert_eq!(row.version, SEED_VERSION, "{}", r.name);
            assert_eq!(row.channels, ["dashboard"]);
            assert_eq!(rules::RuleKind::parse(&row.kind), Some(r.kind));
        }
    }

    #[test]
    fn ids_depend_on_org_and_coverage_only() {
        let a = for_org("acme");
        let b = for_org("acme");
        let c = for_org("beta");
        assert_eq!(a[0].rule_id(), b[0].rule_id());
        assert_ne!(a[0].rule_id(), a[1].rule_id());
        assert_ne!(a[0].rule_id(), c[0].rule_id());
        assert_eq!(a[0].rule_id().get_version_num(), 8);
    }

    #[test]
    fn the_deployments_balances_are_watched_by_operator_orgs_only() {
        let scopes = vec![
            scope("acme", "org", ""),
            scope("acme", "org", ""), // from app_keys as well as api_tokens
            scope("ops", "org", ""),
            scope("", "credits", "openrouter"),
            scope("acme", "credits", "openai"),
            scope("acme", "budget", "b1"),
        ];
        let w = wanted(&scopes, &["ops".to_string()], None);
        let covers: Vec<(String, String)> = w
            .iter()
            .map(|r| (r.org_id.clone(), r.covers.clone()))
            .collect();
        assert_eq!(covers.iter().filter(|(o, _)| o == "acme").count(), 5);
        assert!(covers.contains(&("ops".into(), "credits/openrouter".into())));
        assert!(!covers.contains(&("acme".into(), "credits/openrouter".into())));
        assert!(covers.contains(&("acme".into(), "budget/b1".into())));
        let only = wanted(&scopes, &["ops".to_string()], Some("ops"));
        assert!(only.iter().all(|r| r.org_id == "ops"));
        assert_eq!(only.len(), 4);
    }
}
