//! The dashboard's named queries: each `clickhouse/queries/<name>.sql`, its row type (column
//! for column, in order — RowBinary is positional and validation is off), and a function that
//! binds it.
//!
//! [`Scope`] is the tenant predicate. It is chosen by dashboard-api from the caller's token and
//! replaces `{scope}` with fixed SQL text whose values are bound, never spliced.
//!
//! [`DailyRollup`] is the daily table a query reads: files that say `FROM {daily}` are answered
//! from the coarsest rollup that can answer for the scope and filters (migration 0008 explains
//! the three grains).

use clickhouse::{Client, Row};
use serde::Deserialize;
use time::{Date, OffsetDateTime};

use crate::config::read_query;
use crate::error::Result;

/// A named query: its file name (without `.sql`) and text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NamedQuery {
    pub name: &'static str,
    pub sql: &'static str,
}

macro_rules! named_query {
    ($const:ident, $name:literal) => {
        #[doc = concat!("`clickhouse/queries/", $name, ".sql`")]
        pub const $const: NamedQuery = NamedQuery {
            name: $name,
            sql: include_str!(concat!("../queries/", $name, ".sql")),
        };
    };
}

named_query!(DAILY_OVERVIEW, "daily_overview");
named_query!(DAILY_OVERVIEW_RAW, "daily_overview_raw");
named_query!(OVERVIEW_TOTALS, "overview_totals");
named_query!(HOURLY_TIMESERIES, "hourly_timeseries");
named_query!(BY_PROVIDER, "by_provider");
named_query!(MODEL_PERFORMANCE, "model_performance");
named_query!(TOP_SPENDERS, "top_spenders");

/// The named queries whose row types live here (dashboard-api keeps others next to its
/// handlers; the compat check runs every file in `queries/`).
pub const ALL: &[NamedQuery] = &[
    DAILY_OVERVIEW,
    DAILY_OVERVIEW_RAW,
    OVERVIEW_TOTALS,
    HOURLY_TIMESERIES,
    BY_PROVIDER,
    MODEL_PERFORMANCE,
    TOP_SPENDERS,
];

/// Whose data a query may see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every org (role `admin`).
    AllOrgs,
    /// One org (`org_admin`, or `viewer` without a user).
    Org { org_id: String },
    /// One user of one org (`viewer` bound to a user; per-user budgets).
    OrgUser { org_id: String, user_id: String },
    /// One app of one org (app budgets).
    OrgApp { org_id: String, app_id: String },
}

impl Scope {
    /// The SQL that replaces `{scope}`; [`NamedQuery::scoped`] binds its `?`.
    pub fn predicate(&self) -> &'static str {
        match self {
            Scope::AllOrgs => "1 = 1",
            Scope::Org { .. } => "org_id = ?",
            Scope::OrgUser { .. } => "org_id = ? AND user_id = ?",
            Scope::OrgApp { .. } => "org_id = ? AND app_id = ?",
        }
    }

    fn bind(&self, q: clickhouse::query::Query) -> clickhouse::query::Query {
        match self {
            Scope::AllOrgs => q,
            Scope::Org { org_id } => q.bind(org_id.as_str()),
            Scope::OrgUser { org_id, user_id } => q.bind(org_id.as_str()).bind(user_id.as_str()),
            Scope::OrgApp { org_id, app_id } => q.bind(org_id.as_str()).bind(app_id.as_str()),
        }
    }
}

/// A [`Scope`] plus optional provider and model filters; every value is bound, never spliced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub scope: Scope,
    pub provider: Option<String>,
    pub model: Option<String>,
}

impl Filter {
    /// The daily rollup that answers for this scope and these filters.
    pub fn rollup(&self) -> DailyRollup {
        DailyRollup::choose(&self.scope, self.provider.is_some() || self.model.is_some())
    }

    fn predicate(&self) -> String {
        let mut p = format!("({})", self.scope.predicate());
        if self.provider.is_some() {
            p.push_str(" AND provider = ?");
        }
        if self.model.is_some() {
            p.push_str(" AND model = ?");
        }
        p
    }

