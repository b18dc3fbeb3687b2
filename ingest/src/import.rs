//! `tally import`: bulk-load files through the same validation, hashing and writer as the API.
//!
//! Files are read one batch at a time (memory stays bounded whatever the file size) on a reader
//! thread; this thread validates, pseudonymizes and splits each batch by partition; one writer
//! thread per core encodes the partitions it owns. The stages overlap on every core.
//! Nothing becomes visible until every file has been read: then the good rows' Parquet files are
//! renamed into place, or — with `strict` and any bad row, or on any file-level error — all
//! partial files are removed and nothing is stored.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tally_core::schema::Table;
use arrow::array::RecordBatch;
use tally_core::{Part, PartitionedWriter, Splitter, Store, WrittenFile};

use crate::convert::{Context, convert};
use crate::raw::{self, Format, RawBatch, ReadError};

/// At most this many rejected rows are kept with their details; all are counted.
pub const MAX_REPORTED_REJECTIONS: usize = 1000;

/// What to import.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    /// The table the rows go to.
    pub table: Table,
    /// The input files.
    pub files: Vec<PathBuf>,
    /// Their format; `None` infers it from each file's extension.
    pub format: Option<Format>,
    /// Store nothing if any row is bad.
    pub strict: bool,
    /// Validation context (advertiser, keys, policy).
    pub context: Context,
}

/// One rejected row of an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The file.
    pub file: PathBuf,
    /// `line N` or `row N`.
    pub location: String,
    /// The column at fault.
    pub column: String,
    /// Why.
    pub message: String,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: column `{}`: {}", self.file.display(), self.location, self.column, self.message)
    }
}

/// The outcome of an import.
#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    /// Rows read from the files.
    pub rows_read: u64,
    /// Rows stored (0 when nothing was committed).
    pub rows_stored: u64,
    /// Bad rows, all counted.
    pub rejected_total: u64,
    /// The first [`MAX_REPORTED_REJECTIONS`] bad rows with their reasons.
    pub rejected: Vec<Rejection>,
    /// Identifier values that arrived as plaintext and were hashed.
    pub hashed_on_arrival: u64,
    /// Whether the good rows were stored (false under `strict` with bad rows).
    pub committed: bool,
    /// The Parquet files written.
    pub files_written: Vec<WrittenFile>,
}

/// Import failures that stop the whole import (nothing is stored).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A file as a whole is unusable: unreadable, unknown format, wrong columns.
    #[error("{}: {message}", file.display())]
    File {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] tally_core::StoreError),
}

/// Progress of an import: the current file and the fraction of all input bytes done.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// The file being read.
    pub file: &'a Path,
    /// Fraction of the input done, 0..=1.
    pub fraction: f64,
    /// Rows read so far.
    pub rows: u64,
}

/// Runs an import into `store`. See the module docs for what is stored when.
pub async fn import(store: &Store, request: &ImportRequest, mut progress: impl FnMut(Progress<'_>)) -> Result<ImportReport, ImportError> {
    let mut sources = Vec::with_capacity(request.files.len());
    let mut total_bytes = 0u64;
    for file in &request.files {
        let format = request.format.or_else(|| Format::from_path(file)).ok_or_else(|| ImportError::File {
            file: file.clone(),
            message: "unknown format: name the file .csv, .jsonl or .parquet, or pass --format".into(),
        })?;
        let size = std::fs::metadata(file).map_err(|e| ImportError::File { file: file.clone(), message: format!("cannot open: {e}") })?.len();
        total_bytes += size;
        sources.push((file.clone(), format, size));
    }

    // Parquet encoding is the heaviest stage: partitions are spread over one writer thread per
    // core (each partition always to the same one), fed by the converting thread.
    let shards = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, MAX_WRITER_THREADS);
    let stamp = store.stamp(request.context.pseudonymizer.key_id());
    let mut to_writers = Vec::with_capacity(shards);
    let mut write_threads = Vec::with_capacity(shards);
    let mut splitter = None;
    for i in 0..shards {
        let writer = store.writer(request.table, &stamp).with_memory_budget(WRITER_MEMORY_BUDGET / shards);
        splitter.get_or_insert_with(|| writer.splitter());
        let (to_writer, parts_in) = mpsc::sync_channel::<Vec<Part>>(2);
        let thread = std::thread::Builder::new()
            .name(format!("tally-import-write-{i}"))
            .spawn(move || write_all(writer, parts_in))
            .map_err(|e| ImportError::File { file: PathBuf::new(), message: format!("cannot start a writer thread: {e}") })?;
        to_writers.push(to_writer);
        write_threads.push(thread);
    }
    let route = Route { splitter: splitter.expect("at least one writer"), to_writers };

    let mut report = ImportReport::default();
    let read = read_convert(request, &sources, total_bytes, &route, &mut report, &mut progress);
    drop(route);
    let mut writers = Vec::with_capacity(shards);
    let mut t_write = Duration::ZERO;
    let mut write_error = None;
    for thread in write_threads {
        let (writer, written) = thread.join().expect("the writer threads do not panic");
        match written {
            Ok(t) => t_write += t,
            Err(e) => write_error = write_error.or(Some(e)),
        }
        writers.push(writer);
    }
    // Dropping the writers on any error removes their partial files.
    if let Some(e) = write_error {
        return Err(e.into());
    }
    let t_convert = read?;
    if request.strict && report.rejected_total > 0 {
        writers.into_iter().for_each(PartitionedWriter::abort);
        return Ok(report);
    }
    report.rows_stored = writers.iter().map(|w| w.rows() as u64).sum();
    let t = Instant::now();
    for writer in writers {
        report.files_written.extend(writer.finish().await?);
    }
    tracing::debug!(
        convert_ms = t_convert.as_millis() as u64,
        write_ms = t_write.as_millis() as u64,
        writer_threads = shards,
        finish_ms = t.elapsed().as_millis() as u64,
        rows = report.rows_read,
        "import phases (convert and write overlap)"
    );
    report.committed = true;
    Ok(report)
}

