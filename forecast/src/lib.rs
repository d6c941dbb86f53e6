//! Spend forecasts: trend plus day-of-week seasonality, robust to outliers, with an 80%
//! prediction interval.
//!
//! # The model
//!
//! Daily cost `y` of day `t` is modelled as `level + slope·t + season[weekday(t)] + noise`.
//!
//! 1. **Trend**, from the centred 7-day moving average of `y` — which cancels any weekly
//!    pattern exactly — fitted with the Theil–Sen estimator (the median of pairwise slopes), so
//!    a few outlier days do not tilt it. With less than two weeks of history the moving
//!    average is not available and the trend is fitted on `y` itself, without seasonality.
//! 2. **Seasonality**: for each weekday, the median of `y ÷ trend` over the history, normalised
//!    to average 1 — multiplicative, since weekend spend is a share of weekday spend and grows
//!    with it. Where the trend comes near zero, ratios mean nothing and the effect is additive
//!    (the median of `y − trend`, centred on zero).
//! 3. **Noise**: the residuals' median absolute deviation (relative residuals for the
//!    multiplicative form), scaled to a standard deviation (×1.4826), widened for distance from the fitted range like an ordinary regression's
//!    prediction interval; the 80% interval is ±1.2816σ. Forecasts and bounds are clamped at 0.
//!
//! Short histories fall back and say so in [`Forecast::method`]: two weeks or more →
//! `trend+weekly`; 3–13 days → `trend`; 1–2 days → `mean`; none → [`ForecastError`]. Today is
//! partial and must not be passed in: callers fit on complete days only.
//!
//! A pure linear series is forecast exactly, and so is a pure weekly pattern (tested); the
//! back-test (`cargo xtask bench forecast`) compares the model with a straight line and a
//! trailing mean on synthetic series.

pub mod backtest;

use chrono::{Datelike, NaiveDate, TimeDelta};

/// Why no forecast can be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForecastError {
    #[error("insufficient history: no complete day of usage to forecast from")]
    InsufficientHistory,
}

/// How the forecast was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Method {
    /// Trend and weekly seasonality (≥ 14 days of history).
    #[serde(rename = "trend+weekly")]
    TrendWeekly,
    /// Trend only (3–13 days).
    #[serde(rename = "trend")]
    Trend,
    /// The mean of the days seen (1–2 days).
    #[serde(rename = "mean")]
    Mean,
}

/// One forecast day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub day: NaiveDate,
    pub value: f64,
    pub lower: f64,
    pub upper: f64,
}

/// A fitted model.
#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    pub method: Method,
    /// Intercept at `t = 0` (the first history day) and slope per day.
    pub level: f64,
    pub slope: f64,
    /// Effect per weekday, Monday first: a factor when `multiplicative`, else an addend
    /// (neutral without seasonality).
    pub season: [f64; 7],
    /// Weekday effects scale with the level (weekend spend is a share of weekday spend).
    pub multiplicative: bool,
    /// Residual standard deviation (robust): relative when `multiplicative`, else in USD.
    pub sigma: f64,
    first_day: NaiveDate,
    n: usize,
    t_mean: f64,
    t_ss: f64,
}

/// z for a two-sided 80% interval.
const Z80: f64 = 1.281_551_565_545;

/// Widening of the textbook interval, calibrated on the back-test: the trend is fitted to a
/// moving average, whose errors are correlated, so in-sample residuals understate 30-day-ahead
/// error. See [`backtest`].
const INTERVAL_CALIBRATION: f64 = 1.25;

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Theil–Sen: (intercept, slope) of points `(t, y)`.
fn theil_sen(points: &[(f64, f64)]) -> (f64, f64) {
    if points.len() < 2 {
        return (points.first().map_or(0.0, |p| p.1), 0.0);
    }
    let mut slopes = Vec::with_capacity(points.len() * (points.len() - 1) / 2);
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            if b.0 != a.0 {
                slopes.push((b.1 - a.1) / (b.0 - a.0));
            }
        }
    }
    let slope = median(&mut slopes);
    let mut intercepts: Vec<f64> = points.iter().map(|(t, y)| y - slope * t).collect();
    (median(&mut intercepts), slope)
}

fn weekday_index(d: NaiveDate) -> usize {
    d.weekday().num_days_from_monday() as usize
}

