//! One attribution run: scan → dedup → index → sweep → paths → models → derived tables.
//!
//! The stages and what each holds in memory:
//! 1. the window's conversion copies (± 2 days, so dedup sees every copy) are read and
//!    deduplicated ([`crate::dedup`]); the window's distinct conversions stay in memory;
//! 2. their identifiers are indexed and the touches stream past the index
//!    ([`crate::sweep`]), one task per scan partition; only touches on some path are kept,
//!    the others become journey steps ([`crate::journeys`], bounded by the memory pool);
//! 3. pairs are grouped into paths (sorted by conversion, `touch_time`, `touch_id`; a touch
//!    matched by several keys keeps its strongest), the Markov removal effects are solved per
//!    advertiser ([`crate::markov`]), and the models' rows are written in chunks while the
//!    deduplicated conversions are written on another thread;
//! 4. the window's previous output is deleted once the new files are visible
//!    ([`tally_core::Store::replace_files`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::array::{Array, ArrayRef, AsArray, Float64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder, UInt32Array};
use arrow::compute::concat_batches;
use arrow::datatypes::{Float64Type, TimestampMicrosecondType};
use chrono::{Duration, NaiveDate};
use futures::StreamExt;
use tally_core::schema::{DerivedTable, Table};
use tally_core::{PartitionedWriter, Store};
use tracing::instrument;

use crate::dedup::{dedup, to_table_schema};
use crate::error::{Error, Result};
use crate::journeys::{BUCKETS, StepBuffer, sweep_bucket};
use crate::keys::MatchKey;
use crate::markov::{Transitions, path_credits};
use crate::models::{PathTouch, heuristic_credits};
use crate::options::{DAY, Model, Options};
use crate::probabilistic::{self, MatchedTouchInfo, ProbRow, ProbabilisticSummary};
use crate::scan;
use crate::sweep::{ConversionIndex, Interner, MatchedTouch, SweepParams, sweep_partition};

/// Conversions attributed per output chunk.
const CHUNK_CONVERSIONS: usize = 64 * 1024;

/// Where a run is, for progress displays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A stage started.
    Stage(&'static str),
    /// Touches of the window and its lookback scanned so far.
    Touches {
        /// Scanned so far.
        scanned: usize,
    },
}

/// What a run did, for the summary.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// The window attributed (UTC dates, inclusive); `None` when the store has no conversions.
    pub window: Option<(NaiveDate, NaiveDate)>,
    /// Non-test conversion copies (server and browser) of the window's conversions.
    pub copies: usize,
    /// Distinct conversions after dedup.
    pub conversions: usize,
    /// Copies merged into another copy by dedup.
    pub merged: usize,
    /// Distinct conversions seen by the server only, the browser only, both.
    pub sources: BTreeMap<String, usize>,
    /// Conversions by the strongest key their path matched on.
    pub matched_by_key: BTreeMap<&'static str, usize>,
    /// Conversions with an empty path (no deterministic row).
    pub unmatched: usize,
    /// Touches read from the window's lookback range.
    pub touches_scanned: usize,
    /// Touches on at least one path.
    pub path_touches: usize,
    /// Non-converting paths fed to the Markov model.
    pub journeys: usize,
    /// Journey steps that went through spill files.
    pub spilled_steps: usize,
    /// Sum of credit per `(model, channel)`.
    pub credit: BTreeMap<(Model, String), f64>,
    /// Markov removal effect per `(advertiser, channel)`.
    pub removal_effects: BTreeMap<(String, String), f64>,
    /// Rows written per derived table.
    pub rows: BTreeMap<&'static str, usize>,
    /// Files of the window's previous output deleted.
    pub replaced_files: usize,
    /// Seconds per stage.
    pub timings: Vec<(&'static str, f64)>,
    /// The probabilistic cohort step (SPEC 6.5), when it ran.
    pub probabilistic: Option<ProbabilisticSummary>,
}

