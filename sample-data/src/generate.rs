//! The streaming driver: simulates users one after another (each on its own RNG
//! derived from the seed, the advertiser and the user index), hands full record batches
//! to a writer thread through a bounded channel, and finishes the files and
//! `truth/world.json` only when everything succeeded. Memory is bounded by a few batches
//! per table plus one Parquet row group per file, whatever the number of users.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use arrow::record_batch::RecordBatch;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::catalog::Catalog;
use crate::ids::mix64;
use crate::ledger::Ledger;
use crate::sim::{Simulator, UserWorld};
use crate::sink::{Sink, write_file_atomically};
use crate::summary::{Summary, TableRows, WorldFile};
use crate::tables::{ConversionRows, DailyRows, TouchRows};
use crate::{Error, Format, Table, WorldConfig, table_schema};

enum Msg {
    Batch(Table, RecordBatch),
    /// Everything was sent: finish and rename the files.
    Done,
}

/// The RNG of one user: independent of every other user and of chunking.
fn user_rng(seed: u64, advertiser: usize, user: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix64(seed ^ mix64(((advertiser as u64) << 40) ^ user)))
}

/// Generates the world described by `config` into `out_dir`: `conversions.<ext>`,
/// `touchpoints.<ext>`, `spend.<ext>`, `baseline.<ext>` in `format`, and the ground truth
/// `truth/conversions.parquet` and `truth/world.json`. Existing files of the same names
/// are replaced; each appears only once complete.
///
/// ```no_run
/// use tally_sample::{Format, WorldConfig, generate};
/// let summary = generate(&WorldConfig::default(), "sample".as_ref(), Format::Parquet)?;
/// println!("{} touchpoints", summary.rows.touchpoints);
/// # Ok::<(), tally_sample::Error>(())
/// ```
pub fn generate(config: &WorldConfig, out_dir: &Path, format: Format) -> Result<Summary, Error> {
    config.validate()?;
    let catalog = Catalog::new(config)?;
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;

    let (tx, rx) = sync_channel::<Msg>(4);
    let mut summary = Summary::default();
    let written = std::thread::scope(|scope| {
        let writer = scope.spawn(|| write_all(rx, config, out_dir, format));
        let produced = produce(config, &catalog, &tx, &mut summary);
        if produced.is_ok() {
            // A send error means the writer stopped; its own error is reported below.
            let _ = tx.send(Msg::Done);
        }
        drop(tx);
        let written = writer
            .join()
            .map_err(|_| Error::Internal("writer thread panicked".into()))?;
        match (produced, written) {
            (_, Err(e)) | (Err(e), _) => Err(e),
            (Ok(()), Ok(rows)) => Ok(rows),
        }
    })?;
    summary.rows = written;

    let world = WorldFile {
        generator: "tally-sample".to_owned(),
        format,
        files: Table::ALL
            .iter()
            .map(|t| (t.name().to_owned(), t.file_name(format)))
            .collect::<BTreeMap<_, _>>(),
        config: config.clone(),
        summary: summary.clone(),
    };
    let mut json = serde_json::to_vec_pretty(&world)?;
    json.push(b'\n');
    write_file_atomically(&out_dir.join("truth").join("world.json"), &json)?;
    Ok(summary)
}

/// The writer thread: one sink per table; files are finished only on `Msg::Done`.
fn write_all(
    rx: Receiver<Msg>,
    config: &WorldConfig,
    out_dir: &Path,
    format: Format,
) -> Result<TableRows, Error> {
    let mut sinks = BTreeMap::new();
    for table in Table::ALL {
        let fmt = if table == Table::Truth {
            Format::Parquet
        } else {
            format
        };
        let schema = table_schema(table, config.plaintext_identifiers);
        let path = out_dir.join(table.file_name(format));
        sinks.insert(table, Sink::create(&path, fmt, schema, config.seed)?);
    }
    let mut done = false;
    for msg in rx {
        match msg {
            Msg::Batch(table, batch) => {
                if let Some(sink) = sinks.get_mut(&table) {
                    sink.write(&batch)?;
                }
            }
            Msg::Done => {
                done = true;
                break;
            }
        }
    }
    if !done {
        // The producer failed: leave no partial files behind.
        for sink in sinks.into_values() {
            sink.abandon();
        }
        return Err(Error::Internal(
            "generation stopped before completion".into(),
        ));
    }
    let mut rows = TableRows::default();
    for (table, sink) in sinks {
        let n = sink.finish()?;
        match table {
            Table::Conversions => rows.conversions = n,
            Table::Touchpoints => rows.touchpoints = n,
            Table::Spend => rows.spend = n,
            Table::Baseline => rows.baseline = n,
            Table::Truth => rows.truth = n,
        }
    }
    Ok(rows)
}

