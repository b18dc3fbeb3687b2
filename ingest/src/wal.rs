//! The write-ahead log: what makes a 2xx durable.
//!
//! Requests carry tens of rows; Parquet files want thousands. So an accepted request's rows —
//! already validated and pseudonymized, never plaintext — are appended to a log segment and
//! acknowledged once that segment is fsynced. One writer thread does group commit: it takes
//! every append queued since its last sync, writes them all, calls `fdatasync` once, and then
//! answers every one of them. A segment is sealed when it is large or old enough, and the
//! flusher ([`crate::flush`]) turns it into Parquet and deletes it.
//!
//! Segment file `wal-<seq>.log` is a sequence of frames:
//! `magic "TWAL" | payload length u32 LE | CRC32 of payload u32 LE | payload`, where the payload
//! is one byte naming the table followed by an Arrow IPC stream of the rows. A crash can leave
//! a torn last frame (short, or failing its CRC); it was never acknowledged, and replay stops
//! there. A failed write or sync (disk full) is answered with an error and the segment is cut
//! back to its last good frame, so the log never holds a half-written frame that a later
//! frame follows.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use tally_core::schema::Table;
use tokio::sync::oneshot;

const MAGIC: &[u8; 4] = b"TWAL";
const HEADER: usize = 12;

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
    Append { frame: Vec<u8>, ack: oneshot::Sender<Result<(), WalError>> },
    Seal { ack: oneshot::Sender<()> },
}

/// A handle to the log's writer thread; cheap to clone.
#[derive(Clone)]
pub struct Wal {
    commands: mpsc::Sender<Command>,
}

impl Wal {
    /// Opens the log in `dir`. Segments already there (from a previous process) are returned
    /// first, sealed, for the flusher; new frames go to a fresh segment. Sealed segments are
    /// sent on `sealed` as they are made.
    pub fn open(dir: &Path, config: WalConfig, sealed: tokio::sync::mpsc::UnboundedSender<Segment>) -> std::io::Result<(Wal, Vec<Segment>)> {
        fs::create_dir_all(dir)?;
        let existing = list_segments(dir)?;
        let next_seq = existing.last().map_or(1, |s| s.seq + 1);
        let (tx, rx) = mpsc::channel();
        let writer = Writer { dir: dir.to_path_buf(), config, seq: next_seq, file: None, len: 0, opened_at: None, sealed };
        std::thread::Builder::new().name("tally-wal".into()).spawn(move || writer.run(rx))?;
        Ok((Wal { commands: tx }, existing))
    }

    /// Appends `batch` (rows of `table`, already pseudonymized) and resolves once it is on
    /// disk — fsynced — together with every other append of the same group.
    pub async fn append(&self, table: Table, batch: &RecordBatch) -> Result<(), WalError> {
        let frame = encode_frame(table, batch).map_err(|e| WalError::Unavailable(e.to_string()))?;
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
    len: u64,
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
                    Command::Append { frame, ack } => group.push((frame, ack)),
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
            let path = segment_path(&self.dir, self.seq);
            let file = OpenOptions::new().create(true).append(true).open(&path).map_err(unavailable)?;
            tally_core::keystore::sync_dir(&self.dir).map_err(unavailable)?;
            self.file = Some(file);
            self.len = 0;
            self.opened_at = Some(Instant::now());
        }
        let file = self.file.as_mut().expect("opened above");
        let mut buf = Vec::new();
        for f in frames {
            buf.extend_from_slice(f);
        }
        let result = file.write_all(&buf).and_then(|()| file.sync_data());
        match result {
            Ok(()) => {
                self.len += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Cut the segment back to its last good frame; if even that fails, start a new
                // segment so nothing is ever appended after a partial frame.
                if file.set_len(self.len).and_then(|()| file.sync_data()).is_err() {
                    self.file = None;
                    self.seq += 1;
                }
                Err(unavailable(e))
            }
        }
    }

    fn seal(&mut self) {
        if let Some(file) = self.file.take() {
            drop(file);
            let segment = Segment { seq: self.seq, path: segment_path(&self.dir, self.seq) };
            self.seq += 1;
            self.len = 0;
            self.opened_at = None;
            let _ = self.sealed.send(segment);
        }
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("wal-{seq:020}.log"))
}

/// Segments in `dir`, oldest first.
pub fn list_segments(dir: &Path) -> std::io::Result<Vec<Segment>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let seq = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("wal-")?.strip_suffix(".log")?.parse::<u64>().ok());
        if let Some(seq) = seq {
            out.push(Segment { seq, path });
        }
    }
    out.sort_by_key(|s| s.seq);
    Ok(out)
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

