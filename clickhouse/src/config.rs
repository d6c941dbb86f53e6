//! Where ClickHouse is, and the client built from it.

use std::fmt;
use std::time::Duration;

use clickhouse::query::Query;
use clickhouse::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
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
/// analyst_roles = true               # a role per org, where the server has row policies
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
    /// Create a role per org that reads only that org's rows, where the server has roles and
    /// row policies ([`crate::analyst_roles`]; docs/ANALYSTS.md). On by default.
    #[serde(default = "default_true")]
    pub analyst_roles: bool,
}

fn default_true() -> bool {
    true
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
            analyst_roles: true,
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
            .field("analyst_roles", &self.analyst_roles)
            .finish()
    }
}

/// The database that holds the key and token tables (`api_tokens`, `app_keys`) of
/// `database`: `<database>_keys`. They live apart from the usage data so that a ClickHouse
/// user allowed only the main database — the analyst — cannot read them (18.16 grants access
/// per database, not per table; migration 0015 moved them; docs/ANALYSTS.md).
pub fn keys_database(database: &str) -> String {
    format!("{database}_keys")
}

/// TCP keepalive of the connections (as the crate sets it).
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// A client on the crate's HTTP client, but with **no idle connections kept**: every query
/// opens its own connection. Reusing idle ones raced the server closing them — ClickHouse
/// drops a keep-alive connection after `keep_alive_timeout` (3 s on 18.16) and after some
/// failed requests without saying so — and a query sent on such a connection failed with
/// `IncompleteMessage` (seen in tests, beside `stress-ng` and without it; the dashboard then
/// answered 503 and a hard budget refused calls). A connection costs well under a millisecond
/// next to the query; Tollgate's services run a few queries a second, not thousands.
/// (The crate's body type is private: the builder's is inferred from `with_http_client`.)
fn base_client() -> Client {
    let mut connector = HttpConnector::new();
    connector.set_keepalive(Some(TCP_KEEPALIVE));
    Client::with_http_client(
        HyperClient::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector),
    )
}

impl ClickHouseConfig {
    /// A config for `url` and `database`, default user.
    pub fn new(url: impl Into<String>, database: impl Into<String>) -> Self {
        ClickHouseConfig {
            url: url.into(),
            database: database.into(),
            user: None,
            password: None,
            analyst_roles: true,
        }
    }

    /// The client for Tollgate's database.
    ///
    /// Validation is off: 0.15's validation asks 18.16 for `describe_include_subcolumns` and
    /// `RowBinaryWithNamesAndTypes`, which it does not have. The price is that a `Row` struct
    /// that does not match its query decodes garbage silently — which is why every `Row` type
    /// sits next to its SQL and is tested against the real server.
    pub fn client(&self) -> Client {
        // A write through a `Distributed` table (on a cluster) is acknowledged only once every
        // shard has it: the collector's acknowledgement must mean stored. One server ignores it.
        self.server_client()
            .with_database(&self.database)
            .with_setting("insert_distributed_sync", "1")
    }

    /// The client for the key and token database ([`keys_database`]): `api_tokens` and
    /// `app_keys` are read and written through it, unqualified.
    pub fn keys_client(&self) -> Client {
        self.server_client()
            .with_database(keys_database(&self.database))
    }

    /// A client with no database selected (for `CREATE DATABASE` and `system.*`).
    pub fn server_client(&self) -> Client {
        let mut client = base_client().with_url(&self.url).with_validation(false);
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
