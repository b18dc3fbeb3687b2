//! The match: every eligible `(conversion, touch)` pair that shares an identifier, found in
//! one pass over the touches — no range join.
//!
//! The window's conversions are exploded to `(identifier key, event_time)` entries, sorted
//! once by `(key, time)`, and indexed by key (a hash map to each key's run of entries). Each
//! touch, as it streams out of the Parquet scan (one task per scan partition), is exploded the
//! same way; for each of its keys the run is binary-searched for the first conversion at or
//! after `touch_time` and walked forward while the conversion is within the touch's window
//! (click or view). Cost: one hash probe per touch identifier plus the pairs found. A touch
//! that matched nothing becomes a journey step for the Markov model.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, FixedSizeBinaryArray, RecordBatch, StringArray, StringViewArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int32Type, TimestampMicrosecondType};
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::journeys::{Step, StepBuffer, tid_prefix};
use crate::keys::{KeyMap, MatchKey, click_key, digest_key};
use crate::options::DAY;

/// Strings interned to small dense ids (advertisers, channels, campaigns).
#[derive(Debug, Default, Clone)]
pub(crate) struct Interner {
    pub(crate) names: Vec<String>,
    map: std::collections::HashMap<String, u32>,
}

impl Interner {
    pub(crate) fn id(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.map.get(s) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(s.to_owned());
        self.map.insert(s.to_owned(), i);
        i
    }
    pub(crate) fn get(&self, s: &str) -> Option<u32> {
        self.map.get(s).copied()
    }

    /// The id of every row of a text column (NULL: the id of ""), looked up once per distinct
    /// value of the column rather than once per row.
    pub(crate) fn column_ids(&mut self, column: &ArrayRef) -> Result<Vec<u32>> {
        let dict = cast(column, &DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)))?;
        let dict = dict.as_dictionary::<Int32Type>();
        let ids: Vec<u32> = dict.values().as_string::<i32>().iter().map(|v| self.id(v.unwrap_or(""))).collect();
        let null = self.id("");
        Ok(dict.keys().iter().map(|k| k.map_or(null, |k| ids[k as usize])).collect())
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    time: i64,
    conv: u32,
    adv: u32,
}

/// The window's conversions by identifier key.
pub(crate) struct ConversionIndex {
    entries: Vec<Entry>,
    runs: KeyMap<u128, (u32, u32)>,
    /// Day filters (one for clicks, one for impressions): a bit per `(key, UTC day)` for every
    /// day on which a touch with that key could still reach one of the key's conversions
    /// within the window. Most touch identifiers belong to people who did not convert, or
    /// converted on other days; the filter answers "no" for them with one cache line,
    /// without touching the map. No false negatives.
    click_filter: DayFilter,
    view_filter: DayFilter,
}

/// A bit set over hashed `(key, day)` pairs.
struct DayFilter {
    bits: Vec<u64>,
    mask: u64,
}

impl DayFilter {
    /// Sets the bits of each `(key, day)` with `day` in `[day(time − window), day(time)]`.
    fn build(keys: &[(u128, Entry)], window: i64) -> DayFilter {
        let days_per_key = (window.div_euclid(DAY) + 2) as usize;
        let bits = (keys.len() * days_per_key * 8).next_power_of_two().clamp(1 << 16, 1 << 30);
        let mut f = DayFilter { bits: vec![0u64; bits / 64], mask: bits as u64 - 1 };
        for (k, e) in keys {
            for day in (e.time - window).div_euclid(DAY)..=e.time.div_euclid(DAY) {
                let b = f.bit(*k, day);
                f.bits[(b / 64) as usize] |= 1 << (b % 64);
            }
        }
        f
    }

