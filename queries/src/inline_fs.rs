//! Local Parquet reads on the querying thread.
//!
//! `object_store`'s [`LocalFileSystem`] runs every read on tokio's blocking pool: each column
//! chunk a scan fetches is a task handed to another thread, which wakes it, reads and wakes the
//! scan back. A saved report reads thousands of chunks (`channel_performance`: ≈ 1,250 reads,
//! ≈ 2,400 context switches), almost always from the page cache, where the `pread` itself
//! takes microseconds and the two hand-offs cost more than the read.
//!
//! [`InlineLocalFs`] serves the reads (`get_opts`, `get_ranges`) with `pread` right where the
//! scan polls, and leaves everything else (listing, writes) to the [`LocalFileSystem`] it
//! wraps. A cold read then holds a tokio worker for the time of the disk read, which is what a
//! one-shot query process wants but not a server that also answers ingest requests: only the
//! command-line readers use it ([`crate::SessionOptions::inline_reads`]).

use std::fmt;
use std::fs::File;
use std::io::ErrorKind;
use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::object_store::local::LocalFileSystem;
use datafusion::object_store::path::Path;
use datafusion::object_store::{
    Attributes, CopyOptions, Error, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use futures::stream::{self, BoxStream, StreamExt};

const STORE: &str = "InlineLocalFs";

/// A [`LocalFileSystem`] whose reads run inline (see the module docs).
#[derive(Debug)]
pub struct InlineLocalFs {
    inner: Arc<LocalFileSystem>,
}

impl InlineLocalFs {
    /// Reads of `file://` URLs (absolute paths), as DataFusion's default local store serves them.
    pub fn new() -> Self {
        InlineLocalFs { inner: Arc::new(LocalFileSystem::new()) }
    }
}

impl Default for InlineLocalFs {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for InlineLocalFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InlineLocalFs({})", self.inner)
    }
}

fn not_found(location: &Path, source: std::io::Error) -> Error {
    Error::NotFound { path: location.to_string(), source: Box::new(source) }
}

fn open(path: &FsPath, location: &Path) -> Result<File> {
    File::open(path).map_err(|e| if e.kind() == ErrorKind::NotFound { not_found(location, e) } else { generic(e) })
}

/// The file and its metadata; a directory is not an object.
fn open_with_metadata(path: &FsPath, location: &Path) -> Result<(File, std::fs::Metadata)> {
    let file = open(path, location)?;
    let metadata = file.metadata().map_err(generic)?;
    if metadata.is_dir() {
        return Err(not_found(location, std::io::Error::new(ErrorKind::NotFound, "is a directory")));
    }
    Ok((file, metadata))
}

fn generic(source: std::io::Error) -> Error {
    Error::Generic { store: STORE, source: Box::new(source) }
}

/// The object's metadata as [`LocalFileSystem`] reports it (same `e_tag`, so caches keyed on
/// it agree whichever store produced it).
fn object_meta(location: &Path, metadata: &std::fs::Metadata) -> ObjectMeta {
    let modified = metadata.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).unwrap_or_default();
    let last_modified = chrono::DateTime::from_timestamp(modified.as_secs() as i64, modified.subsec_nanos()).unwrap_or_default();
    let e_tag = format!("{:x}-{:x}-{:x}", metadata.ino(), modified.as_micros(), metadata.len());
    ObjectMeta { location: location.clone(), last_modified, size: metadata.len(), e_tag: Some(e_tag), version: None }
}

/// `range` of `file`, or an error if the file ends before it does.
fn read_range(file: &File, location: &Path, range: Range<u64>) -> Result<Bytes> {
    let len = usize::try_from(range.end.saturating_sub(range.start)).map_err(|_| generic(std::io::Error::other("range too large")))?;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, range.start).map_err(|e| {
        if e.kind() == ErrorKind::UnexpectedEof {
            generic(std::io::Error::new(ErrorKind::UnexpectedEof, format!("{location}: range {range:?} runs past the end of the file")))
        } else {
            generic(e)
        }
    })?;
    Ok(Bytes::from(buf))
}