    /// `nq` with `{scope}` replaced and the filter's values bound; bind the rest in the order
    /// of the file's `-- params:` line. `{daily}` reads [`Filter::rollup`].
    pub fn query(&self, client: &Client, nq: &NamedQuery) -> clickhouse::query::Query {
        let sql = nq.on(self.rollup()).replace("{scope}", &self.predicate());
        let mut q = self.scope.bind(read_query(client, &sql));
        if let Some(p) = &self.provider {
            q = q.bind(p.as_str());
        }
        if let Some(m) = &self.model {
            q = q.bind(m.as_str());
        }
        q
    }
}

/// The daily rollup a query reads: what fills a named query's `{daily}` and the placeholders
/// whose SQL depends on the table's state columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DailyRollup {
    /// `org_daily`: one row per org and day (0008).
    OrgDaily,
    /// `org_model_daily`: per org, day, provider and model (0008).
    OrgModelDaily,
    /// `usage_daily`: per org, day, user, app, provider, model and task type (0002).
    UsageDaily,
}

impl DailyRollup {
    /// The coarsest rollup that answers for `scope`; `narrowed` when provider or model filters
    /// apply. A file that groups by provider or model lists no `org_daily` in its `-- daily:`
    /// header and is moved to the next finer table by [`NamedQuery::on`].
    pub fn choose(scope: &Scope, narrowed: bool) -> DailyRollup {
        match scope {
            Scope::OrgUser { .. } | Scope::OrgApp { .. } => DailyRollup::UsageDaily,
            Scope::AllOrgs | Scope::Org { .. } if narrowed => DailyRollup::OrgModelDaily,
            Scope::AllOrgs | Scope::Org { .. } => DailyRollup::OrgDaily,
        }
    }

    pub fn table(self) -> &'static str {
        match self {
            DailyRollup::OrgDaily => "org_daily",
            DailyRollup::OrgModelDaily => "org_model_daily",
            DailyRollup::UsageDaily => "usage_daily",
        }
    }

    /// `(placeholder, SQL)` for this table. The org-grain tables keep t-digest and distinct-id
    /// states; usage_daily keeps reservoir states and has the ids themselves.
    fn placeholders(self) -> [(&'static str, &'static str); 5] {
        let org_grain = [
            (
                "{latency_quantiles}",
                "quantilesTDigestMerge(0.5, 0.9, 0.95, 0.99)(latency_digest)",
            ),
            (
                "{ttft_quantiles}",
                "quantilesTDigestMerge(0.5, 0.9, 0.95, 0.99)(ttft_digest)",
            ),
            ("{active_users}", "uniqExactMerge(users_state)"),
            ("{active_apps}", "uniqExactMerge(apps_state)"),
            ("{daily}", self.table()),
        ];
        match self {
            DailyRollup::OrgDaily | DailyRollup::OrgModelDaily => org_grain,
            DailyRollup::UsageDaily => [
                (
                    "{latency_quantiles}",
                    "quantilesMerge(0.5, 0.9, 0.95, 0.99)(latency_quantiles)",
                ),
                (
                    "{ttft_quantiles}",
                    "quantilesMerge(0.5, 0.9, 0.95, 0.99)(ttft_quantiles)",
                ),
                ("{active_users}", "uniqExact(user_id)"),
                ("{active_apps}", "uniqExact(app_id)"),
                ("{daily}", self.table()),
            ],
        }
    }
}

impl NamedQuery {
    /// The query with `{scope}` filled in and its scope values bound; bind the rest in the
    /// order of the file's `-- params:` line. `{daily}` reads the coarsest rollup for `scope`.
    pub fn scoped(&self, client: &Client, scope: &Scope) -> clickhouse::query::Query {
        let sql = self
            .on(DailyRollup::choose(scope, false))
            .replace("{scope}", scope.predicate());
        scope.bind(read_query(client, &sql))
    }

