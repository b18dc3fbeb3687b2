//! The HTML report: one self-contained file (inline CSS and SVG, no scripts or external
//! assets) that a marketing lead can open and read: what changed, why, how sure we are.

use std::fmt::Write as _;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Float64Type;
use chrono::NaiveDate;

use crate::chart::{Band, IntervalRow, Line, PALETTE, bar_chart, escape, fmt_num, interval_chart, line_chart};
use crate::prepost::{ALL, Prepost, PrepostRow};

/// A campaign's probabilistic total (from `probabilistic_totals`).
#[derive(Debug, Clone, PartialEq)]
pub struct TotalRow {
    /// Channel.
    pub channel: String,
    /// Campaign.
    pub campaign_id: String,
    /// Credit.
    pub credit: f64,
    /// 90% interval.
    pub low: f64,
    /// 90% interval.
    pub high: f64,
}

/// A campaign's holdout check (from `probabilistic_validation`).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRow {
    /// Channel.
    pub channel: String,
    /// Campaign.
    pub campaign_id: String,
    /// Predicted.
    pub predicted: f64,
    /// Actual.
    pub actual: i64,
    /// 90% interval.
    pub low: f64,
    /// 90% interval.
    pub high: f64,
    /// Overall WAPE.
    pub wape: Option<f64>,
    /// Overall coverage.
    pub coverage: Option<f64>,
}

/// Everything the report shows.
#[derive(Debug, Clone, Default)]
pub struct ReportInput<'a> {
    /// The window.
    pub window: Option<(NaiveDate, NaiveDate)>,
    /// `client_server` rows.
    pub client_server: Option<&'a RecordBatch>,
    /// The pre/post comparison.
    pub prepost: Option<&'a Prepost>,
    /// Probabilistic totals.
    pub totals: Vec<TotalRow>,
    /// Holdout checks.
    pub checks: Vec<CheckRow>,
}

const CSS: &str = "body{font-family:Helvetica,Arial,sans-serif;max-width:900px;margin:24px auto;color:#222;line-height:1.45}\
h1{font-size:24px}h2{font-size:19px;margin-top:36px;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}\
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}.key{background:#f6f9fc;border-left:4px solid #0072B2;padding:8px 14px}\
.note{color:#555;font-size:13px}.bad{color:#B00}.good{color:#070}";

fn pct(v: f64) -> String {
    format!("{:.0}%", 100.0 * v)
}

fn p_text(p: Option<f64>) -> String {
    match p {
        Some(p) if p < 0.001 => "p < 0.001".into(),
        Some(p) => format!("p = {p:.3}"),
        None => "–".into(),
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.2}"))
}

/// The channel whose deterministic credit fell most against the control.
fn treated(rows: &[PrepostRow]) -> Option<&PrepostRow> {
    rows.iter().filter(|r| r.metric == "attributed_deterministic" && r.did.is_some()).min_by(|a, b| a.did.unwrap_or(0.0).total_cmp(&b.did.unwrap_or(0.0)))
}

fn row<'a>(rows: &'a [PrepostRow], channel: &str, metric: &str) -> Option<&'a PrepostRow> {
    rows.iter().find(|r| r.channel == channel && r.metric == metric)
}

