//! Optional attribution headers an app may send: `x-tollgate-user`, `x-tollgate-task`,
//! `x-tollgate-tags` (`k=v,k2=v2`). Bounded and validated: a bad value is a 400 naming the
//! header, never a silently truncated record.
//!
//! # Whose call it is
//!
//! The key's user wins ([`trusted`]). Only a key marked `acts_for_end_users` in the dashboard
//! (a server app with many users of its own) may name the call's user in `x-tollgate-user`:
//! that end user is then the record's user, and that user's budgets apply; the key's own user
//! goes to the `tollgate.key_user` tag. Any other key naming a user other than its own is
//! refused with 403 `end_user_not_allowed` — loud, so an app cannot spend under someone
//! else's name or dodge a per-user budget, and a misconfigured one learns why at once.

use std::collections::BTreeMap;

use usage_core::record::limits;

use crate::errors::ApiError;

pub const USER_HEADER: &str = "x-tollgate-user";
pub const TASK_HEADER: &str = "x-tollgate-task";
pub const TAGS_HEADER: &str = "x-tollgate-tags";

/// Attribution taken from the headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attribution {
    pub user: Option<String>,
    pub task: Option<String>,
    pub tags: BTreeMap<String, String>,
}

fn printable(s: &str) -> bool {
    s.chars().all(|c| !c.is_control())
}

fn token(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'/'))
}

/// Parses the three headers (each `None` when absent).
pub fn parse(
    user: Option<&str>,
    task: Option<&str>,
    tags: Option<&str>,
) -> Result<Attribution, ApiError> {
    let mut out = Attribution::default();
    if let Some(u) = user.map(str::trim).filter(|u| !u.is_empty()) {
        if u.len() > limits::MAX_ID_LEN || !printable(u) {
            return Err(ApiError::invalid_request(
                format!(
                    "{USER_HEADER} must be at most {} printable bytes",
                    limits::MAX_ID_LEN
                ),
                Some(USER_HEADER),
            ));
        }
        out.user = Some(u.to_string());
    }
    if let Some(t) = task.map(str::trim).filter(|t| !t.is_empty()) {
        if t.len() > 64 || !token(t) {
            return Err(ApiError::invalid_request(
                format!("{TASK_HEADER} must be 1-64 characters of [A-Za-z0-9_.:/-]"),
                Some(TASK_HEADER),
            ));
        }
        out.task = Some(t.to_string());
    }
    if let Some(list) = tags.map(str::trim).filter(|t| !t.is_empty()) {
        for pair in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                ApiError::invalid_request(
                    format!("{TAGS_HEADER}: `{pair}` is not key=value"),
                    Some(TAGS_HEADER),
                )
            })?;
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() || k.len() > limits::MAX_TAG_KEY_LEN || !token(k) {
                return Err(ApiError::invalid_request(
                    format!(
                        "{TAGS_HEADER}: tag keys must be 1-{} characters of [A-Za-z0-9_.:/-]",
                        limits::MAX_TAG_KEY_LEN
                    ),
                    Some(TAGS_HEADER),
                ));
            }
            if k.starts_with(limits::RESERVED_TAG_PREFIX) {
                return Err(ApiError::invalid_request(
                    format!(
                        "{TAGS_HEADER}: tag keys starting with `{}` are reserved for Tollgate",
                        limits::RESERVED_TAG_PREFIX
                    ),
                    Some(TAGS_HEADER),
                ));
            }
            if v.len() > limits::MAX_TAG_VALUE_LEN || !printable(v) {
                return Err(ApiError::invalid_request(
                    format!(
                        "{TAGS_HEADER}: tag values must be at most {} printable bytes",
                        limits::MAX_TAG_VALUE_LEN
                    ),
                    Some(TAGS_HEADER),
                ));
            }
            out.tags.insert(k.to_string(), v.to_string());
        }
        if out.tags.len() > limits::MAX_APP_TAGS {
            return Err(ApiError::invalid_request(
                format!("{TAGS_HEADER}: at most {} tags", limits::MAX_APP_TAGS),
                Some(TAGS_HEADER),
            ));
        }
    }
    Ok(out)
}

