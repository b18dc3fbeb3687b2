//! Pre vs post a cutover (SPEC section 8): daily series per channel, the change in their means
//! with Welch and bootstrap 95% intervals, the difference-in-differences against a control
//! channel, and how much of the change in deterministic credit is lost identifiers (a lower
//! match share) rather than fewer conversions.
//!
//! The split: a channel's deterministic credit is its total (deterministic + probabilistic)
//! credit times its match share. On the log scale the change splits exactly:
//! `Δ ln det = Δ ln total + Δ ln share`, so `share_lost_identifiers = Δ ln share / Δ ln det`
//! and `share_fewer_conversions = Δ ln total / Δ ln det` (both NULL when det does not change).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Date32Type, Float64Type};
use chrono::NaiveDate;
use datafusion::prelude::SessionContext;
use tally_core::schema::DerivedTable;

use crate::client_server::date_value;
use crate::error::{Error, Result};
use crate::stats::{bootstrap_diff, mean, welch};

/// Confidence level of every interval of the comparison.
pub const LEVEL: f64 = 0.95;
/// Bootstrap replicates.
pub(crate) const REPLICATES: usize = 2000;

/// The advertiser-wide pseudo channel.
pub const ALL: &str = "*";

/// One advertiser's daily series.
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// Advertiser.
    pub advertiser_id: String,
    /// The days, in order.
    pub days: Vec<NaiveDate>,
    /// `(channel, metric)` → one value per day (`NaN`: undefined that day, e.g. CPA with no conversion).
    pub values: BTreeMap<(String, String), Vec<f64>>,
}

/// The result: the `prepost` rows and the series behind them (for charts).
#[derive(Debug, Clone)]
pub struct Prepost {
    /// In the `prepost` table schema.
    pub rows: RecordBatch,
    /// Per advertiser.
    pub series: Vec<Series>,
    /// The cutover.
    pub cutover: NaiveDate,
    /// The control channel.
    pub control: String,
}

fn day_of(d: i32) -> NaiveDate {
    NaiveDate::from_num_days_from_ce_opt(d + 719_163).unwrap_or(NaiveDate::MIN)
}

async fn query(ctx: &SessionContext, sql: &str, from: NaiveDate, to: NaiveDate) -> Result<Vec<RecordBatch>> {
    Ok(ctx.sql(sql).await?.with_param_values(vec![date_value(from), date_value(to)])?.collect().await?)
}

fn f64s(c: &ArrayRef) -> Result<Float64Array> {
    Ok(cast(c, &DataType::Float64)?.as_primitive::<Float64Type>().clone())
}

