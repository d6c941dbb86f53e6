//! A usage record as an OTLP span (`opentelemetry/proto/trace/v1/trace.proto`, field numbers
//! from opentelemetry-proto 1.11), following the GenAI semantic conventions for a client
//! inference call: kind `CLIENT`, name `{gen_ai.operation.name} {gen_ai.request.model}`,
//! start at the request's start, end at its last byte, status `ERROR` when it failed.
//!
//! | attribute | from the record |
//! |---|---|
//! | `gen_ai.operation.name` | endpoint: `chat` (chat completions, responses), `text_completion`, `embeddings`, else the endpoint's name |
//! | `gen_ai.provider.name` | `provider` (`openai`, `openrouter`, …) |
//! | `gen_ai.request.model`, `gen_ai.response.model` | `model_requested`, `model_served` (when known) |
//! | `gen_ai.request.stream` | `true` for streams (absent otherwise, as the conventions ask) |
//! | `gen_ai.usage.input_tokens`, `…output_tokens`, `…cache_read.input_tokens`, `…cache_write.input_tokens`, `…reasoning.output_tokens` | token counts, when the call has usage |
//! | `error.type`, `http.response.status_code` | `error_class` (failed calls), `status_code` |
//! | `tollgate.org_id`, `.user_id`, `.app_id`, `.key_id`, `.task_type`, `.edge_region`, `.endpoint`, `.event_id` | who and where |
//! | `tollgate.ttft_ms`, `tollgate.upstream_ms`, `tollgate.usage_source`, `tollgate.service_tier` | timings and provenance |
//! | `tollgate.cost.usd` (double), `tollgate.cost.nusd` (exact, int), `tollgate.cost.source`, `tollgate.pricing_version` | cost (absent for unpriced calls: unknown, not zero) |
//! | `gen_ai.usage.cost.amount`, `…currency` (`USD`), `…source` (`provider` or `local`) | with `otlp.genai_cost_attributes`: the names proposed in semantic-conventions-genai#443 |
//! | `tollgate.tag.<name>` | each of the call's tags |
//!
//! Ids: the trace id is the record's `event_id` (16 bytes), the span id its last 8 bytes —
//! stable, so a retried export carries the same ids.

use tollgate_clickhouse::EncodedEvent;
use usage_core::{CostSource, Endpoint, ErrorClass, UsageRecord, UsageSource};

use super::proto::Message;
use super::OtlpConfig;

const SPAN_KIND_CLIENT: u64 = 3;
const STATUS_CODE_ERROR: u64 = 2;

/// One `ExportTraceServiceRequest` holding a span per record (records that do not decode are
/// left out and logged: they were stored, so they decoded once; this is a bug guard).
pub fn export_request(records: &[EncodedEvent], config: &OtlpConfig) -> Vec<u8> {
    let mut scope_spans = Message::new();
    let mut scope = Message::new();
    scope
        .string(1, "tollgate-collector")
        .string(2, env!("CARGO_PKG_VERSION"));
    scope_spans.message(1, &scope);
    for row in records {
        let decoded = row
            .decode()
            .map_err(|e| e.to_string())
            .and_then(|r| UsageRecord::try_from(&r).map_err(|e| e.to_string()));
        match decoded {
            Ok(record) => {
                scope_spans.message(2, &span(&record, config));
            }
            Err(e) => tracing::error!(error = %e, "stored record not exported: it does not decode"),
        }
    }
    let mut resource = Message::new();
    attr_str(&mut resource, 1, "service.name", &config.service_name);
    attr_str(
        &mut resource,
        1,
        "service.version",
        env!("CARGO_PKG_VERSION"),
    );
    let mut resource_spans = Message::new();
    resource_spans
        .message(1, &resource)
        .message(2, &scope_spans);
    let mut request = Message::new();
    request.message(1, &resource_spans);
    request.into_bytes()
}

/// The GenAI operation of an endpoint.
pub fn operation(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::ChatCompletions | Endpoint::Responses => "chat",
        Endpoint::Completions => "text_completion",
        Endpoint::Embeddings => "embeddings",
        other => other.as_str(),
    }
}