    /// The tables this file's `{daily}` may name (its `-- daily:` header; none: the file reads
    /// no rollup through `{daily}`).
    pub fn rollups(&self) -> Vec<DailyRollup> {
        let Some(line) = self.sql.lines().find_map(|l| l.strip_prefix("-- daily:")) else {
            return Vec::new();
        };
        let all = [
            DailyRollup::OrgDaily,
            DailyRollup::OrgModelDaily,
            DailyRollup::UsageDaily,
        ];
        line.split(',')
            .filter_map(|name| all.into_iter().find(|r| r.table() == name.trim()))
            .collect()
    }

    /// [`NamedQuery::body`] reading `rollup`, or the next finer table the file allows (a file
    /// grouped by model cannot read `org_daily`).
    pub fn on(&self, rollup: DailyRollup) -> String {
        let body = self.body();
        let Some(table) = self.rollups().into_iter().filter(|r| *r >= rollup).min() else {
            return body;
        };
        table
            .placeholders()
            .iter()
            .fold(body, |sql, (placeholder, text)| {
                sql.replace(placeholder, text)
            })
    }

    /// [`NamedQuery::scoped`] with the UTC days `[from, to)` bound next (files whose
    /// `-- params:` line starts `from, to`).
    pub fn over_days(
        &self,
        client: &Client,
        scope: &Scope,
        from: Date,
        to: Date,
    ) -> clickhouse::query::Query {
        self.scoped(client, scope)
            .bind(day_param(from))
            .bind(day_param(to))
    }

