//! The rollups are exact: every metric of usage_hourly and usage_daily equals the same
//! aggregate computed from the raw rows, before and after the server merges them.

use usage_core::{CostSource, ErrorClass, UsageRecord, UsageSource};

use tollgate_clickhouse::testing::TestDb;

use crate::support::{fixture, insert_in_batches, tsv};

/// (rollup column, the same aggregate over usage_events).
const METRICS: &[(&str, &str)] = &[
    ("requests", "count()"),
    ("errors", "countIf(error_class != 'none')"),
    ("errors_client", "countIf(error_class = 'client')"),
    (
        "errors_rate_limited",
        "countIf(error_class = 'rate_limited')",
    ),
    (
        "errors_upstream_5xx",
        "countIf(error_class = 'upstream_5xx')",
    ),
    ("errors_timeout", "countIf(error_class = 'timeout')"),
    ("errors_aborted", "countIf(error_class = 'aborted')"),
    (
        "errors_budget_blocked",
        "countIf(error_class = 'budget_blocked')",
    ),
    ("errors_network", "countIf(error_class = 'network')"),
    ("errors_internal", "countIf(error_class = 'internal')"),
    ("streamed_requests", "countIf(stream = 1)"),
    (
        "estimated_usage_requests",
        "countIf(usage_source != 'provider')",
    ),
    ("unpriced_requests", "countIf(cost_source = 'unpriced')"),
    ("total_input_tokens", "sum(toUInt64(input_tokens))"),
    ("total_output_tokens", "sum(toUInt64(output_tokens))"),
    (
        "total_cached_input_tokens",
        "sum(toUInt64(cached_input_tokens))",
    ),
    (
        "total_cache_write_tokens",
        "sum(toUInt64(cache_write_tokens))",
    ),
    ("total_reasoning_tokens", "sum(toUInt64(reasoning_tokens))"),
    ("total_cost_nusd", "sum(cost_nusd)"),
    ("total_request_bytes", "sum(request_bytes)"),
    ("total_response_bytes", "sum(response_bytes)"),
    ("total_latency_ms", "sum(toUInt64(latency_ms))"),
    ("total_upstream_ms", "sum(toUInt64(upstream_ms))"),
    ("total_ttft_ms", "sum(toUInt64(ifNull(ttft_ms, 0)))"),
    ("ttft_count", "countIf(isNotNull(ttft_ms))"),
];

const QUANTILES: &str = "quantiles(0.5, 0.9, 0.95, 0.99)";
const QUANTILES_MERGE: &str = "quantilesMerge(0.5, 0.9, 0.95, 0.99)";

/// A rollup table: its bucket column and the raw expression for it, its key, and which
/// latency / distinct-id states it keeps.
pub(crate) struct Grain {
    pub(crate) table: &'static str,
    bucket: &'static str,
    raw_bucket: &'static str,
    /// Key columns after org_id and the bucket.
    dims: &'static str,
    /// usage_* keep reservoir quantile states (exact for the fixture's small groups); the
    /// org-grain tables keep t-digests (approximate: checked separately) and distinct-id sets.
    org_grain: bool,
}

/// The rollups' model identity since migration 0010: the requested model.
const MODEL_EXPR: &str = "model_requested AS model";

pub(crate) const GRAINS: &[Grain] = &[
    Grain {
        table: "usage_hourly",
        bucket: "hour",
        raw_bucket: "toStartOfHour(ts)",
        dims: "user_id, app_id, provider, model, task_type",
        org_grain: false,
    },
    Grain {
        table: "usage_daily",
        bucket: "day",
        raw_bucket: "toDate(ts)",
        dims: "user_id, app_id, provider, model, task_type",
        org_grain: false,
    },
    Grain {
        table: "org_model_daily",
        bucket: "day",
        raw_bucket: "toDate(ts)",
        dims: "provider, model",
        org_grain: true,
    },
    Grain {
        table: "org_daily",
        bucket: "day",
        raw_bucket: "toDate(ts)",
        dims: "",
        org_grain: true,
    },
];

impl Grain {
    fn keys(&self) -> String {
        if self.dims.is_empty() {
            "org_id, bucket".into()
        } else {
            format!("org_id, bucket, {}", self.dims)
        }
    }

