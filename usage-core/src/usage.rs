//! Usage from provider responses: OpenAI Chat Completions, Completions, Embeddings, the
//! Responses API, and OpenRouter (OpenAI's shape plus `cost`, cache writes and BYOK costs).
//!
//! Every shape is read by one tolerant [`WireUsage`] (fields may be missing or `null`) and
//! normalised into [`TokenCounts`] with the record's subset rules: cached and cache-write tokens
//! are part of the input, reasoning tokens part of the output, so nothing is priced twice.

use serde_json::Value;

use crate::money::Nanos;
use crate::record::Endpoint;
use crate::tokens::{TokenCounts, ToolCalls};
use crate::top_level;

/// What a provider said about a call's usage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedUsage {
    pub tokens: TokenCounts,
    /// Searches the usage reports (`server_tool_use`); the Responses API's `*_search_call`
    /// output items are counted by the caller into the same place.
    pub tools: ToolCalls,
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
    /// `None` when the response carries no usage at all (or an unreadable one).
    pub usage: Option<ParsedUsage>,
    /// The tier the provider says it served the call in (`service_tier`).
    pub service_tier: Option<String>,
}

/// A response body that is not the JSON the endpoint returns.
#[derive(Debug, thiserror::Error)]
#[error("response body is not a valid {endpoint} response: {source}")]
pub struct ParseError {
    endpoint: Endpoint,
    #[source]
    source: serde_json::Error,
}

/// Usage in any of the OpenAI-compatible shapes (Chat Completions and Completions
/// `prompt_tokens`/`completion_tokens`, Responses API `input_tokens`/`output_tokens`, OpenRouter's
/// additions). Unknown fields are ignored; missing or `null` ones are absent.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct WireUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    total_tokens: Option<u64>,
    cached_tokens: Option<u64>,
    /// In the prompt details, or (OpenRouter) at the top level of `usage`.
    cache_write_tokens: Option<u64>,
    reasoning_tokens: Option<u64>,
    audio_input_tokens: Option<u64>,
    image_input_tokens: Option<u64>,
    audio_output_tokens: Option<u64>,
    image_output_tokens: Option<u64>,
    /// `server_tool_use.web_search_requests` (Anthropic's shape, passed on by OpenRouter).
    web_search_requests: Option<u64>,
    /// OpenRouter: what the call cost, in USD.
    cost: Option<Nanos>,
    is_byok: Option<bool>,
    upstream_inference_cost: Option<Nanos>,
}

/// A field of `obj` that is absent or `null` (`Ok(None)`), or read by `read`; a field of the
/// wrong kind makes the whole usage unreadable (`Err`), as a typed parse would.
fn opt<T>(
    obj: &Value,
    names: &[&str],
    read: impl Fn(&Value) -> Option<T>,
) -> Result<Option<T>, ()> {
    match names
        .iter()
        .find_map(|n| obj.get(n).filter(|v| !v.is_null()))
    {
        None => Ok(None),
        Some(v) => read(v).map(Some).ok_or(()),
    }
}

