//! `cargo xtask prices --from <litellm-format.json>`: regenerate `usage-core/prices.json`.
//!
//! Takes the chat, responses, completion and embedding models of the providers Tollgate routes
//! to directly or through OpenRouter, converts per-token USD rates to USD per 1M tokens (exact
//! decimals), and merges with the existing file: unchanged prices keep their entry; a changed
//! price is added as a new entry effective from `--effective-from` (default: today, UTC), so
//! records made before the change keep the old price; a model new to the file applies from
//! 2020-01-01 (there was no earlier price to preserve). Models that disappear from the source
//! are kept: past records still need their prices.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;
use time::macros::date;
use time::Date;
use usage_core::{ModelPrice, Nanos, PriceFile, PriceTable};

use crate::fail;
use crate::util::{repo_root, Result};

#[derive(clap::Args)]
pub struct PricesArgs {
    /// A price list in LiteLLM's `model_prices_and_context_window.json` format.
    #[arg(long)]
    pub from: PathBuf,
    /// The price file to update.
    #[arg(long, default_value = "usage-core/prices.json")]
    pub out: PathBuf,
    /// First day a changed price applies (YYYY-MM-DD, UTC). Default: today.
    #[arg(long, value_parser = parse_date)]
    pub effective_from: Option<Date>,
    /// LiteLLM provider names to include.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "openai,anthropic,gemini,mistral,deepseek,xai"
    )]
    pub providers: Vec<String>,
}

const MODES: &[&str] = &["chat", "responses", "completion", "embedding"];
const NEW_MODEL_FROM: Date = date!(2020 - 01 - 01);

/// OpenRouter vendor prefixes whose models are priced by another provider's entries.
const VENDOR_ALIASES: &[(&str, &str)] = &[
    ("google", "gemini"),
    ("mistralai", "mistral"),
    ("x-ai", "xai"),
];

fn parse_date(s: &str) -> Result<Date, String> {
    Date::parse(s, time::macros::format_description!("[year]-[month]-[day]"))
        .map_err(|e| format!("`{s}` is not YYYY-MM-DD: {e}"))
}

pub fn run(args: &PricesArgs) -> Result {
    let source_text = std::fs::read_to_string(&args.from)
        .map_err(|e| fail!("prices: cannot read {}: {e}", args.from.display()))?;
    let source: BTreeMap<String, Value> = serde_json::from_str(&source_text).map_err(|e| {
        fail!(
            "prices: {} is not a JSON object of models: {e}",
            args.from.display()
        )
    })?;
    let generated = convert(&source, &args.providers)?;

    let out = repo_root().join(&args.out);
    let existing: Option<PriceFile> = match std::fs::read_to_string(&out) {
        Ok(text) => Some(
            serde_json::from_str(&text)
                .map_err(|e| fail!("prices: existing {} is invalid: {e}", out.display()))?,
        ),
        Err(_) => None,
    };
    let today = args
        .effective_from
        .unwrap_or_else(|| time::OffsetDateTime::now_utc().date());
    let (file, changes) = merge(existing, generated, today, &args.from);
    // Prove the result loads before writing it.
    let table = PriceTable::from_file(file.clone())
        .map_err(|e| fail!("prices: generated table is invalid: {e}"))?;
    std::fs::write(&out, render(&file))
        .map_err(|e| fail!("prices: cannot write {}: {e}", out.display()))?;
    println!(
        "prices: {} entries ({} new or changed), version {}, written to {}",
        table.len(),
        changes,
        table.version(),
        out.display()
    );
    Ok(())
}

