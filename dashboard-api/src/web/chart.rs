//! SVG charts, drawn here: a line chart with up to two value axes, an optional interval band
//! and a marker ("today"), and bar rows.
//!
//! A line chart is one `<svg>` at the container's width: gridlines and tick labels are placed
//! in pixels and percentages (so text keeps its size on a phone), and the series live in a
//! nested `<svg>` whose viewBox is stretched to the plot area, with strokes that do not scale.
//! Every bucket has a hover target whose `<title>` says the bucket's values (app.js turns it
//! into a tooltip), and a table of the same figures sits under the chart for screen readers
//! and for copying. Nothing needs inline style, so the page's CSP forbids it.

use crate::web::html::esc;

/// Total height of a line chart, in CSS pixels.
const HEIGHT: f64 = 260.0;
/// Space above the plot (for the top tick label).
const TOP: f64 = 18.0;
/// Plot height.
const PLOT: f64 = 206.0;
/// Width of the stretched plot's coordinate space.
const W: f64 = 1000.0;
/// Horizontal gridlines: the plot is cut into this many steps.
const STEPS: u32 = 4;

/// Which value axis a series is read against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Left,
    Right,
}

/// One line.
#[derive(Debug)]
pub struct Series {
    pub name: String,
    /// CSS class giving its colour (`s-cost`, `s-req`, `s-fc`).
    pub class: &'static str,
    pub side: Side,
    /// One value per bucket; `None` leaves a gap.
    pub values: Vec<Option<f64>>,
    pub area: bool,
    pub dashed: bool,
    /// How values are written in tooltips and the table.
    pub format: fn(f64) -> String,
}

/// A shaded interval (forecast band) on the left axis.
#[derive(Debug)]
pub struct Band {
    pub name: String,
    pub class: &'static str,
    pub lower: Vec<Option<f64>>,
    pub upper: Vec<Option<f64>>,
}

/// A line chart.
#[derive(Debug)]
pub struct LineChart {
    /// Unique on the page (ids of its title and table).
    pub id: &'static str,
    /// What the chart shows, for screen readers (the `<title>`).
    pub summary: String,
    /// Per bucket: the short tick label and the full label (tooltip, table).
    pub ticks: Vec<String>,
    pub labels: Vec<String>,
    /// Axis labels are written with these.
    pub left_axis: fn(f64) -> String,
    pub right_axis: Option<fn(f64) -> String>,
    pub series: Vec<Series>,
    pub band: Option<Band>,
    /// A vertical marker at a bucket, with its label ("today").
    pub marker: Option<(usize, String)>,
}

/// A step of 1, 2, 2.5 or 5 × 10ⁿ such that `STEPS` steps cover `max`.
fn nice_step(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let raw = max / f64::from(STEPS);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * mag)
}

