//! Properties that must hold for all inputs, not just the fixtures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use chrono::DateTime;
use std::collections::BTreeMap;

use proptest::prelude::*;
use usage_core::record::SCHEMA_VERSION;
use usage_core::wire::{self, BatchFormat, SignatureError};
use usage_core::{
    scan, CostSource, Endpoint, ErrorClass, Nanos, SseScanner, UsageRecord, UsageSource,
};
use uuid::Uuid;

const SSE_FIXTURES: &[&str] = &[
    "openai_chat_stream.sse",
    "openai_chat_stream_cut.sse",
    "openai_responses_stream.sse",
    "openrouter_chat_stream.sse",
];

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every chunking of every SSE fixture gives the same summary as feeding it whole.
    #[test]
    fn sse_chunking_never_changes_the_result(
        which in 0..SSE_FIXTURES.len(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
    ) {
        let bytes = fixture(SSE_FIXTURES[which]);
        let whole = scan(&bytes);
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        points.sort_unstable();
        let mut s = SseScanner::new();
        let mut start = 0;
        for p in points {
            s.feed(&bytes[start..p]);
            start = p;
        }
        s.feed(&bytes[start..]);
        prop_assert_eq!(s.finish(), whole);
    }

    /// The scanner never panics on arbitrary bytes, however chunked.
    #[test]
    fn sse_survives_garbage(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..16)) {
        let mut s = SseScanner::new();
        for c in &chunks {
            s.feed(c);
        }
        let _ = s.finish();
    }

    #[test]
    fn records_round_trip_through_json(r in any_record()) {
        let json = serde_json::to_string(&r).unwrap();
        let back: UsageRecord = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, r);
    }

    #[test]
    fn batches_round_trip(records in prop::collection::vec(any_record(), 1..20), ndjson in any::<bool>(), gz in any::<bool>()) {
        let format = if ndjson { BatchFormat::Ndjson } else { BatchFormat::JsonArray };
        let mut body = wire::encode_batch(&records, format);
        if gz {
            body = wire::gunzip(&wire::gzip(&body), 1 << 24).unwrap();
        }
        let back: Vec<UsageRecord> = wire::decode_batch(&body, 100)
            .unwrap()
            .into_iter()
            .map(|d| d.record.unwrap())
            .collect();
        prop_assert_eq!(back, records);
    }

    /// Any change to the body, and any timestamp outside the window, fails verification.
    #[test]
    fn tampered_or_stale_batches_fail(
        body in prop::collection::vec(any::<u8>(), 1..512),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
        skew in 301i64..100_000,
        late in any::<bool>(),
    ) {
        let now = 1_800_000_000;
        let header = wire::sign(b"secret", now, &body);
        prop_assert_eq!(wire::verify(Some(&header), &body, &[b"secret"], now, 300), Ok(()));
        let mut tampered = body.clone();
        let i = flip.index(tampered.len());
        tampered[i] ^= 1 << bit;
        prop_assert_eq!(wire::verify(Some(&header), &tampered, &[b"secret"], now, 300), Err(SignatureError::Mismatch));
        let at = if late { now + skew } else { now - skew };
        let stale = wire::verify(Some(&header), &body, &[b"secret"], at, 300);
        prop_assert!(matches!(stale, Err(SignatureError::Stale { .. })), "{:?}", stale);
    }
}

fn ident() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_.:/-]{1,24}"
}

fn any_record() -> impl Strategy<Value = UsageRecord> {
    let who = (
        ident(),
        prop::option::of(ident()),
        ident(),
        ident(),
        prop::collection::btree_map("[a-z]{1,8}", "[ -~]{0,16}", 0..4),
    );
    let what = (
        ident(),
        ident(),
        ident(),
        prop::sample::select(Endpoint::ALL),
        ident(),
        any::<bool>(),
        "[A-Z]{0,3}",
    );
    let outcome = (100u16..600, prop::sample::select(ErrorClass::ALL));
    let tokens = (
        any::<u32>(),
        any::<u32>(),
        0u32..=100,
        0u32..=100,
        0u32..=100,
        prop::sample::select(vec![UsageSource::Provider, UsageSource::Estimated]),
    );
    let money = (
        0i64..i64::MAX,
        prop::sample::select(CostSource::ALL),
        "pt-[0-9a-f]{12}",
    );
    let time = (
        0i64..4_000_000_000,
        any::<u32>(),
        prop::option::of(any::<u32>()),
        any::<u32>(),
        any::<u128>(),
    );
    (
        who,
        what,
        outcome,
        tokens,
        money,
        time,
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            |(
                (org, user, app, key, tags),
                (provider, req, served, endpoint, task, stream, region),
                (status, class),
                (input, output, c, w, r, usage_source),
                (cost, cost_source, version),
                (ts, latency, ttft, upstream, id),
                rq,
                rs,
            )| {
                let input_u = u64::from(input);
                UsageRecord {
                    event_id: Uuid::from_u128(id),
                    schema_version: SCHEMA_VERSION,
                    ts: DateTime::from_timestamp_secs(ts).unwrap(),
                    latency_ms: latency,
                    ttft_ms: ttft,
                    upstream_ms: upstream,
                    org_id: org,
                    user_id: user.unwrap_or_default(),
                    app_id: app,
                    key_id: key,
                    tags: tags.into_iter().collect::<BTreeMap<_, _>>(),
                    provider,
                    model_requested: req,
                    model_served: served,
                    endpoint,
                    task_type: task,
                    stream,
                    edge_region: region,
                    status_code: status,
                    error_class: class,
                    input_tokens: input,
                    output_tokens: output,
                    cached_input_tokens: (input_u * u64::from(c) / 200) as u32,
                    cache_write_tokens: (input_u * u64::from(w) / 200) as u32,
                    reasoning_tokens: (u64::from(output) * u64::from(r) / 100) as u32,
                    audio_input_tokens: 0,
                    image_input_tokens: 0,
                    audio_output_tokens: 0,
                    image_output_tokens: 0,
                    web_search_calls: 0,
                    file_search_calls: 0,
                    service_tier_requested: String::new(),
                    service_tier: String::new(),
                    usage_source,
                    cost_nusd: Nanos::new(cost),
                    cost_source,
                    pricing_version: version,
                    request_bytes: rq,
                    response_bytes: rs,
                }
            },
        )
}