fn encode_frame(table: Table, batch: &RecordBatch) -> Result<Vec<u8>, arrow::error::ArrowError> {
    let mut payload = vec![table_tag(table)];
    let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut payload, &batch.schema())?;
    w.write(batch)?;
    w.finish()?;
    drop(w);
    let mut frame = Vec::with_capacity(HEADER + payload.len());
    frame.extend_from_slice(MAGIC);
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// What replaying a segment found.
#[derive(Debug)]
pub struct Replay {
    /// The intact frames' rows, in order.
    pub batches: Vec<(Table, RecordBatch)>,
    /// Bytes after the last intact frame (a torn tail from a crash mid-write), dropped.
    pub torn_bytes: u64,
}

/// Reads a segment's intact frames; stops at the first short or corrupt frame.
pub fn replay(path: &Path) -> std::io::Result<Replay> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let mut batches = Vec::new();
    let mut at = 0usize;
    while bytes.len() - at >= HEADER {
        let header = &bytes[at..at + HEADER];
        if &header[..4] != MAGIC {
            break;
        }
        let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        let Some(payload) = bytes.get(at + HEADER..at + HEADER + len) else { break };
        if crc32fast::hash(payload) != crc || payload.is_empty() {
            break;
        }
        let Some(table) = tag_table(payload[0]) else { break };
        let Ok(reader) = arrow_ipc::reader::StreamReader::try_new(&payload[1..], None) else { break };
        let decoded: Result<Vec<RecordBatch>, _> = reader.collect();
        let Ok(decoded) = decoded else { break };
        batches.extend(decoded.into_iter().map(|b| (table, b)));
        at += HEADER + len;
    }
    Ok(Replay { batches, torn_bytes: (bytes.len() - at) as u64 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Date32Array, Float64Array, StringArray};
    use std::sync::Arc;

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
        let appends: Vec<_> = (1..=20).map(|n| {
            let wal = wal.clone();
            tokio::spawn(async move { wal.append(Table::Baseline, &baseline(n)).await })
        }).collect();
        for a in appends {
            a.await.unwrap().unwrap();
        }
        wal.seal().await.unwrap();
        let segment = sealed.recv().await.unwrap();
        let r = replay(&segment.path).unwrap();
        assert_eq!(r.torn_bytes, 0);
        assert_eq!(r.batches.iter().map(|(_, b)| b.num_rows()).sum::<usize>(), (1..=20).sum::<usize>());
        assert!(r.batches.iter().all(|(t, b)| *t == Table::Baseline && b.schema() == Table::Baseline.schema()));
    }

    #[tokio::test]
    async fn torn_tail_is_dropped_and_reopening_keeps_old_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, _sealed) = tokio::sync::mpsc::unbounded_channel();
        let (wal, _) = Wal::open(dir.path(), WalConfig::default(), tx).unwrap();
        wal.append(Table::Baseline, &baseline(3)).await.unwrap();
        wal.append(Table::Baseline, &baseline(4)).await.unwrap();
        drop(wal);
        let path = list_segments(dir.path()).unwrap()[0].path.clone();
        let full = fs::read(&path).unwrap();
        // Every possible crash point inside the second frame: the first survives, nothing else.
        let first_len = HEADER + u32::from_le_bytes(full[4..8].try_into().unwrap()) as usize;
        for cut in [first_len + 1, first_len + HEADER, full.len() - 1] {
            fs::write(&path, &full[..cut]).unwrap();
            let r = replay(&path).unwrap();
            assert_eq!(r.batches.iter().map(|(_, b)| b.num_rows()).sum::<usize>(), 3, "cut at {cut}");
            assert_eq!(r.torn_bytes as usize, cut - first_len);
        }
        // A flipped bit in the second frame's payload fails its CRC.
        let mut bad = full.clone();
        *bad.last_mut().unwrap() ^= 1;
        fs::write(&path, &bad).unwrap();
        assert_eq!(replay(&path).unwrap().batches.len(), 1);
        // Reopening hands the old segment over and writes to a new one.
        let (tx, _s) = tokio::sync::mpsc::unbounded_channel();
        let (wal, existing) = Wal::open(dir.path(), WalConfig::default(), tx).unwrap();
        assert_eq!(existing.len(), 1);
        wal.append(Table::Baseline, &baseline(1)).await.unwrap();
        assert_eq!(list_segments(dir.path()).unwrap().len(), 2);
    }
}