/// Runs the deterministic attribution for `options` and writes `conversions_dedup` and
/// `attributed_conversions` for the window, replacing what a previous run wrote there.
#[instrument(skip_all)]
pub async fn run(store: &Store, key_id: &str, options: &Options, progress: Arc<dyn Fn(Progress) + Send + Sync>) -> Result<Summary> {
    options.validate()?;
    let mut summary = Summary::default();
    let mut clock = Instant::now();
    let mut lap = |summary: &mut Summary, name: &'static str| {
        let secs = clock.elapsed().as_secs_f64();
        tracing::debug!(stage = name, secs, rss_mib = resident_mib(), "stage done");
        summary.timings.push((name, secs));
        clock = Instant::now();
    };
    let Some((from, to)) = window(store, options).await? else { return Ok(summary) };
    summary.window = Some((from, to));
    let from_us = micros(from);
    let to_end_us = micros(to) + DAY;
    let (ctx, pool) = scan::session(store, options)?;

    tracing::debug!(rss_mib = resident_mib(), "session ready");
    // 1. Dedup.
    progress(Progress::Stage("reading and deduplicating conversions"));
    let df = scan::conversions(&ctx, from - Duration::days(2), to + Duration::days(2)).await?;
    // Batch by batch: a scan's arrays are sized for a full batch, so each is compacted (cast
    // to the table schema and copied to its length) before it is kept.
    let mut stream = df.execute_stream().await?;
    let mut batches = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = to_table_schema(&batch?, &Table::Conversions.schema())?;
        batches.push(concat_batches(&batch.schema(), [&batch])?);
    }
    let copies = concat_batches(&Table::Conversions.schema(), &batches)?;
    drop(batches);
    lap(&mut summary, "read");
    let deduped = dedup(&copies)?;
    drop(copies);
    let in_window: Vec<u32> = {
        let t = deduped.batch.column_by_name("event_time").expect("schema").as_primitive::<TimestampMicrosecondType>();
        (0..t.len()).filter(|&i| (from_us..to_end_us).contains(&t.value(i))).map(|i| i as u32).collect()
    };
    let convs = arrow::compute::take_record_batch(&deduped.batch, &UInt32Array::from(in_window.clone()))?;
    summary.copies = in_window.iter().map(|&i| deduped.copies[i as usize] as usize).sum();
    drop(deduped);
    summary.conversions = convs.num_rows();
    summary.merged = summary.copies - summary.conversions;
    for s in convs.column_by_name("sources").expect("schema").as_string::<i32>().iter().flatten() {
        *summary.sources.entry(s.to_owned()).or_default() += 1;
    }
    lap(&mut summary, "dedup");

    // 2. Index and sweep.
    progress(Progress::Stage("matching touches"));
    let mut advertisers = Interner::default();
    let conv_adv: Vec<u32> =
        convs.column_by_name("advertiser_id").expect("schema").as_string::<i32>().iter().map(|a| advertisers.id(a.unwrap_or_default())).collect();
    if advertisers.names.len() > usize::from(u16::MAX) {
        return Err(Error::Input("more than 65,535 advertisers in one run".into()));
    }
    let index = Arc::new(ConversionIndex::build(&convs, &conv_adv, options.click_window, options.view_window)?);
    let params = Arc::new(SweepParams { click_window: options.click_window, view_window: options.view_window, advertisers: advertisers.clone() });
    let markov = options.models.contains(&Model::Markov);
    let spill_dir = Arc::new(
        tempfile::Builder::new().prefix("tally-attribute-").tempdir().map_err(|e| Error::MemoryLimit(format!("cannot create a spill directory: {e}")))?,
    );
    let streams = scan::touchpoints(&ctx, from_us - options.max_window(), to_end_us).await?.execute_stream_partitioned().await?;
    tracing::debug!(partitions = streams.len(), "touch scan");
    let scanned = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (p, stream) in streams.into_iter().enumerate() {
        let steps = markov.then(|| StepBuffer::new(&pool, spill_dir.clone(), p));
        let (scanned, progress) = (scanned.clone(), progress.clone());
        let tick: Arc<dyn Fn(usize) + Send + Sync> = Arc::new(move |n| {
            let s = scanned.fetch_add(n, Ordering::Relaxed) + n;
            progress(Progress::Touches { scanned: s });
        });
        tasks.push(tokio::spawn(sweep_partition(stream, index.clone(), params.clone(), steps, tick)));
    }
    let mut parts = Vec::with_capacity(tasks.len());
    for t in tasks {
        parts.push(t.await.map_err(|e| Error::Input(format!("sweep task failed: {e}")))??);
    }
    drop(index);
    lap(&mut summary, "match");

    // 3. Paths.
    progress(Progress::Stage("building paths"));
    let mut channels = Interner::default();
    let mut campaigns = Interner::default();
    let mut touches: Vec<MatchedTouch> = Vec::new();
    let mut pairs: Vec<(u32, u32, u8)> = Vec::new();
    let mut step_buffers = Vec::new();
    let mut channel_maps = Vec::new();
    for mut part in parts {
        summary.touches_scanned += part.scanned;
        let ch_map: Vec<u32> = part.channels.names.iter().map(|n| channels.id(n)).collect();
        let ca_map: Vec<u32> = part.campaigns.names.iter().map(|n| campaigns.id(n)).collect();
        let offset = touches.len() as u32;
        touches.extend(part.touches.drain(..).map(|mut t| {
            t.channel = ch_map[t.channel as usize];
            t.campaign = ca_map[t.campaign as usize];
            t
        }));
        pairs.extend(part.pairs.iter().map(|&(c, t, k)| (c, t + offset, k)));
        if let Some(steps) = part.steps.take() {
            summary.spilled_steps += steps.spilled_steps;
            step_buffers.push(Mutex::new(steps));
            channel_maps.push(ch_map.iter().map(|&c| c as u16).collect::<Vec<u16>>());
        }
    }
    pairs.sort_unstable_by(|a, b| {
        let (ta, tb) = (&touches[a.1 as usize], &touches[b.1 as usize]);
        a.0.cmp(&b.0).then(ta.time.cmp(&tb.time)).then_with(|| ta.touch_id.cmp(&tb.touch_id)).then(a.2.cmp(&b.2))
    });
    // Per conversion (before the dedup below keeps only each touch's strongest key): how many
    // touches of its path share a person identifier with it, and for a click-id match on a
    // touch carrying person identifiers whether that touch also shares one. The probabilistic
    // step measures the identity-match failure rate by them.
    let mut id_touches = vec![0u32; convs.num_rows()];
    let mut click_shares: Vec<Option<bool>> = vec![None; convs.num_rows()];
    let mut i = 0;
    while i < pairs.len() {
        let (c, t, _) = pairs[i];
        let (mut click, mut person, mut j) = (false, false, i);
        while j < pairs.len() && pairs[j].0 == c && touches[pairs[j].1 as usize].touch_id == touches[t as usize].touch_id {
            if pairs[j].2 == MatchKey::ClickId as u8 {
                click = true;
            } else {
                person = true;
            }
            j += 1;
        }
        if person {
            id_touches[c as usize] += 1;
        }
        if click && touches[t as usize].identified {
            click_shares[c as usize] = Some(click_shares[c as usize].unwrap_or(false) || person);
        }
        i = j;
    }
    // One entry per (conversion, touch_id): the first, i.e. the strongest key.
    pairs.dedup_by(|b, a| a.0 == b.0 && touches[a.1 as usize].touch_id == touches[b.1 as usize].touch_id);
    let mut offsets = vec![0u32; convs.num_rows() + 1];
    for &(c, _, _) in &pairs {
        offsets[c as usize + 1] += 1;
    }
    for i in 0..convs.num_rows() {
        offsets[i + 1] += offsets[i];
    }
    let mut on_path = vec![false; touches.len()];
    for &(_, t, _) in &pairs {
        on_path[t as usize] = true;
    }
    summary.path_touches = on_path.iter().filter(|&&b| b).count();
    let path = |c: usize| &pairs[offsets[c] as usize..offsets[c + 1] as usize];
    for c in 0..convs.num_rows() {
        match path(c).iter().map(|p| p.2).min() {
            Some(k) => *summary.matched_by_key.entry(MatchKey::from_u8(k).name()).or_default() += 1,
            None => summary.unmatched += 1,
        }
    }
    lap(&mut summary, "paths");

    // Markov: transitions of converting paths, then of the journeys, per advertiser.
    let n_channels = channels.names.len();
    let mut effects: Vec<Vec<f64>> = Vec::new();
    if markov {
        progress(Progress::Stage("solving the markov model"));
        let mut trans: Vec<Transitions> = (0..advertisers.names.len()).map(|_| Transitions::new(n_channels)).collect();
        for c in 0..convs.num_rows() {
            let p = path(c);
            if !p.is_empty() {
                trans[conv_adv[c] as usize].add_path(p.iter().map(|&(_, t, _)| touches[t as usize].channel as usize), true);
            }
        }
        let next = AtomicUsize::new(0);
        let journeys = AtomicUsize::new(0);
        let workers = options.target_partitions.clamp(1, BUCKETS);
        let results: Vec<Result<Vec<Transitions>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    scope.spawn(|| -> Result<Vec<Transitions>> {
                        let mut local: Vec<Transitions> = (0..advertisers.names.len()).map(|_| Transitions::new(n_channels)).collect();
                        let mut steps = Vec::new();
                        loop {
                            let b = next.fetch_add(1, Ordering::Relaxed);
                            if b >= BUCKETS {
                                return Ok(local);
                            }
                            steps.clear();
                            for (buf, map) in step_buffers.iter().zip(&channel_maps) {
                                buf.lock().expect("not poisoned").take_bucket(b, map, &mut steps)?;
                            }
                            sweep_bucket(&mut steps, options.click_window, |adv, p| {
                                journeys.fetch_add(1, Ordering::Relaxed);
                                local[adv as usize].add_path(p.iter().copied(), false);
                            });
                        }
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("markov worker panicked")).collect()
        });
        for r in results {
            for (t, l) in trans.iter_mut().zip(r?) {
                t.merge(&l);
            }
        }
        summary.journeys = journeys.into_inner();
        effects = trans.iter().map(Transitions::removal_effects).collect();
        for (a, e) in effects.iter().enumerate() {
            for (c, v) in e.iter().enumerate() {
                if *v > 0.0 {
                    summary.removal_effects.insert((advertisers.names[a].clone(), channels.names[c].clone()), *v);
                }
            }
        }
        lap(&mut summary, "markov");
    }
    drop(step_buffers);
    drop(spill_dir);

    // Probabilistic cohorts for the unmatched conversions, validated on a holdout.
    let mut prob_rows: Vec<ProbRow> = Vec::new();
    if options.probabilistic {
        progress(Progress::Stage("probabilistic cohort attribution"));
        let mut credits = Vec::new();
        let mut path_touches = Vec::new();
        let last: Vec<Option<MatchedTouchInfo>> = (0..convs.num_rows())
            .map(|c| {
                let p = path(c);
                if p.is_empty() {
                    return None;
                }
                path_touches.clear();
                path_touches.extend(p.iter().map(|&(_, t, _)| {
                    let t = &touches[t as usize];
                    PathTouch { time: t.time, click: t.click, channel: t.channel as usize }
                }));
                heuristic_credits(Model::LastTouch, &path_touches, 0, options.half_life, &mut credits);
                let i = credits.iter().position(|&c| c > 0.0)?;
                let t = &touches[p[i].1 as usize];
                let by_click = p.iter().map(|x| x.2).min() == Some(MatchKey::ClickId as u8);
                // The path's other touches, for the conversions whose cause is not known from a click id.
                let others = if by_click {
                    Vec::new()
                } else {
                    p.iter()
                        .enumerate()
                        .filter(|&(j, _)| j != i)
                        .map(|(_, x)| {
                            let o = &touches[x.1 as usize];
                            (campaigns.names[o.campaign as usize].clone(), o.click, o.time)
                        })
                        .collect()
                };
                Some(MatchedTouchInfo {
                    channel: channels.names[t.channel as usize].clone(),
                    campaign: campaigns.names[t.campaign as usize].clone(),
                    click: t.click,
                    touch_day: t.time.div_euclid(DAY) as i32,
                    touch_time: t.time,
                    by_click,
                    id_touches: id_touches[c],
                    click_shares: click_shares[c],
                    others,
                })
            })
            .collect();
        let params = probabilistic::Params {
            from,
            to,
            click_window_days: options.click_window.div_euclid(DAY) as i32,
            view_window_days: options.view_window.div_euclid(DAY) as i32,
            holdout: options.holdout,
            by_geo: options.cohort_geo,
            by_os: options.cohort_os,
            k_anonymity: u64::from(store.policy().k_anonymity),
            seed: options.seed,
        };
        let (rows, prob) = probabilistic::run(&ctx, &convs, &advertisers.names, &conv_adv, &last, &params).await?;
        prob_rows = rows;
        summary.probabilistic = Some(prob);
        lap(&mut summary, "probabilistic");
    }

    // 4. Write.
    progress(Progress::Stage("writing derived tables"));
    let stamp = store.stamp(key_id);
    let superseded_dedup = store.list_window_files(DerivedTable::ConversionsDedup.name(), from, to).await?;
    let superseded_attr = store.list_window_files(DerivedTable::AttributedConversions.name(), from, to).await?;
    let mut dedup_writer = store.derived_writer(DerivedTable::ConversionsDedup, &stamp);
    let mut attr_writer = store.derived_writer(DerivedTable::AttributedConversions, &stamp);
    let models: Vec<Model> = Model::ALL.into_iter().filter(|m| options.models.contains(m)).collect();
    let ctx_out = OutputContext {
        convs: &convs,
        conv_adv: &conv_adv,
        touches: &touches,
        pairs: &pairs,
        offsets: &offsets,
        channels: &channels,
        campaigns: &campaigns,
        effects: &effects,
        models: &models,
        half_life: options.half_life,
    };
    let (dedup_result, attr_result) = std::thread::scope(|scope| {
        let dedup_handle = scope.spawn(|| dedup_writer.write(&convs).map(|_| convs.num_rows()));
        let attr = write_attributed(&ctx_out, &mut attr_writer, &mut summary.credit);
        (dedup_handle.join().expect("dedup writer panicked"), attr)
    });
    summary.rows.insert(DerivedTable::ConversionsDedup.name(), dedup_result?);
    let prob_written = write_probabilistic(&convs, &prob_rows, &mut attr_writer)?;
    summary.rows.insert(DerivedTable::AttributedConversions.name(), attr_result? + prob_written);
    lap(&mut summary, "encode");
    let written_dedup = dedup_writer.finish().await?;
    let written_attr = attr_writer.finish().await?;
    summary.replaced_files += store.replace_files(&superseded_dedup, &written_dedup).await?;
    summary.replaced_files += store.replace_files(&superseded_attr, &written_attr).await?;
    if let Some(prob) = &summary.probabilistic {
        for (table, batch) in [
            (DerivedTable::ProbabilisticTotals, probabilistic_totals_batch(prob, from, to)?),
            (DerivedTable::ProbabilisticValidation, probabilistic_validation_batch(prob, from, to)?),
        ] {
            let superseded = store.list_window_files(table.name(), from, to).await?;
            let mut writer = store.derived_writer(table, &stamp);
            writer.write(&batch)?;
            let written = writer.finish().await?;
            summary.replaced_files += store.replace_files(&superseded, &written).await?;
            summary.rows.insert(table.name(), batch.num_rows());
        }
    }
    lap(&mut summary, "commit");
    Ok(summary)
}

