//! The on-disk form of one spool entry, and reading entries back from a segment.
//!
//! ```text
//! offset  size  field
//! 0       2     magic  b"TG"
//! 2       1     payload format: 3 = encoded rows (written now); 2 = encoded rows without
//!               migration 0014's columns, 1 = JSON array (both read only)
//! 3       1     reserved (0)
//! 4       4     payload length, u32 LE
//! 8       8     LSN, u64 LE
//! 16      4     CRC-32 (IEEE) of bytes 2..16 and the payload, u32 LE
//! 20      n     payload: the accepted records
//! ```
//!
//! Payload format 2 is each record's `usage_events` row in RowBinary
//! ([`tollgate_clickhouse::EncodedEvent`], encoded once when the record was accepted), each
//! preceded by its length (u32 LE): the sink copies rows into the INSERT without decoding.
//! Format 1, a JSON array of the records, is what collectors before it wrote; format 2 is the
//! same rows without the columns of migration 0014 (audio/image tokens, search calls, service
//! tiers). Entries left in a spool across an upgrade are still read: their rows are re-encoded
//! with those columns' defaults.
//!
//! A reader stops at the first entry that is incomplete or whose checksum does not match:
//! everything before it is intact, nothing after it is trusted.

use std::io::Read;

use bytes::Bytes;
use tollgate_clickhouse::EncodedEvent;
use usage_core::UsageRecord;
use uuid::Uuid;

pub const HEADER_LEN: usize = 20;
const MAGIC: [u8; 2] = *b"TG";

/// How an entry's payload holds its records (the header's format byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A JSON array of records (collectors before encoded rows; read only).
    JsonArray = 1,
    /// Length-prefixed RowBinary rows, before migration 0014's columns (read only).
    EncodedRowsV1 = 2,
    /// Length-prefixed RowBinary rows.
    EncodedRows = 3,
}

impl Format {
    fn from_byte(b: u8) -> Option<Format> {
        match b {
            1 => Some(Format::JsonArray),
            2 => Some(Format::EncodedRowsV1),
            3 => Some(Format::EncodedRows),
            _ => None,
        }
    }
}

/// Appends `row` to an [`Format::EncodedRows`] payload.
pub fn push_row(payload: &mut Vec<u8>, row: &[u8]) {
    let len = u32::try_from(row.len()).unwrap_or(u32::MAX);
    payload.extend_from_slice(&len.to_le_bytes());
    payload.extend_from_slice(row);
}
/// No single entry is larger than this (a request body is far smaller).
pub const MAX_PAYLOAD: u32 = 256 << 20;

/// Appends the encoded entry to `out`.
pub fn encode(lsn: u64, format: Format, payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.push(format as u8);
    out.push(0);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out[start + 2..start + 16]);
    crc.update(payload);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(payload);
}

/// One intact entry read from a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub lsn: u64,
    pub format: Format,
    pub payload: Vec<u8>,
    /// Bytes the entry occupies on disk (header + payload).
    pub disk_len: u64,
}

/// Why reading stopped before the end of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Clean end of file.
    End,
    /// The file ends inside an entry (a write that did not finish).
    Torn,
    /// Bytes that are not an intact entry (bad magic, version, length or checksum).
    Corrupt,
}

/// Reads the next entry from `r`. `Ok(Err(stop))` says why there is none.
pub fn read_entry(r: &mut impl Read) -> std::io::Result<Result<Entry, Stop>> {
    let mut header = [0u8; HEADER_LEN];
    match read_full(r, &mut header)? {
        0 => return Ok(Err(Stop::End)),
        n if n < HEADER_LEN => return Ok(Err(Stop::Torn)),
        _ => {}
    }
    let Some(format) = Format::from_byte(header[2]).filter(|_| header[0..2] == MAGIC) else {
        return Ok(Err(Stop::Corrupt));
    };
    let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_PAYLOAD {
        return Ok(Err(Stop::Corrupt));
    }
    let mut lsn_bytes = [0u8; 8];
    lsn_bytes.copy_from_slice(&header[8..16]);
    let lsn = u64::from_le_bytes(lsn_bytes);
    let stored_crc = u32::from_le_bytes([header[16], header[17], header[18], header[19]]);
    let mut payload = vec![0u8; len as usize];
    if read_full(r, &mut payload)? < payload.len() {
        return Ok(Err(Stop::Torn));
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header[2..16]);
    crc.update(&payload);
    if crc.finalize() != stored_crc {
        return Ok(Err(Stop::Corrupt));
    }
    Ok(Ok(Entry {
        lsn,
        format,
        payload,
        disk_len: HEADER_LEN as u64 + u64::from(len),
    }))
}

