//! The audit log: every query, export, key change and deletion, hash-chained.
//!
//! One file, `<data>/_tally/audit.log`, one JSON object a line, appended under an exclusive
//! lock and fsynced before the action it records goes ahead (a failed append refuses the
//! action). Each entry carries `seq` (0, 1, …), `prev` (the `hash` of the entry before it; 64
//! zeros for the first) and `hash`: the BLAKE3 of the line's own text without the `hash` field.
//! So editing, removing, inserting or reordering any entry breaks the chain at that entry, and
//! [`verify`] names the first broken one. (Rewriting the whole tail consistently needs the
//! chain's last hash kept elsewhere; `tally verify` prints it so operators can record it.)
//!
//! Entries never hold plaintext identifiers or SQL text: a query is recorded by the BLAKE3 of
//! its text, the tables it names and the actor, so the log can be shared with auditors.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// The `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The text that ends every line: `,"hash":"<64 hex>"}`.
const HASH_SUFFIX_LEN: usize = 2 + 4 + 3 + 64 + 2;

/// Audit log failures.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Reading or writing the log failed.
    #[error("audit log `{}`: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The chain is broken: `entry` (0-based, on line `entry + 1`) is the first bad one.
    #[error("audit log `{}` is broken at entry {entry} (line {}): {reason}", path.display(), entry + 1)]
    Broken {
        /// The file.
        path: PathBuf,
        /// The first bad entry.
        entry: u64,
        /// What is wrong with it.
        reason: String,
    },
}

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A SQL query or a saved report.
    Query,
    /// Rows written out of the store (`--output`).
    Export,
    /// An API key was created.
    KeyCreate,
    /// An API key was revoked.
    KeyRevoke,
    /// Rows were deleted.
    Delete,
}

/// An entry as stored, less its `hash`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the chain, from 0.
    pub seq: u64,
    /// When, RFC 3339 UTC.
    pub at: String,
    /// Who: `advertiser:<id>` (an API key), `operator:<id>` (an operator bound to one
    /// advertiser on the host), `admin` (unbound, on the host).
    pub actor: String,
    /// What.
    pub action: Action,
    /// Particulars (key ids, tables, row counts, the query's hash); never identifiers.
    pub detail: BTreeMap<String, serde_json::Value>,
    /// The hash of the previous entry.
    pub prev: String,
}

/// The audit log of one data root.
#[derive(Debug, Clone)]
pub struct AuditLog {
    path: PathBuf,
}

impl AuditLog {
    /// The log at `path` (created on the first append).
    pub fn at(path: impl Into<PathBuf>) -> AuditLog {
        AuditLog { path: path.into() }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends an entry chained to the last one; returns its hash. Durable when this returns.
    pub fn append(&self, actor: &str, action: Action, detail: BTreeMap<String, serde_json::Value>) -> Result<String, AuditError> {
        let io = |source| AuditError::Io { path: self.path.clone(), source };
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = OpenOptions::new().create(true).read(true).append(true).mode(0o600).open(&self.path).map_err(io)?;
        file.lock().map_err(io)?;
        let (seq, prev) = match last_line(&mut file).map_err(io)? {
            None => (0, GENESIS.to_owned()),
            Some(line) => {
                let (entry, hash) = parse_line(&line).map_err(|reason| AuditError::Broken {
                    path: self.path.clone(),
                    entry: u64::MAX,
                    reason: format!("the last entry is unreadable ({reason}); run `tally verify`"),
                })?;
                (entry.seq + 1, hash)
            }
        };
        let entry = Entry { seq, at: Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true), actor: actor.to_owned(), action, detail, prev };
        let (line, hash) = render(&entry);
        file.write_all(line.as_bytes()).map_err(io)?;
        file.sync_data().map_err(io)?;
        Ok(hash)
    }
}

/// What [`verify`] found in an intact log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Entries checked.
    pub entries: u64,
    /// The last entry's hash (the chain head), or [`GENESIS`] for an empty log.
    pub head: String,
}

/// Checks every entry's hash and link; the first broken entry is the error.
pub fn verify(path: &Path) -> Result<Verified, AuditError> {
    let io = |source| AuditError::Io { path: path.to_path_buf(), source };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Verified { entries: 0, head: GENESIS.to_owned() }),
        Err(e) => return Err(io(e)),
    };
    let mut prev = GENESIS.to_owned();
    let mut n = 0u64;
    for line in BufReader::new(file).lines() {
        let line = line.map_err(io)?;
        let broken = |reason: String| AuditError::Broken { path: path.to_path_buf(), entry: n, reason };
        let (entry, hash) = parse_line(&line).map_err(broken)?;
        if entry.seq != n {
            return Err(broken(format!("`seq` is {}, expected {n} (an entry was removed, inserted or moved)", entry.seq)));
        }
        if entry.prev != prev {
            return Err(broken("`prev` is not the hash of the entry before it (an entry was removed, inserted or moved)".into()));
        }
        prev = hash;
        n += 1;
    }
    Ok(Verified { entries: n, head: prev })
}

