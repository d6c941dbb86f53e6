//! The soak's reconciliation: what the clients were answered and what the collector
//! acknowledged, against what ClickHouse stored — one row per event id, none missing, none
//! twice — and the rollups against the raw rows they summarise.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use uuid::Uuid;

use crate::stack::BoxError;

/// The stored side of one event id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub rows: u64,
    pub status_code: u16,
    pub error_class: String,
}

/// Runs `sql` (ending in `FORMAT JSONEachRow`) on ClickHouse's HTTP interface.
pub fn query(clickhouse_url: &str, database: &str, sql: &str) -> Result<Vec<Value>, BoxError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut resp = agent
        .post(&format!("{clickhouse_url}/?database={database}"))
        .send(sql.as_bytes())
        .map_err(|e| format!("ClickHouse at {clickhouse_url}: {e}"))?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string()?;
    if status != 200 {
        return Err(format!("ClickHouse answered {status} to `{sql}`: {text}").into());
    }
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("ClickHouse row `{l}`: {e}").into()))
        .collect()
}

fn str_field(row: &Value, k: &str) -> String {
    match &row[k] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Every stored event id with its row count, status and error class.
pub fn stored(clickhouse_url: &str, database: &str) -> Result<HashMap<Uuid, Stored>, BoxError> {
    let rows = query(
        clickhouse_url,
        database,
        "SELECT toString(event_id) AS id, toString(count()) AS n, toString(any(status_code)) AS status, \
         toString(any(error_class)) AS class FROM usage_events GROUP BY event_id FORMAT JSONEachRow",
    )?;
    rows.iter()
        .map(|r| {
            let id = Uuid::parse_str(&str_field(r, "id"))
                .map_err(|e| format!("stored event id: {e}"))?;
            Ok((
                id,
                Stored {
                    rows: str_field(r, "n").parse().unwrap_or(0),
                    status_code: str_field(r, "status").parse().unwrap_or(0),
                    error_class: str_field(r, "class"),
                },
            ))
        })
        .collect()
}

/// Polls until every id of `expected` is stored or `within` passed; returns the last answer
/// and how long it took.
pub fn wait_for(
    clickhouse_url: &str,
    database: &str,
    expected: &HashSet<Uuid>,
    within: Duration,
) -> Result<(HashMap<Uuid, Stored>, Duration), BoxError> {
    let started = Instant::now();
    loop {
        let now = stored(clickhouse_url, database)?;
        let missing = expected.iter().filter(|id| !now.contains_key(id)).count();
        if missing == 0 || started.elapsed() > within {
            return Ok((now, started.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Polls until no event is stored twice and both rollups equal the raw rows, or `within`
/// passed; returns the last look: (stored events, daily check, hourly check).
pub fn wait_for_exact(
    clickhouse_url: &str,
    database: &str,
    within: Duration,
) -> Result<(HashMap<Uuid, Stored>, RollupCheck, RollupCheck), BoxError> {
    let started = Instant::now();
    loop {
        let stored = stored(clickhouse_url, database)?;
        let daily = check_rollup(clickhouse_url, database, false)?;
        let hourly = check_rollup(clickhouse_url, database, true)?;
        let exact = stored.values().all(|s| s.rows == 1)
            && daily.mismatches.is_empty()
            && hourly.mismatches.is_empty();
        if exact || started.elapsed() > within {
            return Ok((stored, daily, hourly));
        }
        std::thread::sleep(Duration::from_millis(1_000));
    }
}

/// Raw rows against a rollup, per group.
#[derive(Clone, Debug, Default)]
pub struct RollupCheck {
    pub table: &'static str,
    pub groups: usize,
    /// Groups whose sums differ (or exist on one side only), described.
    pub mismatches: Vec<String>,
}

/// `(name, over usage_events, over the rollup)`.
type Measure = (&'static str, &'static str, &'static str);

/// The sums both sides answer, per (org, period, app, user, task, provider).
const MEASURES: &[Measure] = &[
    ("requests", "count()", "sum(requests)"),
    ("errors", "countIf(error_class != 'none')", "sum(errors)"),
    ("streamed", "countIf(stream = 1)", "sum(streamed_requests)"),
    (
        "input",
        "sum(toUInt64(input_tokens))",
        "sum(total_input_tokens)",
    ),
    (
        "output",
        "sum(toUInt64(output_tokens))",
        "sum(total_output_tokens)",
    ),
    (
        "cached",
        "sum(toUInt64(cached_input_tokens))",
        "sum(total_cached_input_tokens)",
    ),
    ("cost", "sum(cost_nusd)", "sum(total_cost_nusd)"),
    (
        "request_bytes",
        "sum(request_bytes)",
        "sum(total_request_bytes)",
    ),
    (
        "response_bytes",
        "sum(response_bytes)",
        "sum(total_response_bytes)",
    ),
    (
        "latency_ms",
        "sum(toUInt64(latency_ms))",
        "sum(total_latency_ms)",
    ),
];

/// Compares `usage_daily` or `usage_hourly` with the raw aggregate of `usage_events`.
pub fn check_rollup(
    clickhouse_url: &str,
    database: &str,
    hourly: bool,
) -> Result<RollupCheck, BoxError> {
    let (table, raw_period, rollup_period) = if hourly {
        ("usage_hourly", "toStartOfHour(ts)", "hour")
    } else {
        ("usage_daily", "toDate(ts)", "day")
    };
    let keys = "org_id, toString(app_id) AS app, user_id, toString(task_type) AS task, toString(provider) AS prov";
    let select = |period: &str, pick: fn(&Measure) -> &'static str, from: &str| {
        let sums: Vec<String> = MEASURES
            .iter()
            .map(|m| format!("toString({}) AS {}", pick(m), m.0))
            .collect();
        format!(
            "SELECT toString({period}) AS period, {keys}, {} FROM {from} \
             GROUP BY period, org_id, app, user_id, task, prov FORMAT JSONEachRow",
            sums.join(", ")
        )
    };
    let raw = query(
        clickhouse_url,
        database,
        &select(raw_period, |m| m.1, "usage_events"),
    )?;
    let rolled = query(
        clickhouse_url,
        database,
        &select(rollup_period, |m| m.2, table),
    )?;
    let by_group = |rows: &[Value]| -> BTreeMap<String, BTreeMap<&'static str, String>> {
        rows.iter()
            .map(|r| {
                let group = ["period", "org_id", "app", "user_id", "task", "prov"]
                    .iter()
                    .map(|k| str_field(r, k))
                    .collect::<Vec<_>>()
                    .join("/");
                let sums = MEASURES.iter().map(|m| (m.0, str_field(r, m.0))).collect();
                (group, sums)
            })
            .collect()
    };
    let (raw, rolled) = (by_group(&raw), by_group(&rolled));
    let mut mismatches = Vec::new();
    for group in raw
        .keys()
        .chain(rolled.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        match (raw.get(group), rolled.get(group)) {
            (Some(a), Some(b)) if a == b => {}
            (a, b) => mismatches.push(format!("{table} {group}: raw {a:?} vs rollup {b:?}")),
        }
    }
    Ok(RollupCheck {
        table,
        groups: raw.len(),
        mismatches,
    })
}

/// Rows in `usage_rejects` (records refused as bad data).
pub fn rejects(clickhouse_url: &str, database: &str) -> Result<u64, BoxError> {
    let rows = query(
        clickhouse_url,
        database,
        "SELECT toString(count()) AS n FROM usage_rejects FORMAT JSONEachRow",
    )?;
    Ok(rows
        .first()
        .map_or(0, |r| str_field(r, "n").parse().unwrap_or(0)))
}

/// The replicas of a cluster store once the load is over: how long until every replicated
/// table on every host was connected, had nothing queued and had read its replication log to
/// the end, and the two replicas of each shard held the same raw rows, or `None`
/// if that did not happen within `limit`. `urls` are the hosts in [`NODES`] order (consecutive
/// pairs are one shard's replicas).
///
/// [`NODES`]: tollgate_clickhouse::dev_cluster::NODES
pub fn wait_for_replicas(
    urls: &[String],
    database: &str,
    limit: Duration,
) -> Result<Option<Duration>, BoxError> {
    let started = Instant::now();
    let number = |url: &str, sql: &str| -> Result<u64, BoxError> {
        let rows = query(url, database, &format!("{sql} FORMAT JSONEachRow"))?;
        Ok(rows
            .first()
            .and_then(|r| {
                r["n"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .or(r["n"].as_u64())
            })
            .unwrap_or(0))
    };
    loop {
        let mut converged = true;
        let mut counts = Vec::new();
        for url in urls {
            // A host that is not back yet counts as not converged.
            // Tables still catching up: not connected to ZooKeeper, work queued, or the
            // replication log not read to its end.
            let queue = number(
                url,
                &format!(
                    "SELECT count() AS n FROM system.replicas WHERE database = '{database}' \
                     AND (is_readonly OR is_session_expired OR queue_size > 0 \
                     OR inserts_in_queue > 0 OR log_pointer < log_max_index)"
                ),
            );
            let rows = number(url, "SELECT count() AS n FROM usage_events_local");
            match (queue, rows) {
                (Ok(0), Ok(rows)) => counts.push(rows),
                _ => converged = false,
            }
        }
        converged = converged
            && counts
                .chunks(2)
                .all(|pair| pair.windows(2).all(|w| w[0] == w[1]));
        if converged {
            return Ok(Some(started.elapsed()));
        }
        if started.elapsed() > limit {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
