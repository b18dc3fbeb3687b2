//! The write-ahead log: what makes a 2xx durable.
//!
//! Requests carry tens of rows; Parquet files want thousands. So an accepted request's rows —
//! already validated and pseudonymized, never plaintext — are appended to a log segment and
//! acknowledged once that segment is fsynced. One writer thread does group commit: it takes
//! every append queued since its last sync, writes them all, calls `fdatasync` once, and then
//! answers every one of them. A segment is sealed when it is large or old enough, and the
//! flusher ([`crate::flush`]) turns it into Parquet and retires it.
//!
//! Segment file `wal-<seq>.log` is a sequence of frames:
//! `magic "TWA2" | segment seq u64 LE | payload length u32 LE | CRC32 of payload u32 LE | payload`,
//! where the payload is one byte naming the table followed by an Arrow IPC stream of the rows.
//! A crash can leave a torn last frame (short, or failing its CRC); it was never acknowledged,
//! and replay stops there. A failed write or sync (disk full) is answered with an error and the
//! next frame is written over it, so the log never holds a half-written frame that a later
//! frame follows.
//!
//! **Recycled segments.** A retired segment is not deleted but renamed `spare-<n>.log` (up to
//! [`MAX_SPARES`]), and the next segment is written *over* a spare, in place. Two costs of a
//! fresh, growing file go away on every acknowledgement: its `fdatasync` no longer has to
//! commit the file system's journal (the file's size and blocks do not change), so it does not
//! wait behind the flusher's Parquet metadata; and deleting 64 MB no longer frees blocks, which
//! on a file system mounted with `discard` (as here) stalls journal commits while the device
//! trims them. The old frames left in a spare carry the seq of the segment they belonged to,
//! so replay stops at the first of them: they can never be mistaken for the new segment's.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use tally_core::schema::Table;
use tokio::sync::oneshot;

const MAGIC: &[u8; 4] = b"TWA2";
const HEADER: usize = 20;
/// Retired segments kept for reuse; more are deleted.
pub const MAX_SPARES: usize = 2;

/// WAL failures.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WalError {
    /// Writing or syncing the log failed (e.g. the disk is full); nothing was acknowledged.
    #[error("write-ahead log unavailable: {0}")]
    Unavailable(String),
    /// The log is shut down.
    #[error("write-ahead log is closed")]
    Closed,
}

/// When a segment is sealed and handed to the flusher.
#[derive(Debug, Clone, Copy)]
pub struct WalConfig {
    /// Seal a segment at this size.
    pub max_segment_bytes: u64,
    /// Seal a non-empty segment this long after its first frame.
    pub max_segment_age: Duration,
}

impl Default for WalConfig {
    fn default() -> WalConfig {
        WalConfig { max_segment_bytes: 64 * 1024 * 1024, max_segment_age: Duration::from_secs(2) }
    }
}

/// A sealed segment waiting to be flushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Its sequence number.
    pub seq: u64,
    /// Its file.
    pub path: PathBuf,
}

enum Command {
    /// `frame` is complete but for its segment seq, which the writer fills in (the segment the
    /// frame lands in is known only there).
    Append {
        frame: Vec<u8>,
        ack: oneshot::Sender<Result<(), WalError>>,
    },
    Seal {
        ack: oneshot::Sender<()>,
    },
}

/// A handle to the log's writer thread; cheap to clone.
#[derive(Clone)]
pub struct Wal {
    commands: mpsc::Sender<Command>,
}

/// The exclusive claim of one process on a log directory, held while it serves: a second
/// `tally serve` on the same data directory would write segments with the same sequence
/// numbers, flush and retire the first one's, and recycle its spares under it. The lock is
/// the kernel's (`flock`), so it goes with the process however it ends, SIGKILL included, and
/// a restart after a crash is never refused.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock of `dir` (created if missing), or says who holds it.
    pub fn acquire(dir: &Path) -> std::io::Result<DirLock> {
        fs::create_dir_all(dir)?;
        let path = dir.join("LOCK");
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(fs::TryLockError::WouldBlock) => Err(std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                format!(
                    "another `tally serve` is running on this data directory (its write-ahead log {} is locked); stop it, or give this server a data directory of its own",
                    dir.display()
                ),
            )),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

