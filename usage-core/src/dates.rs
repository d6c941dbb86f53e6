//! Dates and times on `chrono`, in the forms Tollgate has always written them.
//!
//! Every time Tollgate puts on a wire — a [`UsageRecord`](crate::UsageRecord)'s `ts`, the API's
//! JSON and CSV, alert details stored in ClickHouse — is RFC 3339 in UTC with a `Z` and the
//! fraction of a second **trimmed** (`…:03Z`, `…:03.5Z`, `…:03.12Z`). That is what the code
//! wrote when it was built on the `time` crate, so records and spools written then read back
//! unchanged (`tests/records_before_chrono.rs`, the collector's spool fixtures). chrono's own
//! `to_rfc3339`, `SecondsFormat` and serde impls pad the fraction to 3, 6 or 9 digits and its
//! serde `Deserialize` accepts more than RFC 3339 (`+0100`, a leading space, a signed year), so
//! [`rfc3339`] writes and reads it itself, and every `#[serde(with)]` uses it.
//!
//! [`utc`] and [`ymd`] build constant instants and days (the `time::macros` literals before).

use chrono::{DateTime, NaiveDate, Utc};

/// The UTC instant `y-mo-d h:mi:s`. `const`: in a `const` item a bad literal fails the build.
///
/// # Panics
/// When the fields name no instant (month 13, 31 November, hour 24, …): literals only.
#[allow(clippy::panic)] // a wrong literal is a bug in the caller, caught at compile time in const items
pub const fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    match ymd(y, mo, d).and_hms_opt(h, mi, s) {
        Some(t) => t.and_utc(),
        None => panic!("utc(): not a time of day"),
    }
}

/// The calendar day `y-m-d`. `const`, like [`utc`].
///
/// # Panics
/// When the fields name no day: literals only.
#[allow(clippy::panic)] // as in `utc`
pub const fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
    match NaiveDate::from_ymd_opt(y, m, d) {
        Some(day) => day,
        None => panic!("ymd(): not a calendar day"),
    }
}

/// RFC 3339 in UTC, written and read exactly as Tollgate always has (module docs).
pub mod rfc3339 {
    use std::fmt::Write as _;

    use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
    use serde::{de, Deserializer, Serializer};

    /// `YYYY-MM-DDTHH:MM:SS[.f]Z`, the fraction without trailing zeros and left out when zero.
    /// `None` outside years 0–9999, which RFC 3339 cannot write.
    pub fn format(t: &DateTime<Utc>) -> Option<String> {
        let year = t.year();
        if !(0..=9999).contains(&year) {
            return None;
        }
        let mut s = String::with_capacity(30);
        let _ = write!(
            s,
            "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            t.month(),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        );
        // chrono keeps a leap second as nanoseconds ≥ 1e9; it is written as :59.999999999
        // (what `parse` reads it as), so it never sorts before a later instant of that second.
        let mut nanos = t.nanosecond().min(999_999_999);
        if nanos != 0 {
            let mut width = 9;
            while nanos.is_multiple_of(10) {
                nanos /= 10;
                width -= 1;
            }
            let _ = write!(s, ".{nanos:0width$}");
        }
        s.push('Z');
        Some(s)
    }

    /// An RFC 3339 date-time with any offset, as the UTC instant. A leap second
    /// (`23:59:60`) is taken only at the end of a month (the only place one has ever been
    /// inserted), as the last nanosecond before it; more than nine fractional digits are cut.
    ///
    /// Exactly what Tollgate accepted before chrono: ASCII only (chrono alone would take a
    /// U+2212 minus sign in the offset), and any one character between the date and the time
    /// (chrono alone takes only `T`, `t` or a space).
    pub fn parse(text: &str) -> Option<DateTime<Utc>> {
        if !text.is_ascii() {
            return None;
        }
        let t = if text.len() > 10 && text.as_bytes()[10] != b'T' {
            let mut normal = text.to_string();
            normal.replace_range(10..11, "T");
            DateTime::parse_from_rfc3339(&normal)
        } else {
            DateTime::parse_from_rfc3339(text)
        };
        let t = t.ok()?.with_timezone(&Utc);
        if t.nanosecond() < 1_000_000_000 {
            return Some(t);
        }
        let last_day_of_month = t.date_naive().succ_opt().is_none_or(|next| next.day() == 1);
        (t.hour() == 23 && t.minute() == 59 && last_day_of_month)
            .then(|| t.with_nanosecond(999_999_999))
            .flatten()
    }

    /// A calendar day `YYYY-MM-DD` (an optional sign before the year, then exactly 4-2-2
    /// digits), as query parameters and the CLIs take it.
    pub fn parse_day(text: &str) -> Option<NaiveDate> {
        let (negative, digits) = match text.as_bytes().first() {
            Some(b'+') => (false, &text[1..]),
            Some(b'-') => (true, &text[1..]),
            _ => (false, text),
        };
        let b = digits.as_bytes();
        let number = |r: std::ops::Range<usize>| -> Option<u32> {
            b[r].iter().try_fold(0u32, |n, c| {
                c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
            })
        };
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let year = i32::try_from(number(0..4)?).ok()?;
        let year = if negative { -year } else { year };
        NaiveDate::from_ymd_opt(year, number(5..7)?, number(8..10)?)
    }

    /// `#[serde(with = "usage_core::rfc3339")]` for a `DateTime<Utc>`.
    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        match format(t) {
            Some(text) => s.serialize_str(&text),
            None => Err(serde::ser::Error::custom(
                "a time outside years 0-9999 has no RFC 3339 form",
            )),
        }
    }

