//! Per-organisation analyst roles: on a server with SQL access control, an analyst of one org
//! reads only that org's rows, and never the key and token tables.
//!
//! # What a role may read
//! The role of org `acme` is `tollgate_analyst_acme` ([`role_name`]; the org id as it is,
//! backquoted). It may `SELECT`:
//! - [`ORG_TABLES`], the tables whose rows belong to one org (raw usage, the rollups, budgets,
//!   alert rules, alerts, deliveries, balances, rejected records), and only the rows whose
//!   `org_id` is `acme`: a row policy on each (on a cluster, on each shard's `_local` table too);
//! - [`VIEWS`], the analyst views, which read the tables above with the reader's rights
//!   (`SQL SECURITY INVOKER`, a modern server's default), so the same row policies apply — a
//!   view that runs as its definer (or as nobody) would read every org's rows, so it is not
//!   granted and the sync says so;
//! - [`SHARED_TABLES`], the public price list, the same for every org.
//!
//! Nothing else: not `<database>_keys` (admin tokens and app keys), not the operator's
//! bookkeeping and negotiated prices ([`OPERATOR_TABLES`]). A test keeps these four lists equal
//! to what the migrations create, so a new table must be placed in one of them.
//!
//! # How
//! On each policy table:
//! - a permissive row policy `tollgate_org_<org>` `USING org_id = '<org>'` `TO` the org's role;
//! - one permissive policy `tollgate_all_orgs` `USING 1 TO ALL EXCEPT` every org's role.
//!
//! The second keeps every other user reading every row: the services (`default`), the
//! all-orgs `analyst`, whatever else the operator runs — whatever the server's
//! `users_without_row_policies_can_read_rows` says. A user with an org role *enabled* is
//! exempt from it (ClickHouse matches `ALL EXCEPT` against the user's enabled roles).
//!
//! # When, and in what order
//! [`sync`] reads what the server has (roles, `tollgate_*` policies, grants, tables) and runs
//! only what is missing ([`plan`]): roles, then `tollgate_all_orgs` exempting every role, then
//! the per-org policies, then the grants. Grants last: a role reads a table only once the table
//! has its policy, so a run stopped anywhere (a refusal, a timeout) never shows a role another
//! org's rows; the next sync finishes it. It runs after the migrations (`tollgate-migrate`,
//! `collector migrate`, `dashboard-api migrate`) and on every evaluator tick of the jobs, where
//! it costs five reads when nothing is missing. So a new org's role, a table a later migration
//! adds, and a `tollgate_all_orgs` that two racing syncs left without a role (each writes the
//! roles it read) are all put right within a tick.
//!
//! # Where
//! - Servers from [`MIN_SERVER_VERSION`] with roles and row policies. Older ones, 18.16 among
//!   them (no SQL access control at all), are left alone ([`Outcome::Unsupported`]): there
//!   the docs state the limit, and the analyst user is kept off the key tables by migration
//!   0015.
//! - A server that refuses (the connecting user may not manage access, or no user directory is
//!   writable) is left as it is, with the server's words ([`Outcome::NotPermitted`]); the
//!   migrations and the services go on.
//! - On a cluster, `tollgate-migrate --cluster` runs the statements `ON CLUSTER`; the jobs do
//!   not know the cluster's name and run them on the host they talk to, which reaches every
//!   host only with a `replicated` user directory (docs/ANALYSTS.md).
//! - `[clickhouse] analyst_roles = false` turns it off ([`Outcome::Off`]).
//! - Roles are never dropped: an org whose keys are all revoked keeps its role, which stays
//!   exempt from `tollgate_all_orgs`.
//!
//! # How far this is proven
//! The server Tollgate is tested on is 18.16, which has no roles; chdb (26.9, in process, the
//! compat check) has no writable user directory. So: [`plan`] is unit-tested (order, what is
//! missing, a race, quoting); `cargo xtask compat` parses every statement with 26.9's parser,
//! runs the sync's reads of `system.roles`, `system.row_policies`, `system.grants` and
//! `system.tables`, checks that every granted object exists and runs every policy's filter on
//! its table; the 18.16 tests check that nothing is attempted there, that a statement with a
//! `?` in it runs as written, and that every table the migrations create is placed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use clickhouse::{Client, Row};
use serde::Deserialize;