    pub(crate) fn rollup_sql(&self) -> String {
        let mut cols: Vec<String> = METRICS.iter().map(|(c, _)| format!("sum({c})")).collect();
        if self.org_grain {
            cols.push("uniqExactMerge(users_state)".into());
            cols.push("uniqExactMerge(apps_state)".into());
        } else {
            cols.push(format!("{QUANTILES_MERGE}(latency_quantiles)"));
            cols.push(format!("{QUANTILES_MERGE}(ttft_quantiles)"));
        }
        let keys = self.keys();
        format!(
            "SELECT {keys}, {} FROM (SELECT *, {} AS bucket FROM {}) GROUP BY {keys} ORDER BY {keys}",
            cols.join(", "),
            self.bucket,
            self.table
        )
    }

    pub(crate) fn raw_sql(&self) -> String {
        let mut cols: Vec<String> = METRICS.iter().map(|(_, raw)| raw.to_string()).collect();
        if self.org_grain {
            cols.push("uniqExactIf(user_id, user_id != '')".into());
            cols.push("uniqExact(app_id)".into());
        } else {
            cols.push(format!("{QUANTILES}(toFloat64(latency_ms))"));
            cols.push(
                "quantilesIf(0.5, 0.9, 0.95, 0.99)(toFloat64(ifNull(ttft_ms, 0)), isNotNull(ttft_ms))"
                    .to_string(),
            );
        }
        let keys = self.keys();
        format!(
            "SELECT {keys}, {} FROM (SELECT *, {} AS bucket, {MODEL_EXPR} FROM usage_events) \
             GROUP BY {keys} ORDER BY {keys}",
            cols.join(", "),
            self.raw_bucket
        )
    }
}

async fn assert_rollups_equal_raw(db: &TestDb, when: &str) {
    for grain in GRAINS {
        let table = grain.table;
        let rollup = tsv(db.client(), &grain.rollup_sql()).await;
        let raw = tsv(db.client(), &grain.raw_sql()).await;
        assert!(
            rollup.lines().count() > 10,
            "{table}: too few groups to mean anything"
        );
        if rollup != raw {
            let diff: Vec<String> = rollup
                .lines()
                .zip(raw.lines())
                .filter(|(a, b)| a != b)
                .take(3)
                .map(|(a, b)| format!("rollup: {a}\nraw:    {b}"))
                .collect();
            panic!(
                "{table} differs from the raw rows {when}:\n{}",
                diff.join("\n")
            );
        }
    }
    assert_digests_near_exact(db, when).await;
}

/// The org-grain t-digests answer each org's latency and ttft percentiles over the whole
/// fixture within 3% (+2 ms) of the exact values.
async fn assert_digests_near_exact(db: &TestDb, when: &str) {
    for table in ["org_daily", "org_model_daily"] {
        let sql = format!(
            "SELECT r.org_id, r.lq, r.tq, e.lq, e.tq FROM \
             (SELECT org_id, quantilesTDigestMerge(0.5, 0.9, 0.95, 0.99)(latency_digest) AS lq, \
                     quantilesTDigestMerge(0.5, 0.9, 0.95, 0.99)(ttft_digest) AS tq \
              FROM {table} GROUP BY org_id) AS r \
             ANY INNER JOIN \
             (SELECT org_id, quantilesExact(0.5, 0.9, 0.95, 0.99)(latency_ms) AS lq, \
                     quantilesExactIf(0.5, 0.9, 0.95, 0.99)(ifNull(ttft_ms, 0), isNotNull(ttft_ms)) AS tq \
              FROM usage_events GROUP BY org_id) AS e USING org_id ORDER BY org_id"
        );
        let out = tsv(db.client(), &sql).await;
        assert!(out.lines().count() >= 2, "{table}: too few orgs");
        for line in out.lines() {
            let cells: Vec<&str> = line.split('\t').collect();
            let nums = |c: &str| -> Vec<f64> {
                c.trim_matches(|ch| ch == '[' || ch == ']')
                    .split(',')
                    .map(|x| x.parse().unwrap())
                    .collect()
            };
            for (digest, exact) in [(cells[1], cells[3]), (cells[2], cells[4])] {
                for (d, e) in nums(digest).into_iter().zip(nums(exact)) {
                    assert!(
                        (d - e).abs() <= e * 0.03 + 2.0,
                        "{table} {when}, org {}: digest {digest} vs exact {exact}",
                        cells[0]
                    );
                }
            }
        }
    }
}