impl WireUsage {
    /// Reads a `usage` object; `None` when it is not one or a field has the wrong kind.
    pub(crate) fn from_value(usage: &Value) -> Option<WireUsage> {
        if !usage.is_object() {
            return None;
        }
        // The details objects: one that is not an object (PHP-style gateways write an empty
        // map as `[]`) is absent, as serde's derived reader took `[]` for an empty struct.
        let none = Value::Null;
        let details = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| usage.get(n).filter(|v| v.is_object()))
                .unwrap_or(&none)
        };
        let prompt = details(&["prompt_tokens_details", "input_tokens_details"]);
        let completion = details(&["completion_tokens_details", "output_tokens_details"]);
        let cost_details = details(&["cost_details"]);
        let server_tools = details(&["server_tool_use"]);
        let read = || -> Result<WireUsage, ()> {
            Ok(WireUsage {
                prompt_tokens: opt(usage, &["prompt_tokens", "input_tokens"], Value::as_u64)?,
                completion_tokens: opt(
                    usage,
                    &["completion_tokens", "output_tokens"],
                    Value::as_u64,
                )?,
                total_tokens: opt(usage, &["total_tokens"], Value::as_u64)?,
                cached_tokens: opt(prompt, &["cached_tokens"], Value::as_u64)?,
                cache_write_tokens: opt(prompt, &["cache_write_tokens"], Value::as_u64)?.or(opt(
                    usage,
                    &["cache_write_tokens"],
                    Value::as_u64,
                )?),
                reasoning_tokens: opt(completion, &["reasoning_tokens"], Value::as_u64)?,
                audio_input_tokens: opt(prompt, &["audio_tokens"], Value::as_u64)?,
                image_input_tokens: opt(prompt, &["image_tokens"], Value::as_u64)?,
                audio_output_tokens: opt(completion, &["audio_tokens"], Value::as_u64)?,
                image_output_tokens: opt(completion, &["image_tokens"], Value::as_u64)?,
                web_search_requests: opt(server_tools, &["web_search_requests"], Value::as_u64)?,
                // A number (OpenRouter), or Perplexity's object of parts and `total_cost`.
                cost: opt(usage, &["cost"], |v| {
                    Nanos::from_json_usd(v)
                        .or_else(|| v.get("total_cost").and_then(Nanos::from_json_usd))
                })?,
                is_byok: opt(usage, &["is_byok"], Value::as_bool)?,
                upstream_inference_cost: opt(
                    cost_details,
                    &["upstream_inference_cost"],
                    Nanos::from_json_usd,
                )?,
            })
        };
        read().ok()
    }

    pub(crate) fn normalise(&self) -> ParsedUsage {
        let clamp = |v: Option<u64>| v.map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX));
        let input = clamp(self.prompt_tokens);
        let mut output = clamp(self.completion_tokens);
        // Reasoning is part of `completion_tokens` (OpenAI's convention) — except where the
        // provider counts it beside them (xAI), which its `total_tokens` says.
        let reasoning_beside = match (
            self.prompt_tokens,
            self.completion_tokens,
            self.reasoning_tokens,
            self.total_tokens,
        ) {
            (Some(p), Some(c), Some(r), Some(total)) => {
                r > 0
                    && p.checked_add(c) != Some(total)
                    && p.checked_add(c).and_then(|n| n.checked_add(r)) == Some(total)
            }
            _ => false,
        };
        if reasoning_beside {
            output = output.saturating_add(clamp(self.reasoning_tokens));
        }
        let tokens = TokenCounts {
            input,
            output,
            cached_input: clamp(self.cached_tokens),
            cache_write: clamp(self.cache_write_tokens),
            reasoning: clamp(self.reasoning_tokens),
            audio_input: clamp(self.audio_input_tokens),
            image_input: clamp(self.image_input_tokens),
            audio_output: clamp(self.audio_output_tokens),
            image_output: clamp(self.image_output_tokens),
        }
        .clamped();
        // With a bring-your-own-key, OpenRouter's `cost` is only its fee; the upstream
        // provider bills the inference separately and OpenRouter reports it beside.
        let upstream = self
            .upstream_inference_cost
            .filter(|_| self.is_byok == Some(true));
        let provider_cost = match (self.cost, upstream) {
            (Some(fee), Some(up)) => fee.checked_add(up),
            (cost, _) => cost,
        };
        ParsedUsage {
            tokens,
            tools: ToolCalls {
                web_search: clamp(self.web_search_requests),
                file_search: 0,
            },
            provider_cost,
        }
    }
}

/// Parses a non-streaming response body of `endpoint`.
pub fn parse_response(endpoint: Endpoint, body: &[u8]) -> Result<ParsedResponse, ParseError> {
    let top = top_level::read(body).map_err(|source| ParseError { endpoint, source })?;
    let mut usage = top_level::field(&top, "usage")
        .as_ref()
        .and_then(WireUsage::from_value)
        .map(|u| u.normalise());
    if let Some(u) = usage.as_mut() {
        add_search_calls(&mut u.tools, &top);
    }
    Ok(ParsedResponse {
        model: top_level::text(&top, "model").filter(|m| !m.is_empty()),
        id: top_level::text(&top, "id"),
        usage,
        service_tier: top_level::text(&top, "service_tier").filter(|t| !t.is_empty()),
    })
}

