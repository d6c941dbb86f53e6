//! How the dashboard writes figures. The exact value always travels with the short one
//! (`<data value="12.345678901">$12.35</data>`), so a reader — or a test — can check a card
//! against the API to the last digit.

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};

/// `1234567` → `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A USD amount for reading: `$1,234` from 1,000 up, `$12.35` from 1, `$0.0123` below,
/// `<$0.0001` for dust, `$0.00` for nothing.
pub fn usd_f(v: f64) -> String {
    if !v.is_finite() {
        return "—".into();
    }
    let sign = if v < 0.0 { "−" } else { "" };
    let a = v.abs();
    if a == 0.0 {
        "$0.00".into()
    } else if a >= 1000.0 {
        format!("{sign}${}", count(a.round() as u64))
    } else if a >= 1.0 {
        format!("{sign}${a:.2}")
    } else if a >= 0.0001 {
        format!("{sign}${a:.4}")
    } else {
        format!("{sign}<$0.0001")
    }
}

/// An exact USD decimal string (as the API writes money) for reading; see [`usd_f`].
pub fn usd(exact: &str) -> String {
    exact
        .parse::<f64>()
        .map_or_else(|_| exact.to_string(), usd_f)
}

/// A USD amount on a chart axis: few characters.
pub fn usd_axis(v: f64) -> String {
    if v == 0.0 {
        "$0".into()
    } else if v >= 1000.0 {
        format!("${}k", trim(v / 1000.0, 1))
    } else if v >= 1.0 {
        format!("${}", trim(v, 2))
    } else {
        format!("${}", trim(v, 4))
    }
}

/// A count on a chart axis: `1.2k`, `3M`.
pub fn count_axis(v: f64) -> String {
    if v >= 1_000_000.0 {
        format!("{}M", trim(v / 1_000_000.0, 1))
    } else if v >= 1000.0 {
        format!("{}k", trim(v / 1000.0, 1))
    } else {
        trim(v, 1)
    }
}

fn trim(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A share (0–1) as a percentage: `97.3%`.
pub fn percent(share: f64) -> String {
    if !share.is_finite() {
        return "—".into();
    }
    format!("{}%", trim(share * 100.0, 1))
}

/// Milliseconds: `840 ms`, `1.24 s`.
pub fn ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} s", v / 1000.0)
    } else {
        format!("{v:.0} ms")
    }
}

/// How long ago, coarsely: `just now`, `5 min ago`, `3 h ago`, `2 d ago`.
pub fn age(seconds: i64) -> String {
    match seconds {
        s if s < 60 => "just now".into(),
        s if s < 3600 => format!("{} min ago", s / 60),
        s if s < 86_400 => format!("{} h ago", s / 3600),
        s => format!("{} d ago", s / 86_400),
    }
}

/// `2026-11-03 14:05 UTC`.
pub fn datetime(t: DateTime<Utc>) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// `2026-11-03T14:05:00Z`, for `<time datetime>`.
pub fn iso(t: DateTime<Utc>) -> String {
    usage_core::rfc3339::format(&t).unwrap_or_default()
}

/// `Nov 3`.
pub fn short_day(d: NaiveDate) -> String {
    let m = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][d.month0() as usize];
    format!("{m} {}", d.day())
}

/// `Tue, Nov 3`.
pub fn weekday_day(d: NaiveDate) -> String {
    let w = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
        [d.weekday().num_days_from_monday() as usize];
    format!("{w}, {}", short_day(d))
}

/// The change from `previous` to `current`.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// `+12.5%`, `−3%`, `no change`, `new`.
    pub text: String,
    /// `up`, `down` or `flat` (a CSS class and the arrow).
    pub direction: &'static str,
}

/// The relative change between two periods' figures.
pub fn change(current: f64, previous: f64) -> Change {
    if previous == 0.0 {
        return if current == 0.0 {
            Change {
                text: "no change".into(),
                direction: "flat",
            }
        } else {
            Change {
                text: "new".into(),
                direction: "up",
            }
        };
    }
    let pct = (current - previous) / previous * 100.0;
    if pct.abs() < 0.05 {
        Change {
            text: "0%".into(),
            direction: "flat",
        }
    } else if pct > 0.0 {
        Change {
            text: format!("+{}%", trim(pct, 1)),
            direction: "up",
        }
    } else {
        Change {
            text: format!("−{}%", trim(-pct, 1)),
            direction: "down",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_well() {
        assert_eq!(count(0), "0");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(count(999), "999");
        assert_eq!(usd("0.000000000"), "$0.00");
        assert_eq!(usd("12.345678901"), "$12.35");
        assert_eq!(usd("0.012345"), "$0.0123");
        assert_eq!(usd("1234.5"), "$1,235");
        assert_eq!(usd("0.00000001"), "<$0.0001");
        assert_eq!(usd("oops"), "oops");
        assert_eq!(usd_axis(0.25), "$0.25");
        assert_eq!(usd_axis(2500.0), "$2.5k");
        assert_eq!(count_axis(1500.0), "1.5k");
        assert_eq!(percent(0.973), "97.3%");
        assert_eq!(ms(1240.0), "1.24 s");
        assert_eq!(age(7200), "2 h ago");
    }

    #[test]
    fn changes_say_which_way() {
        assert_eq!(change(110.0, 100.0).text, "+10%");
        assert_eq!(change(90.0, 100.0).direction, "down");
        assert_eq!(change(5.0, 0.0).text, "new");
        assert_eq!(change(0.0, 0.0).direction, "flat");
    }
}
