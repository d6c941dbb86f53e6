//! `usage_events` rows (migration 0001) and their conversion from and to `UsageRecord`.

use chrono::{DateTime, Timelike, Utc};
use std::collections::BTreeMap;

use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};
use usage_core::{CostSource, Endpoint, ErrorClass, Nanos, UsageRecord, UsageSource};
use uuid::Uuid;

use crate::error::Result;

/// One row of `usage_events`, field for field in the table's column order (RowBinary is
/// positional: the order here is the order of `0001_usage_events.sql`).
#[derive(Clone, Debug, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct UsageEventRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub event_id: Uuid,
    pub schema_version: u16,
    /// Second precision in the table.
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    pub ts: DateTime<Utc>,
    pub latency_ms: u32,
    pub ttft_ms: Option<u32>,
    pub upstream_ms: u32,
    pub org_id: String,
    pub user_id: String,
    pub app_id: String,
    pub key_id: String,
    /// Tag keys in order, parallel to `tag_values` (Map does not exist on 18.16).
    pub tag_keys: Vec<String>,
    pub tag_values: Vec<String>,
    pub provider: String,
    pub model_requested: String,
    pub model_served: String,
    pub endpoint: String,
    pub task_type: String,
    /// `UInt8` in the table.
    pub stream: bool,
    pub edge_region: String,
    pub status_code: u16,
    pub error_class: String,
    pub input_tokens: u32,
    pub output_tokens: u32,
    pub cached_input_tokens: u32,
    pub cache_write_tokens: u32,
    pub reasoning_tokens: u32,
    pub usage_source: String,
    /// `Decimal(18,9)` USD, whose raw value is nano-USD.
    pub cost_nusd: i64,
    pub cost_source: String,
    pub pricing_version: String,
    pub request_bytes: u64,
    pub response_bytes: u64,
    // Migration 0014.
    pub audio_input_tokens: u32,
    pub image_input_tokens: u32,
    pub audio_output_tokens: u32,
    pub image_output_tokens: u32,
    pub web_search_calls: u32,
    pub file_search_calls: u32,
    pub service_tier_requested: String,
    pub service_tier: String,
    /// The collector batch the row came in ('' when not written by the collector).
    pub batch_id: String,
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    pub inserted_at: DateTime<Utc>,
}

impl UsageEventRow {
    /// The row for `record`, as written by collector batch `batch_id` at `inserted_at`.
    pub fn from_record(record: &UsageRecord, batch_id: &str, inserted_at: DateTime<Utc>) -> Self {
        let mut row = UsageEventRow::from(record);
        row.batch_id = batch_id.to_string();
        row.inserted_at = whole_seconds(inserted_at);
        row
    }
}

impl From<&UsageRecord> for UsageEventRow {
    /// The row for `record` with no batch (`batch_id = ''`) and `inserted_at` = the record's
    /// `ts`. `ts` is truncated to the second, as the table stores it.
    fn from(r: &UsageRecord) -> Self {
        let ts = whole_seconds(r.ts);
        UsageEventRow {
            event_id: r.event_id,
            schema_version: r.schema_version,
            ts,
            latency_ms: r.latency_ms,
            ttft_ms: r.ttft_ms,
            upstream_ms: r.upstream_ms,
            org_id: r.org_id.clone(),
            user_id: r.user_id.clone(),
            app_id: r.app_id.clone(),
            key_id: r.key_id.clone(),
            tag_keys: r.tags.keys().cloned().collect(),
            tag_values: r.tags.values().cloned().collect(),
            provider: r.provider.clone(),
            model_requested: r.model_requested.clone(),
            model_served: r.model_served.clone(),
            endpoint: r.endpoint.as_str().to_string(),
            task_type: r.task_type.clone(),
            stream: r.stream,
            edge_region: r.edge_region.clone(),
            status_code: r.status_code,
            error_class: r.error_class.as_str().to_string(),
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cached_input_tokens: r.cached_input_tokens,
            cache_write_tokens: r.cache_write_tokens,
            reasoning_tokens: r.reasoning_tokens,
            usage_source: r.usage_source.as_str().to_string(),
            cost_nusd: r.cost_nusd.get(),
            cost_source: r.cost_source.as_str().to_string(),
            pricing_version: r.pricing_version.clone(),
            request_bytes: r.request_bytes,
            response_bytes: r.response_bytes,
            audio_input_tokens: r.audio_input_tokens,
            image_input_tokens: r.image_input_tokens,
            audio_output_tokens: r.audio_output_tokens,
            image_output_tokens: r.image_output_tokens,
            web_search_calls: r.web_search_calls,
            file_search_calls: r.file_search_calls,
            service_tier_requested: r.service_tier_requested.clone(),
            service_tier: r.service_tier.clone(),
            batch_id: String::new(),
            inserted_at: ts,
        }
    }
}

/// A stored row that is not a valid `UsageRecord` v1 (an enum text this build does not know,
/// or tag arrays of different lengths).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("usage_events row {event_id}: {field} {reason}")]
pub struct RecordConversionError {
    pub event_id: Uuid,
    pub field: &'static str,
    pub reason: String,
}

impl TryFrom<&UsageEventRow> for UsageRecord {
    type Error = RecordConversionError;

