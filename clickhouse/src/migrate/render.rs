//! Rendering a migration statement for its target: as written for one server, or as
//! `ON CLUSTER` DDL with `Replicated*` engines for a cluster.
//!
//! Cluster rendering, statement by statement (only DDL is allowed in migrations):
//! - `CREATE TABLE|VIEW|MATERIALIZED VIEW|DATABASE [IF NOT EXISTS] name`,
//!   `DROP TABLE|VIEW [IF EXISTS] name`, and `ALTER TABLE name` of a sharded or `Distributed`
//!   table get `ON CLUSTER <cluster>` after the name; an `ALTER` of a table replicated to every
//!   host does not (run on one host, ZooKeeper replicates it; `ON CLUSTER` would apply it once
//!   per shard). Names are qualified with the database (a DDL query replayed on another host
//!   must not depend on the initiator's current database).
//! - Table references are qualified the same way: `FROM t`, `JOIN t`, a view's `TO t`, and
//!   `CREATE TABLE x AS t`.
//! - `ENGINE = XMergeTree(args)` becomes
//!   `ENGINE = ReplicatedXMergeTree('/clickhouse/tables/{shard}/<db>/<table>', '{replica}', args)`
//!   for the usage data, which is sharded ([`SHARDED_TABLES`]: raw events and the rollups fed
//!   from them), and `'/clickhouse/tables/all/<db>/<table>'` for every other table — budgets,
//!   keys, tokens, alerts, prices, leases, `schema_migrations`, … — which every host holds whole
//!   (written on any host, read on any host); `{shard}` and `{replica}` are the server's macros
//!   (its config), filled per host.
//! - `RENAME TABLE a TO b` (one table per statement) gets both names qualified and
//!   `ON CLUSTER <cluster>` at the end.
//! - `${keys_database}` becomes the name of the key and token database (`<database>_keys`,
//!   [`crate::config::keys_database`]), unquoted.
//! - `${cluster}` and `${database}` placeholders become quoted names (used by the cluster-only
//!   `Distributed` table over `usage_events`).

use super::sql::{tokenize, Kind, Token};

/// Where statements are going: one server, or every host of a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub database: String,
    pub cluster: Option<String>,
}

/// Tables split across shards: the raw events and the rollups their views feed (each shard's
/// views aggregate that shard's rows; queries merge shards through `Distributed` tables, see
/// [`cluster_table_name`]). Every other table is replicated to every host.
pub const SHARDED_TABLES: &[&str] = &[
    "usage_events",
    "usage_hourly",
    "usage_daily",
    "org_daily",
    "org_model_daily",
];

/// Engines that have a `Replicated` variant taking (zk_path, replica, original args…).
const REPLICABLE_ENGINES: &[&str] = &[
    "MergeTree",
    "SummingMergeTree",
    "ReplacingMergeTree",
    "AggregatingMergeTree",
    "CollapsingMergeTree",
    "VersionedCollapsingMergeTree",
];

/// Whether `name` is safe to splice into DDL unquoted (and into a ZooKeeper path).
pub(crate) fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
}

/// Renders one statement for `target`.
pub(crate) fn render(sql: &str, target: &Target) -> Result<String, String> {
    let with_placeholders = substitute_placeholders(sql, target)?;
    match &target.cluster {
        None => Ok(with_placeholders),
        Some(cluster) => render_on_cluster(
            &local_and_distributed_names(&with_placeholders)?,
            &target.database,
            cluster,
        ),
    }
}

