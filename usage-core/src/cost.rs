//! Cost of a call: each token class priced once, each tool call and request fee once.
//!
//! With `input_tokens` including cached, cache-write, audio and image input tokens, and
//! `output_tokens` including reasoning, audio and image output tokens (the record's contract),
//! in the call's service tier:
//!
//! ```text
//! cost = text_input × input_rate                 (the tier's, when it has its own)
//!      + cached × cached_rate                    (the tier's; else the model's; else input)
//!      + cache_write × cache_write_rate          (input_rate when the model has none)
//!      + audio_in × audio_input_rate + image_in × image_input_rate      (else input)
//!      + text_output × output_rate               (the tier's, when it has its own)
//!      + reasoning × reasoning_rate              (else output)
//!      + audio_out × audio_output_rate + image_out × image_output_rate  (else output)
//!      + web_searches × web_search_fee + file_searches × file_search_fee
//!      + per_request fee
//! text_input  = input − cached − cache_write − audio_in − image_in
//! text_output = output − reasoning − audio_out − image_out
//! ```
//!
//! Each part is clamped to what is left of its whole, so a payload whose parts overlap or
//! exceed the whole never yields a negative class or a token priced twice. Rates are USD per 1M
//! tokens in nanos (= femto-USD per token), so the token sum is exact in femto-USD and rounded
//! once, half up, to nano-USD; fees are whole nano-USD. A provider-reported cost wins over the
//! table; a model the table does not know yields [`CostSource::Unpriced`] and no number.
//!
//! A tier the model's entry has no rates for (a `flex` call of a model listed without flex
//! prices) is priced at the standard rates: for `flex` and `batch` that overstates the cost
//! (safe under a budget); the price file carries the tiers of every model whose provider
//! publishes them.

use crate::money::Nanos;
use crate::price::{ModelPrice, PriceTable};
use crate::record::{CostSource, UsageRecord, UsageSource};
pub use crate::tokens::{TokenCounts, ToolCalls};
use crate::usage::ParsedUsage;
use chrono::{DateTime, Utc};

/// The outcome of pricing a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Priced {
    /// Zero when `source` is `Unpriced` — read `source` before the number.
    pub cost: Nanos,
    pub source: CostSource,
    /// The price table version when `source` is `PriceTable`, else empty.
    pub pricing_version: String,
}

/// Prices `tokens` with one model's standard rates, exactly (no tier, no tool calls).
pub fn price_tokens(tokens: TokenCounts, price: &ModelPrice) -> Nanos {
    price_usage(tokens, ToolCalls::default(), "", price)
}

/// Prices a call's tokens and tool calls with one model's rates in `tier`, exactly.
pub fn price_usage(tokens: TokenCounts, tools: ToolCalls, tier: &str, price: &ModelPrice) -> Nanos {
    let t = tokens.clamped();
    let femto = |n: u32, rate: Nanos| i128::from(n) * i128::from(rate.get());
    let tier_rates = price.tier(tier);
    let input = tier_rates.map_or(price.input, |r| r.input);
    let output = tier_rates.map_or(price.output, |r| r.output);
    let cached = tier_rates
        .and_then(|r| r.cached_input)
        .or(price.cached_input)
        .unwrap_or(input);
    let text_input = t.input - t.cached_input - t.cache_write - t.audio_input - t.image_input;
    let text_output = t.output - t.reasoning - t.audio_output - t.image_output;
    let total_femto = femto(text_input, input)
        + femto(t.cached_input, cached)
        + femto(t.cache_write, price.cache_write.unwrap_or(input))
        + femto(t.audio_input, price.audio_input.unwrap_or(input))
        + femto(t.image_input, price.image_input.unwrap_or(input))
        + femto(text_output, output)
        + femto(t.reasoning, price.reasoning.unwrap_or(output))
        + femto(t.audio_output, price.audio_output.unwrap_or(output))
        + femto(t.image_output, price.image_output.unwrap_or(output));
    // femto-USD → nano-USD, half up (all terms are non-negative).
    let nanos = (total_femto + 500_000) / 1_000_000;
    let fee = |n: u32, fee: Option<Nanos>| fee.map_or(0, |f| i128::from(n) * i128::from(f.get()));
    let fees = fee(1, price.per_request)
        + fee(tools.web_search, price.web_search)
        + fee(tools.file_search, price.file_search);
    Nanos::new(i64::try_from(nanos + fees).unwrap_or(i64::MAX))
}

