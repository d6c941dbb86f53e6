//! Per-organisation analyst roles: on a server with SQL access control, an analyst of one org
//! reads only that org's rows, and never the key and token tables.
//!
//! # What a role may read
//! The role of org `acme` is `tollgate_analyst_acme` ([`role_name`]; the org id as it is,
//! backquoted). It may `SELECT`:
//! - [`ORG_TABLES`], the tables whose rows belong to one org (raw usage, the rollups, budgets,
//!   alert rules, alerts, deliveries, balances, rejected records), and only the rows whose
//!   `org_id` is `acme`: a row policy on each;
//! - [`VIEWS`], the analyst views, which read the tables above with the reader's rights (a
//!   modern server's views are `SQL SECURITY INVOKER` by default), so the same row policies
//!   apply;
//! - [`SHARED_TABLES`], the price list and the operator's price overrides, the same for
//!   every org.
//!
//! Nothing else: not `<database>_keys` (admin tokens and app keys), not the operator's
//! bookkeeping ([`OPERATOR_TABLES`]: the provider-bill reconciliation, repricing runs, ingest
//! batches, leases, integrity repairs). A test keeps these four lists equal to what the
//! migrations create, so a new table must be placed in one of them.
//!
//! # How
//! On each table of [`ORG_TABLES`] (on a cluster, also on its `_local` table on each shard):
//! - a permissive row policy `tollgate_org_<org>` `USING org_id = '<org>'` `TO` the org's role;
//! - one permissive policy `tollgate_all_orgs` `USING 1 TO ALL EXCEPT` every org's role.
//!
//! The second keeps every other user reading every row: the services (`default`), the
//! all-orgs `analyst`, whatever else the operator runs. Without it, a server whose
//! `access_control_improvements.users_without_row_policies_can_read_rows` is false (the
//! default before 24.1) would show them nothing once a table has any policy. It is rewritten
//! (`CREATE ROW POLICY OR REPLACE`) with the full list of roles on every sync.
//!
//! A person gets an org's role, and only that: `GRANT tollgate_analyst_acme TO alice;
//! SET DEFAULT ROLE tollgate_analyst_acme TO alice` (docs/ANALYSTS.md). A user with no org role
//! matches `tollgate_all_orgs`, so never grant `SELECT` on Tollgate's tables to such a person
//! directly.
//!
//! # Where and when
//! - [`sync`] runs after the migrations (`tollgate-migrate`, and the collector and
//!   dashboard-api at start): every statement, each idempotent, so a table a later migration
//!   adds gets its grant and policies. [`sync_new_orgs`] runs on every evaluator tick (the
//!   jobs): the same, but only when an org has no role yet, so a new org's analysts wait at
//!   most one tick.
//! - A server without roles and row policies is left alone ([`Outcome::Unsupported`]): 18.16
//!   has neither (SQL access control came in 20.x) — there the docs state the limit, and the
//!   analyst user is kept off the key tables by migration 0015.
//! - A server where the connecting user may not manage access (`access_management`) or that
//!   has no writable user directory is left alone too, with the server's reason
//!   ([`Outcome::NotPermitted`]); the migrations and the services go on.
//! - `[clickhouse] analyst_roles = false` turns it off ([`Outcome::Off`]).
//! - An org whose keys and tokens are all revoked keeps its role; roles are never dropped, and
//!   every existing org role stays exempt from `tollgate_all_orgs`.
//!
//! # Two syncs at once
//! Two instances (the jobs of two dashboard-api replicas, or the jobs and a migration) may sync
//! together. Every statement but one is `IF NOT EXISTS`, so both succeed; the exception is the
//! rewrite of `tollgate_all_orgs`, where the later writer wins with the orgs it read — possibly
//! without a role the other just created, whose users would then match it and read every org.
//! [`sync_new_orgs`] therefore also runs when any table's `tollgate_all_orgs` is missing or
//! does not exempt every org role (`needs_sync`, unit-tested with such a race), so the next
//! tick repairs it — before an operator has had time to give the new role to anyone.
//!
//! # How far this is proven
//! The server Tollgate is tested on is 18.16, which has no roles; chdb (26.9, in process, the
//! compat check) has no writable user directory. So: the statements and the policy choice are
//! unit-tested here; `cargo xtask compat` parses every statement with 26.9's parser, runs the
//! sync's reads of `system.roles` and `system.row_policies`, checks that every granted object
//! exists and runs every policy's filter on its table; the 18.16 tests check that nothing is
//! attempted there and that every table the migrations create is placed in one of the lists.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use clickhouse::{Client, Row};
use serde::Deserialize;