/// On a cluster, the `Distributed` table a `CREATE TABLE` of a sharded table implies (rendered
/// after it): `T` over `T_local`, rows sharded by org (one org's rows and rollups on one shard).
/// `None` for every other statement, and on one server.
pub(crate) fn distributed_over(sql: &str, target: &Target) -> Result<Option<String>, String> {
    let Some(cluster) = &target.cluster else {
        return Ok(None);
    };
    let toks: Vec<Token> = tokenize(sql)?
        .into_iter()
        .filter(|t| !t.is_trivia())
        .collect();
    let word = |i: usize, w: &str| toks.get(i).is_some_and(|t| t.is_word(sql, w));
    if !(word(0, "CREATE") && word(1, "TABLE")) {
        return Ok(None);
    }
    let at = if word(2, "IF") { 5 } else { 2 };
    let Some(name) = toks.get(at).map(|t| t.text(sql)) else {
        return Ok(None);
    };
    if !SHARDED_TABLES.contains(&name) {
        return Ok(None);
    }
    let db = &target.database;
    Ok(Some(format!(
        "CREATE TABLE IF NOT EXISTS {db}.{name} ON CLUSTER {cluster} AS {db}.{name}_local \
         ENGINE = Distributed('{cluster}', '{db}', {name}_local, cityHash64(org_id))"
    )))
}

/// The name a table of a migration has on a cluster: a sharded table `T` is stored as
/// `T_local` on each host, and `T` is the `Distributed` table over it (written as
/// `T_distributed` in the migrations' cluster-only statements). So every reader and writer —
/// the services' queries, the analysts' views, the collector's INSERT — names `T` and gets all
/// shards, on one server and on a cluster alike; only the materialized views, which must see
/// each shard's own inserts, name `T_local`.
pub fn cluster_table_name(table: &str) -> String {
    if let Some(t) = table.strip_suffix("_distributed") {
        if SHARDED_TABLES.contains(&t) {
            return t.to_string();
        }
    }
    if SHARDED_TABLES.contains(&table) {
        return format!("{table}_local");
    }
    table.to_string()
}

/// [`cluster_table_name`] applied to a statement: its object, a `TO t` or `AS t` right after it,
/// the sources of a materialized view, the table argument of `Distributed(…)`, and every
/// `T_distributed`.
fn local_and_distributed_names(sql: &str) -> Result<String, String> {
    let all = tokenize(sql)?;
    let toks: Vec<Token> = all.into_iter().filter(|t| !t.is_trivia()).collect();
    let word = |i: usize, w: &str| toks.get(i).is_some_and(|t| t.is_word(sql, w));
    let is_mv = word(0, "CREATE") && word(1, "MATERIALIZED");
    // The object name's index.
    let mut obj = if word(0, "CREATE") {
        if is_mv {
            3
        } else {
            2
        }
    } else if word(0, "ALTER") || word(0, "DROP") {
        2
    } else {
        usize::MAX
    };
    if word(obj, "IF") && word(obj + 1, "NOT") && word(obj + 2, "EXISTS") {
        obj += 3;
    } else if word(obj, "IF") && word(obj + 1, "EXISTS") {
        obj += 2;
    }
    let mut renamed: Vec<(usize, String)> = Vec::new();
    let local = |k: usize, renamed: &mut Vec<(usize, String)>| {
        if let Some(t) = toks.get(k).filter(|t| t.kind == Kind::Word) {
            let name = t.text(sql);
            if SHARDED_TABLES.contains(&name) {
                renamed.push((k, format!("{name}_local")));
            }
        }
    };
    local(obj, &mut renamed);
    if word(obj.saturating_add(1), "TO")
        || (word(obj.saturating_add(1), "AS") && !word(obj.saturating_add(2), "SELECT"))
    {
        local(obj + 2, &mut renamed);
    }
    for (k, t) in toks.iter().enumerate() {
        if is_mv && (t.is_word(sql, "FROM") || t.is_word(sql, "JOIN")) {
            local(k + 1, &mut renamed);
        }
        if t.is_word(sql, "Distributed") && toks.get(k + 1).is_some_and(|n| n.is_punct(sql, '(')) {
            // Distributed(cluster, database, table, …): the table is after the second comma.
            let mut commas = 0;
            for (j, n) in toks.iter().enumerate().skip(k + 2) {
                if n.is_punct(sql, ',') {
                    commas += 1;
                    if commas == 2 {
                        local(j + 1, &mut renamed);
                        break;
                    }
                }
                if n.is_punct(sql, ')') {
                    break;
                }
            }
        }
        if t.kind == Kind::Word {
            if let Some(base) = t.text(sql).strip_suffix("_distributed") {
                if SHARDED_TABLES.contains(&base) {
                    renamed.push((k, base.to_string()));
                }
            }
        }
    }
    renamed.sort_by_key(|(k, _)| *k);
    renamed.dedup_by_key(|(k, _)| *k);
    let mut out = String::with_capacity(sql.len() + 64);
    let mut pos = 0;
    for (k, name) in renamed {
        out.push_str(&sql[pos..toks[k].start]);
        out.push_str(&name);
        pos = toks[k].end;
    }
    out.push_str(&sql[pos..]);
    Ok(out)
}