/// Counts the Responses API's `web_search_call` and `file_search_call` items in a response's
/// `output` (searches the model made; a tool the request only declared has none) into `tools`.
/// The `output` array is built only when its text names such an item.
pub(crate) fn add_search_calls(tools: &mut ToolCalls, response: &top_level::TopLevel<'_>) {
    let Some(raw) = response.get("output") else {
        return;
    };
    if !raw.get().contains("_search_call\"") {
        return;
    }
    let counts = count_search_calls(top_level::field(response, "output").as_ref());
    tools.web_search = tools.web_search.max(counts.web_search);
    tools.file_search = tools.file_search.max(counts.file_search);
}

/// The search calls among output items.
pub(crate) fn count_search_calls(output: Option<&Value>) -> ToolCalls {
    let mut calls = ToolCalls::default();
    for item in output.and_then(Value::as_array).into_iter().flatten() {
        match item.get("type").and_then(Value::as_str) {
            Some("web_search_call") => calls.web_search += 1,
            Some("file_search_call") => calls.file_search += 1,
            _ => {}
        }
    }
    calls
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
    fn responses_api_names_and_cache_writes_at_either_level_are_read() {
        let r = parse_response(
            Endpoint::Responses,
            br#"{"id":"resp_1","model":"gpt-4.1","output":[{"content":[{"text":"hi \"usage\": {"}]}],
                "usage":{"input_tokens":10,"output_tokens":4,"input_tokens_details":{"cached_tokens":3},
                "output_tokens_details":{"reasoning_tokens":2},"cache_write_tokens":5}}"#,
        )
        .unwrap();
        assert_eq!(
            (r.id.as_deref(), r.model.as_deref()),
            (Some("resp_1"), Some("gpt-4.1"))
        );
        let t = r.usage.unwrap().tokens;
        assert_eq!(
            (
                t.input,
                t.output,
                t.cached_input,
                t.cache_write,
                t.reasoning
            ),
            (10, 4, 3, 5, 2)
        );
        let r = parse_response(
            Endpoint::ChatCompletions,
            br#"{"usage":{"prompt_tokens":10,"completion_tokens":1,"cache_write_tokens":9,
                "prompt_tokens_details":{"cache_write_tokens":4}}}"#,
        )
        .unwrap();
        assert_eq!(r.usage.unwrap().tokens.cache_write, 4, "the details win");
    }

    #[test]
    fn a_usage_with_a_field_of_the_wrong_kind_is_unreadable_not_zero() {
        for usage in [
            r#""usage":{"prompt_tokens":"12","completion_tokens":1}"#,
            r#""usage":{"prompt_tokens":12,"completion_tokens":-1}"#,
            r#""usage":{"prompt_tokens":12,"cost":"cheap"}"#,
            r#""usage":[12]"#,
        ] {
            let body = format!(r#"{{"model":"m",{usage}}}"#);
            let r = parse_response(Endpoint::ChatCompletions, body.as_bytes()).unwrap();
            assert_eq!(r.usage, None, "{usage}");
            assert_eq!(r.model.as_deref(), Some("m"), "the rest still reads");
        }
        // Details that are not objects are absent (an empty map written as `[]`).
        let r = parse_response(
            Endpoint::ChatCompletions,
            br#"{"usage":{"prompt_tokens":12,"completion_tokens":3,"prompt_tokens_details":[],
                "completion_tokens_details":null,"cost_details":"n/a"}}"#,
        )
        .unwrap();
        let t = r.usage.unwrap().tokens;
        assert_eq!(
            (t.input, t.output, t.cached_input, t.reasoning),
            (12, 3, 0, 0)
        );
        let r =
            parse_response(Endpoint::ChatCompletions, br#"{"usage":null,"model":null}"#).unwrap();
        assert_eq!((r.usage, r.model), (None, None));
        assert!(parse_response(Endpoint::ChatCompletions, b"[1,2]").is_err());
    }

    #[test]
    fn not_json_is_an_error_naming_the_endpoint() {
        let e = parse_response(Endpoint::Embeddings, b"<html>").unwrap_err();
        assert!(e
            .to_string()
            .starts_with("response body is not a valid embeddings response"));
    }
}
