//! Provider responses shaped like the real thing parse to exact numbers, and price correctly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use chrono::{DateTime, Utc};
use usage_core::utc;
use usage_core::{
    parse_response, scan, CostSource, Endpoint, Nanos, ParsedUsage, PriceTable, SseScanner,
    TokenCounts,
};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn tokens(
    input: u32,
    cached_input: u32,
    cache_write: u32,
    output: u32,
    reasoning: u32,
) -> TokenCounts {
    TokenCounts {
        input,
        output,
        cached_input,
        cache_write,
        reasoning,
        ..Default::default()
    }
}

/// `price_call` with the arguments spelled out (standard tier, no tool calls).
fn price_simple(
    table: &PriceTable,
    provider: &str,
    model_served: &str,
    model_requested: &str,
    at: DateTime<Utc>,
    tokens: TokenCounts,
    provider_cost: Option<Nanos>,
) -> usage_core::Priced {
    usage_core::price_call(
        table,
        &usage_core::CallToPrice {
            provider,
            model_served,
            model_requested,
            at,
            service_tier: "",
            tokens,
            tools: Default::default(),
            provider_cost,
        },
    )
}

fn usd(s: &str) -> Nanos {
    Nanos::parse_usd(s).unwrap()
}

#[test]
fn openai_chat_with_cached_and_reasoning_tokens() {
    let r = parse_response(Endpoint::ChatCompletions, &fixture("openai_chat.json")).unwrap();
    assert_eq!(r.model.as_deref(), Some("o3-mini-2025-01-31"));
    assert_eq!(
        r.id.as_deref(),
        Some("chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG")
    );
    assert_eq!(
        r.usage,
        Some(ParsedUsage {
            tokens: tokens(1117, 1024, 0, 846, 768),
            tools: Default::default(),
            provider_cost: None
        })
    );
}

#[test]
fn openai_chat_stream_with_include_usage() {
    let s = scan(&fixture("openai_chat_stream.sse"));
    assert_eq!(s.model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
    assert_eq!(s.usage.unwrap().tokens, tokens(2150, 1920, 0, 312, 0));
    assert!(s.done && !s.truncated);
    assert_eq!((s.events, s.content_events), (6, 5));
    assert_eq!(s.error, None);
}

#[test]
fn a_stream_cut_before_its_usage_chunk() {
    let s = scan(&fixture("openai_chat_stream_cut.sse"));
    assert_eq!(s.model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
    assert_eq!(s.usage, None);
    assert!(!s.done && s.truncated);
    // four whole content chunks and the start of a fifth
    assert_eq!(s.estimated_output_tokens(), 5);
}

#[test]
fn responses_api_json_and_stream() {
    let r = parse_response(Endpoint::Responses, &fixture("openai_responses.json")).unwrap();
    assert_eq!(r.model.as_deref(), Some("gpt-4.1-2025-04-14"));
    assert_eq!(r.usage.unwrap().tokens, tokens(328, 128, 0, 52, 0));

    let s = scan(&fixture("openai_responses_stream.sse"));
    assert_eq!(s.model.as_deref(), Some("o4-mini-2025-04-16"));
    assert_eq!(
        s.id.as_deref(),
        Some("resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654")
    );
    assert_eq!(s.usage.unwrap().tokens, tokens(37, 0, 0, 411, 384));
    assert!(s.done && !s.truncated);
    assert_eq!(s.content_events, 2);
}

#[test]
fn embeddings() {
    let r = parse_response(Endpoint::Embeddings, &fixture("openai_embeddings.json")).unwrap();
    assert_eq!(r.model.as_deref(), Some("text-embedding-3-small"));
    assert_eq!(r.usage.unwrap().tokens, tokens(8123, 0, 0, 0, 0));
}

#[test]
fn openrouter_json_with_cost_cache_reads_and_writes() {
    let r = parse_response(Endpoint::ChatCompletions, &fixture("openrouter_chat.json")).unwrap();
    assert_eq!(r.model.as_deref(), Some("anthropic/claude-sonnet-4.5"));
    let u = r.usage.unwrap();
    assert_eq!(u.tokens, tokens(12450, 11000, 1200, 420, 0));
    assert_eq!(u.provider_cost, Some(Nanos::new(14_983_500)));
}

#[test]
fn openrouter_stream_with_comments_and_cost() {
    let s = scan(&fixture("openrouter_chat_stream.sse"));
    assert_eq!(s.model.as_deref(), Some("google/gemini-2.5-flash"));
    let u = s.usage.unwrap();
    assert_eq!(u.tokens, tokens(530, 256, 0, 1250, 1100));
    assert_eq!(u.provider_cost, Some(usd("0.003284")));
    assert!(s.done);
}

#[test]
fn fixtures_price_exactly_with_the_builtin_table() {
    let table = PriceTable::builtin().unwrap();
    let at = utc(2026, 11, 1, 0, 0, 0);

    let s = scan(&fixture("openai_chat_stream.sse"));
    let p = price_simple(
        &table,
        "openai",
        s.model.as_deref().unwrap(),
        "gpt-4o-mini",
        at,
        s.usage.unwrap().tokens,
        None,
    );
    // (2150 − 1920) × 0.15 + 1920 × 0.075 + 312 × 0.60, per 1M tokens
    assert_eq!(
        (p.cost, p.source),
        (usd("0.0003657"), CostSource::PriceTable)
    );
    assert_eq!(p.pricing_version, table.version());

    let r = parse_response(Endpoint::Embeddings, &fixture("openai_embeddings.json")).unwrap();
    let p = price_simple(
        &table,
        "openai",
        r.model.as_deref().unwrap(),
        "",
        at,
        r.usage.unwrap().tokens,
        None,
    );
    assert_eq!(p.cost, usd("0.00016246")); // 8123 × 0.02 / 1M

    let r = parse_response(Endpoint::ChatCompletions, &fixture("openrouter_chat.json")).unwrap();
    let u = r.usage.unwrap();
    let p = price_simple(
        &table,
        "openrouter",
        r.model.as_deref().unwrap(),
        "",
        at,
        u.tokens,
        u.provider_cost,
    );
    assert_eq!((p.cost, p.source), (usd("0.0149835"), CostSource::Provider));
}

#[test]
fn gpt_4o_mini_list_prices() {
    let table = PriceTable::builtin().unwrap();
    let at = utc(2026, 11, 1, 0, 0, 0);
    let p = price_simple(
        &table,
        "openai",
        "gpt-4o-mini",
        "",
        at,
        tokens(1_000_000, 0, 0, 1_000_000, 0),
        None,
    );
    assert_eq!(p.cost, usd("0.75")); // $0.15 input + $0.60 output per 1M
    let p = price_simple(
        &table,
        "openai",
        "gpt-4o-mini",
        "",
        at,
        tokens(10_000, 1_000, 0, 0, 0),
        None,
    );
    assert_eq!(p.cost, usd("0.001425")); // 9,000 at $0.15 + 1,000 at $0.075 per 1M
}

#[test]
fn byte_at_a_time_through_multibyte_characters() {
    for name in [
        "openai_chat_stream.sse",
        "openai_responses_stream.sse",
        "openrouter_chat_stream.sse",
    ] {
        let bytes = fixture(name);
        let mut s = SseScanner::new();
        for b in &bytes {
            s.feed(std::slice::from_ref(b));
        }
        assert_eq!(s.finish(), scan(&bytes), "{name}");
    }
}
