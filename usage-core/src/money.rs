//! Money as integer nano-USD.
//!
//! [`Nanos`] is the only money type in Tollgate: `i64` billionths of a US dollar, which covers
//! ±9.2 billion USD exactly. Arithmetic is checked (an overflow is an error, never a wrap), there
//! is no `f64` anywhere in a sum, and the text form is an exact decimal (`"0.000001234"`), which
//! is also how it is serialized so that JSON consumers never see a rounded float.
//!
//! In ClickHouse the same value is a `Decimal(18,9)` USD column, whose raw representation is
//! exactly this `i64`.

use std::fmt;
use std::str::FromStr;

/// Nano-USD per USD.
pub const NANOS_PER_USD: i64 = 1_000_000_000;

/// An amount of money in nano-USD (10⁻⁹ USD).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nanos(i64);

/// Why a decimal string is not an amount of money.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("empty amount")]
    Empty,
    #[error("`{0}` is not a decimal number")]
    NotDecimal(String),
    #[error("`{0}` is out of range for nano-USD (±9.2e9 USD)")]
    OutOfRange(String),
    #[error("arithmetic overflow")]
    Overflow,
}

impl Nanos {
    pub const ZERO: Nanos = Nanos(0);
    pub const MAX: Nanos = Nanos(i64::MAX);

    pub const fn new(nanos: i64) -> Self {
        Nanos(nanos)
    }

    /// Whole USD (exact).
    pub const fn from_usd(usd: i64) -> Option<Self> {
        match usd.checked_mul(NANOS_PER_USD) {
            Some(n) => Some(Nanos(n)),
            None => None,
        }
    }

    pub const fn get(self) -> i64 {
        self.0
    }

    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// `nanos` as an amount, clamped to what fits (sums over many rows are added in `i128`).
    pub fn clamped(nanos: i128) -> Nanos {
        Nanos(i64::try_from(nanos).unwrap_or(if nanos < 0 { i64::MIN } else { i64::MAX }))
    }

    /// A USD amount as JSON carries it: a number (OpenRouter's `cost`, a provider bill) or a
    /// decimal string.
    pub fn from_json_usd(v: &serde_json::Value) -> Option<Nanos> {
        match v {
            serde_json::Value::Number(n) => Nanos::parse_usd(&n.to_string()).ok(),
            serde_json::Value::String(s) => Nanos::parse_usd(s).ok(),
            _ => None,
        }
    }

    pub fn checked_add(self, other: Nanos) -> Option<Nanos> {
        self.0.checked_add(other.0).map(Nanos)
    }

    pub fn checked_sub(self, other: Nanos) -> Option<Nanos> {
        self.0.checked_sub(other.0).map(Nanos)
    }

    pub fn checked_mul(self, factor: i64) -> Option<Nanos> {
        self.0.checked_mul(factor).map(Nanos)
    }

    pub fn saturating_add(self, other: Nanos) -> Nanos {
        Nanos(self.0.saturating_add(other.0))
    }

    /// Sum of many amounts; `None` on overflow.
    pub fn checked_sum<I: IntoIterator<Item = Nanos>>(items: I) -> Option<Nanos> {
        items.into_iter().try_fold(Nanos::ZERO, Nanos::checked_add)
    }

    /// Parses an exact decimal USD amount (`"12.5"`, `"-0.000000001"`, `"1.5e-7"`). Digits past
    /// the ninth decimal are rounded half away from zero, which is how a provider-reported float
    /// cost (OpenRouter's `usage.cost`) becomes nanos.
    pub fn parse_usd(text: &str) -> Result<Nanos, MoneyError> {
        let s = text.trim();
        if s.is_empty() {
            return Err(MoneyError::Empty);
        }
        let bad = || MoneyError::NotDecimal(text.to_string());
        let (negative, body) = match s.as_bytes()[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let (mantissa, exponent) = match body.find(['e', 'E']) {
            Some(i) => {
                let exp: i32 = body[i + 1..].parse().map_err(|_| bad())?;
                (&body[..i], exp)
            }
            None => (body, 0),
        };
        let (int_part, frac_part) = match mantissa.split_once('.') {
            Some((i, f)) => (i, f),
            None => (mantissa, ""),
        };
        if int_part.is_empty() && frac_part.is_empty()
            || !int_part.bytes().all(|b| b.is_ascii_digit())
            || !frac_part.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        // All digits as one integer, and the power of ten that scales it to nano-USD.
        let digits: String = int_part.chars().chain(frac_part.chars()).collect();
        let digits = digits.trim_start_matches('0');
        let scale = 9i64 + i64::from(exponent) - frac_part.len() as i64;
        let range = || MoneyError::OutOfRange(text.to_string());
        if digits.is_empty() {
            return Ok(Nanos::ZERO);
        }
        if digits.len() > 38 {
            return Err(range());
        }
        let value: i128 = digits.parse().map_err(|_| bad())?;
        let scaled: i128 = if scale >= 0 {
            if scale > 30 {
                return Err(range());
            }
            value
                .checked_mul(10i128.pow(scale as u32))
                .ok_or_else(range)?
        } else {
            let neg_scale = -scale;
            if neg_scale > 38 {
                0
            } else {
                let div = 10i128.pow(neg_scale as u32);
                let q = value / div;
                let r = value % div;
                if r * 2 >= div {
                    q + 1
                } else {
                    q
                }
            }
        };
        let signed = if negative { -scaled } else { scaled };
        i64::try_from(signed).map(Nanos).map_err(|_| range())
    }
}

impl From<Nanos> for i128 {
    fn from(n: Nanos) -> i128 {
        i128::from(n.0)
    }
}

impl fmt::Display for Nanos {
    /// Exact decimal USD with nine fractional digits: `0.000001234`, `-1.500000000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = i128::from(self.0);
        let sign = if v < 0 { "-" } else { "" };
        let abs = v.unsigned_abs();
        let whole = abs / NANOS_PER_USD as u128;
        let frac = abs % NANOS_PER_USD as u128;
        write!(f, "{sign}{whole}.{frac:09}")
    }
}