    /// The SQL without its comment lines: the client's `?` binder does not know `--` comments
    /// (an apostrophe there would open a "string" and hide the placeholders after it).
    pub fn body(&self) -> String {
        self.sql
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// `'YYYY-MM-DD'`, how days are bound.
pub fn day_param(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// `'YYYY-MM-DD hh:mm:ss'` in UTC, how hours are bound.
pub fn hour_param(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{} {:02}:{:02}:{:02}",
        day_param(t.date()),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A row of `daily_overview` (and of `daily_overview_raw`, which must be equal).
#[derive(Clone, Debug, PartialEq, Eq, Row, Deserialize)]
pub struct DailyOverviewRow {
    #[serde(with = "clickhouse::serde::time::date")]
    pub day: Date,
    pub requests: u64,
    pub errors: u64,
    pub unpriced_requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    /// Nano-USD (`Decimal(38,9)`).
    pub cost_usd: i128,
    pub total_latency_ms: u64,
}

/// Daily totals of `scope` for the UTC days `[from, to)`.
pub async fn daily_overview(
    client: &Client,
    scope: &Scope,
    from: Date,
    to: Date,
) -> Result<Vec<DailyOverviewRow>> {
    Ok(DAILY_OVERVIEW
        .over_days(client, scope, from, to)
        .fetch_all()
        .await?)
}

/// [`daily_overview`] computed from the raw table (benchmark and tests only).
pub async fn daily_overview_raw(
    client: &Client,
    scope: &Scope,
    from: Date,
    to: Date,
) -> Result<Vec<DailyOverviewRow>> {
    Ok(DAILY_OVERVIEW_RAW
        .over_days(client, scope, from, to)
        .fetch_all()
        .await?)
}

/// The row of `overview_totals`.
#[derive(Clone, Debug, PartialEq, Row, Deserialize)]
pub struct OverviewTotalsRow {
    pub requests: u64,
    pub errors: u64,
    pub unpriced_requests: u64,
    pub streamed_requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    /// Nano-USD.
    pub cost_usd: i128,
    pub active_users: u64,
    pub active_apps: u64,
    pub avg_latency_ms: f64,
    /// p50, p90, p95, p99.
    pub latency_quantiles_ms: Vec<f64>,
}

/// Headline totals of `scope` for the UTC days `[from, to)`.
pub async fn overview_totals(
    client: &Client,
    scope: &Scope,
    from: Date,
    to: Date,
) -> Result<OverviewTotalsRow> {
    Ok(OVERVIEW_TOTALS
        .over_days(client, scope, from, to)
        .fetch_one()
        .await?)
}

/// A row of `hourly_timeseries`.
#[derive(Clone, Debug, PartialEq, Eq, Row, Deserialize)]
pub struct HourlyRow {
    #[serde(with = "clickhouse::serde::time::datetime")]
    pub hour: OffsetDateTime,
    pub requests: u64,
    pub errors: u64,
    pub rate_limited: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Nano-USD.
    pub cost_usd: i128,
}

/// Hourly totals of `scope` for `[from, to)` (hours with no calls are absent).
pub async fn hourly_timeseries(
    client: &Client,
    scope: &Scope,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<Vec<HourlyRow>> {
    Ok(HOURLY_TIMESERIES
        .scoped(client, scope)
        .bind(hour_param(from))
        .bind(hour_param(to))
        .fetch_all()
        .await?)
}

/// A row of `by_provider`.
#[derive(Clone, Debug, PartialEq, Eq, Row, Deserialize)]
pub struct ProviderRow {
    pub provider: String,
    pub requests: u64,
    pub errors: u64,
    pub unpriced_requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Nano-USD.
    pub cost_usd: i128,
}

/// Per-provider totals of `scope` for the UTC days `[from, to)`, most expensive first.
pub async fn by_provider(
    client: &Client,
    scope: &Scope,
    from: Date,
    to: Date,
) -> Result<Vec<ProviderRow>> {
    Ok(BY_PROVIDER
        .over_days(client, scope, from, to)
        .fetch_all()
        .await?)
}

/// A row of `model_performance`.
#[derive(Clone, Debug, PartialEq, Row, Deserialize)]
pub struct ModelPerformanceRow {
    pub provider: String,
    pub model: String,
    pub requests: u64,
    /// The provider's errors (every failed call but Tollgate's own budget refusals).
    pub errors: u64,
    /// Calls Tollgate's budgets refused (they never reached the provider).
    pub refused_by_gateway: u64,
    pub errors_client: u64,
    pub errors_rate_limited: u64,
    pub errors_upstream_5xx: u64,
    pub errors_timeout: u64,
    pub errors_aborted: u64,
    pub streamed_requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
    /// Nano-USD.
    pub cost_usd: i128,
    pub avg_latency_ms: f64,
    /// p50, p90, p95, p99.
    pub latency_quantiles_ms: Vec<f64>,
    pub ttft_count: u64,
    pub avg_ttft_ms: f64,
    /// p50, p90, p95, p99 (zeros when no call had a first byte).
    pub ttft_quantiles_ms: Vec<f64>,
    pub output_tokens_per_second: f64,
}

/// Per provider and model behaviour of `scope` for the UTC days `[from, to)`.
pub async fn model_performance(
    client: &Client,
    scope: &Scope,
    from: Date,
    to: Date,
) -> Result<Vec<ModelPerformanceRow>> {
    Ok(MODEL_PERFORMANCE
        .over_days(client, scope, from, to)
        .fetch_all()
        .await?)
}

/// A row of `top_spenders`.
#[derive(Clone, Debug, PartialEq, Eq, Row, Deserialize)]
pub struct SpenderRow {
    pub org_id: String,
    pub user_id: String,
    pub app_id: String,
    pub requests: u64,
    pub total_tokens: u64,
    /// Nano-USD.
    pub cost_usd: i128,
}

/// The `limit` (user, app) pairs of `scope` that spent most in the UTC days `[from, to)`.
pub async fn top_spenders(
    client: &Client,
    scope: &Scope,
    from: Date,
    to: Date,
    limit: u32,
) -> Result<Vec<SpenderRow>> {
    Ok(TOP_SPENDERS
        .over_days(client, scope, from, to)
        .bind(limit)
        .fetch_all()
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_extend_the_scope_predicate_in_binding_order() {
        let f = Filter {
            scope: Scope::Org { org_id: "o".into() },
            provider: Some("openai".into()),
            model: None,
        };
        assert_eq!(f.predicate(), "(org_id = ?) AND provider = ?");
        let all = Filter {
            scope: Scope::AllOrgs,
            provider: None,
            model: Some("m".into()),
        };
        assert_eq!(all.predicate(), "(1 = 1) AND model = ?");
    }
    use time::macros::{date, datetime};

    /// Every scoped query file (top level of `queries/`; dashboard-api loads some of them with
    /// its own row types) documents its parameters, and the compat check can bind it from that.
    #[test]
    fn every_query_file_documents_its_params() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("queries");
        let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "sql"))
            .map(|p| {
                let name = p.file_stem().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&p).unwrap())
            })
            .collect();
        files.sort();
        for q in ALL {
            assert!(
                files.iter().any(|(n, sql)| n == q.name && sql == q.sql),
                "{} is not a file in queries/",
                q.name
            );
        }
        for (name, sql) in &files {
            let params = sql
                .lines()
                .find_map(|l| l.strip_prefix("-- params: "))
                .unwrap_or_else(|| panic!("{name} has no `-- params:` line"));
            assert!(params.starts_with("{scope}"), "{name}");
            let declared = params.split(", ").count() - 1;
            let body: String = sql
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect();
            assert_eq!(
                body.matches('?').count(),
                declared,
                "{name}: `?` count vs -- params"
            );
            assert_eq!(body.matches("{scope}").count(), 1, "{name}");
        }
    }

    /// A file's `{daily}` names the coarsest table its header allows for the scope, and every
    /// placeholder is filled for every table it may read; user and app scopes always read
    /// usage_daily.
    #[test]
    fn rollup_files_read_the_coarsest_table_that_answers() {
        let org = Scope::Org { org_id: "o".into() };
        let user = Scope::OrgUser {
            org_id: "o".into(),
            user_id: "u".into(),
        };
        let daily = |q: &NamedQuery, scope: &Scope, narrowed: bool| {
            let sql = q.on(DailyRollup::choose(scope, narrowed));
            assert!(
                !sql.replace("{scope}", "").contains('{'),
                "{}: unfilled placeholder",
                q.name
            );
            ["org_daily", "org_model_daily", "usage_daily"]
                .into_iter()
                .find(|t| sql.contains(&format!("FROM {t}")))
                .unwrap_or_else(|| panic!("{} reads no rollup", q.name))
        };
        assert_eq!(daily(&OVERVIEW_TOTALS, &Scope::AllOrgs, false), "org_daily");
        assert_eq!(daily(&OVERVIEW_TOTALS, &org, true), "org_model_daily");
        assert_eq!(daily(&OVERVIEW_TOTALS, &user, false), "usage_daily");
        assert_eq!(daily(&DAILY_OVERVIEW, &org, false), "org_daily");
        // Grouped by provider/model: never org_daily.
        assert_eq!(daily(&BY_PROVIDER, &org, false), "org_model_daily");
        assert_eq!(
            daily(&MODEL_PERFORMANCE, &Scope::AllOrgs, false),
            "org_model_daily"
        );
        assert_eq!(daily(&MODEL_PERFORMANCE, &user, true), "usage_daily");
        assert!(OVERVIEW_TOTALS
            .on(DailyRollup::UsageDaily)
            .contains("quantilesMerge(0.5, 0.9, 0.95, 0.99)(latency_quantiles)"));
        assert!(OVERVIEW_TOTALS
            .on(DailyRollup::OrgDaily)
            .contains("uniqExactMerge(users_state)"));
        // Files without `{daily}` are untouched.
        assert_eq!(TOP_SPENDERS.on(DailyRollup::OrgDaily), TOP_SPENDERS.body());
    }

    #[test]
    fn params_are_utc_text() {
        assert_eq!(day_param(date!(2026 - 01 - 05)), "2026-01-05");
        assert_eq!(
            hour_param(datetime!(2026-01-05 03:00:00 +02:00)),
            "2026-01-05 01:00:00"
        );
    }
}
