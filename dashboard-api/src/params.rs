//! Query parameters of the analytics endpoints, parsed strictly: every problem is a 400 that
//! names the parameter, and unknown parameters are refused (a typo such as `form=` must not
//! silently widen a query).
//!
//! Time: `from` and `to` are RFC 3339 instants or `YYYY-MM-DD` dates (UTC), between 1970-01-01
//! and 2100-01-01 ([`EARLIEST`], [`LATEST`]). A date `to` means the end of that day, so
//! `from=2026-11-01&to=2026-11-30` is all of November. The window is `[from, to)`; default: the
//! 30 days up to now. Daily figures cover the UTC days the window touches.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, TimeDelta, Timelike, Utc};

use crate::error::ApiError;

/// Hourly or daily buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Hour,
    Day,
}

/// A time window `[from, to)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Window {
    /// The UTC days the window touches: `[first, end)`.
    pub fn days(&self) -> (NaiveDate, NaiveDate) {
        let first = self.from.date_naive();
        let end = if self.to.time() == NaiveTime::MIN {
            self.to.date_naive()
        } else {
            self.to
                .date_naive()
                .succ_opt()
                .unwrap_or(self.to.date_naive())
        };
        (first, end.max(first))
    }

    /// The hours the window touches: `[first, end)`, whole hours.
    pub fn hours(&self) -> (DateTime<Utc>, DateTime<Utc>) {
        let floor = |t: DateTime<Utc>| {
            t.with_minute(0)
                .and_then(|t| t.with_second(0))
                .and_then(|t| t.with_nanosecond(0))
                .unwrap_or(t)
        };
        let first = floor(self.from);
        let end = if floor(self.to) == self.to {
            self.to
        } else {
            floor(self.to) + TimeDelta::hours(1)
        };
        (first, end)
    }

    /// The window of the same length just before this one (for period-over-period comparison).
    pub fn previous(&self) -> Window {
        let len = self.to - self.from;
        Window {
            from: self.from - len,
            to: self.from,
        }
    }
}

/// Parsed analytics parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    pub window: Window,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub granularity: Granularity,
    pub org: Option<String>,
    pub user: Option<String>,
    pub limit: u32,
    pub format: Option<String>,
    /// Days ahead a projection covers (1–365, default 30).
    pub horizon_days: u32,
}

/// Limits the parser enforces.
#[derive(Clone, Debug)]
pub struct Limits<'a> {
    pub providers: &'a [String],
    pub max_range_days: u32,
    pub max_hourly_range_days: u32,
}

const KNOWN: &[&str] = &[
    "from",
    "to",
    "provider",
    "model",
    "granularity",
    "org",
    "user",
    "limit",
    "format",
    "horizon_days",
];

/// Splits a raw query string into a map; repeated or unknown keys are errors.
pub fn parse_query(raw: Option<&str>) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        let k = k.into_owned();
        if k.is_empty() {
            // Found by the `query_params` fuzz target: `&=x` was refused naming field "".
            return Err(ApiError::bad(
                "query",
                "a query parameter has no name (`=value`)",
            ));
        }
        if !KNOWN.contains(&k.as_str()) {
            let shown: String = k.chars().take(40).collect();
            return Err(ApiError::bad(
                &shown,
                format!("unknown parameter `{shown}` (known: {})", KNOWN.join(", ")),
            ));
        }
        if out.insert(k.clone(), v.into_owned()).is_some() {
            return Err(ApiError::bad(&k, format!("`{k}` is given more than once")));
        }
    }
    Ok(out)
}

/// Earliest instant a window may start at or reach (ClickHouse's `DateTime` starts here).
pub const EARLIEST: DateTime<Utc> = usage_core::utc(1970, 1, 1, 0, 0, 0);
/// Latest instant a window may end at (well inside ClickHouse's `Date` and `DateTime`, and far
/// from the end of chrono's range, so window arithmetic never overflows).
pub const LATEST: DateTime<Utc> = usage_core::utc(2100, 1, 1, 0, 0, 0);