/// The line for `entry` (its JSON with `"hash"` appended last, and a newline) and its hash.
fn render(entry: &Entry) -> (String, String) {
    let body = serde_json::to_string(entry).expect("an entry serializes");
    let hash = blake3::hash(body.as_bytes()).to_hex().to_string();
    (format!("{},\"hash\":\"{hash}\"}}\n", &body[..body.len() - 1]), hash)
}

/// Splits a line into its entry and hash, checking the hash covers the rest of the line.
fn parse_line(line: &str) -> Result<(Entry, String), String> {
    let line = line.trim_end_matches('\n');
    if line.len() < HASH_SUFFIX_LEN + 2 || !line.is_char_boundary(line.len() - HASH_SUFFIX_LEN) {
        return Err("not an audit entry".into());
    }
    let (head, suffix) = line.split_at(line.len() - HASH_SUFFIX_LEN);
    let hash = suffix.strip_prefix(",\"hash\":\"").and_then(|s| s.strip_suffix("\"}")).filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    let Some(hash) = hash else { return Err("the entry has no `hash` at its end".into()) };
    let body = format!("{head}}}");
    if blake3::hash(body.as_bytes()).to_hex().as_str() != hash {
        return Err("its content does not match its `hash` (the entry was altered)".into());
    }
    let entry: Entry = serde_json::from_str(&body).map_err(|e| format!("not an audit entry: {e}"))?;
    Ok((entry, hash.to_owned()))
}

/// The last complete line of `file`, read backwards from the end.
fn last_line(file: &mut File) -> std::io::Result<Option<String>> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(None);
    }
    let mut window = 4096u64;
    loop {
        let start = len.saturating_sub(window);
        file.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::with_capacity((len - start) as usize);
        Read::by_ref(file).take(len - start).read_to_end(&mut buf)?;
        let text = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if let Some(i) = text.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(String::from_utf8_lossy(&text[i + 1..]).into_owned()));
        }
        if start == 0 {
            return Ok(Some(String::from_utf8_lossy(text).into_owned()));
        }
        window *= 4;
    }
}

/// A detail map from pairs, for call sites.
pub fn detail<const N: usize>(pairs: [(&str, serde_json::Value); N]) -> BTreeMap<String, serde_json::Value> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn log_with(n: usize) -> (tempfile::TempDir, AuditLog) {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::at(dir.path().join("_tally/audit.log"));
        for i in 0..n {
            log.append("admin", Action::Query, detail([("i", json!(i)), ("tables", json!(["conversions"]))])).unwrap();
        }
        (dir, log)
    }

    #[test]
    fn chain_links_and_verifies() {
        let (_dir, log) = log_with(3);
        let v = verify(log.path()).unwrap();
        assert_eq!(v.entries, 3);
        let text = fs::read_to_string(log.path()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let (first, h0) = parse_line(lines[0]).unwrap();
        assert_eq!(first.prev, GENESIS);
        assert_eq!(parse_line(lines[1]).unwrap().0.prev, h0);
        assert_eq!(parse_line(lines[2]).unwrap().1, v.head);
        assert!(lines.iter().all(|l| l.ends_with("\"}")));
    }

    #[test]
    fn an_edited_entry_is_named() {
        let (_dir, log) = log_with(4);
        let text = fs::read_to_string(log.path()).unwrap();
        fs::write(log.path(), text.replacen("\"i\":2", "\"i\":7", 1)).unwrap();
        match verify(log.path()) {
            Err(AuditError::Broken { entry, reason, .. }) => {
                assert_eq!(entry, 2);
                assert!(reason.contains("altered"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_removed_entry_is_named() {
        let (_dir, log) = log_with(4);
        let text = fs::read_to_string(log.path()).unwrap();
        let kept: Vec<&str> = text.lines().enumerate().filter(|(i, _)| *i != 1).map(|(_, l)| l).collect();
        fs::write(log.path(), kept.join("\n") + "\n").unwrap();
        assert!(matches!(verify(log.path()), Err(AuditError::Broken { entry: 1, .. })));
    }

    #[test]
    fn appends_continue_the_chain_and_an_absent_log_is_empty() {
        let (dir, log) = log_with(2);
        let again = AuditLog::at(log.path());
        again.append("advertiser:acme", Action::KeyRevoke, detail([("key_id", json!("ak_1"))])).unwrap();
        assert_eq!(verify(log.path()).unwrap().entries, 3);
        assert_eq!(verify(&dir.path().join("none.log")).unwrap(), Verified { entries: 0, head: GENESIS.to_owned() });
    }
}
