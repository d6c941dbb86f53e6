//! The worker's configuration, read from its bindings (wrangler `vars` and secrets).
//!
//! Every binding, var and secret the worker reads is in one table, in `docs/OPERATIONS.md`
//! ("Every binding, var and secret"); [`binding_names`] lists them, and a test
//! (`tests/tests/deploy_config.rs`) checks that table and `wrangler.toml` against it.
//!
//! Vars are read once per isolate into [`Settings`]: bindings cannot change while an isolate
//! lives (a new deploy starts new isolates), and reading and parsing them on every call was a
//! measurable part of the worker's latency.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::json::{Fields, FromJson};

/// The names the worker reads outside [`Settings`]: runtime bindings and secrets.
pub mod names {
    /// Queue producer: records go through it when bound.
    pub const USAGE_QUEUE: &str = "USAGE_QUEUE";
    /// Durable Object namespace of the `BudgetGuard` class.
    pub const BUDGET_GUARD: &str = "BUDGET_GUARD";
    /// Local key table (runs without a dashboard).
    pub const APP_KEYS: &str = "APP_KEYS";
    /// HMAC secret shared with the collector.
    pub const COLLECTOR_SIGNING_SECRET: &str = "COLLECTOR_SIGNING_SECRET";
    /// HMAC secret shared with dashboard-api.
    pub const KEYS_SIGNING_SECRET: &str = "KEYS_SIGNING_SECRET";
    /// The response header naming the version of dashboard-api's price book.
    pub const PRICING_VERSION_HEADER: &str = "x-tollgate-pricing-version";
}

/// Every binding, var and secret name the worker reads: [`Settings`]' vars, the built-in
/// providers' secrets and [`names`].
pub fn binding_names() -> BTreeSet<String> {
    let read = std::cell::RefCell::new(BTreeSet::new());
    let _ = Settings::from_vars(|name| {
        read.borrow_mut().insert(name.to_string());
        None
    });
    let mut all = read.into_inner();
    all.extend(builtin_providers().into_iter().map(|p| p.secret));
    all.extend(
        [
            names::USAGE_QUEUE,
            names::BUDGET_GUARD,
            names::APP_KEYS,
            names::COLLECTOR_SIGNING_SECRET,
            names::KEYS_SIGNING_SECRET,
        ]
        .map(String::from),
    );
    all
}

/// The worker's vars, parsed (see the module docs for each binding).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Built-ins merged with `PROVIDERS`, or why `PROVIDERS` is unusable (every proxied call
    /// then answers 500 with that reason, so a bad deploy is loud, not half-working).
    pub providers: Result<Vec<Provider>, String>,
    pub default_provider: String,
    pub upstream_timeout_ms: u64,
    pub body_timeout_ms: u64,
    pub ship_batch_delay_ms: u64,
    pub collector_url: Option<String>,
    pub keys_url: Option<String>,
    pub keys_cache_ms: u64,
    /// `PRICES_CACHE_SECS`: how long an isolate uses the dashboard's price book before it
    /// checks for a new one (`crate::prices`, wasm only).
    pub prices_cache_ms: u64,
    pub edge_region: String,
    pub allow_test_clock: bool,
    pub unpriced_under_hard_budget: bool,
    /// `BUDGET_FAIL_MODE=open`: a hard budget that cannot be checked lets the call through.
    /// Any other value (or none) keeps it closed: refusing is the side a typo should fall on.
    pub budget_fail_open: bool,
    /// `CORS_ALLOWED_ORIGINS`: which origins browsers may call from ([`crate::cors`]).
    pub cors: crate::cors::CorsPolicy,
}

/// `UPSTREAM_TIMEOUT_MS` when unset.
pub const DEFAULT_UPSTREAM_TIMEOUT_MS: u64 = 120_000;
/// `SHIP_BATCH_DELAY_MS` when unset.
pub const DEFAULT_SHIP_BATCH_DELAY_MS: u64 = 50;

