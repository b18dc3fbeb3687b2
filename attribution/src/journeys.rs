//! Non-converting paths for the Markov model: the touches that are in no conversion's path,
//! regrouped into per-person journeys.
//!
//! A touch that matched no conversion is a [`Step`] keyed by its person: the first non-null
//! of its `em`, `ph`, `external_id`, `click_id` (64 bits of that identifier's key; a touch
//! with no identifier can never be matched and belongs to no path). A person's steps ordered
//! by `(touch_time, touch_id)` are cut into journeys wherever two steps are more than the
//! click window apart; each journey is one non-converting path.
//!
//! Steps are the one structure here that grows with the touch count, so they are bucketed
//! by person (64 buckets), counted against the run's memory pool in fixed-size chunks and,
//! when the pool refuses, spilled to per-bucket files; each bucket is then loaded, sorted and
//! swept on its own, so memory is bounded by the pool plus one bucket.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::sync::Arc;

use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};

use crate::error::{Error, Result};

/// Buckets steps are spread over, by person.
pub(crate) const BUCKETS: usize = 64;
const CHUNK: usize = 8192;
const STEP_BYTES: usize = 28;

/// One touch of a non-converting path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Step {
    /// Advertiser (index into the run's advertisers).
    pub(crate) adv: u16,
    /// Person key.
    pub(crate) person: u64,
    /// `touch_time`.
    pub(crate) time: i64,
    /// The first 8 bytes of `touch_id`, big-endian: orders equal times as `touch_id` does.
    pub(crate) tid: u64,
    /// Channel (partition-local index until remapped).
    pub(crate) channel: u16,
}

impl Step {
    fn encode(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.adv.to_le_bytes());
        out[2..10].copy_from_slice(&self.person.to_le_bytes());
        out[10..18].copy_from_slice(&self.time.to_le_bytes());
        out[18..26].copy_from_slice(&self.tid.to_le_bytes());
        out[26..28].copy_from_slice(&self.channel.to_le_bytes());
    }
    fn decode(b: &[u8]) -> Step {
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Step { adv: u16_at(0), person: u64_at(2), time: u64_at(10) as i64, tid: u64_at(18), channel: u16_at(26) }
    }
}

/// The first 8 bytes of a `touch_id`, zero-padded, as a big-endian number.
pub(crate) fn tid_prefix(touch_id: &str) -> u64 {
    let mut b = [0u8; 8];
    let n = touch_id.len().min(8);
    b[..n].copy_from_slice(&touch_id.as_bytes()[..n]);
    u64::from_be_bytes(b)
}

/// One sweep partition's steps: in memory, in chunks, and spilled.
pub(crate) struct StepBuffer {
    buckets: Vec<Vec<Vec<Step>>>,
    reservation: MemoryReservation,
    spill_dir: Arc<tempfile::TempDir>,
    spill_files: Vec<Option<BufWriter<File>>>,
    partition: usize,
    pub(crate) spilled_steps: usize,
    pub(crate) steps: usize,
}

impl StepBuffer {
    pub(crate) fn new(pool: &Arc<dyn MemoryPool>, spill_dir: Arc<tempfile::TempDir>, partition: usize) -> StepBuffer {
        let reservation = MemoryConsumer::new(format!("journeys[{partition}]")).with_can_spill(true).register(pool);
        StepBuffer {
            buckets: (0..BUCKETS).map(|_| Vec::new()).collect(),
            reservation,
            spill_dir,
            spill_files: (0..BUCKETS).map(|_| None).collect(),
            partition,
            spilled_steps: 0,
            steps: 0,
        }
    }

    pub(crate) fn push(&mut self, step: Step) -> Result<()> {
        let bucket = (step.person >> 58) as usize % BUCKETS;
        let needs_chunk = self.buckets[bucket].last().is_none_or(|c| c.len() == CHUNK);
        if needs_chunk {
            let bytes = CHUNK * size_of::<Step>();
            if self.reservation.try_grow(bytes).is_err() {
                self.spill()?;
                self.reservation
                    .try_grow(bytes)
                    .map_err(|e| Error::MemoryLimit(format!("no room for one chunk of journey steps even after spilling: {e}")))?;
            }
            self.buckets[bucket].push(Vec::with_capacity(CHUNK));
        }
        self.buckets[bucket].last_mut().expect("a chunk").push(step);
        self.steps += 1;
        Ok(())
    }

