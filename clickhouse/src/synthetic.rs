//! Deterministic synthetic usage records: the rollup tests' fixtures and the benchmark's data.
//!
//! [`Synthetic`] yields valid `UsageRecord`s (they pass `UsageRecord::validate` for a `now`
//! after the generated range) with a realistic shape: a few orgs, users who stick to one app
//! and a couple of models, skewed so that a few users make most calls — which is what makes
//! rollups small. The first [`COVERAGE`] records cover every error class, usage and cost
//! source, endpoint, every token class, streams with and without a first byte, an empty
//! `model_served` and unpriced calls, whatever the seed.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use usage_core::{
    CostSource, Endpoint, ErrorClass, Nanos, UsageRecord, UsageSource, SCHEMA_VERSION,
};
use uuid::Uuid;

/// How many leading records are the hand-picked coverage set.
pub const COVERAGE: usize = 12;

/// The shape of the generated data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape {
    pub orgs: u32,
    pub users_per_org: u32,
    pub apps_per_org: u32,
    /// Records are spread evenly over `[start, start + span)`.
    pub start: DateTime<Utc>,
    pub span: TimeDelta,
}

const PROVIDERS: &[(&str, &[&str])] = &[
    (
        "openai",
        &["gpt-4o", "gpt-4o-mini", "o3-mini", "text-embedding-3-small"],
    ),
    (
        "openrouter",
        &[
            "anthropic/claude-sonnet-4-5",
            "google/gemini-2.5-flash",
            "meta-llama/llama-3.3-70b",
        ],
    ),
    ("azure", &["gpt-4o"]),
];
const TASKS: &[&str] = &["chat", "summarize", "extract", "embedding"];
const REGIONS: &[&str] = &["FRA", "IAD", "SIN", "GRU"];

/// A deterministic stream of records.
#[derive(Clone, Debug)]
pub struct Synthetic {
    shape: Shape,
    rng: u64,
    index: u64,
    count: u64,
}

impl Synthetic {
    /// `count` records of `shape` from `seed`.
    pub fn new(seed: u64, count: u64, shape: Shape) -> Synthetic {
        Synthetic {
            shape,
            rng: seed ^ 0x9E37_79B9_7F4A_7C15,
            index: 0,
            count,
        }
    }