impl FromStr for Nanos {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Nanos::parse_usd(s)
    }
}

impl serde::Serialize for Nanos {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Nanos {
    /// Accepts the decimal string form (what we write) and, for provider payloads, a JSON number.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Nanos;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a decimal USD amount such as \"0.000001234\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Nanos, E> {
                Nanos::parse_usd(v).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Nanos, E> {
                Nanos::parse_usd(&v.to_string()).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Nanos, E> {
                Nanos::parse_usd(&v.to_string()).map_err(E::custom)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Nanos, E> {
                // `{}` of an f64 is its shortest round-trip decimal, which parses exactly.
                Nanos::parse_usd(&v.to_string()).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_from_json_and_from_sums() {
        let json = |v: serde_json::Value| Nanos::from_json_usd(&v).map(Nanos::get);
        assert_eq!(json(serde_json::json!(0.06)), Some(60_000_000));
        assert_eq!(json(serde_json::json!("1.5")), Some(1_500_000_000));
        assert_eq!(json(serde_json::json!(1.2e-5)), Some(12_000));
        assert_eq!(json(serde_json::Value::Null), None);
        assert_eq!(Nanos::clamped(i128::MAX), Nanos::MAX);
        assert_eq!(Nanos::clamped(i128::MIN).get(), i64::MIN);
        assert_eq!(i128::from(Nanos::clamped(-5)), -5);
    }

    #[test]
    fn displays_exact_decimals() {
        assert_eq!(Nanos::new(1234).to_string(), "0.000001234");
        assert_eq!(Nanos::new(-1_500_000_000).to_string(), "-1.500000000");
        assert_eq!(Nanos::new(i64::MIN).to_string(), "-9223372036.854775808");
        assert_eq!(Nanos::ZERO.to_string(), "0.000000000");
    }

    #[test]
    fn parses_decimals_and_exponents() {
        assert_eq!(Nanos::parse_usd("0.000001234"), Ok(Nanos::new(1234)));
        assert_eq!(Nanos::parse_usd("12.5"), Ok(Nanos::new(12_500_000_000)));
        assert_eq!(Nanos::parse_usd("1.5e-7"), Ok(Nanos::new(150)));
        assert_eq!(
            Nanos::parse_usd("2E3"),
            Ok(Nanos::new(2_000 * NANOS_PER_USD))
        );
        assert_eq!(Nanos::parse_usd("-0.0000000015"), Ok(Nanos::new(-2)));
        assert_eq!(Nanos::parse_usd("0.0000000014"), Ok(Nanos::new(1)));
        assert_eq!(Nanos::parse_usd(".5"), Ok(Nanos::new(500_000_000)));
        assert!(Nanos::parse_usd("").is_err());
        assert!(Nanos::parse_usd("1.2.3").is_err());
        assert!(Nanos::parse_usd("abc").is_err());
        assert!(Nanos::parse_usd("NaN").is_err());
        assert!(Nanos::parse_usd("1e400").is_err());
        assert!(matches!(
            Nanos::parse_usd("10000000000"),
            Err(MoneyError::OutOfRange(_))
        ));
    }

    #[test]
    fn serde_is_a_decimal_string_and_accepts_numbers() {
        let json = serde_json::to_string(&Nanos::new(42)).unwrap();
        assert_eq!(json, "\"0.000000042\"");
        let back: Nanos = serde_json::from_str(&json).unwrap();
        assert_eq!(back, Nanos::new(42));
        let from_float: Nanos = serde_json::from_str("0.00012345").unwrap();
        assert_eq!(from_float, Nanos::new(123_450));
    }

    #[test]
    fn arithmetic_is_checked() {
        assert_eq!(Nanos::MAX.checked_add(Nanos::new(1)), None);
        assert_eq!(
            Nanos::checked_sum([Nanos::new(1), Nanos::new(2)]),
            Some(Nanos::new(3))
        );
        assert_eq!(Nanos::from_usd(i64::MAX), None);
    }

    proptest::proptest! {
        #[test]
        fn display_parse_round_trip(n in proptest::num::i64::ANY) {
            let n = Nanos::new(n);
            proptest::prop_assert_eq!(Nanos::parse_usd(&n.to_string()), Ok(n));
        }
    }
}