/// Reads the daily series of `from..=to`.
pub async fn series(ctx: &SessionContext, from: NaiveDate, to: NaiveDate) -> Result<Vec<Series>> {
    let days: Vec<NaiveDate> = from.iter_days().take_while(|d| *d <= to).collect();
    let n = days.len();
    let index = |d: NaiveDate| (d - from).num_days() as usize;
    let mut out: Vec<Series> = Vec::new();
    let mut values: BTreeMap<String, BTreeMap<(String, String), Vec<f64>>> = BTreeMap::new();
    let mut put = |adv: &str, ch: &str, metric: &str, d: NaiveDate, v: f64| {
        let e = values.entry(adv.to_owned()).or_default().entry((ch.to_owned(), metric.to_owned())).or_insert_with(|| vec![0.0; n]);
        e[index(d)] += v;
    };
    for b in query(ctx, include_str!("../sql/prepost_attributed.sql"), from, to).await? {
        let adv = cast(b.column(0), &DataType::Utf8)?;
        let adv = adv.as_string::<i32>();
        let date = b.column(1).as_primitive::<Date32Type>();
        let ch = cast(b.column(2), &DataType::Utf8)?;
        let ch = ch.as_string::<i32>();
        let (det, total, value) = (f64s(b.column(3))?, f64s(b.column(4))?, f64s(b.column(5))?);
        for i in 0..b.num_rows() {
            if ch.is_null(i) {
                continue;
            }
            let d = day_of(date.value(i));
            put(adv.value(i), ch.value(i), "attributed_deterministic", d, det.value(i));
            put(adv.value(i), ch.value(i), "attributed_total", d, total.value(i));
            put(adv.value(i), ch.value(i), "value", d, value.value(i));
        }
    }
    for b in query(ctx, include_str!("../sql/prepost_conversions.sql"), from, to).await? {
        let adv = cast(b.column(0), &DataType::Utf8)?;
        let adv = adv.as_string::<i32>();
        let date = b.column(1).as_primitive::<Date32Type>();
        let (conv, matched) = (f64s(b.column(2))?, f64s(b.column(3))?);
        for i in 0..b.num_rows() {
            let d = day_of(date.value(i));
            put(adv.value(i), ALL, "conversions", d, conv.value(i));
            put(adv.value(i), ALL, "matched", d, matched.value(i));
        }
    }
    if ctx.table_exist("spend")? {
        for b in query(ctx, include_str!("../sql/prepost_spend.sql"), from, to).await? {
            let adv = cast(b.column(0), &DataType::Utf8)?;
            let adv = adv.as_string::<i32>();
            let date = b.column(1).as_primitive::<Date32Type>();
            let ch = cast(b.column(2), &DataType::Utf8)?;
            let ch = ch.as_string::<i32>();
            let spend = f64s(b.column(3))?;
            for i in 0..b.num_rows() {
                put(adv.value(i), ch.value(i), "spend", day_of(date.value(i)), spend.value(i));
            }
        }
    }
    for (adv, mut v) in values {
        // Derived metrics.
        if let (Some(conv), Some(matched)) = (v.get(&(ALL.into(), "conversions".into())), v.get(&(ALL.into(), "matched".into()))) {
            let rate: Vec<f64> = conv.iter().zip(matched).map(|(c, m)| if *c > 0.0 { m / c } else { f64::NAN }).collect();
            v.insert((ALL.into(), "match_rate".into()), rate);
        }
        let channels: Vec<String> = v.keys().filter(|(c, m)| c != ALL && m == "attributed_total").map(|(c, _)| c.clone()).collect();
        for ch in channels {
            let total = v[&(ch.clone(), "attributed_total".to_owned())].clone();
            let value = v.get(&(ch.clone(), "value".to_owned())).cloned().unwrap_or_else(|| vec![0.0; n]);
            if let Some(spend) = v.get(&(ch.clone(), "spend".to_owned())).cloned() {
                let cpa = spend.iter().zip(&total).map(|(s, t)| if *t > 0.0 { s / t } else { f64::NAN }).collect();
                let roas = spend.iter().zip(&value).map(|(s, x)| if *s > 0.0 { x / s } else { f64::NAN }).collect();
                v.insert((ch.clone(), "cpa".into()), cpa);
                v.insert((ch.clone(), "roas".into()), roas);
            }
        }
        out.push(Series { advertiser_id: adv, days: days.clone(), values: v });
    }
    Ok(out)
}

/// Metrics reported per channel, and advertiser-wide.
const CHANNEL_METRICS: [&str; 4] = ["attributed_deterministic", "attributed_total", "cpa", "roas"];
const ALL_METRICS: [&str; 2] = ["conversions", "match_rate"];

fn split(days: &[NaiveDate], values: &[f64], cutover: NaiveDate) -> (Vec<f64>, Vec<f64>) {
    let mut pre = Vec::new();
    let mut post = Vec::new();
    for (d, v) in days.iter().zip(values) {
        if v.is_nan() {
            continue;
        }
        if *d < cutover { pre.push(*v) } else { post.push(*v) }
    }
    (pre, post)
}

