//! The forecast back-test: synthetic daily-cost series with known trend, weekly seasonality and
//! noise (plus flat and step-change series), evaluated from rolling origins 30 days ahead
//! against two baselines — a least-squares straight line and the trailing 28-day mean.
//! `cargo xtask bench forecast` prints and records it; a test holds the model to it.

use chrono::{NaiveDate, TimeDelta};

use crate::{Forecast, Point};

/// A kind of synthetic series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Growing trend, weekday/weekend pattern, noise.
    Seasonal,
    /// Constant level and noise.
    Flat,
    /// Weekly pattern whose level jumps by half mid-way.
    Step,
}

impl Family {
    pub const ALL: [Family; 3] = [Family::Seasonal, Family::Flat, Family::Step];

    pub fn name(self) -> &'static str {
        match self {
            Family::Seasonal => "trend + weekly + noise",
            Family::Flat => "flat + noise",
            Family::Step => "weekly, step +50% mid-way",
        }
    }
}

/// Errors of one method over every origin of every series of a family.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Score {
    /// Mean absolute percentage error, %.
    pub mape: f64,
    /// Share of actual days inside the 80% interval (ours only).
    pub coverage: f64,
}

/// The three methods' scores for one family.
#[derive(Debug, Clone, PartialEq)]
pub struct FamilyResult {
    pub family: Family,
    pub ours: Score,
    pub line: Score,
    pub trailing_mean: Score,
    pub forecasts: usize,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u = self.next().max(1e-12);
        let v = self.next();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// A Monday, so weekday patterns are easy to read.
const START: NaiveDate = match NaiveDate::from_ymd_opt(2026, 1, 5) {
    Some(day) => day,
    None => NaiveDate::MIN,
};

fn series(family: Family, seed: u64, len: usize) -> Vec<f64> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let week = [1.0, 1.15, 1.1, 1.05, 0.95, 0.35, 0.3];
    (0..len)
        .map(|i| {
            let wd = i % 7;
            let (base, noise) = match family {
                Family::Seasonal => ((100.0 + 0.8 * i as f64) * week[wd], 0.06),
                Family::Flat => (100.0, 0.08),
                Family::Step => (if i < len / 2 { 100.0 } else { 150.0 } * week[wd], 0.06),
            };
            (base * (1.0 + noise * rng.normal())).max(0.0)
        })
        .collect()
}

fn ols(history: &[f64]) -> (f64, f64) {
    let n = history.len() as f64;
    let tm = (n - 1.0) / 2.0;
    let ym = history.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (i, y) in history.iter().enumerate() {
        sxy += (i as f64 - tm) * (y - ym);
        sxx += (i as f64 - tm).powi(2);
    }
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    (ym - slope * tm, slope)
}

fn ape(actual: f64, predicted: f64) -> f64 {
    if actual.abs() < 1e-9 {
        0.0
    } else {
        ((actual - predicted) / actual).abs() * 100.0
    }
}

/// Runs the back-test: `series_per_family` series of `len` days, origins every 7 days from day
/// `history` on, each fitted on the `history` days before it and scored `horizon` days ahead.
pub fn run(
    series_per_family: u64,
    len: usize,
    history: usize,
    horizon: usize,
) -> Vec<FamilyResult> {
    Family::ALL
        .iter()
        .map(|&family| {
            let (mut ours, mut line, mut mean) = (0.0, 0.0, 0.0);
            let (mut covered, mut n_points, mut forecasts) = (0usize, 0usize, 0usize);
            for seed in 0..series_per_family {
                let s = series(family, seed + 1, len);
                let mut origin = history;
                while origin + horizon <= len {
                    let hist = &s[origin - history..origin];
                    let first = START + TimeDelta::days((origin - history) as i64);
                    let Ok(model) = Forecast::fit(first, hist) else {
                        break;
                    };
                    let (a, b) = ols(hist);
                    let trailing = hist[hist.len().saturating_sub(28)..].iter().sum::<f64>()
                        / hist.len().min(28) as f64;
                    for h in 0..horizon {
                        let actual = s[origin + h];
                        let day = START + TimeDelta::days((origin + h) as i64);
                        let p: Point = model.at(day);
                        ours += ape(actual, p.value);
                        line += ape(actual, (a + b * (history + h) as f64).max(0.0));
                        mean += ape(actual, trailing);
                        covered += usize::from(p.lower <= actual && actual <= p.upper);
                        n_points += 1;
                    }
                    forecasts += 1;
                    origin += 7;
                }
            }
            let n = n_points.max(1) as f64;
            FamilyResult {
                family,
                ours: Score {
                    mape: ours / n,
                    coverage: covered as f64 / n,
                },
                line: Score {
                    mape: line / n,
                    coverage: 0.0,
                },
                trailing_mean: Score {
                    mape: mean / n,
                    coverage: 0.0,
                },
                forecasts,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_beats_the_baselines_where_it_should_and_its_interval_is_honest() {
        let results = run(12, 168, 56, 30);
        for r in &results {
            println!(
                "{:?}: ours {:.1}% (cov {:.0}%), line {:.1}%, mean {:.1}%",
                r.family,
                r.ours.mape,
                r.ours.coverage * 100.0,
                r.line.mape,
                r.trailing_mean.mape
            );
        }
        let seasonal = &results[0];
        assert!(
            seasonal.ours.mape < 0.6 * seasonal.line.mape,
            "{seasonal:?}"
        );
        assert!(
            seasonal.ours.mape < 0.6 * seasonal.trailing_mean.mape,
            "{seasonal:?}"
        );
        let flat = &results[1];
        assert!(
            flat.ours.mape <= flat.line.mape.min(flat.trailing_mean.mape) * 1.25,
            "{flat:?}"
        );
        for r in &results[..2] {
            assert!(
                (0.70..=0.90).contains(&r.ours.coverage),
                "{:?}: coverage {}",
                r.family,
                r.ours.coverage
            );
        }
    }
}
