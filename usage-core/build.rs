//! Turns `prices.json` into `$OUT_DIR/prices.tsv`: the same table as tab-separated lines, which
//! `PriceTable::builtin` reads without serde.
//!
//! The built-in table is loaded in every edge isolate; read through serde it brought its
//! deserializers (and their error formatting) into the wasm bundle. The lines keep each value
//! as written in the JSON; `PriceTable::builtin` validates them as `from_json` does, and a test
//! checks that both readings of the file give the same table.

use std::fmt::Write as _;

use serde_json::Value;

/// A `ModelPrice`'s fields, in the order of the TSV columns.
const COLUMNS: &[&str] = &[
    "provider",
    "model",
    "effective_from",
    "input",
    "cached_input",
    "cache_write",
    "output",
    "reasoning",
    "per_request",
    "max_output_tokens",
    "audio_input",
    "audio_output",
    "image_input",
    "image_output",
    "web_search",
    "file_search",
];
/// Base columns every model line has; the rest are written only when one of them is set.
const BASE_COLUMNS: usize = 10;
/// A tier's fields, in the order of a `tier` line.
const TIER_COLUMNS: &[&str] = &["input", "cached_input", "output"];

fn main() -> Result<(), String> {
    println!("cargo:rerun-if-changed=prices.json");
    let text = std::fs::read_to_string("prices.json")
        .map_err(|e| format!("usage-core/prices.json: {e}"))?;
    let file: Value =
        serde_json::from_str(&text).map_err(|e| format!("usage-core/prices.json: {e}"))?;
    let mut out = String::new();
    let aliases = file
        .get("vendor_aliases")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (vendor, provider) in &aliases {
        let provider = provider
            .as_str()
            .ok_or(format!("vendor_aliases.{vendor} is not a string"))?;
        let _ = writeln!(out, "alias\t{}\t{}", cell(vendor)?, cell(provider)?);
    }
    let models = file
        .get("models")
        .and_then(Value::as_array)
        .ok_or("prices.json has no `models` array")?;
    for (index, model) in models.iter().enumerate() {
        let fields = model
            .as_object()
            .ok_or(format!("models[{index}] is not an object"))?;
        if let Some(unknown) = fields
            .keys()
            .find(|k| !COLUMNS.contains(&k.as_str()) && k.as_str() != "tiers")
        {
            return Err(format!("models[{index}] has an unknown field `{unknown}`"));
        }
        let extra = COLUMNS[BASE_COLUMNS..]
            .iter()
            .any(|c| fields.get(*c).is_some_and(|v| !v.is_null()));
        let columns = if extra {
            COLUMNS
        } else {
            &COLUMNS[..BASE_COLUMNS]
        };
        out.push_str("model");
        for column in columns {
            out.push('\t');
            push_value(
                &mut out,
                fields.get(*column),
                &format!("models[{index}].{column}"),
            )?;
        }
        out.push('\n');
        if let Some(tiers) = fields.get("tiers").and_then(Value::as_object) {
            for (name, tier) in tiers {
                let tier = tier
                    .as_object()
                    .ok_or(format!("models[{index}].tiers.{name} is not an object"))?;
                if let Some(unknown) = tier.keys().find(|k| !TIER_COLUMNS.contains(&k.as_str())) {
                    return Err(format!(
                        "models[{index}].tiers.{name} has an unknown field `{unknown}`"
                    ));
                }
                out.push_str("tier\t");
                out.push_str(cell(name)?);
                for column in TIER_COLUMNS {
                    out.push('\t');
                    push_value(
                        &mut out,
                        tier.get(*column),
                        &format!("models[{index}].tiers.{name}.{column}"),
                    )?;
                }
                out.push('\n');
            }
        }
    }
    let dir = std::env::var("OUT_DIR").map_err(|e| format!("OUT_DIR: {e}"))?;
    let dest = std::path::Path::new(&dir).join("prices.tsv");
    std::fs::write(&dest, out).map_err(|e| format!("{}: {e}", dest.display()))
}

/// A JSON value as one cell (absent or null: empty).
fn push_value(out: &mut String, v: Option<&Value>, at: &str) -> Result<(), String> {
    match v {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => out.push_str(cell(s)?),
        Some(Value::Number(n)) => out.push_str(&n.to_string()),
        Some(other) => return Err(format!("{at} is {other}")),
    }
    Ok(())
}

/// A value as one TSV cell: tabs and line breaks would break the layout (no price list has
/// them).
fn cell(s: &str) -> Result<&str, String> {
    if s.contains(['\t', '\n', '\r']) {
        return Err(format!(
            "prices.json value {s:?} contains a tab or line break"
        ));
    }
    Ok(s)
}
