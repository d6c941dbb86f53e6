//! App keys: `Authorization: Bearer tg_…` → the org, user, app and budget scope it acts for.
//!
//! Keys are looked up by the SHA-256 of the presented secret (never stored in clear): in the
//! `APP_KEYS_KV` namespace in production, or in the `APP_KEYS` JSON var for local runs.

use std::collections::HashMap;

use serde::Deserialize;
use usage_core::keys::{hash_secret, looks_like_app_key};

/// What an app key stands for.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct AppKey {
    pub key_id: String,
    pub org_id: String,
    #[serde(default)]
    pub user_id: String,
    pub app_id: String,
    /// Budget scope the key's calls count against (empty: the org's budgets only).
    #[serde(default)]
    pub budget_scope: String,
    #[serde(default)]
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
    serde_json::from_str(json).map_err(|e| format!("APP_KEYS is not a valid key table: {e}"))
}

/// A usable key (present and not revoked).
pub fn usable(key: Option<AppKey>) -> Option<AppKey> {
    key.filter(|k| !k.revoked)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
