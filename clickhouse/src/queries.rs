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
//!
//! # Windows that are not whole days (or hours)
//!
//! A window of whole UTC days reads the daily rollups, a window of whole hours the hourly one.
//! Any other window — `[06:24:00, 06:24:30)`, or "the last 24 hours" ending now — is answered
//! exactly by [`Filter::query_over`]: `{daily}` (or `{hourly}`) becomes the union of
//! `usage_daily` for the whole days inside the window, `usage_hourly` for the whole hours
//! around them, and the raw rows of the partial hours at either end, aggregated by the hourly
//! view's own query (read from its migration, so the two cannot differ). The union has the
//! columns of `usage_daily` (and `day`, or `hour`), so the file's own `WHERE {scope} AND day …`
//! and aggregates apply unchanged; its usage-grain placeholders are used. See [`Pieces`].

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use clickhouse::{Client, Row};
use serde::Deserialize;

use crate::config::read_query;
use crate::error::Result;
use crate::integrity::view_query;

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
// Every org: an org id with an admin token or an app key (orgs have no table of their own).
// Read in the key and token database; used by the default rules and the analyst roles.
named_query!(ORGS_WITH_KEYS, "admin/default_rule_orgs");

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

    /// The values [`Filter::predicate`]'s `?` take, in order.
    fn values(&self) -> Vec<&str> {
        let mut v = match &self.scope {
            Scope::AllOrgs => vec![],
            Scope::Org { org_id } => vec![org_id.as_str()],
            Scope::OrgUser { org_id, user_id } => vec![org_id.as_str(), user_id.as_str()],
            Scope::OrgApp { org_id, app_id } => vec![org_id.as_str(), app_id.as_str()],
        };
        v.extend(self.provider.as_deref());
        v.extend(self.model.as_deref());
        v
    }

    /// `nq` with `{scope}` replaced and the filter's values bound; bind the rest in the order
    /// of the file's `-- params:` line. `{daily}` reads [`Filter::rollup`].
    pub fn query(&self, client: &Client, nq: &NamedQuery) -> clickhouse::query::Query {
        let sql = nq.on(self.rollup()).replace("{scope}", &self.predicate());
        self.values()
            .into_iter()
            .fold(read_query(client, &sql), |q, v| q.bind(v))
    }

    /// [`Filter::query`] for the exact window `[from, to)` (module docs): a file whose
    /// `{daily}` (`{hourly}`) the window does not cover in whole days (hours) reads the union
    /// of the rollups and the raw rows that covers it exactly. Bind next what the file's
    /// `-- params:` line lists, as for [`Filter::query`]: the days (hours) the window touches.
    pub fn query_over(
        &self,
        client: &Client,
        nq: &NamedQuery,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<clickhouse::query::Query> {
        let body = nq.body();
        let grain = if body.contains("{daily}") {
            Grain::Day
        } else if body.contains("{hourly}") {
            Grain::Hour
        } else {
            return Ok(self.query(client, nq));
        };
        let pieces = Pieces::of(from, to, grain);
        let whole_buckets = match grain {
            Grain::Day => pieces.hours.is_empty() && pieces.raw.is_empty(),
            Grain::Hour => pieces.raw.is_empty(),
        };
        if whole_buckets {
            return Ok(self.query(client, nq));
        }
        let (source, source_values) = self.exact_source(&pieces, grain)?;
        let sql = DailyRollup::UsageDaily
            .placeholders()
            .iter()
            .filter(|(placeholder, _)| !["{daily}", "{hourly}"].contains(placeholder))
            .fold(body, |sql, (placeholder, text)| {
                sql.replace(placeholder, text)
            })
            .replace(grain.placeholder(), &source)
            .replace("{scope}", &self.predicate());
        Ok(source_values
            .iter()
            .map(String::as_str)
            .chain(self.values())
            .fold(read_query(client, &sql), |q, v| q.bind(v)))
    }

    /// The union that replaces `{daily}` / `{hourly}` for `pieces`, and its `?` values in order.
    fn exact_source(&self, pieces: &Pieces, grain: Grain) -> Result<(String, Vec<String>)> {
        let pred = self.predicate();
        let key = match grain {
            Grain::Day => "toDate(hour) AS day",
            Grain::Hour => "hour",
        };
        let ranges = |column: &str, n: usize| {
            let one =
                format!("({column} >= toDateTime(?, 'UTC') AND {column} < toDateTime(?, 'UTC'))");
            vec![one; n].join(" OR ")
        };
        let mut branches = Vec::new();
        let mut values: Vec<String> = Vec::new();
        let filter_values = || self.values().into_iter().map(str::to_string);
        if let Some((first, end)) = pieces.days {
            branches.push(format!(
                "SELECT day, {USAGE_COLUMNS} FROM usage_daily \
                 WHERE {pred} AND day >= toDate(?) AND day < toDate(?)"
            ));
            values.extend(filter_values());
            values.extend([day_param(first), day_param(end)]);
        }
        if !pieces.hours.is_empty() {
            branches.push(format!(
                "SELECT {key}, {USAGE_COLUMNS} FROM usage_hourly WHERE {pred} AND ({})",
                ranges("hour", pieces.hours.len())
            ));
            values.extend(filter_values());
            for (a, b) in &pieces.hours {
                values.extend([hour_param(*a), hour_param(*b)]);
            }
        }
        if !pieces.raw.is_empty() {
            let scope = self.scope.predicate();
            let raw = format!(
                "FROM (SELECT * FROM usage_events WHERE ({scope}) AND ({}))",
                ranges("ts", pieces.raw.len())
            );
            let view = hourly_view_query()?.replacen("FROM usage_events", &raw, 1);
            branches.push(format!(
                "SELECT {key}, {USAGE_COLUMNS} FROM ({view}) WHERE {pred}"
            ));
            values.extend(self.scope_values().into_iter().map(str::to_string));
            for (a, b) in &pieces.raw {
                values.extend([hour_param(*a), hour_param(*b)]);
            }
            values.extend(filter_values());
        }
        Ok((
            format!("({})", branches.join("\n    UNION ALL\n    ")),
            values,
        ))
    }

    fn scope_values(&self) -> Vec<&str> {
        let n = self.scope.predicate().matches('?').count();
        self.values().into_iter().take(n).collect()
    }
}