impl Wal {
    /// Opens the log in `dir`. Segments already there (from a previous process) are returned
    /// first, sealed, for the flusher; new frames go to a fresh segment. Sealed segments are
    /// sent on `sealed` as they are made.
    pub fn open(dir: &Path, config: WalConfig, sealed: tokio::sync::mpsc::UnboundedSender<Segment>) -> std::io::Result<(Wal, Vec<Segment>)> {
        fs::create_dir_all(dir)?;
        let existing = list_segments(dir)?;
        // Sequence numbers are never reused, across restarts and clean stops too: they name the
        // Parquet files a segment is flushed to (a reused one would replace an earlier
        // segment's files) and tell a spare's old frames from a new segment's.
        let spares = list_logs(dir, "spare-")?;
        let highest = existing.iter().map(|s| s.seq).chain(spares.iter().map(|s| s.seq)).chain([read_last_seq(dir)?]).max().unwrap_or(0);
        let next_seq = highest + 1;
        let (tx, rx) = mpsc::channel();
        let writer = Writer { dir: dir.to_path_buf(), config, seq: next_seq, file: None, len: 0, capacity: 0, opened_at: None, sealed };
        std::thread::Builder::new().name("tally-wal".into()).spawn(move || writer.run(rx))?;
        Ok((Wal { commands: tx }, existing))
    }

    /// Appends `batch` (rows of `table`, already pseudonymized) and resolves once it is on
    /// disk — fsynced — together with every other append of the same group.
    pub async fn append(&self, table: Table, batch: &RecordBatch) -> Result<(), WalError> {
        let frame = encode_payload(table, batch).map_err(|e| WalError::Unavailable(e.to_string()))?;
        let (ack, done) = oneshot::channel();
        self.commands.send(Command::Append { frame, ack }).map_err(|_| WalError::Closed)?;
        done.await.map_err(|_| WalError::Closed)?
    }

    /// Seals the current segment now (for shutdown and explicit flushes).
    pub async fn seal(&self) -> Result<(), WalError> {
        let (ack, done) = oneshot::channel();
        self.commands.send(Command::Seal { ack }).map_err(|_| WalError::Closed)?;
        done.await.map_err(|_| WalError::Closed)
    }
}

struct Writer {
    dir: PathBuf,
    config: WalConfig,
    seq: u64,
    file: Option<File>,
    /// Bytes of intact frames in the current segment: where the next frame goes.
    len: u64,
    /// The current segment's size when it was opened (a spare's old length; 0 for a new file).
    capacity: u64,
    opened_at: Option<Instant>,
    sealed: tokio::sync::mpsc::UnboundedSender<Segment>,
}

impl Writer {
    fn run(mut self, commands: mpsc::Receiver<Command>) {
        loop {
            // Wait for work, but wake up to seal an old segment.
            let first = match self.opened_at {
                Some(t) => match commands.recv_timeout(self.config.max_segment_age.saturating_sub(t.elapsed())) {
                    Ok(c) => c,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.seal();
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                },
                None => match commands.recv() {
                    Ok(c) => c,
                    Err(_) => break,
                },
            };
            // Group commit: everything queued now goes out with one sync.
            let mut group = Vec::new();
            let mut seals = Vec::new();
            for command in std::iter::once(first).chain(std::iter::from_fn(|| commands.try_recv().ok())) {
                match command {
                    Command::Append { mut frame, ack } => {
                        stamp_seq(&mut frame, self.seq);
                        group.push((frame, ack));
                    }
                    Command::Seal { ack } => seals.push(ack),
                }
                if group.len() >= 4096 {
                    break;
                }
            }
            if !group.is_empty() {
                let result = self.write_group(group.iter().map(|(f, _)| f.as_slice()));
                if let Err(e) = &result {
                    tracing::warn!(error = %e, "write-ahead log append failed");
                }
                for (_, ack) in group {
                    let _ = ack.send(result.clone());
                }
            }
            let too_old = self.opened_at.is_some_and(|t| t.elapsed() >= self.config.max_segment_age);
            if !seals.is_empty() || self.len >= self.config.max_segment_bytes || too_old {
                self.seal();
            }
            for ack in seals {
                let _ = ack.send(());
            }
        }
        self.seal();
    }