use crate::config::read_query;
use crate::error::{Error, Result};
use crate::migrate::{ServerVersion, SHARDED_TABLES};
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

/// Reference data that is the same for every org: the public price list.
pub const SHARED_TABLES: &[&str] = &["model_prices"];

/// What an org's analyst may not read: the operator's bookkeeping, the materialized views'
/// plumbing and the integrity job's scratch tables.
pub const OPERATOR_TABLES: &[&str] = &[
    "schema_migrations",
    "price_overrides",
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

/// The prefix of every org's row policy.
const ORG_POLICY_PREFIX: &str = "tollgate_org_";

/// The oldest server Tollgate creates roles on: from 24.1 `system.*` tables need a grant
/// (`select_from_system_db_requires_grant`; before, any user reads `system.query_log`, which
/// holds the services' queries with other orgs' values), `users_without_row_policies_can_read_rows`
/// is settled, and older releases have known gaps in row policies (shards ignoring roles'
/// policies before 21.12; the implicit `count()` projection ignoring them in early 22.x).
pub const MIN_SERVER_VERSION: &str = "24.1";

/// The role of `org`'s analysts.
pub fn role_name(org: &str) -> String {
    format!("{ROLE_PREFIX}{org}")
}

/// The row policy that shows `org`'s rows to its role.
pub fn policy_name(org: &str) -> String {
    format!("{ORG_POLICY_PREFIX}{org}")
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

/// What every org's analysts should have in one database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub database: String,
    /// `ON CLUSTER` for every statement (what `tollgate-migrate --cluster` passes).
    pub cluster: Option<String>,
    /// Every org with a role (those with keys or tokens, and every role that exists).
    pub orgs: BTreeSet<String>,
    /// The tables that carry the row policies: [`ORG_TABLES`], and on a cluster each sharded
    /// table's `_local` table too (a query through the `Distributed` table reads there).
    pub policy_tables: Vec<String>,
    /// Everything else a role may read: the views and [`SHARED_TABLES`].
    pub also_readable: Vec<String>,
}

impl Desired {
    /// The full set for `orgs`, as the migrations lay out the database (one server, or a
    /// cluster when `cluster` is set): what `tollgate-migrate --print-analyst-roles` shows.
    pub fn as_migrated(database: &str, orgs: BTreeSet<String>, cluster: Option<&str>) -> Desired {
        let mut policy_tables = Vec::new();
        for table in ORG_TABLES {
            policy_tables.push(table.to_string());
            if cluster.is_some() && SHARDED_TABLES.contains(table) {
                policy_tables.push(format!("{table}_local"));
            }
        }
        Desired {
            database: database.to_string(),
            cluster: cluster.map(str::to_string),
            orgs,
            policy_tables,
            also_readable: VIEWS
                .iter()
                .chain(SHARED_TABLES)
                .map(|t| t.to_string())
                .collect(),
        }
    }
}

/// What the server has now, as far as Tollgate's roles go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Current {
    /// Orgs whose role exists.
    pub roles: BTreeSet<String>,
    /// Per table of the database: its `tollgate_*` policies, each with the roles it exempts.
    pub policies: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    /// `(role, table)` pairs with `SELECT` granted.
    pub grants: BTreeSet<(String, String)>,
}