fn substitute_placeholders(sql: &str, target: &Target) -> Result<String, String> {
    let mut out = sql.replace(
        "${keys_database}",
        &crate::config::keys_database(&target.database),
    );
    out = out.replace("${database}", &format!("'{}'", target.database));
    if out.contains("${cluster}") {
        let Some(cluster) = &target.cluster else {
            return Err("uses ${cluster} but is not marked `-- cluster-only`".into());
        };
        out = out.replace("${cluster}", &format!("'{cluster}'"));
    }
    Ok(out)
}

/// An edit: replace `start..end` of the source with `text`.
struct Edit {
    start: usize,
    end: usize,
    text: String,
}

fn render_on_cluster(sql: &str, database: &str, cluster: &str) -> Result<String, String> {
    let all = tokenize(sql)?;
    let toks: Vec<Token> = all.into_iter().filter(|t| !t.is_trivia()).collect();
    let word = |i: usize, w: &str| toks.get(i).is_some_and(|t| t.is_word(sql, w));
    let mut edits: Vec<Edit> = Vec::new();

    // `RENAME TABLE a TO b` (one table): both names qualified, ON CLUSTER at the end — a
    // table's name is each host's own metadata, replicated or not.
    if word(0, "RENAME") && word(1, "TABLE") {
        let (from_end, _) = qualify_at(sql, &toks, 2, database, true, &mut edits)
            .ok_or("expected a table name after RENAME TABLE")?;
        if !word(from_end, "TO") {
            return Err(
                "RENAME TABLE renames one table per statement: `RENAME TABLE a TO b`".into(),
            );
        }
        let (to_end, _) = qualify_at(sql, &toks, from_end + 1, database, true, &mut edits)
            .ok_or("expected a table name after TO")?;
        if to_end != toks.len() {
            return Err(
                "RENAME TABLE renames one table per statement: `RENAME TABLE a TO b`".into(),
            );
        }
        let at = toks[to_end - 1].end;
        edits.push(Edit {
            start: at,
            end: at,
            text: format!(" ON CLUSTER {cluster}"),
        });
        return apply_edits(sql, edits);
    }

    // 1. The statement's object, and ON CLUSTER after it.
    let mut i;
    let object_kind;
    if word(0, "CREATE") {
        i = 1;
        if word(i, "MATERIALIZED") {
            i += 1;
        }
        if word(i, "TABLE") || word(i, "VIEW") {
            object_kind = "table";
        } else if word(i, "DATABASE") {
            object_kind = "database";
        } else {
            return Err(
                "only CREATE TABLE/VIEW/DATABASE, ALTER TABLE and DROP are allowed in migrations"
                    .into(),
            );
        }
        i += 1;
        if word(i, "IF") && word(i + 1, "NOT") && word(i + 2, "EXISTS") {
            i += 3;
        }
    } else if word(0, "ALTER") && word(1, "TABLE") {
        object_kind = "table";
        i = 2;
    } else if word(0, "DROP") && (word(1, "TABLE") || word(1, "VIEW") || word(1, "DATABASE")) {
        object_kind = if word(1, "DATABASE") {
            "database"
        } else {
            "table"
        };
        i = 2;
        if word(i, "IF") && word(i + 1, "EXISTS") {
            i += 2;
        }
    } else {
        return Err(
            "only CREATE TABLE/VIEW/DATABASE, ALTER TABLE and DROP are allowed in migrations"
                .into(),
        );
    }
    let (name_end, object_name) =
        qualify_at(sql, &toks, i, database, object_kind == "table", &mut edits)
            .ok_or("expected an object name")?;
    if toks.get(name_end).is_some_and(|t| t.is_word(sql, "ON")) {
        return Err("already has ON CLUSTER; write migrations without it".into());
    }
    // After `local_and_distributed_names`, a bare sharded name is the Distributed table.
    if word(0, "ALTER") && SHARDED_TABLES.contains(&object_name.as_str()) {
        return Err(format!(
            "ALTER of the Distributed table {object_name}: 18.16 refuses it ON CLUSTER over \
             replicated shards; DROP and re-CREATE it (it holds no data) in cluster-only statements"
        ));
    }
    // An ALTER of a table replicated to every host runs on one host: ZooKeeper carries it to
    // the other replicas (ON CLUSTER would apply it once per shard, and the second fails).
    let sharded =
        |name: &str| SHARDED_TABLES.contains(&name.strip_suffix("_local").unwrap_or(name));
    let replicated_everywhere = word(0, "ALTER") && !sharded(&object_name);
    if !replicated_everywhere {
        let on_cluster_at = toks[name_end - 1].end;
        edits.push(Edit {
            start: on_cluster_at,
            end: on_cluster_at,
            text: format!(" ON CLUSTER {cluster}"),
        });
    }

    // 2. `CREATE MATERIALIZED VIEW x TO t` and `CREATE TABLE x AS t` right after the name.
    if (word(name_end, "TO") || word(name_end, "AS"))
        && toks.get(name_end + 1).is_some_and(|t| t.kind == Kind::Word)
        && !word(name_end + 1, "SELECT")
    {
        qualify_at(sql, &toks, name_end + 1, database, true, &mut edits);
    }

    // 3. FROM t / JOIN t anywhere (not FROM (subquery), not table functions, not db.t).
    for (k, t) in toks.iter().enumerate() {
        if (t.is_word(sql, "FROM") || t.is_word(sql, "JOIN"))
            && toks.get(k + 1).is_some_and(|n| n.kind == Kind::Word)
            && !toks.get(k + 2).is_some_and(|n| n.is_punct(sql, '('))
        {
            qualify_at(sql, &toks, k + 1, database, true, &mut edits);
        }
    }

    // 4. Engines.
    for (k, t) in toks.iter().enumerate() {
        if !(t.is_word(sql, "ENGINE") && toks.get(k + 1).is_some_and(|n| n.is_punct(sql, '='))) {
            continue;
        }
        let Some(engine) = toks.get(k + 2) else {
            return Err("ENGINE = without an engine".into());
        };
        let engine_name = engine.text(sql);
        if !REPLICABLE_ENGINES.contains(&engine_name) {
            continue; // Distributed, Log, Memory…: the same on every host.
        }
        let open = toks
            .get(k + 3)
            .filter(|t| t.is_punct(sql, '('))
            .ok_or_else(|| format!("ENGINE = {engine_name} needs parentheses: {engine_name}()"))?;
        let close = matching_paren(sql, &toks, k + 3).ok_or("unbalanced parentheses in ENGINE")?;
        let args = sql[open.end..toks[close].start].trim();
        let group = if sharded(&object_name) {
            "{shard}"
        } else {
            "all"
        };
        let path = format!("'/clickhouse/tables/{group}/{database}/{object_name}'");
        let mut text = format!("Replicated{engine_name}({path}, '{{replica}}'");
        if !args.is_empty() {
            text.push_str(", ");
            text.push_str(args);
        }
        text.push(')');
        edits.push(Edit {
            start: engine.start,
            end: toks[close].end,
            text,
        });
    }

    apply_edits(sql, edits)
}

