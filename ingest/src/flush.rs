//! The flusher: sealed WAL segments become Parquet files in the store, then are retired.
//!
//! A segment's rows are written through the store's partitioned writer under file names
//! derived from the node and the segment (`wal-<node>-<seq>-<n>.parquet`); only after those
//! files are fsynced and renamed into place is the segment retired (kept as a spare for the
//! log to write over, or deleted). A crash anywhere in between replays the segment on the next
//! start and writes the *same* file names again, so each acknowledged row lands in the store
//! exactly once. When the store cannot take the
//! files (disk full, a failing object store), the segment stays and is retried with backoff;
//! nothing acknowledged is lost, and ingestion keeps going as long as the WAL can write.

use std::collections::{BTreeMap, VecDeque};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tally_core::schema::Table;
use tally_core::store::PartitionedWriter;
use tally_core::store::visit_files_below;
use tally_core::{Store, StoreError};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::histogram::Histogram;
use crate::wal::{self, Segment};

/// Counters the flusher keeps (for `/metrics` and `/readyz`).
#[derive(Debug, Default)]
pub struct FlushStats {
    /// Sealed segments not yet in the store.
    pub backlog: AtomicUsize,
    /// Segments flushed.
    pub segments: AtomicU64,
    /// Rows written to Parquet.
    pub rows: AtomicU64,
    /// Parquet files written.
    pub files: AtomicU64,
    /// Failed flush attempts (retried).
    pub failures: AtomicU64,
    /// Torn tail bytes dropped at replay (crash mid-write; never acknowledged).
    pub torn_bytes: AtomicU64,
    /// How long each segment's flush took.
    pub duration: Histogram,
}

/// Parquet files are written back to disk in pieces this large while they are written, so the
/// WAL's `fdatasync` — which acknowledgements wait on — never queues behind a whole file.
const WRITEBACK_CHUNK: u64 = 1024 * 1024;

/// How the names of the Parquet files flushed by ingest node `node` begin.
fn flushed_prefix(node: &str) -> String {
    format!("wal-{node}-")
}

/// The name stem of the Parquet files flushed from segment `seq` by ingest node `node`.
fn flushed_stem(node: &str, seq: u64) -> String {
    format!("{}{seq:012}", flushed_prefix(node))
}

/// Removes the in-progress copies (`.wal-<node>-….parquet.tmp`) that a flush of this node left
/// in the store's partition directories when its process was killed mid-file; returns how many.
///
/// Only for the caller holding the node's WAL lock ([`crate::wal::DirLock`]): no flush of this
/// node can be running then, so every such file is dead — its segment was not retired and is
/// flushed again from the log. Other writers' temporary files (`tally import`'s, another
/// node's) are left alone: they may be in progress.
pub fn remove_dead_temp_files(root: &std::path::Path, node: &str) -> std::io::Result<usize> {
    let prefix = format!(".{}", flushed_prefix(node));
    let mut removed = 0;
    let mut remove_dead = |entry: &std::fs::DirEntry| {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".tmp") {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
        Ok(ControlFlow::Continue(()))
    };
    for table in Table::BASE {
        // `remove_dead` never breaks off: every table is walked to the end.
        let _ = visit_files_below(&root.join(table.name()), &mut remove_dead)?;
    }
    Ok(removed)
}

/// Writes one sealed segment to the store and retires it; returns the rows written.
///
/// The segment is read a frame at a time and each frame's rows go straight to the table's
/// Parquet writer, so a flush holds one frame and the files' open row groups in memory, not
/// the whole segment twice over (its bytes and its decoded rows). `between_frames` runs before
/// each frame.
async fn flush_segment(
    store: &Store,
    key_id: &str,
    node: &str,
    segment: &Segment,
    stats: &FlushStats,
    between_frames: &mut dyn FnMut(),
) -> Result<u64, StoreError> {
    let io = |source| StoreError::Io { what: "cannot read WAL segment", path: segment.path.clone(), source };
    let started = std::time::Instant::now();
    let mut frames = wal::SegmentReader::open(segment).map_err(io)?;
    let stamp = store.stamp(key_id);
    let mut writers: BTreeMap<Table, PartitionedWriter> = BTreeMap::new();
    let mut rows = 0u64;
    loop {
        between_frames();
        let Some((table, batches)) = frames.next_frame().map_err(io)? else { break };
        let writer = writers
            .entry(table)
            .or_insert_with(|| store.writer(table, &stamp).with_name_stem(flushed_stem(node, segment.seq)).with_paced_writeback(WRITEBACK_CHUNK));
        for b in &batches {
            writer.write(b)?;
            rows += b.num_rows() as u64;
        }
    }
    if frames.torn_bytes() > 0 {
        tracing::warn!(segment = %segment.path.display(), torn_bytes = frames.torn_bytes(), "dropping a torn WAL tail (never acknowledged)");
        stats.torn_bytes.fetch_add(frames.torn_bytes(), Ordering::Relaxed);
    }
    for writer in writers.into_values() {
        let files = writer.finish().await?;
        stats.files.fetch_add(files.len() as u64, Ordering::Relaxed);
    }
    wal::retire(segment).map_err(io)?;
    stats.segments.fetch_add(1, Ordering::Relaxed);
    stats.rows.fetch_add(rows, Ordering::Relaxed);
    stats.duration.observe(started.elapsed());
    Ok(rows)
}

