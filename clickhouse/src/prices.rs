//! The price book: the price file built into the binaries, plus the entries admins set in the
//! dashboard (`price_overrides`, migration 0014). One function, [`price_book`], assembles it, so
//! that the dashboard (which serves it to the edge), the reprice job and the API agree on the
//! prices and on their version.
//!
//! An override with the same provider, model and `effective_from` as a built-in entry replaces
//! it; any other adds a version of the model's prices from its day on. Removing an override
//! brings the built-in entry back. The book's `version` (a content hash, `pt-…`) is what the
//! records priced with it carry as `pricing_version`; [`record_version`] writes the book's rows
//! to `model_prices` under that version, so that analysts can recompute any stored cost.

use chrono::{DateTime, NaiveDate, Utc};
use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};
use usage_core::{ModelPrice, PriceFile, PriceTable};

use crate::error::{Error, Result};
use crate::read_query;
use crate::version::{now_second, row_version};

/// A row of `price_overrides` (migration 0014), column for column.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub struct PriceOverrideRow {
    pub provider: String,
    pub model: String,
    #[serde(with = "clickhouse::serde::chrono::date")]
    pub effective_from: NaiveDate,
    /// The [`ModelPrice`] as JSON.
    pub entry: String,
    pub created_by: String,
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    pub updated_at: DateTime<Utc>,
    pub deleted: u8,
    pub version: u64,
}

/// An admin's price entry as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceOverride {
    pub price: ModelPrice,
    pub created_by: String,
    pub updated_at: DateTime<Utc>,
}

/// The live overrides, ordered by provider, model and date.
pub async fn overrides(client: &Client) -> Result<Vec<PriceOverride>> {
    let rows = read_query(
        client,
        "SELECT ?fields FROM price_overrides FINAL WHERE deleted = 0 \
         ORDER BY provider, model, effective_from",
    )
    .fetch_all::<PriceOverrideRow>()
    .await?;
    rows.into_iter()
        .map(|row| {
            let price: ModelPrice = serde_json::from_str(&row.entry).map_err(|e| {
                Error::Integrity(format!(
                    "price_overrides {}/{} {}: stored entry does not read: {e}",
                    row.provider, row.model, row.effective_from
                ))
            })?;
            Ok(PriceOverride {
                price,
                created_by: row.created_by,
                updated_at: row.updated_at,
            })
        })
        .collect()
}

/// The built-in file with `overrides` applied (see the module docs).
pub fn merge(builtin: &PriceFile, overrides: &[PriceOverride]) -> PriceFile {
    let mut file = builtin.clone();
    for o in overrides {
        let p = &o.price;
        file.models.retain(|m| {
            !(m.provider == p.provider
                && m.model == p.model
                && m.effective_from == p.effective_from)
        });
        file.models.push(p.clone());
    }
    file.models.sort_by(|a, b| {
        (&a.provider, &a.model, a.effective_from).cmp(&(&b.provider, &b.model, b.effective_from))
    });
    file
}

/// The price book in force: the built-in file and the live overrides.
pub async fn price_book(client: &Client, builtin: &PriceFile) -> Result<(PriceFile, PriceTable)> {
    let file = merge(builtin, &overrides(client).await?);
    let table = PriceTable::from_file(file.clone())
        .map_err(|e| Error::Integrity(format!("the price book does not load: {e}")))?;
    Ok((file, table))
}

/// Writes `price` as an override (a new version of the row for its key).
pub async fn write_override(client: &Client, price: &ModelPrice, by: &str) -> Result<()> {
    write_row(client, price, by, 0).await
}

/// Removes the override of this key (the built-in entry, if any, applies again). `false` when
/// there was none.
pub async fn delete_override(
    client: &Client,
    provider: &str,
    model: &str,
    effective_from: NaiveDate,
    by: &str,
) -> Result<bool> {
    let live = overrides(client).await?;
    let Some(o) = live.iter().find(|o| {
        o.price.provider == provider
            && o.price.model == model
            && o.price.effective_from == effective_from
    }) else {
        return Ok(false);
    };
    write_row(client, &o.price, by, 1).await?;
    Ok(true)
}