/// Renders the report.
pub fn html(input: &ReportInput<'_>) -> String {
    let mut h = String::new();
    let _ = write!(h, "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Tally measurement report</title><style>{CSS}</style></head><body>");
    h.push_str("<h1>Tally measurement report</h1>");
    if let Some((from, to)) = input.window {
        let _ = write!(h, "<p class=\"note\">Conversions from {from} to {to}, measured server-side by Tally (US-resident), compared with the browser pixel, the ad platforms' own numbers, and the period before a platform change.</p>");
    }
    // Key findings.
    h.push_str("<div class=\"key\"><b>Key findings</b><ul>");
    let pp_rows = input.prepost.map(Prepost::rows).unwrap_or_default();
    if let (Some(pp), Some(t)) = (input.prepost, treated(&pp_rows)) {
        let ch = &t.channel;
        let total = row(&pp_rows, ch, "attributed_total");
        let _ = write!(
            h,
            "<li>After {}, <b>{}</b>'s conversions matched to an ad by identifiers went from {:.1} to {:.1} a day ({}; against {} as the control, a change of {:.1} a day, 95% interval {:.1} to {:.1}).</li>",
            pp.cutover,
            escape(ch),
            t.pre_mean.unwrap_or(0.0),
            t.post_mean.unwrap_or(0.0),
            p_text(t.p_value),
            escape(&pp.control),
            t.did.unwrap_or(0.0),
            t.did_low.unwrap_or(0.0),
            t.did_high.unwrap_or(0.0)
        );
        if let Some(tot) = total {
            let _ = write!(
                h,
                "<li>Counting also the conversions Tally models for {} from cohorts (those that lost their identifiers), the daily total went from {:.1} to {:.1}: ",
                escape(ch),
                tot.pre_mean.unwrap_or(0.0),
                tot.post_mean.unwrap_or(0.0)
            );
            match t.share_lost_identifiers {
                Some(s) if s >= 0.5 => {
                    let _ = write!(h, "<b>about {} of the drop is lost identifiers (a measurement change), not fewer real conversions</b>.</li>", pct(s.min(1.0)));
                }
                Some(s) => {
                    let _ = write!(h, "lost identifiers explain about {} of the drop; the rest is fewer conversions.</li>", pct(s.max(0.0)));
                }
                None => h.push_str("no measurable change.</li>"),
            }
        }
        if let Some(c) = row(&pp_rows, &pp.control, "attributed_deterministic") {
            let _ = write!(
                h,
                "<li>The control channel {} changed by {:.1} a day ({}) — {}.</li>",
                escape(&pp.control),
                c.diff.unwrap_or(0.0),
                p_text(c.p_value),
                if c.p_value.is_some_and(|p| p < 0.01) { "a significant change there too, so read the comparison with care" } else { "not significant at the 1% level used throughout this report, as expected for an untouched channel" }
            );
        }
    }
    if let Some(cs) = input.client_server {
        let s = |n| crate::client_server::column_sum(cs, n);
        let (server, browser, both) = (s("server_only"), s("browser_only"), s("both"));
        let total = (server + browser + both).max(1);
        let _ = write!(
            h,
            "<li>Of {} distinct conversions, the server saw {} ({}) and the browser pixel {} ({}); {} were seen by the server only — conversions a pixel-only setup misses.</li>",
            server + browser + both,
            server + both,
            pct((server + both) as f64 / total as f64),
            browser + both,
            pct((browser + both) as f64 / total as f64),
            server
        );
    }
    if let Some(c) = input.checks.first()
        && let (Some(w), Some(cov)) = (c.wape, c.coverage)
    {
        let _ = write!(
            h,
            "<li>Self-check of the cohort model: on matched conversions whose identifiers Tally hid from itself, the per-campaign error was {} (WAPE) and the 90% intervals covered {} of campaigns.</li>",
            pct(w),
            pct(cov)
        );
    }
    h.push_str("</ul></div>");

    if let Some(pp) = input.prepost {
        prepost_section(&mut h, pp, &pp_rows);
    }
    if let Some(cs) = input.client_server {
        client_server_section(&mut h, cs);
    }
    if !input.totals.is_empty() {
        probabilistic_section(&mut h, input);
    }
    h.push_str("<h2>How to read this</h2><ul class=\"note\">\
        <li><b>Deterministic</b>: a conversion matched to an ad touch by a shared click id, email, phone or customer id (hashed). Certain, but only as good as the identifiers.</li>\
        <li><b>Modeled (probabilistic)</b>: conversions without a match, credited to the campaigns active in the same day, state and device cohort, as learned from the matched ones; the rest is organic. Cohorts with too few people are merged or left out (privacy).</li>\
        <li><b>Total</b> = deterministic + modeled.</li>\
        <li><b>95% interval</b>: the range the true change lies in with 95% confidence (Welch's t; a bootstrap over days agrees in the table). <b>p</b>: how surprising the change would be if nothing had changed; below 0.01 is a clear signal.</li>\
        <li><b>Difference-in-differences</b>: the channel's change minus the control channel's change over the same days, which removes seasonality both share.</li></ul>");
    h.push_str("</body></html>\n");
    h
}

