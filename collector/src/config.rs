//! The collector's configuration: `collector.toml` (all keys optional) overridden by
//! `TOLLGATE_*` variables (`[spool] dir` → `TOLLGATE_SPOOL_DIR`), validated before anything
//! opens or connects. See `docs/CONFIGURATION.md` for the reference.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use service_kit::config::Validate;
use service_kit::Secret;

use crate::spool::SpoolConfig;

/// Everything the collector needs to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server binds. Example: `"0.0.0.0:8081"`.
    pub listen: String,
    pub clickhouse: ClickHouseConfig,
    pub ingest: IngestConfig,
    pub spool: SpoolSettings,
    pub sink: SinkConfig,
    /// OpenTelemetry export of stored records (off unless `endpoint` is set).
    pub otlp: crate::otlp::OtlpConfig,
}

/// Where the records go.
pub type ClickHouseConfig = service_kit::config::ClickHouseSection;

/// The accept path: signatures and limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// HMAC secrets batches may be signed with (several during a rotation). Required.
    pub signing_secrets: Vec<Secret<String>>,
    /// How far a batch's signature timestamp may be from this clock, in seconds.
    pub replay_window_secs: u64,
    /// Largest request body, as sent (compressed or not).
    pub max_body_bytes: u64,
    /// Largest body after gzip decompression.
    pub max_decompressed_bytes: u64,
    /// Most records in one batch.
    pub max_records_per_batch: u64,
    /// Longest a request body may take to arrive, in milliseconds (408 past it): a client
    /// trickling bytes cannot hold a connection and its buffer forever.
    pub body_timeout_ms: u64,
}

/// The write-ahead log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpoolSettings {
    /// Directory of the segment files; must be on a durable disk.
    pub dir: PathBuf,
    pub segment_bytes: u64,
    /// Unsent bytes above which batches are refused with 503 + Retry-After.
    pub high_water_bytes: u64,
    /// How long an `event_id` is remembered for deduplication, in seconds.
    pub dedup_window_secs: u64,
    /// fsync before acknowledging. Only benchmarks of the non-durable path turn this off.
    pub fsync: bool,
}

/// Batching into ClickHouse.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinkConfig {
    /// A batch is sent when it holds this many rows…
    pub max_rows: u64,
    /// …or this many spool bytes…
    pub max_bytes: u64,
    /// …or its oldest record has waited this long (milliseconds).
    pub max_delay_ms: u64,
    /// First retry delay after a transient failure (milliseconds); doubles, with jitter.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8081".into(),
            clickhouse: ClickHouseConfig::default(),
            ingest: IngestConfig::default(),
            spool: SpoolSettings::default(),
            sink: SinkConfig::default(),
            otlp: crate::otlp::OtlpConfig::default(),
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            signing_secrets: Vec::new(),
            replay_window_secs: usage_core::wire::REPLAY_WINDOW_SECS as u64,
            max_body_bytes: 8 << 20,
            max_decompressed_bytes: 64 << 20,
            max_records_per_batch: 10_000,
            body_timeout_ms: 30_000,
        }
    }
}