use crate::config::read_query;
use crate::error::{Error, Result};
use crate::migrate::SHARDED_TABLES;
use crate::ClickHouseConfig;

/// Tables whose rows each belong to one org (`org_id`): readable through a row policy.
pub const ORG_TABLES: &[&str] = &[
    "usage_events",
    "usage_hourly",
    "usage_daily",
    "org_model_daily",
    "org_daily",
    "budgets",
    "alert_rules",
    "alerts",
    "notification_deliveries",
    "provider_credits",
    "usage_rejects",
];

/// The analyst views (migrations 0005 and 0012): read with the reader's rights.
pub const VIEWS: &[&str] = &["ai_daily_usage", "ai_usage_summary", "ai_model_performance"];

/// Reference data that is the same for every org.
pub const SHARED_TABLES: &[&str] = &["model_prices", "price_overrides"];

/// What an org's analyst may not read: the operator's bookkeeping, the materialized views'
/// plumbing and the integrity job's scratch tables.
pub const OPERATOR_TABLES: &[&str] = &[
    "schema_migrations",
    "ingest_batches",
    "job_leases",
    "cost_reconciliation",
    "reprice_runs",
    "integrity_repairs",
    "usage_hourly_repair",
    "usage_daily_repair",
    "org_model_daily_repair",
    "org_daily_repair",
    "usage_hourly_mv",
    "usage_daily_mv",
    "org_model_daily_mv",
    "org_daily_mv",
];

/// The policy that keeps every user without an org role reading every row.
pub const ALL_ORGS_POLICY: &str = "tollgate_all_orgs";

/// The prefix of every org role's name.
pub const ROLE_PREFIX: &str = "tollgate_analyst_";

/// The role of `org`'s analysts.
pub fn role_name(org: &str) -> String {
    format!("{ROLE_PREFIX}{org}")
}

/// The row policy that shows `org`'s rows to its role.
pub fn policy_name(org: &str) -> String {
    format!("tollgate_org_{org}")
}

/// `name` as a backquoted identifier (any text is safe inside).
fn ident(name: &str) -> String {
    format!("`{}`", name.replace('\\', "\\\\").replace('`', "\\`"))
}

/// `text` as a single-quoted string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// One org table's row filter for `org`: what a policy's `USING` holds.
pub fn org_filter(org: &str) -> String {
    format!("org_id = {}", literal(org))
}

/// The tables that carry the row policies: [`ORG_TABLES`], and on a cluster also each sharded
/// table's `_local` table (a query through the `Distributed` table runs there, as the initial
/// user when the cluster has a `<secret>`).
pub fn policy_tables(cluster: Option<&str>) -> Vec<String> {
    let mut tables = Vec::new();
    for table in ORG_TABLES {
        tables.push(table.to_string());
        if cluster.is_some() && SHARDED_TABLES.contains(table) {
            tables.push(format!("{table}_local"));
        }
    }
    tables
}