/// Runs [`run`] on a thread of its own at a lower CPU priority (see [`CpuClass`]), returning
/// a receiver that resolves when it has ended.
///
/// Encoding a segment into Parquet is seconds of CPU. On the request runtime it would hold a
/// worker thread for that long and stall every request queued behind it (on two cores, half
/// the server); on its own thread, at a lower priority, the scheduler lets acks go first and
/// the flush soaks up the idle time. Acknowledged rows are already durable in the log, so a
/// flush that lags costs nothing but backlog (visible in `/metrics`).
pub fn spawn(
    store: Store,
    key_id: String,
    node: String,
    pending: Vec<Segment>,
    sealed: UnboundedReceiver<Segment>,
    stats: Arc<FlushStats>,
) -> std::io::Result<tokio::sync::oneshot::Receiver<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let idle_allowed = CpuClass::idle_allowed();
    std::thread::Builder::new().name("tally-flush".into()).spawn(move || {
        let cpu = CpuClass::enter(idle_allowed);
        runtime.block_on(run(store, key_id, node, pending, sealed, stats, cpu));
        let _ = done_tx.send(());
    })?;
    Ok(done_rx)
}

/// The flusher thread's CPU class.
///
/// At `SCHED_IDLE` the kernel runs the flusher only on CPU nothing else wants, and a request
/// thread that wakes up takes the CPU from it at once. At nice 10 (the fallback) the flusher
/// yields most of the CPU but not at once: a waking request thread can wait out the rest of the
/// flusher's time slice, and a request wakes several times (body, log acknowledgement). At
/// half load with 1,000-event batches, idle cut the p99 acknowledgement latency by 12-51%
/// against nice 10 (docs/benchmarks.md).
///
/// An idle-class thread never runs while the CPU is saturated, so whenever a sealed segment
/// waits behind the one being flushed, the flusher steps up to the normal class at nice 10 — as
/// it always ran before — and goes back to idle once it has caught up. Leaving `SCHED_IDLE`
/// needs `CAP_SYS_NICE` or an `RLIMIT_NICE` of at least 10 (sched(7)); a process with neither
/// could never step up again, so its flusher stays at nice 10 throughout.
#[derive(Debug)]
struct CpuClass {
    /// Whether the thread may go idle (stepping back up is known to work).
    idle_allowed: bool,
    /// Whether it is idle now.
    idle: bool,
}

impl CpuClass {
    /// Whether a thread of this process can go to `SCHED_IDLE`, back to the normal class at
    /// nice 10, and idle again: tried out on a thread of its own.
    fn idle_allowed() -> bool {
        std::thread::spawn(|| go_idle().and_then(|()| go_normal()).and_then(|()| go_idle()).is_ok()).join().unwrap_or(false)
    }

    /// Puts the calling thread in its starting class: idle if allowed, else nice 10.
    fn enter(idle_allowed: bool) -> CpuClass {
        let mut class = CpuClass { idle_allowed, idle: false };
        if idle_allowed {
            class.follow(0);
        } else {
            tracing::warn!(
                "the Parquet flusher runs at nice 10, not SCHED_IDLE: stepping back up from SCHED_IDLE needs CAP_SYS_NICE or RLIMIT_NICE >= 10 (docs/api.md, Durability)"
            );
            if let Err(e) = go_normal() {
                tracing::debug!(error = %e, "could not lower the flusher's priority");
            }
        }
        class
    }

