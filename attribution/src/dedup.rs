//! Conversion dedup (SPEC section 6.1): the server and browser copies of one conversion
//! become one row of `conversions_dedup`.
//!
//! Copies share `(advertiser_id, source_id, event_name, event_id)`. Sorted by
//! `(event_time, received_at, origin)` within that key, the first copy opens a conversion and
//! every later copy at most 48 h (inclusive) after that first copy joins it; a copy later
//! than that opens the next conversion. A row without `event_id` is a conversion of its own.
//! The winning copy is the earliest server copy, else the earliest copy; each column the
//! winner lacks (NULL) is taken from the earliest other copy that has it. The work is
//! columnar: one sort, one sweep to find groups, then one `take` per column.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray, UInt32Array};
use arrow::compute::{SortColumn, SortOptions, cast, lexsort_to_indices, take};
use arrow::datatypes::TimestampMicrosecondType;
use sha2::{Digest, Sha256};
use tally_core::schema::{DerivedTable, Table};

use crate::error::{Error, Result};
use crate::options::HOUR;

/// How long after a conversion's first copy another copy still belongs to it.
pub const DEDUP_WINDOW: i64 = 48 * HOUR;

/// Columns a winner lacking them takes from another copy.
const FILLED: [&str; 10] = ["action_source", "em", "ph", "external_id", "click_id", "device_os", "geo_state", "value", "currency", "order_id"];

/// The distinct conversions of a set of copies.
#[derive(Debug)]
pub(crate) struct Deduped {
    /// One row per distinct conversion, in the `conversions_dedup` schema, sorted by
    /// `(advertiser_id, event_time, conversion_key)`.
    pub(crate) batch: RecordBatch,
    /// Copies behind each output row.
    pub(crate) copies: Vec<u32>,
}

/// Casts a batch read through DataFusion (Utf8View strings, any column order, maybe a `date`
/// column) to the `conversions` table schema.
pub(crate) fn to_table_schema(batch: &RecordBatch, table: &arrow::datatypes::Schema) -> Result<RecordBatch> {
    let mut cols = Vec::with_capacity(table.fields().len());
    for f in table.fields() {
        let c = batch.column_by_name(f.name()).ok_or_else(|| Error::Input(format!("column `{}` missing", f.name())))?;
        cols.push(if c.data_type() == f.data_type() { c.clone() } else { cast(c, f.data_type())? });
    }
    Ok(RecordBatch::try_new(Arc::new(table.clone()), cols)?)
}

