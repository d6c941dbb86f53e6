//! Budget periods: UTC calendar days, weeks that start on Monday, and calendar months. One
//! definition for the edge's ledger (which resets a budget at the period's end) and the
//! dashboard (which reports spend per period), so the two can never disagree on when a period
//! starts.

use chrono::{DateTime, Datelike, Months, NaiveDate, NaiveTime, TimeDelta};
use serde::{Deserialize, Serialize};

/// A budget's period (UTC; weeks start Monday).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Daily,
    Weekly,
    Monthly,
}

impl Period {
    /// The name used in the API, the tables and the edge's budget list.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
        }
    }

    /// The period named `s` ([`Period::as_str`]); `None` for any other text.
    pub fn parse(s: &str) -> Option<Period> {
        match s {
            "daily" => Some(Period::Daily),
            "weekly" => Some(Period::Weekly),
            "monthly" => Some(Period::Monthly),
            _ => None,
        }
    }

    /// The period containing `day`: `[start, end)` in UTC days.
    pub fn bounds(self, day: NaiveDate) -> (NaiveDate, NaiveDate) {
        match self {
            Period::Daily => (day, day.succ_opt().unwrap_or(day)),
            Period::Weekly => {
                let start = day - TimeDelta::days(i64::from(day.weekday().num_days_from_monday()));
                (start, start + TimeDelta::days(7))
            }
            Period::Monthly => {
                let start = day.with_day(1).unwrap_or(day);
                (
                    start,
                    start.checked_add_months(Months::new(1)).unwrap_or(start),
                )
            }
        }
    }

    /// The period containing the moment `now` (unix seconds): its start and the start of the
    /// next one, in unix seconds.
    pub fn unix_bounds(self, now: i64) -> (i64, i64) {
        let day = DateTime::from_timestamp_secs(now)
            .unwrap_or(DateTime::UNIX_EPOCH)
            .date_naive();
        let (start, end) = self.bounds(day);
        (
            start.and_time(NaiveTime::MIN).and_utc().timestamp(),
            end.and_time(NaiveTime::MIN).and_utc().timestamp(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::{utc, ymd};

    #[test]
    fn periods_are_utc_calendar_periods_with_monday_weeks() {
        let d = ymd(2026, 11, 27); // a Friday
        assert_eq!(Period::Daily.bounds(d), (d, ymd(2026, 11, 28)));
        for day in [d, ymd(2026, 11, 23), ymd(2026, 11, 29)] {
            assert_eq!(
                Period::Weekly.bounds(day),
                (ymd(2026, 11, 23), ymd(2026, 11, 30))
            );
        }
        assert_eq!(
            Period::Monthly.bounds(d),
            (ymd(2026, 11, 1), ymd(2026, 12, 1))
        );
        assert_eq!(
            Period::Monthly.bounds(ymd(2026, 12, 31)),
            (ymd(2026, 12, 1), ymd(2027, 1, 1))
        );
    }

    #[test]
    fn unix_bounds_are_the_midnights_around_a_moment() {
        let now = utc(2026, 11, 27, 14, 40, 0).timestamp();
        assert_eq!(
            Period::Daily.unix_bounds(now),
            (
                utc(2026, 11, 27, 0, 0, 0).timestamp(),
                utc(2026, 11, 28, 0, 0, 0).timestamp()
            )
        );
        let last_hour = utc(2026, 12, 31, 23, 0, 0).timestamp();
        assert_eq!(
            Period::Monthly.unix_bounds(last_hour).1,
            utc(2027, 1, 1, 0, 0, 0).timestamp()
        );
    }

    #[test]
    fn names_read_back() {
        for p in [Period::Daily, Period::Weekly, Period::Monthly] {
            assert_eq!(Period::parse(p.as_str()), Some(p));
        }
        assert_eq!(Period::parse("yearly"), None);
    }
}