/// How long a request body may take to arrive when `BODY_TIMEOUT_MS` is not set (408 past it).
pub const DEFAULT_BODY_TIMEOUT_MS: u64 = 30_000;

/// The body timeout from the `BODY_TIMEOUT_MS` var (absent, unreadable or 0: the default).
pub fn body_timeout_ms(var: Option<&str>) -> u64 {
    var.and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&ms| ms > 0)
        .unwrap_or(DEFAULT_BODY_TIMEOUT_MS)
}

/// How long an isolate uses the dashboard's price book when `PRICES_CACHE_SECS` is not set.
pub const DEFAULT_PRICES_CACHE_SECS: u64 = 60;

/// How long a dashboard lookup's answer is kept when `KEYS_CACHE_SECS` is not set.
pub const DEFAULT_KEYS_CACHE_SECS: u64 = 30;
/// The cache time in milliseconds from the `KEYS_CACHE_SECS` var (whole seconds; `0` turns
/// caching off; absent or unreadable: [`DEFAULT_KEYS_CACHE_SECS`]).
pub fn keys_cache_ttl_ms(var: Option<&str>) -> u64 {
    var.and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(DEFAULT_KEYS_CACHE_SECS)
        .saturating_mul(1000)
}

impl Settings {
    /// Reads every var through `var` (which yields `None` for unset or empty ones).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Settings {
        let number = |name: &str, default: u64| {
            var(name)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(default)
        };
        Settings {
            providers: providers_from(var("PROVIDERS").as_deref()),
            default_provider: var("DEFAULT_PROVIDER").unwrap_or_else(|| "openai".into()),
            upstream_timeout_ms: number("UPSTREAM_TIMEOUT_MS", DEFAULT_UPSTREAM_TIMEOUT_MS),
            body_timeout_ms: body_timeout_ms(var("BODY_TIMEOUT_MS").as_deref()),
            ship_batch_delay_ms: number("SHIP_BATCH_DELAY_MS", DEFAULT_SHIP_BATCH_DELAY_MS),
            collector_url: var("COLLECTOR_URL"),
            keys_url: var("KEYS_URL"),
            keys_cache_ms: keys_cache_ttl_ms(var("KEYS_CACHE_SECS").as_deref()),
            prices_cache_ms: number("PRICES_CACHE_SECS", DEFAULT_PRICES_CACHE_SECS)
                .saturating_mul(1000),
            edge_region: var("EDGE_REGION").unwrap_or_default(),
            allow_test_clock: var("ALLOW_TEST_CLOCK").as_deref() == Some("1"),
            unpriced_under_hard_budget: var("UNPRICED_UNDER_HARD_BUDGET").as_deref()
                == Some("allow"),
            budget_fail_open: var("BUDGET_FAIL_MODE")
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("open")),
            cors: crate::cors::CorsPolicy::parse(var("CORS_ALLOWED_ORIGINS").as_deref()),
        }
    }
}

/// An OpenAI-compatible upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provider {
    /// Name used in records, model prefixes (`openrouter/…`) and `x-tollgate-provider`.
    pub name: String,
    /// Base URL including the version segment (`https://api.openai.com/v1`).
    pub base_url: String,
    /// Name of the secret binding that holds the provider key.
    pub secret: String,
}

impl FromJson for Provider {
    fn from_json(v: &Value) -> Result<Self, String> {
        let f = Fields::of(v)?;
        f.only(&["name", "base_url", "secret"])?;
        Ok(Provider {
            name: f.str("name")?,
            base_url: f.str("base_url")?,
            secret: f.str("secret")?,
        })
    }
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
    let v: serde_json::Value = serde_json::from_slice(json.as_bytes())
        .map_err(|e| format!("PROVIDERS is not valid JSON: {e}"))?;
    let extra: Vec<Provider> = crate::json::list(&v, "PROVIDERS")?;
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
    use crate::json::parse;