/// Dedups `copies` (in the `conversions` table schema, test events already removed).
pub(crate) fn dedup(copies: &RecordBatch) -> Result<Deduped> {
    let n = copies.num_rows();
    let col = |name: &str| copies.column_by_name(name).expect("conversions schema");
    let adv = col("advertiser_id").as_string::<i32>();
    let source = col("source_id").as_string::<i32>();
    let name = col("event_name").as_string::<i32>();
    let event_id = col("event_id").as_string::<i32>();
    let time = col("event_time").as_primitive::<TimestampMicrosecondType>();
    let received = col("received_at").as_primitive::<TimestampMicrosecondType>();
    let origin = col("origin").as_string::<i32>();
    let order_id = col("order_id").as_string::<i32>();

    let sort_cols: Vec<SortColumn> = ["advertiser_id", "source_id", "event_name", "event_id", "event_time", "received_at", "origin"]
        .iter()
        .map(|c| SortColumn { values: col(c).clone(), options: Some(SortOptions { descending: false, nulls_first: false }) })
        .collect();
    let order = lexsort_to_indices(&sort_cols, None)?;
    let order: Vec<usize> = order.values().iter().map(|&i| i as usize).collect();

    // Group boundaries over `order`.
    let mut groups: Vec<(usize, usize)> = Vec::new();
    let same_key = |a: usize, b: usize| {
        event_id.is_valid(a)
            && event_id.is_valid(b)
            && event_id.value(a) == event_id.value(b)
            && adv.value(a) == adv.value(b)
            && source.value(a) == source.value(b)
            && name.value(a) == name.value(b)
    };
    let mut start = 0;
    for pos in 1..=n {
        let close = pos == n || !same_key(order[start], order[pos]) || time.value(order[pos]) - time.value(order[start]) > DEDUP_WINDOW;
        if close {
            groups.push((start, pos));
            start = pos;
        }
    }

    // Winner and fill-in rows per group, and the derived columns.
    let mut winner = Vec::with_capacity(groups.len());
    let mut keys = Vec::with_capacity(groups.len());
    let mut sources = Vec::with_capacity(groups.len());
    let mut ordinals: HashMap<String, u32> = HashMap::new();
    for &(s, e) in &groups {
        let rows = &order[s..e];
        let w = rows.iter().copied().find(|&r| origin.value(r) == "server").unwrap_or(rows[0]);
        winner.push(w);
        let server = rows.iter().filter(|&&r| origin.value(r) == "server").count();
        sources.push(match (server, rows.len() - server) {
            (0, _) => "browser",
            (_, 0) => "server",
            _ => "both",
        });
        let first = rows[0];
        let text = if event_id.is_valid(first) {
            format!("{}\x1f{}\x1f{}\x1f{}\x1f{}", adv.value(first), source.value(first), name.value(first), event_id.value(first), time.value(first))
        } else {
            let base = format!(
                "{}\x1f{}\x1f{}\x1f\x1f{}\x1f{}\x1f{}\x1f{}",
                adv.value(first),
                source.value(first),
                name.value(first),
                time.value(first),
                received.value(first),
                origin.value(first),
                if order_id.is_valid(first) { order_id.value(first) } else { "" }
            );
            let k = ordinals.entry(base.clone()).or_insert(0);
            *k += 1;
            format!("{base}\x1f{}", *k - 1)
        };
        keys.push(conversion_key(&text));
    }

    let schema = DerivedTable::ConversionsDedup.schema();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    let winner_idx = UInt32Array::from_iter_values(winner.iter().map(|&w| w as u32));
    for f in Table::Conversions.schema().fields() {
        let c = col(f.name());
        let idx = if FILLED.contains(&f.name().as_str()) && c.null_count() > 0 {
            UInt32Array::from_iter_values(groups.iter().zip(&winner).map(|(&(s, e), &w)| {
                if c.is_valid(w) {
                    w as u32
                } else {
                    order[s..e].iter().copied().find(|&r| r != w && c.is_valid(r)).unwrap_or(w) as u32
                }
            }))
        } else {
            winner_idx.clone()
        };
        columns.push(take(c.as_ref(), &idx, None)?);
    }
    columns.push(Arc::new(StringArray::from(keys)));
    columns.push(Arc::new(StringArray::from(sources)));
    let batch = RecordBatch::try_new(schema, columns)?;

    // Output order: (advertiser_id, event_time, conversion_key) — deterministic.
    let sort_cols: Vec<SortColumn> = ["advertiser_id", "event_time", "conversion_key"]
        .iter()
        .map(|c| SortColumn { values: batch.column_by_name(c).expect("schema").clone(), options: None })
        .collect();
    let order = lexsort_to_indices(&sort_cols, None)?;
    let batch = arrow::compute::take_record_batch(&batch, &order)?;
    let copies: Vec<u32> = order.values().iter().map(|&i| (groups[i as usize].1 - groups[i as usize].0) as u32).collect();
    debug_assert_eq!(copies.iter().map(|&c: &u32| c as usize).sum::<usize>(), n);
    Ok(Deduped { copies, batch })
}

/// `conversion_key`: the first 32 hex digits of SHA-256 over the conversion's identity text
/// (`advertiser_id`, `source_id`, `event_name`, `event_id` and the first copy's `event_time`
/// in microseconds, joined by U+001F) — reproducible by any engine that has SHA-256.
pub(crate) fn conversion_key(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    hex::encode(&digest[..16])
}