fn parse_time(field: &str, value: &str, end_of_day: bool) -> Result<DateTime<Utc>, ApiError> {
    let parsed = match usage_core::rfc3339::parse(value) {
        // An offset can push a time past the calendar RFC 3339 can write: not a time here.
        Some(t) => Some(t).filter(|t| (-9999..=9999).contains(&t.year())),
        None => usage_core::rfc3339::parse_day(value).map(|d| {
            let d = if end_of_day {
                d.succ_opt().unwrap_or(d)
            } else {
                d
            };
            d.and_time(NaiveTime::MIN).and_utc()
        }),
    };
    match parsed {
        Some(t) if (EARLIEST..=LATEST).contains(&t) => Ok(t),
        Some(_) => Err(ApiError::bad(
            field,
            format!("`{field}` must lie between 1970-01-01 and 2100-01-01"),
        )),
        None => Err(ApiError::bad(
            field,
            format!(
                "`{field}` must be an RFC 3339 time (2026-11-01T00:00:00Z) or a date (2026-11-01)"
            ),
        )),
    }
}

fn identifier(field: &str, value: &str) -> Result<String, ApiError> {
    if value.is_empty() || value.len() > 256 || value.chars().any(char::is_control) {
        return Err(ApiError::bad(
            field,
            format!("`{field}` must be 1-256 printable characters"),
        ));
    }
    Ok(value.to_string())
}

/// Parses the analytics parameters against `now`.
pub fn parse(
    map: &BTreeMap<String, String>,
    limits: &Limits<'_>,
    now: DateTime<Utc>,
) -> Result<Params, ApiError> {
    let to = match map.get("to") {
        Some(v) => parse_time("to", v, true)?,
        None => now,
    };
    let from = match map.get("from") {
        Some(v) => parse_time("from", v, false)?,
        None => to - TimeDelta::days(30),
    };
    if from >= to {
        return Err(ApiError::bad("from", "`from` must be before `to`"));
    }
    if to - from > TimeDelta::days(i64::from(limits.max_range_days)) {
        return Err(ApiError::bad(
            "from",
            format!("the range is longer than {} days", limits.max_range_days),
        ));
    }
    let granularity = match map.get("granularity").map(String::as_str) {
        None | Some("day") => Granularity::Day,
        Some("hour") => Granularity::Hour,
        Some(_) => {
            return Err(ApiError::bad(
                "granularity",
                "`granularity` must be `hour` or `day`",
            ))
        }
    };
    if granularity == Granularity::Hour
        && to - from > TimeDelta::days(i64::from(limits.max_hourly_range_days))
    {
        return Err(ApiError::bad(
            "granularity",
            format!(
                "hourly series span at most {} days; use granularity=day",
                limits.max_hourly_range_days
            ),
        ));
    }
    let provider = match map.get("provider") {
        Some(p) => {
            let p = identifier("provider", p)?;
            if !limits.providers.contains(&p) {
                return Err(ApiError::bad(
                    "provider",
                    format!(
                        "unknown provider `{p}` (known: {})",
                        limits.providers.join(", ")
                    ),
                ));
            }
            Some(p)
        }
        None => None,
    };
    let model = map
        .get("model")
        .map(|m| identifier("model", m))
        .transpose()?;
    let org = map.get("org").map(|o| identifier("org", o)).transpose()?;
    let user = map.get("user").map(|u| identifier("user", u)).transpose()?;
    let limit = match map.get("limit") {
        Some(l) => match l.parse::<u32>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                return Err(ApiError::bad(
                    "limit",
                    "`limit` must be a whole number from 1 to 1000",
                ))
            }
        },
        None => 10,
    };
    let format = map.get("format").cloned();
    let horizon_days = match map.get("horizon_days") {
        Some(h) => match h.parse::<u32>() {
            Ok(n) if (1..=365).contains(&n) => n,
            _ => {
                return Err(ApiError::bad(
                    "horizon_days",
                    "`horizon_days` must be a whole number from 1 to 365",
                ))
            }
        },
        None => 30,
    };
    Ok(Params {
        window: Window { from, to },
        provider,
        model,
        granularity,
        org,
        user,
        limit,
        format,
        horizon_days,
    })
}

