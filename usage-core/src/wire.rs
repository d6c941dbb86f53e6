//! The edge → collector wire format: batches of records and their HMAC signature.
//!
//! A batch is a JSON array of [`UsageRecord`]s or NDJSON (one record per line), optionally gzip'd
//! (`content-encoding: gzip`). It is signed with
//! `x-tollgate-signature: t=<unix seconds>,v1=<hex hmac-sha256(secret, t + "." + body)>` over
//! the bytes as sent (compressed, if they are); the collector accepts a timestamp within
//! [`REPLAY_WINDOW_SECS`] of its clock. Several `v1=` values may be present and several secrets
//! may be tried, so that secrets can be rotated without downtime.
//!
//! Decoding separates the two kinds of failure: a body that is not a batch at all is a
//! [`WireError`] (the whole request is refused), while a record that does not decode is a
//! [`RecordError`] at its index, naming the field — the rest of the batch is still accepted.

use std::io::{Read, Write};

use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::value::RawValue;
use sha2::Sha256;

use crate::record::UsageRecord;

/// The request header that carries the signature.
pub const SIGNATURE_HEADER: &str = "x-tollgate-signature";
/// How far a batch's timestamp may be from the collector's clock, either way.
pub const REPLAY_WINDOW_SECS: i64 = 300;

/// How a batch body is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchFormat {
    JsonArray,
    Ndjson,
}

impl BatchFormat {
    pub const fn content_type(self) -> &'static str {
        match self {
            BatchFormat::JsonArray => "application/json",
            BatchFormat::Ndjson => "application/x-ndjson",
        }
    }
}

/// A body that is not a usable batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    #[error("body is empty")]
    Empty,
    #[error("body is not a JSON array or NDJSON of records: {0}")]
    NotABatch(String),
    #[error("batch has {count} records (at most {max})")]
    TooManyRecords { count: usize, max: usize },
    #[error("body is not valid gzip: {0}")]
    BadGzip(String),
    #[error("body decompresses to more than {max} bytes")]
    TooLarge { max: usize },
}

/// One record of a batch that could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecordError {
    /// Position in the batch (0-based; the line for NDJSON, blank lines skipped).
    pub index: usize,
    /// Which check failed, naming the field (`input_tokens: invalid value: …`).
    pub reason: String,
}

/// One element of a decoded batch: the record, or why not, with its raw text for the
/// dead-letter table.
#[derive(Debug)]
pub struct DecodedRecord<'a> {
    pub index: usize,
    pub raw: &'a str,
    pub record: Result<UsageRecord, RecordError>,
}

/// Encodes records as a batch body.
pub fn encode_batch(records: &[UsageRecord], format: BatchFormat) -> Vec<u8> {
    // Serializing these types cannot fail: every field is a plain value or string map.
    match format {
        BatchFormat::JsonArray => serde_json::to_vec(records).unwrap_or_default(),
        BatchFormat::Ndjson => {
            let mut out = Vec::with_capacity(records.len() * 700);
            for r in records {
                if serde_json::to_writer(&mut out, r).is_ok() {
                    out.push(b'\n');
                }
            }
            out
        }
    }
}

/// gzip at the default level.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(bytes);
    enc.finish().unwrap_or_default()
}

/// Decompresses a gzip body, refusing to inflate past `max` bytes (a gzip bomb is refused, not
/// buffered).
pub fn gunzip(bytes: &[u8], max: usize) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(4).min(max));
    let mut dec = flate2::read::GzDecoder::new(bytes).take(max as u64 + 1);
    dec.read_to_end(&mut out)
        .map_err(|e| WireError::BadGzip(e.to_string()))?;
    if out.len() > max {
        return Err(WireError::TooLarge { max });
    }
    Ok(out)
}

/// Decodes a batch body (already decompressed), record by record.
pub fn decode_batch(body: &[u8], max_records: usize) -> Result<Vec<DecodedRecord<'_>>, WireError> {
    let text =
        std::str::from_utf8(body).map_err(|e| WireError::NotABatch(format!("not UTF-8 ({e})")))?;
    let trimmed = text.trim_start();
    match trimmed.as_bytes().first() {
        None => Err(WireError::Empty),
        Some(b'[') => {
            let elems: Vec<&RawValue> =
                serde_json::from_str(trimmed).map_err(|e| WireError::NotABatch(e.to_string()))?;
            if elems.len() > max_records {
                return Err(WireError::TooManyRecords {
                    count: elems.len(),
                    max: max_records,
                });
            }
            if elems.is_empty() {
                return Err(WireError::Empty);
            }
            Ok(elems
                .into_iter()
                .enumerate()
                .map(|(index, raw)| decode_one(index, raw.get()))
                .collect())
        }
        Some(b'{') => {
            let lines: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            if lines.len() > max_records {
                return Err(WireError::TooManyRecords {
                    count: lines.len(),
                    max: max_records,
                });
            }
            Ok(lines
                .into_iter()
                .enumerate()
                .map(|(index, raw)| decode_one(index, raw))
                .collect())
        }
        Some(_) => Err(WireError::NotABatch(
            "expected `[` (JSON array) or `{` (NDJSON)".to_string(),
        )),
    }
}

