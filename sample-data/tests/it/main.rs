//! Integration tests of `tally-sample`: generate small worlds into temporary directories
//! and check them by reading the files back with Arrow's readers.

mod consistency;
mod determinism;
mod formats;
mod separation;

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::{Date32Type, Float64Type, Int64Type, TimestampMicrosecondType};
use chrono::NaiveDate;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tally_sample::{Format, Table, WorldConfig, WorldFile, table_schema};

/// A small world: 600 users over 30 days, cutover on day 15.
pub(crate) fn small(seed: u64) -> WorldConfig {
    WorldConfig {
        seed,
        users: 600,
        ..WorldConfig::ending_on(NaiveDate::from_ymd_opt(2026, 8, 30).unwrap(), 30)
    }
}

/// Reads `table` from `dir` (written in `format`) as one batch, with the table's schema.
pub(crate) fn read(dir: &Path, table: Table, format: Format, plaintext: bool) -> RecordBatch {
    let path = dir.join(table.file_name(format));
    let schema = table_schema(table, plaintext);
    let format = if table == Table::Truth {
        Format::Parquet
    } else {
        format
    };
    let file = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let batches: Vec<RecordBatch> = match format {
        Format::Parquet => ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap(),
        Format::Csv => arrow::csv::ReaderBuilder::new(schema.clone())
            .with_header(true)
            .build(BufReader::new(file))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap(),
        Format::Jsonl => arrow::json::ReaderBuilder::new(schema.clone())
            .build(BufReader::new(file))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap(),
    };
    let batch = concat_batches(&schema, &batches).unwrap();
    assert_eq!(
        batch.schema().fields(),
        schema.fields(),
        "{}",
        path.display()
    );
    batch
}

pub(crate) fn world_file(dir: &Path) -> WorldFile {
    serde_json::from_slice(&std::fs::read(dir.join("truth/world.json")).unwrap()).unwrap()
}

pub(crate) fn strs(b: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let col = b
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"));
    let a = col.as_string::<i32>();
    (0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i).to_owned()))
        .collect()
}

pub(crate) fn str_req(b: &RecordBatch, name: &str) -> Vec<String> {
    strs(b, name)
        .into_iter()
        .map(|s| s.expect("non-null"))
        .collect()
}

pub(crate) fn times(b: &RecordBatch, name: &str) -> Vec<i64> {
    b.column_by_name(name)
        .unwrap()
        .as_primitive::<TimestampMicrosecondType>()
        .values()
        .to_vec()
}

pub(crate) fn f64s(b: &RecordBatch, name: &str) -> Vec<f64> {
    b.column_by_name(name)
        .unwrap()
        .as_primitive::<Float64Type>()
        .values()
        .to_vec()
}

pub(crate) fn i64s(b: &RecordBatch, name: &str) -> Vec<i64> {
    b.column_by_name(name)
        .unwrap()
        .as_primitive::<Int64Type>()
        .values()
        .to_vec()
}

pub(crate) fn dates(b: &RecordBatch, name: &str) -> Vec<i32> {
    b.column_by_name(name)
        .unwrap()
        .as_primitive::<Date32Type>()
        .values()
        .to_vec()
}

pub(crate) fn bools(b: &RecordBatch, name: &str) -> Vec<bool> {
    let a = b.column_by_name(name).unwrap().as_boolean();
    (0..a.len()).map(|i| a.value(i)).collect()
}

/// Row index by a unique string key; panics on duplicates.
pub(crate) fn index_by(keys: &[String]) -> HashMap<&str, usize> {
    let mut map = HashMap::with_capacity(keys.len());
    for (i, k) in keys.iter().enumerate() {
        assert!(map.insert(k.as_str(), i).is_none(), "duplicate key {k}");
    }
    map
}

pub(crate) const DAY_US: i64 = 86_400_000_000;

pub(crate) fn midnight_us(d: NaiveDate) -> i64 {
    d.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp_micros()
}