fn apply_edits(sql: &str, mut edits: Vec<Edit>) -> Result<String, String> {
    edits.sort_by_key(|e| (e.start, e.end));
    let mut out = String::with_capacity(sql.len() + 128);
    let mut pos = 0;
    for e in edits {
        if e.start < pos {
            return Err("overlapping rewrites (unexpected statement shape)".into());
        }
        out.push_str(&sql[pos..e.start]);
        out.push_str(&e.text);
        pos = e.end;
    }
    out.push_str(&sql[pos..]);
    Ok(out)
}

/// At token `i` there is `name` or `db.name`. Qualifies a bare `name` when `qualify` (via an
/// edit) and returns the index after the name and the bare name.
fn qualify_at(
    sql: &str,
    toks: &[Token],
    i: usize,
    database: &str,
    qualify: bool,
    edits: &mut Vec<Edit>,
) -> Option<(usize, String)> {
    let first = toks
        .get(i)
        .filter(|t| matches!(t.kind, Kind::Word | Kind::QuotedIdent))?;
    if toks.get(i + 1).is_some_and(|t| t.is_punct(sql, '.')) {
        let name = toks.get(i + 2)?;
        return Some((i + 3, unquote(name.text(sql))));
    }
    if qualify {
        edits.push(Edit {
            start: first.start,
            end: first.start,
            text: format!("{database}."),
        });
    }
    Some((i + 1, unquote(first.text(sql))))
}