/// The statements that take the server from `current` to `desired`, in an order that never
/// shows a role's user another org's rows, even if the run stops between two of them:
///
/// 1. the missing roles;
/// 2. per policy table, `tollgate_all_orgs` created or changed to exempt every org role — so
///    the services keep reading every row, and no org role reads through it;
/// 3. the missing per-org policies;
/// 4. the missing grants — last, so a role reads a table only once the table has its
///    policy (a table a new migration adds, say: on a server where a user that no permissive
///    policy matches reads every row, a grant first would show every org's rows).
///
/// Nothing missing, nothing to run. An empty `desired.orgs` yields nothing.
pub fn plan(desired: &Desired, current: &Current) -> Vec<String> {
    let Desired {
        database,
        cluster,
        orgs,
        policy_tables,
        also_readable,
    } = desired;
    if orgs.is_empty() {
        return Vec::new();
    }
    let on_cluster = cluster
        .as_deref()
        .map(|c| format!(" ON CLUSTER {}", ident(c)))
        .unwrap_or_default();
    let db = ident(database);
    let mut out = Vec::new();
    for org in orgs.iter().filter(|o| !current.roles.contains(*o)) {
        out.push(format!(
            "CREATE ROLE IF NOT EXISTS {}{on_cluster}",
            ident(&role_name(org))
        ));
    }
    let every_role: BTreeSet<String> = orgs.iter().map(|o| role_name(o)).collect();
    let exempt = every_role
        .iter()
        .map(|r| ident(r))
        .collect::<Vec<_>>()
        .join(", ");
    let no_policies = BTreeMap::new();
    let policies_of = |t: &str| current.policies.get(t).unwrap_or(&no_policies);
    for table in policy_tables {
        match policies_of(table).get(ALL_ORGS_POLICY) {
            None => out.push(format!(
                "CREATE ROW POLICY IF NOT EXISTS {}{on_cluster} ON {db}.{} \
                 AS PERMISSIVE FOR SELECT USING 1 TO ALL EXCEPT {exempt}",
                ident(ALL_ORGS_POLICY),
                ident(table),
            )),
            // Changed in place: a replaced policy would be missing for a moment.
            Some(now) if !every_role.is_subset(now) => out.push(format!(
                "ALTER ROW POLICY {}{on_cluster} ON {db}.{} TO ALL EXCEPT {exempt}",
                ident(ALL_ORGS_POLICY),
                ident(table),
            )),
            Some(_) => {}
        }
    }
    for table in policy_tables {
        for org in orgs {
            if !policies_of(table).contains_key(&policy_name(org)) {
                out.push(format!(
                    "CREATE ROW POLICY IF NOT EXISTS {}{on_cluster} ON {db}.{} \
                     AS PERMISSIVE FOR SELECT USING {} TO {}",
                    ident(&policy_name(org)),
                    ident(table),
                    org_filter(org),
                    ident(&role_name(org)),
                ));
            }
        }
    }
    for org in orgs {
        let role = role_name(org);
        for table in policy_tables.iter().chain(also_readable) {
            if !current.grants.contains(&(role.clone(), table.clone())) {
                out.push(format!(
                    "GRANT{on_cluster} SELECT ON {db}.{} TO {}",
                    ident(table),
                    ident(&role)
                ));
            }
        }
    }
    out
}

