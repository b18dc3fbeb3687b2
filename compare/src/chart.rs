//! Small, dependency-free SVG charts for the report: a daily line chart with the cutover
//! marked and interval bands, grouped bars, and point-and-interval rows. Each function returns
//! one self-contained `<svg>` element (no scripts, fonts or external references), so the HTML
//! report can inline it and open anywhere.

use std::fmt::Write as _;

use chrono::NaiveDate;

/// A colour per series, colour-blind safe (Okabe–Ito).
pub const PALETTE: [&str; 8] = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"];

const W: f64 = 860.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 36.0;

/// Escapes text for XML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * mag >= v {
            return m * mag;
        }
    }
    10.0 * mag
}

fn header(out: &mut String, h: f64, title: &str) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {h}" width="{W}" height="{h}" role="img" font-family="Helvetica, Arial, sans-serif" font-size="12"><title>{t}</title><text x="{LEFT}" y="20" font-size="14" font-weight="bold">{t}</text>"#,
        t = escape(title)
    );
}

fn y_axis(out: &mut String, top: f64, bottom: f64, max: f64, label: &str) {
    for i in 0..=4 {
        let v = max * f64::from(i) / 4.0;
        let y = bottom - (bottom - top) * f64::from(i) / 4.0;
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{tx}" y="{ty:.1}" text-anchor="end">{v}</text>"##,
            x2 = W - RIGHT,
            tx = LEFT - 6.0,
            ty = y + 4.0,
            v = fmt_num(v)
        );
    }
    let _ = write!(out, r#"<text x="14" y="{y:.1}" transform="rotate(-90 14 {y:.1})" text-anchor="middle">{}</text>"#, escape(label), y = (top + bottom) / 2.0);
}

/// A number for an axis or label: integers plainly, else up to two decimals.
pub fn fmt_num(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 && v.abs() < 1e9 {
        format!("{}", v.round() as i64)
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}").trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// One line of a [`line_chart`].
pub struct Line<'a> {
    /// Legend text.
    pub label: String,
    /// Colour.
    pub color: &'a str,
    /// One value per day (`NaN` = gap).
    pub values: Vec<f64>,
    /// Dashed stroke.
    pub dashed: bool,
}

/// A shaded interval over a range of days (e.g. a period mean's confidence interval).
pub struct Band<'a> {
    /// First and last day index (inclusive).
    pub days: (usize, usize),
    /// Low and high value.
    pub range: (f64, f64),
    /// Colour.
    pub color: &'a str,
}

