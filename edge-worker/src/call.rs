//! What a call is and where it goes: route, provider, model, and the body sent upstream.
//!
//! Pure functions, tested natively; the worker glue only moves bytes.

use serde_json::Value;
use usage_core::{top_level, Endpoint};

use crate::config::Provider;
use crate::errors::ApiError;

/// An OpenAI-compatible route the worker serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub endpoint: Endpoint,
    /// Path appended to the provider's base URL.
    pub upstream_path: &'static str,
    /// Whether the call carries a JSON body with a `model`.
    pub has_body: bool,
}

/// The route for `method` and `path`, or `None` (a 404 in OpenAI's shape).
/// The path of a serialized request URL (`https://host/v1/x?y` → `/v1/x`): what
/// [`route`] matches on, without parsing the whole URL.
pub fn url_path(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[after_scheme..];
    let Some(start) = rest.find('/') else {
        return "/";
    };
    let path = &rest[start..];
    let end = path.find(['?', '#']).unwrap_or(path.len());
    &path[..end]
}

pub fn route(method: &str, path: &str) -> Option<Route> {
    let path = path.trim_end_matches('/');
    let (endpoint, upstream_path, has_body) = match (method, path) {
        ("POST", "/v1/chat/completions") => (Endpoint::ChatCompletions, "/chat/completions", true),
        ("POST", "/v1/responses") => (Endpoint::Responses, "/responses", true),
        ("POST", "/v1/embeddings") => (Endpoint::Embeddings, "/embeddings", true),
        ("POST", "/v1/completions") => (Endpoint::Completions, "/completions", true),
        ("GET", "/v1/models") => (Endpoint::Models, "/models", false),
        _ => return None,
    };
    Some(Route {
        endpoint,
        upstream_path,
        has_body,
    })
}

/// The method a known path is served with (`None`: no such path).
pub fn method_of(path: &str) -> Option<&'static str> {
    match path.trim_end_matches('/') {
        "/v1/chat/completions" | "/v1/responses" | "/v1/embeddings" | "/v1/completions" => {
            Some("POST")
        }
        "/v1/models" => Some("GET"),
        _ => None,
    }
}

/// The parts of a request body the worker acts on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestFacts {
    /// `model` exactly as the client sent it.
    pub model: String,
    pub stream: bool,
    /// The client asked for the usage chunk itself (`stream_options.include_usage`).
    pub client_wants_usage: bool,
    /// `max_completion_tokens`, `max_tokens` or `max_output_tokens`, when set.
    pub max_output_tokens: Option<u32>,
    /// `service_tier` (`flex`, `priority`, `auto`, …), when a string; empty otherwise.
    pub service_tier: String,
}

/// Where and how a call is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub provider: Provider,
    pub facts: RequestFacts,
    /// The body to send upstream (the client's bytes unless something had to change).
    pub body: Vec<u8>,
    /// The worker added `stream_options.include_usage`; the usage-only chunk must be removed
    /// from what the client receives.
    pub strip_usage_chunk: bool,
}

/// Largest request body the worker accepts (413 `request_too_large` above), whether the
/// client declares its length or streams it chunked.
pub const MAX_REQUEST_BYTES: usize = 16 << 20;

/// A request body gathered chunk by chunk as it arrives, refused as soon as it passes its
/// limit: a chunked upload without `content-length` is never buffered past [`MAX_REQUEST_BYTES`].
#[derive(Debug)]
pub struct BodyBuffer {
    bytes: Vec<u8>,
    max: usize,
}

impl BodyBuffer {
    pub fn new(max: usize) -> Self {
        BodyBuffer {
            bytes: Vec::new(),
            max,
        }
    }