/// `usage_hourly_mv`'s query, read once from the migrations (every window that is not whole
/// hours needs it; scanning the migration texts per request was needless work).
fn hourly_view_query() -> Result<&'static str> {
    static QUERY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(q) = QUERY.get() {
        return Ok(q);
    }
    let q = view_query("usage_hourly_mv")?;
    Ok(QUERY.get_or_init(|| q))
}

/// The columns `usage_daily` and `usage_hourly` share (all but the bucket), which the hourly
/// view also produces: what an exact window's union selects from each.
pub const USAGE_COLUMNS: &str = "org_id, user_id, app_id, provider, model, task_type, \
    requests, errors, errors_client, errors_rate_limited, errors_upstream_5xx, errors_timeout, \
    errors_aborted, errors_budget_blocked, errors_network, errors_internal, streamed_requests, \
    estimated_usage_requests, unpriced_requests, total_input_tokens, total_output_tokens, \
    total_cached_input_tokens, total_cache_write_tokens, total_reasoning_tokens, \
    total_cost_nusd, total_request_bytes, total_response_bytes, total_latency_ms, \
    total_upstream_ms, total_ttft_ms, ttft_count, latency_quantiles, ttft_quantiles";

/// The bucket a file reads: `{daily}` or `{hourly}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grain {
    Day,
    Hour,
}

impl Grain {
    fn placeholder(self) -> &'static str {
        match self {
            Grain::Day => "{daily}",
            Grain::Hour => "{hourly}",
        }
    }
}