    /// xorshift64*: fast, deterministic, good enough for test data.
    fn next_u64(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// Skewed pick in `0..n`: low indexes are much more likely (a few heavy users).
    fn skewed(&mut self, n: u64) -> u64 {
        let a = self.below(n);
        let b = self.below(n);
        a.min(b)
    }

    fn record(&mut self, i: u64) -> UsageRecord {
        let shape = self.shape.clone();
        let span_ms = shape.span.num_milliseconds().max(1) as u64;
        let offset_ms = if self.count <= 1 {
            0
        } else {
            i * (span_ms - 1) / (self.count - 1)
        };
        let ts = shape.start + TimeDelta::milliseconds(offset_ms as i64);
        let org = self.skewed(u64::from(shape.orgs));
        let user = self.skewed(u64::from(shape.users_per_org));
        // A user sticks to one app, and to the provider and models of that app.
        let app = (user * 7 + org) % u64::from(shape.apps_per_org.max(1));
        let (provider, models) = PROVIDERS[((app + org) % PROVIDERS.len() as u64) as usize];
        let model = models[(self.skewed(models.len() as u64)) as usize];
        let task = if model.contains("embedding") {
            "embedding"
        } else {
            TASKS[((user + app) % 3) as usize]
        };
        let endpoint = if task == "embedding" {
            Endpoint::Embeddings
        } else {
            Endpoint::ChatCompletions
        };
        let stream = endpoint == Endpoint::ChatCompletions && self.below(3) > 0;

        let roll = self.below(1000);
        let error_class = match roll {
            0..=19 => ErrorClass::RateLimited,
            20..=27 => ErrorClass::Upstream5xx,
            28..=31 => ErrorClass::Timeout,
            32..=36 if stream => ErrorClass::Aborted,
            37..=41 => ErrorClass::Client,
            42..=43 => ErrorClass::BudgetBlocked,
            44 => ErrorClass::Network,
            45 => ErrorClass::Internal,
            _ => ErrorClass::None,
        };
        let latency_ms =
            150 + self.below(4000) as u32 + if model.starts_with("o3") { 5000 } else { 0 };
        let mut r = base_record(
            i, ts, org, user, app, provider, model, task, endpoint, stream, latency_ms,
        );
        r.edge_region = REGIONS[(org % REGIONS.len() as u64) as usize].to_string();
        match error_class {
            ErrorClass::None | ErrorClass::Aborted => {
                let input = 50 + self.below(6000) as u32;
                let output = if endpoint == Endpoint::Embeddings {
                    0
                } else {
                    10 + self.below(1500) as u32
                };
                r.input_tokens = input;
                r.output_tokens = output;
                r.cached_input_tokens = if self.below(3) == 0 { input / 2 } else { 0 };
                r.cache_write_tokens = if self.below(10) == 0 { input / 4 } else { 0 };
                r.reasoning_tokens = if model.starts_with("o3") {
                    output / 2
                } else {
                    0
                };
                r.ttft_ms = if stream {
                    Some(40 + (self.below(u64::from(latency_ms / 2)) as u32))
                } else {
                    None
                };
                if error_class == ErrorClass::Aborted {
                    r.usage_source = UsageSource::Estimated;
                    r.status_code = 200;
                }
                r.cost_nusd = Nanos::new(i64::from(input) * 2_500 + i64::from(output) * 10_000);
                if model.starts_with("meta-llama") && self.below(2) == 0 {
                    r.cost_source = CostSource::Unpriced;
                    r.cost_nusd = Nanos::ZERO;
                    r.pricing_version = String::new();
                } else if provider == "openrouter" {
                    r.cost_source = CostSource::Provider;
                }
            }
            other => {
                r.error_class = other;
                r.status_code = match other {
                    ErrorClass::RateLimited => 429,
                    ErrorClass::Upstream5xx => 502,
                    ErrorClass::Timeout => 504,
                    ErrorClass::Client => 400,
                    _ => 0,
                };
                r.usage_source = UsageSource::None;
                r.cost_source = CostSource::PriceTable;
                r.cost_nusd = Nanos::ZERO;
                r.model_served = String::new();
                r.ttft_ms = None;
                r.response_bytes = 120;
            }
        }
        if r.error_class == ErrorClass::None {
            r.error_class = error_class;
        }
        r
    }
}

#[allow(clippy::too_many_arguments)]
fn base_record(
    i: u64,
    ts: DateTime<Utc>,
    org: u64,
    user: u64,
    app: u64,
    provider: &str,
    model: &str,
    task: &str,
    endpoint: Endpoint,
    stream: bool,
    latency_ms: u32,
) -> UsageRecord {
    let millis = (ts.timestamp_nanos_opt().unwrap_or(i64::MAX) / 1_000_000) as u128;
    // UUIDv7 layout: 48-bit millis, version 7, variant 10, then the index.
    let event_id =
        Uuid::from_u128((millis << 80) | (0x7u128 << 76) | (0x8u128 << 60) | u128::from(i));
    let model_served = match provider {
        "openai" | "azure" if !model.contains('/') => format!("{model}-2024-08-06"),
        _ => model.to_string(),
    };
    UsageRecord {
        event_id,
        schema_version: SCHEMA_VERSION,
        ts,
        latency_ms,
        ttft_ms: None,
        upstream_ms: latency_ms.saturating_sub(20),
        org_id: format!("org_{org:03}"),
        user_id: if user % 11 == 10 {
            String::new()
        } else {
            format!("user_{org:03}_{user:04}")
        },
        app_id: format!("app_{org:03}_{app}"),
        key_id: format!("key_{org:03}_{app}"),
        tags: if user.is_multiple_of(2) {
            BTreeMap::from([
                ("env".to_string(), "prod".to_string()),
                ("team".to_string(), format!("t{}", user % 5)),
            ])
        } else {
            BTreeMap::new()
        },
        provider: provider.to_string(),
        model_requested: model.to_string(),
        model_served,
        endpoint,
        task_type: task.to_string(),
        stream,
        edge_region: String::new(),
        status_code: 200,
        error_class: ErrorClass::None,
        input_tokens: 0,
        output_tokens: 0,
        cached_input_tokens: 0,
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
        cost_nusd: Nanos::ZERO,
        cost_source: CostSource::PriceTable,
        pricing_version: "pt-synthetic0001".to_string(),
        request_bytes: 300 + (i % 700),
        response_bytes: 900 + (i % 3000),
    }
}

/// The hand-picked records that every fixture starts with (see the module docs).
fn coverage(i: u64, shape: &Shape) -> UsageRecord {
    let ts = shape.start + TimeDelta::minutes(i as i64 * 7);
    let mut r = base_record(
        i,
        ts,
        0,
        i % 3,
        0,
        "openai",
        "gpt-4o",
        "chat",
        Endpoint::ChatCompletions,
        false,
        900 + i as u32 * 10,
    );
    r.input_tokens = 1200;
    r.output_tokens = 300;
    r.cached_input_tokens = 400;
    r.cache_write_tokens = 100;
    r.reasoning_tokens = 120;
    r.cost_nusd = Nanos::new(4_321_000 + i as i64);
    let error = |r: &mut UsageRecord, class: ErrorClass, status: u16| {
        r.error_class = class;
        r.status_code = status;
        r.input_tokens = 0;
        r.output_tokens = 0;
        r.cached_input_tokens = 0;
        r.cache_write_tokens = 0;
        r.reasoning_tokens = 0;
        r.usage_source = UsageSource::None;
        r.cost_nusd = Nanos::ZERO;
        r.model_served = String::new();
    };
    match i {
        0 => {}
        1 => {
            r.stream = true;
            r.ttft_ms = Some(210);
        }
        2 => {
            // A stream cut short: estimated usage, first byte seen.
            r.stream = true;
            r.ttft_ms = Some(95);
            r.error_class = ErrorClass::Aborted;
            r.usage_source = UsageSource::Estimated;
        }
        3 => {
            // A stream that never got a first byte.
            r.stream = true;
            error(&mut r, ErrorClass::Timeout, 504);
        }
        4 => error(&mut r, ErrorClass::RateLimited, 429),
        5 => error(&mut r, ErrorClass::Upstream5xx, 503),
        6 => error(&mut r, ErrorClass::Client, 400),
        7 => error(&mut r, ErrorClass::BudgetBlocked, 0),
        8 => error(&mut r, ErrorClass::Network, 0),
        9 => error(&mut r, ErrorClass::Internal, 0),
        10 => {
            // Unpriced: an unknown model, cost unknown (not $0).
            r.provider = "openrouter".into();
            r.model_requested = "mystery/model-x".into();
            r.model_served = "mystery/model-x".into();
            r.cost_source = CostSource::Unpriced;
            r.cost_nusd = Nanos::ZERO;
            r.pricing_version = String::new();
        }
        _ => {
            // Provider-reported cost, embeddings endpoint, other task type.
            r.provider = "openrouter".into();
            r.endpoint = Endpoint::Embeddings;
            r.task_type = "embedding".into();
            r.model_requested = "openai/text-embedding-3-small".into();
            r.model_served = "openai/text-embedding-3-small".into();
            r.output_tokens = 0;
            r.reasoning_tokens = 0;
            r.cost_source = CostSource::Provider;
        }
    }
    r
}

impl Iterator for Synthetic {
    type Item = UsageRecord;