    /// `#[serde(with = "usage_core::rfc3339")]` for a `DateTime<Utc>`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        d.deserialize_str(Rfc3339Visitor)
    }

    struct Rfc3339Visitor;

    impl de::Visitor<'_> for Rfc3339Visitor {
        type Value = DateTime<Utc>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an RFC 3339 date-time such as 2026-12-07T01:02:03Z")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<DateTime<Utc>, E> {
            parse(v).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
        }
    }

    /// `#[serde(with = "usage_core::rfc3339::option")]` for an `Option<DateTime<Utc>>`
    /// (`null` when absent).
    pub mod option {
        use chrono::{DateTime, Utc};
        use serde::{Deserialize, Deserializer, Serialize, Serializer};

        pub fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            #[derive(Serialize)]
            struct Wrapped<'a>(#[serde(with = "super")] &'a DateTime<Utc>);
            match t {
                Some(t) => s.serialize_some(&Wrapped(t)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            #[derive(Deserialize)]
            struct Wrapped(#[serde(with = "super")] DateTime<Utc>);
            Ok(Option::<Wrapped>::deserialize(d)?.map(|Wrapped(t)| t))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::rfc3339::{format, parse, parse_day};
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn the_fraction_is_trimmed_and_utc_is_z() {
        let t = utc(2026, 12, 7, 1, 2, 3);
        for (nanos, want) in [
            (0, "2026-12-07T01:02:03Z"),
            (500_000_000, "2026-12-07T01:02:03.5Z"),
            (120_000_000, "2026-12-07T01:02:03.12Z"),
            (123_400_000, "2026-12-07T01:02:03.1234Z"),
            (100, "2026-12-07T01:02:03.0000001Z"),
            (123_456_789, "2026-12-07T01:02:03.123456789Z"),
        ] {
            let at = t + TimeDelta::nanoseconds(nanos);
            assert_eq!(format(&at).as_deref(), Some(want));
            assert_eq!(parse(want), Some(at), "{want}");
        }
        assert_eq!(
            format(&(utc(0, 1, 1, 0, 0, 0) - TimeDelta::seconds(1))),
            None
        );
    }

    #[test]
    fn leap_seconds_only_end_a_month() {
        assert_eq!(
            parse("2026-12-31T23:59:60Z"),
            Some(utc(2026, 12, 31, 23, 59, 59) + TimeDelta::nanoseconds(999_999_999))
        );
        assert_eq!(
            parse("2024-02-29T23:59:60.5Z"),
            Some(utc(2024, 2, 29, 23, 59, 59) + TimeDelta::nanoseconds(999_999_999))
        );
        assert_eq!(parse("2026-12-07T23:59:60Z"), None);
        // One kept as chrono's leap nanoseconds is written as the second's last nanosecond.
        let leap = ymd(2026, 12, 31)
            .and_hms_nano_opt(23, 59, 59, 1_500_000_000)
            .unwrap()
            .and_utc();
        assert_eq!(
            format(&leap).as_deref(),
            Some("2026-12-31T23:59:59.999999999Z")
        );
        assert_eq!(parse("2026-12-31T22:59:60Z"), None);
    }

    #[test]
    fn days_are_exactly_four_two_two_digits() {
        assert_eq!(parse_day("2026-12-07"), Some(ymd(2026, 12, 7)));
        assert_eq!(parse_day("+2026-12-07"), Some(ymd(2026, 12, 7)));
        assert_eq!(parse_day("-0001-12-07"), Some(ymd(-1, 12, 7)));
        for bad in [
            "2026-1-07",
            " 2026-12-07",
            "2026-12-07 ",
            "2026-02-30",
            "2026/12/07",
            "26-12-07",
            "2026-12-0x",
            "",
        ] {
            assert_eq!(parse_day(bad), None, "{bad:?}");
        }
    }
}