fn unquote(s: &str) -> String {
    s.trim_matches(|c| c == '`' || c == '"').to_string()
}

fn matching_paren(sql: &str, toks: &[Token], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (k, t) in toks.iter().enumerate().skip(open) {
        if t.is_punct(sql, '(') {
            depth += 1;
        } else if t.is_punct(sql, ')') {
            depth = depth.checked_sub(1)?;
            if depth == 0 {
                return Some(k);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_moves_to_the_keys_database_on_every_host() {
        let sql = "RENAME TABLE api_tokens TO ${keys_database}.api_tokens";
        assert_eq!(
            render(sql, &cluster()).unwrap(),
            "RENAME TABLE tollgate.api_tokens TO tollgate_keys.api_tokens ON CLUSTER prod"
        );
        let one = Target {
            database: "tollgate".into(),
            cluster: None,
        };
        assert_eq!(
            render(sql, &one).unwrap(),
            "RENAME TABLE api_tokens TO tollgate_keys.api_tokens"
        );
        assert!(render("RENAME TABLE a TO b, c TO d", &cluster()).is_err());
    }

    fn cluster() -> Target {
        Target {
            database: "tollgate".into(),
            cluster: Some("prod".into()),
        }
    }

    #[test]
    fn single_node_statements_are_unchanged() {
        let single = Target {
            database: "tollgate".into(),
            cluster: None,
        };
        let sql = "CREATE TABLE IF NOT EXISTS t (a UInt8) ENGINE = MergeTree() ORDER BY a";
        assert_eq!(render(sql, &single).unwrap(), sql);
        assert!(render(
            "CREATE TABLE d AS t ENGINE = Distributed(${cluster}, x, t)",
            &single
        )
        .is_err());
    }

    #[test]
    fn tables_get_on_cluster_and_replicated_engines() {
        let sql = "CREATE TABLE IF NOT EXISTS budgets (a UInt8, version UInt64)\n\
                   ENGINE = ReplacingMergeTree(version)\nORDER BY a";
        assert_eq!(
            render(sql, &cluster()).unwrap(),
            "CREATE TABLE IF NOT EXISTS tollgate.budgets ON CLUSTER prod (a UInt8, version UInt64)\n\
             ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/tollgate/budgets', \
             '{replica}', version)\nORDER BY a"
        );
        let sql =
            "CREATE TABLE IF NOT EXISTS usage_events (a UInt8) ENGINE = MergeTree() PARTITION BY a ORDER BY a";
        assert_eq!(
            render(sql, &cluster()).unwrap(),
            "CREATE TABLE IF NOT EXISTS tollgate.usage_events_local ON CLUSTER prod (a UInt8) ENGINE = \
             ReplicatedMergeTree('/clickhouse/tables/{shard}/tollgate/usage_events_local', '{replica}') \
             PARTITION BY a ORDER BY a"
        );
    }

    #[test]
    fn views_qualify_their_target_and_sources() {
        let sql = "CREATE MATERIALIZED VIEW IF NOT EXISTS mv TO daily AS SELECT a FROM events \
                   WHERE b IN (SELECT b FROM other) GROUP BY a";
        assert_eq!(
            render(sql, &cluster()).unwrap(),
            "CREATE MATERIALIZED VIEW IF NOT EXISTS tollgate.mv ON CLUSTER prod TO tollgate.daily \
             AS SELECT a FROM tollgate.events WHERE b IN (SELECT b FROM tollgate.other) GROUP BY a"
        );
        let sql = "CREATE VIEW IF NOT EXISTS v AS SELECT x FROM (SELECT x FROM t) JOIN system.numbers USING x";
        assert_eq!(
            render(sql, &cluster()).unwrap(),
            "CREATE VIEW IF NOT EXISTS tollgate.v ON CLUSTER prod AS SELECT x FROM (SELECT x FROM \
             tollgate.t) JOIN system.numbers USING x"
        );
    }

    #[test]
    fn distributed_tables_and_alters() {
        let sql = "CREATE TABLE IF NOT EXISTS d AS usage_events\n\
                   ENGINE = Distributed(${cluster}, ${database}, usage_events, cityHash64(org_id))";
        assert_eq!(
            render(sql, &cluster()).unwrap(),
            "CREATE TABLE IF NOT EXISTS tollgate.d ON CLUSTER prod AS tollgate.usage_events_local\n\
             ENGINE = Distributed('prod', 'tollgate', usage_events_local, cityHash64(org_id))"
        );
        // The migrations' `usage_events_distributed` is the cluster's public `usage_events`.
        assert_eq!(
            render("DROP TABLE IF EXISTS usage_events_distributed", &cluster()).unwrap(),
            "DROP TABLE IF EXISTS tollgate.usage_events ON CLUSTER prod"
        );
        assert_eq!(
            render("ALTER TABLE usage_events MODIFY COLUMN ts DateTime('UTC') CODEC(ZSTD(1))", &cluster()).unwrap(),
            "ALTER TABLE tollgate.usage_events_local ON CLUSTER prod MODIFY COLUMN ts DateTime('UTC') CODEC(ZSTD(1))"
        );
        // A table every host replicates is altered on one host (ZooKeeper carries it on).
        assert_eq!(
            render(
                "ALTER TABLE budgets ADD COLUMN x UInt8 DEFAULT 0",
                &cluster()
            )
            .unwrap(),
            "ALTER TABLE tollgate.budgets ADD COLUMN x UInt8 DEFAULT 0"
        );
        assert!(render(
            "ALTER TABLE usage_events_distributed ADD COLUMN x UInt8",
            &cluster()
        )
        .unwrap_err()
        .contains("DROP and re-CREATE"));
        assert_eq!(
            render("CREATE DATABASE IF NOT EXISTS tollgate", &cluster()).unwrap(),
            "CREATE DATABASE IF NOT EXISTS tollgate ON CLUSTER prod"
        );
    }

    #[test]
    fn non_ddl_is_refused_on_cluster() {
        assert!(render("INSERT INTO t SELECT 1", &cluster()).is_err());
        assert!(render(
            "CREATE TABLE t ON CLUSTER x (a UInt8) ENGINE = Log",
            &cluster()
        )
        .is_err());
    }

    #[test]
    fn plain_names() {
        assert!(is_plain_name("tollgate_test_1"));
        assert!(!is_plain_name("1abc"));
        assert!(!is_plain_name("a-b"));
        assert!(!is_plain_name("a`b"));
        assert!(!is_plain_name(""));
    }
}
