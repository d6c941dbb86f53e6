//! App keys: `Authorization: Bearer tg_…` → the org, user, app and budget scope it acts for.
//!
//! Keys are looked up by the SHA-256 of the presented secret (never stored in clear). The
//! dashboard owns them — there is one source of truth, and no copy to keep in step:
//!
//! 1. the dashboard's signed lookup, when `KEYS_URL` and the secret `KEYS_SIGNING_SECRET` are
//!    set (every deployment): `GET <KEYS_URL>/internal/v1/keys/<sha256>` with
//!    `x-tollgate-signature: t=<unix>,v1=<hmac-sha256(secret, t + ".")>` (the collector's
//!    scheme, over the empty body). Each answer — the key, or "no such key" — is kept in the
//!    isolate's [`KeyCache`] for `KEYS_CACHE_SECS` ([`crate::config::DEFAULT_KEYS_CACHE_SECS`] by default);
//! 2. without them, the `APP_KEYS` JSON var (local runs and tests without a dashboard).
//!
//! **Delay.** With the dashboard lookup, a key revoked in the dashboard keeps working for at
//! most `KEYS_CACHE_SECS` in each isolate that looked it up, and a key created in the dashboard
//! works at once — unless its secret was presented (and refused) in the last `KEYS_CACHE_SECS`.
//! When the dashboard cannot be reached (or answers with an error), an expired answer is used
//! for up to [`STALE_GRACE_SECS`] more, so a dashboard outage does not lock every app out; a
//! key never seen before is refused meanwhile.

use std::collections::HashMap;

use serde_json::Value;

use crate::json::{self, Fields, FromJson};
use usage_core::keys::{hash_secret, looks_like_app_key};

/// What an app key stands for. As JSON (the `APP_KEYS` table, the dashboard's lookup answers;
/// read by [`crate::json`]): `key_id`, `org_id` and `app_id` are required; `user_id` defaults
/// to empty, `acts_for_end_users` and `revoked` to false.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppKey {
    pub key_id: String,
    pub org_id: String,
    pub user_id: String,
    pub app_id: String,
    /// A server app acting for users of its own: its calls may name their end user in
    /// `x-tollgate-user` ([`crate::attribution::trusted`]).
    pub acts_for_end_users: bool,
    pub revoked: bool,
}

/// The presented key's hash, if the `Authorization` header carries something key-shaped.
pub fn presented_key_hash(authorization: Option<&str>) -> Option<String> {
    let value = authorization?.trim();
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?
        .trim();
    looks_like_app_key(token).then(|| hash_secret(token))
}

/// A key table in the `APP_KEYS` JSON form: `{"<sha256>": AppKey}`.
pub fn parse_table(json: &str) -> Result<HashMap<String, AppKey>, String> {
    let bad = |e: String| format!("APP_KEYS is not a valid key table: {e}");
    let table: serde_json::Value =
        serde_json::from_slice(json.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let entries = table
        .as_object()
        .ok_or_else(|| bad("expected a JSON object of key hash → key".into()))?;
    entries
        .iter()
        .map(|(hash, key)| {
            AppKey::from_json(key)
                .map(|k| (hash.clone(), k))
                .map_err(|e| bad(format!("{hash}: {e}")))
        })
        .collect()
}

impl FromJson for AppKey {
    fn from_json(v: &Value) -> Result<Self, String> {
        let f = Fields::of(v)?;
        Ok(AppKey {
            key_id: f.str("key_id")?,
            org_id: f.str("org_id")?,
            user_id: f.str_or_empty("user_id")?,
            app_id: f.str("app_id")?,
            acts_for_end_users: f.bool_or_false("acts_for_end_users")?,
            revoked: f.bool_or_false("revoked")?,
        })
    }
}

/// A usable key (present and not revoked).
pub fn usable(key: Option<AppKey>) -> Option<AppKey> {
    key.filter(|k| !k.revoked)
}

/// How long past its expiry an answer is still used while the dashboard cannot be reached.
pub const STALE_GRACE_SECS: u64 = 300;
/// Most answers one isolate keeps (unknown keys are cached too, so this bounds what a flood of
/// made-up keys can cost).
pub const MAX_CACHED_KEYS: usize = 10_000;

/// The dashboard's lookup URL for `hash`, under the base URL `KEYS_URL`.
pub fn lookup_url(base: &str, hash: &str) -> String {
    format!("{}/internal/v1/keys/{hash}", base.trim_end_matches('/'))
}

/// What a lookup response means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LookupAnswer {
    /// A live key.
    Found(AppKey),
    /// The dashboard knows no live key with this hash (unknown or revoked).
    NotFound,
    /// No answer to rely on (refused signature, server error, garbage): not cached.
    Failed(String),
}

