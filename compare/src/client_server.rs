//! Client vs server reconciliation (SPEC section 7): what the server saw, what the browser
//! pixel saw, what Tally attributes, and what the platforms claimed, per day and campaign,
//! with an exact Poisson test of Tally's count against the platform's.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, RecordBatch};
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::Float64Type;
use chrono::NaiveDate;
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use tally_core::schema::DerivedTable;

use crate::error::Result;
use crate::stats::poisson_rate_test;

/// Rows whose p-value is below this are flagged.
pub const FLAG_P: f64 = 0.01;

const SQL: &str = include_str!("../sql/client_server.sql");

pub(crate) fn date_value(d: NaiveDate) -> ScalarValue {
    ScalarValue::Date32(Some(tally_core::store::date_to_day(d)))
}

/// The `client_server` rows for `from..=to`, in the table's schema.
pub async fn client_server(ctx: &SessionContext, from: NaiveDate, to: NaiveDate) -> Result<RecordBatch> {
    let batches = ctx.sql(SQL).await?.with_param_values(vec![date_value(from), date_value(to)])?.collect().await?;
    let schema = DerivedTable::ClientServer.schema();
    let n_sql = schema.fields().len() - 3;
    let mut columns: Vec<Vec<ArrayRef>> = vec![Vec::new(); n_sql];
    for b in &batches {
        for (i, c) in columns.iter_mut().enumerate() {
            c.push(cast(b.column(i), schema.field(i).data_type())?);
        }
    }
    let mut out: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (i, parts) in columns.into_iter().enumerate() {
        let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
        out.push(if refs.is_empty() { arrow::array::new_empty_array(schema.field(i).data_type()) } else { arrow::compute::concat(&refs)? });
    }
    let attributed = out[9].as_primitive::<Float64Type>().clone();
    let baseline = out[10].as_primitive::<Float64Type>().clone();
    let channel = out[2].clone();
    let n = attributed.len();
    let mut discrepancy = Vec::with_capacity(n);
    let mut p_value = Vec::with_capacity(n);
    let mut flagged = Vec::with_capacity(n);
    for i in 0..n {
        if channel.is_null(i) || baseline.is_null(i) {
            discrepancy.push(None);
            p_value.push(None);
            flagged.push(false);
            continue;
        }
        let (x, y) = (attributed.value(i), baseline.value(i));
        let p = poisson_rate_test(x.round().max(0.0) as u64, y.round().max(0.0) as u64);
        discrepancy.push(Some(x - y));
        p_value.push(Some(p));
        flagged.push(p < FLAG_P);
    }
    out.push(Arc::new(Float64Array::from(discrepancy)));
    out.push(Arc::new(Float64Array::from(p_value)));
    out.push(Arc::new(BooleanArray::from(flagged)));
    let batch = RecordBatch::try_new(schema.clone(), out)?;
    Ok(concat_batches(&schema, [&batch])?)
}

/// Per channel over the window: Tally's attributed conversions and the platform's claims.
pub fn channel_totals(batch: &RecordBatch) -> Vec<(String, f64, f64)> {
    let channel = batch.column(2).as_string::<i32>();
    let attributed = batch.column(9).as_primitive::<Float64Type>();
    let baseline = batch.column(10).as_primitive::<Float64Type>();
    let mut out: std::collections::BTreeMap<String, (f64, f64)> = std::collections::BTreeMap::new();
    for i in 0..batch.num_rows() {
        if channel.is_null(i) {
            continue;
        }
        let e = out.entry(channel.value(i).to_owned()).or_default();
        e.0 += attributed.value(i);
        if baseline.is_valid(i) {
            e.1 += baseline.value(i);
        }
    }
    out.into_iter().map(|(c, (a, b))| (c, a, b)).collect()
}

/// Sum of an Int64 column (the counts).
pub fn column_sum(batch: &RecordBatch, name: &str) -> i64 {
    batch.column_by_name(name).map(|c| c.as_primitive::<arrow::datatypes::Int64Type>().iter().flatten().sum()).unwrap_or(0)
}