fn send(tx: &SyncSender<Msg>, table: Table, batch: RecordBatch) -> Result<(), Error> {
    tx.send(Msg::Batch(table, batch))
        .map_err(|_| Error::Internal("the writer stopped".into()))
}

/// Simulates every advertiser's users and sends their rows.
fn produce(
    config: &WorldConfig,
    catalog: &Catalog,
    tx: &SyncSender<Msg>,
    summary: &mut Summary,
) -> Result<(), Error> {
    let plaintext = config.plaintext_identifiers;
    let mut conversions = ConversionRows::new(plaintext);
    let mut touches = TouchRows::new(plaintext);
    let mut daily = DailyRows::new();
    let mut world = UserWorld::new();
    let batch_rows = config.batch_rows;
    for channel in &catalog.channels {
        summary
            .conversions_by_channel
            .entry(channel.name.clone())
            .or_default();
    }

    for (adv_index, advertiser) in config.advertisers.iter().enumerate() {
        let source = format!("px_{advertiser}_web");
        let sim = Simulator::new(config, catalog, adv_index)?;
        let mut ledger = Ledger::new(catalog);
        for user in 0..config.users as u64 {
            let mut rng = user_rng(config.seed, adv_index, user);
            sim.simulate(user, &mut rng, &mut world)?;
            tally(catalog, &world, summary);
            ledger.add_user(catalog, &world);
            touches.push_user(advertiser, catalog, &world);
            conversions.push_user(advertiser, &source, catalog, &world);
            if touches.rows() >= batch_rows {
                send(tx, Table::Touchpoints, touches.take()?)?;
            }
            if conversions.rows() >= batch_rows {
                send(tx, Table::Conversions, conversions.take()?)?;
            }
            if conversions.truth_rows() >= batch_rows {
                send(tx, Table::Truth, conversions.take_truth()?)?;
            }
        }
        summary.users += config.users as u64;
        let mut noise =
            ChaCha8Rng::seed_from_u64(mix64(config.seed ^ 0xba5e_11e0 ^ adv_index as u64));
        ledger.emit(advertiser, catalog, &mut noise, &mut daily)?;
    }
    if touches.rows() > 0 {
        send(tx, Table::Touchpoints, touches.take()?)?;
    }
    if conversions.rows() > 0 {
        send(tx, Table::Conversions, conversions.take()?)?;
    }
    if conversions.truth_rows() > 0 {
        send(tx, Table::Truth, conversions.take_truth()?)?;
    }
    send(tx, Table::Spend, daily.take_spend()?)?;
    send(tx, Table::Baseline, daily.take_baseline()?)?;
    Ok(())
}

/// Adds one user's conversions and touches to the summary.
fn tally(cat: &Catalog, world: &UserWorld, s: &mut Summary) {
    for t in &world.touches {
        if t.click {
            s.clicks += 1;
        } else {
            s.impressions += 1;
        }
    }
    for c in &world.conversions {
        match (c.in_server, c.in_browser) {
            (true, true) => s.both += 1,
            (true, false) => s.server_only += 1,
            _ => s.browser_only += 1,
        }
        if !c.has_event_id {
            s.without_event_id += 1;
        }
        if c.is_test {
            s.test_conversions += 1;
            continue;
        }
        if c.ids_lost {
            s.ids_lost += 1;
        }
        let post = c.time >= cat.cutover_us;
        match c.cause {
            Some(i) => {
                s.causal_conversions += 1;
                let k = &cat.campaigns[usize::from(world.touches[i].campaign)];
                s.conversions_by_channel
                    .entry(cat.channels[k.channel].name.clone())
                    .or_default()
                    .add(post);
            }
            None => {
                s.organic_conversions += 1;
                s.organic_by_period.add(post);
            }
        }
    }
}