/// Every statement that gives each of `orgs` its role, grants and policies in `database`, in
/// order (roles first, then grants, then policies). Each is idempotent. `orgs` are taken as
/// given (any text: names and values are quoted); an empty list yields nothing.
pub fn statements(database: &str, orgs: &BTreeSet<String>, cluster: Option<&str>) -> Vec<String> {
    if orgs.is_empty() {
        return Vec::new();
    }
    let on_cluster = cluster
        .map(|c| format!(" ON CLUSTER {}", ident(c)))
        .unwrap_or_default();
    let db = ident(database);
    let tables = policy_tables(cluster);
    let readable: Vec<String> = tables
        .iter()
        .cloned()
        .chain(VIEWS.iter().chain(SHARED_TABLES).map(|t| t.to_string()))
        .collect();
    let mut out = Vec::new();
    for org in orgs {
        out.push(format!(
            "CREATE ROLE IF NOT EXISTS {}{on_cluster}",
            ident(&role_name(org))
        ));
    }
    for org in orgs {
        let role = ident(&role_name(org));
        for table in &readable {
            out.push(format!(
                "GRANT{on_cluster} SELECT ON {db}.{} TO {role}",
                ident(table)
            ));
        }
    }
    let all_roles: Vec<String> = orgs.iter().map(|o| ident(&role_name(o))).collect();
    for table in &tables {
        for org in orgs {
            out.push(format!(
                "CREATE ROW POLICY IF NOT EXISTS {}{on_cluster} ON {db}.{} \
                 AS PERMISSIVE FOR SELECT USING {} TO {}",
                ident(&policy_name(org)),
                ident(table),
                org_filter(org),
                ident(&role_name(org)),
            ));
        }
        out.push(format!(
            "CREATE ROW POLICY OR REPLACE {}{on_cluster} ON {db}.{} \
             AS PERMISSIVE FOR SELECT USING 1 TO ALL EXCEPT {}",
            ident(ALL_ORGS_POLICY),
            ident(table),
            all_roles.join(", "),
        ));
    }
    out
}

/// What a sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `[clickhouse] analyst_roles = false`.
    Off,
    /// The server has no roles or row policies (18.16).
    Unsupported { server_version: String },
    /// The server has them, but refused to create one: the connecting user may not manage
    /// access, or no user directory is writable. The server's words.
    NotPermitted { reason: String },
    /// Every org has its role (`created`: the orgs that had none before).
    Synced {
        orgs: usize,
        created: Vec<String>,
        statements: usize,
    },
    /// `sync_new_orgs`: every org already had its role; nothing was run.
    UpToDate { orgs: usize },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Off => write!(f, "analyst roles: off ([clickhouse] analyst_roles = false)"),
            Outcome::Unsupported { server_version } => write!(
                f,
                "analyst roles: not created: ClickHouse {server_version} has no roles or row \
                 policies; every analyst reads every org (docs/ANALYSTS.md)"
            ),
            Outcome::NotPermitted { reason } => write!(
                f,
                "analyst roles: not created: the server refused ({reason}); give the migrating \
                 user access_management and the server a writable user directory \
                 (docs/ANALYSTS.md)"
            ),
            Outcome::Synced {
                orgs,
                created,
                statements,
            } => write!(
                f,
                "analyst roles: {orgs} orgs, {} new ({}), {statements} statements",
                created.len(),
                created.join(", ")
            ),
            Outcome::UpToDate { orgs } => write!(f, "analyst roles: {orgs} orgs, none new"),
        }
    }
}

/// Whether the server has SQL access control: `system.roles` and `system.row_policies`.
pub const CAPABILITY_QUERY: &str = "SELECT count() FROM system.tables \
     WHERE database = 'system' AND name IN ('roles', 'row_policies')";

/// Whether the server has SQL access control ([`CAPABILITY_QUERY`] finds both tables).
pub async fn server_supports_roles(client: &Client) -> Result<bool> {
    let n: u64 = read_query(client, CAPABILITY_QUERY).fetch_one().await?;
    Ok(n == 2)
}

#[derive(Row, Deserialize)]
struct Name {
    name: String,
}

/// Every org: an org id with an admin token or an app key (as the default rules count them).
pub async fn orgs(config: &ClickHouseConfig) -> Result<BTreeSet<String>> {
    let keys = config.keys_client();
    let rows: Vec<Name> = read_query(
        &keys,
        "SELECT org_id AS name FROM api_tokens WHERE org_id != '' GROUP BY org_id \
         UNION ALL SELECT org_id AS name FROM app_keys WHERE org_id != '' GROUP BY org_id",
    )
    .fetch_all()
    .await?;
    Ok(rows.into_iter().map(|r| r.name).collect())
}

