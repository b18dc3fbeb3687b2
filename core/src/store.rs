//! The Parquet store: hive-partitioned tables under a data root.
//!
//! [`Store::open`] refuses a root the policy does not allow. Reads go through an
//! [`ObjectStore`] (DataFusion and our readers share it). Writes go through a
//! [`PartitionedWriter`], which splits batches by `(advertiser_id, date)`, streams each
//! partition into its own Parquet file and makes a file appear at its final path only when it
//! is complete: on a local root by write → fsync → rename → fsync(dir); on an object store by
//! a single PUT of the finished file. Writer properties (zstd, row groups, key-value
//! metadata) are built in one place, [`writer_properties`].

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Date32Type, SchemaRef, TimestampMicrosecondType};
use chrono::NaiveDate;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::keystore::sync_dir;
use crate::paths::{AdvertiserId, DataFilePath, DataRoot, PartitionPath};
use crate::policy::{Policy, PolicyError};
use crate::schema::{ADVERTISER_ID, DerivedTable, ID_WIDTH, SCHEMA_VERSION, Table, id_type};

/// Microseconds in a day.
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The policy refuses this storage.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A filesystem operation failed.
    #[error("{what} `{}`: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The object store failed.
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// Encoding Parquet failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Arrow failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A batch does not fit the table.
    #[error("{0}")]
    Schema(String),
    /// The data root is of a kind this build cannot open.
    #[error("{0}")]
    Unsupported(String),
}

/// The key-value metadata stamped on every file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStamp {
    /// `tally.jurisdiction`.
    pub jurisdiction: String,
    /// `tally.key_id`: the pseudonymization key the identifiers were keyed with.
    pub key_id: String,
    /// `tally.policy_sha256`.
    pub policy_sha256: String,
}

/// Columns whose values are (nearly) unique per row: a dictionary would only be built to be
/// abandoned, so they are written plain.
const UNIQUE_COLUMNS: &[&str] = &["touch_id", "event_id", "order_id", "click_id", "em", "ph", "external_id"];

/// Parquet writer properties for every Tally file of `table`: zstd (but for the pseudonymized
/// identifier columns, which are random bytes), 512k-row row groups, row-group statistics on
/// time and numeric columns and page statistics on the partition time column (what query pruning
/// uses; text and identifier min/max prune nothing), dictionaries only where values repeat, and
/// the `tally.*` key-value metadata.
pub fn writer_properties(table: Table, stamp: &FileStamp) -> WriterProperties {
    layout_properties(Layout::Base(table), stamp)
}

fn layout_properties(table: Layout, stamp: &FileStamp) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_column_statistics_enabled(ColumnPath::from(table.partition_time_column()), EnabledStatistics::Page);
    for field in table.schema().fields().iter() {
        let column = || ColumnPath::from(field.name().as_str());
        let is_id = field.data_type() == &id_type();
        if table.clustered_columns().contains(&field.name().as_str()) {
            // The writer groups rows by these: page min/max let a filter on them skip the pages
            // of the other values (the Parquet page index).
            b = b.set_column_statistics_enabled(column(), EnabledStatistics::Page);
        } else if is_id || field.data_type() == &arrow::datatypes::DataType::Utf8 {
            // Min/max of text and identifier columns cost a comparison per value and prune
            // nothing: every row group holds most of their values. Times and numbers keep theirs.
            b = b.set_column_statistics_enabled(column(), EnabledStatistics::None);
        }
        // Pseudonyms are uniformly random bytes: zstd cannot shrink them, only spend time trying.
        if is_id {
            b = b.set_column_compression(column(), Compression::UNCOMPRESSED);
        }
        if UNIQUE_COLUMNS.contains(&field.name().as_str()) {
            b = b.set_column_dictionary_enabled(column(), false);
        }
    }
    b.set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("zstd level 1 is valid")))
        .set_max_row_group_row_count(Some(512 * 1024))
        .set_created_by(format!("tally {}", env!("CARGO_PKG_VERSION")))
        .set_key_value_metadata(Some(vec![
            KeyValue::new("tally.jurisdiction".into(), stamp.jurisdiction.clone()),
            KeyValue::new("tally.schema_version".into(), SCHEMA_VERSION.to_owned()),
            KeyValue::new("tally.key_id".into(), stamp.key_id.clone()),
            KeyValue::new("tally.policy_sha256".into(), stamp.policy_sha256.clone()),
        ]))
        .build()
}

/// Calls `visit` with every entry below `dir` that is not a directory, depth first, until it
/// returns `Break`; directories reached through symlinks are walked too, as the store's
/// listings do. An absent `dir` holds nothing. Returns whether `visit` broke off.
pub fn visit_files_below(dir: &Path, visit: &mut dyn FnMut(&fs::DirEntry) -> std::io::Result<ControlFlow<()>>) -> std::io::Result<ControlFlow<()>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ControlFlow::Continue(())),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let kind = entry.file_type()?;
        let is_dir = kind.is_dir() || (kind.is_symlink() && fs::metadata(entry.path()).is_ok_and(|m| m.is_dir()));
        let flow = if is_dir { visit_files_below(&entry.path(), visit)? } else { visit(&entry)? };
        if flow.is_break() {
            return Ok(flow);
        }
    }
    Ok(ControlFlow::Continue(()))
}