/// The window: the options' dates, defaulting to the first/last day with stored conversions.
async fn window(store: &Store, options: &Options) -> Result<Option<(NaiveDate, NaiveDate)>> {
    if let (Some(from), Some(to)) = (options.from, options.to) {
        return Ok(Some((from, to)));
    }
    let files = store.list_files(Table::Conversions.name()).await?;
    let dates: Vec<NaiveDate> = files.iter().filter_map(|f| tally_core::paths::PartitionPath::of_file("conversions", f)).map(|p| p.date()).collect();
    let (Some(min), Some(max)) = (dates.iter().min().copied(), dates.iter().max().copied()) else {
        return Ok(options.from.zip(options.to));
    };
    Ok(Some((options.from.unwrap_or(min), options.to.unwrap_or(max))))
}

/// Resident memory of this process, MiB (Linux; 0 elsewhere), for the debug log.
fn resident_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok());
    kb.unwrap_or(0) / 1024
}

fn micros(d: NaiveDate) -> i64 {
    i64::from(tally_core::store::date_to_day(d)) * DAY
}

struct OutputContext<'a> {
    convs: &'a RecordBatch,
    conv_adv: &'a [u32],
    touches: &'a [MatchedTouch],
    pairs: &'a [(u32, u32, u8)],
    offsets: &'a [u32],
    channels: &'a Interner,
    campaigns: &'a Interner,
    effects: &'a [Vec<f64>],
    models: &'a [Model],
    half_life: i64,
}