    /// Idle while no sealed segment is `waiting` to be flushed, normal (nice 10) otherwise.
    fn follow(&mut self, waiting: usize) {
        let idle = self.idle_allowed && waiting == 0;
        if idle == self.idle {
            return;
        }
        let switched = if idle { go_idle() } else { go_normal() };
        match switched {
            Ok(()) => self.idle = idle,
            Err(e) => {
                // A switch can fail halfway (policy set, nice value refused): end in the normal
                // class, the one that always works, and stay there.
                tracing::warn!(error = %e, idle, "could not switch the flusher's CPU class; it stays at nice 10");
                self.idle_allowed = false;
                if go_normal().is_ok() {
                    self.idle = false;
                }
            }
        }
    }
}

/// Puts the calling thread in `SCHED_IDLE`.
fn go_idle() -> Result<(), String> {
    use thread_priority::{NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy, set_thread_priority_and_policy, thread_native_id};
    let policy = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, policy).map_err(|e| format!("SCHED_IDLE: {e:?}"))
}

/// Puts the calling thread in the normal class (`SCHED_OTHER`) at nice 10 (on Linux the nice
/// value belongs to the thread, so the request threads keep theirs).
fn go_normal() -> Result<(), String> {
    use thread_priority::{NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy, set_thread_priority_and_policy, thread_native_id};
    let policy = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other);
    // The crate maps 0..=99 onto nice 19..=-20: 22 is nice 10 (a unit test checks it).
    let nice_10 = ThreadPriority::Crossplatform(22u8.try_into().expect("22 is within 0..=99"));
    set_thread_priority_and_policy(thread_native_id(), nice_10, policy).map_err(|e| format!("SCHED_OTHER at nice 10: {e:?}"))
}

/// Flushes `pending` (left by a previous process) and then every segment the WAL seals,
/// retrying failures with backoff, until the channel closes.
async fn run(
    store: Store,
    key_id: String,
    node: String,
    pending: Vec<Segment>,
    mut sealed: UnboundedReceiver<Segment>,
    stats: Arc<FlushStats>,
    mut cpu: CpuClass,
) {
    let mut queue: VecDeque<Segment> = pending.into();
    // Sealed segments not yet in the store: the queue's, and those still in the channel
    // (sealed while a flush runs).
    let backlog = |queue: &VecDeque<Segment>, sealed: &UnboundedReceiver<Segment>| {
        let n = queue.len() + sealed.len();
        stats.backlog.store(n, Ordering::Relaxed);
        n
    };
    loop {
        // Take everything sealed so far, then work through the queue in order.
        while let Ok(s) = sealed.try_recv() {
            queue.push_back(s);
        }
        backlog(&queue, &sealed);
        let Some(segment) = queue.front().cloned() else {
            cpu.follow(0);
            match sealed.recv().await {
                Some(s) => {
                    queue.push_back(s);
                    continue;
                }
                None => return,
            }
        };
        let mut backoff = Duration::from_millis(100);
        loop {
            // Any segment but this one waiting: the flusher is behind.
            let mut keep_pace = || cpu.follow(backlog(&queue, &sealed) - 1);
            match flush_segment(&store, &key_id, &node, &segment, &stats, &mut keep_pace).await {
                Ok(_) => break,
                Err(e) => {
                    stats.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, segment = %segment.path.display(), "flush failed; will retry");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        queue.pop_front();
        backlog(&queue, &sealed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use thread_priority::{NormalThreadSchedulePolicy, ThreadSchedulePolicy, thread_schedule_policy};

    fn class_now() -> (ThreadSchedulePolicy, i32) {
        (thread_schedule_policy().unwrap(), rustix::process::getpriority_process(None).unwrap())
    }

    #[test]
    fn the_flusher_idles_while_it_keeps_up_and_steps_up_at_nice_10_when_behind() {
        let allowed = CpuClass::idle_allowed();
        std::thread::spawn(move || {
            let normal = (ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other), 10);
            let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
            let mut cpu = CpuClass::enter(allowed);
            if allowed {
                assert_eq!(class_now().0, idle, "keeping up: idle");
                cpu.follow(2);
                assert_eq!(class_now(), normal, "two segments waiting: normal class at nice 10");
                cpu.follow(0);
                assert_eq!(class_now().0, idle, "caught up: idle again");
            } else {
                // Without the right to leave SCHED_IDLE the flusher never enters it.
                assert_eq!(class_now(), normal);
                cpu.follow(0);
                assert_eq!(class_now(), normal);
            }
        })
        .join()
        .unwrap();
        // The test thread's own class is untouched (the nice value is per thread on Linux).
        assert_eq!(class_now(), (ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other), 0));
    }
}
