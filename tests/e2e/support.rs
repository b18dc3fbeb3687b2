//! Helpers: run the binary, build input files, read the store back.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use tally_core::{DataRoot, KeyStore, Policy, Pseudonymizer, Store};

/// A scratch deployment: a data directory and a working directory for inputs.
pub(crate) struct Scratch {
    pub(crate) dir: tempfile::TempDir,
}

impl Scratch {
    pub(crate) fn new() -> Scratch {
        Scratch { dir: tempfile::tempdir().expect("tempdir") }
    }

    pub(crate) fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, contents).expect("write input");
        p
    }

    /// Runs `tally --data <data> ARGS` in the scratch directory.
    pub(crate) fn tally(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_tally"))
            .current_dir(self.dir.path())
            .env_remove("TALLY_DATA")
            .env_remove("TALLY_CONFIG")
            .arg("--data")
            .arg(self.data())
            .args(args)
            .output()
            .expect("run tally");
        out
    }

    /// Runs tally and asserts success; returns stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = self.tally(args);
        assert!(
            out.status.success(),
            "tally {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    pub(crate) fn pseudonymizer(&self) -> Pseudonymizer {
        KeyStore::open_or_create(&self.data().join("_tally/keystore.json")).unwrap().pseudonymizer().unwrap()
    }

    pub(crate) fn store(&self) -> Store {
        Store::open(DataRoot::Local(self.data()), Policy::builtin()).unwrap()
    }

    /// Runs SQL over the store through the shared catalog.
    pub(crate) fn sql(&self, query: &str) -> Vec<RecordBatch> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let ctx = tally_queries::session(&self.store()).await.unwrap();
            ctx.sql(query).await.unwrap().collect().await.unwrap()
        })
    }

    /// The rows of a query as pretty text lines, for readable assertions.
    pub(crate) fn sql_text(&self, query: &str) -> String {
        pretty_format_batches(&self.sql(query)).unwrap().to_string()
    }

    /// Every file under the data directory.
    pub(crate) fn data_files(&self) -> Vec<PathBuf> {
        walk(&self.data())
    }
}

pub(crate) fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() { stack.push(p) } else { out.push(p) }
        }
    }
    out.sort();
    out
}

pub(crate) fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A single integer from a one-cell query.
pub(crate) fn scalar_i64(batches: &[RecordBatch]) -> i64 {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Int64Type;
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

/// A date within the default retention, as RFC 3339 at `hour`.
pub(crate) fn recent(days_ago: i64, hour: u32) -> String {
    let d = chrono::Utc::now().date_naive() - chrono::Duration::days(days_ago);
    format!("{}T{hour:02}:15:00Z", d.format("%Y-%m-%d"))
}
