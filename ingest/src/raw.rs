//! Readers that turn input files (and JSON bodies) into raw batches.
//!
//! A raw batch keeps the input's column names and, for CSV and JSON, text values; every row
//! keeps a [`Location`] (file line or row number) so an error can say exactly where it is.
//! A line that cannot even be read as a row (wrong number of CSV fields, invalid JSON) is a
//! row with a [`RowError`] and null values: it is reported like any other bad row and never
//! stops the rows around it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use crate::convert::RowError;

/// Rows per raw batch.
pub const BATCH_ROWS: usize = 64 * 1024;

/// An input file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated values with a header line.
    Csv,
    /// One JSON object per line.
    Jsonl,
    /// Apache Parquet.
    Parquet,
}

impl Format {
    /// The format a file name implies.
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "csv" => Some(Format::Csv),
            "jsonl" | "ndjson" | "json" => Some(Format::Jsonl),
            "parquet" | "pq" => Some(Format::Parquet),
            _ => None,
        }
    }
}

/// Where a row came from, for error messages.
#[derive(Debug, Clone)]
pub enum Locations {
    /// Line numbers (1-based), one per row.
    Lines(Vec<u64>),
    /// Row numbers (1-based) starting at this one.
    Rows(u64),
}

impl Locations {
    /// Human form of row `i`'s location.
    pub fn describe(&self, i: usize) -> String {
        match self {
            Locations::Lines(lines) => format!("line {}", lines[i]),
            Locations::Rows(first) => format!("row {}", first + i as u64),
        }
    }
}

/// A batch of raw rows.
#[derive(Debug)]
pub struct RawBatch {
    /// The rows, as the input named and typed them.
    pub batch: RecordBatch,
    /// Where each row came from.
    pub locations: Locations,
    /// Rows that could not be read at all (their values are null).
    pub unreadable: Vec<RowError>,
    /// How far into the file this batch ends, as a fraction of the file.
    pub progress: f64,
}

/// Reading a file failed as a whole.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReadError(pub String);

/// Opens `path` as `format`, yielding raw batches.
pub fn open(path: &Path, format: Format) -> Result<Box<dyn Iterator<Item = Result<RawBatch, ReadError>> + Send>, ReadError> {
    let file = File::open(path).map_err(|e| ReadError(format!("cannot open: {e}")))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0).max(1);
    Ok(match format {
        Format::Csv => Box::new(CsvBatches::new(file, size)?),
        Format::Jsonl => Box::new(JsonlBatches { lines: BufReader::new(file), line: 0, read: 0, size, done: false }),
        Format::Parquet => {
            let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| ReadError(format!("not a readable Parquet file: {e}")))?;
            let total = builder.metadata().file_metadata().num_rows().max(1) as u64;
            let reader = builder.with_batch_size(BATCH_ROWS).build().map_err(|e| ReadError(e.to_string()))?;
            Box::new(ParquetBatches { reader, next_row: 1, total })
        }
    })
}

struct ParquetBatches {
    reader: ParquetRecordBatchReader,
    next_row: u64,
    total: u64,
}

impl Iterator for ParquetBatches {
    type Item = Result<RawBatch, ReadError>;
    fn next(&mut self) -> Option<Self::Item> {
        let batch = match self.reader.next()? {
            Ok(b) => b,
            Err(e) => return Some(Err(ReadError(format!("row {}: {e}", self.next_row)))),
        };
        let first = self.next_row;
        self.next_row += batch.num_rows() as u64;
        let progress = (self.next_row - 1) as f64 / self.total as f64;
        Some(Ok(RawBatch { batch, locations: Locations::Rows(first), unreadable: vec![], progress }))
    }
}

/// Counts bytes read through it, for progress.
struct Counting<R> {
    inner: R,
    read: Arc<std::sync::atomic::AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

struct CsvBatches {
    reader: csv::Reader<Counting<File>>,
    header: Vec<String>,
    read: Arc<std::sync::atomic::AtomicU64>,
    size: u64,
    record: csv::StringRecord,
    done: bool,
}

impl CsvBatches {
    fn new(file: File, size: u64) -> Result<CsvBatches, ReadError> {
        let read = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .has_headers(true)
            .from_reader(Counting { inner: file, read: read.clone() });
        let header: Vec<String> = reader
            .headers()
            .map_err(|e| ReadError(format!("line 1: cannot read the header: {e}")))?
            .iter()
            .map(|h| h.trim().trim_start_matches('\u{feff}').to_owned())
            .collect();
        if header.iter().all(String::is_empty) {
            return Err(ReadError("line 1: the header is empty".into()));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = header.iter().find(|h| !seen.insert(h.as_str())) {
            return Err(ReadError(format!("line 1: column `{dup}` appears twice")));
        }
        Ok(CsvBatches { reader, header, read, size, record: csv::StringRecord::new(), done: false })
    }
}

impl Iterator for CsvBatches {
    type Item = Result<RawBatch, ReadError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let width = self.header.len();
        let mut builders: Vec<StringBuilder> = (0..width).map(|_| StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 16)).collect();
        let mut lines = Vec::with_capacity(BATCH_ROWS);
        let mut unreadable = Vec::new();
        while lines.len() < BATCH_ROWS {
            match self.reader.read_record(&mut self.record) {
                Ok(false) => {
                    self.done = true;
                    break;
                }
                Ok(true) => {
                    let row = lines.len();
                    lines.push(self.record.position().map_or(0, |p| p.line()));
                    if self.record.len() != width {
                        unreadable.push(RowError {
                            row,
                            column: "*".into(),
                            message: format!("expected {width} fields as in the header, found {}", self.record.len()),
                        });
                        builders.iter_mut().for_each(StringBuilder::append_null);
                        continue;
                    }
                    for (b, v) in builders.iter_mut().zip(self.record.iter()) {
                        if v.is_empty() { b.append_null() } else { b.append_value(v) }
                    }
                }
                Err(e) => {
                    let line = e.position().map_or(0, |p| p.line());
                    if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                        return Some(Err(ReadError(format!("line {line}: {e}"))));
                    }
                    // Invalid UTF-8 and the like: the record is unreadable, the rest goes on.
                    let row = lines.len();
                    lines.push(line);
                    unreadable.push(RowError { row, column: "*".into(), message: format!("unreadable record: {e}") });
                    builders.iter_mut().for_each(StringBuilder::append_null);
                }
            }
        }
        if lines.is_empty() {
            return None;
        }
        let batch = text_batch(&self.header, builders, lines.len());
        let progress = self.read.load(std::sync::atomic::Ordering::Relaxed) as f64 / self.size as f64;
        Some(Ok(RawBatch { batch, locations: Locations::Lines(lines), unreadable, progress }))
    }
}

