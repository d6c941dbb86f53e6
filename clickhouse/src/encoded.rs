//! `usage_events` rows pre-encoded in ClickHouse's RowBinary format, so that a record is
//! encoded once — when the collector accepts it — and the sink only copies bytes.
//!
//! An [`EncodedEvent`] holds every column of `usage_events` except the last two, the collector
//! bookkeeping `batch_id` and `inserted_at`, which depend on the batch the row is sent in;
//! [`insert_encoded`] appends them to each row as it streams the INSERT. The bytes are exactly
//! what the `clickhouse` crate's RowBinary serializer writes for [`UsageEventRow`] (tested
//! against it and against the server), column for column in the order of
//! `0001_usage_events.sql`:
//!
//! ```text
//! UUID          two UInt64 LE: the high half, then the low half
//! UInt8/16/32/64, Decimal(18,9) (as Int64), DateTime (UInt32 seconds)   little-endian
//! Nullable(T)   one byte (1 = NULL), then T unless NULL
//! String, LowCardinality(String)   LEB128 length, then the bytes
//! Array(String) LEB128 count, then each String
//! ```
//!
//! `event_id` is the first column and `ts` sits at a fixed offset after it, so the sink reads
//! both without decoding a row; [`EncodedEvent::decode`] restores the whole row (the dead-letter
//! path and tests).

use bytes::Bytes;
use chrono::{DateTime, Utc};
use clickhouse::Client;
use usage_core::UsageRecord;
use uuid::Uuid;

use crate::error::Result;
use crate::events::UsageEventRow;

/// Offset of `ts` (after `event_id` UUID and `schema_version` UInt16).
const TS_OFFSET: usize = 18;
/// One `usage_events` row without `batch_id` and `inserted_at`, in RowBinary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedEvent(Bytes);

/// Why bytes are not an encoded row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("encoded usage_events row: {0}")]
pub struct DecodeError(String);

impl EncodedEvent {
    /// Encodes `record` as the row [`UsageEventRow::from`] would give (ts truncated to the
    /// second), appending to `out`; returns the range it wrote.
    pub fn encode_into(record: &UsageRecord, out: &mut Vec<u8>) -> std::ops::Range<usize> {
        let start = out.len();
        let (hi, lo) = record.event_id.as_u64_pair();
        out.extend_from_slice(&hi.to_le_bytes());
        out.extend_from_slice(&lo.to_le_bytes());
        out.extend_from_slice(&record.schema_version.to_le_bytes());
        out.extend_from_slice(&seconds(record.ts).to_le_bytes());
        out.extend_from_slice(&record.latency_ms.to_le_bytes());
        match record.ttft_ms {
            Some(v) => {
                out.push(0);
                out.extend_from_slice(&v.to_le_bytes());
            }
            None => out.push(1),
        }
        out.extend_from_slice(&record.upstream_ms.to_le_bytes());
        for s in [
            &record.org_id,
            &record.user_id,
            &record.app_id,
            &record.key_id,
        ] {
            string(out, s);
        }
        leb128(out, record.tags.len() as u64);
        for k in record.tags.keys() {
            string(out, k);
        }
        leb128(out, record.tags.len() as u64);
        for v in record.tags.values() {
            string(out, v);
        }
        for s in [
            record.provider.as_str(),
            record.model_requested.as_str(),
            record.model_served.as_str(),
            record.endpoint.as_str(),
            record.task_type.as_str(),
        ] {
            string(out, s);
        }
        out.push(u8::from(record.stream));
        string(out, &record.edge_region);
        out.extend_from_slice(&record.status_code.to_le_bytes());
        string(out, record.error_class.as_str());
        for n in [
            record.input_tokens,
            record.output_tokens,
            record.cached_input_tokens,
            record.cache_write_tokens,
            record.reasoning_tokens,
        ] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        string(out, record.usage_source.as_str());
        out.extend_from_slice(&record.cost_nusd.get().to_le_bytes());
        string(out, record.cost_source.as_str());
        string(out, &record.pricing_version);
        out.extend_from_slice(&record.request_bytes.to_le_bytes());
        out.extend_from_slice(&record.response_bytes.to_le_bytes());
        for n in [
            record.audio_input_tokens,
            record.image_input_tokens,
            record.audio_output_tokens,
            record.image_output_tokens,
            record.web_search_calls,
            record.file_search_calls,
        ] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        string(out, &record.service_tier_requested);
        string(out, &record.service_tier);
        start..out.len()
    }