impl Entry {
    /// The entry's records as encoded rows (a JSON-array entry is decoded and encoded).
    /// Rows are slices of the payload, not copies. An intact entry (its checksum matched)
    /// that does not parse means a bug: the error says where.
    pub fn rows(self) -> Result<Vec<EncodedEvent>, String> {
        match self.format {
            Format::JsonArray => Ok(self
                .json_records()?
                .iter()
                .map(EncodedEvent::from_record)
                .collect()),
            Format::EncodedRows => {
                let spans = row_spans(self.lsn, &self.payload)?;
                let payload = Bytes::from(self.payload);
                spans
                    .into_iter()
                    .map(|span| {
                        EncodedEvent::from_trusted(payload.slice(span))
                            .map_err(|e| format!("entry {}: {e}", self.lsn))
                    })
                    .collect()
            }
            Format::EncodedRowsV1 => row_spans(self.lsn, &self.payload)?
                .into_iter()
                .map(|span| {
                    EncodedEvent::upgrade_v1(&self.payload[span])
                        .map_err(|e| format!("entry {}: {e}", self.lsn))
                })
                .collect(),
        }
    }

    /// The `event_id`s of the entry's records (the dedup window is rebuilt from them on
    /// start), read in place.
    pub fn event_ids(&self) -> Vec<Uuid> {
        match self.format {
            Format::JsonArray => self
                .json_records()
                .map(|records| records.iter().map(|r| r.event_id).collect())
                .unwrap_or_default(),
            Format::EncodedRows | Format::EncodedRowsV1 => row_spans(self.lsn, &self.payload)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|span| EncodedEvent::event_id_in(&self.payload[span]))
                .collect(),
        }
    }

    fn json_records(&self) -> Result<Vec<UsageRecord>, String> {
        serde_json::from_slice(&self.payload)
            .map_err(|e| format!("entry {}: JSON payload: {e}", self.lsn))
    }
}

/// Where each row of an [`Format::EncodedRows`] payload lies.
fn row_spans(lsn: u64, payload: &[u8]) -> Result<Vec<std::ops::Range<usize>>, String> {
    let mut spans = Vec::new();
    let mut at = 0usize;
    while at < payload.len() {
        let len = payload
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| format!("entry {lsn}: row length cut at byte {at}"))?;
        let (start, end) = (at + 4, at + 4 + len);
        if end > payload.len() {
            return Err(format!(
                "entry {lsn}: row at byte {at} overruns the payload"
            ));
        }
        spans.push(start..end);
        at = end;
    }
    Ok(spans)
}

/// Like `read_exact`, but reports how much was read instead of failing at EOF.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(bytes: &[u8]) -> (Vec<Entry>, Stop) {
        let mut r = bytes;
        let mut out = Vec::new();
        loop {
            match read_entry(&mut r).unwrap() {
                Ok(e) => out.push(e),
                Err(stop) => return (out, stop),
            }
        }
    }

    #[test]
    fn round_trip_and_every_truncation_is_torn_never_misread() {
        let mut buf = Vec::new();
        encode(1, Format::JsonArray, b"[1]", &mut buf);
        encode(2, Format::EncodedRows, b"[2,3]", &mut buf);
        let (all, stop) = entries(&buf);
        assert_eq!(stop, Stop::End);
        assert_eq!(all.iter().map(|e| e.lsn).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(all[1].payload, b"[2,3]");
        assert_eq!(
            all.iter().map(|e| e.format).collect::<Vec<_>>(),
            [Format::JsonArray, Format::EncodedRows]
        );
        let first_len = all[0].disk_len as usize;
        for cut in 1..buf.len() {
            let (got, stop) = entries(&buf[..cut]);
            let expect = if cut < first_len { 0 } else { 1 };
            assert_eq!(got.len(), expect, "cut at {cut}");
            if cut != first_len {
                assert_eq!(stop, Stop::Torn, "cut at {cut}");
            }
        }
    }

    #[test]
    fn any_flipped_bit_is_caught() {
        let mut buf = Vec::new();
        encode(7, Format::EncodedRows, b"[{\"a\":1}]", &mut buf);
        for i in 0..buf.len() {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[i] ^= 1 << bit;
                let (got, _) = entries(&b);
                assert!(got.is_empty(), "byte {i} bit {bit} misread");
            }
        }
    }
}