    fn next(&mut self) -> Option<UsageRecord> {
        if self.index >= self.count {
            return None;
        }
        let i = self.index;
        self.index += 1;
        if i < COVERAGE as u64 {
            Some(coverage(i, &self.shape))
        } else {
            Some(self.record(i))
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::try_from(self.count - self.index).unwrap_or(usize::MAX);
        (left, Some(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;
    use usage_core::utc;

    fn shape() -> Shape {
        Shape {
            orgs: 3,
            users_per_org: 8,
            apps_per_org: 2,
            start: utc(2026, 1, 30, 0, 0, 0),
            span: TimeDelta::days(5),
        }
    }

    #[test]
    fn records_are_valid_deterministic_and_cover_every_class() {
        let records: Vec<UsageRecord> = Synthetic::new(7, 2000, shape()).collect();
        let now = utc(2026, 2, 10, 0, 0, 0);
        for r in &records {
            assert_eq!(r.validate(now), Ok(()), "{r:?}");
        }
        assert_eq!(
            records,
            Synthetic::new(7, 2000, shape()).collect::<Vec<_>>()
        );
        for class in ErrorClass::ALL {
            assert!(records.iter().any(|r| r.error_class == *class), "{class}");
        }
        for source in UsageSource::ALL {
            assert!(
                records.iter().any(|r| r.usage_source == *source),
                "{source}"
            );
        }
        for source in CostSource::ALL {
            assert!(records.iter().any(|r| r.cost_source == *source), "{source}");
        }
        assert!(records.iter().any(|r| r.stream && r.ttft_ms.is_some()));
        assert!(records.iter().any(|r| r.stream && r.ttft_ms.is_none()));
        assert!(records.iter().any(|r| r.model_served.is_empty()));
        assert!(records
            .iter()
            .any(|r| r.cache_write_tokens > 0 && r.reasoning_tokens > 0));
        let mut ids: Vec<Uuid> = records.iter().map(|r| r.event_id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), records.len());
    }
}