async fn write_row(client: &Client, price: &ModelPrice, by: &str, deleted: u8) -> Result<()> {
    let row = PriceOverrideRow {
        provider: price.provider.clone(),
        model: price.model.clone(),
        effective_from: price.effective_from,
        entry: serde_json::to_string(price)
            .map_err(|e| Error::Integrity(format!("price entry does not serialize: {e}")))?,
        created_by: by.to_string(),
        updated_at: now_second(),
        deleted,
        version: row_version(),
    };
    let mut insert = client.insert::<PriceOverrideRow>("price_overrides").await?;
    insert.write(&row).await?;
    insert.end().await?;
    Ok(())
}

/// A row of `model_prices` (migration 0003 + 0014's `entry`).
#[derive(Debug, Clone, Row, Serialize)]
struct ModelPriceRow {
    pricing_version: String,
    provider: String,
    model: String,
    #[serde(with = "clickhouse::serde::chrono::date")]
    effective_from: NaiveDate,
    input_per_1m: i64,
    cached_input_per_1m: Option<i64>,
    cache_write_per_1m: Option<i64>,
    output_per_1m: i64,
    reasoning_per_1m: Option<i64>,
    per_request_usd: Option<i64>,
    max_output_tokens: Option<u32>,
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    loaded_at: DateTime<Utc>,
    entry: String,
}

/// Writes every entry of `table` to `model_prices` under its version, unless that version is
/// there already. Idempotent (the table replaces rows of the same key).
pub async fn record_version(client: &Client, table: &PriceTable) -> Result<bool> {
    let known = read_query(
        client,
        "SELECT count() FROM model_prices WHERE pricing_version = ?",
    )
    .bind(table.version())
    .fetch_one::<u64>()
    .await?;
    if known > 0 {
        return Ok(false);
    }
    let loaded_at = now_second();
    let mut insert = client.insert::<ModelPriceRow>("model_prices").await?;
    for p in table.iter() {
        let nanos = |n: Option<usage_core::Nanos>| n.map(|n| n.get());
        insert
            .write(&ModelPriceRow {
                pricing_version: table.version().to_string(),
                provider: p.provider.clone(),
                model: p.model.clone(),
                effective_from: p.effective_from,
                input_per_1m: p.input.get(),
                cached_input_per_1m: nanos(p.cached_input),
                cache_write_per_1m: nanos(p.cache_write),
                output_per_1m: p.output.get(),
                reasoning_per_1m: nanos(p.reasoning),
                per_request_usd: nanos(p.per_request),
                max_output_tokens: p.max_output_tokens,
                loaded_at,
                entry: serde_json::to_string(p).unwrap_or_default(),
            })
            .await?;
    }
    insert.end().await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use usage_core::Nanos;

    fn day(d: &str) -> NaiveDate {
        usage_core::rfc3339::parse_day(d).unwrap()
    }

    #[test]
    fn an_override_replaces_its_key_and_adds_versions_otherwise() {
        let builtin = PriceFile {
            source: String::new(),
            vendor_aliases: Default::default(),
            models: vec![
                ModelPrice::new(
                    "openai",
                    "m",
                    day("2020-01-01"),
                    Nanos::new(1),
                    Nanos::new(2),
                ),
                ModelPrice::new(
                    "openai",
                    "n",
                    day("2020-01-01"),
                    Nanos::new(1),
                    Nanos::new(2),
                ),
            ],
        };
        let o = |model: &str, d: &str, input: i64| PriceOverride {
            price: ModelPrice::new("openai", model, day(d), Nanos::new(input), Nanos::new(2)),
            created_by: "admin".into(),
            updated_at: DateTime::UNIX_EPOCH,
        };
        let merged = merge(
            &builtin,
            &[o("m", "2020-01-01", 5), o("n", "2026-12-01", 7)],
        );
        let got: Vec<(String, String, i64)> = merged
            .models
            .iter()
            .map(|p| (p.model.clone(), p.effective_from.to_string(), p.input.get()))
            .collect();
        assert_eq!(
            got,
            [
                ("m".into(), "2020-01-01".into(), 5),
                ("n".into(), "2020-01-01".into(), 1),
                ("n".into(), "2026-12-01".into(), 7)
            ]
        );
        let a = PriceTable::from_file(builtin.clone()).unwrap();
        let b = PriceTable::from_file(merged).unwrap();
        assert_ne!(a.version(), b.version());
        assert_eq!(
            PriceTable::from_file(merge(&builtin, &[]))
                .unwrap()
                .version(),
            a.version()
        );
    }
}