/// What a [`PartitionedWriter`] writes: a base table or a derived one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    Base(Table),
    Derived(DerivedTable),
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::Base(t) => t.name(),
            Layout::Derived(t) => t.name(),
        }
    }
    fn schema(self) -> SchemaRef {
        match self {
            Layout::Base(t) => t.schema(),
            Layout::Derived(t) => t.schema(),
        }
    }
    fn file_schema(self) -> SchemaRef {
        match self {
            Layout::Base(t) => t.file_schema(),
            Layout::Derived(t) => t.file_schema(),
        }
    }
    fn partition_time_column(self) -> &'static str {
        match self {
            Layout::Base(t) => t.partition_time_column(),
            Layout::Derived(t) => t.partition_time_column(),
        }
    }
    /// Text columns whose values the writer of this table keeps together in each file (so they
    /// get page statistics): `attributed_conversions` is written model by model
    /// (`tally-attribution`), and nearly every report filters on `model` and `method`.
    fn clustered_columns(self) -> &'static [&'static str] {
        match self {
            Layout::Derived(DerivedTable::AttributedConversions) => &["model", "method"],
            _ => &[],
        }
    }
    fn partition(self, advertiser: AdvertiserId, date: NaiveDate) -> PartitionPath {
        match self {
            Layout::Base(t) => PartitionPath::new(t, advertiser, date),
            Layout::Derived(t) => PartitionPath::derived(t, advertiser, date),
        }
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A data root opened under a policy.
#[derive(Debug, Clone)]
pub struct Store {
    root: DataRoot,
    objects: Arc<dyn ObjectStore>,
    policy: Arc<Policy>,
}

impl Store {
    /// Opens `root` after checking it against `policy`; a local root is created if absent.
    pub fn open(root: DataRoot, policy: Policy) -> Result<Store, StoreError> {
        policy.check_storage(&root)?;
        let objects: Arc<dyn ObjectStore> = match &root {
            DataRoot::Local(dir) => {
                fs::create_dir_all(dir).map_err(|source| StoreError::Io { what: "cannot create data directory", path: dir.clone(), source })?;
                Arc::new(LocalFileSystem::new_with_prefix(dir)?)
            }
            DataRoot::Url { scheme, .. } => {
                return Err(StoreError::Unsupported(format!(
                    "`{scheme}://` data roots are allowed by the policy but this build has no `{scheme}` backend; use a local directory"
                )));
            }
        };
        Ok(Store { root, objects, policy: Arc::new(policy) })
    }

    /// The data root.
    pub fn root(&self) -> &DataRoot {
        &self.root
    }

    /// The policy the store was opened under.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The object store serving reads, rooted at the data root.
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.objects.clone()
    }

    /// A URL DataFusion can register the object store under and list `table` from.
    pub fn table_url(&self, table: &str) -> String {
        match &self.root {
            DataRoot::Local(dir) => format!("file://{}/{table}/", dir.display()),
            DataRoot::Url { scheme, bucket, prefix } if prefix.is_empty() => format!("{scheme}://{bucket}/{table}/"),
            DataRoot::Url { scheme, bucket, prefix } => format!("{scheme}://{bucket}/{prefix}/{table}/"),
        }
    }

    /// The data files of `table` (final `.parquet` files only), sorted by path.
    pub async fn list_files(&self, table: &str) -> Result<Vec<ObjectPath>, StoreError> {
        use futures::TryStreamExt;
        let prefix = crate::paths::table_dir(table);
        let mut out: Vec<ObjectPath> = self
            .objects
            .list(Some(&prefix))
            .try_filter_map(|m| async move { Ok(crate::paths::is_data_file(m.location.as_ref()).then_some(m.location)) })
            .try_collect()
            .await?;
        out.sort();
        Ok(out)
    }

    /// Whether `table` holds any data file: [`Store::list_files`] non-empty, without listing and
    /// stat-ing every file of a local store (a session checks each derived table this way).
    pub async fn has_files(&self, table: &str) -> Result<bool, StoreError> {
        match &self.root {
            DataRoot::Local(dir) => {
                let dir = dir.join(table);
                let mut is_data = |e: &fs::DirEntry| {
                    Ok(if crate::paths::is_data_file(&e.file_name().to_string_lossy()) { ControlFlow::Break(()) } else { ControlFlow::Continue(()) })
                };
                let found = visit_files_below(&dir, &mut is_data).map_err(|source| StoreError::Io { what: "cannot list", path: dir, source })?;
                Ok(found.is_break())
            }
            DataRoot::Url { .. } => Ok(!self.list_files(table).await?.is_empty()),
        }
    }

    /// A writer for `table` whose files carry `stamp`.
    pub fn writer(&self, table: Table, stamp: &FileStamp) -> PartitionedWriter {
        PartitionedWriter::new(self.clone(), Layout::Base(table), writer_properties(table, stamp))
    }

    /// A writer for derived `table` whose files carry `stamp`.
    pub fn derived_writer(&self, table: DerivedTable, stamp: &FileStamp) -> PartitionedWriter {
        PartitionedWriter::new(self.clone(), Layout::Derived(table), layout_properties(Layout::Derived(table), stamp))
    }

    /// The data files of `table` in partitions dated `from..=to` (every advertiser), sorted.
    pub async fn list_window_files(&self, table: &'static str, from: NaiveDate, to: NaiveDate) -> Result<Vec<ObjectPath>, StoreError> {
        let files = self.list_files(table).await?;
        Ok(files.into_iter().filter(|f| PartitionPath::of_file(table, f).is_some_and(|p| p.date() >= from && p.date() <= to)).collect())
    }

    /// Replaces a window's output: deletes `superseded` (listed by [`Store::list_window_files`]
    /// *before* the new files were written and made visible), sparing any file in `keep`.
    ///
    /// The sequence write-new → finish → delete-old means readers see either the old files or
    /// old and new together, never neither. A crash between the two leaves both visible (the
    /// window's rows twice); re-running the same window repairs it, since the re-run lists and
    /// deletes both. Returns how many files were deleted.
    pub async fn replace_files(&self, superseded: &[ObjectPath], keep: &[WrittenFile]) -> Result<usize, StoreError> {
        let keep: std::collections::BTreeSet<&ObjectPath> = keep.iter().map(|w| &w.path).collect();
        let mut deleted = 0;
        let mut dirs = std::collections::BTreeSet::new();
        for path in superseded.iter().filter(|p| !keep.contains(p)) {
            match &self.root {
                DataRoot::Local(root) => {
                    let full = root.join(path.as_ref());
                    match fs::remove_file(&full) {
                        Ok(()) => deleted += 1,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(source) => return Err(StoreError::Io { what: "cannot delete", path: full, source }),
                    }
                    if let Some(dir) = full.parent() {
                        dirs.insert(dir.to_path_buf());
                    }
                }
                DataRoot::Url { .. } => {
                    self.objects.delete(path).await?;
                    deleted += 1;
                }
            }
        }
        for dir in dirs {
            // A partition left empty is removed, so a window that lost its rows leaves no trace.
            if fs::read_dir(&dir).map(|mut d| d.next().is_none()).unwrap_or(false) {
                let _ = fs::remove_dir(&dir);
            } else {
                sync_dir(&dir).map_err(|source| StoreError::Io { what: "cannot fsync directory", path: dir.clone(), source })?;
            }
        }
        Ok(deleted)
    }

    /// A stamp for files written now with pseudonymization key `key_id`.
    pub fn stamp(&self, key_id: &str) -> FileStamp {
        FileStamp { jurisdiction: self.policy.jurisdiction.clone(), key_id: key_id.to_owned(), policy_sha256: self.policy.sha256() }
    }
}

