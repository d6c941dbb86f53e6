//! What the benchmark programs (`src/bin/bench-*.rs`) share: the closed-loop HTTP client and
//! its retries, process CPU time and memory from `/proc`, and the order statistics their tables
//! report.

use std::time::{Duration, Instant};

/// CPU seconds (user + system) process `pid` has used so far; 0 if it is gone.
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of /proc/pid/stat: 12 and 13 after the ')'.
    (ticks(11) + ticks(12)) / 100.0
}

/// A process's memory from `/proc/<pid>/status`, in KiB: `VmRSS` (resident now) and `VmHWM`
/// (the most it was resident at any time). `None` when the process is gone.
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Closed loop on `url`: `c` client threads, each POSTing `body` (JSON, with `headers`) and
/// sending the next request when the last answer is fully read, until `secs` have passed.
/// Latencies to the last byte in ms, sorted; an error names the URL (a refused or reset
/// connection, or an answer other than 200).
pub fn closed_loop(
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
    c: usize,
    secs: f64,
) -> Result<Vec<f64>, String> {
    let body = std::sync::Arc::new(body.to_vec());
    let headers = std::sync::Arc::new(headers.to_vec());
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut handles = Vec::new();
    for _ in 0..c {
        let (url, headers, body) = (url.to_string(), headers.clone(), body.clone());
        handles.push(std::thread::spawn(move || -> Result<Vec<f64>, String> {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(30)))
                .build()
                .into();
            let mut out = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let mut request = agent.post(&url).header("content-type", "application/json");
                for (k, v) in headers.iter() {
                    request = request.header(k, v);
                }
                let mut resp = request.send(&body[..]).map_err(|e| format!("{url}: {e}"))?;
                let status = resp.status().as_u16();
                let _ = resp
                    .body_mut()
                    .read_to_vec()
                    .map_err(|e| format!("{url}: reading the body: {e}"))?;
                if status != 200 {
                    return Err(format!("{url} answered {status}"));
                }
                out.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            Ok(out)
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.join().map_err(|_| "client panicked".to_string())??);
    }
    all.sort_by(f64::total_cmp);
    Ok(all)
}

/// The chat completion every gateway benchmark sends (`stream` or not): a short prompt the mock
/// answers with its default reply.
pub fn chat_body(stream: bool) -> Vec<u8> {
    serde_json::json!({"model": "gpt-4o-mini", "stream": stream,
           "messages": [{"role": "user", "content": "Say hello in five words."}]})
    .to_string()
    .into_bytes()
}

/// How long a gateway benchmark measures, from its command line (`#[command(flatten)]`).
#[derive(clap::Args, Debug)]
pub struct Rounds {
    /// Interleaved rounds (each measures every target in every cell once); medians over
    /// rounds are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 2.0)]
    pub secs: f64,
}

/// Tries per benchmark cell before a run gives up on it.
pub const CELL_TRIES: usize = 3;

/// `measure` again, up to [`CELL_TRIES`] times, while it fails (a refused or reset connection
/// loses a try, not the run); each failure is printed with `cell`, the cell's name.
pub fn with_retries<T>(
    cell: &str,
    mut measure: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let mut errors = Vec::new();
    for attempt in 1..=CELL_TRIES {
        match measure() {
            Ok(v) => return Ok(v),
            Err(e) => {
                eprintln!("  {cell}: try {attempt} of {CELL_TRIES} failed: {e}");
                errors.push(e);
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
    Err(format!(
        "{cell} could not be measured in {CELL_TRIES} tries: {}",
        errors.join("; ")
    ))
}

/// The median (the upper one of an even count); NaN for no values.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The `p` quantile (0–1, nearest rank) of values sorted ascending; NaN for no values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_statistics() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 3.0);
        assert!(median(Vec::new()).is_nan());
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 0.5), 51.0);
        assert_eq!(percentile(&sorted, 0.99), 99.0);
        assert_eq!(percentile(&sorted, 1.0), 100.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn this_process_has_memory_and_a_missing_one_none() {
        let (rss, hwm) = memory_kib(std::process::id()).unwrap();
        assert!(rss > 0 && hwm >= rss, "{rss} {hwm}");
        assert!(memory_kib(u32::MAX).is_none());
    }

    #[test]
    fn this_process_has_used_cpu_and_a_missing_one_none() {
        let spin: u64 = (0..20_000_000u64).fold(0, |a, x| a.wrapping_add(x * x));
        assert!(spin > 0);
        assert!(cpu_secs(std::process::id()) > 0.0);
        assert_eq!(cpu_secs(u32::MAX), 0.0);
    }
}

/// What an edge benchmark measures against: a fresh database on the dev ClickHouse (started
/// when down), a real collector on it, the mock provider, one app key — and the bindings of a
/// Tollgate worker wired to them with production batching.
#[derive(Debug)]
pub struct EdgeBench {
    /// The ClickHouse URL.
    pub url: String,
    pub collector: crate::harness::CollectorProc,
    pub mock: crate::mock_provider::MockProvider,
    /// The app key (`Bearer` token) and its `APP_KEYS` entry.
    pub key: String,
    pub key_entry: String,
    /// The collector's spool and the benchmarks' scratch files.
    pub dir: tempfile::TempDir,
}

impl EdgeBench {
    /// Sets it up in database `database`, the app key in org `org`.
    pub async fn start(
        database: &str,
        org: &str,
    ) -> Result<EdgeBench, Box<dyn std::error::Error + Send + Sync>> {
        let url = tollgate_clickhouse::testing::ensure_server()?;
        let config = tollgate_clickhouse::ClickHouseConfig::new(&url, database);
        crate::stack::migrate_fresh(&config).await?;
        let dir = tempfile::tempdir()?;
        let collector = crate::harness::CollectorProc::start(&url, database, dir.path(), |_| {});
        let mock = crate::mock_provider::MockProvider::start(Default::default()).await?;
        let (key, key_entry) = crate::harness::app_key(9, org, "", "bench");
        Ok(EdgeBench {
            url,
            collector,
            mock,
            key,
            key_entry,
            dir,
        })
    }

    /// A worker's bindings: the mock as every provider, records to `collector_url`, the app key.
    pub fn bindings_to(&self, collector_url: &str) -> Vec<(String, String)> {
        production_batching(crate::harness::worker_bindings(
            &self.mock.base_url(),
            collector_url,
            &format!("{{{}}}", self.key_entry),
        ))
    }

    /// [`EdgeBench::bindings_to`] the collector.
    pub fn bindings(&self) -> Vec<(String, String)> {
        self.bindings_to(&self.collector.records_url())
    }
}

/// The tests' bindings with the shipping batch delay left at its production default (the tests
/// shorten it to see records sooner; at 10 ms a busy isolate posts five times as often).
pub fn production_batching(bindings: Vec<(String, String)>) -> Vec<(String, String)> {
    bindings
        .into_iter()
        .filter(|(k, _)| k != "SHIP_BATCH_DELAY_MS")
        .collect()
}
