//! App keys (`tg_…`) and admin tokens: stored only as SHA-256 hashes, compared in constant time.
//!
//! Generating a key needs randomness and belongs to the services that mint keys; this module
//! only defines the format and the hash, so the edge (wasm) and the services agree on both.

use sha2::{Digest, Sha256};

/// Every app key starts with this prefix (easy to spot in a leaked-secret scanner).
pub const APP_KEY_PREFIX: &str = "tg_";
/// Dashboard API tokens start with this prefix.
pub const API_TOKEN_PREFIX: &str = "tga_";

/// Lower-case hex SHA-256 of a secret: what is stored and looked up.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether `text` has the shape of an app key: the prefix and 32–128 URL-safe characters.
pub fn looks_like_app_key(text: &str) -> bool {
    text.strip_prefix(APP_KEY_PREFIX).is_some_and(|rest| {
        (32..=128).contains(&rest.len())
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}

/// Constant-time equality of two byte strings (the length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_stable_hex() {
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn key_shape() {
        assert!(looks_like_app_key(&format!("tg_{}", "a".repeat(32))));
        assert!(!looks_like_app_key("tg_short"));
        assert!(!looks_like_app_key(&format!("sk_{}", "a".repeat(32))));
        assert!(!looks_like_app_key(&format!("tg_{}!", "a".repeat(32))));
    }

    #[test]
    fn constant_time_equality() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