/// Where a file's bytes go while it is being written.
enum Sink {
    /// A hidden temp file beside the final path (local roots).
    Local { file: PacedFile, temp: PathBuf, dir: PathBuf, final_path: PathBuf },
    /// Memory, PUT whole when complete (object stores).
    Memory(Vec<u8>),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Local { file, .. } => file.write(buf),
            Sink::Memory(v) => v.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Local { file, .. } => file.flush(),
            Sink::Memory(_) => Ok(()),
        }
    }
}

/// A local file that, when paced, writes its data back to disk every `chunk` bytes and
/// waits for it, instead of leaving it all dirty in the page cache for the final fsync.
///
/// Why: a final fsync of tens of megabytes queues them all on the device at once, and any
/// other fsync on the machine — the write-ahead log's, which a client is waiting on — waits
/// behind the whole queue. Measured here (a 400 KB `fdatasync` every 5 ms beside a writer of
/// 40 MB files): p99 28–30 ms unpaced, 8–11 ms with 1 MiB pacing, 7–9 ms with nothing beside
/// it. The writer itself loses little: the bytes had to reach the disk before its fsync anyway.
struct PacedFile {
    file: File,
    /// Write back every this many bytes (`None`: leave it to the final fsync).
    chunk: Option<u64>,
    /// Bytes written since the last write-back.
    dirty: u64,
}

impl Write for PacedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let Some(chunk) = self.chunk else { return self.file.write(buf) };
        let room = usize::try_from(chunk - self.dirty).unwrap_or(usize::MAX);
        let n = self.file.write(&buf[..buf.len().min(room)])?;
        self.dirty += n as u64;
        if self.dirty >= chunk {
            self.file.sync_data()?;
            self.dirty = 0;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

struct OpenFile {
    path: DataFilePath,
    writer: ArrowWriter<Sink>,
    rows: usize,
}

/// A file a [`PartitionedWriter`] made visible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFile {
    /// Its path relative to the data root.
    pub path: ObjectPath,
    /// The partition's advertiser.
    pub advertiser: AdvertiserId,
    /// The partition's date.
    pub date: NaiveDate,
    /// Rows in it.
    pub rows: usize,
}

/// Splits batches of one table by `(advertiser_id, date)` and streams each partition into
/// its own Parquet file. Nothing is visible until [`PartitionedWriter::finish`]; dropping the
/// writer (or [`PartitionedWriter::abort`]) removes the partial files.
pub struct PartitionedWriter {
    store: Store,
    table: Layout,
    props: WriterProperties,
    file_schema: SchemaRef,
    /// Splits table-schema batches into this table's partitions (and file schema).
    splitter: Splitter,
    open: BTreeMap<(AdvertiserId, i32), OpenFile>,
    done: Vec<(DataFilePath, Sink, WrittenFile)>,
    max_rows_per_file: usize,
    memory_budget: usize,
    /// Deterministic file names `<stem>-<n>` (n counts files per partition), if set.
    name_stem: Option<String>,
    files_per_partition: BTreeMap<(AdvertiserId, i32), u32>,
    /// Write local files back every this many bytes (see [`PacedFile`]).
    writeback_chunk: Option<u64>,
}

