//! The filter state of a page, as its URL keeps it: `range` (`24h`, `7d`, `30d`, `90d`; default
//! `30d`), or `from`/`to` dates for a custom range; `provider`; and `org` (admins). Pages read
//! it leniently — unknown keys are ignored so old links keep working — and hand the API query
//! it stands for to the same functions the JSON API runs, which validate it strictly.

use chrono::{DateTime, TimeDelta, Timelike, Utc};

/// A preset time range, or a custom one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Range {
    Day,
    Week,
    Month,
    Quarter,
    Custom,
}

impl Range {
    pub const PRESETS: [Range; 4] = [Range::Day, Range::Week, Range::Month, Range::Quarter];

    pub fn key(self) -> &'static str {
        match self {
            Range::Day => "24h",
            Range::Week => "7d",
            Range::Month => "30d",
            Range::Quarter => "90d",
            Range::Custom => "custom",
        }
    }

    /// How a page names the period ("the last 7 days").
    pub fn phrase(self) -> &'static str {
        match self {
            Range::Day => "last 24 hours",
            Range::Week => "last 7 days",
            Range::Month => "last 30 days",
            Range::Quarter => "last 90 days",
            Range::Custom => "custom range",
        }
    }

    fn parse(s: &str) -> Option<Range> {
        Range::PRESETS.into_iter().find(|r| r.key() == s)
    }

    fn length(self) -> Option<TimeDelta> {
        match self {
            Range::Day => Some(TimeDelta::hours(24)),
            Range::Week => Some(TimeDelta::days(7)),
            Range::Month => Some(TimeDelta::days(30)),
            Range::Quarter => Some(TimeDelta::days(90)),
            Range::Custom => None,
        }
    }
}

/// A page's filters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageFilters {
    pub range: Range,
    /// Custom range only: `YYYY-MM-DD` (or RFC 3339) as given.
    pub from: Option<String>,
    pub to: Option<String>,
    pub provider: Option<String>,
    pub org: Option<String>,
}

impl Default for PageFilters {
    fn default() -> Self {
        PageFilters {
            range: Range::Month,
            from: None,
            to: None,
            provider: None,
            org: None,
        }
    }
}

impl PageFilters {
    /// Reads a page query string; empty values count as absent, unknown keys are ignored.
    /// A `from` or `to` makes the range custom.
    pub fn parse(raw: Option<&str>) -> PageFilters {
        let mut f = PageFilters::default();
        let mut range = None;
        for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            let v = v.trim().to_string();
            if v.is_empty() {
                continue;
            }
            match k.as_ref() {
                "range" => range = Range::parse(&v),
                "from" => f.from = Some(v),
                "to" => f.to = Some(v),
                "provider" => f.provider = Some(v),
                "org" => f.org = Some(v),
                _ => {}
            }
        }
        f.range = if f.from.is_some() || f.to.is_some() {
            Range::Custom
        } else {
            range.unwrap_or(Range::Month)
        };
        f
    }

    /// The page query string that restores these filters (stable order; empty for defaults).
    pub fn query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if self.range == Range::Custom {
            if let Some(v) = &self.from {
                q.append_pair("from", v);
            }
            if let Some(v) = &self.to {
                q.append_pair("to", v);
            }
        } else if self.range != Range::Month {
            q.append_pair("range", self.range.key());
        }
        if let Some(p) = &self.provider {
            q.append_pair("provider", p);
        }
        if let Some(o) = &self.org {
            q.append_pair("org", o);
        }
        q.finish()
    }

    /// `path` with these filters (`/overview?range=7d`).
    pub fn href(&self, path: &str) -> String {
        let q = self.query();
        if q.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{q}")
        }
    }

    /// The same filters with another preset range.
    pub fn with_range(&self, range: Range) -> PageFilters {
        PageFilters {
            range,
            from: None,
            to: None,
            ..self.clone()
        }
    }

    /// The API query these filters stand for at `now`: presets end now; custom ranges pass
    /// through as given (a date `to` is the end of that day, as the API reads it).
    pub fn api_query(&self, now: DateTime<Utc>) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        let now = now.with_nanosecond(0).unwrap_or(now);
        match self.range.length() {
            Some(len) => {
                q.append_pair("from", &rfc3339(now - len));
                q.append_pair("to", &rfc3339(now));
            }
            None => {
                if let Some(v) = &self.from {
                    q.append_pair("from", v);
                }
                if let Some(v) = &self.to {
                    q.append_pair("to", v);
                }
            }
        }
        if let Some(p) = &self.provider {
            q.append_pair("provider", p);
        }
        if let Some(o) = &self.org {
            q.append_pair("org", o);
        }
        q.finish()
    }

    /// Only the `org` narrowing, for endpoints that take nothing else (budgets, alerts).
    pub fn org_query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if let Some(o) = &self.org {
            q.append_pair("org", o);
        }
        q.finish()
    }

    /// Whether a series over this range reads better by the hour (24 hours, or a custom range
    /// of at most two days).
    pub fn hourly(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
        self.range == Range::Day || (self.range == Range::Custom && to - from <= TimeDelta::days(2))
    }

    /// "last 7 days", or "2026-11-01 – 2026-11-30".
    pub fn describe(&self) -> String {
        match self.range {
            Range::Custom => format!(
                "{} – {}",
                self.from.as_deref().unwrap_or("30 days before"),
                self.to.as_deref().unwrap_or("now")
            ),
            r => r.phrase().to_string(),
        }
    }

    /// How the comparison period is named on cards ("vs previous 7 days").
    pub fn previous_phrase(&self) -> String {
        match self.range {
            Range::Day => "vs previous 24 hours".into(),
            Range::Week => "vs previous 7 days".into(),
            Range::Month => "vs previous 30 days".into(),
            Range::Quarter => "vs previous 90 days".into(),
            Range::Custom => "vs the period before".into(),
        }
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    usage_core::rfc3339::format(&t).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;
    use usage_core::utc;

    #[test]
    fn the_url_round_trips_and_defaults_stay_short() {
        let f = PageFilters::parse(Some("range=7d&provider=openai&junk=1"));
        assert_eq!(
            (f.range, f.provider.as_deref()),
            (Range::Week, Some("openai"))
        );
        assert_eq!(f.query(), "range=7d&provider=openai");
        assert_eq!(PageFilters::parse(Some(&f.query())), f);
        assert_eq!(PageFilters::parse(None).query(), "");
        assert_eq!(PageFilters::parse(Some("range=bogus")).range, Range::Month);
        let c = PageFilters::parse(Some("range=7d&from=2026-11-01&to=2026-11-30&provider="));
        assert_eq!(c.range, Range::Custom);
        assert_eq!(c.query(), "from=2026-11-01&to=2026-11-30");
        assert_eq!(c.with_range(Range::Day).query(), "range=24h");
    }

    #[test]
    fn presets_end_now_and_custom_ranges_pass_through() {
        let now = utc(2026, 11, 27, 15, 30, 12) + TimeDelta::milliseconds(500);
        let f = PageFilters::parse(Some("range=24h&provider=openrouter&org=acme"));
        assert_eq!(
            f.api_query(now),
            "from=2026-11-26T15%3A30%3A12Z&to=2026-11-27T15%3A30%3A12Z&provider=openrouter&org=acme"
        );
        let c = PageFilters::parse(Some("from=2026-11-01&to=2026-11-03"));
        assert_eq!(c.api_query(now), "from=2026-11-01&to=2026-11-03");
        assert!(f.hourly(now, now));
    }
}