    /// `record` encoded on its own.
    pub fn from_record(record: &UsageRecord) -> EncodedEvent {
        let mut out = Vec::with_capacity(256);
        EncodedEvent::encode_into(record, &mut out);
        EncodedEvent(Bytes::from(out))
    }

    /// Wraps bytes produced by [`EncodedEvent::encode_into`], after checking that they decode.
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Result<EncodedEvent, DecodeError> {
        let event = EncodedEvent(bytes.into());
        event.decode()?;
        Ok(event)
    }

    /// Wraps bytes from a trusted store (the checksummed spool) without decoding them; only
    /// checks that `event_id` and `ts` can be read. A damaged row is refused by the server.
    pub fn from_trusted(bytes: Bytes) -> Result<EncodedEvent, DecodeError> {
        if bytes.len() < TS_OFFSET + 4 {
            return Err(DecodeError(format!("{} bytes is too short", bytes.len())));
        }
        Ok(EncodedEvent(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The row's `event_id`, read in place.
    pub fn event_id(&self) -> Uuid {
        EncodedEvent::event_id_in(&self.0).unwrap_or_default()
    }

    /// The `event_id` at the start of encoded row bytes (`None` if too short to hold one).
    pub fn event_id_in(row: &[u8]) -> Option<Uuid> {
        let hi = u64::from_le_bytes(row.get(0..8)?.try_into().ok()?);
        let lo = u64::from_le_bytes(row.get(8..16)?.try_into().ok()?);
        Some(Uuid::from_u64_pair(hi, lo))
    }

    /// The row's `ts` (whole seconds), read in place.
    pub fn ts(&self) -> DateTime<Utc> {
        let b = &self.0[TS_OFFSET..TS_OFFSET + 4];
        let secs = u32::from_le_bytes(b.try_into().unwrap_or_default());
        DateTime::from_timestamp_secs(i64::from(secs)).unwrap_or(DateTime::UNIX_EPOCH)
    }

    /// The whole row (`batch_id` empty and `inserted_at` = `ts`, as [`UsageEventRow::from`]).
    pub fn decode(&self) -> Result<UsageEventRow, DecodeError> {
        decode_layout(&self.0, Layout::Current)
    }

    /// Re-encodes bytes written in the layout before migration 0014 (the collector's spool
    /// payload format 2) in the current one: the columns 0014 added get their defaults.
    pub fn upgrade_v1(bytes: &[u8]) -> Result<EncodedEvent, DecodeError> {
        let row = decode_layout(bytes, Layout::BeforeCostColumns)?;
        let record = UsageRecord::try_from(&row).map_err(|e| DecodeError(e.to_string()))?;
        Ok(EncodedEvent::from_record(&record))
    }
}

/// The column lists a stored row may have been encoded with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Migrations 0001–0013: up to `response_bytes`.
    BeforeCostColumns,
    /// With 0014's columns.
    Current,
}

fn decode_layout(bytes: &[u8], layout: Layout) -> Result<UsageEventRow, DecodeError> {
    {
        let mut r = Reader { b: bytes, at: 0 };
        let event_id = {
            let hi = r.u64()?;
            let lo = r.u64()?;
            Uuid::from_u64_pair(hi, lo)
        };
        let schema_version = r.u16()?;
        let ts = DateTime::from_timestamp_secs(i64::from(r.u32()?))
            .ok_or_else(|| DecodeError("ts: out of range".into()))?;
        let latency_ms = r.u32()?;
        let ttft_ms = match r.u8()? {
            0 => Some(r.u32()?),
            1 => None,
            n => return Err(DecodeError(format!("ttft_ms: null flag {n}"))),
        };
        let upstream_ms = r.u32()?;
        let (org_id, user_id, app_id, key_id) =
            (r.string()?, r.string()?, r.string()?, r.string()?);
        let tag_keys = r.strings()?;
        let tag_values = r.strings()?;
        let row = UsageEventRow {
            event_id,
            schema_version,
            ts,
            latency_ms,
            ttft_ms,
            upstream_ms,
            org_id,
            user_id,
            app_id,
            key_id,
            tag_keys,
            tag_values,
            provider: r.string()?,
            model_requested: r.string()?,
            model_served: r.string()?,
            endpoint: r.string()?,
            task_type: r.string()?,
            stream: r.u8()? != 0,
            edge_region: r.string()?,
            status_code: r.u16()?,
            error_class: r.string()?,
            input_tokens: r.u32()?,
            output_tokens: r.u32()?,
            cached_input_tokens: r.u32()?,
            cache_write_tokens: r.u32()?,
            reasoning_tokens: r.u32()?,
            usage_source: r.string()?,
            cost_nusd: r.u64()? as i64,
            cost_source: r.string()?,
            pricing_version: r.string()?,
            request_bytes: r.u64()?,
            response_bytes: r.u64()?,
            audio_input_tokens: 0,
            image_input_tokens: 0,
            audio_output_tokens: 0,
            image_output_tokens: 0,
            web_search_calls: 0,
            file_search_calls: 0,
            service_tier_requested: String::new(),
            service_tier: String::new(),
            batch_id: String::new(),
            inserted_at: ts,
        };
        let mut row = row;
        if layout == Layout::Current {
            row.audio_input_tokens = r.u32()?;
            row.image_input_tokens = r.u32()?;
            row.audio_output_tokens = r.u32()?;
            row.image_output_tokens = r.u32()?;
            row.web_search_calls = r.u32()?;
            row.file_search_calls = r.u32()?;
            row.service_tier_requested = r.string()?;
            row.service_tier = r.string()?;
        }
        if r.at != bytes.len() {
            return Err(DecodeError(format!(
                "{} bytes left after the last column",
                bytes.len() - r.at
            )));
        }
        Ok(row)
    }
}

/// Writes `rows` to `usage_events` in one INSERT, each followed by `batch_id` and
/// `inserted_at` (whole seconds). Rows are streamed in chunks of about 1 MiB.
///
/// `query_id`, when given, names the INSERT on the server (`system.processes`), so that whoever
/// retries it can first wait for an attempt the server may still be running.
pub async fn insert_encoded(
    client: &Client,
    rows: &[EncodedEvent],
    batch_id: &str,
    inserted_at: DateTime<Utc>,
    query_id: Option<&str>,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut suffix = Vec::with_capacity(batch_id.len() + 8);
    string(&mut suffix, batch_id);
    suffix.extend_from_slice(&seconds(inserted_at).to_le_bytes());
    const CHUNK: usize = 1 << 20;
    let mut insert = client.insert_formatted_with("INSERT INTO usage_events FORMAT RowBinary");
    if let Some(id) = query_id {
        insert = insert.with_setting("query_id", id);
    }
    let mut chunk = Vec::with_capacity(CHUNK + 1024);
    for row in rows {
        chunk.extend_from_slice(row.as_bytes());
        chunk.extend_from_slice(&suffix);
        if chunk.len() >= CHUNK {
            insert
                .send(Bytes::from(std::mem::replace(
                    &mut chunk,
                    Vec::with_capacity(CHUNK + 1024),
                )))
                .await?;
        }
    }
    if !chunk.is_empty() {
        insert.send(Bytes::from(chunk)).await?;
    }
    insert.end().await?;
    Ok(())
}

fn seconds(t: DateTime<Utc>) -> u32 {
    u32::try_from(t.timestamp()).unwrap_or(0)
}

fn leb128(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn string(out: &mut Vec<u8>, s: &str) {
    leb128(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| DecodeError(format!("ends inside a column at byte {}", self.at)))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().unwrap_or_default(),
        ))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or_default(),
        ))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or_default(),
        ))
    }

    fn leb128(&mut self) -> Result<u64, DecodeError> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            n |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(DecodeError("length longer than 64 bits".into()))
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let len = usize::try_from(self.leb128()?).unwrap_or(usize::MAX);
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError("a string is not UTF-8".into()))
    }

    fn strings(&mut self) -> Result<Vec<String>, DecodeError> {
        let n = self.leb128()?;
        if n > self.b.len() as u64 {
            return Err(DecodeError(format!("array of {n} strings in a short row")));
        }
        (0..n).map(|_| self.string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{Shape, Synthetic};
    use chrono::TimeDelta;

    /// Synthetic records varied over every optional part: tags, no ttft, no served model,
    /// long and non-ASCII strings (LEB128 lengths past one byte).
    fn records() -> Vec<UsageRecord> {
        let shape = Shape {
            orgs: 3,
            users_per_org: 5,
            apps_per_org: 2,
            start: usage_core::utc(2026, 1, 1, 0, 0, 0),
            span: TimeDelta::days(3),
        };
        Synthetic::new(7, 300, shape)
            .enumerate()
            .map(|(i, mut r)| {
                if i % 3 == 0 {
                    r.tags.insert("team".into(), format!("täam-{i}"));
                    r.tags.insert("feature".into(), "x".repeat(200 + i));
                }
                if i % 5 == 0 {
                    r.ttft_ms = None;
                    r.model_served.clear();
                }
                if i % 7 == 0 {
                    r.audio_input_tokens = r.input_tokens / 7;
                    r.image_output_tokens = r.output_tokens / 9;
                    r.web_search_calls = 2;
                    r.file_search_calls = 300;
                    r.service_tier_requested = "auto".into();
                    r.service_tier = "priority".into();
                }
                r
            })
            .collect()
    }

    #[test]
    fn decode_restores_the_row_from_record() {
        for r in records() {
            let e = EncodedEvent::from_record(&r);
            assert_eq!(e.decode().unwrap(), UsageEventRow::from(&r));
            assert_eq!(e.event_id(), r.event_id);
            assert_eq!(e.ts(), UsageEventRow::from(&r).ts);
        }
    }

    #[test]
    fn truncated_or_padded_bytes_do_not_decode() {
        let r = &records()[3];
        let bytes = EncodedEvent::from_record(r).as_bytes().to_vec();
        for cut in [0, 10, TS_OFFSET + 3, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                EncodedEvent::from_bytes(Bytes::copy_from_slice(&bytes[..cut])).is_err(),
                "cut at {cut}"
            );
        }
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(EncodedEvent::from_bytes(Bytes::from(padded)).is_err());
        assert!(EncodedEvent::from_bytes(Bytes::from(bytes)).is_ok());
    }

    #[test]
    fn lengths_use_leb128() {
        let mut out = Vec::new();
        for n in [0u64, 127, 128, 300, 1 << 40] {
            out.clear();
            leb128(&mut out, n);
            let mut r = Reader { b: &out, at: 0 };
            assert_eq!(r.leb128().unwrap(), n);
            assert_eq!(r.at, out.len());
        }
        leb128(&mut out, 300);
        assert_eq!(&out[out.len() - 2..], &[0xac, 0x02]);
    }
}

#[cfg(test)]
mod upgrade_tests {
    use super::*;
    use crate::synthetic::{Shape, Synthetic};
    use chrono::TimeDelta;

    /// A row spooled before migration 0014 (its bytes end at `response_bytes`) reads as the
    /// same record with 0014's columns at their defaults.
    #[test]
    fn rows_encoded_before_0014_are_upgraded_with_defaults() {
        let shape = Shape {
            orgs: 2,
            users_per_org: 2,
            apps_per_org: 1,
            start: usage_core::utc(2026, 1, 1, 0, 0, 0),
            span: TimeDelta::days(1),
        };
        for record in Synthetic::new(7, 50, shape) {
            let expected = EncodedEvent::from_record(&record);
            // 0014's columns at their defaults: six UInt32 zeros and two empty strings.
            let tail = 6 * 4 + 2;
            let bytes = expected.as_bytes();
            assert!(bytes[bytes.len() - tail..].iter().all(|&b| b == 0));
            let old = &bytes[..bytes.len() - tail];
            assert_eq!(EncodedEvent::upgrade_v1(old).unwrap(), expected);
            assert!(
                EncodedEvent::upgrade_v1(bytes).is_err(),
                "a current row is not an old one"
            );
        }
    }
}
