//! Records for tests: valid, distinct by id, and close to "now".

use chrono::{DateTime, Timelike, Utc};
use std::collections::BTreeMap;

use usage_core::{
    CostSource, Endpoint, ErrorClass, Nanos, UsageRecord, UsageSource, SCHEMA_VERSION,
};
use uuid::Uuid;

const ID_PREFIX: u128 = 0x0190_0000_0000_7000_8000 << 48;
const ID_MASK: u128 = (1 << 48) - 1;

/// The (UUIDv7-shaped, never nil) event id of test record `id`.
pub fn event_id(id: u128) -> Uuid {
    Uuid::from_u128(ID_PREFIX | (id & ID_MASK))
}

/// The test number of an event id made by [`event_id`].
pub fn id_of(event_id: Uuid) -> u128 {
    event_id.as_u128() & ID_MASK
}

/// A valid record whose `event_id` is [`event_id`]`(id)`.
pub fn record(id: u128) -> UsageRecord {
    let now = Utc::now()
        .with_nanosecond(0)
        .unwrap_or(DateTime::UNIX_EPOCH);
    UsageRecord {
        event_id: event_id(id),
        schema_version: SCHEMA_VERSION,
        ts: now,
        latency_ms: 420,
        ttft_ms: Some(80),
        upstream_ms: 400,
        org_id: format!("org_{}", id % 3),
        user_id: format!("user_{}", id % 5),
        app_id: "app".into(),
        key_id: "key_1".into(),
        tags: BTreeMap::new(),
        provider: "openai".into(),
        model_requested: "gpt-4o-mini".into(),
        model_served: "gpt-4o-mini-2024-07-18".into(),
        endpoint: Endpoint::ChatCompletions,
        task_type: "chat".into(),
        stream: id.is_multiple_of(2),
        edge_region: "FRA".into(),
        status_code: 200,
        error_class: ErrorClass::None,
        input_tokens: 1000 + (id % 100) as u32,
        output_tokens: 200,
        cached_input_tokens: 100,
        cache_write_tokens: 0,
        reasoning_tokens: 0,
        audio_input_tokens: 0,
        image_input_tokens: 0,
        audio_output_tokens: 0,
        image_output_tokens: 0,
        web_search_calls: 0,
        file_search_calls: 0,
        service_tier_requested: String::new(),
        service_tier: String::new(),
        usage_source: UsageSource::Provider,
        cost_nusd: Nanos::new(270_000 + (id % 100) as i64 * 150),
        cost_source: CostSource::PriceTable,
        pricing_version: "pt-test".into(),
        request_bytes: 900,
        response_bytes: 1500,
    }
}
