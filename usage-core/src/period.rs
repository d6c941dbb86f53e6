//! Budget periods: UTC calendar days, weeks that start on Monday, and calendar months. One
//! definition for the edge's ledger (which resets a budget at the period's end) and the
//! dashboard (which reports spend per period), so the two can never disagree on when a period
//! starts.

use serde::{Deserialize, Serialize};
use time::{Date, Duration, Month, OffsetDateTime};

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
    pub fn bounds(self, day: Date) -> (Date, Date) {
        match self {
            Period::Daily => (day, day.next_day().unwrap_or(day)),
            Period::Weekly => {
                let start =
                    day - Duration::days(i64::from(day.weekday().number_days_from_monday()));
                (start, start + Duration::days(7))
            }
            Period::Monthly => {
                let start = day.replace_day(1).unwrap_or(day);
                let (y, m) = match day.month() {
                    Month::December => (day.year() + 1, Month::January),
                    m => (day.year(), m.next()),
                };
                (start, Date::from_calendar_date(y, m, 1).unwrap_or(start))
            }
        }
    }

    /// The period containing the moment `now` (unix seconds): its start and the start of the
    /// next one, in unix seconds.
    pub fn unix_bounds(self, now: i64) -> (i64, i64) {
        let day = OffsetDateTime::from_unix_timestamp(now)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
            .date();
        let (start, end) = self.bounds(day);
        (
            start.midnight().assume_utc().unix_timestamp(),
            end.midnight().assume_utc().unix_timestamp(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    #[test]
    fn periods_are_utc_calendar_periods_with_monday_weeks() {
        let d = date!(2026 - 11 - 27); // a Friday
        assert_eq!(Period::Daily.bounds(d), (d, date!(2026 - 11 - 28)));
        for day in [d, date!(2026 - 11 - 23), date!(2026 - 11 - 29)] {
            assert_eq!(
                Period::Weekly.bounds(day),
                (date!(2026 - 11 - 23), date!(2026 - 11 - 30))
            );
        }
        assert_eq!(
            Period::Monthly.bounds(d),
            (date!(2026 - 11 - 01), date!(2026 - 12 - 01))
        );
        assert_eq!(
            Period::Monthly.bounds(date!(2026 - 12 - 31)),
            (date!(2026 - 12 - 01), date!(2027 - 01 - 01))
        );
    }

    #[test]
    fn unix_bounds_are_the_midnights_around_a_moment() {
        let now = datetime!(2026-11-27 14:40 UTC).unix_timestamp();
        assert_eq!(
            Period::Daily.unix_bounds(now),
            (
                datetime!(2026-11-27 0:00 UTC).unix_timestamp(),
                datetime!(2026-11-28 0:00 UTC).unix_timestamp()
            )
        );
        let last_hour = datetime!(2026-12-31 23:00 UTC).unix_timestamp();
        assert_eq!(
            Period::Monthly.unix_bounds(last_hour).1,
            datetime!(2027-01-01 0:00 UTC).unix_timestamp()
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