struct JsonlBatches {
    lines: BufReader<File>,
    line: u64,
    read: u64,
    size: u64,
    done: bool,
}

impl Iterator for JsonlBatches {
    type Item = Result<RawBatch, ReadError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut values = Vec::with_capacity(1024);
        let mut lines = Vec::with_capacity(1024);
        let mut buf = String::new();
        while values.len() < BATCH_ROWS {
            buf.clear();
            match self.lines.read_line(&mut buf) {
                Ok(0) => {
                    self.done = true;
                    break;
                }
                Ok(n) => {
                    self.read += n as u64;
                    self.line += 1;
                    if buf.trim().is_empty() {
                        continue;
                    }
                    lines.push(self.line);
                    values.push(serde_json::from_str::<serde_json::Value>(&buf).map_err(|e| format!("invalid JSON: {e}")));
                }
                Err(e) => return Some(Err(ReadError(format!("line {}: {e}", self.line + 1)))),
            }
        }
        if lines.is_empty() {
            return None;
        }
        let (batch, unreadable) = json_rows(values);
        Some(Ok(RawBatch { batch, locations: Locations::Lines(lines), unreadable, progress: self.read as f64 / self.size as f64 }))
    }
}

/// JSON values (objects) to a raw batch of text columns, in order of first appearance.
/// Numbers and booleans keep their JSON text; a non-object, an unparseable line or a nested
/// value makes its row unreadable.
pub fn json_rows(values: Vec<Result<serde_json::Value, String>>) -> (RecordBatch, Vec<RowError>) {
    let n = values.len();
    let mut names: Vec<String> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut cells: Vec<Vec<Option<String>>> = Vec::new();
    let mut unreadable = Vec::new();
    for (row, value) in values.into_iter().enumerate() {
        let object = match value {
            Ok(serde_json::Value::Object(o)) => o,
            Ok(_) => {
                unreadable.push(RowError { row, column: "*".into(), message: "expected a JSON object".into() });
                continue;
            }
            Err(message) => {
                unreadable.push(RowError { row, column: "*".into(), message });
                continue;
            }
        };
        let mut bad = None;
        let mut row_cells = Vec::with_capacity(object.len());
        for (key, v) in object {
            let text = match v {
                serde_json::Value::Null => None,
                serde_json::Value::String(s) => Some(s),
                serde_json::Value::Number(x) => Some(x.to_string()),
                serde_json::Value::Bool(b) => Some(b.to_string()),
                serde_json::Value::Array(_) | serde_json::Value::Object(_) => {
                    bad.get_or_insert(key.clone());
                    None
                }
            };
            row_cells.push((key, text));
        }
        if let Some(column) = bad {
            unreadable.push(RowError { row, column: column.clone(), message: format!("`{column}` must be a single value, not an array or object") });
            continue;
        }
        for (key, text) in row_cells {
            let i = match index.get(&key) {
                Some(i) => *i,
                None => {
                    cells.push(vec![None; n]);
                    names.push(key.clone());
                    index.insert(key, names.len() - 1);
                    names.len() - 1
                }
            };
            cells[i][row] = text;
        }
    }
    let builders = cells
        .into_iter()
        .map(|col| {
            let mut b = StringBuilder::with_capacity(n, n * 16);
            col.into_iter().for_each(|v| b.append_option(v));
            b
        })
        .collect();
    (text_batch(&names, builders, n), unreadable)
}

fn text_batch(names: &[String], builders: Vec<StringBuilder>, rows: usize) -> RecordBatch {
    let schema = Arc::new(Schema::new(names.iter().map(|n| Field::new(n, DataType::Utf8, true)).collect::<Vec<_>>()));
    let columns: Vec<ArrayRef> = builders.into_iter().map(|mut b| Arc::new(b.finish()) as ArrayRef).collect();
    let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
    RecordBatch::try_new_with_options(schema, columns, &options).expect("columns of equal length")
}