fn span(r: &UsageRecord, config: &OtlpConfig) -> Message {
    let id = r.event_id.as_bytes();
    let start = r.ts.timestamp_nanos_opt().unwrap_or(0).max(0) as u64;
    let end = start + u64::from(r.latency_ms) * 1_000_000;
    let op = operation(r.endpoint);
    let mut s = Message::new();
    s.bytes(1, id)
        .bytes(2, &id[8..])
        .string(5, &format!("{op} {}", r.model_requested))
        .uint(6, SPAN_KIND_CLIENT)
        .fixed64(7, start)
        .fixed64(8, end);
    let a = &mut s;
    attr_str(a, 9, "gen_ai.operation.name", op);
    attr_str(a, 9, "gen_ai.provider.name", &r.provider);
    attr_str(a, 9, "gen_ai.request.model", &r.model_requested);
    if !r.model_served.is_empty() {
        attr_str(a, 9, "gen_ai.response.model", &r.model_served);
    }
    if r.stream {
        attr_bool(a, 9, "gen_ai.request.stream", true);
    }
    if r.usage_source != UsageSource::None {
        attr_int(a, 9, "gen_ai.usage.input_tokens", r.input_tokens.into());
        attr_int(a, 9, "gen_ai.usage.output_tokens", r.output_tokens.into());
        attr_int(
            a,
            9,
            "gen_ai.usage.cache_read.input_tokens",
            r.cached_input_tokens.into(),
        );
        attr_int(
            a,
            9,
            "gen_ai.usage.cache_write.input_tokens",
            r.cache_write_tokens.into(),
        );
        attr_int(
            a,
            9,
            "gen_ai.usage.reasoning.output_tokens",
            r.reasoning_tokens.into(),
        );
    }
    if r.status_code != 0 {
        attr_int(a, 9, "http.response.status_code", r.status_code.into());
    }
    if r.error_class != ErrorClass::None {
        attr_str(a, 9, "error.type", r.error_class.as_str());
    }
    attr_str(a, 9, "tollgate.event_id", &r.event_id.to_string());
    for (key, value) in [
        ("tollgate.org_id", &r.org_id),
        ("tollgate.user_id", &r.user_id),
        ("tollgate.app_id", &r.app_id),
        ("tollgate.key_id", &r.key_id),
        ("tollgate.task_type", &r.task_type),
        ("tollgate.edge_region", &r.edge_region),
        ("tollgate.service_tier", &r.service_tier),
    ] {
        if !value.is_empty() {
            attr_str(a, 9, key, value);
        }
    }
    attr_str(a, 9, "tollgate.endpoint", r.endpoint.as_str());
    attr_str(a, 9, "tollgate.usage_source", r.usage_source.as_str());
    if let Some(t) = r.ttft_ms {
        attr_int(a, 9, "tollgate.ttft_ms", t.into());
    }
    attr_int(a, 9, "tollgate.upstream_ms", r.upstream_ms.into());
    attr_str(a, 9, "tollgate.cost.source", r.cost_source.as_str());
    if r.cost_source != CostSource::Unpriced {
        let nusd = r.cost_nusd.get();
        let usd = nusd as f64 / 1e9;
        attr_double(a, 9, "tollgate.cost.usd", usd);
        attr_int(a, 9, "tollgate.cost.nusd", nusd);
        if !r.pricing_version.is_empty() {
            attr_str(a, 9, "tollgate.pricing_version", &r.pricing_version);
        }
        if config.genai_cost_attributes {
            attr_double(a, 9, "gen_ai.usage.cost.amount", usd);
            attr_str(a, 9, "gen_ai.usage.cost.currency", "USD");
            let source = match r.cost_source {
                CostSource::Provider => "provider",
                _ => "local",
            };
            attr_str(a, 9, "gen_ai.usage.cost.source", source);
        }
    }
    for (k, v) in &r.tags {
        attr_str(a, 9, &format!("tollgate.tag.{k}"), v);
    }
    if r.error_class != ErrorClass::None {
        let mut status = Message::new();
        status
            .string(2, r.error_class.as_str())
            .uint(3, STATUS_CODE_ERROR);
        s.message(15, &status);
    }
    s
}

fn key_value(key: &str, value: &Message) -> Message {
    let mut kv = Message::new();
    kv.string(1, key).message(2, value);
    kv
}

fn attr_str(m: &mut Message, field: u32, key: &str, v: &str) {
    let mut value = Message::new();
    value.string(1, v);
    m.message(field, &key_value(key, &value));
}

fn attr_bool(m: &mut Message, field: u32, key: &str, v: bool) {
    let mut value = Message::new();
    value.bool(2, v);
    m.message(field, &key_value(key, &value));
}

fn attr_int(m: &mut Message, field: u32, key: &str, v: i64) {
    let mut value = Message::new();
    value.int64(3, v);
    m.message(field, &key_value(key, &value));
}

fn attr_double(m: &mut Message, field: u32, key: &str, v: f64) {
    let mut value = Message::new();
    value.double(4, v);
    m.message(field, &key_value(key, &value));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_value_is_encoded_as_the_proto_says() {
        // KeyValue{key:"a", value: AnyValue{int_value: 5}} = 0a 01 61 12 02 18 05.
        let mut m = Message::new();
        attr_int(&mut m, 1, "a", 5);
        assert_eq!(
            m.into_bytes(),
            [0x0a, 0x07, 0x0a, 0x01, 0x61, 0x12, 0x02, 0x18, 0x05]
        );
    }

    #[test]
    fn operations_follow_the_genai_conventions() {
        assert_eq!(operation(Endpoint::ChatCompletions), "chat");
        assert_eq!(operation(Endpoint::Responses), "chat");
        assert_eq!(operation(Endpoint::Embeddings), "embeddings");
        assert_eq!(operation(Endpoint::Completions), "text_completion");
    }
}