impl Default for SpoolSettings {
    fn default() -> Self {
        SpoolSettings {
            dir: PathBuf::from("target/collector-spool"),
            segment_bytes: 64 << 20,
            high_water_bytes: 1 << 30,
            dedup_window_secs: 900,
            fsync: true,
        }
    }
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            // Chosen by `cargo xtask bench collector --sink-max-rows N` (docs/BENCHMARKS.md):
            // every INSERT has a large fixed cost in ClickHouse (a part per table and view,
            // then merges), so 25k-row batches reached only 50–57% of the client-library
            // ceiling and 50k 66–68%, while 100k and 200k both passed 80% (200k a few points
            // higher, for ~30 MiB more memory at full load).
            max_rows: 200_000,
            max_bytes: 128 << 20,
            max_delay_ms: 1_000,
            retry_initial_ms: 200,
            retry_max_ms: 30_000,
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        if self.listen.parse::<SocketAddr>().is_err() {
            errors.push(format!(
                "listen: `{}` is not an address like 127.0.0.1:8081",
                self.listen
            ));
        }
        self.clickhouse.check(&mut errors);
        if self.ingest.signing_secrets.is_empty() {
            errors.push("ingest.signing_secrets: at least one secret is required (TOLLGATE_INGEST_SIGNING_SECRETS)".into());
        }
        if self
            .ingest
            .signing_secrets
            .iter()
            .any(|s| s.expose().len() < 16)
        {
            errors
                .push("ingest.signing_secrets: each secret must be at least 16 characters".into());
        }
        let positive = [
            ("ingest.replay_window_secs", self.ingest.replay_window_secs),
            ("ingest.max_body_bytes", self.ingest.max_body_bytes),
            (
                "ingest.max_decompressed_bytes",
                self.ingest.max_decompressed_bytes,
            ),
            (
                "ingest.max_records_per_batch",
                self.ingest.max_records_per_batch,
            ),
            ("ingest.body_timeout_ms", self.ingest.body_timeout_ms),
            ("spool.segment_bytes", self.spool.segment_bytes),
            ("spool.high_water_bytes", self.spool.high_water_bytes),
            ("sink.max_rows", self.sink.max_rows),
            ("sink.max_bytes", self.sink.max_bytes),
            ("sink.max_delay_ms", self.sink.max_delay_ms),
            ("sink.retry_initial_ms", self.sink.retry_initial_ms),
        ];
        for (name, value) in positive {
            if value == 0 {
                errors.push(format!("{name}: must be greater than 0"));
            }
        }
        if self.sink.retry_max_ms < self.sink.retry_initial_ms {
            errors.push("sink.retry_max_ms: must be at least sink.retry_initial_ms".into());
        }
        if self.ingest.max_decompressed_bytes < self.ingest.max_body_bytes {
            errors.push(
                "ingest.max_decompressed_bytes: must be at least ingest.max_body_bytes".into(),
            );
        }
        errors.extend(self.otlp.problems());
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

impl Config {
    pub fn spool_config(&self) -> SpoolConfig {
        SpoolConfig {
            dir: self.spool.dir.clone(),
            segment_bytes: self.spool.segment_bytes,
            high_water_bytes: self.spool.high_water_bytes,
            dedup_window: Duration::from_secs(self.spool.dedup_window_secs),
            fsync: self.spool.fsync,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_only_a_secret() {
        let mut c = Config::default();
        let errors = c.validate().unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("ingest.signing_secrets"));
        c.ingest.signing_secrets = vec![Secret::new("0123456789abcdef".into())];
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn every_problem_is_listed() {
        let mut c = Config::default();
        c.listen = "nowhere".into();
        c.clickhouse.url = "ftp://x".into();
        c.clickhouse.database = "a;drop".into();
        c.sink.max_rows = 0;
        c.ingest.signing_secrets = vec![Secret::new("short".into())];
        let errors = c.validate().unwrap_err();
        let fields: Vec<&str> = errors
            .iter()
            .map(|e| e.split(':').next().unwrap())
            .collect();
        assert_eq!(
            fields,
            [
                "listen",
                "clickhouse.url",
                "clickhouse.database",
                "ingest.signing_secrets",
                "sink.max_rows"
            ]
        );
    }

    #[test]
    fn secrets_never_print() {
        let mut c = Config::default();
        c.ingest.signing_secrets = vec![Secret::new("super-secret-value-1".into())];
        c.clickhouse.password = Secret::new("pw-value".into());
        let shown = format!("{c:?} {}", serde_json::to_string(&c).unwrap());
        assert!(!shown.contains("super-secret-value-1") && !shown.contains("pw-value"));
    }
}

#[cfg(test)]
mod config_doc {
    //! docs/CONFIGURATION.md lists every key of [`Config`], and only those.

    #[test]
    fn every_key_is_documented() {
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/CONFIGURATION.md"
        ))
        .unwrap();
        let checked =
            service_kit::config::check_reference(&super::Config::default(), &doc, "collector");
        assert_eq!(checked, Ok(()), "docs/CONFIGURATION.md");
    }
}