    fn write_group<'a>(&mut self, frames: impl Iterator<Item = &'a [u8]>) -> Result<(), WalError> {
        let unavailable = |e: std::io::Error| WalError::Unavailable(e.to_string());
        if self.file.is_none() {
            let (file, capacity) = self.open_segment().map_err(unavailable)?;
            self.file = Some(file);
            self.len = 0;
            self.capacity = capacity;
            self.opened_at = Some(Instant::now());
        }
        let file = self.file.as_mut().expect("opened above");
        let mut buf = Vec::new();
        for f in frames {
            buf.extend_from_slice(f);
        }
        // Frames go at `len`, over a spare's old bytes or past the end of a new file; a failed
        // write leaves at most a partial frame there, which the next write covers.
        let result = file.write_all_at(&buf, self.len).and_then(|()| file.sync_data());
        match result {
            Ok(()) => {
                self.len += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Give back what a failed write grew the file by (a full disk wants it).
                let _ = file.set_len(self.len.max(self.capacity));
                Err(unavailable(e))
            }
        }
    }

    /// Opens segment `seq`: a spare renamed to it, or else a new file. Returns the file and its
    /// size (the bytes that can be overwritten without growing it).
    fn open_segment(&mut self) -> std::io::Result<(File, u64)> {
        let path = segment_path(&self.dir, self.seq);
        if let Some(spare) = list_spares(&self.dir)?.into_iter().next() {
            // If the rename fails, a new file serves as well.
            let _ = fs::rename(&spare, &path);
        }
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
        tally_core::keystore::sync_dir(&self.dir)?;
        let capacity = file.metadata()?.len();
        Ok((file, capacity))
    }

    fn seal(&mut self) {
        if let Some(file) = self.file.take() {
            drop(file);
            let segment = Segment { seq: self.seq, path: segment_path(&self.dir, self.seq) };
            self.seq += 1;
            self.len = 0;
            self.capacity = 0;
            self.opened_at = None;
            let _ = self.sealed.send(segment);
        }
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("wal-{seq:020}.log"))
}

/// Retires a flushed segment: kept as a spare for the writer to reuse, or deleted when there
/// are [`MAX_SPARES`] already. Either way its name no longer says "replay me", durably.
pub fn retire(segment: &Segment) -> std::io::Result<()> {
    let dir = segment.path.parent().unwrap_or(Path::new("."));
    record_last_seq(dir, segment.seq)?;
    if list_spares(dir)?.len() < MAX_SPARES {
        fs::rename(&segment.path, dir.join(format!("spare-{:020}.log", segment.seq)))?;
    } else {
        fs::remove_file(&segment.path)?;
    }
    tally_core::keystore::sync_dir(dir)
}

/// Deletes the spares in `dir` (at a clean shutdown: a stopped server leaves no log behind).
pub fn remove_spares(dir: &Path) -> std::io::Result<()> {
    for spare in list_spares(dir)? {
        fs::remove_file(spare)?;
    }
    Ok(())
}

fn list_spares(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    Ok(list_logs(dir, "spare-")?.into_iter().map(|s| s.path).collect())
}

/// Segments in `dir`, oldest first.
pub fn list_segments(dir: &Path) -> std::io::Result<Vec<Segment>> {
    list_logs(dir, "wal-")
}

/// Files `<prefix><seq>.log` in `dir`, by seq.
fn list_logs(dir: &Path, prefix: &str) -> std::io::Result<Vec<Segment>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let seq = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix(prefix)?.strip_suffix(".log")?.parse::<u64>().ok());
        if let Some(seq) = seq {
            out.push(Segment { seq, path });
        }
    }
    out.sort_by_key(|s| s.seq);
    Ok(out)
}

/// The file holding the highest sequence number ever retired in a log directory.
const LAST_SEQ: &str = "last-seq";