    fn spill(&mut self) -> Result<()> {
        let mut buf = vec![0u8; CHUNK * STEP_BYTES];
        for (b, chunks) in self.buckets.iter_mut().enumerate() {
            if chunks.is_empty() {
                continue;
            }
            if self.spill_files[b].is_none() {
                let path = self.spill_dir.path().join(format!("p{}-b{b}.steps", self.partition));
                let f = File::create(&path).map_err(|e| Error::MemoryLimit(format!("cannot spill to `{}`: {e}", path.display())))?;
                self.spill_files[b] = Some(BufWriter::with_capacity(1 << 20, f));
            }
            let w = self.spill_files[b].as_mut().expect("created above");
            for chunk in chunks.drain(..) {
                for (i, s) in chunk.iter().enumerate() {
                    s.encode(&mut buf[i * STEP_BYTES..(i + 1) * STEP_BYTES]);
                }
                w.write_all(&buf[..chunk.len() * STEP_BYTES]).map_err(|e| Error::MemoryLimit(format!("cannot spill: {e}")))?;
                self.spilled_steps += chunk.len();
            }
        }
        self.reservation.free();
        Ok(())
    }

    /// Closes the spill files; the buffer is then read bucket by bucket.
    pub(crate) fn seal(&mut self) -> Result<()> {
        for w in self.spill_files.iter_mut().flatten() {
            w.flush().map_err(|e| Error::MemoryLimit(format!("cannot spill: {e}")))?;
        }
        Ok(())
    }

    /// Takes bucket `b`'s steps (memory and spilled), with channels mapped by `channel_map`.
    pub(crate) fn take_bucket(&mut self, b: usize, channel_map: &[u16], out: &mut Vec<Step>) -> Result<()> {
        if self.spill_files[b].take().is_some() {
            let path = self.spill_dir.path().join(format!("p{}-b{b}.steps", self.partition));
            let mut r = BufReader::with_capacity(1 << 20, File::open(&path).map_err(|e| Error::MemoryLimit(format!("cannot read spill: {e}")))?);
            let mut rec = [0u8; STEP_BYTES];
            loop {
                match r.read_exact(&mut rec) {
                    Ok(()) => {
                        let mut s = Step::decode(&rec);
                        s.channel = channel_map[s.channel as usize];
                        out.push(s);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(Error::MemoryLimit(format!("cannot read spill: {e}"))),
                }
            }
            let _ = std::fs::remove_file(&path);
        }
        for chunk in std::mem::take(&mut self.buckets[b]) {
            out.extend(chunk.into_iter().map(|mut s| {
                s.channel = channel_map[s.channel as usize];
                s
            }));
            self.reservation.shrink((CHUNK * size_of::<Step>()).min(self.reservation.size()));
        }
        Ok(())
    }
}

/// Sorts one bucket's steps and feeds each journey's channels to `emit(adv, channels)`.
pub(crate) fn sweep_bucket(steps: &mut [Step], gap: i64, mut emit: impl FnMut(u16, &[usize])) {
    steps.sort_unstable();
    let mut path: Vec<usize> = Vec::new();
    let mut prev: Option<Step> = None;
    for s in steps.iter() {
        let cont = prev.is_some_and(|p| p.adv == s.adv && p.person == s.person && s.time - p.time <= gap);
        if !cont && let Some(p) = prev {
            emit(p.adv, &path);
            path.clear();
        }
        path.push(s.channel as usize);
        prev = Some(*s);
    }
    if let Some(p) = prev {
        emit(p.adv, &path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::GreedyMemoryPool;

    fn step(person: u64, time: i64, channel: u16) -> Step {
        Step { adv: 0, person, time, tid: 0, channel }
    }

    #[test]
    fn journeys_split_on_person_and_gap() {
        let mut steps = vec![step(2, 5, 1), step(1, 0, 0), step(1, 100, 1), step(1, 10, 2), step(2, 6, 0)];
        let mut got = vec![];
        sweep_bucket(&mut steps, 50, |_, p| got.push(p.to_vec()));
        assert_eq!(got, vec![vec![0, 2], vec![1], vec![1, 0]]);
    }

    #[test]
    fn spills_when_the_pool_refuses_and_reads_back_everything() {
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(CHUNK * size_of::<Step>() * 3));
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let mut buf = StepBuffer::new(&pool, dir, 0);
        let n = 50_000u64;
        for i in 0..n {
            buf.push(step(i.wrapping_mul(0x9E37_79B9_7F4A_7C15), i as i64, (i % 3) as u16)).unwrap();
        }
        buf.seal().unwrap();
        assert!(buf.spilled_steps > 0, "the pool holds 3 chunks, far fewer than 50k steps");
        let mut total = 0;
        let mut out = vec![];
        for b in 0..BUCKETS {
            out.clear();
            buf.take_bucket(b, &[7, 8, 9], &mut out).unwrap();
            assert!(out.iter().all(|s| (7..=9).contains(&s.channel)));
            total += out.len();
        }
        assert_eq!(total as u64, n);
        assert!(pool.reserved() <= CHUNK * size_of::<Step>() * 3);
    }
}