fn prepost_section(h: &mut String, pp: &Prepost, rows: &[PrepostRow]) {
    let _ = write!(h, "<h2>Before and after {}</h2>", pp.cutover);
    let Some(s) = pp.series.first() else { return };
    let channels: Vec<String> = s.values.keys().filter(|(c, m)| c != ALL && m == "attributed_deterministic").map(|(c, _)| c.clone()).collect();
    let cut = s.days.iter().position(|d| *d >= pp.cutover).unwrap_or(s.days.len());
    let last = s.days.len().saturating_sub(1);
    let lines: Vec<Line<'_>> = channels
        .iter()
        .enumerate()
        .map(|(i, c)| Line { label: c.clone(), color: PALETTE[i % PALETTE.len()], values: s.values[&(c.clone(), "attributed_deterministic".to_owned())].clone(), dashed: false })
        .collect();
    h.push_str("<p>Conversions matched to each channel's ads by identifiers, per day. The red line marks the change.</p>");
    h.push_str(&line_chart("Deterministic attributed conversions per day, by channel", "conversions / day", &s.days, &lines, &[], Some(pp.cutover)));
    if let Some(t) = treated(rows) {
        let ch = &t.channel;
        let det = s.values.get(&(ch.clone(), "attributed_deterministic".to_owned())).cloned().unwrap_or_default();
        let tot = s.values.get(&(ch.clone(), "attributed_total".to_owned())).cloned().unwrap_or_default();
        let mut bands = Vec::new();
        for (values, color) in [(&det, PALETTE[5]), (&tot, PALETTE[0])] {
            for (range, days) in [(&values[..cut.min(values.len())], (0, cut.saturating_sub(1))), (&values[cut.min(values.len())..], (cut, last))] {
                if let Some((lo, hi)) = crate::stats::mean_interval(range, 0.95) {
                    bands.push(Band { days, range: (lo, hi), color });
                }
            }
        }
        let _ = write!(h, "<p>For <b>{}</b>: matched by identifiers (orange) against matched plus modeled (blue). Shaded: each period's mean daily count with its 95% interval.</p>", escape(ch));
        h.push_str(&line_chart(
            &format!("{ch}: deterministic vs total (deterministic + modeled) per day"),
            "conversions / day",
            &s.days,
            &[Line { label: "deterministic".into(), color: PALETTE[5], values: det, dashed: false }, Line { label: "total".into(), color: PALETTE[0], values: tot, dashed: true }],
            &bands,
            Some(pp.cutover),
        ));
    }
    if let Some(mr) = s.values.get(&(ALL.to_owned(), "match_rate".to_owned())) {
        h.push_str(&line_chart(
            "Share of all conversions matched by identifiers",
            "share",
            &s.days,
            &[Line { label: "match rate".into(), color: PALETTE[2], values: mr.clone(), dashed: false }],
            &[],
            Some(pp.cutover),
        ));
    }
    h.push_str("<table><tr><th>channel</th><th>metric</th><th>before</th><th>after</th><th>change</th><th>95% interval</th><th>p</th><th>vs control</th><th>95% interval</th><th>lost identifiers</th></tr>");
    for r in rows {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} … {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(if r.channel == ALL { "all" } else { &r.channel }),
            escape(&r.metric.replace('_', " ")),
            opt(r.pre_mean),
            opt(r.post_mean),
            opt(r.diff),
            opt(r.diff_low),
            opt(r.diff_high),
            p_text(r.p_value),
            opt(r.did),
            r.did_low.zip(r.did_high).map_or("–".into(), |(a, b)| format!("{a:.2} … {b:.2}")),
            r.share_lost_identifiers.map_or("–".into(), |s| pct(s.clamp(-1.0, 2.0)))
        );
    }
    h.push_str("</table><p class=\"note\">Means are per day. CPA = spend / total attributed conversions; ROAS = attributed value / spend. “Lost identifiers”: the share of the change in deterministic conversions explained by the fall in the share matched, rather than fewer conversions.</p>");
}