/// Totals computed in Rust from the records themselves, to catch a mistake shared by the
/// rollup and the raw SQL (rows lost on insert, a wrong filter).
pub(crate) fn expected_totals(records: &[UsageRecord]) -> String {
    let count = |f: &dyn Fn(&UsageRecord) -> bool| records.iter().filter(|r| f(r)).count() as u64;
    let sum = |f: &dyn Fn(&UsageRecord) -> u64| records.iter().map(f).sum::<u64>();
    let cost: i64 = records.iter().map(|r| r.cost_nusd.get()).sum();
    let cost = usage_core::Nanos::new(cost).to_string();
    let mut cols = vec![
        count(&|_| true),
        count(&|r| r.error_class != ErrorClass::None),
        count(&|r| r.error_class == ErrorClass::RateLimited),
        count(&|r| r.error_class == ErrorClass::Aborted),
        count(&|r| r.stream),
        count(&|r| r.usage_source != UsageSource::Provider),
        count(&|r| r.cost_source == CostSource::Unpriced),
        sum(&|r| u64::from(r.input_tokens)),
        sum(&|r| u64::from(r.output_tokens)),
        sum(&|r| u64::from(r.cached_input_tokens)),
        sum(&|r| u64::from(r.cache_write_tokens)),
        sum(&|r| u64::from(r.reasoning_tokens)),
    ]
    .into_iter()
    .map(|n| n.to_string())
    .collect::<Vec<_>>();
    cols.push(cost);
    cols.push(sum(&|r| u64::from(r.ttft_ms.is_some())).to_string());
    cols.join("\t") + "\n"
}

pub(crate) const TOTALS_SQL: &str = "SELECT sum(requests), sum(errors), sum(errors_rate_limited), sum(errors_aborted), \
    sum(streamed_requests), sum(estimated_usage_requests), sum(unpriced_requests), sum(total_input_tokens), \
    sum(total_output_tokens), sum(total_cached_input_tokens), sum(total_cache_write_tokens), \
    sum(total_reasoning_tokens), sum(total_cost_nusd), sum(ttft_count) FROM ";

#[tokio::test]
async fn rollups_equal_aggregates_of_the_raw_rows_before_and_after_merges() {
    let db = TestDb::new().await.unwrap();
    let records = fixture(3000);
    // Five INSERTs: each rollup key has up to five unmerged rows until OPTIMIZE.
    insert_in_batches(db.client(), &records, 5).await;

    let expected = expected_totals(&records);
    for grain in GRAINS {
        let table = grain.table;
        assert_eq!(
            tsv(db.client(), &format!("{TOTALS_SQL}{table}")).await,
            expected,
            "{table}"
        );
    }
    assert_rollups_equal_raw(&db, "before merges").await;

    let rows_before = tsv(db.client(), "SELECT count() FROM usage_daily").await;
    for table in [
        "usage_events",
        "usage_hourly",
        "usage_daily",
        "org_model_daily",
        "org_daily",
    ] {
        db.client()
            .query(&format!("OPTIMIZE TABLE {table} FINAL"))
            .execute()
            .await
            .unwrap();
    }
    let rows_after = tsv(db.client(), "SELECT count() FROM usage_daily").await;
    let groups = tsv(
        db.client(),
        &format!("SELECT count() FROM ({})", GRAINS[1].rollup_sql()),
    )
    .await;
    assert_eq!(
        rows_after, groups,
        "after OPTIMIZE FINAL each key is one row"
    );
    assert!(
        rows_before.trim().parse::<u64>().unwrap() > rows_after.trim().parse::<u64>().unwrap(),
        "the fixture must leave unmerged rows for the 'before' check to mean anything"
    );

    assert_rollups_equal_raw(&db, "after OPTIMIZE FINAL").await;
    for grain in GRAINS {
        let table = grain.table;
        assert_eq!(
            tsv(db.client(), &format!("{TOTALS_SQL}{table}")).await,
            expected,
            "{table} after merges"
        );
    }
}