/// Reads the dashboard's answer: 200 with an `AppKey`, or 404.
pub fn read_lookup(status: u16, body: &[u8]) -> LookupAnswer {
    match status {
        200 => match json::parse::<AppKey>(body) {
            Ok(k) if !k.revoked => LookupAnswer::Found(k),
            Ok(_) => LookupAnswer::NotFound,
            Err(e) => LookupAnswer::Failed(format!("key lookup answered 200 with no key: {e}")),
        },
        404 => LookupAnswer::NotFound,
        401 => LookupAnswer::Failed(
            "key lookup refused the signature (check KEYS_SIGNING_SECRET and the clock)".into(),
        ),
        s => LookupAnswer::Failed(format!("key lookup answered {s}")),
    }
}

/// A cached answer, as the cache sees it at some instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheHit {
    /// Within its cache time: use it.
    Fresh(Option<AppKey>),
    /// Expired but within [`STALE_GRACE_SECS`]: use it only if a new lookup fails.
    Stale(Option<AppKey>),
    Miss,
}

/// Dashboard lookup answers of one isolate, by key hash; `None` answers (no such key) are
/// kept too, so an unknown key costs one lookup per cache time, not one per request.
#[derive(Debug, Default)]
pub struct KeyCache {
    entries: HashMap<String, (Option<AppKey>, u64)>,
}

impl KeyCache {
    /// The answer for `hash` at `now_ms` (milliseconds since the epoch).
    pub fn get(&self, hash: &str, now_ms: u64) -> CacheHit {
        match self.entries.get(hash) {
            Some((key, expires)) if now_ms < *expires => CacheHit::Fresh(key.clone()),
            Some((key, expires)) if now_ms < expires + STALE_GRACE_SECS * 1000 => {
                CacheHit::Stale(key.clone())
            }
            _ => CacheHit::Miss,
        }
    }

