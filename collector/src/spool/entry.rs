//! The on-disk form of one spool entry, and reading entries back from a segment.
//!
//! ```text
//! offset  size  field
//! 0       2     magic  b"TG"
//! 2       1     format version (1)
//! 3       1     reserved (0)
//! 4       4     payload length, u32 LE
//! 8       8     LSN, u64 LE
//! 16      4     CRC-32 (IEEE) of bytes 2..16 and the payload, u32 LE
//! 20      n     payload: the accepted records, as a JSON array
//! ```
//!
//! A reader stops at the first entry that is incomplete or whose checksum does not match:
//! everything before it is intact, nothing after it is trusted.

use std::io::Read;

pub const HEADER_LEN: usize = 20;
const MAGIC: [u8; 2] = *b"TG";
const VERSION: u8 = 1;
/// No single entry is larger than this (a request body is far smaller).
pub const MAX_PAYLOAD: u32 = 256 << 20;

/// Appends the encoded entry to `out`.
pub fn encode(lsn: u64, payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
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
    if header[0..2] != MAGIC || header[2] != VERSION {
        return Ok(Err(Stop::Corrupt));
    }
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
        payload,
        disk_len: HEADER_LEN as u64 + u64::from(len),
    }))
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
        encode(1, b"[1]", &mut buf);
        encode(2, b"[2,3]", &mut buf);
        let (all, stop) = entries(&buf);
        assert_eq!(stop, Stop::End);
        assert_eq!(all.iter().map(|e| e.lsn).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(all[1].payload, b"[2,3]");
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
        encode(7, b"[{\"a\":1}]", &mut buf);
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