/// Builds and writes `attributed_conversions`, `CHUNK_CONVERSIONS` conversions at a time.
fn write_attributed(o: &OutputContext<'_>, writer: &mut PartitionedWriter, credit_sums: &mut BTreeMap<(Model, String), f64>) -> Result<usize> {
    let adv = o.convs.column_by_name("advertiser_id").expect("schema").as_string::<i32>();
    let key = o.convs.column_by_name("conversion_key").expect("schema").as_string::<i32>();
    let name = o.convs.column_by_name("event_name").expect("schema").as_string::<i32>();
    let time = o.convs.column_by_name("event_time").expect("schema").as_primitive::<TimestampMicrosecondType>();
    let value = o.convs.column_by_name("value").expect("schema").as_primitive::<Float64Type>();
    let mut sums: Vec<Vec<f64>> = vec![vec![0.0; o.channels.names.len()]; Model::ALL.len()];
    let mut rows = 0;
    let mut path_touches: Vec<PathTouch> = Vec::new();
    let mut credits: Vec<f64> = Vec::new();
    let mut channels: Vec<usize> = Vec::new();
    let n = o.convs.num_rows();
    // Model by model: each file then holds one model's rows after another's, and a report's
    // `model = …` filter skips the other models' pages (page statistics on `model`, see
    // `tally_core::store`).
    for &model in o.models {
        let mut start = 0;
        while start < n {
            let end = (start + CHUNK_CONVERSIONS).min(n);
            let mut b = RowBuilder::default();
            for c in start..end {
                let path = &o.pairs[o.offsets[c] as usize..o.offsets[c + 1] as usize];
                if path.is_empty() {
                    continue;
                }
                path_touches.clear();
                path_touches.extend(path.iter().map(|&(_, t, _)| {
                    let t = &o.touches[t as usize];
                    PathTouch { time: t.time, click: t.click, channel: t.channel as usize }
                }));
                let v = value.is_valid(c).then(|| value.value(c));
                if model == Model::Markov {
                    channels.clear();
                    channels.extend(path_touches.iter().map(|t| t.channel));
                    path_credits(&channels, &o.effects[o.conv_adv[c] as usize], &mut credits);
                } else {
                    heuristic_credits(model, &path_touches, time.value(c), o.half_life, &mut credits);
                }
                for (&(_, t, k), &credit) in path.iter().zip(&credits) {
                    if credit <= 0.0 {
                        continue;
                    }
                    let touch = &o.touches[t as usize];
                    sums[model as usize][touch.channel as usize] += credit;
                    b.push(Row {
                        adv: adv.value(c),
                        key: key.value(c),
                        event_name: name.value(c),
                        event_time: time.value(c),
                        model: model.name(),
                        match_key: MatchKey::from_u8(k).name(),
                        touch_id: &touch.touch_id,
                        channel: &o.channels.names[touch.channel as usize],
                        campaign: &o.campaigns.names[touch.campaign as usize],
                        credit,
                        value: v,
                    });
                }
            }
            rows += b.rows;
            if b.rows > 0 {
                writer.write(&b.finish()?)?;
            }
            start = end;
        }
    }
    for (m, per_channel) in sums.iter().enumerate() {
        for (ch, s) in per_channel.iter().enumerate() {
            if *s != 0.0 {
                *credit_sums.entry((Model::ALL[m], o.channels.names[ch].clone())).or_default() += s;
            }
        }
    }
    Ok(rows)
}

