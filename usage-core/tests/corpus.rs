//! The cost corpus: provider payloads shaped exactly as the providers document them, each with
//! the tokens by class and the cost worked out by hand, run through the code the edge runs
//! (`parse_response` / `SseScanner`, then `cost_of_call`).
//!
//! `tests/corpus/<case>.json` or `<case>.sse` is the provider's response body as sent;
//! `<case>.expect.json` says what call it answers and what Tollgate must record:
//!
//! ```json
//! { "describes": "…", "provider": "openai", "endpoint": "chat.completions",
//!   "model_requested": "gpt-4o", "service_tier_requested": "flex", "request_bytes": 0,
//!   "at": "2026-11-01T12:00:00Z",
//!   "expect": { "input": 0, "output": 0, "cached_input": 0, "cache_write": 0, "reasoning": 0,
//!               "audio_input": 0, "image_input": 0, "audio_output": 0, "image_output": 0,
//!               "web_search_calls": 0, "file_search_calls": 0, "service_tier": "",
//!               "model_served": "", "usage_source": "provider", "cost_source": "price_table",
//!               "cost_usd": "0.000000000", "truncated": false },
//!   "worked": "the arithmetic, by hand" }
//! ```
//!
//! Absent `expect` fields are 0 / "" / false, so every case states every class it has. Prices
//! come from `tests/corpus/prices.json`, not the shipped table, so that a price update never
//! changes an expected cost.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use usage_core::{
    cost_of_call, effective_tier, parse_response, scan, CallToPrice, Endpoint, Nanos, PriceTable,
    TokenCounts, ToolCalls,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    describes: String,
    provider: String,
    endpoint: String,
    model_requested: String,
    #[serde(default)]
    service_tier_requested: String,
    #[serde(default)]
    request_bytes: u64,
    #[serde(default, with = "usage_core::rfc3339::option")]
    at: Option<DateTime<Utc>>,
    expect: Expect,
    worked: String,
}

#[derive(Deserialize, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
struct Expect {
    input: u32,
    output: u32,
    cached_input: u32,
    cache_write: u32,
    reasoning: u32,
    audio_input: u32,
    image_input: u32,
    audio_output: u32,
    image_output: u32,
    web_search_calls: u32,
    file_search_calls: u32,
    service_tier: String,
    model_served: String,
    usage_source: String,
    cost_source: String,
    cost_usd: String,
    truncated: bool,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn prices() -> PriceTable {
    let text = std::fs::read_to_string(corpus_dir().join("prices.json")).unwrap();
    PriceTable::from_json(&text).unwrap_or_else(|e| panic!("corpus prices.json: {e}"))
}

/// Every case: (name, payload path, expectation).
fn cases() -> Vec<(String, PathBuf, Case)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(corpus_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".expect.json") else {
            continue;
        };
        let payload = ["json", "sse"]
            .iter()
            .map(|ext| corpus_dir().join(format!("{stem}.{ext}")))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{name}: no {stem}.json or {stem}.sse beside it"));
        let case: Case = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        out.push((stem.to_string(), payload, case));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// What Tollgate records for one case.
fn measure(table: &PriceTable, payload: &Path, case: &Case) -> Expect {
    let bytes = std::fs::read(payload).unwrap();
    let endpoint = Endpoint::parse(&case.endpoint)
        .unwrap_or_else(|| panic!("unknown endpoint {}", case.endpoint));
    let at = case.at.unwrap_or(usage_core::utc(2026, 11, 1, 12, 0, 0));
    let (usage, model, tier, estimated, truncated) =
        if payload.extension().is_some_and(|e| e == "sse") {
            let s = scan(&bytes);
            let estimated = s.usage.is_none().then(|| s.estimate(case.request_bytes));
            (s.usage, s.model, s.service_tier, estimated, s.truncated)
        } else {
            let r = parse_response(endpoint, &bytes).unwrap();
            (r.usage, r.model, r.service_tier, None, false)
        };
    let model_served = model.unwrap_or_default();
    let tier = effective_tier(&case.service_tier_requested, tier.as_deref()).to_string();
    let c = cost_of_call(
        table,
        CallToPrice {
            provider: &case.provider,
            model_served: &model_served,
            model_requested: &case.model_requested,
            at,
            service_tier: &tier,
            tokens: TokenCounts::default(),
            tools: ToolCalls::default(),
            provider_cost: None,
        },
        usage.as_ref(),
        estimated,
    );
    let t = c.tokens;
    Expect {
        input: t.input,
        output: t.output,
        cached_input: t.cached_input,
        cache_write: t.cache_write,
        reasoning: t.reasoning,
        audio_input: t.audio_input,
        image_input: t.image_input,
        audio_output: t.audio_output,
        image_output: t.image_output,
        web_search_calls: c.tools.web_search,
        file_search_calls: c.tools.file_search,
        service_tier: tier,
        model_served,
        usage_source: c.usage_source.as_str().to_string(),
        cost_source: c.cost_source.as_str().to_string(),
        cost_usd: c.cost.to_string(),
        truncated,
    }
}

#[test]
fn every_payload_is_measured_and_priced_as_worked_out_by_hand() {
    let table = prices();
    let cases = cases();
    assert!(cases.len() >= 40, "the corpus has {} cases", cases.len());
    let mut failures = Vec::new();
    for (name, payload, case) in &cases {
        assert!(
            !case.describes.is_empty() && !case.worked.is_empty(),
            "{name}: say what and how"
        );
        let mut expected = std::mem::take(&mut Expect::default());
        let e = &case.expect;
        expected.clone_from_expect(e);
        // The expected cost as written may have fewer than nine decimals.
        expected.cost_usd = Nanos::parse_usd(&e.cost_usd)
            .unwrap_or_else(|err| panic!("{name}: cost_usd {:?}: {err}", e.cost_usd))
            .to_string();
        let got = measure(&table, payload, case);
        if got != expected {
            failures.push(format!(
                "{name} ({}):\n  expected {expected:?}\n  got      {got:?}",
                case.describes
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

impl Expect {
    fn clone_from_expect(&mut self, e: &Expect) {
        *self = Expect {
            service_tier: e.service_tier.clone(),
            model_served: e.model_served.clone(),
            usage_source: if e.usage_source.is_empty() {
                "provider".into()
            } else {
                e.usage_source.clone()
            },
            cost_source: if e.cost_source.is_empty() {
                "price_table".into()
            } else {
                e.cost_source.clone()
            },
            cost_usd: e.cost_usd.clone(),
            ..*e
        };
    }
}
