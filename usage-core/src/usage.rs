//! Usage from provider responses: OpenAI Chat Completions, Completions, Embeddings, the
//! Responses API, and OpenRouter (OpenAI's shape plus `cost`, cache writes and BYOK costs).
//!
//! Every shape is read by one tolerant [`WireUsage`] (fields may be missing or `null`) and
//! normalised into [`TokenCounts`] with the record's subset rules: cached and cache-write tokens
//! are part of the input, reasoning tokens part of the output, so nothing is priced twice.

use serde::Deserialize;

use crate::cost::TokenCounts;
use crate::money::Nanos;
use crate::record::Endpoint;

/// What a provider said about a call's usage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedUsage {
    pub tokens: TokenCounts,
    /// Cost the provider reported (OpenRouter), in USD.
    pub provider_cost: Option<Nanos>,
}

/// The parts of a provider response Tollgate records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedResponse {
    /// The model that actually served the call (`model` in the response).
    pub model: Option<String>,
    /// The provider's id for the call (OpenRouter's generation id, for reconciliation).
    pub id: Option<String>,
    /// `None` when the response carries no usage at all.
    pub usage: Option<ParsedUsage>,
}

/// A response body that is not the JSON the endpoint returns.
#[derive(Debug, thiserror::Error)]
#[error("response body is not a valid {endpoint} response: {source}")]
pub struct ParseError {
    endpoint: Endpoint,
    #[source]
    source: serde_json::Error,
}

/// Usage in any of the OpenAI-compatible shapes. Unknown fields are ignored.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct WireUsage {
    #[serde(default, alias = "input_tokens")]
    prompt_tokens: Option<u64>,
    #[serde(default, alias = "output_tokens")]
    completion_tokens: Option<u64>,
    #[serde(default, alias = "input_tokens_details")]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default, alias = "output_tokens_details")]
    completion_tokens_details: Option<CompletionDetails>,
    /// OpenRouter also reports cache writes at the top level of `usage`.
    #[serde(default)]
    cache_write_tokens: Option<u64>,
    /// OpenRouter: what the call cost, in USD.
    #[serde(default)]
    cost: Option<Nanos>,
    #[serde(default)]
    is_byok: Option<bool>,
    #[serde(default)]
    cost_details: Option<CostDetails>,
}

#[derive(Debug, Default, Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    cache_write_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct CostDetails {
    #[serde(default)]
    upstream_inference_cost: Option<Nanos>,
}

impl WireUsage {
    pub(crate) fn normalise(&self) -> ParsedUsage {
        let clamp = |v: Option<u64>| v.map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX));
        let input = clamp(self.prompt_tokens);
        let output = clamp(self.completion_tokens);
        let details = self.prompt_tokens_details.as_ref();
        let cached = clamp(details.and_then(|d| d.cached_tokens)).min(input);
        let cache_write = clamp(
            details
                .and_then(|d| d.cache_write_tokens)
                .or(self.cache_write_tokens),
        )
        .min(input - cached);
        let reasoning = clamp(
            self.completion_tokens_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens),
        )
        .min(output);
        // With a bring-your-own-key, OpenRouter's `cost` is only its fee; the upstream
        // provider bills the inference separately and OpenRouter reports it beside.
        let upstream = self
            .cost_details
            .as_ref()
            .and_then(|d| d.upstream_inference_cost)
            .filter(|_| self.is_byok == Some(true));
        let provider_cost = match (self.cost, upstream) {
            (Some(fee), Some(up)) => fee.checked_add(up),
            (cost, _) => cost,
        };
        ParsedUsage {
            tokens: TokenCounts {
                input,
                output,
                cached_input: cached,
                cache_write,
                reasoning,
            },
            provider_cost,
        }
    }
}

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

/// Parses a non-streaming response body of `endpoint`.
pub fn parse_response(endpoint: Endpoint, body: &[u8]) -> Result<ParsedResponse, ParseError> {
    let wire: WireResponse =
        serde_json::from_slice(body).map_err(|source| ParseError { endpoint, source })?;
    Ok(ParsedResponse {
        model: wire.model.filter(|m| !m.is_empty()),
        id: wire.id,
        usage: wire.usage.as_ref().map(WireUsage::normalise),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nulls_and_missing_details_are_zero() {
        let r = parse_response(
            Endpoint::ChatCompletions,
            br#"{"model":"m","usage":{"prompt_tokens":5,"completion_tokens":2,"prompt_tokens_details":null}}"#,
        )
        .unwrap();
        assert_eq!(
            r.usage.unwrap().tokens,
            TokenCounts {
                input: 5,
                output: 2,
                ..Default::default()
            }
        );
    }

    #[test]
    fn impossible_subsets_are_clamped() {
        let r = parse_response(
            Endpoint::ChatCompletions,
            br#"{"usage":{"prompt_tokens":5,"completion_tokens":2,
                "prompt_tokens_details":{"cached_tokens":9},
                "completion_tokens_details":{"reasoning_tokens":3}}}"#,
        )
        .unwrap();
        let t = r.usage.unwrap().tokens;
        assert_eq!((t.cached_input, t.reasoning), (5, 2));
    }

    #[test]
    fn byok_cost_adds_the_upstream_bill() {
        let r = parse_response(
            Endpoint::ChatCompletions,
            br#"{"usage":{"prompt_tokens":1,"completion_tokens":1,"cost":0.0001,"is_byok":true,
                "cost_details":{"upstream_inference_cost":0.002}}}"#,
        )
        .unwrap();
        assert_eq!(r.usage.unwrap().provider_cost, Some(Nanos::new(2_100_000)));
    }

    #[test]
    fn not_json_is_an_error_naming_the_endpoint() {
        let e = parse_response(Endpoint::Embeddings, b"<html>").unwrap_err();
        assert!(e
            .to_string()
            .starts_with("response body is not a valid embeddings response"));
    }
}