/// Writer threads at most (one per core is what pays).
const MAX_WRITER_THREADS: usize = 4;
/// Memory the writers' open files may hold in all (parquet's own estimate), before row groups
/// end early. Input that interleaves many partitions (a 50M-touch export sorted by person
/// spans 61 days) splits it between them: 64 MB gave 7k-row row groups there, whose
/// per-group costs (reader set-up, a zstd context per page, statistics) every later scan paid;
/// 256 MB gives ≈ 30k-row groups.
const WRITER_MEMORY_BUDGET: usize = 256 * 1024 * 1024;

/// Sends each converted batch's partitions to the writer thread that owns them.
struct Route {
    splitter: Splitter,
    to_writers: Vec<mpsc::SyncSender<Vec<Part>>>,
}

impl Route {
    /// False when a writer has stopped (on an error, which the caller reports).
    fn send(&self, batch: &RecordBatch) -> Result<bool, tally_core::StoreError> {
        let n = self.to_writers.len();
        let mut shards: Vec<Vec<Part>> = vec![Vec::new(); n];
        for part in self.splitter.split(batch)? {
            shards[part.key.shard(n)].push(part);
        }
        for (parts, to) in shards.into_iter().zip(&self.to_writers) {
            if !parts.is_empty() && to.send(parts).is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Reads and validates every file, sending good rows to the writer; returns the time spent
/// converting. Under `strict`, rows stop flowing at the first bad one (all are still checked).
fn read_convert(
    request: &ImportRequest,
    sources: &[(PathBuf, Format, u64)],
    total_bytes: u64,
    route: &Route,
    report: &mut ImportReport,
    progress: &mut impl FnMut(Progress<'_>),
) -> Result<Duration, ImportError> {
    let mut t_convert = Duration::ZERO;
    let mut done_bytes = 0u64;
    for (file, format, size) in sources {
        let batches = read_ahead(file, *format).map_err(|e| ImportError::File { file: file.clone(), message: e.0 })?;
        for raw in batches {
            let RawBatch { batch, locations, unreadable, progress: frac } = raw.map_err(|e| ImportError::File { file: file.clone(), message: e.0 })?;
            let t = Instant::now();
            let converted = convert(request.table, &batch, &unreadable, &request.context)
                .map_err(|e| ImportError::File { file: file.clone(), message: e.to_string() })?;
            t_convert += t.elapsed();
            report.rows_read += batch.num_rows() as u64;
            report.hashed_on_arrival += converted.hashed_on_arrival as u64;
            report.rejected_total += converted.rejected.len() as u64;
            for e in converted.rejected {
                if report.rejected.len() < MAX_REPORTED_REJECTIONS {
                    report.rejected.push(Rejection { file: file.clone(), location: locations.describe(e.row), column: e.column, message: e.message });
                }
            }
            if !(request.strict && report.rejected_total > 0) {
                let sent = route.send(&converted.batch).map_err(|e| ImportError::File { file: file.clone(), message: e.to_string() })?;
                if !sent {
                    // A writer stopped on an error, which the caller reports.
                    return Ok(t_convert);
                }
            }
            let fraction = if total_bytes == 0 { 1.0 } else { (done_bytes as f64 + frac * *size as f64) / total_bytes as f64 };
            progress(Progress { file, fraction, rows: report.rows_read });
        }
        done_bytes += size;
    }
    Ok(t_convert)
}

/// A writer thread: writes every set of parts it receives; stops at the first error.
fn write_all(mut writer: PartitionedWriter, parts: mpsc::Receiver<Vec<Part>>) -> (PartitionedWriter, Result<Duration, tally_core::StoreError>) {
    let mut spent = Duration::ZERO;
    for batch in parts {
        let t = Instant::now();
        if let Err(e) = writer.write_parts(batch) {
            return (writer, Err(e));
        }
        spent += t.elapsed();
    }
    (writer, Ok(spent))
}

/// Reads `file` on its own thread, a couple of batches ahead of the consumer.
fn read_ahead(file: &Path, format: Format) -> Result<impl Iterator<Item = Result<RawBatch, ReadError>>, ReadError> {
    let batches = raw::open(file, format)?;
    let (tx, rx) = mpsc::sync_channel(2);
    std::thread::Builder::new()
        .name("tally-import-read".into())
        .spawn(move || {
            for b in batches {
                if tx.send(b).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| ReadError(format!("cannot start a reader thread: {e}")))?;
    Ok(rx.into_iter())
}