    #[inline]
    fn bit(&self, key: u128, day: i64) -> u64 {
        let h = ((key >> 64) as u64) ^ (day as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h.wrapping_mul(0xD6E8_FEB8_6659_FD93).rotate_left(29) & self.mask
    }

    #[inline]
    fn test(&self, bit: u64) -> bool {
        self.bits[(bit / 64) as usize] & (1 << (bit % 64)) != 0
    }
}

impl ConversionIndex {
    /// Indexes the conversions of `batch` (the `conversions_dedup` schema); `adv[i]` is the
    /// advertiser index of row `i`.
    pub(crate) fn build(batch: &RecordBatch, adv: &[u32], click_window: i64, view_window: i64) -> Result<ConversionIndex> {
        let time = batch.column_by_name("event_time").expect("schema").as_primitive::<TimestampMicrosecondType>();
        let mut keyed: Vec<(u128, Entry)> = Vec::with_capacity(batch.num_rows() * 3);
        for kind in MatchKey::ALL {
            let c = batch.column_by_name(kind.name()).expect("schema");
            for i in 0..batch.num_rows() {
                if c.is_null(i) {
                    continue;
                }
                let key = match kind {
                    MatchKey::ClickId => click_key(c.as_string::<i32>().value(i)),
                    _ => digest_key(kind, c.as_fixed_size_binary().value(i)),
                };
                keyed.push((key, Entry { time: time.value(i), conv: i as u32, adv: adv[i] }));
            }
        }
        keyed.sort_unstable_by_key(|(k, e)| (*k, e.time, e.conv));
        let mut runs: KeyMap<u128, (u32, u32)> = KeyMap::default();
        runs.reserve(keyed.len());
        let mut start = 0;
        for i in 1..=keyed.len() {
            if i == keyed.len() || keyed[i].0 != keyed[start].0 {
                runs.insert(keyed[start].0, (start as u32, (i - start) as u32));
                start = i;
            }
        }
        let click_filter = DayFilter::build(&keyed, click_window);
        let view_filter = DayFilter::build(&keyed, view_window);
        Ok(ConversionIndex { entries: keyed.into_iter().map(|(_, e)| e).collect(), runs, click_filter, view_filter })
    }