/// #25 (4): a model's failed calls (nothing served) and its successful ones (a dated variant
/// served) are one row, the model the app asked for.
#[tokio::test]
async fn a_call_is_rolled_up_under_the_model_it_asked_for_whatever_was_served() {
    let db = TestDb::new().await.unwrap();
    let records = fixture(20);
    insert_in_batches(db.client(), &records, 1).await;
    // Coverage record 4 is a 429 with no model_served.
    assert!(records[4].model_served.is_empty());
    let got = tsv(
        db.client(),
        "SELECT model, sum(errors_rate_limited) FROM usage_daily WHERE errors_rate_limited > 0 GROUP BY model ORDER BY model",
    )
    .await;
    assert!(got.lines().any(|l| l.starts_with("gpt-4o\t")), "{got}");
    let served_variants: Vec<String> = records
        .iter()
        .filter(|r| !r.model_served.is_empty() && r.model_served != r.model_requested)
        .map(|r| r.model_served.clone())
        .collect();
    assert!(
        !served_variants.is_empty(),
        "the fixture serves dated variants"
    );
    for table in ["usage_hourly", "usage_daily", "org_model_daily"] {
        let models = tsv(
            db.client(),
            &format!("SELECT DISTINCT model FROM {table} ORDER BY model"),
        )
        .await;
        for v in &served_variants {
            assert!(
                !models.lines().any(|m| m == v),
                "{table} has a row for the served variant {v}: {models}"
            );
        }
    }
}

#[tokio::test]
async fn analyst_views_agree_with_the_rollups() {
    let db = TestDb::new().await.unwrap();
    let records = fixture(1500);
    insert_in_batches(db.client(), &records, 3).await;
    let expected = expected_totals(&records);
    let requests = expected.split('\t').next().unwrap().to_string();
    for view in ["ai_daily_usage", "ai_usage_summary", "ai_model_performance"] {
        let n = tsv(db.client(), &format!("SELECT sum(requests) FROM {view}")).await;
        assert_eq!(n.trim(), requests, "{view}");
    }
    let cost = tsv(db.client(), "SELECT sum(cost_usd) FROM ai_usage_summary").await;
    assert_eq!(cost.trim(), expected.split('\t').nth(12).unwrap());
    // Percentiles come out as numbers, not NaN, and ordered.
    let q = tsv(db.client(), "SELECT p50_latency_ms <= p95_latency_ms AND p95_latency_ms <= p99_latency_ms FROM ai_model_performance").await;
    assert!(q.lines().all(|l| l == "1"), "{q}");
    // #25 (4): failed calls by whose doing, as the raw rows say; the error rate is the
    // provider's, of the calls that reached it (migration 0012).
    let view = tsv(
        db.client(),
        "SELECT sum(errors_provider), sum(errors_client), sum(errors_timeout), sum(errors_gateway), \
         sum(refused_by_gateway) FROM ai_model_performance",
    )
    .await;
    let raw = tsv(
        db.client(),
        "SELECT countIf(error_class IN ('upstream_5xx', 'rate_limited', 'network')), \
         countIf(error_class IN ('client', 'aborted')), countIf(error_class = 'timeout'), \
         countIf(error_class IN ('budget_blocked', 'internal')), \
         countIf(error_class = 'budget_blocked') FROM usage_events",
    )
    .await;
    assert_eq!(view, raw);
    assert!(
        raw.split('\t')
            .map(|n| n.trim().parse::<u64>().unwrap())
            .sum::<u64>()
            > 0,
        "the fixture has failed calls"
    );
    let rates = tsv(
        db.client(),
        "SELECT provider, model, round(error_rate, 9) FROM ai_model_performance \
         WHERE requests > refused_by_gateway ORDER BY day, org_id, provider, model",
    )
    .await;
    let raw_rates = tsv(
        db.client(),
        "SELECT provider, model, round((countIf(error_class != 'none') - countIf(error_class = 'budget_blocked')) \
         / (count() - countIf(error_class = 'budget_blocked')), 9) FROM usage_events \
         GROUP BY toDate(ts) AS day, org_id, provider, model_requested AS model \
         HAVING count() > countIf(error_class = 'budget_blocked') ORDER BY day, org_id, provider, model",
    )
    .await;
    assert_eq!(rates, raw_rates);
}
