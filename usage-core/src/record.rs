//! `UsageRecord` v1: one record per provider call attempt — the data contract between the edge,
//! the collector and ClickHouse.
//!
//! Field names are the column names of `usage_events`. Token counts follow OpenAI's convention:
//! `cached_input_tokens` and `cache_write_tokens` are *parts of* `input_tokens`, and
//! `reasoning_tokens` is *part of* `output_tokens`; [`UsageRecord::validate`] enforces it so
//! that no token is ever priced twice.

use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::money::Nanos;

/// The record schema this crate writes.
pub const SCHEMA_VERSION: u16 = 1;

/// Limits a record must respect; the collector rejects records past them.
pub mod limits {
    /// Identifiers: org, user, app, key, provider, region, task type.
    pub const MAX_ID_LEN: usize = 128;
    /// Model names can be long (`vendor/model-name:variant`).
    pub const MAX_MODEL_LEN: usize = 256;
    pub const MAX_TAGS: usize = 16;
    /// Tags an app may set (`x-tollgate-tags`): two slots of [`MAX_TAGS`] are Tollgate's own
    /// ([`BUDGET_FAIL_OPEN_TAG`], [`KEY_USER_TAG`]).
    pub const MAX_APP_TAGS: usize = MAX_TAGS - 2;
    /// Tag keys starting with this are Tollgate's own; apps cannot set them.
    pub const RESERVED_TAG_PREFIX: &str = "tollgate.";
    /// Set by the edge on a call that a budget did not guard because its guard, its budget
    /// list or its recorded spend could not be had (`BUDGET_FAIL_MODE=open`, or a soft
    /// budget): the budgets concerned, comma-separated.
    pub const BUDGET_FAIL_OPEN_TAG: &str = "tollgate.budget_fail_open";
    /// Set by the edge when a key acting for end users named the call's user: the key's own
    /// user (the record's `user_id` is the end user).
    pub const KEY_USER_TAG: &str = "tollgate.key_user";
    pub const MAX_TAG_KEY_LEN: usize = 64;
    pub const MAX_TAG_VALUE_LEN: usize = 256;
    /// How far in the future `ts` may lie (edge clocks drift a little, not more).
    pub const MAX_FUTURE_SKEW_SECS: i64 = 300;
    /// Nothing older than this is accepted (a replayed archive is an import, not ingest).
    pub const MAX_AGE_DAYS: i64 = 400;
    /// A single call longer than a day is a clock error.
    pub const MAX_LATENCY_MS: u32 = 86_400_000;
}

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire and column text of this value.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// The value whose text is `s`.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum! {
    /// The OpenAI-compatible API a call went to.
    Endpoint {
        ChatCompletions => "chat.completions",
        Responses => "responses",
        Embeddings => "embeddings",
        Completions => "completions",
        Models => "models",
        Other => "other",
    }
}

impl Endpoint {
    /// The task type a call gets when the app did not name one.
    pub const fn default_task_type(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions | Endpoint::Responses | Endpoint::Completions => "chat",
            Endpoint::Embeddings => "embedding",
            Endpoint::Models => "metadata",
            Endpoint::Other => "other",
        }
    }
}

string_enum! {
    /// How a call ended.
    ErrorClass {
        None => "none",
        /// 4xx other than 429: the request was wrong (bad model, bad parameters, auth).
        Client => "client",
        RateLimited => "rate_limited",
        Upstream5xx => "upstream_5xx",
        Timeout => "timeout",
        /// The client went away or the stream was cut before it finished.
        Aborted => "aborted",
        BudgetBlocked => "budget_blocked",
        /// The provider could not be reached at all (DNS, connect, TLS).
        Network => "network",
        /// A failure inside Tollgate itself.
        Internal => "internal",
    }
}

impl ErrorClass {
    /// The class of a completed HTTP exchange with the provider.
    pub const fn from_status(status: u16) -> ErrorClass {
        match status {
            200..=399 => ErrorClass::None,
            429 => ErrorClass::RateLimited,
            408 | 504 => ErrorClass::Timeout,
            400..=499 => ErrorClass::Client,
            _ => ErrorClass::Upstream5xx,
        }
    }
}

string_enum! {
    /// Where the token counts came from.
    UsageSource {
        /// The provider reported them.
        Provider => "provider",
        /// Tollgate estimated them (e.g. a stream cut before its usage chunk).
        Estimated => "estimated",
        None => "none",
    }
}

string_enum! {
    /// Where the cost came from.
    CostSource {
        /// The provider reported it (OpenRouter's `usage.cost`).
        Provider => "provider",
        /// Computed from Tollgate's price table (`pricing_version` says which).
        PriceTable => "price_table",
        /// The model is not in the price table: the cost is unknown, not zero.
        Unpriced => "unpriced",
    }
}

