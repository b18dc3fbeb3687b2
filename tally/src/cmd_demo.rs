//! `tally demo`: the main job on embedded defaults.
//!
//! Today it runs the stages that exist: generate a sample world ending today, create the
//! advertiser's API key, load the world through the import path (validation, hashing,
//! pseudonymization, partitioned Parquet), and summarize the store with SQL — including the
//! separation's signal loss on the treated channel. Posting through the HTTP API, attribution,
//! comparisons and the HTML report join this command as their issues (#3, #4, #6) land.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use datafusion::arrow::util::pretty::pretty_format_batches;
use tally_core::schema::Table;
use tally_core::KeyStore;
use tally_ingest::{Context, ImportRequest};
use tally_sample::{Format, WorldConfig};

use crate::config::Settings;

/// Marks a data directory as the demo's own, so a re-run may clear it.
const MARKER: &str = "demo-data";

/// Options of `tally demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Users in the sample world.
    #[arg(long, default_value_t = 2_000)]
    users: usize,
    /// Random seed of the sample world.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

pub(crate) async fn run(settings: &Settings, args: DemoArgs) -> Result<()> {
    let started = Instant::now();
    let store = settings.open_store()?;
    let data = store.root().local_dir().context("the demo runs on a local data directory")?.to_path_buf();
    prepare(&data)?;

    let today = chrono::Utc::now().date_naive();
    let mut config = WorldConfig::ending_on(today, 61);
    config.seed = args.seed;
    config.users = args.users;
    config.end_at = Some(chrono::Utc::now());
    let world = tempfile::Builder::new().prefix("tally-demo-world-").tempdir().context("cannot create a scratch directory")?;
    step(&format!("1/4 generating a sample world: {} users, {} → {}, cutover {} on `{}`", config.users, config.start, today, config.cutover, config.treated_channel));
    let summary = crate::cmd_sample::generate(&config, world.path(), Format::Parquet)?;

    step("2/4 creating the advertiser's API key");
    let keystore_path = settings.keystore_path()?;
    let advertiser: tally_core::AdvertiserId = config.advertisers[0].parse().map_err(anyhow::Error::msg)?;
    let source = format!("px_{advertiser}_web");
    let (_key, record) = KeyStore::create_api_key(&keystore_path, advertiser.clone(), [source.clone()].into())?;
    println!("    {} for `{advertiser}`, source `{source}` (see `tally keys list`)", record.id);

    step("3/4 loading the world (validated, pseudonymized, partitioned Parquet)");
    let keys = KeyStore::open_or_create(&keystore_path)?;
    for table in [Table::Touchpoints, Table::Conversions, Table::Spend, Table::Baseline] {
        let file = world.path().join(format!("{}.parquet", table.name()));
        let request = ImportRequest {
            table,
            files: vec![file],
            format: None,
            strict: true,
            context: Context::for_table(&store, table, keys.pseudonymizer()?, None),
        };
        let report = tally_ingest::import(&store, &request, |_| {}).await?;
        if !report.committed {
            let first = report.rejected.first().map(ToString::to_string).unwrap_or_default();
            bail!("the sample world has {} invalid {} rows (first: {first})", report.rejected_total, table);
        }
        println!("    {:<12} {:>8} rows in {:>3} files", table.name(), report.rows_stored, report.files_written.len());
    }
    let expected = [summary.rows.touchpoints, summary.rows.conversions, summary.rows.spend, summary.rows.baseline];

    step("4/4 summarizing with SQL");
    let ctx = tally_queries::session(&store).await?;
    let stored = count_rows(&ctx).await?;
    if stored != expected {
        bail!("stored row counts {stored:?} differ from the generated {expected:?}");
    }
    let cutover = config.cutover.format("%Y-%m-%d");
    for (title, sql) in [
        ("conversions by origin (server, browser pixel)", "select origin, count(*) as rows, count(distinct event_id) as event_ids, \
          round(sum(value), 2) as value from conversions where not is_test group by origin order by origin".to_owned()),
        (&*format!("touchpoints carrying a hashed email, before/after the {cutover} cutover"), format!(
            "select channel, \
               round(100.0 * avg(case when em is not null then 1 else 0 end) filter (where date < date '{cutover}'), 1) as em_pct_before, \
               round(100.0 * avg(case when em is not null then 1 else 0 end) filter (where date >= date '{cutover}'), 1) as em_pct_after, \
               count(*) as touches from touchpoints group by channel order by channel")),
        ("spend and platform-reported conversions by channel", "select s.channel, round(s.spend, 2) as spend, b.reported_conversions \
          from (select channel, sum(spend) as spend from spend group by channel) s \
          join (select channel, round(sum(conversions), 1) as reported_conversions from baseline group by channel) b using (channel) \
          order by s.channel".to_owned()),
    ] {
        let batches = ctx.sql(&sql).await?.collect().await?;
        println!("\n{title}\n{}", pretty_format_batches(&batches)?);
    }

    println!(
        "\ndone in {:.1}s. Data: {} (hive-partitioned Parquet; try DuckDB on it, or `tally --data {} keys list`).",
        started.elapsed().as_secs_f64(),
        data.display(),
        data.display()
    );
    println!("Not yet in the demo: posting through the HTTP API (#3), attribution (#4), comparisons and the HTML report (#6).");
    Ok(())
}

fn step(what: &str) {
    println!("==> {what}");
}

/// The demo writes only into an empty directory or one it made before (which it clears).
fn prepare(data: &Path) -> Result<()> {
    let marker = data.join("_tally").join(MARKER);
    let has_data = std::fs::read_dir(data)?.flatten().any(|e| e.file_name() != "_tally");
    let has_keys = data.join("_tally/keystore.json").exists();
    if (has_data || has_keys) && !marker.exists() {
        bail!("`{}` already holds data that the demo did not make; pass --data with an empty or new directory", data.display());
    }
    for entry in std::fs::read_dir(data)?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).with_context(|| format!("cannot clear `{}`", path.display()))?;
        }
    }
    std::fs::create_dir_all(data.join("_tally"))?;
    std::fs::write(&marker, "made by `tally demo`; the demo clears this directory when it runs again\n")?;
    Ok(())
}

async fn count_rows(ctx: &datafusion::prelude::SessionContext) -> Result<[u64; 4]> {
    let mut out = [0u64; 4];
    for (i, table) in [Table::Touchpoints, Table::Conversions, Table::Spend, Table::Baseline].iter().enumerate() {
        out[i] = ctx.table(table.name()).await?.count().await? as u64;
    }
    Ok(out)
}
