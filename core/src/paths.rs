//! Storage paths, as newtypes with one constructor each.
//!
//! Nobody else builds a storage path with `format!`: a table directory, a partition and a data
//! file are built here, from validated parts ([`AdvertiserId`] can never contain `/` or `..`),
//! so the hive layout `<table>/advertiser_id=<id>/date=<YYYY-MM-DD>/<file>.parquet` is the same
//! for every writer and every reader. Tally's own state (key store, audit log, WAL) lives under
//! `_tally/` in a local data root; the leading underscore keeps it out of table scans.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::NaiveDate;
use object_store::path::Path as ObjectPath;

use crate::schema::Table;

/// An advertiser (tenant) id: 1–64 characters of `[a-z0-9_-]`, safe in a path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AdvertiserId(String);

impl AdvertiserId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for AdvertiserId {
    type Err = String;
    fn from_str(s: &str) -> Result<AdvertiserId, String> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(AdvertiserId(s.to_owned()))
        } else {
            Err(format!("invalid advertiser id `{}`: use 1-64 characters of a-z, 0-9, `_` and `-`", s.escape_debug()))
        }
    }
}

impl TryFrom<String> for AdvertiserId {
    type Error = String;
    fn try_from(s: String) -> Result<AdvertiserId, String> {
        s.parse()
    }
}

impl From<AdvertiserId> for String {
    fn from(a: AdvertiserId) -> String {
        a.0
    }
}

impl fmt::Display for AdvertiserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a deployment's data lives: a local directory (the embedded default) or an object store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataRoot {
    /// A local directory, absolute.
    Local(PathBuf),
    /// An object store location such as `s3://bucket/prefix`.
    Url {
        /// The scheme, e.g. `s3`.
        scheme: String,
        /// The bucket.
        bucket: String,
        /// The key prefix inside the bucket (may be empty).
        prefix: String,
    },
}

impl DataRoot {
    /// Parses `--data`: a `scheme://bucket/prefix` URL, or a local path (made absolute).
    pub fn parse(s: &str) -> Result<DataRoot, String> {
        if let Some((scheme, rest)) = s.split_once("://") {
            if scheme == "file" {
                return DataRoot::local(Path::new(rest));
            }
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(format!("`{s}` names no bucket"));
            }
            return Ok(DataRoot::Url {
                scheme: scheme.to_owned(),
                bucket: bucket.to_owned(),
                prefix: prefix.trim_matches('/').to_owned(),
            });
        }
        DataRoot::local(Path::new(s))
    }

    /// A local root; relative paths are resolved against the current directory.
    pub fn local(path: &Path) -> Result<DataRoot, String> {
        let abs = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir().map_err(|e| format!("cannot read the current directory: {e}"))?.join(path)
        };
        Ok(DataRoot::Local(lexically_normal(&abs)))
    }

    /// The local directory, if this is a local root.
    pub fn local_dir(&self) -> Option<&Path> {
        match self {
            DataRoot::Local(p) => Some(p),
            DataRoot::Url { .. } => None,
        }
    }

    /// Tally's own state directory (`<root>/_tally`); only local roots have one.
    pub fn state_dir(&self) -> Option<PathBuf> {
        self.local_dir().map(|d| d.join("_tally"))
    }
}

impl fmt::Display for DataRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataRoot::Local(p) => write!(f, "{}", p.display()),
            DataRoot::Url { scheme, bucket, prefix } => write!(f, "{scheme}://{bucket}/{prefix}"),
        }
    }
}

/// `a/./b/../c` → `a/c`, without touching the filesystem (the directory may not exist yet).
pub(crate) fn lexically_normal(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// A table's directory, relative to the data root.
pub fn table_dir(table: &str) -> ObjectPath {
    ObjectPath::from(table)
}

/// One hive partition of a table: `<table>/advertiser_id=<id>/date=<YYYY-MM-DD>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionPath {
    table: &'static str,
    advertiser: AdvertiserId,
    date: NaiveDate,
}

impl PartitionPath {
    /// The partition of `table` for `advertiser` on `date`.
    pub fn new(table: Table, advertiser: AdvertiserId, date: NaiveDate) -> PartitionPath {
        PartitionPath { table: table.name(), advertiser, date }
    }

    /// The partition of derived `table` for `advertiser` on `date`.
    pub fn derived(table: crate::schema::DerivedTable, advertiser: AdvertiserId, date: NaiveDate) -> PartitionPath {
        PartitionPath { table: table.name(), advertiser, date }
    }