/// LiteLLM entries → our entries (effective dates are set by `merge`).
fn convert(source: &BTreeMap<String, Value>, providers: &[String]) -> Result<Vec<ModelPrice>> {
    let mut out: BTreeMap<(String, String), ModelPrice> = BTreeMap::new();
    for (key, entry) in source {
        let Some(provider) = entry.get("litellm_provider").and_then(Value::as_str) else {
            continue;
        };
        if !providers.iter().any(|p| p == provider) {
            continue;
        }
        let mode = entry.get("mode").and_then(Value::as_str).unwrap_or("");
        if !MODES.contains(&mode) {
            continue;
        }
        let model = key.strip_prefix(&format!("{provider}/")).unwrap_or(key);
        if model.contains('/') {
            continue; // region- or size-qualified variants
        }
        let rate = |field: &str| -> Result<Option<Nanos>> {
            entry
                .get(field)
                .filter(|v| !v.is_null())
                .map(|v| per_million(field, key, v))
                .transpose()
        };
        let Some(input) = rate("input_cost_per_token")? else {
            continue;
        };
        let output = match rate("output_cost_per_token")? {
            Some(o) => o,
            None if mode == "embedding" => Nanos::ZERO,
            None => continue,
        };
        let per_request = match entry.get("input_cost_per_request").and_then(Value::as_f64) {
            Some(v) => {
                Some(Nanos::parse_usd(&v.to_string()).map_err(|e| fail!("prices: {key}: {e}"))?)
            }
            None => None,
        };
        let max_output_tokens = entry
            .get("max_output_tokens")
            .or_else(|| entry.get("max_tokens"))
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok());
        let price = ModelPrice {
            provider: provider.to_string(),
            model: model.to_string(),
            effective_from: NEW_MODEL_FROM,
            input,
            cached_input: rate("cache_read_input_token_cost")?,
            cache_write: rate("cache_creation_input_token_cost")?,
            output,
            reasoning: rate("output_cost_per_reasoning_token")?,
            per_request,
            max_output_tokens,
        };
        // Sorted keys: `deepseek-chat` comes before `deepseek/deepseek-chat`; the first wins.
        out.entry((price.provider.clone(), price.model.clone()))
            .or_insert(price);
    }
    Ok(out.into_values().collect())
}

/// A per-token USD rate (a JSON number) as USD per 1M tokens, exactly.
fn per_million(field: &str, key: &str, v: &Value) -> Result<Nanos> {
    let text = v.to_string();
    let shifted = match text.split_once(['e', 'E']) {
        Some((mantissa, exp)) => {
            let exp: i32 = exp
                .parse()
                .map_err(|_| fail!("prices: {key}.{field}: bad number {text}"))?;
            format!("{mantissa}e{}", exp + 6)
        }
        None => format!("{text}e6"),
    };
    Nanos::parse_usd(&shifted).map_err(|e| fail!("prices: {key}.{field}: {e}"))
}

fn same_rates(a: &ModelPrice, b: &ModelPrice) -> bool {
    (
        a.input,
        a.cached_input,
        a.cache_write,
        a.output,
        a.reasoning,
        a.per_request,
    ) == (
        b.input,
        b.cached_input,
        b.cache_write,
        b.output,
        b.reasoning,
        b.per_request,
    )
}

fn merge(
    existing: Option<PriceFile>,
    generated: Vec<ModelPrice>,
    today: Date,
    from: &std::path::Path,
) -> (PriceFile, usize) {
    let mut models = existing.map(|f| f.models).unwrap_or_default();
    let mut changes = 0;
    for new in generated {
        let latest = models
            .iter()
            .filter(|p| p.provider == new.provider && p.model == new.model)
            .max_by_key(|p| p.effective_from);
        match latest {
            Some(old) if same_rates(old, &new) => {}
            Some(old) if old.effective_from >= today => {
                // Same day re-run with other prices: replace rather than duplicate the date.
                let day = old.effective_from;
                models.retain(|p| {
                    !(p.provider == new.provider && p.model == new.model && p.effective_from == day)
                });
                models.push(ModelPrice {
                    effective_from: day,
                    ..new
                });
                changes += 1;
            }
            Some(_) => {
                models.push(ModelPrice {
                    effective_from: today,
                    ..new
                });
                changes += 1;
            }
            None => {
                models.push(new);
                changes += 1;
            }
        }
    }
    models.sort_by(|a, b| {
        (&a.provider, &a.model, a.effective_from).cmp(&(&b.provider, &b.model, b.effective_from))
    });
    let name = from
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let file = PriceFile {
        source: format!("generated by `cargo xtask prices --from {name}`; USD per 1M tokens"),
        vendor_aliases: VENDOR_ALIASES
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        models,
    };
    (file, changes)
}