    /// Looks up every probe and appends `(row, conversion, kind)` to `hits` for each
    /// conversion of the probe's advertiser under its key with
    /// `time <= event_time <= time + window`, in probe order (then run order).
    ///
    /// Done in passes over the whole batch rather than probe by probe: the filter bits are
    /// located in one loop and tested in another, whose iterations are independent loads the
    /// CPU overlaps. At 50M touches the filters (tens of MB) no longer fit in the cache and
    /// each test is a miss; interleaved with the rest of a touch's work they were waited for
    /// one at a time.
    fn probe_all(&self, probes: &[Probe], scratch: &mut ProbeScratch, hits: &mut Vec<(u32, u32, u8)>) {
        let ProbeScratch { slots, passed } = scratch;
        slots.clear();
        slots.extend(probes.iter().map(|p| {
            let filter = if p.click { &self.click_filter } else { &self.view_filter };
            (p.click, filter.bit(p.key, p.time.div_euclid(DAY)))
        }));
        passed.clear();
        passed.resize(probes.len(), 0);
        let mut n = 0;
        for (j, &(click, bit)) in slots.iter().enumerate() {
            let filter = if click { &self.click_filter } else { &self.view_filter };
            passed[n] = j as u32;
            n += filter.test(bit) as usize;
        }
        for &j in &passed[..n] {
            let p = &probes[j as usize];
            let Some(&(start, len)) = self.runs.get(&p.key) else { continue };
            let run = &self.entries[start as usize..(start + len) as usize];
            let first = run.partition_point(|e| e.time < p.time);
            for e in &run[first..] {
                if e.time - p.time > p.window {
                    break;
                }
                if e.adv == p.adv {
                    hits.push((p.row, e.conv, p.kind));
                }
            }
        }
    }
}

/// One identifier of one touch, to be looked up in the index.
#[derive(Debug, Clone, Copy)]
struct Probe {
    key: u128,
    time: i64,
    window: i64,
    row: u32,
    adv: u32,
    kind: u8,
    click: bool,
}

/// Buffers `probe_all` reuses from batch to batch.
#[derive(Default)]
struct ProbeScratch {
    slots: Vec<(bool, u64)>,
    passed: Vec<u32>,
}

/// A touch that is on at least one conversion's path.
#[derive(Debug, Clone)]
pub(crate) struct MatchedTouch {
    pub(crate) touch_id: String,
    pub(crate) time: i64,
    pub(crate) click: bool,
    /// Partition-local channel id (made global when the partitions are merged).
    pub(crate) channel: u32,
    /// Partition-local campaign id (made global when the partitions are merged).
    pub(crate) campaign: u32,
    /// The touch carries a person identifier (em, ph or external_id).
    pub(crate) identified: bool,
}

/// What one scan partition found.
pub(crate) struct SweepPart {
    pub(crate) touches: Vec<MatchedTouch>,
    /// `(conversion, index into touches, match key)`.
    pub(crate) pairs: Vec<(u32, u32, u8)>,
    pub(crate) channels: Interner,
    pub(crate) campaigns: Interner,
    pub(crate) steps: Option<StepBuffer>,
    pub(crate) scanned: usize,
}

/// Fixed parameters of the sweep.
pub(crate) struct SweepParams {
    pub(crate) click_window: i64,
    pub(crate) view_window: i64,
    pub(crate) advertisers: Interner,
}

/// A text column as the scan delivers it (`Utf8` or `Utf8View`), read in place, not cast.
#[derive(Clone, Copy)]
enum Text<'a> {
    Utf8(&'a StringArray),
    View(&'a StringViewArray),
}

impl<'a> Text<'a> {
    fn of(batch: &'a RecordBatch, name: &str) -> Result<Text<'a>> {
        let c = column(batch, name)?;
        match c.data_type() {
            DataType::Utf8 => Ok(Text::Utf8(c.as_string::<i32>())),
            DataType::Utf8View => Ok(Text::View(c.as_string_view())),
            other => Err(Error::Input(format!("touchpoints column `{name}` is {other}, not text"))),
        }
    }

    /// Row `i` (NULL reads as "").
    #[inline]
    fn value(self, i: usize) -> &'a str {
        match self {
            Text::Utf8(a) => a.value(i),
            Text::View(a) => a.value(i),
        }
    }

    #[inline]
    fn is_valid(self, i: usize) -> bool {
        match self {
            Text::Utf8(a) => a.is_valid(i),
            Text::View(a) => a.is_valid(i),
        }
    }
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch.column_by_name(name).ok_or_else(|| Error::Input(format!("touchpoints column `{name}` missing")))
}

/// Runs one scan partition through the index.
pub(crate) async fn sweep_partition(
    mut stream: SendableRecordBatchStream,
    index: Arc<ConversionIndex>,
    params: Arc<SweepParams>,
    mut steps: Option<StepBuffer>,
    progress: Arc<dyn Fn(usize) + Send + Sync>,
) -> Result<SweepPart> {
    let started = std::time::Instant::now();
    let mut part = SweepPart { touches: Vec::new(), pairs: Vec::new(), channels: Interner::default(), campaigns: Interner::default(), steps: None, scanned: 0 };
    let mut scratch = BatchScratch::default();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        sweep_batch(&batch, &index, &params, &mut part, &mut scratch, steps.as_mut())?;
        part.scanned += batch.num_rows();
        progress(batch.num_rows());
    }
    tracing::debug!(rows = part.scanned, secs = started.elapsed().as_secs_f64(), "sweep partition done");
    if let Some(s) = steps.as_mut() {
        s.seal()?;
    }
    part.steps = steps;
    Ok(part)
}

fn sweep_batch(
    batch: &RecordBatch,
    index: &ConversionIndex,
    params: &SweepParams,
    part: &mut SweepPart,
    scratch: &mut BatchScratch,
    mut steps: Option<&mut StepBuffer>,
) -> Result<()> {
    let adv = Text::of(batch, "advertiser_id")?;
    let touch_id = Text::of(batch, "touch_id")?;
    let channel = Text::of(batch, "channel")?;
    let campaign = Text::of(batch, "campaign_id")?;
    let touch_type = Text::of(batch, "touch_type")?;
    let click_id = Text::of(batch, "click_id")?;
    let time = column(batch, "touch_time")?.as_primitive::<TimestampMicrosecondType>();
    let digests: [&FixedSizeBinaryArray; 3] =
        [column(batch, "em")?.as_fixed_size_binary(), column(batch, "ph")?.as_fixed_size_binary(), column(batch, "external_id")?.as_fixed_size_binary()];
    let digest_kinds = [MatchKey::Em, MatchKey::Ph, MatchKey::ExternalId];

    // Pass 1: the identifiers of every touch whose advertiser has conversions in the window
    // (touches of other advertisers can neither match nor change any credit).
    let BatchScratch { probes, probe, hits, rows } = scratch;
    probes.clear();
    rows.clear();
    let mut last_adv: Option<(&str, Option<u32>)> = None;
    for i in 0..batch.num_rows() {
        let a = adv.value(i);
        let a = match last_adv {
            Some((name, id)) if name == a => id,
            _ => {
                let id = params.advertisers.get(a);
                last_adv = Some((a, id));
                id
            }
        };
        let Some(a) = a else { continue };
        let t = time.value(i);
        let click = touch_type.value(i) == "click";
        let window = if click { params.click_window } else { params.view_window };
        let mut push = |key: u128, kind: MatchKey| {
            probes.push(Probe { key, time: t, window, row: i as u32, adv: a, kind: kind as u8, click });
            key
        };
        let clicked = click_id.is_valid(i).then(|| push(click_key(click_id.value(i)), MatchKey::ClickId));
        let mut person = None;
        for (arr, kind) in digests.iter().zip(digest_kinds) {
            if arr.is_valid(i) {
                let key = push(digest_key(kind, arr.value(i)), kind);
                person.get_or_insert(key);
            }
        }
        // Person: em, then ph, then external_id, then click_id.
        rows.push(Touch { row: i as u32, adv: a, click, identified: person.is_some(), person: person.or(clicked) });
    }

    // Pass 2: every lookup of the batch.
    hits.clear();
    index.probe_all(probes, probe, hits);

    // Pass 3: per touch, its pairs, or its journey step.
    let mut last_channel: Option<(&str, u32)> = None;
    let mut next = 0;
    for &Touch { row, adv: a, click, identified, person } in rows.iter() {
        let end = next + hits[next..].iter().take_while(|h| h.0 == row).count();
        let i = row as usize;
        if end > next {
            let ti = part.touches.len() as u32;
            let ch = part.channels.id(channel.value(i));
            let ca = part.campaigns.id(campaign.value(i));
            part.touches.push(MatchedTouch { touch_id: touch_id.value(i).to_owned(), time: time.value(i), click, channel: ch, campaign: ca, identified });
            part.pairs.extend(hits[next..end].iter().map(|&(_, conv, k)| (conv, ti, k)));
            next = end;
        } else if let Some(steps) = steps.as_deref_mut() {
            let Some(person) = person else { continue };
            let name = channel.value(i);
            let ch = match last_channel {
                Some((n, id)) if n == name => id,
                _ => {
                    let id = part.channels.id(name);
                    last_channel = Some((name, id));
                    id
                }
            };
            let ch = u16::try_from(ch).map_err(|_| Error::Input("more than 65,535 channels".into()))?;
            let adv16 = u16::try_from(a).map_err(|_| Error::Input("more than 65,535 advertisers".into()))?;
            steps.push(Step { adv: adv16, person: person as u64, time: time.value(i), tid: tid_prefix(touch_id.value(i)), channel: ch })?;
        }
    }
    debug_assert_eq!(next, hits.len());
    Ok(())
}

/// Buffers `sweep_batch` reuses from batch to batch.
#[derive(Default)]
pub(crate) struct BatchScratch {
    probes: Vec<Probe>,
    probe: ProbeScratch,
    /// `(row, conversion, kind)` of every hit, in row order.
    hits: Vec<(u32, u32, u8)>,
    /// The touches of advertisers with conversions, in row order.
    rows: Vec<Touch>,
}

/// What pass 1 of `sweep_batch` learned of a touch, for pass 3.
#[derive(Debug, Clone, Copy)]
struct Touch {
    row: u32,
    adv: u32,
    click: bool,
    /// It carries a person identifier (em, ph or external_id).
    identified: bool,
    /// The key that names its person on a journey, if any.
    person: Option<u128>,
}