/// A window `[from, to)` cut into what answers it exactly: whole UTC days (`usage_daily`; only
/// for [`Grain::Day`]), whole hours (`usage_hourly`) and the partial hours at either end (raw
/// rows). Raw rows have whole-second timestamps, so a fractional `from` or `to` is rounded up
/// to the next second: `ts >= 10.5` and `ts >= 11` select the same rows, as do `ts < 10.5`
/// and `ts < 11`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pieces {
    pub days: Option<(NaiveDate, NaiveDate)>,
    pub hours: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    pub raw: Vec<(DateTime<Utc>, DateTime<Utc>)>,
}

impl Pieces {
    pub fn of(from: DateTime<Utc>, to: DateTime<Utc>, grain: Grain) -> Pieces {
        const HOUR: i64 = 3600;
        const DAY: i64 = 86_400;
        let secs = |t: DateTime<Utc>| t.timestamp() + i64::from(t.nanosecond() > 0);
        // Rounding a time between 1970 and 2100 (the API's bounds) to a day stays in range.
        let at = |s: i64| DateTime::from_timestamp_secs(s).unwrap_or(DateTime::UNIX_EPOCH);
        let (from, to) = (secs(from), secs(to));
        let mut p = Pieces {
            days: None,
            hours: Vec::new(),
            raw: Vec::new(),
        };
        if from >= to {
            return p;
        }
        let (first_hour, end_hour) = (ceil(from, HOUR), floor(to, HOUR));
        if first_hour >= end_hour {
            p.raw.push((at(from), at(to)));
            return p;
        }
        if from < first_hour {
            p.raw.push((at(from), at(first_hour)));
        }
        if end_hour < to {
            p.raw.push((at(end_hour), at(to)));
        }
        let (first_day, end_day) = (ceil(first_hour, DAY), floor(end_hour, DAY));
        if grain == Grain::Hour || first_day >= end_day {
            p.hours.push((at(first_hour), at(end_hour)));
            return p;
        }
        p.days = Some((at(first_day).date_naive(), at(end_day).date_naive()));
        if first_hour < first_day {
            p.hours.push((at(first_hour), at(first_day)));
        }
        if end_day < end_hour {
            p.hours.push((at(end_day), at(end_hour)));
        }
        p
    }
}

fn floor(t: i64, unit: i64) -> i64 {
    t.div_euclid(unit) * unit
}