/// One entry per line, so that a price change is a one-line diff.
fn render(file: &PriceFile) -> String {
    let mut s = String::from("{\n");
    s += &format!("  \"source\": {},\n", Value::from(file.source.as_str()));
    s += &format!(
        "  \"vendor_aliases\": {},\n",
        serde_json::to_string(&file.vendor_aliases).unwrap_or_default()
    );
    s += "  \"models\": [\n";
    let lines: Vec<String> = file
        .models
        .iter()
        .map(|m| format!("    {}", serde_json::to_string(m).unwrap_or_default()))
        .collect();
    s += &lines.join(",\n");
    s += "\n  ]\n}\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> BTreeMap<String, Value> {
        serde_json::from_str(
            r#"{
              "gpt-4o-mini": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 1.5e-07,
                              "output_cost_per_token": 6e-07, "cache_read_input_token_cost": 7.5e-08, "max_output_tokens": 16384},
              "gemini/gemini-2.5-flash": {"litellm_provider": "gemini", "mode": "chat", "input_cost_per_token": 3e-07,
                              "output_cost_per_token": 2.5e-06},
              "text-embedding-3-small": {"litellm_provider": "openai", "mode": "embedding", "input_cost_per_token": 2e-08},
              "dall-e-3": {"litellm_provider": "openai", "mode": "image_generation", "input_cost_per_token": 1e-06},
              "azure/gpt-4o": {"litellm_provider": "azure", "mode": "chat", "input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06}
            }"#,
        )
        .unwrap()
    }

    fn providers() -> Vec<String> {
        vec!["openai".into(), "gemini".into()]
    }

    #[test]
    fn converts_rates_exactly_and_filters() {
        let got = convert(&source(), &providers()).unwrap();
        let names: Vec<_> = got
            .iter()
            .map(|p| format!("{}/{}", p.provider, p.model))
            .collect();
        assert_eq!(
            names,
            [
                "gemini/gemini-2.5-flash",
                "openai/gpt-4o-mini",
                "openai/text-embedding-3-small"
            ]
        );
        let mini = &got[1];
        assert_eq!(mini.input, Nanos::parse_usd("0.15").unwrap());
        assert_eq!(mini.cached_input, Some(Nanos::parse_usd("0.075").unwrap()));
        assert_eq!(mini.output, Nanos::parse_usd("0.6").unwrap());
        assert_eq!(mini.max_output_tokens, Some(16384));
        assert_eq!(got[2].output, Nanos::ZERO);
    }

    #[test]
    fn merge_keeps_history_and_dates_changes() {
        let day1 = date!(2026 - 01 - 01);
        let day2 = date!(2026 - 02 - 01);
        let from = std::path::Path::new("x.json");
        let (file, n) = merge(None, convert(&source(), &providers()).unwrap(), day1, from);
        assert_eq!(n, 3);
        assert!(file
            .models
            .iter()
            .all(|m| m.effective_from == NEW_MODEL_FROM));
        // unchanged: nothing added
        let (same, n) = merge(
            Some(file.clone()),
            convert(&source(), &providers()).unwrap(),
            day2,
            from,
        );
        assert_eq!((n, same.models.len()), (0, 3));
        // a price change adds a dated entry and keeps the old one
        let mut src = source();
        src.get_mut("gpt-4o-mini").unwrap()["output_cost_per_token"] = 5e-07.into();
        let (changed, n) = merge(Some(file), convert(&src, &providers()).unwrap(), day2, from);
        assert_eq!(n, 1);
        let minis: Vec<_> = changed
            .models
            .iter()
            .filter(|m| m.model == "gpt-4o-mini")
            .collect();
        assert_eq!(minis.len(), 2);
        assert_eq!(minis[1].effective_from, day2);
        assert_eq!(minis[1].output, Nanos::parse_usd("0.5").unwrap());
        let rendered = render(&changed);
        assert!(PriceTable::from_json(&rendered).is_ok());
    }
}