fn num(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

impl LineChart {
    fn n(&self) -> usize {
        self.labels.len()
    }

    fn x(&self, i: usize) -> f64 {
        let n = self.n();
        if n <= 1 {
            W / 2.0
        } else {
            i as f64 * W / (n - 1) as f64
        }
    }

    fn top(&self, side: Side) -> f64 {
        let mut max: f64 = 0.0;
        for s in self.series.iter().filter(|s| s.side == side) {
            max = s.values.iter().flatten().fold(max, |m, v| m.max(*v));
        }
        if side == Side::Left {
            if let Some(b) = &self.band {
                max = b.upper.iter().flatten().fold(max, |m, v| m.max(*v));
            }
        }
        nice_step(max) * f64::from(STEPS)
    }

    fn y(&self, v: f64, top: f64) -> f64 {
        PLOT - (v / top).clamp(0.0, 1.0) * PLOT
    }

    /// Contiguous runs of `Some` as (index, value) lists.
    fn runs(values: &[Option<f64>]) -> Vec<Vec<(usize, f64)>> {
        let mut out: Vec<Vec<(usize, f64)>> = Vec::new();
        let mut cur = Vec::new();
        for (i, v) in values.iter().enumerate() {
            match v {
                Some(v) => cur.push((i, *v)),
                None if !cur.is_empty() => out.push(std::mem::take(&mut cur)),
                None => {}
            }
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        out
    }

    /// The chart's markup: legend, SVG and data table.
    pub fn render(&self) -> String {
        let n = self.n();
        let left_top = self.top(Side::Left);
        let right_top = self.top(Side::Right);
        let mut svg = String::with_capacity(8192);
        svg.push_str(&format!(
            "<svg class=\"chart\" width=\"100%\" height=\"{HEIGHT}\" role=\"img\" \
             aria-labelledby=\"{id}-title\" data-chart=\"{id}\"><title id=\"{id}-title\">{}</title>",
            esc(&self.summary),
            id = self.id
        ));
        // Gridlines and value labels.
        for k in 0..=STEPS {
            let y = TOP + PLOT - f64::from(k) * PLOT / f64::from(STEPS);
            svg.push_str(&format!(
                "<line class=\"grid{}\" x1=\"0\" x2=\"100%\" y1=\"{y}\" y2=\"{y}\"/>",
                if k == 0 { " base" } else { "" }
            ));
            let lv = left_top * f64::from(k) / f64::from(STEPS);
            svg.push_str(&format!(
                "<text class=\"tick\" x=\"0\" y=\"{}\">{}</text>",
                y - 5.0,
                esc(&(self.left_axis)(lv))
            ));
            if let Some(f) = self.right_axis {
                let rv = right_top * f64::from(k) / f64::from(STEPS);
                svg.push_str(&format!(
                    "<text class=\"tick right\" x=\"100%\" y=\"{}\" text-anchor=\"end\">{}</text>",
                    y - 5.0,
                    esc(&f(rv))
                ));
            }
        }
        // Bucket labels: six evenly spread on a wide screen, three on a phone (CSS shows one
        // set or the other).
        if n > 0 {
            let spread = |m: usize| -> Vec<usize> {
                let m = n.min(m);
                let mut v: Vec<usize> = (0..m)
                    .map(|k| {
                        if m <= 1 {
                            0
                        } else {
                            ((k * (n - 1)) as f64 / (m - 1) as f64).round() as usize
                        }
                    })
                    .collect();
                v.dedup();
                v
            };
            let (wide, narrow) = (spread(6), spread(3));
            let mut all: Vec<usize> = wide.iter().chain(&narrow).copied().collect();
            all.sort_unstable();
            all.dedup();
            for i in all {
                let class = match (wide.contains(&i), narrow.contains(&i)) {
                    (true, false) => " wide",
                    (false, true) => " narrow",
                    _ => "",
                };
                let pct = if n <= 1 {
                    50.0
                } else {
                    i as f64 * 100.0 / (n - 1) as f64
                };
                let anchor = if n > 1 && i == 0 {
                    "start"
                } else if n > 1 && i == n - 1 {
                    "end"
                } else {
                    "middle"
                };
                svg.push_str(&format!(
                    "<text class=\"tick x{class}\" x=\"{}%\" y=\"{}\" text-anchor=\"{anchor}\">{}</text>",
                    num(pct),
                    HEIGHT - 8.0,
                    esc(self.ticks.get(i).map_or("", String::as_str))
                ));
            }
        }
        // The plot.
        svg.push_str(&format!(
            "<svg class=\"plot\" x=\"0\" y=\"{TOP}\" width=\"100%\" height=\"{PLOT}\" \
             viewBox=\"0 0 {W} {PLOT}\" preserveAspectRatio=\"none\" overflow=\"visible\">"
        ));
        if let Some(b) = &self.band {
            let pairs: Vec<Option<f64>> = b
                .lower
                .iter()
                .zip(&b.upper)
                .map(|(l, u)| l.and(*u))
                .collect();
            for run in Self::runs(&pairs) {
                let mut d = String::new();
                for (j, (i, _)) in run.iter().enumerate() {
                    let u = b.upper[*i].unwrap_or(0.0);
                    d.push_str(&format!(
                        "{}{},{} ",
                        if j == 0 { "M" } else { "L" },
                        num(self.x(*i)),
                        num(self.y(u, left_top))
                    ));
                }
                for (i, _) in run.iter().rev() {
                    let l = b.lower[*i].unwrap_or(0.0);
                    d.push_str(&format!(
                        "L{},{} ",
                        num(self.x(*i)),
                        num(self.y(l, left_top))
                    ));
                }
                svg.push_str(&format!(
                    "<path class=\"band {}\" d=\"{}Z\"/>",
                    b.class,
                    d.trim_end()
                ));
            }
        }
        for s in &self.series {
            let top = if s.side == Side::Left {
                left_top
            } else {
                right_top
            };
            let mut line = String::new();
            let mut area = String::new();
            let mut dots = String::new();
            for run in Self::runs(&s.values) {
                for (j, (i, v)) in run.iter().enumerate() {
                    let (x, y) = (num(self.x(*i)), num(self.y(*v, top)));
                    line.push_str(&format!("{}{x},{y} ", if j == 0 { "M" } else { "L" }));
                    dots.push_str(&format!("M{x},{y}h0 "));
                }
                if s.area {
                    if let (Some(first), Some(last)) = (run.first(), run.last()) {
                        area.push_str(&format!("M{},{PLOT} ", num(self.x(first.0))));
                        for (i, v) in &run {
                            area.push_str(&format!(
                                "L{},{} ",
                                num(self.x(*i)),
                                num(self.y(*v, top))
                            ));
                        }
                        area.push_str(&format!("L{},{PLOT}Z ", num(self.x(last.0))));
                    }
                }
            }
            if !area.is_empty() {
                svg.push_str(&format!(
                    "<path class=\"area {}\" d=\"{}\"/>",
                    s.class,
                    area.trim_end()
                ));
            }
            if !line.is_empty() {
                svg.push_str(&format!(
                    "<path class=\"line {}{}\" d=\"{}\" vector-effect=\"non-scaling-stroke\"/>",
                    s.class,
                    if s.dashed { " dashed" } else { "" },
                    line.trim_end()
                ));
            }
            if n <= 45 && !dots.is_empty() {
                svg.push_str(&format!(
                    "<path class=\"dots {}\" d=\"{}\" vector-effect=\"non-scaling-stroke\"/>",
                    s.class,
                    dots.trim_end()
                ));
            }
        }
        if let Some((i, _)) = &self.marker {
            let x = num(self.x(*i));
            svg.push_str(&format!(
                "<path class=\"marker\" d=\"M{x},0V{PLOT}\" vector-effect=\"non-scaling-stroke\"/>"
            ));
        }
        // Hover targets, one per bucket.
        let w = if n == 0 { W } else { W / n.max(1) as f64 };
        for i in 0..n {
            let x = (self.x(i) - w / 2.0).clamp(0.0, W - w);
            svg.push_str(&format!(
                "<rect class=\"hit\" x=\"{}\" y=\"0\" width=\"{}\" height=\"{PLOT}\"><title>{}</title></rect>",
                num(x),
                num(w),
                esc(&self.tip(i))
            ));
        }
        svg.push_str("</svg>");
        if let Some((i, label)) = &self.marker {
            let pct = if n <= 1 {
                50.0
            } else {
                *i as f64 * 100.0 / (n - 1) as f64
            };
            svg.push_str(&format!(
                "<text class=\"marker-label\" x=\"{}%\" y=\"11\" text-anchor=\"middle\">{}</text>",
                num(pct),
                esc(label)
            ));
        }
        svg.push_str("</svg>");
        format!(
            "<figure class=\"chart-wrap\">{legend}{svg}{table}</figure>",
            legend = self.legend(),
            table = self.table()
        )
    }

    fn tip(&self, i: usize) -> String {
        let mut t = self.labels.get(i).cloned().unwrap_or_default();
        for s in &self.series {
            if let Some(Some(v)) = s.values.get(i) {
                t.push_str(&format!("\n{}: {}", s.name, (s.format)(*v)));
            }
        }
        if let Some(b) = &self.band {
            if let (Some(Some(l)), Some(Some(u))) = (b.lower.get(i), b.upper.get(i)) {
                let f = self
                    .series
                    .first()
                    .map_or(num as fn(f64) -> String, |s| s.format);
                t.push_str(&format!("\n{}: {} – {}", b.name, f(*l), f(*u)));
            }
        }
        t
    }

    fn legend(&self) -> String {
        let mut items: String = self
            .series
            .iter()
            .map(|s| {
                format!(
                    "<li><span class=\"swatch {}{}\" aria-hidden=\"true\"></span>{}{}</li>",
                    s.class,
                    if s.dashed { " dashed" } else { "" },
                    esc(&s.name),
                    match (s.side, self.right_axis.is_some()) {
                        (Side::Left, true) => " <small>(left axis)</small>",
                        (Side::Right, true) => " <small>(right axis)</small>",
                        _ => "",
                    }
                )
            })
            .collect();
        if let Some(b) = &self.band {
            items.push_str(&format!(
                "<li><span class=\"swatch band {}\" aria-hidden=\"true\"></span>{}</li>",
                b.class,
                esc(&b.name)
            ));
        }
        format!("<ul class=\"legend\">{items}</ul>")
    }

    fn table(&self) -> String {
        let mut head = String::from("<th scope=\"col\">When</th>");
        for s in &self.series {
            head.push_str(&format!("<th scope=\"col\">{}</th>", esc(&s.name)));
        }
        if let Some(b) = &self.band {
            head.push_str(&format!("<th scope=\"col\">{}</th>", esc(&b.name)));
        }
        let mut rows = String::new();
        for i in 0..self.n() {
            rows.push_str(&format!(
                "<tr><th scope=\"row\">{}</th>",
                esc(&self.labels[i])
            ));
            for s in &self.series {
                let cell = s
                    .values
                    .get(i)
                    .copied()
                    .flatten()
                    .map_or_else(String::new, |v| (s.format)(v));
                rows.push_str(&format!("<td>{}</td>", esc(&cell)));
            }
            if let Some(b) = &self.band {
                let f = self
                    .series
                    .first()
                    .map_or(num as fn(f64) -> String, |s| s.format);
                let cell = match (
                    b.lower.get(i).copied().flatten(),
                    b.upper.get(i).copied().flatten(),
                ) {
                    (Some(l), Some(u)) => format!("{} – {}", f(l), f(u)),
                    _ => String::new(),
                };
                rows.push_str(&format!("<td>{}</td>", esc(&cell)));
            }
            rows.push_str("</tr>");
        }
        format!(
            "<details class=\"chart-data\"><summary>Chart data</summary><div class=\"table-wrap\">\
             <table id=\"{}-table\"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div></details>",
            self.id
        )
    }
}

/// One row of a bar list.
#[derive(Debug)]
pub struct Bar {
    pub label: String,
    pub value: f64,
    /// The value as shown, and a note after it (a share, a count).
    pub shown: String,
    pub note: String,
}

/// Horizontal bars, longest first as given, scaled to the largest value.
pub fn bars(id: &str, class: &str, rows: &[Bar]) -> String {
    let max = rows.iter().map(|b| b.value).fold(0.0f64, f64::max);
    let items: String = rows
        .iter()
        .map(|b| {
            let w = if max > 0.0 {
                (b.value / max * 100.0).clamp(0.0, 100.0)
            } else {
                0.0
            };
            format!(
                "<li><span class=\"bar-label\" title=\"{label}\">{label}</span>\
                 <span class=\"bar-value\">{shown} <small>{note}</small></span>\
                 <svg class=\"bar-track\" viewBox=\"0 0 100 8\" preserveAspectRatio=\"none\" \
                 aria-hidden=\"true\" focusable=\"false\"><rect class=\"bar-bg\" width=\"100\" height=\"8\"/>\
                 <rect class=\"bar-fill {class}\" width=\"{w}\" height=\"8\"/></svg></li>",
                label = esc(&b.label),
                shown = esc(&b.shown),
                note = esc(&b.note),
                w = num(w),
            )
        })
        .collect();
    format!("<ul class=\"bars\" id=\"{id}\" data-chart=\"{id}\">{items}</ul>")
}

/// A budget's use of its limit: the fill (capped at the track), and a tick per soft threshold.
pub fn usage_bar(percent_used: f64, thresholds: &[u8], state: &str) -> String {
    let ticks: String = thresholds
        .iter()
        .filter(|t| **t < 100)
        .map(|t| {
            format!(
                "<path class=\"threshold\" d=\"M{t},0V8\" vector-effect=\"non-scaling-stroke\"/>"
            )
        })
        .collect();
    format!(
        "<svg class=\"usage-track\" viewBox=\"0 0 100 8\" preserveAspectRatio=\"none\" aria-hidden=\"true\" \
         focusable=\"false\"><rect class=\"bar-bg\" width=\"100\" height=\"8\"/>\
         <rect class=\"usage-fill {state}\" width=\"{}\" height=\"8\"/>{ticks}</svg>",
        num(percent_used.clamp(0.0, 100.0))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_round_and_cover_the_maximum() {
        assert_eq!(nice_step(0.0), 1.0);
        assert_eq!(nice_step(10.0), 2.5);
        assert_eq!(nice_step(7.3), 2.0);
        assert_eq!(nice_step(0.03), 0.01);
        assert!((nice_step(1234.0) * 4.0) >= 1234.0);
    }

    #[test]
    fn gaps_break_the_line_and_values_are_escaped() {
        let c = LineChart {
            id: "t",
            summary: "<b>".into(),
            ticks: vec!["a".into(), "b".into(), "c".into()],
            labels: vec!["A".into(), "B".into(), "C<".into()],
            left_axis: crate::web::fmt::usd_axis,
            right_axis: None,
            series: vec![Series {
                name: "Cost".into(),
                class: "s-cost",
                side: Side::Left,
                values: vec![Some(1.0), None, Some(3.0)],
                area: false,
                dashed: false,
                format: crate::web::fmt::usd_f,
            }],
            band: None,
            marker: Some((1, "today".into())),
        };
        let out = c.render();
        assert!(out.contains("d=\"M0,154.5 M1000,51.5\""), "{out}");
        assert!(out.contains("&lt;b&gt;") && out.contains("C&lt;"));
        assert!(!out.contains("<b>"));
    }
}
