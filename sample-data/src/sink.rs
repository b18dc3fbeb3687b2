//! Streaming file writers: one [`Sink`] per output file, taking record batches as they
//! are produced and holding at most one Parquet row group in memory. A file is written
//! under a `.tmp` name, synced, and renamed into place only when complete, so a crash
//! never leaves a truncated file at a final path.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use crate::{Error, Format};

/// RFC 3339 with microseconds; every timestamp column is UTC.
const TIMESTAMP_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";
const DATE_FORMAT: &str = "%Y-%m-%d";
/// Rows per Parquet row group: bounds the writer's buffered memory.
const ROW_GROUP_ROWS: usize = 256 * 1024;

enum Inner {
    Csv(Box<arrow::csv::Writer<BufWriter<File>>>),
    Jsonl(arrow::json::LineDelimitedWriter<BufWriter<File>>),
    Parquet(Box<ArrowWriter<BufWriter<File>>>),
}

/// One output file being written.
pub(crate) struct Sink {
    inner: Inner,
    tmp: PathBuf,
    path: PathBuf,
    rows: u64,
}

/// Parquet writer properties, in one place: zstd, bounded row groups, and key-value
/// metadata naming the generator and seed.
fn parquet_properties(seed: u64) -> Result<WriterProperties, Error> {
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_created_by("tally-sample".to_owned())
        .set_key_value_metadata(Some(vec![
            KeyValue::new("tally.generator".to_owned(), "tally-sample".to_owned()),
            KeyValue::new("tally.seed".to_owned(), seed.to_string()),
        ]))
        .build())
}

impl Sink {
    /// Opens `path` (through a `.tmp` sibling) for batches of `schema`.
    pub(crate) fn create(
        path: &Path,
        format: Format,
        schema: SchemaRef,
        seed: u64,
    ) -> Result<Self, Error> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(".tmp");
        let tmp = path.with_file_name(tmp_name);
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let out = BufWriter::with_capacity(1 << 20, file);
        let inner = match format {
            Format::Csv => {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .with_timestamp_tz_format(TIMESTAMP_FORMAT.to_owned())
                    .with_date_format(DATE_FORMAT.to_owned())
                    .build(out);
                // Write the header even if no row follows.
                w.write(&RecordBatch::new_empty(schema))?;
                Inner::Csv(Box::new(w))
            }
            Format::Jsonl => Inner::Jsonl(
                arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .with_timestamp_tz_format(TIMESTAMP_FORMAT.to_owned())
                    .with_date_format(DATE_FORMAT.to_owned())
                    .build(out),
            ),
            Format::Parquet => Inner::Parquet(Box::new(ArrowWriter::try_new(
                out,
                schema,
                Some(parquet_properties(seed)?),
            )?)),
        };
        Ok(Sink {
            inner,
            tmp,
            path: path.to_owned(),
            rows: 0,
        })
    }

    /// Appends one batch.
    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<(), Error> {
        self.rows += batch.num_rows() as u64;
        match &mut self.inner {
            Inner::Csv(w) => w.write(batch)?,
            Inner::Jsonl(w) => w.write(batch)?,
            Inner::Parquet(w) => w.write(batch)?,
        }
        Ok(())
    }

    /// Drops the unfinished file (best effort: it is a `.tmp` file either way).
    pub(crate) fn abandon(self) {
        drop(self.inner);
        let _ = std::fs::remove_file(&self.tmp);
    }

    /// Finishes the file, syncs it and renames it to its final path; returns its rows.
    pub(crate) fn finish(self) -> Result<u64, Error> {
        let out = match self.inner {
            Inner::Csv(w) => (*w).into_inner(),
            Inner::Jsonl(mut w) => {
                w.finish()?;
                w.into_inner()
            }
            Inner::Parquet(w) => w.into_inner()?,
        };
        let file = out
            .into_inner()
            .map_err(|e| Error::io(&self.tmp, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&self.tmp, e))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        Ok(self.rows)
    }
}

/// Writes `bytes` to `path` the same way: `.tmp`, sync, rename.
pub(crate) fn write_file_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    file.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
    file.sync_all().map_err(|e| Error::io(&tmp, e))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}