/// One provider call attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageRecord {
    // identity
    /// UUIDv7 minted at the edge: the idempotency key end to end.
    pub event_id: Uuid,
    pub schema_version: u16,

    // time
    /// Request start, UTC.
    #[serde(with = "crate::rfc3339")]
    pub ts: DateTime<Utc>,
    /// Request start to last byte sent to the client.
    pub latency_ms: u32,
    /// Time to first byte of the provider's body (streams; `None` when nothing arrived).
    #[serde(default)]
    pub ttft_ms: Option<u32>,
    /// Time spent waiting on the provider.
    pub upstream_ms: u32,

    // who
    pub org_id: String,
    #[serde(default)]
    pub user_id: String,
    pub app_id: String,
    pub key_id: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,

    // what
    pub provider: String,
    pub model_requested: String,
    #[serde(default)]
    pub model_served: String,
    pub endpoint: Endpoint,
    pub task_type: String,
    pub stream: bool,
    #[serde(default)]
    pub edge_region: String,

    // outcome
    pub status_code: u16,
    pub error_class: ErrorClass,

    // tokens
    pub input_tokens: u32,
    pub output_tokens: u32,
    #[serde(default)]
    pub cached_input_tokens: u32,
    #[serde(default)]
    pub cache_write_tokens: u32,
    #[serde(default)]
    pub reasoning_tokens: u32,
    /// Audio and image tokens: parts of `input_tokens` / `output_tokens`, priced at their
    /// modality's rate.
    #[serde(default)]
    pub audio_input_tokens: u32,
    #[serde(default)]
    pub image_input_tokens: u32,
    #[serde(default)]
    pub audio_output_tokens: u32,
    #[serde(default)]
    pub image_output_tokens: u32,
    pub usage_source: UsageSource,

    // tools and tier
    /// Web searches the call made (Responses API `web_search_call` items, `server_tool_use`),
    /// each priced at the model's fee — not the tools it merely declared.
    #[serde(default)]
    pub web_search_calls: u32,
    /// File searches the call made (Responses API `file_search_call` items).
    #[serde(default)]
    pub file_search_calls: u32,
    /// The `service_tier` the request asked for (`flex`, `priority`, `auto`, …; empty if none).
    #[serde(default)]
    pub service_tier_requested: String,
    /// The tier the call was priced in: the response's `service_tier`, else the request's.
    #[serde(default)]
    pub service_tier: String,

    // money
    pub cost_nusd: Nanos,
    pub cost_source: CostSource,
    #[serde(default)]
    pub pricing_version: String,

    // size
    #[serde(default)]
    pub request_bytes: u64,
    #[serde(default)]
    pub response_bytes: u64,
}