/// Writes the probabilistic rows (`method = 'probabilistic'`, `match_key = 'cohort'`,
/// `model = 'last_touch'`, no touch).
fn write_probabilistic(convs: &RecordBatch, rows: &[ProbRow], writer: &mut PartitionedWriter) -> Result<usize> {
    let adv = convs.column_by_name("advertiser_id").expect("schema").as_string::<i32>();
    let key = convs.column_by_name("conversion_key").expect("schema").as_string::<i32>();
    let name = convs.column_by_name("event_name").expect("schema").as_string::<i32>();
    let time = convs.column_by_name("event_time").expect("schema").as_primitive::<TimestampMicrosecondType>();
    let value = convs.column_by_name("value").expect("schema").as_primitive::<Float64Type>();
    for chunk in rows.chunks(CHUNK_CONVERSIONS) {
        let mut b = RowBuilder::default();
        for r in chunk {
            let c = r.conv as usize;
            b.rows += 1;
            b.adv.append_value(adv.value(c));
            b.key.append_value(key.value(c));
            b.event_name.append_value(name.value(c));
            b.event_time.append_value(time.value(c));
            b.model.append_value(Model::LastTouch.name());
            b.method.append_value("probabilistic");
            b.match_key.append_value("cohort");
            b.touch_id.append_null();
            b.channel.append_value(&r.channel);
            b.campaign.append_value(&r.campaign);
            b.credit.append_value(r.credit);
            b.value_credit.append_option(value.is_valid(c).then(|| value.value(c) * r.credit));
            b.credit_low.append_value(r.low);
            b.credit_high.append_value(r.high);
        }
        writer.write(&b.finish()?)?;
    }
    Ok(rows.len())
}

