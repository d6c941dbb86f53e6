//! Where ClickHouse is, and the client built from it.

use std::fmt;

use clickhouse::query::Query;
use clickhouse::Client;
use serde::Deserialize;

/// The dev server's HTTP address (docs/ARCHITECTURE.md, "Local ports").
pub const DEFAULT_URL: &str = "http://127.0.0.1:18123";

/// How to reach the Tollgate database.
///
/// ```toml
/// [clickhouse]
/// url = "http://127.0.0.1:18123"   # HTTP interface
/// database = "tollgate"
/// user = "default"                   # optional
/// password = "…"                     # optional; never printed
/// ```
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// HTTP(S) URL of the server, without a path.
    #[serde(default = "default_url")]
    pub url: String,
    /// The database holding Tollgate's tables.
    #[serde(default = "default_database")]
    pub database: String,
    /// User name; the server's `default` user when absent.
    #[serde(default)]
    pub user: Option<String>,
    /// Password of `user`.
    #[serde(default)]
    pub password: Option<String>,
}

fn default_url() -> String {
    DEFAULT_URL.to_string()
}

fn default_database() -> String {
    "tollgate".to_string()
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            url: default_url(),
            database: default_database(),
            user: None,
            password: None,
        }
    }
}

impl fmt::Debug for ClickHouseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClickHouseConfig")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl ClickHouseConfig {
    /// A config for `url` and `database`, default user.
    pub fn new(url: impl Into<String>, database: impl Into<String>) -> Self {
        ClickHouseConfig {
            url: url.into(),
            database: database.into(),
            user: None,
            password: None,
        }
    }

    /// The client for Tollgate's database.
    ///
    /// Validation is off: 0.15's validation asks 18.16 for `describe_include_subcolumns` and
    /// `RowBinaryWithNamesAndTypes`, which it does not have. The price is that a `Row` struct
    /// that does not match its query decodes garbage silently — which is why every `Row` type
    /// sits next to its SQL and is tested against the real server.
    pub fn client(&self) -> Client {
        self.server_client().with_database(&self.database)
    }

    /// A client with no database selected (for `CREATE DATABASE` and `system.*`).
    pub fn server_client(&self) -> Client {
        let mut client = Client::default().with_url(&self.url).with_validation(false);
        if let Some(user) = &self.user {
            client = client.with_user(user);
        }
        if let Some(password) = &self.password {
            client = client.with_password(password);
        }
        client
    }
}

/// A read query with `wait_end_of_query=1`: without it, an error that 18.16 raises after it
/// started streaming arrives as HTTP 200 and would be decoded as rows.
pub fn read_query(client: &Client, sql: &str) -> Query {
    client.query(sql).with_setting("wait_end_of_query", "1")
}
