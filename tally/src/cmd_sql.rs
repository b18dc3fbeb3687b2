//! `tally sql` and `tally report`: SQL over the tenant-bound catalog, printed or exported.
//!
//! Both resolve who is reading ([`ReaderArgs`]), record the query in the audit log *before*
//! running it (no audit entry, no query), and print the result as a table, CSV or JSON, or
//! write it to a Parquet file (`--output`, audited as an export).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::dataframe::DataFrame;
use serde_json::json;
use tally_core::{Action, AuditLog};
use tally_queries::{Reader, SessionOptions, reports};

use crate::config::Settings;

/// Who is reading: an advertiser's key, an advertiser chosen by the operator, or the operator.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ReaderArgs {
    /// The advertiser's API key: the session shows that advertiser's rows only.
    #[arg(long, env = "TALLY_KEY", hide_env_values = true, conflicts_with_all = ["advertiser", "admin"])]
    key: Option<String>,
    /// Operator on the host: read as this advertiser without its key (audited).
    #[arg(long, conflicts_with = "admin")]
    advertiser: Option<tally_core::AdvertiserId>,
    /// Operator on the host: read every advertiser's rows (audited).
    #[arg(long)]
    admin: bool,
}

impl ReaderArgs {
    /// The reader and its audit actor.
    pub(crate) fn resolve(&self, settings: &Settings) -> Result<(Reader, String)> {
        match (&self.key, &self.advertiser, self.admin) {
            (Some(key), _, _) => {
                let keys = settings.keystore()?;
                let Some(principal) = keys.authenticate(key) else {
                    bail!("unauthorized: the API key is unknown or revoked");
                };
                let reader = Reader::Advertiser(principal.advertiser_id);
                let actor = tally_queries::audit_actor(&reader, true);
                Ok((reader, actor))
            }
            (None, Some(advertiser), _) => {
                let reader = Reader::Advertiser(advertiser.clone());
                let actor = tally_queries::audit_actor(&reader, false);
                Ok((reader, actor))
            }
            (None, None, true) => Ok((Reader::Admin, tally_queries::audit_actor(&Reader::Admin, false))),
            (None, None, false) => {
                bail!("say whose rows to read: --key KEY (or TALLY_KEY) for an advertiser, or --admin as the operator")
            }
        }
    }
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// An aligned text table.
    Table,
    /// CSV with a header row.
    Csv,
    /// A JSON array of objects.
    Json,
}

/// Options of `tally sql`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Tables: conversions, touchpoints, spend, baseline, and once `tally attribute` has run, \
conversions_dedup and attributed_conversions. Functions added to DataFusion's: hex_id(identifier), safe_div(a, b). \
Only read-only queries run; every query is recorded in the audit log. See docs/sql.md.")]
pub(crate) struct SqlArgs {
    /// The query (one statement).
    query: String,
    #[command(flatten)]
    reader: ReaderArgs,
    /// How to print the result.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Write the result to this Parquet file instead of printing it (audited as an export).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Fixed query parallelism (default: the machine's cores).
    #[arg(long, hide = true)]
    partitions: Option<usize>,
}

/// Options of `tally report`.
#[derive(Debug, clap::Args)]
pub(crate) struct ReportArgs {
    /// The report to run (see --list).
    #[arg(required_unless_present = "list")]
    name: Option<String>,
    /// List the saved reports and their parameters.
    #[arg(long)]
    list: bool,
    /// A parameter, `name=value`; repeatable.
    #[arg(long = "param", value_parser = parse_param)]
    params: Vec<(String, String)>,
    #[command(flatten)]
    reader: ReaderArgs,
    /// How to print the result.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Write the result to this Parquet file instead of printing it (audited as an export).
    #[arg(long)]
    output: Option<PathBuf>,
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())).ok_or_else(|| format!("`{s}` is not name=value"))
}

pub(crate) async fn run_sql(settings: &Settings, args: SqlArgs) -> Result<()> {
    let (reader, actor) = args.reader.resolve(settings)?;
    let store = settings.open_store()?;
    let options = SessionOptions { target_partitions: args.partitions, inline_reads: true, ..SessionOptions::default() };
    let ctx = tally_queries::session_for(&store, &reader, &options).await?;
    let audit = audit_log(settings)?;
    let tables: Vec<String> = tally_queries::table_names(&ctx).into_iter().filter(|t| mentions(&args.query, t)).collect();
    let detail = tally_core::audit::detail([
        ("via", json!("cli")),
        ("sql_blake3", json!(blake3::hash(args.query.as_bytes()).to_hex().to_string())),
        ("tables", json!(tables)),
    ]);
    audit.append(&actor, Action::Query, detail)?;
    let df = tally_queries::guard::plan(&ctx, &args.query).await?;
    emit(df, args.format, args.output.as_deref(), &audit, &actor).await
}

