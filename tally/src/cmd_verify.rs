//! `tally verify`: storage integrity — every data file readable, the audit chain intact.

use anyhow::{Result, bail};
use tally_core::audit;

use crate::config::Settings;

/// Options of `tally verify`.
#[derive(Debug, clap::Args)]
pub(crate) struct VerifyArgs {}

pub(crate) async fn run(settings: &Settings, _args: VerifyArgs) -> Result<()> {
    let store = settings.open_store()?;
    let mut problems = Vec::new();
    // Every Parquet file: its footer parses (a torn or foreign file does not).
    let mut files = 0;
    if let Some(root) = settings.root.local_dir() {
        for table in ["conversions", "touchpoints", "spend", "baseline", "conversions_dedup", "attributed_conversions"] {
            for path in store.list_files(table).await? {
                files += 1;
                let full = root.join(path.as_ref());
                let readable = std::fs::File::open(&full)
                    .map_err(|e| e.to_string())
                    .and_then(|f| parquet::file::reader::SerializedFileReader::new(f).map(|_| ()).map_err(|e| e.to_string()));
                if let Err(e) = readable {
                    problems.push(format!("unreadable data file `{}`: {e}", path));
                }
            }
        }
    }
    println!("data files: {files} checked, {} unreadable", problems.len());
    let log = crate::cmd_sql::audit_log(settings)?;
    match audit::verify(log.path()) {
        Ok(v) => println!("audit log: {} entries, chain intact (head {})", v.entries, v.head),
        Err(e) => problems.push(e.to_string()),
    }
    if let Some(first) = problems.first() {
        for p in &problems[1..] {
            eprintln!("tally verify: {p}");
        }
        bail!("{first}");
    }
    Ok(())
}