#[cfg(test)]
mod payload_tests {
    use super::*;
    use crate::testdata::record;

    /// Both formats give the same rows: what an old collector spooled is delivered as is.
    #[test]
    fn json_and_encoded_entries_give_the_same_rows() {
        let records: Vec<UsageRecord> = (0..5u128).map(record).collect();
        let json = Entry {
            lsn: 1,
            format: Format::JsonArray,
            payload: serde_json::to_vec(&records).unwrap(),
            disk_len: 0,
        };
        let mut payload = Vec::new();
        for r in &records {
            push_row(&mut payload, EncodedEvent::from_record(r).as_bytes());
        }
        let encoded = Entry {
            lsn: 2,
            format: Format::EncodedRows,
            payload,
            disk_len: 0,
        };
        let ids: Vec<Uuid> = records.iter().map(|r| r.event_id).collect();
        assert_eq!(json.event_ids(), ids);
        assert_eq!(encoded.event_ids(), ids);
        assert_eq!(json.rows().unwrap(), encoded.clone().rows().unwrap());

        let mut cut = encoded;
        cut.payload.pop();
        assert!(cut.rows().unwrap_err().contains("overruns"));
    }
}

/// Spool entries and encoded rows written by the code before `chrono` replaced `time`
/// (fixtures in `tests/fixtures/`, never regenerated): they must read back as they were
/// written, so a collector upgraded with records still in its spool delivers them unchanged.
#[cfg(test)]
mod written_before_chrono {
    use super::*;

    const ENTRIES: &[u8] = include_bytes!("../../tests/fixtures/spool_pre_chrono.entries");
    const ROWS_HEX: &str = include_str!("../../tests/fixtures/encoded_pre_chrono.hex");
    /// The records' `ts`: 2026-12-07T01:02:03Z plus i seconds, with 0, .5, .123 and .12 s.
    const TS: [&str; 4] = [
        "2026-12-07T01:02:03Z",
        "2026-12-07T01:02:04.5Z",
        "2026-12-07T01:02:05.123Z",
        "2026-12-07T01:02:06.12Z",
    ];
    const TS_UNIX: [u32; 4] = [1_796_605_323, 1_796_605_324, 1_796_605_325, 1_796_605_326];

    fn entries() -> Vec<Entry> {
        let mut r = ENTRIES;
        let mut out = Vec::new();
        while let Ok(entry) = read_entry(&mut r).unwrap() {
            out.push(entry);
        }
        out
    }

    #[test]
    fn a_spool_written_before_reads_back_the_same_records() {
        let entries = entries();
        let formats: Vec<Format> = entries.iter().map(|e| e.format).collect();
        assert_eq!(formats, [Format::JsonArray, Format::EncodedRows]);
        // The JSON entry: every `ts` in time's RFC 3339 form (fraction trimmed, `Z`).
        let records: Vec<UsageRecord> = serde_json::from_slice(&entries[0].payload).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&entries[0].payload).unwrap();
        let written: Vec<&str> = (0..4).map(|i| json[i]["ts"].as_str().unwrap()).collect();
        assert_eq!(written, TS);
        // Written out again, the records are byte for byte what was spooled.
        assert_eq!(serde_json::to_vec(&records).unwrap(), entries[0].payload);

        // Both entries give the same rows, each with the record's second.
        let ids: Vec<Uuid> = records.iter().map(|r| r.event_id).collect();
        assert_eq!(entries[0].event_ids(), ids);
        assert_eq!(entries[1].event_ids(), ids);
        let from_json = entries[0].clone().rows().unwrap();
        let from_rows = entries[1].clone().rows().unwrap();
        assert_eq!(from_json, from_rows);
        for (row, secs) in from_rows.iter().zip(TS_UNIX) {
            let decoded = row.decode().unwrap();
            assert_eq!(decoded.event_id, row.event_id());
            assert_eq!(row.ts().timestamp(), i64::from(secs));
        }
    }

    #[test]
    fn records_encode_to_the_rows_written_before() {
        let records: Vec<UsageRecord> = serde_json::from_slice(&entries()[0].payload).unwrap();
        let hex: Vec<&str> = ROWS_HEX.lines().collect();
        assert_eq!(hex.len(), records.len());
        for (r, want) in records.iter().zip(hex) {
            let got: String = EncodedEvent::from_record(r)
                .as_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(got, want, "{}", r.event_id);
        }
    }
}