/// What a sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `[clickhouse] analyst_roles = false`.
    Off,
    /// The server has no roles or row policies, or is older than [`MIN_SERVER_VERSION`].
    Unsupported { server_version: String },
    /// The server refused: the connecting user may not read or manage access, or no user
    /// directory is writable. The server's words; what went through before stays.
    NotPermitted { reason: String },
    /// Every org has its role, policies and grants.
    Synced {
        orgs: usize,
        /// The orgs whose role was created by this sync.
        created: Vec<String>,
        /// Statements run (0: everything was in place).
        statements: usize,
        /// Analyst views not granted because they run with their definer's rights (which
        /// would read every org's rows).
        withheld_views: Vec<String>,
    },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Off => write!(f, "analyst roles: off ([clickhouse] analyst_roles = false)"),
            Outcome::Unsupported { server_version } => write!(
                f,
                "analyst roles: not created: ClickHouse {server_version} (roles and row \
                 policies are used from {MIN_SERVER_VERSION}); every analyst reads every org \
                 (docs/ANALYSTS.md)"
            ),
            Outcome::NotPermitted { reason } => write!(
                f,
                "analyst roles: stopped: the server refused ({reason}); the user Tollgate \
                 connects as needs access management (and the server a writable user \
                 directory) — docs/ANALYSTS.md"
            ),
            Outcome::Synced {
                orgs,
                created,
                statements,
                withheld_views,
            } => {
                write!(f, "analyst roles: {orgs} orgs")?;
                if !created.is_empty() {
                    write!(f, ", new: {}", created.join(", "))?;
                }
                write!(f, ", {statements} statements")?;
                if !withheld_views.is_empty() {
                    write!(
                        f,
                        "; views not granted (SQL SECURITY DEFINER or NONE): {}",
                        withheld_views.join(", ")
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// Whether the server has SQL access control: `system.roles` and `system.row_policies`.
pub const CAPABILITY_QUERY: &str = "SELECT count() FROM system.tables \
     WHERE database = 'system' AND name IN ('roles', 'row_policies')";

/// Whether the server has roles and row policies and is at least [`MIN_SERVER_VERSION`];
/// `Err(version)` when not.
pub async fn server_supports_roles(client: &Client) -> Result<Result<(), String>> {
    let version: String = read_query(client, "SELECT version()").fetch_one().await?;
    let new_enough = ServerVersion::parse(&version)
        .zip(ServerVersion::parse(MIN_SERVER_VERSION))
        .is_some_and(|(v, min)| v >= min);
    if !new_enough {
        return Ok(Err(version));
    }
    let n: u64 = read_query(client, CAPABILITY_QUERY).fetch_one().await?;
    Ok(if n == 2 { Ok(()) } else { Err(version) })
}

#[derive(Row, Deserialize)]
struct Name {
    name: String,
}

/// Every org: an org id with an admin token or an app key, as the default rules count them
/// ([`crate::queries::ORGS_WITH_KEYS`]).
pub async fn orgs(config: &ClickHouseConfig) -> Result<BTreeSet<String>> {
    let sql = format!(
        "SELECT org_id AS name FROM ({}) GROUP BY org_id",
        crate::queries::ORGS_WITH_KEYS.body()
    );
    let rows: Vec<Name> = read_query(&config.keys_client(), &sql).fetch_all().await?;
    Ok(rows.into_iter().map(|r| r.name).collect())
}

/// The queries a sync reads the server's state with (each needs a `SHOW …` right, which a
/// user allowed to manage access has): roles, then `tollgate_*` policies, then grants, then
/// the database's tables. `cargo xtask compat` runs them on 26.9.
pub fn state_queries(database: &str) -> [String; 4] {
    let db = literal(database);
    [
        format!(
            "SELECT name FROM system.roles WHERE startsWith(name, {})",
            literal(ROLE_PREFIX)
        ),
        format!(
            "SELECT table, short_name, apply_to_except FROM system.row_policies \
             WHERE database = {db} AND startsWith(short_name, 'tollgate_')"
        ),
        format!(
            "SELECT assumeNotNull(role_name) AS role, assumeNotNull(table) AS object \
             FROM system.grants WHERE database = {db} AND access_type = 'SELECT' \
             AND table IS NOT NULL AND startsWith(assumeNotNull(role_name), {})",
            literal(ROLE_PREFIX)
        ),
        format!("SELECT name, engine, create_table_query FROM system.tables WHERE database = {db}"),
    ]
}

#[derive(Row, Deserialize)]
struct PolicyRow {
    table: String,
    short_name: String,
    apply_to_except: Vec<String>,
}

#[derive(Row, Deserialize)]
struct GrantRow {
    role: String,
    object: String,
}

#[derive(Row, Deserialize)]
struct TableRow {
    name: String,
    engine: String,
    create_table_query: String,
}

/// Whether a view's definition makes it run with its definer's rights (or none): then the
/// reader's row policies would not apply to what it reads.
fn runs_as_definer(create_query: &str) -> bool {
    let q = create_query.to_ascii_uppercase();
    q.contains("SQL SECURITY DEFINER") || q.contains("SQL SECURITY NONE")
}

/// Runs `statements` in order, each as written (no `?` placeholders: an org id may hold one).
pub async fn execute_all(client: &Client, statements: &[String]) -> Result<()> {
    for sql in statements {
        client.query_raw(sql).execute().await?;
    }
    Ok(())
}

/// ClickHouse codes that mean "you may not" rather than "this failed": `READONLY` (164),
/// `ACCESS_STORAGE_READONLY` (495), `ACCESS_DENIED` (497, also "not enough privileges"),
/// `ACCESS_STORAGE_FOR_INSERTION_NOT_FOUND` (514).
const REFUSALS: &[u32] = &[164, 495, 497, 514];

/// Whether `e` is the server refusing to manage access, as opposed to a failure.
fn is_refusal(e: &Error) -> bool {
    e.server_code().is_some_and(|code| REFUSALS.contains(&code))
}

/// Brings every org's role, policies and grants in line with the module docs: reads what the
/// server has, runs only what is missing ([`plan`]), in the order that never over-shows.
/// Cheap when everything is in place (five reads); run at migration and on every evaluator
/// tick. `cluster`: render the statements `ON CLUSTER` (what `tollgate-migrate --cluster`
/// passes; the jobs do not know the cluster's name).
pub async fn sync(config: &ClickHouseConfig, cluster: Option<&str>) -> Result<Outcome> {
    if !config.analyst_roles {
        return Ok(Outcome::Off);
    }
    match apply(config, cluster).await {
        // Reading `system.roles` needs `SHOW ROLES`; creating one, access management and a
        // writable user directory: a server that says no is told, not failed.
        Err(e) if is_refusal(&e) => Ok(Outcome::NotPermitted {
            reason: e.to_string(),
        }),
        other => other,
    }
}

async fn apply(config: &ClickHouseConfig, cluster: Option<&str>) -> Result<Outcome> {
    let server = config.server_client();
    if let Err(server_version) = server_supports_roles(&server).await? {
        return Ok(Outcome::Unsupported { server_version });
    }
    let [roles_sql, policies_sql, grants_sql, tables_sql] = state_queries(&config.database);
    let roles: BTreeSet<String> = read_query(&server, &roles_sql)
        .fetch_all::<Name>()
        .await?
        .into_iter()
        .filter_map(|r| r.name.strip_prefix(ROLE_PREFIX).map(str::to_string))
        .collect();
    let mut policies: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for p in read_query(&server, &policies_sql)
        .fetch_all::<PolicyRow>()
        .await?
    {
        policies
            .entry(p.table)
            .or_default()
            .insert(p.short_name, p.apply_to_except.into_iter().collect());
    }
    let grants = read_query(&server, &grants_sql)
        .fetch_all::<GrantRow>()
        .await?
        .into_iter()
        .map(|g| (g.role, g.object))
        .collect();
    let tables = read_query(&server, &tables_sql)
        .fetch_all::<TableRow>()
        .await?;

    // A role that exists stays in every `ALL EXCEPT`, even if its org has no key any more.
    let orgs: BTreeSet<String> = orgs(config).await?.union(&roles).cloned().collect();
    let created: Vec<String> = orgs.difference(&roles).cloned().collect();
    let has = |name: &str| tables.iter().any(|t| t.name == name);
    let mut policy_tables = Vec::new();
    for table in ORG_TABLES.iter().filter(|t| has(t)) {
        policy_tables.push(table.to_string());
        let local = format!("{table}_local");
        if SHARDED_TABLES.contains(table) && has(&local) {
            policy_tables.push(local);
        }
    }
    let mut also_readable = Vec::new();
    let mut withheld_views = Vec::new();
    for t in &tables {
        if VIEWS.contains(&t.name.as_str()) && t.engine == "View" {
            if runs_as_definer(&t.create_table_query) {
                withheld_views.push(t.name.clone());
            } else {
                also_readable.push(t.name.clone());
            }
        } else if SHARED_TABLES.contains(&t.name.as_str()) {
            also_readable.push(t.name.clone());
        }
    }
    let desired = Desired {
        database: config.database.clone(),
        cluster: cluster.map(str::to_string),
        orgs,
        policy_tables,
        also_readable,
    };
    let current = Current {
        roles,
        policies,
        grants,
    };
    let statements = plan(&desired, &current);
    execute_all(&server, &statements).await?;
    Ok(Outcome::Synced {
        orgs: desired.orgs.len(),
        created,
        statements: statements.len(),
        withheld_views,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orgs(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn full(list: &[&str]) -> Vec<String> {
        plan(
            &Desired::as_migrated("tollgate", orgs(list), None),
            &Current::default(),
        )
    }

    /// The state a full plan leaves behind (what the server would then report).
    fn after(desired: &Desired) -> Current {
        let mut current = Current::default();
        for org in &desired.orgs {
            current.roles.insert(org.clone());
            for t in &desired.policy_tables {
                let p = current.policies.entry(t.clone()).or_default();
                p.insert(policy_name(org), BTreeSet::new());
                p.insert(
                    ALL_ORGS_POLICY.into(),
                    desired.orgs.iter().map(|o| role_name(o)).collect(),
                );
            }
            for t in desired.policy_tables.iter().chain(&desired.also_readable) {
                current.grants.insert((role_name(org), t.clone()));
            }
        }
        current
    }

    #[test]
    fn each_org_gets_a_role_its_policies_and_grants_and_nothing_else() {
        let s = full(&["acme", "globex"]);
        assert_eq!(s[0], "CREATE ROLE IF NOT EXISTS `tollgate_analyst_acme`");
        assert_eq!(s[1], "CREATE ROLE IF NOT EXISTS `tollgate_analyst_globex`");
        let readable = ORG_TABLES.len() + VIEWS.len() + SHARED_TABLES.len();
        let grants: Vec<&String> = s.iter().filter(|q| q.starts_with("GRANT")).collect();
        assert_eq!(grants.len(), 2 * readable);
        for q in [
            "GRANT SELECT ON `tollgate`.`usage_events` TO `tollgate_analyst_acme`",
            "GRANT SELECT ON `tollgate`.`ai_daily_usage` TO `tollgate_analyst_globex`",
            "GRANT SELECT ON `tollgate`.`model_prices` TO `tollgate_analyst_acme`",
            "CREATE ROW POLICY IF NOT EXISTS `tollgate_org_acme` ON `tollgate`.`alerts` AS \
             PERMISSIVE FOR SELECT USING org_id = 'acme' TO `tollgate_analyst_acme`",
            "CREATE ROW POLICY IF NOT EXISTS `tollgate_all_orgs` ON `tollgate`.`alerts` AS \
             PERMISSIVE FOR SELECT USING 1 TO ALL EXCEPT `tollgate_analyst_acme`, \
             `tollgate_analyst_globex`",
        ] {
            assert!(s.iter().any(|x| x == q), "missing: {q}");
        }
        for table in OPERATOR_TABLES {
            assert!(
                !s.iter().any(|q| q.contains(&format!("`{table}`"))),
                "{table} is granted or filtered"
            );
        }
        let keys = crate::keys_database("tollgate");
        assert!(!s.iter().any(|q| q.contains(&keys)));
        let policies = s
            .iter()
            .filter(|q| q.starts_with("CREATE ROW POLICY"))
            .count();
        assert_eq!(policies, ORG_TABLES.len() * 3);
        assert_eq!(s.len(), 2 + 2 * readable + ORG_TABLES.len() * 3);
    }

    #[test]
    fn roles_come_first_then_the_all_orgs_policies_then_org_policies_then_grants() {
        let s = full(&["acme", "globex"]);
        let rank = |q: &str| {
            if q.starts_with("CREATE ROLE") {
                0
            } else if q.contains("`tollgate_all_orgs`") {
                1
            } else if q.starts_with("CREATE ROW POLICY") {
                2
            } else {
                assert!(q.starts_with("GRANT"), "{q}");
                3
            }
        };
        let ranks: Vec<u8> = s.iter().map(|q| rank(q)).collect();
        assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{ranks:?}");
    }

    #[test]
    fn nothing_missing_nothing_to_run() {
        let desired = Desired::as_migrated("tollgate", orgs(&["acme", "globex"]), None);
        assert_eq!(plan(&desired, &after(&desired)), Vec::<String>::new());
        assert!(full(&[]).is_empty());
    }

    #[test]
    fn a_new_org_gets_its_own_statements_and_widens_every_all_orgs_policy_in_place() {
        let before = Desired::as_migrated("tollgate", orgs(&["acme"]), None);
        let current = after(&before);
        let now = Desired::as_migrated("tollgate", orgs(&["acme", "globex"]), None);
        let s = plan(&now, &current);
        assert_eq!(s[0], "CREATE ROLE IF NOT EXISTS `tollgate_analyst_globex`");
        assert!(!s
            .iter()
            .any(|q| q.contains("tollgate_analyst_acme`") && !q.contains("ALL EXCEPT")));
        let alters: Vec<&String> = s
            .iter()
            .filter(|q| q.starts_with("ALTER ROW POLICY"))
            .collect();
        assert_eq!(alters.len(), ORG_TABLES.len());
        assert_eq!(
            alters[0],
            "ALTER ROW POLICY `tollgate_all_orgs` ON `tollgate`.`usage_events` TO ALL EXCEPT \
             `tollgate_analyst_acme`, `tollgate_analyst_globex`"
        );
        let readable = ORG_TABLES.len() + VIEWS.len() + SHARED_TABLES.len();
        assert_eq!(s.len(), 1 + ORG_TABLES.len() * 2 + readable);
    }

    #[test]
    fn a_race_that_left_a_role_out_of_all_orgs_is_repaired_by_the_next_sync() {
        // Two syncs raced: globex's role and policies exist, but the last write of one table's
        // tollgate_all_orgs exempts acme only — globex's users would read every org there.
        let desired = Desired::as_migrated("tollgate", orgs(&["acme", "globex"]), None);
        let mut current = after(&desired);
        current
            .policies
            .get_mut("alerts")
            .unwrap()
            .insert(ALL_ORGS_POLICY.into(), orgs(&["tollgate_analyst_acme"]));
        assert_eq!(
            plan(&desired, &current),
            vec![
                "ALTER ROW POLICY `tollgate_all_orgs` ON `tollgate`.`alerts` TO ALL EXCEPT \
                  `tollgate_analyst_acme`, `tollgate_analyst_globex`"
                    .to_string()
            ]
        );
    }

    #[test]
    fn a_table_a_later_migration_adds_gets_its_policies_before_its_grants() {
        let mut desired = Desired::as_migrated("tollgate", orgs(&["acme"]), None);
        let current = after(&desired);
        desired.policy_tables.push("usage_new".into());
        assert_eq!(
            plan(&desired, &current),
            vec![
                "CREATE ROW POLICY IF NOT EXISTS `tollgate_all_orgs` ON `tollgate`.`usage_new` \
                 AS PERMISSIVE FOR SELECT USING 1 TO ALL EXCEPT `tollgate_analyst_acme`"
                    .to_string(),
                "CREATE ROW POLICY IF NOT EXISTS `tollgate_org_acme` ON `tollgate`.`usage_new` \
                 AS PERMISSIVE FOR SELECT USING org_id = 'acme' TO `tollgate_analyst_acme`"
                    .to_string(),
                "GRANT SELECT ON `tollgate`.`usage_new` TO `tollgate_analyst_acme`".to_string(),
            ]
        );
    }

    #[test]
    fn an_org_id_cannot_break_out_of_its_quotes() {
        let s = full(&["a'b`c\\?"]);
        assert_eq!(
            s[0],
            "CREATE ROLE IF NOT EXISTS `tollgate_analyst_a'b\\`c\\\\?`"
        );
        assert!(s.iter().any(
            |q| q.contains("USING org_id = 'a\\'b`c\\\\?' TO `tollgate_analyst_a'b\\`c\\\\?`")
        ));
    }

    #[test]
    fn on_a_cluster_every_statement_is_on_cluster_and_shards_get_policies_too() {
        let desired = Desired::as_migrated("tollgate", orgs(&["acme"]), Some("tollgate_cluster"));
        let s = plan(&desired, &Current::default());
        assert!(s
            .iter()
            .all(|q| q.contains(" ON CLUSTER `tollgate_cluster`")));
        assert_eq!(
            s[0],
            "CREATE ROLE IF NOT EXISTS `tollgate_analyst_acme` ON CLUSTER `tollgate_cluster`"
        );
        for q in [
            "CREATE ROW POLICY IF NOT EXISTS `tollgate_org_acme` ON CLUSTER `tollgate_cluster` \
             ON `tollgate`.`usage_events_local` AS PERMISSIVE FOR SELECT USING org_id = 'acme' \
             TO `tollgate_analyst_acme`",
            "GRANT ON CLUSTER `tollgate_cluster` SELECT ON `tollgate`.`org_daily_local` TO \
             `tollgate_analyst_acme`",
        ] {
            assert!(s.iter().any(|x| x == q), "missing: {q}");
        }
        assert_eq!(
            desired.policy_tables.len(),
            ORG_TABLES.len() + SHARDED_TABLES.len()
        );
    }

    #[test]
    fn a_view_that_runs_as_its_definer_is_told_apart() {
        assert!(runs_as_definer(
            "CREATE VIEW t.v DEFINER = default SQL SECURITY DEFINER AS SELECT 1"
        ));
        assert!(runs_as_definer(
            "CREATE VIEW t.v SQL SECURITY NONE AS SELECT 1"
        ));
        assert!(!runs_as_definer("CREATE VIEW t.v AS SELECT 1"));
        assert!(!runs_as_definer(
            "CREATE VIEW t.v SQL SECURITY INVOKER AS SELECT 1"
        ));
    }

    #[test]
    fn a_refusal_to_manage_access_is_told_apart_from_a_failure() {
        let server = |m: &str| Error::ClickHouse(clickhouse::error::Error::BadResponse(m.into()));
        for refusal in [
            "Code: 514. DB::Exception: Could not insert role `r1` because there is no writeable \
             access storage in user directories. (ACCESS_STORAGE_FOR_INSERTION_NOT_FOUND)",
            "Code: 497. DB::Exception: default: Not enough privileges. To execute this query, \
             it's necessary to have the grant CREATE ROLE ON r1. (ACCESS_DENIED)",
            "Code: 164. DB::Exception: default: Cannot execute query in readonly mode. (READONLY)",
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
        assert!(o
            .to_string()
            .contains("ClickHouse 18.16.1 (roles and row policies are used from 24.1)"));
        let o = Outcome::Synced {
            orgs: 2,
            created: vec!["acme".into()],
            statements: 37,
            withheld_views: vec![],
        };
        assert_eq!(
            o.to_string(),
            "analyst roles: 2 orgs, new: acme, 37 statements"
        );
    }
}
