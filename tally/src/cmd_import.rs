//! `tally import KIND FILE…`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use tally_core::AdvertiserId;
use tally_core::schema::Table;
use tally_ingest::{Context, Format, ImportReport, ImportRequest};

use crate::config::Settings;

/// Options of `tally import`.
#[derive(Debug, clap::Args)]
pub(crate) struct ImportArgs {
    /// The table to load: conversions, touchpoints, spend or baseline.
    #[arg(value_parser = parse_table)]
    kind: Table,
    /// Input files (.csv with a header line, .jsonl, .parquet).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Input format, if the file names don't say.
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Store nothing if any row is bad (default: store the good rows, report the bad ones).
    #[arg(long)]
    strict: bool,
    /// Advertiser for rows without an `advertiser_id` column; rows naming another are rejected.
    #[arg(long)]
    advertiser: Option<AdvertiserId>,
    /// Print at most this many rejected rows (all are counted).
    #[arg(long, default_value_t = 20)]
    show_rejected: usize,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum FormatArg {
    Csv,
    Jsonl,
    Parquet,
}

fn parse_table(s: &str) -> Result<Table, String> {
    s.parse()
}

pub(crate) async fn run(settings: &Settings, args: ImportArgs) -> Result<()> {
    let store = settings.open_store()?;
    let keys = settings.keystore()?;
    let context = Context::for_table(&store, args.kind, keys.pseudonymizer()?, args.advertiser.clone());
    let request = ImportRequest {
        table: args.kind,
        files: args.files.clone(),
        format: args.format.map(|f| match f {
            FormatArg::Csv => Format::Csv,
            FormatArg::Jsonl => Format::Jsonl,
            FormatArg::Parquet => Format::Parquet,
        }),
        strict: args.strict,
        context,
    };
    let bar = progress_bar();
    let started = Instant::now();
    let report = tally_ingest::import(&store, &request, |p| {
        bar.set_position((p.fraction * 1000.0) as u64);
        bar.set_message(format!("{} rows · {}", p.rows, p.file.display()));
    })
    .await;
    bar.finish_and_clear();
    let report = report?;
    print_rejections(&report, args.show_rejected);
    let secs = started.elapsed().as_secs_f64();
    if !report.committed {
        bail!(
            "--strict: {} of {} rows rejected; nothing was stored",
            report.rejected_total,
            report.rows_read
        );
    }
    println!(
        "imported {} of {} rows into `{}` ({} files) in {:.2}s ({:.0} rows/s); {} rejected; {} identifiers hashed on arrival",
        report.rows_stored,
        report.rows_read,
        args.kind,
        report.files_written.len(),
        secs,
        report.rows_read as f64 / secs.max(1e-9),
        report.rejected_total,
        report.hashed_on_arrival
    );
    Ok(())
}

fn print_rejections(report: &ImportReport, show: usize) {
    for r in report.rejected.iter().take(show) {
        eprintln!("rejected: {r}");
    }
    if report.rejected_total as usize > show.min(report.rejected.len()) {
        eprintln!("rejected: … and {} more", report.rejected_total as usize - show.min(report.rejected.len()));
    }
}

/// A progress bar on a terminal; hidden otherwise.
pub(crate) fn progress_bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(1000);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {percent:>3}% {msg}")
            .expect("valid template"),
    );
    bar
}