fn date32(d: NaiveDate) -> i32 {
    tally_core::store::date_to_day(d)
}

/// `probabilistic_totals` rows of a run.
fn probabilistic_totals_batch(p: &ProbabilisticSummary, from: NaiveDate, to: NaiveDate) -> Result<RecordBatch> {
    use arrow::array::{Date32Array, Float64Array, StringArray};
    let t = &p.totals;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(t.iter().map(|r| r.advertiser_id.as_str()))),
        Arc::new(Date32Array::from(vec![date32(from); t.len()])),
        Arc::new(Date32Array::from(vec![date32(to); t.len()])),
        Arc::new(StringArray::from_iter_values(t.iter().map(|r| r.channel.as_str()))),
        Arc::new(StringArray::from_iter_values(t.iter().map(|r| r.campaign_id.as_str()))),
        Arc::new(Float64Array::from_iter_values(t.iter().map(|r| r.credit))),
        Arc::new(Float64Array::from_iter_values(t.iter().map(|r| r.low))),
        Arc::new(Float64Array::from_iter_values(t.iter().map(|r| r.high))),
        Arc::new(Float64Array::from_iter_values(t.iter().map(|r| r.value_credit))),
    ];
    Ok(RecordBatch::try_new(DerivedTable::ProbabilisticTotals.schema(), columns)?)
}