fn read_last_seq(dir: &Path) -> std::io::Result<u64> {
    match fs::read_to_string(dir.join(LAST_SEQ)) {
        Ok(text) => text.trim().parse().map_err(|_| {
            std::io::Error::other(format!("{} holds {text:?}, not a sequence number; refusing to reuse segment numbers", dir.join(LAST_SEQ).display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// Durably raises the recorded highest sequence number to `seq` (before a segment's file,
/// which also carries it, is renamed or deleted).
fn record_last_seq(dir: &Path, seq: u64) -> std::io::Result<()> {
    if read_last_seq(dir)? >= seq {
        return Ok(());
    }
    let temp = dir.join(format!("{LAST_SEQ}.tmp"));
    let mut f = File::create(&temp)?;
    std::io::Write::write_all(&mut f, format!("{seq}\n").as_bytes())?;
    f.sync_all()?;
    fs::rename(&temp, dir.join(LAST_SEQ))?;
    tally_core::keystore::sync_dir(dir)
}

fn table_tag(table: Table) -> u8 {
    match table {
        Table::Conversions => 1,
        Table::Touchpoints => 2,
        Table::Spend => 3,
        Table::Baseline => 4,
    }
}

fn tag_table(tag: u8) -> Option<Table> {
    Table::BASE.into_iter().find(|t| table_tag(*t) == tag)
}

/// The frame of `batch` but for its segment seq (`stamp_seq`): encoded and checksummed by
/// the request's task, so the single writer thread only copies it out.
pub fn encode_payload(table: Table, batch: &RecordBatch) -> Result<Vec<u8>, arrow::error::ArrowError> {
    let mut frame = vec![0; HEADER];
    frame.push(table_tag(table));
    let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut frame, &batch.schema())?;
    w.write(batch)?;
    w.finish()?;
    drop(w);
    let (header, payload) = frame.split_at_mut(HEADER);
    let crc = crc32fast::hash(payload);
    header[..4].copy_from_slice(MAGIC);
    header[12..16].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    header[16..20].copy_from_slice(&crc.to_le_bytes());
    Ok(frame)
}

/// Names segment `seq` in a frame from [`encode_payload`].
fn stamp_seq(frame: &mut [u8], seq: u64) {
    frame[4..12].copy_from_slice(&seq.to_le_bytes());
}

/// Reads a segment's intact frames one at a time, through one reused buffer; stops at the
/// first short or corrupt frame, or at the first that belongs to another segment (the old
/// contents of a recycled file).
///
/// A flush so holds one frame's bytes at a time, not the whole segment: reading tens of MB
/// into fresh memory per flush cost a page fault per 4 KiB, and those faults and copies took
/// CPU from the requests being acknowledged meanwhile. And it reads no further than the
/// segment's last frame: a recycled file's old bytes beyond it are never read.
pub struct SegmentReader {
    file: File,
    seq: u64,
    /// Where the next frame starts.
    at: u64,
    size: u64,
    buf: Vec<u8>,
    torn_bytes: u64,
    ended: bool,
}

impl SegmentReader {
    /// Opens `segment` for reading from its first frame.
    pub fn open(segment: &Segment) -> std::io::Result<SegmentReader> {
        let file = File::open(&segment.path)?;
        let size = file.metadata()?.len();
        Ok(SegmentReader { file, seq: segment.seq, at: 0, size, buf: Vec::new(), torn_bytes: 0, ended: false })
    }

    /// The next intact frame's table and rows, or `None` at the segment's end.
    pub fn next_frame(&mut self) -> std::io::Result<Option<(Table, Vec<RecordBatch>)>> {
        if self.ended {
            return Ok(None);
        }
        let left = self.size - self.at;
        let mut header = [0u8; HEADER];
        let header = &mut header[..(HEADER as u64).min(left) as usize];
        self.file.read_exact_at(header, self.at)?;
        let ours = header.len() >= 12 && &header[..4] == MAGIC && header[4..12] == self.seq.to_le_bytes();
        if !ours {
            // The end: zeros, a spare's old frames, or a header cut short by a crash.
            if header.len() < 12 && MAGIC.starts_with(&header[..header.len().min(4)]) {
                self.torn_bytes = header.len() as u64;
            }
            return self.end();
        }
        let declared = header.get(12..16).map_or(0, |l| u32::from_le_bytes(l.try_into().expect("4 bytes")) as u64);
        let frame_len = HEADER as u64 + declared;
        // A header cut short is caught here too: fewer than HEADER bytes are left.
        let decoded = if frame_len > left {
            None
        } else {
            let crc = u32::from_le_bytes(header[16..20].try_into().expect("4 bytes"));
            self.buf.resize(declared as usize, 0);
            self.file.read_exact_at(&mut self.buf, self.at + HEADER as u64)?;
            decode_payload(&self.buf, crc)
        };
        let Some(frame) = decoded else {
            // Torn (short) or corrupt: the frame being written when the process died.
            self.torn_bytes = frame_len.min(left);
            return self.end();
        };
        self.at += frame_len;
        Ok(Some(frame))
    }

    /// Bytes of a torn or corrupt last frame of this segment met so far (never acknowledged;
    /// dropped).
    pub fn torn_bytes(&self) -> u64 {
        self.torn_bytes
    }

    fn end(&mut self) -> std::io::Result<Option<(Table, Vec<RecordBatch>)>> {
        self.ended = true;
        Ok(None)
    }
}

/// The table and rows of a frame's payload, or `None` if it fails its CRC or does not decode.
fn decode_payload(payload: &[u8], crc: u32) -> Option<(Table, Vec<RecordBatch>)> {
    if crc32fast::hash(payload) != crc || payload.is_empty() {
        return None;
    }
    let table = tag_table(payload[0])?;
    let reader = arrow_ipc::reader::StreamReader::try_new(&payload[1..], None).ok()?;
    let decoded: Result<Vec<RecordBatch>, _> = reader.collect();
    Some((table, decoded.ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Date32Array, Float64Array, StringArray};
    use std::sync::Arc;

    /// What replaying a segment found.
    #[derive(Debug)]
    struct Replay {
        /// The intact frames' rows, in order.
        batches: Vec<(Table, RecordBatch)>,
        /// Bytes of a frame of this segment that was being written when the process died (torn
        /// or failing its CRC; never acknowledged), dropped. Old bytes of a recycled file beyond
        /// it are not counted.
        torn_bytes: u64,
    }

    /// Reads a segment's intact frames, all at once.
    fn replay(segment: &Segment) -> std::io::Result<Replay> {
        let mut reader = SegmentReader::open(segment)?;
        let mut batches = Vec::new();
        while let Some((table, decoded)) = reader.next_frame()? {
            batches.extend(decoded.into_iter().map(|b| (table, b)));
        }
        Ok(Replay { batches, torn_bytes: reader.torn_bytes() })
    }

    fn baseline(n: usize) -> RecordBatch {
        RecordBatch::try_new(
            Table::Baseline.schema(),
            vec![
                Arc::new(StringArray::from_iter_values(std::iter::repeat_n("acme", n))),
                Arc::new(StringArray::from_iter_values(std::iter::repeat_n("meta", n))),
                Arc::new(StringArray::from_iter_values((0..n).map(|i| format!("c{i}")))),
                Arc::new(Date32Array::from_iter_values(std::iter::repeat_n(20_000, n))),
                Arc::new(Float64Array::from_iter_values((0..n).map(|i| i as f64))),
                Arc::new(Float64Array::from(vec![None; n])),
            ],
        )
        .unwrap()
    }

    #[tokio::test]
    async fn appends_are_durable_and_replay_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut sealed) = tokio::sync::mpsc::unbounded_channel();
        let (wal, existing) = Wal::open(dir.path(), WalConfig::default(), tx).unwrap();
        assert!(existing.is_empty());
        let appends: Vec<_> = (1..=20)
            .map(|n| {
                let wal = wal.clone();
                tokio::spawn(async move { wal.append(Table::Baseline, &baseline(n)).await })
            })
            .collect();
        for a in appends {
            a.await.unwrap().unwrap();
        }
        wal.seal().await.unwrap();
        let segment = sealed.recv().await.unwrap();
        let r = replay(&segment).unwrap();
        assert_eq!(r.torn_bytes, 0);
        assert_eq!(r.batches.iter().map(|(_, b)| b.num_rows()).sum::<usize>(), (1..=20).sum::<usize>());
        assert!(r.batches.iter().all(|(t, b)| *t == Table::Baseline && b.schema() == Table::Baseline.schema()));
    }

    #[tokio::test]
    async fn a_recycled_segment_replays_only_its_own_frames() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut sealed) = tokio::sync::mpsc::unbounded_channel();
        let (wal, _) = Wal::open(dir.path(), WalConfig::default(), tx).unwrap();
        for n in [50, 60, 70] {
            wal.append(Table::Baseline, &baseline(n)).await.unwrap();
        }
        wal.seal().await.unwrap();
        let first = sealed.recv().await.unwrap();
        let old_len = fs::metadata(&first.path).unwrap().len();
        retire(&first).unwrap();
        assert!(list_segments(dir.path()).unwrap().is_empty(), "a retired segment is never replayed");
        assert_eq!(list_spares(dir.path()).unwrap().len(), 1);

        // The next segment is written over the spare: smaller, so old frames follow it.
        wal.append(Table::Baseline, &baseline(2)).await.unwrap();
        let second = list_segments(dir.path()).unwrap().pop().unwrap();
        assert_eq!(second.seq, first.seq + 1);
        assert!(list_spares(dir.path()).unwrap().is_empty(), "the spare was taken");
        assert_eq!(fs::metadata(&second.path).unwrap().len(), old_len, "written in place, not grown");
        let r = replay(&second).unwrap();
        assert_eq!(r.batches.iter().map(|(_, b)| b.num_rows()).collect::<Vec<_>>(), [2]);
        assert_eq!(r.torn_bytes, 0, "the old frames are not a torn tail");

        // A crash right after the spare was renamed, before any frame: nothing to replay.
        fs::rename(&second.path, dir.path().join("spare-00000000000000000009.log")).unwrap();
        let renamed = Segment { seq: 10, path: segment_path(dir.path(), 10) };
        fs::rename(dir.path().join("spare-00000000000000000009.log"), &renamed.path).unwrap();
        assert!(replay(&renamed).unwrap().batches.is_empty());

        // Spares beyond MAX_SPARES are deleted; a clean stop removes the rest.
        let spare_count = || list_spares(dir.path()).unwrap().len();
        for seq in 20..20 + MAX_SPARES as u64 + 2 {
            let s = Segment { seq, path: segment_path(dir.path(), seq) };
            fs::write(&s.path, b"x").unwrap();
            retire(&s).unwrap();
        }
        assert_eq!(spare_count(), MAX_SPARES);
        remove_spares(dir.path()).unwrap();
        assert_eq!(spare_count(), 0);
    }

    #[tokio::test]
    async fn sequence_numbers_are_never_reused_even_after_a_clean_stop() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = Vec::new();
        for _ in 0..3 {
            let (tx, mut sealed) = tokio::sync::mpsc::unbounded_channel();
            let (wal, pending) = Wal::open(dir.path(), WalConfig::default(), tx).unwrap();
            assert!(pending.is_empty());
            wal.append(Table::Baseline, &baseline(1)).await.unwrap();
            wal.seal().await.unwrap();
            let segment = sealed.recv().await.unwrap();
            retire(&segment).unwrap();
            remove_spares(dir.path()).unwrap();
            seen.push(segment.seq);
        }
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
        fs::write(dir.path().join(LAST_SEQ), "garbage").unwrap();
        let (tx, _sealed) = tokio::sync::mpsc::unbounded_channel();
        assert!(Wal::open(dir.path(), WalConfig::default(), tx).is_err(), "an unreadable high-water mark is refused, not reset");
    }

    #[tokio::test]
    async fn torn_tail_is_dropped_and_reopening_keeps_old_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, _sealed) = tokio::sync::mpsc::unbounded_channel();
        let (wal, _) = Wal::open(dir.path(), WalConfig::default(), tx).unwrap();
        wal.append(Table::Baseline, &baseline(3)).await.unwrap();
        wal.append(Table::Baseline, &baseline(4)).await.unwrap();
        drop(wal);
        let segment = list_segments(dir.path()).unwrap()[0].clone();
        let path = segment.path.clone();
        let full = fs::read(&path).unwrap();
        // Every possible crash point inside the second frame: the first survives, nothing else.
        let first_len = HEADER + u32::from_le_bytes(full[12..16].try_into().unwrap()) as usize;
        for cut in [first_len + 1, first_len + HEADER, full.len() - 1] {
            fs::write(&path, &full[..cut]).unwrap();
            let r = replay(&segment).unwrap();
            assert_eq!(r.batches.iter().map(|(_, b)| b.num_rows()).sum::<usize>(), 3, "cut at {cut}");
            assert_eq!(r.torn_bytes as usize, cut - first_len);
        }
        // A flipped bit in the second frame's payload fails its CRC.
        let mut bad = full.clone();
        *bad.last_mut().unwrap() ^= 1;
        fs::write(&path, &bad).unwrap();
        assert_eq!(replay(&segment).unwrap().batches.len(), 1);
        // Reopening hands the old segment over and writes to a new one.
        let (tx, _s) = tokio::sync::mpsc::unbounded_channel();
        let (wal, existing) = Wal::open(dir.path(), WalConfig::default(), tx).unwrap();
        assert_eq!(existing.len(), 1);
        wal.append(Table::Baseline, &baseline(1)).await.unwrap();
        assert_eq!(list_segments(dir.path()).unwrap().len(), 2);
    }
}