impl Forecast {
    /// Fits the model to complete days `first_day, first_day + 1, …` with costs `history`.
    pub fn fit(first_day: NaiveDate, history: &[f64]) -> Result<Forecast, ForecastError> {
        let n = history.len();
        if n == 0 {
            return Err(ForecastError::InsufficientHistory);
        }
        let t: Vec<f64> = (0..n).map(|i| i as f64).collect();
        let t_mean = t.iter().sum::<f64>() / n as f64;
        let t_ss: f64 = t.iter().map(|x| (x - t_mean).powi(2)).sum();
        let (method, level, slope, season, multiplicative) = if n >= 14 {
            // Centred 7-day moving average at t = 3 .. n-4.
            let ma: Vec<(f64, f64)> = (3..n - 3)
                .map(|i| (i as f64, history[i - 3..=i + 3].iter().sum::<f64>() / 7.0))
                .collect();
            let (level, slope) = theil_sen(&ma);
            let trend = |i: usize| level + slope * i as f64;
            // Multiplicative when the trend stays clearly positive over the history and the
            // horizon; additive otherwise (a trend near zero makes ratios meaningless).
            let floor = (0..n + 60).map(trend).fold(f64::MAX, f64::min);
            let multiplicative = floor > 1e-9 && floor > 0.05 * level.abs().max(1e-9);
            let mut by_day: [Vec<f64>; 7] = Default::default();
            for (i, y) in history.iter().enumerate() {
                let day = first_day + TimeDelta::days(i as i64);
                let effect = if multiplicative {
                    y / trend(i)
                } else {
                    y - trend(i)
                };
                by_day[weekday_index(day)].push(effect);
            }
            let mut season = [0.0; 7];
            for (d, v) in by_day.iter_mut().enumerate() {
                season[d] = median(v);
            }
            let mean = season.iter().sum::<f64>() / 7.0;
            if multiplicative && mean > 0.0 {
                for s in &mut season {
                    *s /= mean;
                }
                (
                    Method::TrendWeekly,
                    level * mean,
                    slope * mean,
                    season,
                    true,
                )
            } else {
                for s in &mut season {
                    *s -= mean;
                }
                (Method::TrendWeekly, level + mean, slope, season, false)
            }
        } else if n >= 3 {
            let pts: Vec<(f64, f64)> = history
                .iter()
                .enumerate()
                .map(|(i, y)| (i as f64, *y))
                .collect();
            let (level, slope) = theil_sen(&pts);
            (Method::Trend, level, slope, [0.0; 7], false)
        } else {
            (
                Method::Mean,
                history.iter().sum::<f64>() / n as f64,
                0.0,
                [0.0; 7],
                false,
            )
        };
        let mut f = Forecast {
            method,
            level,
            slope,
            season,
            multiplicative,
            sigma: 0.0,
            first_day,
            n,
            t_mean,
            t_ss,
        };
        let mut abs_dev: Vec<f64> = history
            .iter()
            .enumerate()
            .map(|(i, y)| {
                let fit = f.fitted(i as f64, first_day + TimeDelta::days(i as i64));
                if f.multiplicative {
                    if fit > 0.0 {
                        y / fit - 1.0
                    } else {
                        0.0
                    }
                } else {
                    y - fit
                }
            })
            .collect();
        let med = median(&mut abs_dev.clone());
        for r in &mut abs_dev {
            *r = (*r - med).abs();
        }
        f.sigma = 1.4826 * median(&mut abs_dev);
        if f.method == Method::Mean {
            // Two points cannot estimate spread robustly: use their range as a rough guide.
            let (lo, hi) = history
                .iter()
                .fold((f64::MAX, f64::MIN), |(l, h), y| (l.min(*y), h.max(*y)));
            f.sigma = f.sigma.max((hi - lo) / 2.0);
        }
        Ok(f)
    }

    fn fitted(&self, t: f64, day: NaiveDate) -> f64 {
        let trend = self.level + self.slope * t;
        if self.multiplicative {
            trend * self.season[weekday_index(day)]
        } else {
            trend + self.season[weekday_index(day)]
        }
    }

    /// The forecast for `day` (any day; the history starts at `first_day`).
    pub fn at(&self, day: NaiveDate) -> Point {
        let t = (day - self.first_day).num_days() as f64;
        let value = self.fitted(t, day);
        let n = self.n as f64;
        let leverage = if self.t_ss > 0.0 {
            (t - self.t_mean).powi(2) / self.t_ss
        } else {
            0.0
        };
        let spread = INTERVAL_CALIBRATION * Z80 * self.sigma * (1.0 + 1.0 / n + leverage).sqrt();
        let half = if self.multiplicative {
            value.abs() * spread
        } else {
            spread
        };
        Point {
            day,
            value: value.max(0.0),
            lower: (value - half).max(0.0),
            upper: (value + half).max(0.0),
        }
    }

    /// The forecasts for the `horizon` days starting at `from`.
    pub fn horizon(&self, from: NaiveDate, horizon: u32) -> Vec<Point> {
        (0..i64::from(horizon))
            .map(|i| self.at(from + TimeDelta::days(i)))
            .collect()
    }
}

