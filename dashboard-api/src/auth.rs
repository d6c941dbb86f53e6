//! Who is calling, and what they may see.
//!
//! Admin API tokens (`tga_…`) are stored only as SHA-256 hashes in `api_tokens`. A request's
//! bearer token becomes a [`Principal`] (role and tenant), and every query's tenant predicate
//! comes from [`Principal::read_scope`] — from the token, never from a request parameter
//! alone: an `org` or `user` parameter can only narrow what the token already allows.
//!
//! Roles: `admin` (every org, read and write), `org_admin` (one org, read and write its
//! configuration), `viewer` (one org — or one user of it when the token names a user —
//! read-only). Lookups are cached for [`TOKEN_CACHE_TTL`], which bounds how long a revoked
//! token keeps working.

use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use tollgate_clickhouse::clickhouse::{self, Client, Row};
use tollgate_clickhouse::queries::NamedQuery;
use tollgate_clickhouse::{read_query, Scope};
use usage_core::keys::{hash_secret, API_TOKEN_PREFIX};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::AppState;
use tollgate_clickhouse::{now_second, row_version};

/// How long a token lookup is trusted before ClickHouse is asked again.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(10);

const TOKEN_BY_HASH: NamedQuery = NamedQuery {
    name: "admin/token_by_hash",
    sql: include_str!("../../clickhouse/queries/admin/token_by_hash.sql"),
};
const TOKENS_LIST: NamedQuery = NamedQuery {
    name: "admin/tokens_list",
    sql: include_str!("../../clickhouse/queries/admin/tokens_list.sql"),
};
const TOKEN_BY_ID: NamedQuery = NamedQuery {
    name: "admin/token_by_id",
    sql: include_str!("../../clickhouse/queries/admin/token_by_id.sql"),
};

/// A token's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    OrgAdmin,
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::OrgAdmin => "org_admin",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "org_admin" => Some(Role::OrgAdmin),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
}

/// The caller, as its token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub token_id: String,
    pub name: String,
    pub role: Role,
    /// Empty for admins.
    pub org_id: String,
    /// Set for viewers bound to one user.
    pub user_id: String,
}

impl Principal {
    /// The tenant predicate for reads, given the optional `org` and `user` narrowing
    /// parameters. Asking for more than the token allows is a 403, not an empty answer.
    pub fn read_scope(&self, org: Option<&str>, user: Option<&str>) -> Result<Scope, ApiError> {
        match self.role {
            Role::Admin => match (org, user) {
                (None, None) => Ok(Scope::AllOrgs),
                (Some(o), None) => Ok(Scope::Org {
                    org_id: o.to_string(),
                }),
                (Some(o), Some(u)) => Ok(Scope::OrgUser {
                    org_id: o.to_string(),
                    user_id: u.to_string(),
                }),
                (None, Some(_)) => Err(ApiError::bad(
                    "user",
                    "`user` needs `org` (users belong to an org)",
                )),
            },
            Role::OrgAdmin | Role::Viewer => {
                if org.is_some_and(|o| o != self.org_id) {
                    return Err(ApiError::Forbidden(
                        "this token may not read another organisation".into(),
                    ));
                }
                let own = self.org_id.clone();
                if !self.user_id.is_empty() {
                    if user.is_some_and(|u| u != self.user_id) {
                        return Err(ApiError::Forbidden(
                            "this token may only read its own user's usage".into(),
                        ));
                    }
                    return Ok(Scope::OrgUser {
                        org_id: own,
                        user_id: self.user_id.clone(),
                    });
                }
                Ok(match user {
                    Some(u) => Scope::OrgUser {
                        org_id: own,
                        user_id: u.to_string(),
                    },
                    None => Scope::Org { org_id: own },
                })
            }
        }
    }

    /// The org a write applies to: admins name it, org admins write only their own, viewers
    /// never write.
    pub fn write_org(&self, org: Option<&str>) -> Result<String, ApiError> {
        match self.role {
            Role::Viewer => Err(ApiError::Forbidden("viewer tokens are read-only".into())),
            Role::Admin => match org {
                Some(o) if !o.is_empty() => Ok(o.to_string()),
                _ => Err(ApiError::bad(
                    "org_id",
                    "admins must say which org (`org_id`)",
                )),
            },
            Role::OrgAdmin => match org {
                Some(o) if o != self.org_id => Err(ApiError::Forbidden(
                    "this token may not change another organisation".into(),
                )),
                _ => Ok(self.org_id.clone()),
            },
        }
    }