/// The attribution `key` may claim: the header's user only for a key acting for end users
/// (module docs). Returns the attribution with `user` set to the call's trusted user (`None`:
/// the key's own) and the key's user in the `tollgate.key_user` tag when they differ.
pub fn trusted(mut a: Attribution, key: &crate::keys::AppKey) -> Result<Attribution, ApiError> {
    let Some(named) = a.user.clone() else {
        return Ok(a);
    };
    if named == key.user_id {
        return Ok(a);
    }
    if !key.acts_for_end_users {
        let own = if key.user_id.is_empty() {
            "no user".to_string()
        } else {
            format!("its own user `{}`", key.user_id)
        };
        return Err(ApiError::end_user_not_allowed(
            format!(
                "this app key acts for {own}, so {USER_HEADER} may not name another user; an admin can mark the key as acting for end users (acts_for_end_users) in the dashboard"
            ),
            USER_HEADER,
        ));
    }
    if !key.user_id.is_empty() {
        a.tags
            .insert(limits::KEY_USER_TAG.to_string(), key.user_id.clone());
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(user: &str, acts_for_end_users: bool) -> crate::keys::AppKey {
        crate::keys::AppKey {
            key_id: "k".into(),
            org_id: "o".into(),
            user_id: user.into(),
            app_id: "a".into(),
            acts_for_end_users,
            revoked: false,
        }
    }

    /// #19 (3): a plain key cannot move its calls to another user; a key acting for end users
    /// can, and the record keeps whose key it was.
    #[test]
    fn only_a_key_acting_for_end_users_may_name_the_user() {
        let named = |u: &str| parse(Some(u), None, None).unwrap();
        // Plain keys: their own user (or none) only.
        let e = trusted(named("bob"), &key("alice", false)).unwrap_err();
        assert_eq!((e.status, e.code), (403, Some("end_user_not_allowed")));
        assert!(e.message.contains("alice"), "{}", e.message);
        let e = trusted(named("bob"), &key("", false)).unwrap_err();
        assert_eq!(e.status, 403);
        let same = trusted(named("alice"), &key("alice", false)).unwrap();
        assert_eq!(same.user.as_deref(), Some("alice"));
        assert!(same.tags.is_empty());
        let none = trusted(Attribution::default(), &key("alice", false)).unwrap();
        assert_eq!(none.user, None);
        // Acting for end users: the end user is the call's; the key's user is kept.
        let end = trusted(named("bob"), &key("svc", true)).unwrap();
        assert_eq!(end.user.as_deref(), Some("bob"));
        assert_eq!(
            end.tags.get(limits::KEY_USER_TAG).map(String::as_str),
            Some("svc")
        );
        let end = trusted(named("bob"), &key("", true)).unwrap();
        assert!(end.tags.is_empty());
    }

    #[test]
    fn parses_all_three() {
        let a = parse(
            Some(" alice "),
            Some("summarise"),
            Some("env=prod, team = growth"),
        )
        .unwrap();
        assert_eq!(a.user.as_deref(), Some("alice"));
        assert_eq!(a.task.as_deref(), Some("summarise"));
        assert_eq!(a.tags.get("team").map(String::as_str), Some("growth"));
        assert_eq!(parse(None, None, None).unwrap(), Attribution::default());
    }

    #[test]
    fn refuses_what_would_corrupt_a_record() {
        let param = |r: Result<Attribution, ApiError>| r.unwrap_err().param.unwrap();
        assert_eq!(
            param(parse(Some(&"u".repeat(200)), None, None)),
            USER_HEADER
        );
        assert_eq!(param(parse(None, Some("a b"), None)), TASK_HEADER);
        assert_eq!(param(parse(None, None, Some("novalue"))), TAGS_HEADER);
        let many: String = (0..20)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(param(parse(None, None, Some(&many))), TAGS_HEADER);
        assert_eq!(param(parse(None, None, Some("k=\u{7}"))), TAGS_HEADER);
    }
}