/// `probabilistic_validation` rows of a run.
fn probabilistic_validation_batch(p: &ProbabilisticSummary, from: NaiveDate, to: NaiveDate) -> Result<RecordBatch> {
    use arrow::array::{BooleanArray, Date32Array, Float64Array, Int64Array, StringArray};
    let t = &p.checks;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(t.iter().map(|r| r.advertiser_id.as_str()))),
        Arc::new(Date32Array::from(vec![date32(from); t.len()])),
        Arc::new(Date32Array::from(vec![date32(to); t.len()])),
        Arc::new(StringArray::from_iter_values(t.iter().map(|r| r.channel.as_str()))),
        Arc::new(StringArray::from_iter_values(t.iter().map(|r| r.campaign_id.as_str()))),
        Arc::new(Float64Array::from_iter_values(t.iter().map(|r| r.predicted))),
        Arc::new(Int64Array::from_iter_values(t.iter().map(|r| r.actual))),
        Arc::new(Float64Array::from_iter_values(t.iter().map(|r| r.low))),
        Arc::new(Float64Array::from_iter_values(t.iter().map(|r| r.high))),
        Arc::new(BooleanArray::from(t.iter().map(|r| r.covered()).collect::<Vec<_>>())),
        Arc::new(Int64Array::from(vec![p.holdout as i64; t.len()])),
        Arc::new(Float64Array::from(vec![p.wape; t.len()])),
        Arc::new(Float64Array::from(vec![p.coverage; t.len()])),
    ];
    Ok(RecordBatch::try_new(DerivedTable::ProbabilisticValidation.schema(), columns)?)
}

