//! `tally-compare`: the comparisons a marketing team reads (SPEC sections 7 and 8) and the
//! report they read them in.
//!
//! - [`client_server()`]: server-only / browser-only / both per day and campaign, Tally's
//!   attributed conversions against the platforms' own numbers, with an exact Poisson test;
//! - [`prepost()`]: daily series per channel before and after a cutover, Welch and bootstrap
//!   intervals, difference-in-differences against a control channel, and the split of the
//!   change into lost identifiers vs fewer conversions;
//! - [`report::html`]: one self-contained HTML page with inline SVG charts ([`chart`]).
//!
//! Every function reads through a DataFusion session the caller builds (the analyst catalog),
//! so the same code runs wherever the catalog does; [`write_table`] stores a result as its
//! derived table.

pub mod chart;
mod client_server;
mod error;
mod prepost;
pub mod report;
mod stats;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Date32Type, Float64Type, Int64Type};
use chrono::NaiveDate;
use datafusion::prelude::SessionContext;
use tally_core::Store;
use tally_core::paths::{AdvertiserId, PartitionPath};
use tally_core::schema::DerivedTable;

pub use client_server::{FLAG_P, channel_totals, client_server, column_sum};
pub use error::{Error, Result};
pub use prepost::{ALL, LEVEL, Prepost, PrepostRow, Series, prepost, series};
pub use report::{CheckRow, ReportInput, TotalRow};

/// The first and last day with deduplicated conversions (what `tally attribute` wrote).
pub async fn window(ctx: &SessionContext) -> Result<(NaiveDate, NaiveDate)> {
    if !ctx.table_exist("conversions_dedup")? || !ctx.table_exist("attributed_conversions")? {
        return Err(Error::Missing("no attribution in the store yet: run `tally attribute` first".into()));
    }
    let b = ctx.sql("select min(cast(event_time as date)), max(cast(event_time as date)) from conversions_dedup").await?.collect().await?;
    let (lo, hi) = (b[0].column(0).as_primitive::<Date32Type>(), b[0].column(1).as_primitive::<Date32Type>());
    if lo.is_null(0) || hi.is_null(0) {
        return Err(Error::Missing("no attributed conversions in the store: run `tally attribute` first".into()));
    }
    let day = |d: i32| NaiveDate::from_num_days_from_ce_opt(d + 719_163).unwrap_or(NaiveDate::MIN);
    Ok((day(lo.value(0)), day(hi.value(0))))
}

/// Writes `batch` as derived `table`, replacing what an earlier run wrote for partitions dated
/// `from..=to` (for `advertiser` alone when given: a run bound to one advertiser). Returns the
/// rows written.
pub async fn write_table(
    store: &Store,
    key_id: &str,
    table: DerivedTable,
    batch: &RecordBatch,
    from: NaiveDate,
    to: NaiveDate,
    advertiser: Option<&AdvertiserId>,
) -> Result<usize> {
    let mut superseded = store.list_window_files(table.name(), from, to).await?;
    // A run bound to one advertiser replaces that advertiser's rows only.
    if let Some(a) = advertiser {
        superseded.retain(|f| PartitionPath::of_file(table.name(), f).is_some_and(|p| p.advertiser() == a));
    }
    let mut writer = store.derived_writer(table, &store.stamp(key_id));
    writer.write(batch)?;
    let written = writer.finish().await?;
    store.replace_files(&superseded, &written).await?;
    Ok(batch.num_rows())
}

fn strings(b: &RecordBatch, name: &str) -> Result<Vec<String>> {
    let c = cast(b.column_by_name(name).ok_or_else(|| Error::Missing(format!("column `{name}` missing")))?, &DataType::Utf8)?;
    Ok(c.as_string::<i32>().iter().map(|v| v.unwrap_or_default().to_owned()).collect())
}

fn floats(b: &RecordBatch, name: &str) -> Result<Vec<Option<f64>>> {
    let c = cast(b.column_by_name(name).ok_or_else(|| Error::Missing(format!("column `{name}` missing")))?, &DataType::Float64)?;
    Ok(c.as_primitive::<Float64Type>().iter().collect())
}

/// The latest run's probabilistic totals and holdout checks (empty when the step did not run).
pub async fn probabilistic(ctx: &SessionContext) -> Result<(Vec<TotalRow>, Vec<CheckRow>)> {
    let mut totals = Vec::new();
    let mut checks = Vec::new();
    if ctx.table_exist("probabilistic_totals")? {
        let sql = "select channel, campaign_id, credit, credit_low, credit_high from probabilistic_totals \
                   where window_to = (select max(window_to) from probabilistic_totals) order by credit desc, campaign_id";
        for b in ctx.sql(sql).await?.collect().await? {
            let (ch, camp) = (strings(&b, "channel")?, strings(&b, "campaign_id")?);
            let (c, l, h) = (floats(&b, "credit")?, floats(&b, "credit_low")?, floats(&b, "credit_high")?);
            for i in 0..b.num_rows() {
                totals.push(TotalRow {
                    channel: ch[i].clone(),
                    campaign_id: camp[i].clone(),
                    credit: c[i].unwrap_or(0.0),
                    low: l[i].unwrap_or(0.0),
                    high: h[i].unwrap_or(0.0),
                });
            }
        }
    }
    if ctx.table_exist("probabilistic_validation")? {
        let sql = "select channel, campaign_id, predicted, actual, low, high, wape, coverage from probabilistic_validation \
                   where window_to = (select max(window_to) from probabilistic_validation) order by actual desc, campaign_id";
        for b in ctx.sql(sql).await?.collect().await? {
            let (ch, camp) = (strings(&b, "channel")?, strings(&b, "campaign_id")?);
            let (p, l, h, w, cov) = (floats(&b, "predicted")?, floats(&b, "low")?, floats(&b, "high")?, floats(&b, "wape")?, floats(&b, "coverage")?);
            let actual = cast(b.column_by_name("actual").expect("selected"), &DataType::Int64)?;
            let actual = actual.as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                checks.push(CheckRow {
                    channel: ch[i].clone(),
                    campaign_id: camp[i].clone(),
                    predicted: p[i].unwrap_or(0.0),
                    actual: actual.value(i),
                    low: l[i].unwrap_or(0.0),
                    high: h[i].unwrap_or(0.0),
                    wape: w[i],
                    coverage: cov[i],
                });
            }
        }
    }
    Ok((totals, checks))
}