    /// The partition a data file path (relative to the data root) lies in, if it is one.
    pub fn of_file(table: &'static str, path: &ObjectPath) -> Option<PartitionPath> {
        let mut parts = path.parts();
        if parts.next()?.as_ref() != table {
            return None;
        }
        let advertiser = parts.next()?.as_ref().strip_prefix("advertiser_id=")?.parse().ok()?;
        let date = NaiveDate::parse_from_str(parts.next()?.as_ref().strip_prefix("date=")?, "%Y-%m-%d").ok()?;
        Some(PartitionPath { table, advertiser, date })
    }

    /// The advertiser.
    pub fn advertiser(&self) -> &AdvertiserId {
        &self.advertiser
    }

    /// The day.
    pub fn date(&self) -> NaiveDate {
        self.date
    }

    /// The partition directory relative to the data root.
    pub fn dir(&self) -> ObjectPath {
        ObjectPath::from(format!("{}/advertiser_id={}/date={}", self.table, self.advertiser, self.date.format("%Y-%m-%d")))
    }

    /// A data file with a name the caller derives deterministically (`<stem>.parquet`), so
    /// that writing the same input again replaces the file instead of adding one.
    /// `stem` must be 1–128 characters of `[A-Za-z0-9_-]`.
    pub fn named_file(&self, stem: &str) -> Option<DataFilePath> {
        let ok = !stem.is_empty() && stem.len() <= 128 && stem.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        ok.then(|| DataFilePath { dir: self.dir(), name: format!("{stem}.parquet") })
    }

    /// A new, unique data file in this partition.
    pub fn new_file(&self) -> DataFilePath {
        DataFilePath { dir: self.dir(), name: unique_file_name() }
    }
}

/// Whether a file named `name` is a data file readers pick up: `*.parquet`, so never the
/// in-progress copies ([`DataFilePath::temp_name`]).
pub fn is_data_file(name: &str) -> bool {
    name.ends_with(".parquet")
}

/// A Parquet data file: `<partition>/part-<micros>-<pid>-<seq>-<random>.parquet`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFilePath {
    dir: ObjectPath,
    name: String,
}

impl DataFilePath {
    /// The final path, relative to the data root.
    pub fn path(&self) -> ObjectPath {
        self.dir.clone().join(self.name.as_str())
    }

    /// The partition directory.
    pub fn dir(&self) -> &ObjectPath {
        &self.dir
    }

    /// The file name of the in-progress copy, which no reader picks up (`*.parquet` only).
    pub fn temp_name(&self) -> String {
        format!(".{}.tmp", self.name)
    }

    /// The final file name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Names sort by creation time and never collide across processes or hosts.
fn unique_file_name() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let micros = chrono::Utc::now().timestamp_micros();
    let mut rnd = [0u8; 6];
    // A failing OS RNG leaves zeros; pid + sequence still keep names unique on this host.
    let _ = getrandom::fill(&mut rnd);
    format!(
        "part-{micros:016}-{}-{:06}-{}.parquet",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed),
        hex::encode(rnd)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertiser_ids_are_path_safe() {
        assert!("acme".parse::<AdvertiserId>().is_ok());
        assert!("acme_2-x".parse::<AdvertiserId>().is_ok());
        for bad in ["", "../etc", "a/b", "Acme", "a b", "a=b", &"x".repeat(65)] {
            assert!(bad.parse::<AdvertiserId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn partition_layout_is_hive() {
        let p = PartitionPath::new(Table::Conversions, "acme".parse().unwrap(), NaiveDate::from_ymd_opt(2026, 8, 1).unwrap());
        assert_eq!(p.dir().as_ref(), "conversions/advertiser_id=acme/date=2026-08-01");
        let f = p.new_file();
        assert!(f.path().as_ref().starts_with("conversions/advertiser_id=acme/date=2026-08-01/part-"));
        assert!(is_data_file(f.path().as_ref()));
        assert!(!is_data_file(&f.temp_name()));
        assert_ne!(p.new_file(), p.new_file());
    }

    #[test]
    fn data_roots() {
        assert_eq!(
            DataRoot::parse("s3://bkt/a/b/").unwrap(),
            DataRoot::Url { scheme: "s3".into(), bucket: "bkt".into(), prefix: "a/b".into() }
        );
        assert_eq!(DataRoot::parse("/x/./y/../z").unwrap(), DataRoot::Local("/x/z".into()));
        assert!(DataRoot::parse("s3:///nobucket").is_err());
        assert!(DataRoot::parse("rel").unwrap().local_dir().unwrap().is_absolute());
    }
}