/// Query parameters of the list endpoints scoped by org only (`GET /api/v1/budgets`,
/// `/alert-rules`, `/keys`); documentation for OpenAPI — the handlers read the raw query with
/// `input::query(raw, &["org"])`, which refuses anything else.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct OrgQuery {
    /// Admins: only this org. Others: their own org, or absent.
    org: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, TimeDelta, Utc};
    use usage_core::utc;

    const NOW: DateTime<Utc> = utc(2026, 11, 27, 15, 30, 0);

    fn limits() -> Limits<'static> {
        static P: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        Limits {
            providers: P.get_or_init(|| vec!["openai".into(), "openrouter".into()]),
            max_range_days: 400,
            max_hourly_range_days: 31,
        }
    }

    fn run(q: &str) -> Result<Params, ApiError> {
        parse(&parse_query(Some(q))?, &limits(), NOW)
    }

    fn field(q: &str) -> String {
        match run(q).unwrap_err() {
            ApiError::BadRequest { field, .. } => field.unwrap_or_default(),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn defaults_are_the_last_30_days() {
        let p = run("").unwrap();
        assert_eq!(p.window.to, NOW);
        assert_eq!(p.window.from, NOW - TimeDelta::days(30));
        assert_eq!((p.granularity, p.limit), (Granularity::Day, 10));
    }

    #[test]
    fn dates_cover_whole_days() {
        let p = run("from=2026-11-01&to=2026-11-30").unwrap();
        assert_eq!(p.window.from, utc(2026, 11, 1, 0, 0, 0));
        assert_eq!(p.window.to, utc(2026, 12, 1, 0, 0, 0));
        assert_eq!(
            p.window.days(),
            (usage_core::ymd(2026, 11, 1), usage_core::ymd(2026, 12, 1))
        );
        let p = run("from=2026-11-01T10:15:00%2B02:00&to=2026-11-01T12:00:00Z").unwrap();
        assert_eq!(p.window.from, utc(2026, 11, 1, 8, 15, 0));
        assert_eq!(
            p.window.hours(),
            (utc(2026, 11, 1, 8, 0, 0), utc(2026, 11, 1, 12, 0, 0))
        );
        assert_eq!(p.window.previous().to, p.window.from);
    }

    #[test]
    fn every_problem_names_its_parameter() {
        assert_eq!(field("from=yesterday"), "from");
        assert_eq!(field("to=2026-13-01"), "to");
        assert_eq!(field("from=2026-11-10&to=2026-11-01"), "from");
        assert_eq!(field("from=2020-01-01"), "from");
        assert_eq!(field("granularity=week"), "granularity");
        assert_eq!(field("granularity=hour&from=2026-09-01"), "granularity");
        assert_eq!(field("provider=azure"), "provider");
        assert_eq!(field("provider=%27%20OR%201%3D1%20--"), "provider");
        assert_eq!(field("limit=0"), "limit");
        assert_eq!(field("horizon_days=0"), "horizon_days");
        assert_eq!(field("horizon_days=9999"), "horizon_days");
        assert_eq!(field("limit=99999999999999999999"), "limit");
        assert_eq!(field("form=2026-01-01"), "form");
        assert_eq!(field("org=a&org=b"), "org");
        assert_eq!(field("limit=5&=9999"), "query");
        assert_eq!(field("org="), "org");
        assert_eq!(field("model=%00"), "model");
        assert_eq!(field(&format!("user={}", "x".repeat(300))), "user");
    }

    /// Found by the `query_params` fuzz target's seeds (fuzz/regressions/query_params/): times
    /// at the edges of the calendar panicked (an offset past year 9999, the hour after the last
    /// one) or gave an empty day range; now they are a 400 naming the parameter.
    #[test]
    fn times_at_the_edges_of_the_calendar_are_refused_not_a_panic() {
        assert_eq!(
            field("to=9999-12-31T23:30:00Z&from=9999-12-31T00:00:00Z&granularity=hour"),
            "to"
        );
        assert_eq!(field("to=9999-12-31T23:00:00-02:00"), "to");
        assert_eq!(field("from=0000-01-01&to=0000-01-02"), "to");
        assert_eq!(field("from=1969-12-31&to=1970-01-02"), "from");
        assert_eq!(field("to=2100-01-02"), "to");
        let p = run("from=2099-12-01&to=2099-12-31").unwrap();
        assert_eq!(p.window.to, LATEST);
        assert_eq!(p.window.hours().1, LATEST);
    }

    #[test]
    fn hostile_but_well_formed_values_stay_values() {
        let p = run("org=%27%3B%20DROP%20TABLE%20usage_events%3B%20--&model=gpt%27s").unwrap();
        assert_eq!(p.org.as_deref(), Some("'; DROP TABLE usage_events; --"));
        assert_eq!(p.model.as_deref(), Some("gpt's"));
        // Bad UTF-8 is replaced, not a panic.
        assert!(run("model=%FF%FE").is_ok());
    }
}
