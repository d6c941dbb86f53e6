//! What each fuzz target checks, one function per target: the input goes through the real code
//! path and every property that must hold for *any* input is asserted (a panic is a finding).
//!
//! This one file is compiled twice: as the library of the fuzz crate (the libFuzzer targets in
//! `fuzz_targets/` call it) and, with `#[path]`, by `tests/tests/fuzz_replay.rs` in the main
//! workspace, which replays every committed seed and regression input on stable Rust — so CI
//! checks the same properties on the same inputs without a nightly toolchain or libFuzzer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a failed property must fail loudly

use chrono::{DateTime, TimeDelta, Utc};
use tollgate_clickhouse::{EncodedEvent, Scope};
use tollgate_collector::config::IngestConfig;
use tollgate_collector::ingest::decode_body;
use tollgate_dashboard_api::auth::{Principal, Role};
use tollgate_dashboard_api::error::ApiError;
use tollgate_dashboard_api::params::{self, Granularity, Limits};
use usage_core::utc;
use usage_core::wire::{self, SignatureError};
use usage_core::{SseScanner, UsageRecord};

/// The fuzz targets, by name (the directories under `fuzz/seeds/` and `fuzz/regressions/`).
pub const TARGETS: &[&str] = &["sse_scanner", "batch_decoder", "signature", "query_params"];

/// Runs target `name` on `data`; `false` for an unknown name.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "sse_scanner" => sse_scanner(data),
        "batch_decoder" => batch_decoder(data),
        "signature" => signature(data),
        "query_params" => query_params(data),
        _ => return false,
    }
    true
}

// ---------------------------------------------------------------------------------------------
// sse_scanner

/// The SSE usage scanner: the summary of a stream does not depend on how it is cut into chunks
/// (the edge sees whatever chunking the network gives it), however fine, including empty
/// chunks.
///
/// Input layout: a stream as it is (any fixture is a seed), cut at eight positions derived from
/// its hash; or `ff n cuts… stream`: `n` (mod 16) cut positions as u16 LE (mod the stream's
/// length), so the fuzzer can choose the cuts itself. Repeated positions make empty chunks.
pub fn sse_scanner(data: &[u8]) {
    let (cuts, stream) = sse_layout(data);
    let whole = usage_core::scan(stream);

    let mut split = SseScanner::new();
    let mut at = 0;
    for cut in cuts {
        split.feed(&stream[at..cut]);
        // Looking at the summary mid-stream never changes it.
        let _ = split.summary().events;
        at = cut;
    }
    split.feed(&stream[at..]);
    let split = split.finish();
    assert_eq!(split, whole, "chunking changed the summary");

    let mut bytewise = SseScanner::new();
    for b in stream {
        bytewise.feed(std::slice::from_ref(b));
    }
    assert_eq!(
        bytewise.finish(),
        whole,
        "byte-by-byte feeding changed the summary"
    );

    assert!(whole.content_events <= whole.events);
    assert_eq!(whole.truncated, !whole.done);
}

