//! `tally sample`: generate the seeded sample world (with its ground truth).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, Result};
use chrono::NaiveDate;
use tally_sample::{Format, Summary, WorldConfig};

/// Options of `tally sample`.
#[derive(Debug, clap::Args)]
pub(crate) struct SampleArgs {
    /// Output directory (created; files in it are replaced).
    #[arg(long)]
    out: PathBuf,
    /// File format of the tables.
    #[arg(long, value_enum, default_value = "parquet")]
    format: FormatArg,
    /// Random seed: the same seed and options give byte-identical files.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Users per advertiser (default 2,000, about 45k touchpoints).
    #[arg(long, conflicts_with = "touchpoints")]
    users: Option<usize>,
    /// Size the world for about this many touchpoints in total instead.
    #[arg(long)]
    touchpoints: Option<u64>,
    /// Days in the window.
    #[arg(long, default_value_t = 61)]
    days: u32,
    /// Last day of the window (default: the generator's fixed 2026-08-01 + days window).
    #[arg(long)]
    end: Option<NaiveDate>,
    /// Advertiser ids (repeatable; default `acme`).
    #[arg(long = "advertiser")]
    advertisers: Vec<String>,
    /// Emit plaintext `email`, `phone`, `external_id` instead of SHA-256 hex columns.
    #[arg(long)]
    plaintext: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum FormatArg {
    Csv,
    Jsonl,
    Parquet,
}

impl SampleArgs {
    fn config(&self) -> WorldConfig {
        let mut config = match self.end {
            Some(end) => WorldConfig::ending_on(end, self.days),
            None => WorldConfig { days: self.days, ..WorldConfig::default() },
        };
        config.seed = self.seed;
        config.plaintext_identifiers = self.plaintext;
        if !self.advertisers.is_empty() {
            config.advertisers = self.advertisers.clone();
        }
        if let Some(users) = self.users {
            config.users = users;
        }
        if let Some(n) = self.touchpoints {
            config = config.with_target_touchpoints(n);
        }
        config
    }
}

pub(crate) fn run(args: SampleArgs) -> Result<()> {
    let format = match args.format {
        FormatArg::Csv => Format::Csv,
        FormatArg::Jsonl => Format::Jsonl,
        FormatArg::Parquet => Format::Parquet,
    };
    let config = args.config();
    let started = Instant::now();
    let summary = generate(&config, &args.out, format)?;
    println!(
        "generated {} users, {} touchpoints, {} conversion rows, {} spend and {} baseline rows in {:.1}s into {}",
        summary.users,
        summary.rows.touchpoints,
        summary.rows.conversions,
        summary.rows.spend,
        summary.rows.baseline,
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    println!("ground truth: {}", args.out.join("truth").display());
    Ok(())
}

/// Generates a world, with a one-line error naming the directory.
pub(crate) fn generate(config: &WorldConfig, out: &std::path::Path, format: Format) -> Result<Summary> {
    tally_sample::generate(config, out, format).with_context(|| format!("cannot generate the sample world into `{}`", out.display()))
}