/// Runs the comparison over `from..=to`.
pub async fn prepost(ctx: &SessionContext, from: NaiveDate, to: NaiveDate, cutover: NaiveDate, control: &str) -> Result<Prepost> {
    if cutover <= from + chrono::Duration::days(1) || cutover > to - chrono::Duration::days(1) {
        return Err(Error::Input(format!("the cutover {cutover} must leave at least two days of data on each side (the data covers {from} .. {to})")));
    }
    let all = series(ctx, from, to).await?;
    if all.is_empty() {
        return Err(Error::Missing("no attributed conversions in the window: run `tally attribute` first".into()));
    }
    let mut cols = Cols::default();
    for s in &all {
        let channels: Vec<String> = s.values.keys().filter(|(c, m)| c != ALL && m == "attributed_total").map(|(c, _)| c.clone()).collect();
        if !channels.iter().any(|c| c == control) {
            return Err(Error::Input(format!("control channel `{control}` has no attributed conversions for `{}` (channels: {})", s.advertiser_id, channels.join(", "))));
        }
        let mut seed = 8u64;
        let mut row = |ch: &str, metric: &str| {
            let Some(v) = s.values.get(&(ch.to_owned(), metric.to_owned())) else { return };
            let (pre, post) = split(&s.days, v, cutover);
            seed += 1;
            let w = welch(&pre, &post, LEVEL);
            let boot = bootstrap_diff(&pre, &post, LEVEL, REPLICATES, seed);
            let did = (ch != ALL && ch != control)
                .then(|| s.values.get(&(control.to_owned(), metric.to_owned())))
                .flatten()
                .and_then(|c| {
                    let d: Vec<f64> = v.iter().zip(c).map(|(x, y)| x - y).collect();
                    let (a, b) = split(&s.days, &d, cutover);
                    welch(&a, &b, LEVEL)
                });
            let mut shares = (None, None);
            if metric == "attributed_deterministic"
                && let Some(total) = s.values.get(&(ch.to_owned(), "attributed_total".to_owned()))
            {
                let (tp, tq) = split(&s.days, total, cutover);
                if let (Some(d0), Some(d1), Some(t0), Some(t1)) = (mean(&pre), mean(&post), mean(&tp), mean(&tq))
                    && d0 > 0.0 && d1 > 0.0 && t0 > 0.0 && t1 > 0.0 && (d1 / d0).ln().abs() > 1e-9
                {
                    let dd = (d1 / d0).ln();
                    let dt = (t1 / t0).ln();
                    shares = (Some((dd - dt) / dd), Some(dt / dd));
                }
            }
            cols.advertiser.push(s.advertiser_id.clone());
            cols.channel.push(ch.to_owned());
            cols.metric.push(metric.to_owned());
            cols.pre_mean.push(mean(&pre));
            cols.post_mean.push(mean(&post));
            cols.diff.push(w.map(|w| w.diff));
            cols.diff_low.push(w.map(|w| w.low));
            cols.diff_high.push(w.map(|w| w.high));
            cols.boot_low.push(boot.map(|b| b.0));
            cols.boot_high.push(boot.map(|b| b.1));
            cols.p_value.push(w.map(|w| w.p_value));
            cols.did.push(did.map(|w| w.diff));
            cols.did_low.push(did.map(|w| w.low));
            cols.did_high.push(did.map(|w| w.high));
            cols.lost.push(shares.0);
            cols.fewer.push(shares.1);
            cols.pre_days.push(pre.len() as i64);
            cols.post_days.push(post.len() as i64);
        };
        for ch in &channels {
            for m in CHANNEL_METRICS {
                row(ch, m);
            }
        }
        for m in ALL_METRICS {
            row(ALL, m);
        }
    }
    let n = cols.channel.len();
    let day = tally_core::store::date_to_day(cutover);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(cols.advertiser)),
        Arc::new(Date32Array::from(vec![day; n])),
        Arc::new(StringArray::from(vec![control.to_owned(); n])),
        Arc::new(StringArray::from(cols.channel)),
        Arc::new(StringArray::from(cols.metric)),
        Arc::new(Float64Array::from(cols.pre_mean)),
        Arc::new(Float64Array::from(cols.post_mean)),
        Arc::new(Float64Array::from(cols.diff)),
        Arc::new(Float64Array::from(cols.diff_low)),
        Arc::new(Float64Array::from(cols.diff_high)),
        Arc::new(Float64Array::from(cols.boot_low)),
        Arc::new(Float64Array::from(cols.boot_high)),
        Arc::new(Float64Array::from(cols.p_value)),
        Arc::new(Float64Array::from(cols.did)),
        Arc::new(Float64Array::from(cols.did_low)),
        Arc::new(Float64Array::from(cols.did_high)),
        Arc::new(Float64Array::from(cols.lost)),
        Arc::new(Float64Array::from(cols.fewer)),
        Arc::new(Int64Array::from(cols.pre_days)),
        Arc::new(Int64Array::from(cols.post_days)),
    ];
    let rows = RecordBatch::try_new(DerivedTable::Prepost.schema(), columns)?;
    Ok(Prepost { rows, series: all, cutover, control: control.to_owned() })
}