impl PartitionedWriter {
    fn new(store: Store, table: Layout, props: WriterProperties) -> PartitionedWriter {
        let schema = table.schema();
        let file_schema = table.file_schema();
        let projection = file_schema.fields().iter().map(|f| schema.index_of(f.name()).expect("file schema ⊂ table schema")).collect();
        let splitter = Splitter { time_column: table.partition_time_column(), schema, projection };
        PartitionedWriter {
            store,
            table,
            props,
            file_schema,
            splitter,
            open: BTreeMap::new(),
            done: Vec::new(),
            max_rows_per_file: 8 * 1024 * 1024,
            memory_budget: 64 * 1024 * 1024,
            name_stem: None,
            files_per_partition: BTreeMap::new(),
            writeback_chunk: None,
        }
    }

    /// Names files `<stem>-<n>.parquet` instead of uniquely: writing the same rows again with
    /// the same stem replaces the same files (how WAL replay after a crash stays exactly-once).
    pub fn with_name_stem(mut self, stem: impl Into<String>) -> PartitionedWriter {
        self.name_stem = Some(stem.into());
        self
    }

    /// Caps rows per file (a partition's rows beyond it go to further files).
    pub fn with_max_rows_per_file(mut self, rows: usize) -> PartitionedWriter {
        self.max_rows_per_file = rows.max(1);
        self
    }

    /// Caps the memory the open files may hold before row groups are ended early (64 MB by
    /// default); writers that run side by side share a budget by dividing it.
    pub fn with_memory_budget(mut self, bytes: usize) -> PartitionedWriter {
        self.memory_budget = bytes.max(1024 * 1024);
        self
    }

    /// Writes local files back to disk every `bytes` as they are written, rather than all
    /// at the final fsync, so that other processes' and threads' fsyncs never queue behind a
    /// whole file (for writers running beside latency-bound ones, like the WAL flusher).
    pub fn with_paced_writeback(mut self, bytes: u64) -> PartitionedWriter {
        self.writeback_chunk = Some(bytes.max(64 * 1024));
        self
    }

    /// The splitter for this writer's table, to partition batches on another thread
    /// (see [`PartitionedWriter::write_parts`]).
    pub fn splitter(&self) -> Splitter {
        self.splitter.clone()
    }