#[async_trait]
impl ObjectStore for InlineLocalFs {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let conditional = options.if_match.is_some()
            || options.if_none_match.is_some()
            || options.if_modified_since.is_some()
            || options.if_unmodified_since.is_some()
            || options.version.is_some();
        if conditional {
            return self.inner.get_opts(location, options).await;
        }
        let path = self.inner.path_to_filesystem(location)?;
        let (file, metadata) = open_with_metadata(&path, location)?;
        let meta = object_meta(location, &metadata);
        let range = match &options.range {
            Some(r) => r.as_range(meta.size).map_err(|e| Error::Generic { store: STORE, source: Box::new(e) })?,
            None => 0..meta.size,
        };
        let payload: BoxStream<'static, Result<Bytes>> =
            if options.head { stream::empty().boxed() } else { stream::once(futures::future::ready(read_range(&file, location, range.clone()))).boxed() };
        Ok(GetResult { payload: GetResultPayload::Stream(payload), attributes: Attributes::default(), range, meta })
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let path = self.inner.path_to_filesystem(location)?;
        // No metadata: a directory fails at its first read, as in `LocalFileSystem`.
        let file = open(&path, location)?;
        ranges.iter().map(|r| read_range(&file, location, r.clone())).collect()
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::object_store::{GetRange, ObjectStoreExt};

    fn store_with(bytes: &[u8]) -> (tempfile::TempDir, InlineLocalFs, Path) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.bin");
        std::fs::write(&file, bytes).unwrap();
        let location = Path::from_absolute_path(&file).unwrap();
        (dir, InlineLocalFs::new(), location)
    }

    #[tokio::test]
    async fn reads_agree_with_local_file_system() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (_dir, store, location) = store_with(&data);
        let local = LocalFileSystem::new();
        for range in [0..1, 17..4_096, 9_000..10_000, 0..10_000] {
            let ours = store.get_range(&location, range.clone()).await.unwrap();
            assert_eq!(ours, local.get_range(&location, range.clone()).await.unwrap());
            assert_eq!(&ours[..], &data[range.start as usize..range.end as usize]);
        }
        let ranges = [3..9, 100..2_000, 9_990..10_000];
        assert_eq!(store.get_ranges(&location, &ranges).await.unwrap(), local.get_ranges(&location, &ranges).await.unwrap());
        // Whole object, suffix, offset and head requests, with the same metadata.
        assert_eq!(store.get(&location).await.unwrap().bytes().await.unwrap(), Bytes::from(data.clone()));
        let suffix = GetOptions { range: Some(GetRange::Suffix(10)), ..GetOptions::default() };
        assert_eq!(&store.get_opts(&location, suffix).await.unwrap().bytes().await.unwrap()[..], &data[9_990..]);
        let offset = GetOptions { range: Some(GetRange::Offset(9_995)), ..GetOptions::default() };
        assert_eq!(&store.get_opts(&location, offset).await.unwrap().bytes().await.unwrap()[..], &data[9_995..]);
        assert_eq!(store.head(&location).await.unwrap(), local.head(&location).await.unwrap());
    }

    #[tokio::test]
    async fn missing_files_and_short_reads_are_errors() {
        let (dir, store, location) = store_with(b"0123456789");
        let missing = Path::from_absolute_path(dir.path().join("absent.bin")).unwrap();
        assert!(matches!(store.get_range(&missing, 0..1).await, Err(Error::NotFound { .. })));
        assert!(matches!(store.get_ranges(&missing, &[0..1]).await, Err(Error::NotFound { .. })));
        let err = store.get_ranges(&location, &[0..5, 8..20]).await.unwrap_err();
        assert!(err.to_string().contains("runs past the end"), "{err}");
        assert!(store.get_range(&location, 20..30).await.is_err());
    }
}