fn sse_layout(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let explicit = data
        .strip_prefix(&[0xff])
        .and_then(|rest| rest.split_first())
        .map(|(&n, rest)| (usize::from(n % 16) * 2, rest))
        .filter(|(len, rest)| rest.len() >= *len);
    let (raw_cuts, stream): (Vec<u16>, &[u8]) = match explicit {
        Some((len, rest)) => {
            let (cuts, stream) = rest.split_at(len);
            let cuts = cuts
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            (cuts, stream)
        }
        None => {
            // FNV-1a of the stream, stretched into eight positions.
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for &b in data {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
            let cuts = (0..8)
                .map(|i| (h.rotate_left(i * 8) & 0xffff) as u16)
                .collect();
            (cuts, data)
        }
    };
    let mut cuts: Vec<usize> = raw_cuts
        .into_iter()
        .map(|c| usize::from(c) % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();
    (cuts, stream)
}

// ---------------------------------------------------------------------------------------------
// batch_decoder

/// The collector's clock for the batch decoder (records in the seeds are dated near it).
pub const BATCH_NOW: DateTime<Utc> = utc(2026, 6, 1, 12, 0, 0);

fn batch_limits() -> IngestConfig {
    let mut limits = IngestConfig::default();
    limits.max_records_per_batch = 64;
    limits.max_decompressed_bytes = 1 << 20;
    limits
}

/// What a decode came to, comparable across encodings.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Refused(&'static str),
    Decoded {
        /// Spooled records: event id (as text) and the record's bytes.
        good: Vec<(String, Vec<u8>)>,
        rejects: Vec<(usize, String)>,
    },
}

fn decode(encoding: Option<&str>, body: Vec<u8>) -> Outcome {
    match decode_body(encoding, body.into(), &batch_limits(), BATCH_NOW) {
        Err(e) => {
            assert!(
                e.status().is_client_error(),
                "a body is refused with a 4xx: {} {}",
                e.status(),
                e.code()
            );
            assert!(
                [
                    "bad_gzip",
                    "body_too_large",
                    "empty_batch",
                    "malformed_body",
                    "too_many_records"
                ]
                .contains(&e.code()),
                "undocumented refusal {}",
                e.code()
            );
            Outcome::Refused(e.code())
        }
        Ok(d) => {
            let mut good = Vec::with_capacity(d.good.len());
            for (id, range) in &d.good {
                // What goes to the spool is exactly one valid record's row, with that event id.
                let bytes = d
                    .rows
                    .get(range.clone())
                    .expect("an accepted range lies inside the encoded rows");
                let row = EncodedEvent::from_bytes(bytes.to_vec())
                    .and_then(|e| e.decode())
                    .expect("an accepted range holds one encoded row");
                let record =
                    UsageRecord::try_from(&row).expect("an accepted row is a usage record");
                assert_eq!(&record.event_id, id);
                assert!(record.validate(BATCH_NOW).is_ok(), "accepted but invalid");
                good.push((id.to_string(), bytes.to_vec()));
            }
            let mut last = None;
            for r in &d.rejects {
                assert!(!r.reason.is_empty(), "a reject names its reason");
                assert!(last < Some(r.index), "reject indexes rise: {:?}", d.rejects);
                assert!(r.index < d.good.len() + d.rejects.len());
                last = Some(r.index);
            }
            assert!(
                !d.good.is_empty() || !d.rejects.is_empty(),
                "an empty batch is refused, not accepted"
            );
            Outcome::Decoded {
                good,
                rejects: d
                    .rejects
                    .iter()
                    .map(|r| (r.index, r.reason.clone()))
                    .collect(),
            }
        }
    }
}

/// The collector's batch decoder (`content-encoding` → gzip → JSON array or NDJSON → records →
/// validation): never panics, refuses only with its documented codes, spools exactly valid
/// records, and a body decodes the same whether or not it came gzip'd.
///
/// Input: the body. One starting with the gzip magic (`1f 8b`) is sent as
/// `content-encoding: gzip`; any other is sent plain, and again gzip'd by us.
pub fn batch_decoder(data: &[u8]) {
    if data.starts_with(&[0x1f, 0x8b]) {
        decode(Some("gzip"), data.to_vec());
        return;
    }
    let plain = decode(None, data.to_vec());
    let gzipped = decode(Some("gzip"), wire::gzip(data));
    assert_eq!(plain, gzipped, "gzip changed the outcome");
}

// ---------------------------------------------------------------------------------------------
// signature

/// The collector's clock for the signature target.
pub const SIGNATURE_NOW: i64 = 1_790_000_000;
const KNOWN_SECRET: &[u8] = b"fuzz-known-secret-0123456789";

/// The signature verifier: never panics on any header; accepts only a header that carries the
/// HMAC of one of the secrets over the body, at a time inside the window; and what `sign`
/// makes always verifies, while any other body, a missing secret or an old time does not.
///
/// Input layout: `header NUL secret NUL body` (missing parts are empty).
pub fn signature(data: &[u8]) {
    let mut parts = data.splitn(3, |&b| b == 0);
    let header = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let secret = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    let secrets: [&[u8]; 2] = [KNOWN_SECRET, secret];

    // The fuzzed header, at the collector's clock and at the header's own time.
    let own_time = header_time(&header);
    for now in [Some(SIGNATURE_NOW), own_time].into_iter().flatten() {
        if wire::verify(Some(&header), body, &secrets, now, 300).is_ok() {
            let t = own_time.expect("an accepted header has a time");
            assert!(now.abs_diff(t) <= 300, "accepted outside the window");
            let expected: Vec<String> = secrets
                .iter()
                .map(|s| wire::sign(s, t, body))
                .filter_map(|h| h.split_once(",v1=").map(|(_, tag)| tag.to_string()))
                .collect();
            let carried = header_tags(&header);
            assert!(
                carried.iter().any(|tag| expected.contains(tag)),
                "accepted {header:?} without a matching tag"
            );
        }
    }

    // What `sign` makes.
    for s in secrets {
        let h = wire::sign(s, SIGNATURE_NOW, body);
        assert_eq!(
            wire::verify(Some(&h), body, &[s], SIGNATURE_NOW, 300),
            Ok(())
        );
        let mut longer = body.to_vec();
        longer.push(b'.');
        assert_eq!(
            wire::verify(Some(&h), &longer, &[s], SIGNATURE_NOW, 300),
            Err(SignatureError::Mismatch)
        );
        if let Some((first, rest)) = body.split_first() {
            let mut flipped = vec![first ^ 1];
            flipped.extend_from_slice(rest);
            assert_eq!(
                wire::verify(Some(&h), &flipped, &[s], SIGNATURE_NOW, 300),
                Err(SignatureError::Mismatch)
            );
        }
        assert!(matches!(
            wire::verify(Some(&h), body, &[s], SIGNATURE_NOW + 301, 300),
            Err(SignatureError::Stale { .. })
        ));
        if s != KNOWN_SECRET {
            assert_eq!(
                wire::verify(Some(&h), body, &[KNOWN_SECRET], SIGNATURE_NOW, 300),
                Err(SignatureError::Mismatch)
            );
        }
    }
}

/// The `t=` of a header, read independently of `wire::verify` (the last one wins, as there).
fn header_time(header: &str) -> Option<i64> {
    header
        .split(',')
        .filter_map(|p| p.trim().strip_prefix("t="))
        .next_back()
        .and_then(|t| t.parse().ok())
}

fn header_tags(header: &str) -> Vec<String> {
    header
        .split(',')
        .filter_map(|p| p.trim().strip_prefix("v1="))
        .map(str::to_ascii_lowercase)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// query_params

/// The dashboard's clock for the query-parameter target.
pub const QUERY_NOW: DateTime<Utc> = utc(2026, 11, 27, 15, 30, 0);

/// The dashboard's analytics parameters (`from`, `to`, `granularity`, `provider`, `model`,
/// `org`, `user`, `limit`, `format`, `horizon_days`) and the tenant scope they resolve to:
/// never a panic; a refusal is a 400 naming its parameter (or a 403 for another tenant); an
/// accepted query stays inside its limits, and no token's scope ever leaves its own org/user.
///
/// Input: the raw query string (lossy UTF-8, as a client could send any bytes).
pub fn query_params(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    let providers = vec!["openai".to_string(), "openrouter".to_string()];
    let limits = Limits {
        providers: &providers,
        max_range_days: 400,
        max_hourly_range_days: 31,
    };
    let parsed =
        params::parse_query(Some(&raw)).and_then(|m| params::parse(&m, &limits, QUERY_NOW));
    let p = match parsed {
        Err(e) => {
            assert!(
                matches!(&e, ApiError::BadRequest { field: Some(f), .. } if !f.is_empty()),
                "a refused parameter is a 400 naming it: {e:?}"
            );
            return;
        }
        Ok(p) => p,
    };
    let w = p.window;
    assert!(w.from < w.to, "{w:?}");
    assert!(w.to - w.from <= TimeDelta::days(400), "{w:?}");
    if p.granularity == Granularity::Hour {
        assert!(w.to - w.from <= TimeDelta::days(31), "{w:?}");
    }
    let (first_day, end_day) = w.days();
    assert!(
        first_day <= w.from.date_naive() && first_day < end_day,
        "{w:?}"
    );
    let (first_hour, end_hour) = w.hours();
    assert!(first_hour <= w.from && w.to <= end_hour, "{w:?}");
    assert_eq!(w.previous().to, w.from);
    assert!((1..=1000).contains(&p.limit));
    assert!((1..=365).contains(&p.horizon_days));
    if let Some(provider) = &p.provider {
        assert!(providers.contains(provider));
    }
    for value in [&p.model, &p.org, &p.user].into_iter().flatten() {
        assert!(
            !value.is_empty() && value.len() <= 256 && !value.chars().any(char::is_control),
            "{value:?}"
        );
    }
    for principal in principals() {
        check_scope(&principal, p.org.as_deref(), p.user.as_deref());
    }
}

fn principals() -> [Principal; 3] {
    let p = |role, org: &str, user: &str| Principal {
        token_id: "t".into(),
        name: "fuzz".into(),
        role,
        org_id: org.into(),
        user_id: user.into(),
    };
    [
        p(Role::Admin, "", ""),
        p(Role::OrgAdmin, "acme", ""),
        p(Role::Viewer, "acme", "alice"),
    ]
}

/// A token's read scope never reaches past its own org (and its own user, when bound to one).
fn check_scope(principal: &Principal, org: Option<&str>, user: Option<&str>) {
    let scope = match principal.read_scope(org, user) {
        Ok(s) => s,
        Err(e) => {
            assert!(
                matches!(e, ApiError::Forbidden(_) | ApiError::BadRequest { .. }),
                "{e:?}"
            );
            return;
        }
    };
    match principal.role {
        Role::Admin => {}
        _ => {
            let (scope_org, scope_user) = match &scope {
                Scope::Org { org_id } => (org_id, None),
                Scope::OrgUser { org_id, user_id } => (org_id, Some(user_id)),
                other => panic!("{:?} read as {other:?}", principal.role),
            };
            assert_eq!(scope_org, &principal.org_id, "left its org");
            if !principal.user_id.is_empty() {
                assert_eq!(scope_user, Some(&principal.user_id), "left its user");
            }
        }
    }
}
