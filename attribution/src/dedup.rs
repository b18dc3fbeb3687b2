//! Conversion dedup (SPEC section 6.1): the server and browser copies of one conversion
//! become one row of `conversions_dedup`.
//!
//! Copies share `(advertiser_id, source_id, event_name, event_id)`. Sorted by
//! `(event_time, received_at, origin)` within that key, the first copy opens a conversion and
//! every later copy at most 48 h (inclusive) after that first copy joins it; a copy later
//! than that opens the next conversion. A row without `event_id` is a conversion of its own.
//! The winning copy is the earliest server copy, else the earliest copy; each column the
//! winner lacks (NULL) is taken from the earliest other copy that has it. The work is
//! columnar: one sort of `(key hash, event_time, received_at, origin)` tuples, one sweep to
//! find groups, then one `take` per column.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray, StringBuilder, UInt32Array};
use arrow::compute::{cast, take};
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

    // One 128-bit hash of each copy's dedup key, then one sort of plain tuples (no
    // lexicographic sort over string columns). Equal hashes are confirmed on the strings below.
    let origin_rank = |r: usize| match origin.value(r) {
        "browser" => 0u8,
        "server" => 1,
        _ => 2,
    };
    let mut sorted: Vec<(u128, i64, i64, u8, u32)> = (0..n)
        .map(|r| {
            let key = if event_id.is_valid(r) {
                let mut h = blake3::Hasher::new();
                for part in [adv.value(r), source.value(r), name.value(r), event_id.value(r)] {
                    h.update(&(part.len() as u64).to_le_bytes());
                    h.update(part.as_bytes());
                }
                let mut b = [0u8; 16];
                b.copy_from_slice(&h.finalize().as_bytes()[..16]);
                u128::from_le_bytes(b)
            } else {
                0
            };
            (key, time.value(r), received.value(r), origin_rank(r), r as u32)
        })
        .collect();
    sorted.sort_unstable();
    let order: Vec<usize> = sorted.iter().map(|t| t.4 as usize).collect();

    // Group boundaries over `order`.
    let mut groups: Vec<(usize, usize)> = Vec::new();
    // Copies group on equal key hashes (2⁻¹²⁸ per pair to merge two keys by accident); the
    // sweep reads the sorted tuples only, sequentially.
    let same_key = |a: usize, b: usize| sorted[a].0 != 0 && sorted[a].0 == sorted[b].0;
    let mut start = 0;
    for pos in 1..=n {
        let close = pos == n || !same_key(start, pos) || sorted[pos].1 - sorted[start].1 > DEDUP_WINDOW;
        if close {
            groups.push((start, pos));
            start = pos;
        }
    }

    // Winner and fill-in rows per group, and the derived columns.
    let mut winner = Vec::with_capacity(groups.len());
    let mut sources = Vec::with_capacity(groups.len());
    for &(s, e) in &groups {
        let rows = &order[s..e];
        let ranks = &sorted[s..e];
        let w = ranks.iter().find(|t| t.3 == 1).map_or(rows[0], |t| t.4 as usize);
        winner.push(w);
        let server = ranks.iter().filter(|t| t.3 == 1).count();
        sources.push(match (server, rows.len() - server) {
            (0, _) => "browser",
            (_, 0) => "server",
            _ => "both",
        });
    }
    // Each group's `conversion_key`, from its first copy. Copies with an `event_id` are visited
    // in row order (their text is read from the columns sequentially, not at random); copies
    // without one are numbered in group order, as the key of the n-th equal base is its ordinal.
    let mut keys = vec![[0u8; 16]; groups.len()];
    let mut firsts: Vec<(u32, u32)> = Vec::with_capacity(groups.len());
    let mut ordinals: HashMap<String, u32> = HashMap::new();
    for (g, &(s, _)) in groups.iter().enumerate() {
        let first = order[s];
        if event_id.is_valid(first) {
            firsts.push((first as u32, g as u32));
            continue;
        }
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
        keys[g] = conversion_digest(&format!("{base}\x1f{}", *k - 1));
    }
    firsts.sort_unstable();
    let mut text = String::new();
    for (first, g) in firsts {
        let first = first as usize;
        text.clear();
        write!(text, "{}\x1f{}\x1f{}\x1f{}\x1f{}", adv.value(first), source.value(first), name.value(first), event_id.value(first), time.value(first))
            .expect("write to String");
        keys[g as usize] = conversion_digest(&text);
    }

    // Output order: (advertiser_id, event_time, conversion_key) — deterministic.
    // Sort plain tuples (advertiser rank, time, key digest), not strings behind indices.
    let mut advertisers: Vec<&str> = winner.iter().map(|&w| adv.value(w)).collect();
    advertisers.sort_unstable();
    advertisers.dedup();
    let mut perm_keys: Vec<(u32, i64, [u8; 16], u32)> = winner
        .iter()
        .enumerate()
        .map(|(g, &w)| {
            let rank = advertisers.binary_search(&adv.value(w)).expect("present") as u32;
            (rank, time.value(w), keys[g], g as u32)
        })
        .collect();
    perm_keys.sort_unstable();
    let perm: Vec<usize> = perm_keys.into_iter().map(|t| t.3 as usize).collect();
    drop(sorted);

    let schema = DerivedTable::ConversionsDedup.schema();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    let winner_idx = UInt32Array::from_iter_values(perm.iter().map(|&g| winner[g] as u32));
    for f in Table::Conversions.schema().fields() {
        let c = col(f.name());
        let idx = if FILLED.contains(&f.name().as_str()) && c.null_count() > 0 {
            UInt32Array::from_iter_values(perm.iter().map(|&g| (groups[g], winner[g])).map(|((s, e), w)| {
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
    let mut key_column = StringBuilder::with_capacity(perm.len(), perm.len() * 32);
    let mut hex_key = [0u8; 32];
    for &g in &perm {
        hex::encode_to_slice(keys[g], &mut hex_key).expect("32 hex digits");
        key_column.append_value(std::str::from_utf8(&hex_key).expect("hex is ASCII"));
    }
    columns.push(Arc::new(key_column.finish()));
    columns.push(Arc::new(StringArray::from_iter_values(perm.iter().map(|&g| sources[g]))));
    let batch = RecordBatch::try_new(schema, columns)?;
    let copies: Vec<u32> = perm.iter().map(|&g| (groups[g].1 - groups[g].0) as u32).collect();
    debug_assert_eq!(copies.iter().map(|&c: &u32| c as usize).sum::<usize>(), n);
    Ok(Deduped { copies, batch })
}

/// `conversion_key`: the first 32 hex digits of SHA-256 over the conversion's identity text
/// (`advertiser_id`, `source_id`, `event_name`, `event_id` and the first copy's `event_time`
/// in microseconds, joined by U+001F) — reproducible by any engine that has SHA-256.
/// (This returns the 16 bytes; the column holds them in lowercase hex.)
fn conversion_digest(text: &str) -> [u8; 16] {
    let digest = Sha256::digest(text.as_bytes());
    digest[..16].try_into().expect("16 of 32 bytes")
}