    fn try_from(row: &UsageEventRow) -> Result<Self, Self::Error> {
        let bad = |field: &'static str, reason: String| RecordConversionError {
            event_id: row.event_id,
            field,
            reason,
        };
        let unknown =
            |field: &'static str, text: &str| bad(field, format!("has unknown value {text:?}"));
        if row.tag_keys.len() != row.tag_values.len() {
            return Err(bad(
                "tag_keys",
                format!(
                    "has {} keys but {} values",
                    row.tag_keys.len(),
                    row.tag_values.len()
                ),
            ));
        }
        let tags: BTreeMap<String, String> = row
            .tag_keys
            .iter()
            .cloned()
            .zip(row.tag_values.iter().cloned())
            .collect();
        Ok(UsageRecord {
            event_id: row.event_id,
            schema_version: row.schema_version,
            ts: row.ts,
            latency_ms: row.latency_ms,
            ttft_ms: row.ttft_ms,
            upstream_ms: row.upstream_ms,
            org_id: row.org_id.clone(),
            user_id: row.user_id.clone(),
            app_id: row.app_id.clone(),
            key_id: row.key_id.clone(),
            tags,
            provider: row.provider.clone(),
            model_requested: row.model_requested.clone(),
            model_served: row.model_served.clone(),
            endpoint: Endpoint::parse(&row.endpoint)
                .ok_or_else(|| unknown("endpoint", &row.endpoint))?,
            task_type: row.task_type.clone(),
            stream: row.stream,
            edge_region: row.edge_region.clone(),
            status_code: row.status_code,
            error_class: ErrorClass::parse(&row.error_class)
                .ok_or_else(|| unknown("error_class", &row.error_class))?,
            input_tokens: row.input_tokens,
            output_tokens: row.output_tokens,
            cached_input_tokens: row.cached_input_tokens,
            cache_write_tokens: row.cache_write_tokens,
            reasoning_tokens: row.reasoning_tokens,
            usage_source: UsageSource::parse(&row.usage_source)
                .ok_or_else(|| unknown("usage_source", &row.usage_source))?,
            cost_nusd: Nanos::new(row.cost_nusd),
            cost_source: CostSource::parse(&row.cost_source)
                .ok_or_else(|| unknown("cost_source", &row.cost_source))?,
            pricing_version: row.pricing_version.clone(),
            request_bytes: row.request_bytes,
            response_bytes: row.response_bytes,
            audio_input_tokens: row.audio_input_tokens,
            image_input_tokens: row.image_input_tokens,
            audio_output_tokens: row.audio_output_tokens,
            image_output_tokens: row.image_output_tokens,
            web_search_calls: row.web_search_calls,
            file_search_calls: row.file_search_calls,
            service_tier_requested: row.service_tier_requested.clone(),
            service_tier: row.service_tier.clone(),
        })
    }
}

/// Writes `rows` to `usage_events` in one INSERT (one RowBinary request; the server applies it
/// and both rollup views before it answers).
pub async fn insert_events(client: &Client, rows: &[UsageEventRow]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = client.insert::<UsageEventRow>("usage_events").await?;
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await?;
    Ok(())
}

fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(0).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;
    use usage_core::utc;

    fn record() -> UsageRecord {
        UsageRecord {
            event_id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001),
            schema_version: usage_core::SCHEMA_VERSION,
            ts: (utc(2026, 11, 1, 12, 0, 0) + TimeDelta::milliseconds(250)),
            latency_ms: 850,
            ttft_ms: Some(120),
            upstream_ms: 800,
            org_id: "org_acme".into(),
            user_id: "u_42".into(),
            app_id: "support-bot".into(),
            key_id: "key_1".into(),
            tags: BTreeMap::from([("b".into(), "2".into()), ("a".into(), "1".into())]),
            provider: "openai".into(),
            model_requested: "gpt-4o-mini".into(),
            model_served: "gpt-4o-mini-2024-07-18".into(),
            endpoint: Endpoint::ChatCompletions,
            task_type: "chat".into(),
            stream: true,
            edge_region: "FRA".into(),
            status_code: 200,
            error_class: ErrorClass::None,
            input_tokens: 1000,
            output_tokens: 200,
            cached_input_tokens: 100,
            cache_write_tokens: 0,
            reasoning_tokens: 50,
            audio_input_tokens: 10,
            image_input_tokens: 20,
            audio_output_tokens: 5,
            image_output_tokens: 0,
            web_search_calls: 2,
            file_search_calls: 1,
            service_tier_requested: "auto".into(),
            service_tier: "flex".into(),
            usage_source: UsageSource::Provider,
            cost_nusd: Nanos::new(273_750),
            cost_source: CostSource::PriceTable,
            pricing_version: "pt-0123456789ab".into(),
            request_bytes: 512,
            response_bytes: 2048,
        }
    }

    #[test]
    fn conversion_round_trips_except_sub_second_time() {
        let r = record();
        let row = UsageEventRow::from_record(
            &r,
            "batch-1",
            utc(2026, 11, 1, 12, 0, 5) + TimeDelta::milliseconds(900),
        );
        assert_eq!(row.tag_keys, ["a", "b"]);
        assert_eq!(row.tag_values, ["1", "2"]);
        assert_eq!(row.ts, utc(2026, 11, 1, 12, 0, 0));
        assert_eq!(row.inserted_at, utc(2026, 11, 1, 12, 0, 5));
        assert_eq!(row.batch_id, "batch-1");
        let back = UsageRecord::try_from(&row).unwrap();
        assert_eq!(
            back,
            UsageRecord {
                ts: utc(2026, 11, 1, 12, 0, 0),
                ..r
            }
        );
    }

    #[test]
    fn unknown_texts_and_ragged_tags_are_errors() {
        let mut row = UsageEventRow::from(&record());
        row.error_class = "exploded".into();
        let err = UsageRecord::try_from(&row).unwrap_err();
        assert_eq!(err.field, "error_class");
        let mut row = UsageEventRow::from(&record());
        row.tag_values.pop();
        assert_eq!(UsageRecord::try_from(&row).unwrap_err().field, "tag_keys");
    }
}