    /// Remembers an answer for `ttl_ms` from `now_ms`.
    pub fn put(&mut self, hash: &str, key: Option<AppKey>, now_ms: u64, ttl_ms: u64) {
        if self.entries.len() >= MAX_CACHED_KEYS && !self.entries.contains_key(hash) {
            let grace = STALE_GRACE_SECS * 1000;
            self.entries
                .retain(|_, (_, expires)| now_ms < *expires + grace);
            if self.entries.len() >= MAX_CACHED_KEYS {
                self.entries.clear();
            }
        }
        self.entries
            .insert(hash.to_string(), (key, now_ms.saturating_add(ttl_ms)));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::parse;

    #[test]
    fn only_key_shaped_bearers_are_looked_up() {
        let key = format!("tg_{}", "a".repeat(40));
        assert_eq!(
            presented_key_hash(Some(&format!("Bearer {key}"))),
            Some(hash_secret(&key))
        );
        assert_eq!(presented_key_hash(Some("Bearer sk-proj-123")), None);
        assert_eq!(presented_key_hash(Some(&key)), None);
        assert_eq!(presented_key_hash(None), None);
    }

    #[test]
    fn table_and_revocation() {
        let t = parse_table(r#"{"abc": {"key_id":"k1","org_id":"o","app_id":"a"}, "def": {"key_id":"k2","org_id":"o","app_id":"a","revoked":true}}"#).unwrap();
        assert!(usable(t.get("abc").cloned()).is_some());
        assert!(usable(t.get("def").cloned()).is_none());
        assert!(parse_table("[]").is_err());
    }

    fn key(id: &str) -> AppKey {
        AppKey {
            key_id: id.into(),
            org_id: "o".into(),
            user_id: String::new(),
            app_id: "a".into(),
            acts_for_end_users: false,
            revoked: false,
        }
    }

    #[test]
    fn answers_are_fresh_for_the_ttl_then_stale_for_the_grace_then_gone() {
        let mut c = KeyCache::default();
        assert_eq!(c.get("h", 0), CacheHit::Miss);
        c.put("h", Some(key("k1")), 1_000, 30_000);
        c.put("unknown", None, 1_000, 30_000);
        assert_eq!(c.get("h", 30_999), CacheHit::Fresh(Some(key("k1"))));
        assert_eq!(c.get("unknown", 2_000), CacheHit::Fresh(None));
        assert_eq!(c.get("h", 31_000), CacheHit::Stale(Some(key("k1"))));
        assert_eq!(
            c.get("h", 31_000 + STALE_GRACE_SECS * 1000 - 1),
            CacheHit::Stale(Some(key("k1")))
        );
        assert_eq!(c.get("h", 31_000 + STALE_GRACE_SECS * 1000), CacheHit::Miss);
        // A new answer replaces the old one.
        c.put("h", None, 40_000, 1_000);
        assert_eq!(c.get("h", 40_500), CacheHit::Fresh(None));
    }

    #[test]
    fn the_cache_is_bounded() {
        let mut c = KeyCache::default();
        for i in 0..MAX_CACHED_KEYS {
            c.put(&i.to_string(), None, 0, 1_000);
        }
        assert_eq!(c.len(), MAX_CACHED_KEYS);
        // All still within their grace: the cache starts over rather than grow.
        c.put("one more", None, 2_000, 1_000);
        assert_eq!(c.len(), 1);
        for i in 0..MAX_CACHED_KEYS - 1 {
            c.put(&i.to_string(), None, 10_000, 1_000);
        }
        // Full again: what is past its grace ("one more") goes, what may still serve stays.
        let late = 1_000 + STALE_GRACE_SECS * 1000 + 5_000;
        c.put("late", None, late, 1_000);
        assert_eq!(c.len(), MAX_CACHED_KEYS);
        assert_eq!(c.get("one more", 0), CacheHit::Miss);
        assert_eq!(c.get("0", late), CacheHit::Stale(None));
        assert_eq!(c.get("late", late), CacheHit::Fresh(None));
    }

    /// Keys as dashboard-api writes them: optional fields may be missing.
    #[test]
    fn key_documents_default_optional_fields_and_name_bad_ones() {
        let key =
            parse::<AppKey>(br#"{"key_id":"k","org_id":"o","app_id":"a","extra":1}"#).unwrap();
        assert_eq!((key.user_id.as_str(), key.revoked), ("", false));
        assert!(
            parse::<AppKey>(br#"{"key_id":"k","org_id":"o","app_id":"a","revoked":true}"#)
                .unwrap()
                .revoked
        );

        for (doc, why) in [
            (
                &br#"{"key_id":"k","app_id":"a"}"#[..],
                "missing field `org_id`",
            ),
            (
                br#"{"key_id":"k","org_id":7,"app_id":"a"}"#,
                "field `org_id` must be a string",
            ),
            (
                br#"{"key_id":"k","org_id":"o","app_id":"a","revoked":"yes"}"#,
                "field `revoked` must be true or false",
            ),
            (
                br#"{"key_id":"k","org_id":"o","app_id":"a","revoked":null}"#,
                "field `revoked` must be true or false",
            ),
            (br#"[1]"#, "expected a JSON object"),
            (br#"{"#, "not JSON"),
        ] {
            let err = parse::<AppKey>(doc).unwrap_err();
            assert!(err.starts_with(why), "{err}");
        }
    }

    #[test]
    fn lookup_answers() {
        assert_eq!(
            lookup_url("http://127.0.0.1:8080/", "ab"),
            "http://127.0.0.1:8080/internal/v1/keys/ab"
        );
        let body =
            br#"{"key_id":"k1","org_id":"o","user_id":"","app_id":"a","budget_scope":"org:o"}"#;
        assert_eq!(read_lookup(200, body), LookupAnswer::Found(key("k1")));
        assert_eq!(read_lookup(404, b"{}"), LookupAnswer::NotFound);
        assert!(matches!(
            read_lookup(200, b"<html>"),
            LookupAnswer::Failed(_)
        ));
        assert!(
            matches!(read_lookup(401, b""), LookupAnswer::Failed(m) if m.contains("KEYS_SIGNING_SECRET"))
        );
        assert!(matches!(read_lookup(503, b""), LookupAnswer::Failed(_)));
    }
}