    /// Writes a batch in the table schema (with `advertiser_id` and the partition time column).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), StoreError> {
        let parts = self.splitter.split(batch)?;
        self.write_parts(parts)
    }

    /// Writes batches already split by [`Splitter::split`] (of a writer of the same table).
    pub fn write_parts(&mut self, parts: impl IntoIterator<Item = Part>) -> Result<(), StoreError> {
        for Part { key: PartitionKey { advertiser, day }, rows } in parts {
            if rows.schema().fields() != self.file_schema.fields() {
                return Err(StoreError::Schema(format!("part does not have the `{}` file schema", self.table)));
            }
            self.write_partition(advertiser, day, &rows)?;
        }
        self.keep_memory_in_budget()
    }

    fn write_partition(&mut self, advertiser: AdvertiserId, day: i32, batch: &RecordBatch) -> Result<(), StoreError> {
        let key = (advertiser, day);
        let mut offset = 0;
        while offset < batch.num_rows() {
            if !self.open.contains_key(&key) {
                let n = self.files_per_partition.entry(key.clone()).or_insert(0);
                *n += 1;
                let n = *n;
                let file = self.create(&key.0, day, n)?;
                self.open.insert(key.clone(), file);
            }
            let file = self.open.get_mut(&key).expect("inserted above");
            let take = (self.max_rows_per_file - file.rows).min(batch.num_rows() - offset);
            file.writer.write(&batch.slice(offset, take))?;
            file.rows += take;
            offset += take;
            if file.rows >= self.max_rows_per_file {
                let file = self.open.remove(&key).expect("present");
                self.close(file, &key.0, day)?;
            }
        }
        Ok(())
    }

    fn create(&self, advertiser: &AdvertiserId, day: i32, nth: u32) -> Result<OpenFile, StoreError> {
        let partition = self.table.partition(advertiser.clone(), day_to_date(day));
        let path = match &self.name_stem {
            None => partition.new_file(),
            Some(stem) => {
                partition.named_file(&format!("{stem}-{nth:04}")).ok_or_else(|| StoreError::Schema(format!("file name stem `{stem}` must be [A-Za-z0-9_-]")))?
            }
        };
        let sink = match self.store.root() {
            DataRoot::Local(root) => {
                let dir = root.join(path.dir().as_ref());
                fs::create_dir_all(&dir).map_err(|source| StoreError::Io { what: "cannot create partition", path: dir.clone(), source })?;
                let temp = dir.join(path.temp_name());
                let file = File::create(&temp).map_err(|source| StoreError::Io { what: "cannot create", path: temp.clone(), source })?;
                let final_path = dir.join(path.name());
                Sink::Local { file: PacedFile { file, chunk: self.writeback_chunk, dirty: 0 }, temp, dir, final_path }
            }
            DataRoot::Url { .. } => Sink::Memory(Vec::new()),
        };
        let writer = ArrowWriter::try_new(sink, self.file_schema.clone(), Some(self.props.clone()))?;
        Ok(OpenFile { path, writer, rows: 0 })
    }

    /// Finishes a file's bytes (footer, fsync) without making it visible yet.
    fn close(&mut self, file: OpenFile, advertiser: &AdvertiserId, day: i32) -> Result<(), StoreError> {
        let sink = file.writer.into_inner()?;
        if let Sink::Local { file: f, temp, .. } = &sink {
            f.file.sync_all().map_err(|source| StoreError::Io { what: "cannot fsync", path: temp.clone(), source })?;
        }
        let written = WrittenFile { path: file.path.path(), advertiser: advertiser.clone(), date: day_to_date(day), rows: file.rows };
        self.done.push((file.path, sink, written));
        Ok(())
    }

    /// Ends row groups early when the memory the open files hold (buffered pages, dictionaries,
    /// encoders) exceeds the budget, largest first, so many open partitions stay bounded.
    fn keep_memory_in_budget(&mut self) -> Result<(), StoreError> {
        let mut total: usize = self.open.values().map(|f| f.writer.memory_size()).sum();
        while total > self.memory_budget {
            let Some(biggest) = self.open.values_mut().max_by_key(|f| f.writer.memory_size()) else { break };
            let size = biggest.writer.memory_size();
            if size == 0 {
                break;
            }
            biggest.writer.flush()?;
            total -= size;
        }
        Ok(())
    }

    /// Completes every file and makes them visible at their final paths; returns them.
    #[tracing::instrument(skip(self), fields(table = %self.table))]
    pub async fn finish(mut self) -> Result<Vec<WrittenFile>, StoreError> {
        let open = std::mem::take(&mut self.open);
        for ((advertiser, day), file) in open {
            self.close(file, &advertiser, day)?;
        }
        let done = std::mem::take(&mut self.done);
        let mut out = Vec::with_capacity(done.len());
        let mut dirs = std::collections::BTreeSet::new();
        let mut pending = done.into_iter();
        while let Some((path, sink, written)) = pending.next() {
            let result = match sink {
                Sink::Local { temp, dir, final_path, .. } => {
                    let renamed =
                        fs::rename(&temp, &final_path).map_err(|source| StoreError::Io { what: "cannot rename into place", path: final_path.clone(), source });
                    if renamed.is_err() {
                        let _ = fs::remove_file(&temp);
                    }
                    dirs.insert(dir);
                    renamed
                }
                Sink::Memory(bytes) => self.store.objects.put(&path.path(), bytes.into()).await.map(|_| ()).map_err(StoreError::from),
            };
            if let Err(e) = result {
                // Leave no partial files behind for the ones not yet made visible.
                for (_, sink, _) in pending {
                    discard(sink);
                }
                return Err(e);
            }
            out.push(written);
        }
        for dir in dirs {
            sync_dir(&dir).map_err(|source| StoreError::Io { what: "cannot fsync directory", path: dir.clone(), source })?;
        }
        Ok(out)
    }

    /// Drops everything written so far; nothing becomes visible.
    pub fn abort(mut self) {
        self.discard_all();
    }

    fn discard_all(&mut self) {
        for (_, file) in std::mem::take(&mut self.open) {
            if let Ok(sink) = file.writer.into_inner() {
                discard(sink);
            }
        }
        for (_, sink, _) in std::mem::take(&mut self.done) {
            discard(sink);
        }
    }

    /// Rows written so far, in all files.
    pub fn rows(&self) -> usize {
        self.open.values().map(|f| f.rows).sum::<usize>() + self.done.iter().map(|d| d.2.rows).sum::<usize>()
    }
}

impl Drop for PartitionedWriter {
    fn drop(&mut self) {
        self.discard_all();
    }
}

fn discard(sink: Sink) {
    if let Sink::Local { temp, .. } = sink {
        let _ = fs::remove_file(temp);
    }
}

/// One hive partition of a table: an advertiser and a UTC day.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionKey {
    /// The advertiser.
    pub advertiser: AdvertiserId,
    /// Days since 1970-01-01 (UTC).
    pub day: i32,
}

impl PartitionKey {
    /// A stable choice among `n` writers (consecutive days alternate).
    pub fn shard(&self, n: usize) -> usize {
        let h = self.advertiser.as_str().bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        (h.wrapping_add(self.day as u64) % n.max(1) as u64) as usize
    }
}

/// One partition's rows of a batch, in the file schema (partition columns dropped).
#[derive(Debug, Clone)]
pub struct Part {
    /// The partition.
    pub key: PartitionKey,
    /// Its rows.
    pub rows: RecordBatch,
}

/// Splits table-schema batches into per-partition parts: one gather per batch, then
/// zero-copy slices. Cheap to clone; runs on any thread.
#[derive(Debug, Clone)]
pub struct Splitter {
    time_column: &'static str,
    schema: SchemaRef,
    projection: Vec<usize>,
}

impl Splitter {
    /// The batch's rows grouped by partition, in partition order.
    pub fn split(&self, batch: &RecordBatch) -> Result<Vec<Part>, StoreError> {
        if batch.num_rows() == 0 {
            return Ok(Vec::new());
        }
        if batch.schema().fields() != self.schema.fields() {
            return Err(StoreError::Schema("batch does not have the table schema".into()));
        }
        let groups = partition_rows(batch, self.time_column)?;
        let projected = batch.project(&self.projection)?;
        if groups.len() == 1 {
            let (key, _) = groups.into_iter().next().expect("one group");
            return Ok(vec![Part { key, rows: projected }]);
        }
        // One gather puts the rows in partition order; each partition is then a zero-copy slice.
        let order: arrow::array::UInt32Array = groups.iter().flat_map(|(_, rows)| rows).copied().collect();
        let sorted = gather(&projected, &order)?;
        let mut offset = 0;
        let mut parts = Vec::with_capacity(groups.len());
        for (key, rows) in groups {
            parts.push(Part { key, rows: sorted.slice(offset, rows.len()) });
            offset += rows.len();
        }
        Ok(parts)
    }
}