/// The server's org roles (needs `SHOW ROLES`, which a user that may manage access has).
pub fn roles_query() -> String {
    format!(
        "SELECT name FROM system.roles WHERE startsWith(name, {})",
        literal(ROLE_PREFIX)
    )
}

/// The `tollgate_all_orgs` policies of `database`, with the roles each exempts.
pub fn exemptions_query(database: &str) -> String {
    format!(
        "SELECT table, apply_to_except FROM system.row_policies \
         WHERE database = {} AND short_name = {}",
        literal(database),
        literal(ALL_ORGS_POLICY)
    )
}

/// The orgs that have a role on the server.
async fn orgs_with_roles(client: &Client) -> Result<BTreeSet<String>> {
    let rows: Vec<Name> = read_query(client, &roles_query()).fetch_all().await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| r.name.strip_prefix(ROLE_PREFIX).map(str::to_string))
        .collect())
}

#[derive(Row, Deserialize)]
struct Exemption {
    table: String,
    apply_to_except: Vec<String>,
}

/// Per table, the roles the `tollgate_all_orgs` policy exempts.
async fn all_orgs_exemptions(
    client: &Client,
    database: &str,
) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let rows: Vec<Exemption> = read_query(client, &exemptions_query(database))
        .fetch_all()
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.table, r.apply_to_except.into_iter().collect()))
        .collect())
}

/// Whether [`sync_new_orgs`] must run the statements: an org has no role, or some policy
/// table's `tollgate_all_orgs` is missing or does not exempt every role. The second catches two
/// syncs that raced (each rewrites `tollgate_all_orgs` from the orgs it read; the later one
/// may miss a role the other created — whose users would then read every org).
fn needs_sync(
    orgs: &BTreeSet<String>,
    had: &BTreeSet<String>,
    exempt: &BTreeMap<String, BTreeSet<String>>,
    tables: &[String],
) -> bool {
    if orgs.is_empty() {
        return false;
    }
    if orgs.iter().any(|o| !had.contains(o)) {
        return true;
    }
    tables.iter().any(|t| match exempt.get(t) {
        None => true,
        Some(roles) => orgs.iter().any(|o| !roles.contains(&role_name(o))),
    })
}

/// ClickHouse codes that mean "you may not" rather than "this failed": `ACCESS_STORAGE_READONLY`
/// (495), `ACCESS_DENIED` (497), `ACCESS_STORAGE_FOR_INSERTION_NOT_FOUND` (514).
const REFUSALS: &[u32] = &[495, 497, 514];

/// Whether `e` is the server refusing to manage access, as opposed to a failure.
fn is_refusal(e: &Error) -> bool {
    e.server_code().is_some_and(|code| REFUSALS.contains(&code))
}

/// Gives every org its role, grants and policies (see the module docs). `cluster`: render the
/// statements `ON CLUSTER` (what `tollgate-migrate --cluster` passes).
pub async fn sync(config: &ClickHouseConfig, cluster: Option<&str>) -> Result<Outcome> {
    run(config, cluster, false).await
}

/// [`sync`], but only when some org has no role yet (one cheap query otherwise).
pub async fn sync_new_orgs(config: &ClickHouseConfig, cluster: Option<&str>) -> Result<Outcome> {
    run(config, cluster, true).await
}

async fn run(config: &ClickHouseConfig, cluster: Option<&str>, only_new: bool) -> Result<Outcome> {
    if !config.analyst_roles {
        return Ok(Outcome::Off);
    }
    match apply(config, cluster, only_new).await {
        // Reading `system.roles` needs `SHOW ROLES`; creating one, `access_management` and a
        // writable user directory: a server that says no to either is told, not failed.
        Err(e) if is_refusal(&e) => Ok(Outcome::NotPermitted {
            reason: e.to_string(),
        }),
        other => other,
    }
}