fn client_server_section(h: &mut String, cs: &RecordBatch) {
    h.push_str("<h2>Server-side vs browser pixel vs platform reports</h2>");
    let totals = crate::client_server::channel_totals(cs);
    let cats: Vec<String> = totals.iter().map(|t| t.0.clone()).collect();
    h.push_str("<p>Conversions Tally attributes to each channel (deterministic + modeled, server-side) next to what the ad platform reported for itself. Platforms count view-throughs and add their own modeling, so they usually claim more.</p>");
    h.push_str(&bar_chart(
        "Attributed conversions by channel: Tally vs platform-reported",
        "conversions",
        &cats,
        &[("Tally (server-side)", PALETTE[0], totals.iter().map(|t| t.1).collect()), ("platform-reported", PALETTE[1], totals.iter().map(|t| t.2).collect())],
    ));
    let s = |n| crate::client_server::column_sum(cs, n);
    let flagged = cs.column_by_name("flagged").map(|c| c.as_boolean().true_count()).unwrap_or(0);
    let rows = cs.num_rows();
    let _ = write!(
        h,
        "<table><tr><th>seen by</th><th>conversions</th></tr><tr><td>server only</td><td>{}</td></tr><tr><td>browser pixel only</td><td>{}</td></tr><tr><td>both (deduplicated by event id)</td><td>{}</td></tr></table>\
         <p>{flagged} of {rows} day × campaign rows differ significantly (p &lt; 0.01, exact Poisson test) from the platform's own number; the full table is <code>client_server</code> in <code>tally sql</code>.</p>",
        s("server_only"),
        s("browser_only"),
        s("both")
    );
    let mut worst: Vec<(String, String, f64, f64)> = Vec::new();
    let ch = cs.column_by_name("channel").map(|c| c.as_string::<i32>().clone());
    let camp = cs.column_by_name("campaign_id").map(|c| c.as_string::<i32>().clone());
    let att = cs.column_by_name("attributed_server").map(|c| c.as_primitive::<Float64Type>().clone());
    let base = cs.column_by_name("baseline_conversions").map(|c| c.as_primitive::<Float64Type>().clone());
    if let (Some(ch), Some(camp), Some(att), Some(base)) = (ch, camp, att, base) {
        let mut by: std::collections::BTreeMap<(String, String), (f64, f64)> = Default::default();
        for i in 0..cs.num_rows() {
            if ch.is_null(i) {
                continue;
            }
            let e = by.entry((ch.value(i).to_owned(), camp.value(i).to_owned())).or_default();
            e.0 += att.value(i);
            if base.is_valid(i) {
                e.1 += base.value(i);
            }
        }
        worst = by.into_iter().map(|((a, b), (x, y))| (a, b, x, y)).collect();
    }
    h.push_str("<table><tr><th>channel</th><th>campaign</th><th>Tally</th><th>platform</th><th>platform / Tally</th></tr>");
    for (c, k, x, y) in &worst {
        let _ = write!(h, "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", escape(c), escape(k), fmt_num(x.round()), fmt_num(y.round()), if *x > 0.0 { format!("{:.2}×", y / x) } else { "–".into() });
    }
    h.push_str("</table>");
}

fn probabilistic_section(h: &mut String, input: &ReportInput<'_>) {
    h.push_str("<h2>Modeled conversions (no identifier match)</h2>");
    let total: f64 = input.totals.iter().map(|t| t.credit).sum();
    let _ = write!(h, "<p>Tally credits {total:.0} conversions that matched no ad touch to the campaigns active in their cohort. Each bar is a campaign's modeled total with its 90% interval.</p>");
    let rows: Vec<IntervalRow> = input.totals.iter().map(|t| IntervalRow { label: format!("{} · {}", t.channel, t.campaign_id), point: t.credit, low: t.low, high: t.high, reference: None }).collect();
    h.push_str(&interval_chart("Modeled conversions per campaign (90% interval)", "conversions", &rows, None));
    if !input.checks.is_empty() {
        h.push_str("<p>Self-check: Tally hid the identifiers of a random 10% of matched conversions, predicted their campaigns from the cohort alone, and compares the prediction (blue, with its 90% interval) with the known answer (orange).</p>");
        let rows: Vec<IntervalRow> = input
            .checks
            .iter()
            .map(|c| IntervalRow { label: format!("{} · {}", c.channel, c.campaign_id), point: c.predicted, low: c.low, high: c.high, reference: Some(c.actual as f64) })
            .collect();
        h.push_str(&interval_chart("Self-check on hidden matched conversions", "conversions", &rows, Some("actual (known)")));
    }
}