fn decode_one(index: usize, raw: &str) -> DecodedRecord<'_> {
    // The fast path for good records; only a failure pays for tracking the field path.
    let record = serde_json::from_str::<UsageRecord>(raw).map_err(|_| {
        let de = &mut serde_json::Deserializer::from_str(raw);
        let reason = match serde_path_to_error::deserialize::<_, UsageRecord>(de) {
            Err(e) => {
                let path = e.path().to_string();
                let inner = e.into_inner();
                if path == "." || path.is_empty() {
                    inner.to_string()
                } else {
                    format!("{path}: {inner}")
                }
            }
            Ok(_) => "record does not decode".to_string(),
        };
        RecordError { index, reason }
    });
    DecodedRecord { index, raw, record }
}

/// Why a signature was refused. Messages are safe to return to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    #[error("missing {SIGNATURE_HEADER} header")]
    Missing,
    #[error("malformed {SIGNATURE_HEADER} header: {0}")]
    Malformed(&'static str),
    #[error("signature timestamp is {age_secs} s from the collector's clock (window is {window_secs} s)")]
    Stale { age_secs: i64, window_secs: i64 },
    #[error("signature does not match the body")]
    Mismatch,
}

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so the fallback is never taken.
    let mut m =
        HmacSha256::new_from_slice(secret).unwrap_or_else(|_| HmacSha256::new(&Default::default()));
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The header value signing `body` at `timestamp` (unix seconds).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let tag = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(tag))
}

/// [`sign`] with every secret in one header (`t=…,v1=…,v1=…`), so that a receiver holding any
/// one of them verifies it: what a sender does while a secret is rotated.
pub fn sign_with_each(secrets: &[&[u8]], timestamp: i64, body: &[u8]) -> String {
    let mut header = format!("t={timestamp}");
    for secret in secrets {
        let tag = mac(secret, timestamp, body).finalize().into_bytes();
        header.push_str(",v1=");
        header.push_str(&hex::encode(tag));
    }
    header
}