fn ceil(t: i64, unit: i64) -> i64 {
    floor(t + unit - 1, unit)
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
    /// states; usage_daily keeps reservoir states and has the ids themselves. `{hourly}` is
    /// always `usage_hourly` (exact windows: [`Filter::query_over`]).
    fn placeholders(self) -> [(&'static str, &'static str); 6] {
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
            ("{hourly}", "usage_hourly"),
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
                // Named users only: calls without a user are not an active user (0010).
                ("{active_users}", "uniqExactIf(user_id, user_id != '')"),
                ("{active_apps}", "uniqExact(app_id)"),
                ("{daily}", self.table()),
                ("{hourly}", "usage_hourly"),
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
        let body = self.body().replace("{hourly}", "usage_hourly");
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
        from: NaiveDate,
        to: NaiveDate,
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
pub fn day_param(d: NaiveDate) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
}

/// `'YYYY-MM-DD hh:mm:ss'` in UTC, how hours are bound.
pub fn hour_param(t: DateTime<Utc>) -> String {
    format!(
        "{} {:02}:{:02}:{:02}",
        day_param(t.date_naive()),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A row of `daily_overview` (and of `daily_overview_raw`, which must be equal).
#[derive(Clone, Debug, PartialEq, Eq, Row, Deserialize)]
pub struct DailyOverviewRow {
    #[serde(with = "clickhouse::serde::chrono::date")]
    pub day: NaiveDate,
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
    from: NaiveDate,
    to: NaiveDate,
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
    from: NaiveDate,
    to: NaiveDate,
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
    from: NaiveDate,
    to: NaiveDate,
) -> Result<OverviewTotalsRow> {
    Ok(OVERVIEW_TOTALS
        .over_days(client, scope, from, to)
        .fetch_one()
        .await?)
}

/// A row of `hourly_timeseries`.
#[derive(Clone, Debug, PartialEq, Eq, Row, Deserialize)]
pub struct HourlyRow {
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    pub hour: DateTime<Utc>,
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
    from: DateTime<Utc>,
    to: DateTime<Utc>,
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
    from: NaiveDate,
    to: NaiveDate,
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
    pub errors_network: u64,
    pub errors_internal: u64,
}

/// Per provider and model behaviour of `scope` for the UTC days `[from, to)`.
pub async fn model_performance(
    client: &Client,
    scope: &Scope,
    from: NaiveDate,
    to: NaiveDate,
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
    from: NaiveDate,
    to: NaiveDate,
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
    use chrono::TimeDelta;
    use usage_core::{utc, ymd};

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

    /// A window is cut into whole days, whole hours and raw partial hours that cover it
    /// exactly once; a fractional second rounds up (timestamps are whole seconds).
    #[test]
    fn a_window_is_cut_into_days_hours_and_raw_edges() {
        let p = Pieces::of(
            utc(2026, 11, 1, 6, 24, 0),
            utc(2026, 11, 4, 1, 30, 30),
            Grain::Day,
        );
        assert_eq!(p.days, Some((ymd(2026, 11, 2), ymd(2026, 11, 4))));
        assert_eq!(
            p.hours,
            vec![
                (utc(2026, 11, 1, 7, 0, 0), utc(2026, 11, 2, 0, 0, 0)),
                (utc(2026, 11, 4, 0, 0, 0), utc(2026, 11, 4, 1, 0, 0)),
            ]
        );
        assert_eq!(
            p.raw,
            vec![
                (utc(2026, 11, 1, 6, 24, 0), utc(2026, 11, 1, 7, 0, 0)),
                (utc(2026, 11, 4, 1, 0, 0), utc(2026, 11, 4, 1, 30, 30)),
            ]
        );
        // Hourly buckets: no days.
        let p = Pieces::of(
            utc(2026, 11, 1, 6, 24, 0),
            utc(2026, 11, 4, 1, 30, 30),
            Grain::Hour,
        );
        assert_eq!(p.days, None);
        assert_eq!(
            p.hours,
            vec![(utc(2026, 11, 1, 7, 0, 0), utc(2026, 11, 4, 1, 0, 0))]
        );
        // Inside one hour: raw only; whole days: days only.
        let p = Pieces::of(
            utc(2026, 11, 1, 6, 24, 0) + TimeDelta::milliseconds(500),
            utc(2026, 11, 1, 6, 24, 30),
            Grain::Day,
        );
        assert_eq!(
            (p.days, p.hours.len(), p.raw),
            (
                None,
                0,
                vec![(utc(2026, 11, 1, 6, 24, 1), utc(2026, 11, 1, 6, 24, 30))]
            )
        );
        let p = Pieces::of(
            utc(2026, 11, 1, 0, 0, 0),
            utc(2026, 11, 3, 0, 0, 0),
            Grain::Day,
        );
        assert_eq!(
            (p.days, p.hours.len(), p.raw.len()),
            (Some((ymd(2026, 11, 1), ymd(2026, 11, 3))), 0, 0)
        );
        // Whole hours within one day.
        let p = Pieces::of(
            utc(2026, 11, 1, 6, 0, 0),
            utc(2026, 11, 1, 9, 0, 0),
            Grain::Day,
        );
        assert_eq!(
            (p.days, p.hours, p.raw.len()),
            (
                None,
                vec![(utc(2026, 11, 1, 6, 0, 0), utc(2026, 11, 1, 9, 0, 0))],
                0
            )
        );
    }

    #[test]
    fn params_are_utc_text() {
        assert_eq!(day_param(ymd(2026, 1, 5)), "2026-01-05");
        assert_eq!(
            hour_param(utc(2026, 1, 5, 3, 0, 0) - TimeDelta::minutes(120)),
            "2026-01-05 01:00:00"
        );
    }
}