/// `take_record_batch`, with identifier columns copied 32 bytes at a time (arrow's kernel
/// copies widths above 16 bytes with a call per value).
fn gather(batch: &RecordBatch, order: &arrow::array::UInt32Array) -> Result<RecordBatch, StoreError> {
    let columns = batch
        .columns()
        .iter()
        .map(|c| match c.as_fixed_size_binary_opt() {
            Some(ids) if ids.value_length() == ID_WIDTH => Ok(Arc::new(gather_ids(ids, order.values())) as arrow::array::ArrayRef),
            _ => arrow::compute::take(c, order, None),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

fn gather_ids(ids: &arrow::array::FixedSizeBinaryArray, order: &[u32]) -> arrow::array::FixedSizeBinaryArray {
    const W: usize = ID_WIDTH as usize;
    let (values, _) = ids.value_data().as_chunks::<W>();
    let mut out = vec![[0u8; W]; order.len()];
    for (dst, &i) in out.iter_mut().zip(order) {
        *dst = values[i as usize];
    }
    let nulls =
        ids.nulls().map(|n| arrow::buffer::NullBuffer::from(arrow::buffer::BooleanBuffer::collect_bool(order.len(), |k| n.is_valid(order[k] as usize))));
    arrow::array::FixedSizeBinaryArray::new(ID_WIDTH, arrow::buffer::Buffer::from_vec(out.into_flattened()), nulls)
}

/// Groups row indices by `(advertiser_id, UTC day)`, in partition order.
fn partition_rows(batch: &RecordBatch, time_column: &str) -> Result<Vec<(PartitionKey, Vec<u32>)>, StoreError> {
    let adv =
        batch.column_by_name(ADVERTISER_ID).and_then(|c| c.as_string_opt::<i32>()).ok_or_else(|| StoreError::Schema("`advertiser_id` must be Utf8".into()))?;
    let time_col = batch.column_by_name(time_column).ok_or_else(|| StoreError::Schema("partition time column missing".into()))?;
    if adv.null_count() > 0 || time_col.null_count() > 0 {
        return Err(StoreError::Schema("partition columns must not be null".into()));
    }
    let days: Vec<i32> = if let Some(ts) = time_col.as_primitive_opt::<TimestampMicrosecondType>() {
        ts.values().iter().map(|t| t.div_euclid(MICROS_PER_DAY) as i32).collect()
    } else if let Some(d) = time_col.as_primitive_opt::<Date32Type>() {
        d.values().to_vec()
    } else {
        return Err(StoreError::Schema("partition time column has an unexpected type".into()));
    };
    // Advertisers are few and usually the same row after row: a short list, checked last-first.
    let mut advertisers: Vec<(&str, AdvertiserId)> = Vec::new();
    let mut slots: std::collections::HashMap<(u32, i32), usize, std::hash::BuildHasherDefault<PairHasher>> = Default::default();
    let mut groups: Vec<(PartitionKey, Vec<u32>)> = Vec::new();
    let mut last: Option<(u32, i32, usize)> = None;
    for (i, &day) in days.iter().enumerate() {
        let a = adv.value(i);
        let ai = match last {
            Some((ai, ..)) if advertisers[ai as usize].0 == a => ai,
            _ => match advertisers.iter().position(|(s, _)| *s == a) {
                Some(ai) => ai as u32,
                None => {
                    advertisers.push((a, a.parse().map_err(StoreError::Schema)?));
                    (advertisers.len() - 1) as u32
                }
            },
        };
        let slot = match last {
            Some((la, ld, slot)) if la == ai && ld == day => slot,
            _ => *slots.entry((ai, day)).or_insert_with(|| {
                groups.push((PartitionKey { advertiser: advertisers[ai as usize].1.clone(), day }, Vec::new()));
                groups.len() - 1
            }),
        };
        groups[slot].1.push(i as u32);
        last = Some((ai, day, slot));
    }
    groups.sort_unstable_by(|x, y| x.0.cmp(&y.0));
    Ok(groups)
}

/// A multiplicative hash for the small integer pairs [`partition_rows`] looks up per row.
#[derive(Default)]
struct PairHasher(u64);

impl std::hash::Hasher for PairHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_i32(&mut self, n: i32) {
        self.write_u64(n as u32 as u64);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

fn day_to_date(day: i32) -> NaiveDate {
    NaiveDate::from_num_days_from_ce_opt(day + 719_163).expect("day in range")
}

/// The UTC date of days-since-epoch, as the Date32 value stores it.
pub fn date_to_day(date: NaiveDate) -> i32 {
    date.num_days_from_ce() - 719_163
}

use chrono::Datelike;

/// Reads every row of `path` back (for tests and tools); returns its batches and key-value metadata.
pub fn read_parquet_file(path: &Path) -> Result<(Vec<RecordBatch>, BTreeMap<String, String>), StoreError> {
    let file = File::open(path).map_err(|source| StoreError::Io { what: "cannot open", path: path.to_path_buf(), source })?;
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?;
    let kv = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kv| kv.iter().map(|k| (k.key.clone(), k.value.clone().unwrap_or_default())).collect())
        .unwrap_or_default();
    let batches = builder.build()?.collect::<Result<Vec<_>, _>>()?;
    Ok((batches, kv))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Date32Array, Float64Array, Int64Array, StringArray};

    fn spend_batch(rows: &[(&str, i32, f64)]) -> RecordBatch {
        let n = rows.len();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n("meta", n))),
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n("c1", n))),
            Arc::new(Date32Array::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
            Arc::new(Int64Array::from(vec![Some(1); n])),
            Arc::new(Int64Array::from(vec![None; n])),
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n("USD", n))),
        ];
        RecordBatch::try_new(Table::Spend.schema(), cols).unwrap()
    }

    #[test]
    fn splitter_groups_rows_by_partition_in_order() {
        let batch = spend_batch(&[("acme", 3, 1.0), ("beta", 3, 2.0), ("acme", 1, 3.0), ("acme", 3, 4.0), ("beta", 3, 5.0), ("acme", 1, 6.0)]);
        let dir = tempfile::tempdir().unwrap();
        let parts = open(dir.path()).writer(Table::Spend, &stamp()).splitter().split(&batch).unwrap();
        let got: Vec<(String, i32, Vec<f64>)> = parts
            .iter()
            .map(|p| {
                let spend = p.rows.column_by_name("spend").unwrap().as_primitive::<arrow::datatypes::Float64Type>();
                (p.key.advertiser.as_str().to_owned(), p.key.day, spend.values().to_vec())
            })
            .collect();
        assert_eq!(got, [("acme".to_owned(), 1, vec![3.0, 6.0]), ("acme".to_owned(), 3, vec![1.0, 4.0]), ("beta".to_owned(), 3, vec![2.0, 5.0])]);
        for p in &parts {
            assert!(p.rows.column_by_name(ADVERTISER_ID).is_none(), "parts are in the file schema");
            assert!(p.key.shard(2) < 2);
            assert_eq!(p.key.shard(2), p.key.clone().shard(2));
        }
        let next = PartitionKey { day: parts[0].key.day + 1, ..parts[0].key.clone() };
        assert_ne!(parts[0].key.shard(2), next.shard(2), "consecutive days alternate between two writers");
    }

    #[test]
    fn id_gather_equals_arrow_take() {
        let ids = arrow::array::FixedSizeBinaryArray::try_from_sparse_iter_with_size((0u8..10).map(|i| (i % 3 != 0).then(|| [i; ID_WIDTH as usize])), ID_WIDTH)
            .unwrap();
        let sliced = ids.slice(2, 7);
        let order = arrow::array::UInt32Array::from(vec![6, 0, 3, 3, 1, 5]);
        let ours = gather_ids(&sliced, order.values());
        let theirs = arrow::compute::take(&sliced, &order, None).unwrap();
        assert_eq!(&ours as &dyn Array, theirs.as_ref());
        assert!(ours.null_count() > 0 && ours.null_count() < ours.len());
    }

    fn open(dir: &Path) -> Store {
        Store::open(DataRoot::Local(dir.to_path_buf()), Policy::builtin()).unwrap()
    }

    fn stamp() -> FileStamp {
        FileStamp { jurisdiction: "US".into(), key_id: "k1".into(), policy_sha256: "abc".into() }
    }

    fn parquet_files(dir: &Path) -> Vec<PathBuf> {
        let mut out = vec![];
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p);
                }
            }
        }
        out.sort();
        out
    }

    #[tokio::test]
    async fn splits_by_advertiser_and_day_and_appears_only_on_finish() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut w = store.writer(Table::Spend, &stamp());
        w.write(&spend_batch(&[("acme", 20_000, 1.0), ("acme", 20_001, 2.0), ("globex", 20_000, 3.0), ("acme", 20_000, 4.0)])).unwrap();
        // Before finish: only hidden temp files, which are no data files.
        assert!(parquet_files(dir.path()).iter().all(|p| p.file_name().unwrap().to_str().unwrap().starts_with('.')));
        assert!(!store.has_files("spend").await.unwrap());
        assert!(!store.has_files("no_such_table").await.unwrap());
        let written = w.finish().await.unwrap();
        assert!(store.has_files("spend").await.unwrap());
        assert_eq!(written.len(), 3);
        let files = parquet_files(dir.path());
        assert_eq!(files.len(), 3, "{files:?}");
        assert!(files.iter().all(|p| p.extension().unwrap() == "parquet"));
        let acme = written.iter().find(|f| f.advertiser.as_str() == "acme" && date_to_day(f.date) == 20_000).unwrap();
        assert_eq!(acme.rows, 2);
        assert_eq!(acme.path.as_ref().split('/').take(3).collect::<Vec<_>>(), ["spend", "advertiser_id=acme", "date=2024-10-04"]);
        let (batches, kv) = read_parquet_file(&dir.path().join(acme.path.as_ref())).unwrap();
        assert_eq!(kv["tally.key_id"], "k1");
        assert_eq!(kv["tally.schema_version"], SCHEMA_VERSION);
        let spend: Vec<f64> =
            batches.iter().flat_map(|b| b.column_by_name("spend").unwrap().as_primitive::<arrow::datatypes::Float64Type>().values().to_vec()).collect();
        assert_eq!(spend, [1.0, 4.0]);
        assert!(batches[0].column_by_name("advertiser_id").is_none(), "partition columns live in the path only");
        assert_eq!(store.list_files("spend").await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn paced_writeback_writes_the_same_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let rows: Vec<(&str, i32, f64)> = (0..60_000).map(|i| ("acme", 20_000, f64::from(i) * 1.000_1)).collect();
        let mut w = store.writer(Table::Spend, &stamp()).with_paced_writeback(64 * 1024);
        w.write(&spend_batch(&rows)).unwrap();
        let written = w.finish().await.unwrap();
        let path = dir.path().join(written[0].path.as_ref());
        assert!(fs::metadata(&path).unwrap().len() > 3 * 64 * 1024, "the file spans several write-back chunks");
        let (batches, _) = read_parquet_file(&path).unwrap();
        let spend: Vec<f64> =
            batches.iter().flat_map(|b| b.column_by_name("spend").unwrap().as_primitive::<arrow::datatypes::Float64Type>().values().to_vec()).collect();
        assert_eq!(spend, rows.iter().map(|r| r.2).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn abort_and_drop_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut w = store.writer(Table::Spend, &stamp());
        w.write(&spend_batch(&[("acme", 20_000, 1.0)])).unwrap();
        w.abort();
        let mut w = store.writer(Table::Spend, &stamp()).with_max_rows_per_file(1);
        w.write(&spend_batch(&[("acme", 20_000, 1.0), ("acme", 20_000, 2.0)])).unwrap();
        drop(w);
        assert!(parquet_files(dir.path()).is_empty(), "{:?}", parquet_files(dir.path()));
    }

    #[tokio::test]
    async fn rows_per_file_cap_and_schema_check() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut w = store.writer(Table::Spend, &stamp()).with_max_rows_per_file(2);
        w.write(&spend_batch(&[("acme", 20_000, 1.0), ("acme", 20_000, 2.0), ("acme", 20_000, 3.0)])).unwrap();
        assert_eq!(w.rows(), 3);
        assert_eq!(w.finish().await.unwrap().iter().map(|f| f.rows).collect::<Vec<_>>(), [2, 1]);
        let mut w = store.writer(Table::Baseline, &stamp());
        assert!(matches!(w.write(&spend_batch(&[("acme", 1, 1.0)])), Err(StoreError::Schema(_))));
    }

    #[tokio::test]
    async fn derived_tables_are_written_and_a_window_is_replaced() {
        use arrow::array::{StringArray, TimestampMicrosecondArray};
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let table = DerivedTable::AttributedConversions;
        let batch = |days: &[i64]| {
            let n = days.len();
            let s = |v: &str| Arc::new(StringArray::from_iter_values(std::iter::repeat_n(v, n))) as ArrayRef;
            let f = || Arc::new(Float64Array::from(vec![1.0; n])) as ArrayRef;
            let t = TimestampMicrosecondArray::from_iter_values(days.iter().map(|d| (20_000 + d) * MICROS_PER_DAY)).with_timezone("UTC");
            let cols = vec![
                s("acme"),
                s("k"),
                s("Purchase"),
                Arc::new(t) as ArrayRef,
                s("linear"),
                s("deterministic"),
                s("em"),
                s("t1"),
                s("meta"),
                s("c1"),
                f(),
                f(),
                f(),
                f(),
            ];
            RecordBatch::try_new(table.schema(), cols).unwrap()
        };
        let d = |n: i64| day_to_date(20_000 + n as i32);
        let mut w = store.derived_writer(table, &stamp());
        w.write(&batch(&[0, 1, 2])).unwrap();
        let first = w.finish().await.unwrap();
        assert_eq!(first.len(), 3);
        assert!(first.iter().all(|f| f.path.as_ref().starts_with("attributed_conversions/advertiser_id=acme/date=")));
        // Re-run days 1..=2 only: the old files of those days go, day 0 stays.
        let old = store.list_window_files(table.name(), d(1), d(2)).await.unwrap();
        assert_eq!(old.len(), 2);
        let mut w = store.derived_writer(table, &stamp());
        w.write(&batch(&[1])).unwrap();
        let second = w.finish().await.unwrap();
        assert_eq!(store.replace_files(&old, &second).await.unwrap(), 2);
        let files = store.list_files(table.name()).await.unwrap();
        assert_eq!(files.len(), 2, "{files:?}");
        assert!(files.contains(&first[0].path) && files.contains(&second[0].path));
        assert!(!dir.path().join("attributed_conversions/advertiser_id=acme").join(format!("date={}", d(2))).exists(), "emptied partitions are removed");
        // Base tables are unaffected by the window listing of another table.
        assert!(store.list_window_files("conversions_dedup", d(0), d(9)).await.unwrap().is_empty());
    }

    #[test]
    fn refused_root_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let policy = Policy::from_toml(&format!(
            "jurisdiction = \"US\"\nplaintext_identifiers = \"hash\"\nk_anonymity = 5\n[[storage]]\nlocal = \"{}\"\n",
            dir.path().join("ok").display()
        ))
        .unwrap();
        let bad = dir.path().join("bad");
        assert!(matches!(Store::open(DataRoot::Local(bad.clone()), policy), Err(StoreError::Policy(_))));
        assert!(!bad.exists());
    }
}
