//! The deployment users make agrees with the worker: every binding, var and secret the worker
//! reads (`edge_worker::config::binding_names`) is in OPERATIONS' table and nothing else is;
//! what the table says is in `wrangler.toml` is there, with the right kind, and `wrangler.toml`
//! declares nothing the table does not know. `wrangler_e2e` then runs the same file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::collections::{BTreeMap, BTreeSet};

use tollgate_e2e::harness::repo_root;

/// One row of OPERATIONS' table: kind and where it lives.
#[derive(Debug)]
struct Row {
    kind: String,
    in_wrangler: String,
}

fn table() -> BTreeMap<String, Row> {
    let doc = std::fs::read_to_string(repo_root().join("docs/OPERATIONS.md")).unwrap();
    let start = doc
        .find("#### Every binding, var and secret")
        .expect("OPERATIONS has the bindings table");
    doc[start..]
        .lines()
        .skip_while(|l| !l.starts_with("| name |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (
                cells[1].trim_matches('`').to_string(),
                Row {
                    kind: cells[2].to_string(),
                    in_wrangler: cells[3].to_string(),
                },
            )
        })
        .collect()
}

/// What `wrangler.toml` declares: name → kind (`var`, `Queue producer`, `Durable Object`,
/// `secret`), secrets from its `wrangler secret put` lines.
fn wrangler() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(repo_root().join("wrangler.toml")).unwrap();
    let doc: toml::Table = text.parse().unwrap();
    let mut out = BTreeMap::new();
    for name in doc["vars"].as_table().unwrap().keys() {
        out.insert(name.clone(), "var".to_string());
    }
    for p in doc["queues"]["producers"].as_array().unwrap() {
        out.insert(
            p["binding"].as_str().unwrap().to_string(),
            "Queue producer".to_string(),
        );
    }
    for b in doc["durable_objects"]["bindings"].as_array().unwrap() {
        out.insert(
            b["name"].as_str().unwrap().to_string(),
            format!("Durable Object (`{}`)", b["class_name"].as_str().unwrap()),
        );
    }
    assert!(
        !doc.contains_key("kv_namespaces"),
        "app keys have one source, the dashboard: no KV namespace to keep in step"
    );
    for line in text.lines() {
        if let Some(at) = line.find("secret put ") {
            let name = line[at + "secret put ".len()..]
                .split_whitespace()
                .next()
                .unwrap();
            out.insert(name.to_string(), "secret".to_string());
        }
    }
    out
}

#[test]
fn the_table_lists_exactly_what_the_worker_reads() {
    let read = edge_worker::config::binding_names();
    let documented: BTreeSet<String> = table().into_keys().collect();
    assert_eq!(
        documented, read,
        "OPERATIONS' table vs the names the worker reads"
    );
}

#[test]
fn wrangler_toml_declares_what_the_table_says_and_nothing_else() {
    let table = table();
    let declared = wrangler();
    for (name, kind) in &declared {
        let row = table.get(name).unwrap_or_else(|| {
            panic!("wrangler.toml declares `{name}`, which the worker never reads")
        });
        assert!(
            row.kind.starts_with(kind.as_str()) || (kind == "var" && row.kind.starts_with("var")),
            "`{name}`: wrangler.toml has a {kind}, the table says {}",
            row.kind
        );
        assert_eq!(row.in_wrangler, "yes", "`{name}` is in wrangler.toml");
    }
    for (name, row) in &table {
        if row.in_wrangler == "yes" {
            assert!(
                declared.contains_key(name),
                "the table says `{name}` is in wrangler.toml; it is not"
            );
        }
    }
}

/// The worker is written against the file's compatibility date and flags (the harness's own
/// workerd config uses the same constants).
#[test]
fn the_compatibility_settings_are_the_workers() {
    let text = std::fs::read_to_string(repo_root().join("wrangler.toml")).unwrap();
    let doc: toml::Table = text.parse().unwrap();
    assert_eq!(
        doc["compatibility_date"].as_str().unwrap(),
        edge_worker::local::COMPATIBILITY_DATE
    );
    let flags: Vec<&str> = doc["compatibility_flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(flags, edge_worker::local::COMPATIBILITY_FLAGS);
}