    /// Whether this principal may see an object of `org_id`.
    pub fn can_see_org(&self, org_id: &str) -> bool {
        self.role == Role::Admin || self.org_id == org_id
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.role == Role::Admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden("only admin tokens may do this".into()))
        }
    }
}

#[derive(Row, Deserialize)]
struct TokenRow {
    token_id: String,
    name: String,
    role: String,
    org_id: String,
    user_id: String,
}

/// Cached token lookups.
#[derive(Debug, Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<String, (Principal, Instant)>>,
}

impl TokenCache {
    fn get(&self, hash: &str) -> Option<Principal> {
        let entries = self.entries.lock().ok()?;
        entries
            .get(hash)
            .filter(|(_, at)| at.elapsed() < TOKEN_CACHE_TTL)
            .map(|(p, _)| p.clone())
    }

    fn put(&self, hash: String, p: Principal) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() > 10_000 {
                entries.retain(|_, (_, at)| at.elapsed() < TOKEN_CACHE_TTL);
            }
            entries.insert(hash, (p, Instant::now()));
        }
    }

    /// Forgets every cached lookup (after a revocation on this instance).
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
    }
}

/// Looks a presented bearer token up.
pub async fn authenticate(
    client: &Client,
    cache: &TokenCache,
    header: Option<&str>,
) -> Result<Principal, ApiError> {
    let unauthorized = || {
        ApiError::Unauthorized("send `Authorization: Bearer tga_…` with a valid API token".into())
    };
    let token = header
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| t.starts_with(API_TOKEN_PREFIX) && t.len() <= 256)
        .ok_or_else(unauthorized)?;
    let hash = hash_secret(token);
    if let Some(p) = cache.get(&hash) {
        return Ok(p);
    }
    let row = read_query(client, &TOKEN_BY_HASH.body())
        .bind(&hash)
        .fetch_optional::<TokenRow>()
        .await?
        .ok_or_else(unauthorized)?;
    let role = Role::parse(&row.role).ok_or_else(|| {
        ApiError::Internal(format!(
            "token {} has unknown role {}",
            row.token_id, row.role
        ))
    })?;
    let p = Principal {
        token_id: row.token_id,
        name: row.name,
        role,
        org_id: row.org_id,
        user_id: row.user_id,
    };
    cache.put(hash, p.clone());
    Ok(p)
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        authenticate(state.keys_client(), state.token_cache(), header).await
    }
}

/// A row of `api_tokens` (migration 0003), for writes.
#[derive(Row, Serialize, Deserialize, Clone, Debug)]
pub struct TokenStoredRow {
    pub token_hash: String,
    pub token_id: String,
    pub name: String,
    pub role: String,
    pub org_id: String,
    pub user_id: String,
    pub created_by: String,
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "clickhouse::serde::chrono::datetime::option")]
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked: u8,
    #[serde(with = "clickhouse::serde::chrono::datetime::option")]
    pub revoked_at: Option<DateTime<Utc>>,
    pub version: u64,
}

/// A token as listed (no hash).
#[derive(Row, Deserialize, Serialize, Clone, Debug, ToSchema)]
pub struct TokenListRow {
    pub token_id: String,
    pub name: String,
    pub role: String,
    pub org_id: String,
    pub user_id: String,
    pub created_by: String,
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    #[schema(value_type = String)]
    pub created_at: DateTime<Utc>,
    pub revoked: u8,
}

/// A fresh random secret: `prefix` + 64 hex digits (244 random bits from two UUIDv4s).
pub fn new_secret(prefix: &str) -> String {
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    format!("{prefix}{}{}", a.simple(), b.simple())
}