async fn apply(
    config: &ClickHouseConfig,
    cluster: Option<&str>,
    only_new: bool,
) -> Result<Outcome> {
    let server = config.server_client();
    if !server_supports_roles(&server).await? {
        let server_version: String = read_query(&server, "SELECT version()").fetch_one().await?;
        return Ok(Outcome::Unsupported { server_version });
    }
    let had = orgs_with_roles(&server).await?;
    // A role that exists stays in every `ALL EXCEPT`, even if its org has no key any more.
    let orgs: BTreeSet<String> = orgs(config).await?.union(&had).cloned().collect();
    let created: Vec<String> = orgs.difference(&had).cloned().collect();
    if only_new {
        let exempt = all_orgs_exemptions(&server, &config.database).await?;
        if !needs_sync(&orgs, &had, &exempt, &policy_tables(cluster)) {
            return Ok(Outcome::UpToDate { orgs: orgs.len() });
        }
    }
    let statements = statements(&config.database, &orgs, cluster);
    for sql in &statements {
        server.query(sql).execute().await?;
    }
    Ok(Outcome::Synced {
        orgs: orgs.len(),
        created,
        statements: statements.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orgs(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn each_org_gets_a_role_grants_on_its_tables_and_a_policy_on_each_org_table() {
        let s = statements("tollgate", &orgs(&["acme", "globex"]), None);
        assert_eq!(s[0], "CREATE ROLE IF NOT EXISTS `tollgate_analyst_acme`");
        assert_eq!(s[1], "CREATE ROLE IF NOT EXISTS `tollgate_analyst_globex`");
        let readable = ORG_TABLES.len() + VIEWS.len() + SHARED_TABLES.len();
        let grants: Vec<&String> = s.iter().filter(|q| q.starts_with("GRANT")).collect();
        assert_eq!(grants.len(), 2 * readable);
        assert!(grants.contains(
            &&"GRANT SELECT ON `tollgate`.`usage_events` TO `tollgate_analyst_acme`".to_string()
        ));
        assert!(grants.contains(
            &&"GRANT SELECT ON `tollgate`.`ai_daily_usage` TO `tollgate_analyst_globex`"
                .to_string()
        ));
        for table in OPERATOR_TABLES {
            assert!(
                !s.iter().any(|q| q.contains(&format!("`{table}`"))),
                "{table} is granted or filtered"
            );
        }
        let keys = crate::keys_database("tollgate");
        assert!(!s.iter().any(|q| q.contains(&keys)));
        assert!(!s
            .iter()
            .any(|q| q.contains("api_tokens") || q.contains("app_keys")));
        assert!(s.contains(
            &"CREATE ROW POLICY IF NOT EXISTS `tollgate_org_acme` ON `tollgate`.`alerts` AS \
              PERMISSIVE FOR SELECT USING org_id = 'acme' TO `tollgate_analyst_acme`"
                .to_string()
        ));
        assert!(s.contains(
            &"CREATE ROW POLICY OR REPLACE `tollgate_all_orgs` ON `tollgate`.`alerts` AS \
              PERMISSIVE FOR SELECT USING 1 TO ALL EXCEPT `tollgate_analyst_acme`, \
              `tollgate_analyst_globex`"
                .to_string()
        ));
        let policies = s
            .iter()
            .filter(|q| q.starts_with("CREATE ROW POLICY"))
            .count();
        assert_eq!(policies, ORG_TABLES.len() * 3);
        assert_eq!(s.len(), 2 + 2 * readable + ORG_TABLES.len() * 3);
    }

    #[test]
    fn no_orgs_no_statements() {
        assert!(statements("tollgate", &BTreeSet::new(), None).is_empty());
    }

    #[test]
    fn an_org_id_cannot_break_out_of_its_quotes() {
        let s = statements("tollgate", &orgs(&["a'b`c\\"]), None);
        assert_eq!(
            s[0],
            "CREATE ROLE IF NOT EXISTS `tollgate_analyst_a'b\\`c\\\\`"
        );
        assert!(s
            .iter()
            .any(|q| q.contains("USING org_id = 'a\\'b`c\\\\' TO `tollgate_analyst_a'b\\`c\\\\`")));
    }

    #[test]
    fn on_a_cluster_every_statement_is_on_cluster_and_shards_get_policies_too() {
        let s = statements("tollgate", &orgs(&["acme"]), Some("tollgate_cluster"));
        assert!(s
            .iter()
            .all(|q| q.contains(" ON CLUSTER `tollgate_cluster`")));
        assert_eq!(
            s[0],
            "CREATE ROLE IF NOT EXISTS `tollgate_analyst_acme` ON CLUSTER `tollgate_cluster`"
        );
        assert!(s.contains(
            &"CREATE ROW POLICY IF NOT EXISTS `tollgate_org_acme` ON CLUSTER `tollgate_cluster` \
              ON `tollgate`.`usage_events_local` AS PERMISSIVE FOR SELECT USING org_id = 'acme' \
              TO `tollgate_analyst_acme`"
                .to_string()
        ));
        assert!(s.contains(
            &"GRANT ON CLUSTER `tollgate_cluster` SELECT ON `tollgate`.`org_daily_local` TO \
              `tollgate_analyst_acme`"
                .to_string()
        ));
        assert_eq!(
            policy_tables(Some("c")).len(),
            ORG_TABLES.len() + SHARDED_TABLES.len()
        );
    }

    #[test]
    fn a_new_org_or_a_policy_that_does_not_exempt_every_role_calls_for_a_sync() {
        let tables = policy_tables(None);
        let both = orgs(&["acme", "globex"]);
        let exempt_all = |roles: &[&str]| -> BTreeMap<String, BTreeSet<String>> {
            tables
                .iter()
                .map(|t| (t.clone(), roles.iter().map(|o| role_name(o)).collect()))
                .collect()
        };
        let full = exempt_all(&["acme", "globex"]);
        assert!(!needs_sync(&both, &both, &full, &tables), "all in place");
        assert!(!needs_sync(
            &BTreeSet::new(),
            &BTreeSet::new(),
            &BTreeMap::new(),
            &tables
        ));
        assert!(
            needs_sync(&both, &orgs(&["acme"]), &full, &tables),
            "globex has no role"
        );
        // Two syncs raced: globex's role exists, but the last rewrite of one table's
        // tollgate_all_orgs did not exempt it.
        let mut raced = full.clone();
        raced.insert("alerts".into(), orgs(&["tollgate_analyst_acme"]));
        assert!(needs_sync(&both, &both, &raced, &tables));
        let mut missing = full;
        missing.remove("usage_daily");
        assert!(
            needs_sync(&both, &both, &missing, &tables),
            "a table has no all-orgs policy"
        );
    }

    #[test]
    fn a_refusal_to_manage_access_is_told_apart_from_a_failure() {
        let server = |m: &str| Error::ClickHouse(clickhouse::error::Error::BadResponse(m.into()));
        for refusal in [
            "Code: 514. DB::Exception: Could not insert role `r1` because there is no writeable \
             access storage in user directories. (ACCESS_STORAGE_FOR_INSERTION_NOT_FOUND)",
            "Code: 497. DB::Exception: default: Not enough privileges. To execute this query, \
             it's necessary to have the grant CREATE ROLE ON r1. (ACCESS_DENIED)",
        ] {
            assert!(is_refusal(&server(refusal)), "{refusal}");
        }
        assert!(!is_refusal(&server(
            "Code: 62. DB::Exception: Syntax error: failed at position 1"
        )));
        assert!(!is_refusal(&Error::ClickHouse(
            clickhouse::error::Error::TimedOut
        )));
    }

    #[test]
    fn outcomes_read_as_sentences() {
        let o = Outcome::Unsupported {
            server_version: "18.16.1".into(),
        };
        assert!(o.to_string().contains("ClickHouse 18.16.1 has no roles"));
        let o = Outcome::Synced {
            orgs: 2,
            created: vec!["acme".into()],
            statements: 60,
        };
        assert_eq!(
            o.to_string(),
            "analyst roles: 2 orgs, 1 new (acme), 60 statements"
        );
    }
}