/// Verifies a signature header against `body` with any of `secrets`, at `now` (unix seconds).
/// The comparison is constant-time.
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secrets: &[&[u8]],
    now: i64,
    window_secs: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut tags = Vec::new();
    for part in header.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed("expected t=<unix>,v1=<hex>"))?;
        match k {
            "t" => {
                timestamp = Some(
                    v.parse::<i64>()
                        .map_err(|_| SignatureError::Malformed("t is not a unix timestamp"))?,
                )
            }
            "v1" => {
                tags.push(hex::decode(v).map_err(|_| SignatureError::Malformed("v1 is not hex"))?)
            }
            _ => {} // unknown schemes are ignored, as Stripe-style headers do
        }
    }
    let t = timestamp.ok_or(SignatureError::Malformed("missing t="))?;
    if tags.is_empty() {
        return Err(SignatureError::Malformed("missing v1="));
    }
    let age = now.saturating_sub(t);
    if age.abs() > window_secs {
        return Err(SignatureError::Stale {
            age_secs: age,
            window_secs,
        });
    }
    let ok = secrets.iter().any(|secret| {
        tags.iter()
            .any(|tag| mac(secret, t, body).verify_slice(tag).is_ok())
    });
    if ok {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::sample;

    #[test]
    fn both_layouts_round_trip() {
        let mut b = sample();
        b.event_id = uuid::Uuid::from_u128(2);
        let records = vec![sample(), b];
        for format in [BatchFormat::JsonArray, BatchFormat::Ndjson] {
            let body = encode_batch(&records, format);
            let decoded: Vec<_> = decode_batch(&body, 10)
                .unwrap()
                .into_iter()
                .map(|d| d.record.unwrap())
                .collect();
            assert_eq!(decoded, records, "{format:?}");
        }
    }

    #[test]
    fn a_bad_record_is_rejected_at_its_index_naming_the_field() {
        let good = serde_json::to_string(&sample()).unwrap();
        let mut bad: serde_json::Value = serde_json::from_str(&good).unwrap();
        bad["input_tokens"] = (-3).into();
        let body = format!("{good}\n{bad}\n{good}\n");
        let decoded = decode_batch(body.as_bytes(), 10).unwrap();
        assert!(decoded[0].record.is_ok() && decoded[2].record.is_ok());
        let err = decoded[1].record.as_ref().unwrap_err();
        assert_eq!(err.index, 1);
        assert!(
            err.reason.starts_with("input_tokens: invalid value"),
            "{}",
            err.reason
        );
        assert!(decoded[1].raw.contains("\"input_tokens\":-3"));

        let body = format!("[{good}, {{\"event_id\": 5}}]");
        let decoded = decode_batch(body.as_bytes(), 10).unwrap();
        let err = decoded[1].record.as_ref().unwrap_err();
        assert!(
            err.reason.starts_with("event_id: invalid type"),
            "{}",
            err.reason
        );

        let body = format!("{good}\nnot json\n");
        let decoded = decode_batch(body.as_bytes(), 10).unwrap();
        assert!(decoded[1].record.is_err());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["surprise"] = 1.into();
        let body = serde_json::to_vec(&vec![v]).unwrap();
        let err = decode_batch(&body, 10)
            .unwrap()
            .remove(0)
            .record
            .unwrap_err();
        assert!(
            err.reason.contains("unknown field `surprise`"),
            "{}",
            err.reason
        );
    }

    #[test]
    fn bodies_that_are_not_batches() {
        assert_eq!(decode_batch(b"  ", 10).unwrap_err(), WireError::Empty);
        assert_eq!(decode_batch(b"[]", 10).unwrap_err(), WireError::Empty);
        assert!(matches!(
            decode_batch(b"[1,", 10),
            Err(WireError::NotABatch(_))
        ));
        assert!(matches!(
            decode_batch(b"hello", 10),
            Err(WireError::NotABatch(_))
        ));
        assert!(matches!(
            decode_batch(&[0xff, 0xfe], 10),
            Err(WireError::NotABatch(_))
        ));
        let body = encode_batch(&[sample(), sample(), sample()], BatchFormat::Ndjson);
        assert_eq!(
            decode_batch(&body, 2).unwrap_err(),
            WireError::TooManyRecords { count: 3, max: 2 }
        );
    }

    #[test]
    fn gzip_round_trips_and_bombs_are_refused() {
        let body = encode_batch(&[sample()], BatchFormat::JsonArray);
        assert_eq!(gunzip(&gzip(&body), 1 << 20).unwrap(), body);
        let bomb = gzip(&vec![b' '; 10 << 20]);
        assert!(bomb.len() < 100_000);
        assert_eq!(
            gunzip(&bomb, 1 << 20).unwrap_err(),
            WireError::TooLarge { max: 1 << 20 }
        );
        assert!(matches!(
            gunzip(b"not gzip", 100),
            Err(WireError::BadGzip(_))
        ));
    }

    const NOW: i64 = 1_790_000_000;

    #[test]
    fn signatures_verify_and_rotate() {
        let body = b"[]";
        let h = sign(b"s1", NOW, body);
        assert!(h.starts_with(&format!("t={NOW},v1=")));
        assert_eq!(verify(Some(&h), body, &[b"s1"], NOW, 300), Ok(()));
        // rotation: the collector knows old and new secrets
        assert_eq!(
            verify(Some(&h), body, &[b"s2", b"s1"], NOW + 10, 300),
            Ok(())
        );
        assert_eq!(
            verify(Some(&h), body, &[b"s2"], NOW, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn signature_failures_say_why() {
        let body = b"[]";
        let h = sign(b"s", NOW, body);
        assert_eq!(
            verify(None, body, &[b"s"], NOW, 300),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(Some(&h), b"[ ]", &[b"s"], NOW, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Some(&h), body, &[b"s"], NOW + 301, 300),
            Err(SignatureError::Stale {
                age_secs: 301,
                window_secs: 300
            })
        );
        assert!(matches!(
            verify(Some(&h), body, &[b"s"], NOW - 301, 300),
            Err(SignatureError::Stale { .. })
        ));
        for bad in ["", "t=1", "v1=00", "t=x,v1=00", "t=1,v1=zz", "garbage"] {
            assert!(
                matches!(
                    verify(Some(bad), body, &[b"s"], 1, 300),
                    Err(SignatureError::Malformed(_))
                ),
                "{bad}"
            );
        }
    }
}