pub(crate) async fn run_report(settings: &Settings, args: ReportArgs) -> Result<()> {
    if args.list {
        for r in reports::all() {
            println!("{:<28} {}", r.name, r.title);
            for p in &r.params {
                let kind = format!("{:?}", p.kind).to_lowercase();
                println!("    --param {}=…  ({kind}, default {}) {}", p.name, p.default, p.description);
            }
        }
        return Ok(());
    }
    let name = args.name.as_deref().unwrap_or_default();
    let report = reports::find(name)?;
    let given: BTreeMap<String, String> = args.params.into_iter().collect();
    report.bind(&given)?;
    let (reader, actor) = args.reader.resolve(settings)?;
    let store = settings.open_store()?;
    let options = SessionOptions { inline_reads: true, ..SessionOptions::default() };
    let ctx = tally_queries::session_for(&store, &reader, &options).await?;
    for table in report.tables() {
        if !tally_queries::table_names(&ctx).iter().any(|t| t == table) {
            bail!("report `{}` reads `{table}`, which does not exist yet (run `tally attribute` first)", report.name);
        }
    }
    let audit = audit_log(settings)?;
    let detail = tally_core::audit::detail([
        ("via", json!("report")),
        ("report", json!(report.name)),
        ("params", json!(given)),
        ("tables", json!(report.tables())),
    ]);
    audit.append(&actor, Action::Query, detail)?;
    let df = report.plan(&ctx, &given).await?;
    emit(df, args.format, args.output.as_deref(), &audit, &actor).await
}

pub(crate) fn audit_log(settings: &Settings) -> Result<AuditLog> {
    match settings.root.state_dir() {
        Some(dir) => Ok(AuditLog::at(dir.join("audit.log"))),
        None => bail!("an object-store data root needs a local audit log; none is configured"),
    }
}

/// Whether `sql` names `table` as a word (for the audit entry's table list).
fn mentions(sql: &str, table: &str) -> bool {
    let lower = sql.to_ascii_lowercase();
    lower.match_indices(table).any(|(i, _)| {
        let before = lower[..i].chars().next_back();
        let after = lower[i + table.len()..].chars().next();
        let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        !word(before) && !word(after)
    })
}

async fn emit(df: DataFrame, format: Format, output: Option<&std::path::Path>, audit: &AuditLog, actor: &str) -> Result<()> {
    let schema = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await.map_err(tally_queries::Error::from)?;
    if let Some(path) = output {
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let detail = tally_core::audit::detail([("path", json!(path.display().to_string())), ("rows", json!(rows))]);
        audit.append(actor, Action::Export, detail)?;
        write_parquet(path, schema, &batches)?;
        eprintln!("wrote {rows} rows to {}", path.display());
        return Ok(());
    }
    let batches: Vec<RecordBatch> = batches.iter().map(displayable).collect::<Result<_>>()?;
    let mut out = std::io::stdout().lock();
    match format {
        Format::Table => {
            writeln!(out, "{}", arrow::util::pretty::pretty_format_batches(&batches)?)?;
        }
        Format::Csv => {
            let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(&mut out);
            for b in &batches {
                w.write(b)?;
            }
        }
        Format::Json => {
            let mut w = arrow::json::ArrayWriter::new(&mut out);
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            w.write_batches(&refs)?;
            w.finish()?;
            drop(w);
            writeln!(out)?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Identifier columns as hex text (CSV and JSON have no binary type).
fn displayable(batch: &RecordBatch) -> Result<RecordBatch> {
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let hexed: Option<StringArray> = match column.data_type() {
            DataType::FixedSizeBinary(_) => Some(column.as_fixed_size_binary().iter().map(|v| v.map(hex::encode)).collect()),
            DataType::Binary => Some(column.as_binary::<i32>().iter().map(|v| v.map(hex::encode)).collect()),
            DataType::LargeBinary => Some(column.as_binary::<i64>().iter().map(|v| v.map(hex::encode)).collect()),
            _ => None,
        };
        match hexed {
            Some(h) => {
                fields.push(Field::new(field.name(), DataType::Utf8, h.null_count() > 0 || field.is_nullable()));
                columns.push(Arc::new(h));
            }
            None => {
                fields.push(field.as_ref().clone());
                columns.push(column.clone());
            }
        }
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}

fn write_parquet(path: &std::path::Path, schema: arrow::datatypes::SchemaRef, batches: &[RecordBatch]) -> Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("cannot create `{}`", path.display()))?;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(parquet::basic::ZstdLevel::default()))
        .build();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, Some(props))?;
    for b in batches {
        writer.write(b)?;
    }
    writer.close()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_mentions_are_whole_words() {
        assert!(mentions("select * from conversions", "conversions"));
        assert!(!mentions("select * from conversions_dedup", "conversions"));
        assert!(mentions("SELECT 1 FROM Conversions_Dedup d", "conversions_dedup"));
    }
}