    #[test]
    fn settings_take_defaults_and_overrides() {
        let defaults = Settings::from_vars(|_| None);
        assert_eq!(defaults.providers, Ok(builtin_providers()));
        assert_eq!(defaults.default_provider, "openai");
        assert_eq!(defaults.upstream_timeout_ms, DEFAULT_UPSTREAM_TIMEOUT_MS);
        assert_eq!(defaults.body_timeout_ms, DEFAULT_BODY_TIMEOUT_MS);
        assert_eq!(defaults.ship_batch_delay_ms, DEFAULT_SHIP_BATCH_DELAY_MS);
        assert_eq!(defaults.keys_cache_ms, 30_000);
        assert!(!defaults.allow_test_clock && !defaults.unpriced_under_hard_budget);
        assert!(
            !defaults.budget_fail_open,
            "hard budgets fail closed by default"
        );
        assert_eq!(defaults.collector_url, None);

        let vars = [
            ("PROVIDERS", "{"),
            ("DEFAULT_PROVIDER", "openrouter"),
            ("UPSTREAM_TIMEOUT_MS", "3000"),
            ("BODY_TIMEOUT_MS", "250"),
            ("SHIP_BATCH_DELAY_MS", "soon"),
            ("COLLECTOR_URL", "http://c/v1/records"),
            ("KEYS_CACHE_SECS", "0"),
            ("EDGE_REGION", "AMS"),
            ("ALLOW_TEST_CLOCK", "1"),
            ("UNPRICED_UNDER_HARD_BUDGET", "allow"),
            ("BUDGET_FAIL_MODE", " Open"),
        ];
        let s = Settings::from_vars(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        });
        assert!(s
            .providers
            .unwrap_err()
            .contains("PROVIDERS is not valid JSON"));
        assert_eq!(s.default_provider, "openrouter");
        assert_eq!((s.upstream_timeout_ms, s.body_timeout_ms), (3000, 250));
        // An unreadable number falls back to the default rather than to zero.
        assert_eq!(s.ship_batch_delay_ms, DEFAULT_SHIP_BATCH_DELAY_MS);
        assert_eq!(s.collector_url.as_deref(), Some("http://c/v1/records"));
        assert_eq!((s.keys_cache_ms, s.edge_region.as_str()), (0, "AMS"));
        assert!(s.allow_test_clock && s.unpriced_under_hard_budget && s.budget_fail_open);
        for typo in ["opne", "yes", "1", ""] {
            let s = Settings::from_vars(|n| (n == "BUDGET_FAIL_MODE").then(|| typo.to_string()));
            assert!(!s.budget_fail_open, "{typo:?} must not open hard budgets");
        }
    }

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

    #[test]
    fn providers_refuse_unknown_fields() {
        let p = parse::<Provider>(br#"{"name":"x","base_url":"https://x/v1","secret":"X_KEY"}"#)
            .unwrap();
        assert_eq!(p.secret, "X_KEY");
        let err = parse::<Provider>(
            br#"{"name":"x","base_url":"https://x/v1","secret":"X","sekret":"Y"}"#,
        )
        .unwrap_err();
        assert!(err.starts_with("unknown field `sekret`"), "{err}");
    }

    #[test]
    fn the_body_timeout_comes_from_its_var() {
        assert_eq!(body_timeout_ms(None), DEFAULT_BODY_TIMEOUT_MS);
        assert_eq!(body_timeout_ms(Some(" 2000 ")), 2000);
        assert_eq!(body_timeout_ms(Some("0")), DEFAULT_BODY_TIMEOUT_MS);
        assert_eq!(body_timeout_ms(Some("soon")), DEFAULT_BODY_TIMEOUT_MS);
    }

    #[test]
    fn the_key_cache_time_comes_from_its_var() {
        assert_eq!(keys_cache_ttl_ms(None), 30_000);
        assert_eq!(keys_cache_ttl_ms(Some("1")), 1_000);
        assert_eq!(keys_cache_ttl_ms(Some("0")), 0);
        assert_eq!(keys_cache_ttl_ms(Some("soon")), 30_000);
    }
}