/// The first day in `points` on which `already + cumulative forecast` reaches `limit`.
pub fn exhaustion_day(points: &[Point], already: f64, limit: f64) -> Option<NaiveDate> {
    if already >= limit {
        return points.first().map(|p| p.day);
    }
    let mut total = already;
    for p in points {
        total += p.value;
        if total >= limit {
            return Some(p.day);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeDelta};
    use usage_core::ymd;

    // A Monday.
    const START: NaiveDate = ymd(2026, 9, 7);

    #[test]
    fn a_pure_linear_series_is_forecast_exactly() {
        let history: Vec<f64> = (0..42).map(|i| 10.0 + 2.5 * i as f64).collect();
        let f = Forecast::fit(START, &history).unwrap();
        assert_eq!(f.method, Method::TrendWeekly);
        for h in 0..30 {
            let day = START + TimeDelta::days(42 + h);
            let want = 10.0 + 2.5 * (42 + h) as f64;
            assert!(
                (f.at(day).value - want).abs() < 1e-9,
                "day {h}: {} vs {want}",
                f.at(day).value
            );
        }
        assert!(f.sigma < 1e-9);
    }

    #[test]
    fn a_pure_weekly_pattern_is_reproduced() {
        let week = [100.0, 120.0, 110.0, 115.0, 90.0, 20.0, 15.0];
        let history: Vec<f64> = (0..56).map(|i| week[i % 7]).collect();
        let f = Forecast::fit(START, &history).unwrap();
        for h in 0..28 {
            let day = START + TimeDelta::days(56 + h);
            let want = week[(56 + h as usize) % 7];
            assert!(
                (f.at(day).value - want).abs() < 1e-9,
                "day {h}: {} vs {want}",
                f.at(day).value
            );
        }
        assert!(f.slope.abs() < 1e-12);
        assert!(f.multiplicative);
    }

    #[test]
    fn trend_and_season_together_and_an_outlier_changes_little() {
        let week = [1.0, 1.2, 1.1, 1.15, 0.9, 0.2, 0.15];
        let mut history: Vec<f64> = (0..56)
            .map(|i| week[i % 7] * (100.0 + 2.0 * i as f64))
            .collect();
        let clean = Forecast::fit(START, &history).unwrap();
        history[30] *= 6.0; // one runaway day
        let dirty = Forecast::fit(START, &history).unwrap();
        let day = START + TimeDelta::days(70);
        let want = week[0] * (100.0 + 140.0);
        assert!(
            (clean.at(day).value / want - 1.0).abs() < 0.02,
            "{} vs {want}",
            clean.at(day).value
        );
        assert!(
            (dirty.at(day).value / clean.at(day).value - 1.0).abs() < 0.02,
            "{} vs {}",
            dirty.at(day).value,
            clean.at(day).value
        );
    }

    #[test]
    fn short_histories_fall_back_and_say_so() {
        assert_eq!(
            Forecast::fit(START, &[]),
            Err(ForecastError::InsufficientHistory)
        );
        let one = Forecast::fit(START, &[5.0]).unwrap();
        assert_eq!(one.method, Method::Mean);
        assert_eq!(one.at(START + TimeDelta::days(3)).value, 5.0);
        let five = Forecast::fit(START, &[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        assert_eq!(five.method, Method::Trend);
        assert!((five.at(START + TimeDelta::days(10)).value - 11.0).abs() < 1e-9);
    }

    #[test]
    fn intervals_are_ordered_widen_with_distance_and_never_go_negative() {
        let history: Vec<f64> = (0..28)
            .map(|i| 5.0 + ((i * 7919) % 13) as f64 * 0.3)
            .collect();
        let f = Forecast::fit(START, &history).unwrap();
        let near = f.at(START + TimeDelta::days(28));
        let far = f.at(START + TimeDelta::days(58));
        assert!(near.lower <= near.value && near.value <= near.upper);
        assert!(far.upper - far.lower >= near.upper - near.lower);
        let falling: Vec<f64> = (0..20).map(|i| 20.0 - i as f64).collect();
        let f = Forecast::fit(START, &falling).unwrap();
        let p = f.at(START + TimeDelta::days(60));
        assert_eq!((p.value, p.lower), (0.0, 0.0));
    }

    #[test]
    fn exhaustion() {
        let pts: Vec<Point> = (0..5)
            .map(|i| Point {
                day: START + TimeDelta::days(i),
                value: 10.0,
                lower: 5.0,
                upper: 15.0,
            })
            .collect();
        assert_eq!(
            exhaustion_day(&pts, 75.0, 100.0),
            Some(START + TimeDelta::days(2))
        );
        assert_eq!(exhaustion_day(&pts, 0.0, 100.0), None);
        assert_eq!(exhaustion_day(&pts, 120.0, 100.0), Some(START));
    }
}