#[derive(Default)]
struct Cols {
    advertiser: Vec<String>,
    channel: Vec<String>,
    metric: Vec<String>,
    pre_mean: Vec<Option<f64>>,
    post_mean: Vec<Option<f64>>,
    diff: Vec<Option<f64>>,
    diff_low: Vec<Option<f64>>,
    diff_high: Vec<Option<f64>>,
    boot_low: Vec<Option<f64>>,
    boot_high: Vec<Option<f64>>,
    p_value: Vec<Option<f64>>,
    did: Vec<Option<f64>>,
    did_low: Vec<Option<f64>>,
    did_high: Vec<Option<f64>>,
    lost: Vec<Option<f64>>,
    fewer: Vec<Option<f64>>,
    pre_days: Vec<i64>,
    post_days: Vec<i64>,
}

/// A row of the result, by channel and metric (for summaries and tests).
#[derive(Debug, Clone, PartialEq)]
pub struct PrepostRow {
    /// Channel (`*` for advertiser-wide).
    pub channel: String,
    /// Metric.
    pub metric: String,
    /// Post − pre.
    pub diff: Option<f64>,
    /// Welch interval.
    pub diff_low: Option<f64>,
    /// Welch interval.
    pub diff_high: Option<f64>,
    /// Welch p-value.
    pub p_value: Option<f64>,
    /// Difference-in-differences against the control.
    pub did: Option<f64>,
    /// Its interval.
    pub did_low: Option<f64>,
    /// Its interval.
    pub did_high: Option<f64>,
    /// Pre mean.
    pub pre_mean: Option<f64>,
    /// Post mean.
    pub post_mean: Option<f64>,
    /// Share of the change in deterministic credit from lost identifiers.
    pub share_lost_identifiers: Option<f64>,
}

impl Prepost {
    /// The rows as structs.
    pub fn rows(&self) -> Vec<PrepostRow> {
        let b = &self.rows;
        let s = |i: usize| b.column(i).as_string::<i32>().clone();
        let f = |i: usize| b.column(i).as_primitive::<Float64Type>().clone();
        let (ch, m) = (s(3), s(4));
        let opt = |a: &Float64Array, r: usize| a.is_valid(r).then(|| a.value(r));
        let cols: Vec<Float64Array> = (5..18).map(f).collect();
        (0..b.num_rows())
            .map(|r| PrepostRow {
                channel: ch.value(r).to_owned(),
                metric: m.value(r).to_owned(),
                pre_mean: opt(&cols[0], r),
                post_mean: opt(&cols[1], r),
                diff: opt(&cols[2], r),
                diff_low: opt(&cols[3], r),
                diff_high: opt(&cols[4], r),
                p_value: opt(&cols[7], r),
                did: opt(&cols[8], r),
                did_low: opt(&cols[9], r),
                did_high: opt(&cols[10], r),
                share_lost_identifiers: opt(&cols[11], r),
            })
            .collect()
    }
}