struct Row<'a> {
    adv: &'a str,
    key: &'a str,
    event_name: &'a str,
    event_time: i64,
    model: &'static str,
    match_key: &'static str,
    touch_id: &'a str,
    channel: &'a str,
    campaign: &'a str,
    credit: f64,
    value: Option<f64>,
}

#[derive(Default)]
struct RowBuilder {
    rows: usize,
    adv: StringBuilder,
    key: StringBuilder,
    event_name: StringBuilder,
    event_time: TimestampMicrosecondBuilder,
    model: StringBuilder,
    method: StringBuilder,
    match_key: StringBuilder,
    touch_id: StringBuilder,
    channel: StringBuilder,
    campaign: StringBuilder,
    credit: Float64Builder,
    value_credit: Float64Builder,
    credit_low: Float64Builder,
    credit_high: Float64Builder,
}

impl RowBuilder {
    fn push(&mut self, r: Row<'_>) {
        self.rows += 1;
        self.adv.append_value(r.adv);
        self.key.append_value(r.key);
        self.event_name.append_value(r.event_name);
        self.event_time.append_value(r.event_time);
        self.model.append_value(r.model);
        self.method.append_value("deterministic");
        self.match_key.append_value(r.match_key);
        self.touch_id.append_value(r.touch_id);
        self.channel.append_value(r.channel);
        self.campaign.append_value(r.campaign);
        self.credit.append_value(r.credit);
        self.value_credit.append_option(r.value.map(|v| v * r.credit));
        // A deterministic credit is certain: its interval is the point.
        self.credit_low.append_value(r.credit);
        self.credit_high.append_value(r.credit);
    }

    fn finish(mut self) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.adv.finish()),
            Arc::new(self.key.finish()),
            Arc::new(self.event_name.finish()),
            Arc::new(self.event_time.finish().with_timezone("UTC")),
            Arc::new(self.model.finish()),
            Arc::new(self.method.finish()),
            Arc::new(self.match_key.finish()),
            Arc::new(self.touch_id.finish()),
            Arc::new(self.channel.finish()),
            Arc::new(self.campaign.finish()),
            Arc::new(self.credit.finish()),
            Arc::new(self.value_credit.finish()),
            Arc::new(self.credit_low.finish()),
            Arc::new(self.credit_high.finish()),
        ];
        Ok(RecordBatch::try_new(DerivedTable::AttributedConversions.schema(), columns)?)
    }
}
