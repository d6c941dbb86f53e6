//! Cost of a call: each token class priced once.
//!
//! With `input_tokens` including cached and cache-write tokens, and `output_tokens` including
//! reasoning tokens (the record's contract):
//!
//! ```text
//! cost = (input − cached − cache_write) × input_rate
//!      + cached × cached_rate            (input_rate when the model has none)
//!      + cache_write × cache_write_rate  (input_rate when the model has none)
//!      + (output − reasoning) × output_rate
//!      + reasoning × reasoning_rate      (output_rate when the model has none)
//!      + per_request fee
//! ```
//!
//! Rates are USD per 1M tokens in nanos (= femto-USD per token), so the sum is exact in
//! femto-USD and rounded once, half up, to nano-USD. A provider-reported cost wins over the
//! table; a model the table does not know yields [`CostSource::Unpriced`] and no number.

use time::OffsetDateTime;

use crate::money::Nanos;
use crate::price::{ModelPrice, PriceTable};
use crate::record::{CostSource, UsageRecord};

/// Token counts of one call, by class (the record's contract on subsets applies).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenCounts {
    pub input: u32,
    pub output: u32,
    pub cached_input: u32,
    pub cache_write: u32,
    pub reasoning: u32,
}

impl TokenCounts {
    pub fn of(record: &UsageRecord) -> TokenCounts {
        TokenCounts {
            input: record.input_tokens,
            output: record.output_tokens,
            cached_input: record.cached_input_tokens,
            cache_write: record.cache_write_tokens,
            reasoning: record.reasoning_tokens,
        }
    }
}

/// The outcome of pricing a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Priced {
    /// Zero when `source` is `Unpriced` — read `source` before the number.
    pub cost: Nanos,
    pub source: CostSource,
    /// The price table version when `source` is `PriceTable`, else empty.
    pub pricing_version: String,
}

/// Prices `tokens` with one model's rates, exactly. Subsets larger than their whole are clamped
/// (a record that broke the contract never gets a negative cost).
pub fn price_tokens(tokens: TokenCounts, price: &ModelPrice) -> Nanos {
    let femto = |n: u32, rate: Nanos| i128::from(n) * i128::from(rate.get());
    let cached = tokens.cached_input.min(tokens.input);
    let written = tokens.cache_write.min(tokens.input - cached);
    let plain_input = tokens.input - cached - written;
    let reasoning = tokens.reasoning.min(tokens.output);
    let plain_output = tokens.output - reasoning;
    let total_femto = femto(plain_input, price.input)
        + femto(cached, price.cached_input.unwrap_or(price.input))
        + femto(written, price.cache_write.unwrap_or(price.input))
        + femto(plain_output, price.output)
        + femto(reasoning, price.reasoning.unwrap_or(price.output));
    // femto-USD → nano-USD, half up (all terms are non-negative).
    let nanos = (total_femto + 500_000) / 1_000_000;
    let fee = price.per_request.map_or(0, |f| i128::from(f.get()));
    Nanos::new(i64::try_from(nanos + fee).unwrap_or(i64::MAX))
}

/// Prices one call. `provider_cost` (OpenRouter's `usage.cost`) wins when present; otherwise the
/// served model is looked up (then the requested one) at the call's time.
pub fn price_call(
    table: &PriceTable,
    provider: &str,
    model_served: &str,
    model_requested: &str,
    at: OffsetDateTime,
    tokens: TokenCounts,
    provider_cost: Option<Nanos>,
) -> Priced {
    if let Some(cost) = provider_cost.filter(|c| !c.is_negative()) {
        return Priced {
            cost,
            source: CostSource::Provider,
            pricing_version: String::new(),
        };
    }
    let price = [model_served, model_requested]
        .into_iter()
        .filter(|m| !m.is_empty())
        .find_map(|m| table.resolve(provider, m, at));
    match price {
        Some(price) => Priced {
            cost: price_tokens(tokens, price),
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

/// Re-prices a record from the table (ignoring a provider cost it may carry): what an analyst
/// does after a price change.
pub fn cost(record: &UsageRecord, table: &PriceTable) -> Priced {
    price_call(
        table,
        &record.provider,
        &record.model_served,
        &record.model_requested,
        record.ts,
        TokenCounts::of(record),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::price::tests::table;
    use proptest::prelude::*;
    use time::macros::datetime;

    const T: OffsetDateTime = datetime!(2026-01-15 00:00 UTC);

    fn tokens(input: u32, cached: u32, output: u32, reasoning: u32) -> TokenCounts {
        TokenCounts {
            input,
            output,
            cached_input: cached,
            cache_write: 0,
            reasoning,
        }
    }

    fn usd(s: &str) -> Nanos {
        Nanos::parse_usd(s).unwrap()
    }

    #[test]
    fn one_million_tokens_cost_exactly_the_listed_prices() {
        let t = table();
        let p = price_call(
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
        let p = price_call(
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
        let mini = price_call(
            &t,
            "openai",
            "gpt-4o-mini",
            "",
            T,
            tokens(0, 0, 1_000, 400),
            None,
        );
        assert_eq!(mini.cost, usd("0.0006"));
        let flash = price_call(
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
        let p = price_call(&t, "anthropic", "claude-sonnet-4-5", "", T, tk, None);
        // 5,000 × 3 + 2,000 × 0.3 + 3,000 × 3.75, per 1M
        assert_eq!(p.cost, usd("0.02685"));
    }

    #[test]
    fn provider_cost_wins_and_unknown_models_are_unpriced() {
        let t = table();
        let p = price_call(
            &t,
            "openrouter",
            "openai/gpt-4o",
            "",
            T,
            tokens(10, 0, 10, 0),
            Some(usd("0.5")),
        );
        assert_eq!((p.cost, p.source), (usd("0.5"), CostSource::Provider));
        let u = price_call(
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
        let p = price_call(
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
