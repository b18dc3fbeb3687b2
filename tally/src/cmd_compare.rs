//! `tally compare`: client vs server reconciliation (SPEC section 7) and pre vs post a cutover
//! (SPEC section 8), printed, stored as the SQL tables `client_server` / `prepost`, and
//! optionally rendered as a self-contained HTML report.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use chrono::NaiveDate;
use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;
use serde_json::json;
use tally_compare::{Prepost, ReportInput};
use tally_core::schema::DerivedTable;
use tally_core::{Action, AdvertiserId, Store};
use tally_queries::SessionOptions;

use crate::cmd_sql::{ReaderArgs, audit_log};
use crate::config::Settings;

/// Options of `tally compare`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum CompareCommand {
    /// Server vs browser pixel vs platform-reported conversions, per day × channel × campaign.
    #[command(name = "client-server")]
    ClientServer {
        #[command(flatten)]
        common: Common,
    },
    /// Before vs after a cutover date, with a control channel.
    Prepost {
        /// First day of the "after" period (UTC).
        #[arg(long)]
        cutover: NaiveDate,
        /// The untouched channel to compare against (difference-in-differences).
        #[arg(long)]
        control: String,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct Common {
    #[command(flatten)]
    reader: ReaderArgs,
    /// First UTC day (default: the first day `tally attribute` covered).
    #[arg(long)]
    from: Option<NaiveDate>,
    /// Last UTC day, inclusive (default: the last day `tally attribute` covered).
    #[arg(long)]
    to: Option<NaiveDate>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Also write a self-contained HTML report (charts inline) to FILE.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Format {
    Table,
    Csv,
    Json,
}

/// Runs a comparison as the reader the flags name (SPEC 2: an advertiser's key shows and
/// replaces that advertiser's rows only; `--admin` is the operator over all of them). Each run
/// is recorded in the audit log.
pub(crate) async fn run(settings: &Settings, cmd: CompareCommand) -> Result<()> {
    let store = settings.open_store()?;
    let key_id = settings.keystore()?.pseudonymizer()?.key_id().to_owned();
    let common = match &cmd {
        CompareCommand::ClientServer { common } | CompareCommand::Prepost { common, .. } => common,
    };
    let (reader, actor) = common.reader.resolve(settings)?;
    // Every table, the stored output and the report see the reader's rows only.
    let options = SessionOptions { inline_reads: true, ..SessionOptions::default() };
    let session = || tally_queries::session_for(&store, &reader, &options);
    let ctx = session().await?;
    let (from, to) = window(&ctx, common).await?;
    let what = match &cmd {
        CompareCommand::ClientServer { .. } => "client-server".to_owned(),
        CompareCommand::Prepost { cutover, control, .. } => format!("prepost --cutover {cutover} --control {control}"),
    };
    let detail = tally_core::audit::detail([("compare", json!(what)), ("from", json!(from.to_string())), ("to", json!(to.to_string()))]);
    audit_log(settings)?.append(&actor, Action::Query, detail)?;
    let advertiser = reader.advertiser();
    match &cmd {
        CompareCommand::ClientServer { .. } => {
            let batch = client_server(&store, &key_id, &ctx, from, to, advertiser).await?;
            print(&batch, common.format)?;
            if let Some(path) = &common.html {
                write_report(&session().await?, path, Some((from, to)), Some(&batch), None).await?;
            }
        }
        CompareCommand::Prepost { cutover, control, .. } => {
            let pp = prepost(&store, &key_id, &ctx, from, to, *cutover, control, advertiser).await?;
            print(&pp.rows, common.format)?;
            if let Some(path) = &common.html {
                write_report(&session().await?, path, Some((from, to)), None, Some(&pp)).await?;
            }
        }
    }
    Ok(())
}

async fn window(ctx: &SessionContext, common: &Common) -> Result<(NaiveDate, NaiveDate)> {
    let (lo, hi) = tally_compare::window(ctx).await?;
    let (from, to) = (common.from.unwrap_or(lo), common.to.unwrap_or(hi));
    if to < from {
        anyhow::bail!("`--to` {to} is before `--from` {from}");
    }
    Ok((from, to))
}

/// Computes and stores `client_server` for the window.
/// `advertiser`: the one advertiser `ctx` is bound to (`None` for the operator's session).
pub(crate) async fn client_server(
    store: &Store,
    key_id: &str,
    ctx: &SessionContext,
    from: NaiveDate,
    to: NaiveDate,
    advertiser: Option<&AdvertiserId>,
) -> Result<RecordBatch> {
    let batch = tally_compare::client_server(ctx, from, to).await?;
    tally_compare::write_table(store, key_id, DerivedTable::ClientServer, &batch, from, to, advertiser).await?;
    Ok(batch)
}

/// Computes and stores `prepost` (replacing every earlier comparison of the same cutover).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn prepost(
    store: &Store,
    key_id: &str,
    ctx: &SessionContext,
    from: NaiveDate,
    to: NaiveDate,
    cutover: NaiveDate,
    control: &str,
    advertiser: Option<&AdvertiserId>,
) -> Result<Prepost> {
    let pp = tally_compare::prepost(ctx, from, to, cutover, control).await?;
    tally_compare::write_table(store, key_id, DerivedTable::Prepost, &pp.rows, cutover, cutover, advertiser).await?;
    Ok(pp)
}

/// Writes the HTML report (with the latest probabilistic totals and self-check).
pub(crate) async fn write_report(
    ctx: &SessionContext,
    path: &Path,
    window: Option<(NaiveDate, NaiveDate)>,
    cs: Option<&RecordBatch>,
    pp: Option<&Prepost>,
) -> Result<()> {
    let (totals, checks) = tally_compare::probabilistic(ctx).await?;
    let html = tally_compare::report::html(&ReportInput { window, client_server: cs, prepost: pp, totals, checks });
    std::fs::write(path, html).with_context(|| format!("cannot write the report to `{}`", path.display()))?;
    Ok(())
}

fn print(batch: &RecordBatch, format: Format) -> Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match format {
        Format::Table => writeln!(out, "{}", arrow::util::pretty::pretty_format_batches(std::slice::from_ref(batch))?)?,
        Format::Csv => {
            let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(&mut out);
            w.write(batch)?;
        }
        Format::Json => {
            let mut w = arrow::json::LineDelimitedWriter::new(&mut out);
            w.write(batch)?;
            w.finish()?;
        }
    }
    Ok(())
}
