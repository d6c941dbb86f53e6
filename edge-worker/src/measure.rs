//! From what happened during a call to its [`UsageRecord`]. Every attempt yields one: success,
//! provider error, timeout, abort, refusal.

use std::collections::BTreeMap;

use time::OffsetDateTime;
use usage_core::{
    price_call, Endpoint, ErrorClass, Nanos, ParsedUsage, PriceTable, TokenCounts, UsageRecord,
    UsageSource, SCHEMA_VERSION,
};
use uuid::Uuid;

use crate::keys::AppKey;

/// Everything known about a finished (or abandoned) call.
#[derive(Clone, Debug)]
pub struct CallFacts {
    pub event_id: Uuid,
    pub started: OffsetDateTime,
    pub latency_ms: u32,
    pub ttft_ms: Option<u32>,
    pub upstream_ms: u32,
    pub key: AppKey,
    /// `x-tollgate-user`, which wins over the key's user.
    pub user: Option<String>,
    pub task: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub provider: String,
    pub model_requested: String,
    pub endpoint: Endpoint,
    pub stream: bool,
    pub edge_region: String,
    pub status_code: u16,
    pub error_class: ErrorClass,
    /// What the provider reported.
    pub usage: Option<ParsedUsage>,
    pub model_served: Option<String>,
    /// Tollgate's estimate when the provider reported nothing (a cut stream).
    pub estimated: Option<TokenCounts>,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

/// Estimated input tokens of a request body: about four bytes per token of JSON text.
pub fn estimate_input_tokens(request_bytes: u64) -> u32 {
    u32::try_from(request_bytes / 4).unwrap_or(u32::MAX)
}

/// Builds the record, pricing it with `table`.
pub fn build_record(f: CallFacts, table: &PriceTable) -> UsageRecord {
    let (tokens, provider_cost, usage_source) = match (&f.usage, f.estimated) {
        (Some(u), _) => (u.tokens, u.provider_cost, UsageSource::Provider),
        (None, Some(e)) if e.input > 0 || e.output > 0 => (e, None, UsageSource::Estimated),
        _ => (TokenCounts::default(), None, UsageSource::None),
    };
    let model_served = f.model_served.unwrap_or_default();
    let priced = price_call(
        table,
        &f.provider,
        &model_served,
        &f.model_requested,
        f.started,
        tokens,
        provider_cost,
    );
    // Nothing consumed and nothing reported: nothing billed, whether or not the model is known.
    let (cost, source, version) = if tokens == TokenCounts::default() && provider_cost.is_none() {
        (
            Nanos::ZERO,
            usage_core::CostSource::PriceTable,
            table.version().to_string(),
        )
    } else {
        (priced.cost, priced.source, priced.pricing_version)
    };
    let upstream_ms = f.upstream_ms.min(f.latency_ms);
    UsageRecord {
        event_id: f.event_id,
        schema_version: SCHEMA_VERSION,
        ts: f.started,
        latency_ms: f.latency_ms,
        ttft_ms: f.ttft_ms.map(|t| t.min(f.latency_ms)),
        upstream_ms,
        org_id: f.key.org_id,
        user_id: f.user.unwrap_or(f.key.user_id),
        app_id: f.key.app_id,
        key_id: f.key.key_id,
        tags: f.tags,
        provider: f.provider,
        model_requested: f.model_requested,
        model_served,
        endpoint: f.endpoint,
        task_type: f
            .task
            .unwrap_or_else(|| f.endpoint.default_task_type().to_string()),
        stream: f.stream,
        edge_region: f.edge_region,
        status_code: f.status_code,
        error_class: f.error_class,
        input_tokens: tokens.input,
        output_tokens: tokens.output,
        cached_input_tokens: tokens.cached_input,
        cache_write_tokens: tokens.cache_write,
        reasoning_tokens: tokens.reasoning,
        usage_source,
        cost_nusd: cost,
        cost_source: source,
        pricing_version: version,
        request_bytes: f.request_bytes,
        response_bytes: f.response_bytes,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use time::macros::datetime;
    use usage_core::CostSource;

    pub(crate) fn facts() -> CallFacts {
        CallFacts {
            event_id: Uuid::from_u128(1 << 100),
            started: datetime!(2026-11-01 10:00 UTC),
            latency_ms: 900,
            ttft_ms: Some(150),
            upstream_ms: 880,
            key: AppKey {
                key_id: "k1".into(),
                org_id: "acme".into(),
                user_id: "svc".into(),
                app_id: "bot".into(),
                acts_for_end_users: true,
                revoked: false,
            },
            user: Some("alice".into()),
            task: None,
            tags: BTreeMap::new(),
            provider: "openai".into(),
            model_requested: "gpt-4o-mini".into(),
            endpoint: Endpoint::ChatCompletions,
            stream: true,
            edge_region: "FRA".into(),
            status_code: 200,
            error_class: ErrorClass::None,
            usage: Some(ParsedUsage {
                tokens: TokenCounts {
                    input: 1_000_000,
                    output: 1_000_000,
                    ..Default::default()
                },
                provider_cost: None,
            }),
            model_served: Some("gpt-4o-mini-2024-07-18".into()),
            estimated: None,
            request_bytes: 100,
            response_bytes: 200,
        }
    }

    #[test]
    fn a_successful_call_is_priced_and_attributed() {
        let table = PriceTable::builtin().unwrap();
        let r = build_record(facts(), &table);
        assert_eq!(r.cost_nusd, Nanos::parse_usd("0.75").unwrap());
        assert_eq!(
            (r.cost_source, r.usage_source),
            (CostSource::PriceTable, UsageSource::Provider)
        );
        assert_eq!(r.user_id, "alice");
        assert_eq!(r.task_type, "chat");
        assert_eq!(r.pricing_version, table.version());
        assert_eq!(r.validate(datetime!(2026-11-01 10:01 UTC)), Ok(()));
    }

    #[test]
    fn a_cut_stream_is_estimated_and_an_unknown_model_is_unpriced() {
        let table = PriceTable::builtin().unwrap();
        let mut f = facts();
        f.usage = None;
        f.error_class = ErrorClass::Aborted;
        f.estimated = Some(TokenCounts {
            input: 25,
            output: 4,
            ..Default::default()
        });
        let r = build_record(f.clone(), &table);
        assert_eq!(
            (r.usage_source, r.input_tokens, r.output_tokens),
            (UsageSource::Estimated, 25, 4)
        );
        assert_eq!(r.cost_source, CostSource::PriceTable);
        assert!(r.cost_nusd > Nanos::ZERO);

        f.model_requested = "gpt-unknown".into();
        f.model_served = None;
        let r = build_record(f, &table);
        assert_eq!(
            (r.cost_source, r.cost_nusd),
            (CostSource::Unpriced, Nanos::ZERO)
        );
        assert_eq!(r.validate(datetime!(2026-11-01 10:01 UTC)), Ok(()));
    }

    #[test]
    fn a_refused_call_costs_nothing_and_says_so() {
        let table = PriceTable::builtin().unwrap();
        let mut f = facts();
        f.usage = None;
        f.model_served = None;
        f.status_code = 500;
        f.error_class = ErrorClass::Upstream5xx;
        f.model_requested = "gpt-unknown".into();
        let r = build_record(f, &table);
        assert_eq!(
            (r.cost_nusd, r.cost_source, r.usage_source),
            (Nanos::ZERO, CostSource::PriceTable, UsageSource::None)
        );
        assert_eq!(r.validate(datetime!(2026-11-01 10:01 UTC)), Ok(()));
    }

    #[test]
    fn openrouter_reported_cost_wins() {
        let table = PriceTable::builtin().unwrap();
        let mut f = facts();
        f.provider = "openrouter".into();
        f.usage.as_mut().unwrap().provider_cost = Some(Nanos::new(1234));
        let r = build_record(f, &table);
        assert_eq!(
            (r.cost_nusd, r.cost_source),
            (Nanos::new(1234), CostSource::Provider)
        );
        assert!(r.pricing_version.is_empty());
    }
}
