//! SQL-level tests: every `.slt` file under `queries/tests/slt/` runs against the sample world
//! through an `acme`-bound session (the same one `tally sql --key` gets).
//!
//! Besides SQL, a record may run a saved report: `report NAME [param=value …]`.
//! Floats are printed rounded to 6 decimals, NULL as `NULL`, the empty string as `(empty)`.
//! Regenerate expected results after a deliberate change with
//! `TALLY_SLT_COMPLETE=1 cargo test -p tally-queries --test it slt`, then review the diff.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Float32Type, Float64Type};
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::prelude::SessionContext;
use sqllogictest::{DBOutput, DefaultColumnType};
use tally_queries::{Reader, SessionOptions, reports};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SltError(String);

struct TallyDb {
    ctx: SessionContext,
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for TallyDb {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let err = |e: tally_queries::Error| SltError(e.to_string());
        let sql = sql.trim();
        let df = if let Some(rest) = sql.strip_prefix("report ") {
            let mut words = rest.split_whitespace();
            let name = words.next().unwrap_or_default();
            let params: BTreeMap<String, String> = words
                .map(|w| w.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| SltError(format!("bad param {w}"))))
                .collect::<Result<_, _>>()?;
            reports::find(name).map_err(err)?.plan(&self.ctx, &params).await.map_err(err)?
        } else {
            tally_queries::guard::plan(&self.ctx, sql).await.map_err(err)?
        };
        let schema = df.schema().as_arrow().clone();
        let batches = df.collect().await.map_err(|e| SltError(e.to_string()))?;
        let types = schema.fields().iter().map(|f| column_type(f.data_type())).collect();
        let mut rows = Vec::new();
        for batch in &batches {
            rows.extend(render(batch)?);
        }
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "tally"
    }
}

fn column_type(t: &DataType) -> DefaultColumnType {
    match t {
        t if t.is_integer() => DefaultColumnType::Integer,
        t if t.is_floating() || matches!(t, DataType::Decimal128(..)) => DefaultColumnType::FloatingPoint,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => DefaultColumnType::Text,
        _ => DefaultColumnType::Any,
    }
}

fn render(batch: &RecordBatch) -> Result<Vec<Vec<String>>, SltError> {
    (0..batch.num_rows())
        .map(|r| {
            batch
                .columns()
                .iter()
                .map(|c| {
                    if c.is_null(r) {
                        return Ok("NULL".to_owned());
                    }
                    let v = match c.data_type() {
                        DataType::Float64 => float(c.as_primitive::<Float64Type>().value(r)),
                        DataType::Float32 => float(f64::from(c.as_primitive::<Float32Type>().value(r))),
                        _ => array_value_to_string(c, r).map_err(|e| SltError(e.to_string()))?,
                    };
                    Ok(if v.is_empty() { "(empty)".to_owned() } else { v })
                })
                .collect()
        })
        .collect()
}

fn float(v: f64) -> String {
    let rounded = (v * 1e6).round() / 1e6;
    let text = format!("{rounded:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" { "0".to_owned() } else { text.to_owned() }
}

fn slt_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "slt")).collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_files_pass() {
    let world = crate::world::world().await;
    let complete = std::env::var_os("TALLY_SLT_COMPLETE").is_some();
    let files = slt_files();
    assert!(files.len() >= 3, "{files:?}");
    let mut failures = Vec::new();
    for file in &files {
        let store = world.store.clone();
        let mut runner = sqllogictest::Runner::new(move || {
            let store = store.clone();
            async move {
                let reader = Reader::Advertiser("acme".parse().unwrap());
                let options = SessionOptions { target_partitions: Some(2), ..SessionOptions::default() };
                let ctx = tally_queries::session_for(&store, &reader, &options).await.map_err(|e| SltError(e.to_string()))?;
                Ok::<_, SltError>(TallyDb { ctx })
            }
        });
        if complete {
            runner
                .update_test_file(file, " ", sqllogictest::default_validator, sqllogictest::default_normalizer, sqllogictest::strict_column_validator)
                .await
                .unwrap();
        } else if let Err(e) = runner.run_file_async(file).await {
            failures.push(format!("{}: {}", file.display(), e.display(false)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn floats_are_rounded_for_stable_output() {
    assert_eq!(float(1.0), "1");
    assert_eq!(float(0.1 + 0.2), "0.3");
    assert_eq!(float(-0.0000001), "0");
    assert_eq!(float(2.5), "2.5");
}