/// A monotonic-enough version for ReplacingMergeTree rows: nanoseconds since the epoch.
/// Creates a token; returns its id and the secret (shown once, never stored).
pub async fn create_token(
    client: &Client,
    name: &str,
    role: Role,
    org_id: &str,
    user_id: &str,
    created_by: &str,
) -> Result<(String, String), ApiError> {
    if role != Role::Admin && org_id.is_empty() {
        return Err(ApiError::bad(
            "org_id",
            "org_admin and viewer tokens belong to an org",
        ));
    }
    if role == Role::Admin && (!org_id.is_empty() || !user_id.is_empty()) {
        return Err(ApiError::bad(
            "org_id",
            "admin tokens see every org; do not give an org or user",
        ));
    }
    if role == Role::OrgAdmin && !user_id.is_empty() {
        return Err(ApiError::bad(
            "user_id",
            "only viewer tokens can be bound to a user",
        ));
    }
    let secret = new_secret(API_TOKEN_PREFIX);
    let token_id = format!("tok_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let row = TokenStoredRow {
        token_hash: hash_secret(&secret),
        token_id: token_id.clone(),
        name: name.to_string(),
        role: role.as_str().to_string(),
        org_id: org_id.to_string(),
        user_id: user_id.to_string(),
        created_by: created_by.to_string(),
        created_at: now_second(),
        expires_at: None,
        revoked: 0,
        revoked_at: None,
        version: row_version(),
    };
    let mut insert = client.insert::<TokenStoredRow>("api_tokens").await?;
    insert.write(&row).await?;
    insert.end().await?;
    Ok((token_id, secret))
}

/// Revokes a token by id; `NotFound` if there is none.
pub async fn revoke_token(client: &Client, token_id: &str) -> Result<(), ApiError> {
    let mut row = read_query(client, &TOKEN_BY_ID.body())
        .bind(token_id)
        .fetch_optional::<TokenStoredRow>()
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no token {token_id}")))?;
    row.revoked = 1;
    row.revoked_at = Some(now_second());
    row.version = row_version();
    let mut insert = client.insert::<TokenStoredRow>("api_tokens").await?;
    insert.write(&row).await?;
    insert.end().await?;
    Ok(())
}

pub async fn list_tokens(client: &Client) -> Result<Vec<TokenListRow>, ApiError> {
    Ok(read_query(client, &TOKENS_LIST.body())
        .fetch_all::<TokenListRow>()
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(role: Role, org: &str, user: &str) -> Principal {
        Principal {
            token_id: "t".into(),
            name: "n".into(),
            role,
            org_id: org.into(),
            user_id: user.into(),
        }
    }

    #[test]
    fn admins_choose_their_scope() {
        let a = p(Role::Admin, "", "");
        assert_eq!(a.read_scope(None, None).unwrap(), Scope::AllOrgs);
        assert_eq!(
            a.read_scope(Some("x"), None).unwrap(),
            Scope::Org { org_id: "x".into() }
        );
        assert!(matches!(
            a.read_scope(None, Some("u")),
            Err(ApiError::BadRequest { .. })
        ));
    }

    #[test]
    fn org_tokens_never_leave_their_org() {
        let o = p(Role::OrgAdmin, "acme", "");
        assert_eq!(
            o.read_scope(None, None).unwrap(),
            Scope::Org {
                org_id: "acme".into()
            }
        );
        assert_eq!(
            o.read_scope(Some("acme"), Some("bob")).unwrap(),
            Scope::OrgUser {
                org_id: "acme".into(),
                user_id: "bob".into()
            }
        );
        assert!(matches!(
            o.read_scope(Some("globex"), None),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(
            o.write_org(Some("globex")),
            Err(ApiError::Forbidden(_))
        ));
        assert_eq!(o.write_org(None).unwrap(), "acme");
    }

    #[test]
    fn user_bound_viewers_see_only_themselves_and_never_write() {
        let v = p(Role::Viewer, "acme", "alice");
        assert_eq!(
            v.read_scope(None, None).unwrap(),
            Scope::OrgUser {
                org_id: "acme".into(),
                user_id: "alice".into()
            }
        );
        assert!(matches!(
            v.read_scope(None, Some("bob")),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(
            v.read_scope(Some("globex"), Some("alice")),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(v.write_org(None), Err(ApiError::Forbidden(_))));
    }

    #[test]
    fn secrets_look_right() {
        let s = new_secret(API_TOKEN_PREFIX);
        assert!(s.starts_with("tga_") && s.len() == 4 + 64);
        assert_ne!(s, new_secret(API_TOKEN_PREFIX));
        assert!(usage_core::keys::looks_like_app_key(&new_secret(
            usage_core::keys::APP_KEY_PREFIX
        )));
    }
}