    /// Appends the next chunk; a 413 once the body would exceed the limit.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), ApiError> {
        if self.bytes.len().saturating_add(chunk.len()) > self.max {
            return Err(ApiError::too_large(self.max));
        }
        self.bytes.extend_from_slice(chunk);
        Ok(())
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// The fields of a request body the worker acts on. Everything else — the messages, usually
/// nearly all of the body — is skipped, not built into a tree.
///
/// A field present as `null` is `Some(Value::Null)`, told apart from an absent one; a field
/// given twice reads as its last occurrence.
#[derive(Default)]
struct BodyPeek {
    model: Option<Value>,
    stream: Option<Value>,
    stream_options: Option<Value>,
    max_completion_tokens: Option<Value>,
    max_tokens: Option<Value>,
    max_output_tokens: Option<Value>,
    service_tier: Option<Value>,
}

impl BodyPeek {
    fn read(body: &[u8]) -> Result<BodyPeek, ApiError> {
        let top = top_level::read(body).map_err(not_json)?;
        let field = |k: &str| top_level::value(&top, k);
        Ok(BodyPeek {
            model: field("model"),
            stream: field("stream"),
            stream_options: field("stream_options"),
            max_completion_tokens: field("max_completion_tokens"),
            max_tokens: field("max_tokens"),
            max_output_tokens: field("max_output_tokens"),
            service_tier: field("service_tier"),
        })
    }
}

fn not_json(e: serde_json::Error) -> ApiError {
    ApiError::invalid_request(format!("request body is not valid JSON: {e}"), None)
}

/// Reads the body, chooses the provider (header, then `provider/` model prefix, then the
/// default) and prepares the upstream body.
pub fn plan(
    route: Route,
    body: &[u8],
    providers: &[Provider],
    default_provider: &str,
    header_provider: Option<&str>,
) -> Result<Plan, ApiError> {
    let by_name = |name: &str| providers.iter().find(|p| p.name == name);
    if !route.has_body {
        let name = header_provider.unwrap_or(default_provider);
        let provider = by_name(name).ok_or_else(|| unknown_provider(name))?;
        return Ok(Plan {
            provider: provider.clone(),
            facts: RequestFacts::default(),
            body: Vec::new(),
            strip_usage_chunk: false,
        });
    }
    if body.len() > MAX_REQUEST_BYTES {
        return Err(ApiError::too_large(MAX_REQUEST_BYTES));
    }
    if !body.trim_ascii_start().starts_with(b"{") {
        // Not an object: say whether it is JSON at all.
        serde_json::from_slice::<Value>(body).map_err(not_json)?;
        return Err(ApiError::invalid_request(
            "request body must be a JSON object",
            None,
        ));
    }
    let peek = BodyPeek::read(body)?;
    let model = match &peek.model {
        Some(Value::String(m)) if !m.trim().is_empty() => m.clone(),
        _ => {
            return Err(ApiError::invalid_request(
                "you must provide a model parameter",
                Some("model"),
            ))
        }
    };
    let stream = peek
        .stream
        .as_ref()
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let client_wants_usage = peek
        .stream_options
        .as_ref()
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let max_output_tokens = [
        &peek.max_completion_tokens,
        &peek.max_tokens,
        &peek.max_output_tokens,
    ]
    .iter()
    .find_map(|v| v.as_ref().and_then(Value::as_u64))
    .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    // A tier name is short; anything else is not one (and not worth a 400: the provider
    // answers for its own parameters).
    let service_tier = peek
        .service_tier
        .as_ref()
        .and_then(Value::as_str)
        .filter(|t| t.len() <= 32 && !t.contains(char::is_control))
        .unwrap_or_default()
        .to_string();

    let (provider, upstream_model) = match header_provider {
        Some(name) => (by_name(name).ok_or_else(|| unknown_provider(name))?, None),
        None => match model
            .split_once('/')
            .and_then(|(prefix, rest)| Some((by_name(prefix)?, rest)))
        {
            Some((p, rest)) if !rest.is_empty() => (p, Some(rest.to_string())),
            _ => (
                by_name(default_provider).ok_or_else(|| unknown_provider(default_provider))?,
                None,
            ),
        },
    };

    let inject_usage = stream
        && !client_wants_usage
        && matches!(
            route.endpoint,
            Endpoint::ChatCompletions | Endpoint::Completions
        );
    let body = match (upstream_model, inject_usage) {
        (None, false) => body.to_vec(),
        // The common stream case: the option goes in front, the client's bytes follow as
        // they are (the body is an object with at least `model`, so a comma always fits).
        (None, true) if peek.stream_options.is_none() => {
            let open = body.len() - body.trim_ascii_start().len() + 1;
            let mut out = Vec::with_capacity(body.len() + INCLUDE_USAGE.len());
            out.extend_from_slice(&body[..open]);
            out.extend_from_slice(INCLUDE_USAGE);
            out.extend_from_slice(&body[open..]);
            out
        }
        (upstream_model, inject_usage) => rewrite_body(body, upstream_model, inject_usage)?,
    };
    Ok(Plan {
        provider: provider.clone(),
        facts: RequestFacts {
            model,
            stream,
            client_wants_usage,
            max_output_tokens,
            service_tier,
        },
        body,
        strip_usage_chunk: inject_usage,
    })
}

/// What goes in front of a streamed body to ask the provider for the usage chunk.
const INCLUDE_USAGE: &[u8] = br#""stream_options":{"include_usage":true},"#;

/// The body with `model` replaced and/or `stream_options.include_usage` set, through a full
/// parse (the rarer cases: a `provider/` model prefix, or `stream_options` already present).
fn rewrite_body(
    body: &[u8],
    upstream_model: Option<String>,
    inject_usage: bool,
) -> Result<Vec<u8>, ApiError> {
    let mut json: Value = serde_json::from_slice(body).map_err(not_json)?;
    let Some(obj) = json.as_object_mut() else {
        return Err(ApiError::invalid_request(
            "request body must be a JSON object",
            None,
        ));
    };
    if let Some(m) = upstream_model {
        obj.insert("model".into(), Value::String(m));
    }
    if inject_usage {
        let opts = obj
            .entry("stream_options")
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        // `null` (or anything not an object) means no options: ours replace it.
        if !opts.is_object() {
            *opts = Value::Object(serde_json::Map::new());
        }
        if let Some(o) = opts.as_object_mut() {
            o.insert("include_usage".into(), Value::Bool(true));
        }
    }
    serde_json::to_vec(&json).map_err(|e| ApiError::internal(format!("re-encoding the body: {e}")))
}

fn unknown_provider(name: &str) -> ApiError {
    ApiError::invalid_request(
        format!("unknown provider `{name}`"),
        Some("x-tollgate-provider"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::builtin_providers;

    #[test]
    fn url_path_takes_the_path_only() {
        assert_eq!(
            url_path("https://edge.example.com/v1/chat/completions"),
            "/v1/chat/completions"
        );
        assert_eq!(
            url_path("http://127.0.0.1:8787/v1/models?x=1#f"),
            "/v1/models"
        );
        assert_eq!(url_path("https://edge.example.com"), "/");
        assert_eq!(url_path("/v1/embeddings?a"), "/v1/embeddings");
    }

    fn chat() -> Route {
        route("POST", "/v1/chat/completions").unwrap()
    }

    #[test]
    fn routes() {
        assert_eq!(chat().endpoint, Endpoint::ChatCompletions);
        assert_eq!(
            route("POST", "/v1/responses/").unwrap().upstream_path,
            "/responses"
        );
        assert_eq!(
            route("GET", "/v1/models").unwrap().endpoint,
            Endpoint::Models
        );
        assert!(route("GET", "/v1/chat/completions").is_none());
        assert!(route("POST", "/v2/x").is_none());
        // Every route's path knows its method (the 405 for the others).
        for (m, p) in [
            ("POST", "/v1/chat/completions"),
            ("POST", "/v1/responses"),
            ("POST", "/v1/embeddings"),
            ("POST", "/v1/completions"),
            ("GET", "/v1/models"),
        ] {
            assert!(route(m, p).is_some());
            assert_eq!(method_of(p), Some(m));
        }
        assert_eq!(method_of("/v2/x"), None);
    }

    #[test]
    fn prefix_selects_provider_and_is_stripped() {
        let p = plan(
            chat(),
            br#"{"model":"openrouter/anthropic/claude-sonnet-4.5","messages":[]}"#,
            &builtin_providers(),
            "openai",
            None,
        )
        .unwrap();
        assert_eq!(p.provider.name, "openrouter");
        assert_eq!(p.facts.model, "openrouter/anthropic/claude-sonnet-4.5");
        let sent: Value = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(sent["model"], "anthropic/claude-sonnet-4.5");
    }

    #[test]
    fn header_wins_and_keeps_the_model() {
        let p = plan(
            chat(),
            br#"{"model":"openai/gpt-4o"}"#,
            &builtin_providers(),
            "openai",
            Some("openrouter"),
        )
        .unwrap();
        assert_eq!(p.provider.name, "openrouter");
        assert_eq!(p.body, br#"{"model":"openai/gpt-4o"}"#);
    }

    #[test]
    fn default_provider_and_untouched_bytes() {
        let body = br#"{"model":"gpt-4o-mini", "messages":[{"role":"user","content":"hi"}], "max_tokens": 64}"#;
        let p = plan(chat(), body, &builtin_providers(), "openai", None).unwrap();
        assert_eq!(p.provider.name, "openai");
        assert_eq!(
            p.body, body,
            "nothing to change: the client's bytes go as they are"
        );
        assert_eq!(p.facts.max_output_tokens, Some(64));
        assert!(!p.strip_usage_chunk);
    }

    #[test]
    fn streams_get_usage_injected_unless_the_client_asked() {
        let p = plan(
            chat(),
            br#"{"model":"gpt-4o-mini","stream":true}"#,
            &builtin_providers(),
            "openai",
            None,
        )
        .unwrap();
        assert!(p.strip_usage_chunk);
        let sent: Value = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(sent["stream_options"]["include_usage"], true);

        let p = plan(
            chat(),
            br#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true}}"#,
            &builtin_providers(),
            "openai",
            None,
        )
        .unwrap();
        assert!(!p.strip_usage_chunk && p.facts.client_wants_usage);

        let responses = route("POST", "/v1/responses").unwrap();
        let p = plan(
            responses,
            br#"{"model":"gpt-4.1","stream":true}"#,
            &builtin_providers(),
            "openai",
            None,
        )
        .unwrap();
        assert!(
            !p.strip_usage_chunk,
            "the Responses API always reports usage"
        );
    }

    #[test]
    fn injecting_usage_keeps_the_clients_bytes_and_fields() {
        let body = b" \n {\"model\":\"gpt-4o-mini\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"{ \\\"hi\\\" }\"}],\"temperature\":0.25}";
        let p = plan(chat(), body, &builtin_providers(), "openai", None).unwrap();
        assert!(p.strip_usage_chunk);
        let sent: Value = serde_json::from_slice(&p.body).unwrap();
        let mut expected: Value = serde_json::from_slice(body).unwrap();
        expected["stream_options"] = serde_json::json!({"include_usage": true});
        assert_eq!(sent, expected);
        // The client's bytes follow the injected option untouched.
        assert!(p.body.ends_with(&body[4..]));

        // `"stream_options": null` is no options: replaced, never a second key.
        let p = plan(
            chat(),
            br#"{"model":"m","stream":true,"stream_options":null}"#,
            &builtin_providers(),
            "openai",
            None,
        )
        .unwrap();
        assert!(p.strip_usage_chunk);
        assert_eq!(
            String::from_utf8(p.body).unwrap(),
            r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#
        );

        // A repeated field reads as before: the last one wins.
        let p = plan(
            chat(),
            br#"{"model":"a","model":"b","stream":false,"stream":true}"#,
            &builtin_providers(),
            "openai",
            None,
        )
        .unwrap();
        assert_eq!((p.facts.model.as_str(), p.facts.stream), ("b", true));

        // Options the client set are kept beside the injected one.
        let p = plan(
            chat(),
            br#"{"model":"openrouter/x/y","stream":true,"stream_options":{"include_obfuscation":false}}"#,
            &builtin_providers(),
            "openai",
            None,
        )
        .unwrap();
        let sent: Value = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(
            sent,
            serde_json::json!({"model": "x/y", "stream": true,
                "stream_options": {"include_obfuscation": false, "include_usage": true}})
        );
    }

    #[test]
    fn bad_bodies_name_the_problem() {
        let e = plan(chat(), b"{", &builtin_providers(), "openai", None).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("not valid JSON"));
        let e = plan(
            chat(),
            br#"{"messages":[]}"#,
            &builtin_providers(),
            "openai",
            None,
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("model"));
        let e = plan(chat(), br#"[1]"#, &builtin_providers(), "openai", None).unwrap_err();
        assert!(e.message.contains("JSON object"));
        let e = plan(
            chat(),
            br#"{"model":"m"}"#,
            &builtin_providers(),
            "openai",
            Some("nope"),
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("x-tollgate-provider"));
        let big = vec![b' '; MAX_REQUEST_BYTES + 1];
        assert_eq!(
            plan(chat(), &big, &builtin_providers(), "openai", None)
                .unwrap_err()
                .status,
            413
        );
    }

    #[test]
    fn a_body_is_refused_as_soon_as_it_passes_the_limit() {
        let mut b = BodyBuffer::new(10);
        b.push(b"12345").unwrap();
        b.push(b"67890").unwrap();
        assert_eq!(b.push(b"x").unwrap_err().status, 413);
        assert_eq!(b.into_bytes(), b"1234567890");
        let mut b = BodyBuffer::new(MAX_REQUEST_BYTES);
        let e = b.push(&vec![b' '; MAX_REQUEST_BYTES + 1]).unwrap_err();
        assert_eq!((e.status, e.code), (413, Some("request_too_large")));
    }
}