/// A daily line chart, with an optional cutover line and shaded bands.
pub fn line_chart(title: &str, y_label: &str, days: &[NaiveDate], lines: &[Line<'_>], bands: &[Band<'_>], cutover: Option<NaiveDate>) -> String {
    let h = 330.0;
    let bottom = h - 40.0;
    let mut out = String::new();
    header(&mut out, h, title);
    let max = nice_max(lines.iter().flat_map(|l| l.values.iter().copied()).chain(bands.iter().map(|b| b.range.1)).filter(|v| v.is_finite()).fold(0.0, f64::max));
    y_axis(&mut out, TOP, bottom, max, y_label);
    let n = days.len().max(2);
    let x = |i: f64| LEFT + (W - LEFT - RIGHT) * i / (n - 1) as f64;
    let y = |v: f64| bottom - (bottom - TOP) * (v / max).clamp(0.0, 1.05);
    for b in bands {
        let _ = write!(
            out,
            r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}" fill-opacity="0.18"/>"#,
            x(b.days.0 as f64),
            y(b.range.1),
            (x(b.days.1 as f64) - x(b.days.0 as f64)).max(1.0),
            (y(b.range.0) - y(b.range.1)).max(1.0),
            b.color
        );
    }
    for (i, d) in days.iter().enumerate() {
        if i % 7 == 0 {
            let _ = write!(out, r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#, x(i as f64), bottom + 16.0, d.format("%b %-d"));
        }
    }
    if let Some(c) = cutover
        && let Some(i) = days.iter().position(|d| *d >= c)
    {
        let cx = x(i as f64 - 0.5);
        let _ = write!(
            out,
            r##"<line x1="{cx:.1}" x2="{cx:.1}" y1="{TOP}" y2="{bottom}" stroke="#C00" stroke-width="2" stroke-dasharray="6 3"/><text x="{tx:.1}" y="{ty}" fill="#C00">cutover {}</text>"##,
            c.format("%b %-d"),
            tx = cx + 4.0,
            ty = TOP + 12.0
        );
    }
    for (k, l) in lines.iter().enumerate() {
        let mut path = String::new();
        let mut pen = false;
        for (i, v) in l.values.iter().enumerate() {
            if v.is_finite() {
                let _ = write!(path, "{}{:.1},{:.1} ", if pen { "L" } else { "M" }, x(i as f64), y(*v));
                pen = true;
            } else {
                pen = false;
            }
        }
        let dash = if l.dashed { r#" stroke-dasharray="5 3""# } else { "" };
        let _ = write!(out, r#"<path d="{path}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#, l.color);
        let ly = TOP + 8.0 + 18.0 * k as f64;
        let lx = W - RIGHT + 12.0;
        let _ = write!(
            out,
            r#"<line x1="{lx}" x2="{:.1}" y1="{ly:.1}" y2="{ly:.1}" stroke="{}" stroke-width="2"{dash}/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 22.0,
            l.color,
            lx + 28.0,
            ly + 4.0,
            escape(&l.label)
        );
    }
    out.push_str("</svg>");
    out
}

/// Grouped vertical bars: one group per category, one bar per series.
pub fn bar_chart(title: &str, y_label: &str, categories: &[String], series: &[(&str, &str, Vec<f64>)]) -> String {
    let h = 320.0;
    let bottom = h - 40.0;
    let mut out = String::new();
    header(&mut out, h, title);
    let max = nice_max(series.iter().flat_map(|s| s.2.iter().copied()).filter(|v| v.is_finite()).fold(0.0, f64::max));
    y_axis(&mut out, TOP, bottom, max, y_label);
    let group = (W - LEFT - RIGHT) / categories.len().max(1) as f64;
    let bar = group * 0.8 / series.len().max(1) as f64;
    for (c, name) in categories.iter().enumerate() {
        let gx = LEFT + group * c as f64 + group * 0.1;
        for (k, (_, color, values)) in series.iter().enumerate() {
            let v = values.get(c).copied().unwrap_or(0.0);
            let y = bottom - (bottom - TOP) * (v / max).clamp(0.0, 1.0);
            let _ = write!(
                out,
                r#"<rect x="{:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{color}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#,
                gx + bar * k as f64,
                bar * 0.92,
                bottom - y,
                gx + bar * k as f64 + bar * 0.46,
                y - 3.0,
                fmt_num(v.round())
            );
        }
        let _ = write!(out, r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#, gx + group * 0.4, bottom + 16.0, escape(name));
    }
    for (k, (label, color, _)) in series.iter().enumerate() {
        let ly = TOP + 8.0 + 18.0 * k as f64;
        let lx = W - RIGHT + 12.0;
        let _ = write!(out, r#"<rect x="{lx}" y="{:.1}" width="14" height="10" fill="{color}"/><text x="{:.1}" y="{:.1}">{}</text>"#, ly - 5.0, lx + 20.0, ly + 4.0, escape(label));
    }
    out.push_str("</svg>");
    out
}

/// One row of an [`interval_chart`].
pub struct IntervalRow {
    /// Row label.
    pub label: String,
    /// Point estimate.
    pub point: f64,
    /// Interval.
    pub low: f64,
    /// Interval.
    pub high: f64,
    /// A reference value drawn as a diamond (e.g. the actual count), if any.
    pub reference: Option<f64>,
}

/// Horizontal point-and-interval rows (estimates with their intervals, and optional reference marks).
pub fn interval_chart(title: &str, x_label: &str, rows: &[IntervalRow], reference_label: Option<&str>) -> String {
    let row_h = 22.0;
    let label_w = 190.0;
    let h = TOP + 20.0 + row_h * rows.len() as f64 + 40.0;
    let mut out = String::new();
    header(&mut out, h, title);
    let max = nice_max(rows.iter().flat_map(|r| [r.high, r.reference.unwrap_or(0.0)]).fold(0.0, f64::max));
    let x0 = LEFT + label_w - 40.0;
    let x1 = W - RIGHT;
    let x = |v: f64| x0 + (x1 - x0) * (v / max).clamp(0.0, 1.0);
    let bottom = TOP + 10.0 + row_h * rows.len() as f64;
    for i in 0..=4 {
        let v = max * f64::from(i) / 4.0;
        let _ = write!(
            out,
            r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{TOP}" y2="{bottom:.1}" stroke="#ddd"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            bottom + 16.0,
            fmt_num(v),
            xx = x(v)
        );
    }
    let _ = write!(out, r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#, (x0 + x1) / 2.0, bottom + 34.0, escape(x_label));
    for (i, r) in rows.iter().enumerate() {
        let y = TOP + 20.0 + row_h * i as f64;
        let _ = write!(
            out,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text><line x1="{:.1}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#0072B2" stroke-width="3"/><circle cx="{:.1}" cy="{y:.1}" r="4.5" fill="#0072B2"/>"##,
            x0 - 10.0,
            y + 4.0,
            escape(&r.label),
            x(r.low),
            x(r.high),
            x(r.point)
        );
        if let Some(v) = r.reference {
            let cx = x(v);
            let _ = write!(out, r##"<path d="M{:.1},{y:.1} L{cx:.1},{:.1} L{:.1},{y:.1} L{cx:.1},{:.1} Z" fill="#D55E00"/>"##, cx - 5.0, y - 5.0, cx + 5.0, y + 5.0);
        }
    }
    let lx = W - RIGHT + 12.0;
    let _ = write!(out, r##"<circle cx="{:.1}" cy="{:.1}" r="4.5" fill="#0072B2"/><text x="{:.1}" y="{:.1}">estimate, 90% interval</text>"##, lx + 5.0, TOP + 8.0, lx + 14.0, TOP + 12.0);
    if let Some(label) = reference_label {
        let _ = write!(out, r##"<rect x="{lx}" y="{:.1}" width="9" height="9" fill="#D55E00" transform="rotate(45 {:.1} {:.1})"/><text x="{:.1}" y="{:.1}">{}</text>"##, TOP + 22.0, lx + 4.5, TOP + 26.5, lx + 14.0, TOP + 30.0, escape(label));
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_self_contained_svg() {
        let days: Vec<NaiveDate> = NaiveDate::from_ymd_opt(2026, 9, 1).unwrap().iter_days().take(10).collect();
        let svg = line_chart(
            "A <b>",
            "conversions",
            &days,
            &[Line { label: "tiktok".into(), color: PALETTE[0], values: (0..10).map(f64::from).collect(), dashed: false }],
            &[Band { days: (0, 4), range: (1.0, 3.0), color: PALETTE[0] }],
            Some(days[5]),
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("A &lt;b&gt;") && svg.contains("cutover Sep 6"));
        assert!(!svg.contains("href") && !svg.contains("<script"));
        let bars = bar_chart("b", "n", &["x".into()], &[("s", PALETTE[1], vec![3.0])]);
        assert!(bars.contains("<rect"));
        let iv = interval_chart("i", "n", &[IntervalRow { label: "c".into(), point: 2.0, low: 1.0, high: 3.0, reference: Some(2.5) }], Some("actual"));
        assert!(iv.contains("<circle") && iv.contains("actual"));
    }
}