/// One problem with one field of a record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl UsageRecord {
    /// Total tokens the call consumed.
    pub fn total_tokens(&self) -> u64 {
        u64::from(self.input_tokens) + u64::from(self.output_tokens)
    }

    /// Every field-level problem, or `Ok` when the record can be stored. `now` bounds `ts`.
    pub fn validate(&self, now: DateTime<Utc>) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut err = |field: &str, reason: String| errors.push(FieldError::new(field, reason));

        if self.schema_version != SCHEMA_VERSION {
            err(
                "schema_version",
                format!(
                    "unsupported schema version {} (expected {SCHEMA_VERSION})",
                    self.schema_version
                ),
            );
        }
        if self.event_id.is_nil() {
            err("event_id", "must not be the nil UUID".into());
        }

        let skew = (self.ts - now).num_seconds();
        if skew > limits::MAX_FUTURE_SKEW_SECS {
            err(
                "ts",
                format!(
                    "{skew} s in the future (at most {} s allowed)",
                    limits::MAX_FUTURE_SKEW_SECS
                ),
            );
        }
        if (now - self.ts).num_days() > limits::MAX_AGE_DAYS {
            err("ts", format!("older than {} days", limits::MAX_AGE_DAYS));
        }
        if self.latency_ms > limits::MAX_LATENCY_MS {
            err(
                "latency_ms",
                format!("{} ms is longer than a day", self.latency_ms),
            );
        }
        if self.upstream_ms > self.latency_ms {
            err(
                "upstream_ms",
                format!(
                    "{} ms exceeds latency_ms {}",
                    self.upstream_ms, self.latency_ms
                ),
            );
        }
        if let Some(ttft) = self.ttft_ms {
            if ttft > self.latency_ms {
                err(
                    "ttft_ms",
                    format!("{ttft} ms exceeds latency_ms {}", self.latency_ms),
                );
            }
        }

        let mut text = |field: &str, value: &str, max: usize, required: bool| {
            if required && value.is_empty() {
                err(field, "must not be empty".into());
            }
            if value.len() > max {
                err(field, format!("{} bytes long (at most {max})", value.len()));
            }
            if value.chars().any(char::is_control) {
                err(field, "contains control characters".into());
            }
        };
        text("org_id", &self.org_id, limits::MAX_ID_LEN, true);
        text("user_id", &self.user_id, limits::MAX_ID_LEN, false);
        text("app_id", &self.app_id, limits::MAX_ID_LEN, true);
        text("key_id", &self.key_id, limits::MAX_ID_LEN, true);
        text("provider", &self.provider, limits::MAX_ID_LEN, true);
        text(
            "model_requested",
            &self.model_requested,
            limits::MAX_MODEL_LEN,
            false,
        );
        text(
            "model_served",
            &self.model_served,
            limits::MAX_MODEL_LEN,
            false,
        );
        text("task_type", &self.task_type, limits::MAX_ID_LEN, true);
        text("edge_region", &self.edge_region, limits::MAX_ID_LEN, false);
        text(
            "service_tier_requested",
            &self.service_tier_requested,
            limits::MAX_ID_LEN,
            false,
        );
        text(
            "service_tier",
            &self.service_tier,
            limits::MAX_ID_LEN,
            false,
        );
        text(
            "pricing_version",
            &self.pricing_version,
            limits::MAX_ID_LEN,
            false,
        );

        if self.tags.len() > limits::MAX_TAGS {
            err(
                "tags",
                format!("{} tags (at most {})", self.tags.len(), limits::MAX_TAGS),
            );
        }
        for (k, v) in &self.tags {
            let field = format!("tags.{}", truncate(k, 32));
            if k.is_empty() || k.len() > limits::MAX_TAG_KEY_LEN {
                err(
                    &field,
                    format!("key must be 1..={} bytes", limits::MAX_TAG_KEY_LEN),
                );
            }
            if v.len() > limits::MAX_TAG_VALUE_LEN {
                err(
                    &field,
                    format!(
                        "value is {} bytes (at most {})",
                        v.len(),
                        limits::MAX_TAG_VALUE_LEN
                    ),
                );
            }
            if k.chars().chain(v.chars()).any(char::is_control) {
                err(&field, "contains control characters".into());
            }
        }

        if !(100..=599).contains(&self.status_code) && self.status_code != 0 {
            err(
                "status_code",
                format!("{} is not an HTTP status (or 0 for none)", self.status_code),
            );
        }

        let cached_and_written =
            u64::from(self.cached_input_tokens) + u64::from(self.cache_write_tokens);
        if cached_and_written > u64::from(self.input_tokens) {
            err(
                "cached_input_tokens",
                format!(
                    "cached ({}) + cache-write ({}) tokens exceed input_tokens ({})",
                    self.cached_input_tokens, self.cache_write_tokens, self.input_tokens
                ),
            );
        }
        let input_parts = cached_and_written
            + u64::from(self.audio_input_tokens)
            + u64::from(self.image_input_tokens);
        if cached_and_written <= u64::from(self.input_tokens)
            && input_parts > u64::from(self.input_tokens)
        {
            err(
                "audio_input_tokens",
                format!(
                    "cached, cache-write, audio ({}) and image ({}) tokens exceed input_tokens ({})",
                    self.audio_input_tokens, self.image_input_tokens, self.input_tokens
                ),
            );
        }
        let output_parts = u64::from(self.reasoning_tokens)
            + u64::from(self.audio_output_tokens)
            + u64::from(self.image_output_tokens);
        if self.reasoning_tokens <= self.output_tokens
            && output_parts > u64::from(self.output_tokens)
        {
            err(
                "audio_output_tokens",
                format!(
                    "reasoning, audio ({}) and image ({}) tokens exceed output_tokens ({})",
                    self.audio_output_tokens, self.image_output_tokens, self.output_tokens
                ),
            );
        }
        if self.reasoning_tokens > self.output_tokens {
            err(
                "reasoning_tokens",
                format!(
                    "{} exceeds output_tokens ({}): reasoning tokens are part of the output",
                    self.reasoning_tokens, self.output_tokens
                ),
            );
        }
        if self.usage_source == UsageSource::None && self.total_tokens() > 0 {
            err(
                "usage_source",
                "is `none` but token counts are present".into(),
            );
        }

        if self.cost_nusd.is_negative() {
            err("cost_nusd", "must not be negative".into());
        }
        match self.cost_source {
            CostSource::Unpriced if self.cost_nusd != Nanos::ZERO => {
                err(
                    "cost_nusd",
                    "must be 0 when cost_source is `unpriced`".into(),
                );
            }
            CostSource::PriceTable if self.pricing_version.is_empty() => {
                err(
                    "pricing_version",
                    "required when cost_source is `price_table`".into(),
                );
            }
            _ => {}
        }

        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::utc;
    use chrono::{DateTime, TimeDelta, Utc};

    pub(crate) fn sample() -> UsageRecord {
        UsageRecord {
            event_id: Uuid::parse_str("01900000-0000-7000-8000-000000000001").unwrap(),
            schema_version: SCHEMA_VERSION,
            ts: utc(2026, 11, 1, 12, 0, 0),
            latency_ms: 850,
            ttft_ms: Some(120),
            upstream_ms: 800,
            org_id: "org_acme".into(),
            user_id: "u_42".into(),
            app_id: "support-bot".into(),
            key_id: "key_1".into(),
            tags: BTreeMap::from([("env".to_string(), "prod".to_string())]),
            provider: "openai".into(),
            model_requested: "gpt-4o-mini".into(),
            model_served: "gpt-4o-mini-2024-07-18".into(),
            endpoint: Endpoint::ChatCompletions,
            task_type: "chat".into(),
            stream: true,
            edge_region: "FRA".into(),
            status_code: 200,
            error_class: ErrorClass::None,
            input_tokens: 1000,
            output_tokens: 200,
            cached_input_tokens: 100,
            cache_write_tokens: 0,
            reasoning_tokens: 50,
            audio_input_tokens: 0,
            image_input_tokens: 0,
            audio_output_tokens: 0,
            image_output_tokens: 0,
            web_search_calls: 0,
            file_search_calls: 0,
            service_tier_requested: String::new(),
            service_tier: String::new(),
            usage_source: UsageSource::Provider,
            cost_nusd: Nanos::new(273_750),
            cost_source: CostSource::PriceTable,
            pricing_version: "pt-0123456789ab".into(),
            request_bytes: 512,
            response_bytes: 2048,
        }
    }

    fn now() -> DateTime<Utc> {
        utc(2026, 11, 1, 12, 1, 0)
    }

    fn fields(r: &UsageRecord) -> Vec<String> {
        r.validate(now())
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn a_good_record_validates() {
        assert_eq!(sample().validate(now()), Ok(()));
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let mut r = sample();
        r.cached_input_tokens = 2000;
        r.reasoning_tokens = 300;
        r.org_id = String::new();
        r.ts = now() + TimeDelta::hours(1);
        r.schema_version = 7;
        r.cost_nusd = Nanos::new(-1);
        r.tags.insert("bad".into(), "x".repeat(300));
        r.status_code = 42;
        assert_eq!(
            fields(&r),
            [
                "schema_version",
                "ts",
                "org_id",
                "tags.bad",
                "status_code",
                "cached_input_tokens",
                "reasoning_tokens",
                "cost_nusd"
            ]
        );
    }

    #[test]
    fn unpriced_records_carry_no_number() {
        let mut r = sample();
        r.cost_source = CostSource::Unpriced;
        assert_eq!(fields(&r), ["cost_nusd"]);
        r.cost_nusd = Nanos::ZERO;
        assert_eq!(r.validate(now()), Ok(()));
    }

    #[test]
    fn oversized_strings_and_too_many_tags_are_refused() {
        let mut r = sample();
        r.model_requested = "m".repeat(limits::MAX_MODEL_LEN + 1);
        r.tags = (0..20)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        assert_eq!(fields(&r), ["model_requested", "tags"]);
    }

    #[test]
    fn unknown_enum_values_and_negative_tokens_fail_to_decode() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["error_class"] = "exploded".into();
        assert!(serde_json::from_value::<UsageRecord>(v.clone()).is_err());
        v["error_class"] = "none".into();
        v["input_tokens"] = (-5).into();
        assert!(serde_json::from_value::<UsageRecord>(v).is_err());
    }

    #[test]
    fn enum_text_round_trips() {
        for e in ErrorClass::ALL {
            assert_eq!(ErrorClass::parse(e.as_str()), Some(*e));
        }
        for e in Endpoint::ALL {
            assert_eq!(Endpoint::parse(e.as_str()), Some(*e));
        }
        assert_eq!(ErrorClass::from_status(429), ErrorClass::RateLimited);
        assert_eq!(ErrorClass::from_status(503), ErrorClass::Upstream5xx);
        assert_eq!(ErrorClass::from_status(404), ErrorClass::Client);
    }
}
