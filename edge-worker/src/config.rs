//! The worker's configuration, read from its bindings (wrangler `vars` and secrets).
//!
//! | binding | kind | meaning |
//! |---|---|---|
//! | `DEFAULT_PROVIDER` | var | provider used when neither the model prefix nor `x-tollgate-provider` names one (`openai`) |
//! | `PROVIDERS` | var, JSON | extra OpenAI-compatible providers: `[{"name","base_url","secret"}]`; may override the built-ins' base URLs |
//! | `OPENAI_API_KEY`, `OPENROUTER_API_KEY`, … | secrets | provider keys, named by each provider's `secret` |
//! | `COLLECTOR_URL` | var | where record batches are POSTed (`https://collector.example.com/v1/records`) |
//! | `COLLECTOR_SIGNING_SECRET` | secret | HMAC secret shared with the collector |
//! | `APP_KEYS` | var, JSON | local/dev key table: `{"<sha256 of tg_… key>": {key_id, org_id, user_id?, app_id, budget_scope?}}` |
//! | `APP_KEYS_KV` | KV namespace | production key table, same JSON values keyed by hash |
//! | `KEYS_URL` | var | dashboard-api base URL (`https://dashboard.example.com`); with `KEYS_SIGNING_SECRET` and no `APP_KEYS_KV`, keys are looked up there (`GET /internal/v1/keys/<sha256>`, signed) |
//! | `KEYS_SIGNING_SECRET` | secret | HMAC secret shared with dashboard-api (`internal.signing_secrets`) for the key lookup |
//! | `KEYS_CACHE_SECS` | var | how long each lookup answer (found or not) is kept per isolate (default 30): the longest a revoked key keeps working; `0` asks every time |
//! | `USAGE_QUEUE` | Queue producer | when bound, records go to this queue (durable path) instead of a direct POST |
//! | `UPSTREAM_TIMEOUT_MS` | var | time allowed until the provider's response headers (default 120000) |
//! | `BODY_TIMEOUT_MS` | var | time allowed for the client's request body to arrive (default 30000; 408 `request_timeout` past it). Bodies are limited to 16 MiB however they are sent (413 `request_too_large`) |
//! | `SHIP_BATCH_DELAY_MS` | var | how long records wait to share one POST (default 50) |
//! | `EDGE_REGION` | var | region label when the request carries none (local runs) |

use serde::Deserialize;

/// An OpenAI-compatible upstream.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    /// Name used in records, model prefixes (`openrouter/…`) and `x-tollgate-provider`.
    pub name: String,
    /// Base URL including the version segment (`https://api.openai.com/v1`).
    pub base_url: String,
    /// Name of the secret binding that holds the provider key.
    pub secret: String,
}

/// The built-in providers; `PROVIDERS` may add more or override these by name.
pub fn builtin_providers() -> Vec<Provider> {
    vec![
        Provider {
            name: "openai".into(),
            base_url: "https://api.openai.com/v1".into(),
            secret: "OPENAI_API_KEY".into(),
        },
        Provider {
            name: "openrouter".into(),
            base_url: "https://openrouter.ai/api/v1".into(),
            secret: "OPENROUTER_API_KEY".into(),
        },
    ]
}

/// Built-ins merged with the `PROVIDERS` JSON (same name replaces). Errors name the problem.
pub fn providers_from(json: Option<&str>) -> Result<Vec<Provider>, String> {
    let mut providers = builtin_providers();
    let Some(json) = json.filter(|j| !j.trim().is_empty()) else {
        return Ok(providers);
    };
    let extra: Vec<Provider> =
        serde_json::from_str(json).map_err(|e| format!("PROVIDERS is not valid JSON: {e}"))?;
    for p in extra {
        if p.name.is_empty()
            || !p
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "PROVIDERS: `{}` is not a valid provider name",
                p.name
            ));
        }
        if !(p.base_url.starts_with("https://") || p.base_url.starts_with("http://")) {
            return Err(format!(
                "PROVIDERS: base_url of `{}` must be an http(s) URL",
                p.name
            ));
        }
        providers.retain(|q| q.name != p.name);
        providers.push(Provider {
            base_url: p.base_url.trim_end_matches('/').to_string(),
            ..p
        });
    }
    Ok(providers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_providers_add_and_override() {
        let ps = providers_from(Some(
            r#"[{"name":"openai","base_url":"http://127.0.0.1:8799/v1/","secret":"OPENAI_API_KEY"},
                {"name":"groq","base_url":"https://api.groq.com/openai/v1","secret":"GROQ_KEY"}]"#,
        ))
        .unwrap();
        let names: Vec<_> = ps.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["openrouter", "openai", "groq"]);
        assert_eq!(ps[1].base_url, "http://127.0.0.1:8799/v1");
    }

    #[test]
    fn bad_provider_tables_say_why() {
        assert!(providers_from(Some("{"))
            .unwrap_err()
            .contains("not valid JSON"));
        assert!(providers_from(Some(
            r#"[{"name":"a b","base_url":"https://x","secret":"S"}]"#
        ))
        .unwrap_err()
        .contains("valid provider name"));
        assert!(
            providers_from(Some(r#"[{"name":"x","base_url":"ftp://x","secret":"S"}]"#))
                .unwrap_err()
                .contains("http(s)")
        );
        assert_eq!(providers_from(None).unwrap(), builtin_providers());
    }
}