/// One call as pricing sees it.
#[derive(Clone, Copy, Debug)]
pub struct CallToPrice<'a> {
    pub provider: &'a str,
    pub model_served: &'a str,
    pub model_requested: &'a str,
    pub at: DateTime<Utc>,
    /// The tier the call ran in (the response's, else the request's); empty = standard.
    pub service_tier: &'a str,
    pub tokens: TokenCounts,
    pub tools: ToolCalls,
    /// What the provider said the call cost (OpenRouter's `usage.cost`).
    pub provider_cost: Option<Nanos>,
}

/// Prices one call. `provider_cost` wins when present; otherwise the served model is looked up
/// (then the requested one) at the call's time.
pub fn price_call(table: &PriceTable, call: &CallToPrice<'_>) -> Priced {
    if let Some(cost) = call.provider_cost.filter(|c| !c.is_negative()) {
        return Priced {
            cost,
            source: CostSource::Provider,
            pricing_version: String::new(),
        };
    }
    let price = [call.model_served, call.model_requested]
        .into_iter()
        .filter(|m| !m.is_empty())
        .find_map(|m| table.resolve(call.provider, m, call.at));
    match price {
        Some(price) => Priced {
            cost: price_usage(call.tokens, call.tools, call.service_tier, price),
            source: CostSource::PriceTable,
            pricing_version: table.version().to_string(),
        },
        None => Priced {
            cost: Nanos::ZERO,
            source: CostSource::Unpriced,
            pricing_version: String::new(),
        },
    }
}

/// What a finished call consumed and cost: its record's token, tool, usage and cost fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallCost {
    pub tokens: TokenCounts,
    pub tools: ToolCalls,
    pub usage_source: UsageSource,
    pub cost: Nanos,
    pub cost_source: CostSource,
    pub pricing_version: String,
}

/// The cost of a finished call, as the edge records it: from the usage the provider reported,
/// else from Tollgate's estimate (a stream cut before its usage), else nothing. A call that
/// consumed nothing and reported no cost costs nothing, whether or not its model is priced.
/// The corpus test (`usage-core/tests/corpus.rs`) runs provider payloads through this.
pub fn cost_of_call(
    table: &PriceTable,
    call: CallToPrice<'_>,
    usage: Option<&ParsedUsage>,
    estimated: Option<TokenCounts>,
) -> CallCost {
    let (tokens, tools, provider_cost, usage_source) = match (usage, estimated) {
        (Some(u), _) => (u.tokens, u.tools, u.provider_cost, UsageSource::Provider),
        (None, Some(e)) if e.input > 0 || e.output > 0 => {
            (e, ToolCalls::default(), None, UsageSource::Estimated)
        }
        _ => (
            TokenCounts::default(),
            ToolCalls::default(),
            None,
            UsageSource::None,
        ),
    };
    if tokens.is_zero() && tools == ToolCalls::default() && provider_cost.is_none() {
        return CallCost {
            tokens,
            tools,
            usage_source,
            cost: Nanos::ZERO,
            cost_source: CostSource::PriceTable,
            pricing_version: table.version().to_string(),
        };
    }
    let priced = price_call(
        table,
        &CallToPrice {
            tokens,
            tools,
            provider_cost,
            ..call
        },
    );
    CallCost {
        tokens,
        tools,
        usage_source,
        cost: priced.cost,
        cost_source: priced.source,
        pricing_version: priced.pricing_version,
    }
}

/// The tier a call is priced in: the provider's answer, else what the request asked for
/// (`auto` asks the provider to choose, so it means nothing until answered).
pub fn effective_tier<'a>(requested: &'a str, served: Option<&'a str>) -> &'a str {
    // A served `auto` (a Responses stream cut after `response.created`) is no answer either.
    match served.filter(|t| !t.is_empty() && *t != "auto") {
        Some(t) => t,
        None if requested == "auto" => "",
        None => requested,
    }
}

