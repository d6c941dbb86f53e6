//! From what happened during a call to its [`UsageRecord`]. Every attempt yields one: success,
//! provider error, timeout, abort, refusal.

use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

use usage_core::{
    cost_of_call, effective_tier, CallToPrice, Endpoint, ErrorClass, ParsedUsage, PriceTable,
    TokenCounts, ToolCalls, UsageRecord, SCHEMA_VERSION,
};
use uuid::Uuid;

use crate::keys::AppKey;

/// Everything known about a finished (or abandoned) call.
#[derive(Clone, Debug)]
pub struct CallFacts {
    pub event_id: Uuid,
    pub started: DateTime<Utc>,
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
    /// The request's `service_tier` (empty if none).
    pub service_tier_requested: String,
    /// The response's `service_tier`.
    pub service_tier_served: Option<String>,
}

/// Builds the record, pricing it with `table` (`usage_core::cost_of_call`).
pub fn build_record(f: CallFacts, table: &PriceTable) -> UsageRecord {
    let model_served = f.model_served.unwrap_or_default();
    let tier =
        effective_tier(&f.service_tier_requested, f.service_tier_served.as_deref()).to_string();
    let c = cost_of_call(
        table,
        CallToPrice {
            provider: &f.provider,
            model_served: &model_served,
            model_requested: &f.model_requested,
            at: f.started,
            service_tier: &tier,
            tokens: TokenCounts::default(),
            tools: ToolCalls::default(),
            provider_cost: None,
        },
        f.usage.as_ref(),
        f.estimated,
    );
    let tokens = c.tokens;
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
        audio_input_tokens: tokens.audio_input,
        image_input_tokens: tokens.image_input,
        audio_output_tokens: tokens.audio_output,
        image_output_tokens: tokens.image_output,
        usage_source: c.usage_source,
        web_search_calls: c.tools.web_search,
        file_search_calls: c.tools.file_search,
        service_tier_requested: f.service_tier_requested,
        service_tier: tier,
        cost_nusd: c.cost,
        cost_source: c.cost_source,
        pricing_version: c.pricing_version,
        request_bytes: f.request_bytes,
        response_bytes: f.response_bytes,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use usage_core::utc;
    use usage_core::{CostSource, Nanos, UsageSource};

    pub(crate) fn facts() -> CallFacts {
        CallFacts {
            event_id: Uuid::from_u128(1 << 100),
            started: utc(2026, 11, 1, 10, 0, 0),
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
                tools: Default::default(),
                provider_cost: None,
            }),
            model_served: Some("gpt-4o-mini-2024-07-18".into()),
            estimated: None,
            request_bytes: 100,
            response_bytes: 200,
            service_tier_requested: String::new(),
            service_tier_served: None,
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
        assert_eq!(r.validate(utc(2026, 11, 1, 10, 1, 0)), Ok(()));
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
        assert_eq!(r.validate(utc(2026, 11, 1, 10, 1, 0)), Ok(()));
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
        assert_eq!(r.validate(utc(2026, 11, 1, 10, 1, 0)), Ok(()));
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
