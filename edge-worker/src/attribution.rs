//! Optional attribution headers an app may send: `x-tollgate-user`, `x-tollgate-task`,
//! `x-tollgate-tags` (`k=v,k2=v2`). Bounded and validated: a bad value is a 400 naming the
//! header, never a silently truncated record.

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

#[cfg(test)]
mod tests {
    use super::*;

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