/// Re-prices a record from the table: what a reprice does after a price change. A cost the
/// provider reported stays (it is what the provider billed); a call that consumed nothing
/// costs nothing, priced or not (as the edge records it).
pub fn cost(record: &UsageRecord, table: &PriceTable) -> Priced {
    if record.cost_source == CostSource::Provider {
        return Priced {
            cost: record.cost_nusd,
            source: CostSource::Provider,
            pricing_version: String::new(),
        };
    }
    let tokens = TokenCounts::of(record);
    let tools = ToolCalls::of(record);
    if tokens.is_zero() && tools == ToolCalls::default() {
        return Priced {
            cost: Nanos::ZERO,
            source: CostSource::PriceTable,
            pricing_version: table.version().to_string(),
        };
    }
    price_call(
        table,
        &CallToPrice {
            provider: &record.provider,
            model_served: &record.model_served,
            model_requested: &record.model_requested,
            at: record.ts,
            service_tier: &record.service_tier,
            tokens,
            tools,
            provider_cost: None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::price::tests::table;
    use crate::utc;
    use chrono::{DateTime, Utc};
    use proptest::prelude::*;

    const T: DateTime<Utc> = utc(2026, 1, 15, 0, 0, 0);

    fn tokens(input: u32, cached: u32, output: u32, reasoning: u32) -> TokenCounts {
        TokenCounts {
            input,
            output,
            cached_input: cached,
            cache_write: 0,
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
    ) -> crate::Priced {
        crate::price_call(
            table,
            &crate::CallToPrice {
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
    fn one_million_tokens_cost_exactly_the_listed_prices() {
        let t = table();
        let p = price_simple(
            &t,
            "openai",
            "gpt-4o-mini",
            "",
            T,
            tokens(1_000_000, 0, 1_000_000, 0),
            None,
        );
        assert_eq!(p.source, CostSource::PriceTable);
        assert_eq!(p.cost, usd("0.75")); // 0.15 + 0.60
        assert_eq!(p.pricing_version, t.version());
    }

    #[test]
    fn cached_tokens_are_priced_once_at_the_cached_rate() {
        let t = table();
        let p = price_simple(
            &t,
            "openai",
            "gpt-4o-mini",
            "",
            T,
            tokens(10_000, 1_000, 0, 0),
            None,
        );
        // 9,000 × 0.15/1M + 1,000 × 0.075/1M = 0.00135 + 0.000075
        assert_eq!(p.cost, usd("0.001425"));
    }

    #[test]
    fn reasoning_tokens_are_output_unless_priced_separately() {
        let t = table();
        let mini = price_simple(
            &t,
            "openai",
            "gpt-4o-mini",
            "",
            T,
            tokens(0, 0, 1_000, 400),
            None,
        );
        assert_eq!(mini.cost, usd("0.0006"));
        let flash = price_simple(
            &t,
            "gemini",
            "gemini-2.5-flash",
            "",
            T,
            tokens(0, 0, 1_000, 400),
            None,
        );
        // 600 × 2.5/1M + 400 × 3.5/1M
        assert_eq!(flash.cost, usd("0.0029"));
    }

    #[test]
    fn cache_writes_have_their_own_rate() {
        let t = table();
        let tk = TokenCounts {
            input: 10_000,
            cached_input: 2_000,
            cache_write: 3_000,
            ..Default::default()
        };
        let p = price_simple(&t, "anthropic", "claude-sonnet-4-5", "", T, tk, None);
        // 5,000 × 3 + 2,000 × 0.3 + 3,000 × 3.75, per 1M
        assert_eq!(p.cost, usd("0.02685"));
    }

    #[test]
    fn provider_cost_wins_and_unknown_models_are_unpriced() {
        let t = table();
        let p = price_simple(
            &t,
            "openrouter",
            "openai/gpt-4o",
            "",
            T,
            tokens(10, 0, 10, 0),
            Some(usd("0.5")),
        );
        assert_eq!((p.cost, p.source), (usd("0.5"), CostSource::Provider));
        let u = price_simple(
            &t,
            "openai",
            "gpt-9-ultra",
            "gpt-9-ultra",
            T,
            tokens(10, 0, 10, 0),
            None,
        );
        assert_eq!((u.cost, u.source), (Nanos::ZERO, CostSource::Unpriced));
        assert!(u.pricing_version.is_empty());
    }

    #[test]
    fn falls_back_to_the_requested_model() {
        let t = table();
        let p = price_simple(
            &t,
            "openai",
            "weird-served-name",
            "gpt-4o-mini",
            T,
            tokens(1_000_000, 0, 0, 0),
            None,
        );
        assert_eq!(p.cost, usd("0.15"));
    }

    #[test]
    fn rounding_is_half_up_once() {
        let mut p = table().resolve("openai", "gpt-4o-mini", T).unwrap().clone();
        p.input = usd("0.0004"); // 0.4 nano-USD per token
        p.output = usd("0.0015"); // 1.5 nano-USD per token
        assert_eq!(price_tokens(tokens(1, 0, 0, 0), &p), Nanos::new(0));
        assert_eq!(price_tokens(tokens(2, 0, 0, 0), &p), Nanos::new(1));
        assert_eq!(price_tokens(tokens(0, 0, 1, 0), &p), Nanos::new(2));
        // the classes are summed before rounding: 0.4 + 1.5 = 1.9 → 2, not 0 + 2
        assert_eq!(price_tokens(tokens(1, 0, 1, 0), &p), Nanos::new(2));
        assert_eq!(price_tokens(tokens(3, 0, 1, 0), &p), Nanos::new(3));
    }

    fn any_tokens() -> impl Strategy<Value = TokenCounts> {
        (
            0u32..50_000_000,
            0u32..50_000_000,
            0u32..=100,
            0u32..=100,
            0u32..=100,
        )
            .prop_map(|(input, output, c, w, r)| {
                let cached = (u64::from(input) * u64::from(c) / 200) as u32;
                let cache_write = (u64::from(input) * u64::from(w) / 200) as u32;
                TokenCounts {
                    input,
                    output,
                    cached_input: cached,
                    cache_write,
                    reasoning: (u64::from(output) * u64::from(r) / 100) as u32,
                    ..Default::default()
                }
            })
    }

    fn add(a: TokenCounts, b: TokenCounts) -> TokenCounts {
        TokenCounts {
            input: a.input + b.input,
            output: a.output + b.output,
            cached_input: a.cached_input + b.cached_input,
            cache_write: a.cache_write + b.cache_write,
            reasoning: a.reasoning + b.reasoning,
            ..Default::default()
        }
    }

    proptest! {
        #[test]
        fn cost_is_never_negative(tk in any_tokens(), model in prop::sample::select(vec![
            "gpt-4o-mini", "gpt-4o", "claude-sonnet-4-5", "gemini-2.5-flash", "text-embedding-3-small"])) {
            let t = table();
            for p in t.iter().filter(|p| p.model == model) {
                prop_assert!(price_tokens(tk, p).get() >= 0);
            }
        }

        /// Splitting a call's tokens across two records changes the total by at most the
        /// rounding of one record (less than one nano-USD each side).
        #[test]
        fn cost_is_additive_across_records(a in any_tokens(), b in any_tokens()) {
            let t = table();
            for p in t.iter() {
                let whole = price_tokens(add(a, b), p).get();
                let parts = price_tokens(a, p).get() + price_tokens(b, p).get();
                prop_assert!((whole - parts).abs() <= 1, "{} vs {} for {}", whole, parts, p.model);
            }
        }

        /// With whole-nano per-token rates (gpt-4o here), addition is exact.
        #[test]
        fn whole_nano_rates_are_exactly_additive(a in any_tokens(), b in any_tokens()) {
            let t = table();
            let p = t.resolve("openai", "gpt-4o", T).unwrap();
            prop_assert_eq!(price_tokens(add(a, b), p), Nanos::new(price_tokens(a, p).get() + price_tokens(b, p).get()));
        }
    }
}
