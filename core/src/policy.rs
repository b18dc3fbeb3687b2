//! Policy as code: what may be stored where, for how long, and how identifiers are treated.
//!
//! A policy is a TOML document (versioned in the deployment's repository, passed with
//! `--config`, or the built-in default for the embedded mode). Every command checks its data
//! root against [`Policy::check_storage`] before touching it; every Parquet file records the
//! policy's [`Policy::sha256`] so one can tell which policy a file was written under.
//!
//! ```toml
//! jurisdiction = "US"
//! plaintext_identifiers = "hash"     # or "reject"
//! k_anonymity = 50
//!
//! [[storage]]
//! local = "/srv/tally"               # a directory (and everything under it); "*" = any local path
//!
//! [[storage]]
//! s3 = "s3://acme-tally/prod"        # bucket (and prefix)
//! region = "us-east-2"               # must be a US region
//!
//! [retention]                         # days, per table
//! conversions = 400
//! touchpoints = 400
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ident::PlaintextMode;
use crate::paths::{DataRoot, lexically_normal};

/// The embedded default: US, any local directory, no object store, identifiers hashed on arrival.
pub const BUILTIN_POLICY: &str = r#"
jurisdiction = "US"
plaintext_identifiers = "hash"
k_anonymity = 50

# The embedded mode runs on the deployer's own US host: any local directory.
[[storage]]
local = "*"

[retention]
conversions = 400
touchpoints = 400
spend = 1100
baseline = 1100
"#;

/// Why a policy is invalid or refuses something. Messages are one line, for the CLI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The TOML does not parse or has unknown keys.
    #[error("invalid policy: {0}")]
    Invalid(String),
    /// The storage location is not in the policy's allow-list.
    #[error("storage `{root}` is not allowed by the policy (allowed: {allowed})")]
    StorageRefused {
        /// The refused data root.
        root: String,
        /// The allow-list, for the message.
        allowed: String,
    },
}

/// One allowed storage location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageRule {
    /// A local directory (itself and everything under it), or `*` for any local directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<String>,
    /// An object store location `s3://bucket[/prefix]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<String>,
    /// The bucket's region, required with `s3`; must be a US region (`us-*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// A parsed, validated policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Must be `US`.
    pub jurisdiction: String,
    /// What to do with plaintext in a hash-required identifier field.
    pub plaintext_identifiers: PlaintextMode,
    /// Smallest cohort that may be shown.
    pub k_anonymity: u32,
    /// Allowed storage locations.
    pub storage: Vec<StorageRule>,
    /// Retention in days per table name.
    #[serde(default)]
    pub retention: BTreeMap<String, u32>,
}

impl Policy {
    /// The built-in default policy.
    pub fn builtin() -> Policy {
        Policy::from_toml(BUILTIN_POLICY).expect("the built-in policy is valid")
    }

    /// Parses and validates a policy document.
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        let p: Policy = toml::from_str(text).map_err(|e| PolicyError::Invalid(e.message().to_owned()))?;
        p.validate()?;
        Ok(p)
    }

    /// Reads a policy file.
    pub fn from_file(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| PolicyError::Invalid(format!("cannot read `{}`: {e}", path.display())))?;
        Policy::from_toml(&text)
    }

    fn validate(&self) -> Result<(), PolicyError> {
        let bad = |m: String| Err(PolicyError::Invalid(m));
        if self.jurisdiction != "US" {
            return bad(format!("jurisdiction `{}` is not supported: Tally keeps data in the US (`US`)", self.jurisdiction));
        }
        if self.storage.is_empty() {
            return bad("no storage location is allowed (add a [[storage]] entry)".into());
        }
        for rule in &self.storage {
            match (&rule.local, &rule.s3, &rule.region) {
                (Some(local), None, None) => {
                    if local != "*" && !Path::new(local).is_absolute() {
                        return bad(format!("storage local `{local}` must be an absolute path or `*`"));
                    }
                }
                (None, Some(url), Some(region)) => {
                    if !url.starts_with("s3://") || url.len() <= "s3://".len() {
                        return bad(format!("storage s3 `{url}` must look like s3://bucket[/prefix]"));
                    }
                    if !region.starts_with("us-") {
                        return bad(format!("bucket `{url}` is in region `{region}`, outside the US jurisdiction"));
                    }
                }
                (None, Some(url), None) => return bad(format!("bucket `{url}` needs a `region`")),
                _ => return bad("each [[storage]] entry needs either `local`, or `s3` with `region`".into()),
            }
        }
        Ok(())
    }

    /// Refuses a data root that no storage rule allows.
    pub fn check_storage(&self, root: &DataRoot) -> Result<(), PolicyError> {
        let allowed = self.storage.iter().any(|rule| match (root, &rule.local, &rule.s3) {
            (DataRoot::Local(dir), Some(local), _) => local == "*" || within(dir, Path::new(local)),
            (DataRoot::Url { scheme, bucket, prefix }, _, Some(url)) => {
                let target = format!("{scheme}://{bucket}/{prefix}");
                let url = url.trim_end_matches('/');
                target.trim_end_matches('/') == url || target.starts_with(&format!("{url}/"))
            }
            _ => false,
        });
        if allowed {
            Ok(())
        } else {
            Err(PolicyError::StorageRefused { root: root.to_string(), allowed: self.describe_storage() })
        }
    }

    fn describe_storage(&self) -> String {
        let list: Vec<String> = self
            .storage
            .iter()
            .map(|r| match (&r.local, &r.s3, &r.region) {
                (Some(l), ..) => l.clone(),
                (_, Some(s), Some(region)) => format!("{s} ({region})"),
                _ => String::new(),
            })
            .collect();
        list.join(", ")
    }

    /// SHA-256 of the policy's canonical JSON form: equal policies hash equal, whatever their layout.
    pub fn sha256(&self) -> String {
        let canonical = serde_json::to_vec(self).expect("a policy serializes");
        hex::encode(Sha256::digest(canonical))
    }

    /// Retention for `table` in days, if the policy sets one.
    pub fn retention_days(&self, table: &str) -> Option<u32> {
        self.retention.get(table).copied()
    }
}

/// Whether `dir` is `base` or below it, after resolving symlinks of whatever part exists, so a
/// symlink inside an allowed directory cannot lead outside it.
fn within(dir: &Path, base: &Path) -> bool {
    let dir = resolve_existing_prefix(&lexically_normal(dir));
    let base = resolve_existing_prefix(&lexically_normal(base));
    dir.starts_with(&base)
}

fn resolve_existing_prefix(p: &Path) -> PathBuf {
    let mut existing = p.to_path_buf();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.file_name().map(|n| n.to_owned()), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return p.to_path_buf(),
        }
    }
    let mut out = existing.canonicalize().unwrap_or(existing);
    for name in rest.into_iter().rev() {
        out.push(name);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_policy_is_valid_and_local() {
        let p = Policy::builtin();
        assert_eq!(p.jurisdiction, "US");
        assert_eq!(p.plaintext_identifiers, PlaintextMode::Hash);
        assert!(p.check_storage(&DataRoot::parse("/anywhere/at/all").unwrap()).is_ok());
        assert!(p.check_storage(&DataRoot::parse("s3://bucket/x").unwrap()).is_err());
        assert_eq!(p.retention_days("conversions"), Some(400));
    }

    #[test]
    fn storage_allow_list() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = dir.path().join("ok");
        let p = Policy::from_toml(&format!(
            "jurisdiction = \"US\"\nplaintext_identifiers = \"reject\"\nk_anonymity = 10\n\
             [[storage]]\nlocal = \"{}\"\n[[storage]]\ns3 = \"s3://acme/prod\"\nregion = \"us-east-2\"\n",
            allowed.display()
        ))
        .unwrap();
        assert!(p.check_storage(&DataRoot::Local(allowed.clone())).is_ok());
        assert!(p.check_storage(&DataRoot::Local(allowed.join("sub/dir"))).is_ok());
        let err = p.check_storage(&DataRoot::Local(dir.path().join("okay-not"))).unwrap_err();
        assert!(err.to_string().contains("is not allowed by the policy"), "{err}");
        assert!(p.check_storage(&DataRoot::Local(allowed.join("../elsewhere"))).is_err());
        assert!(p.check_storage(&DataRoot::parse("s3://acme/prod/x").unwrap()).is_ok());
        assert!(p.check_storage(&DataRoot::parse("s3://acme/production").unwrap()).is_err());
        assert!(p.check_storage(&DataRoot::parse("s3://other/prod").unwrap()).is_err());

        // A symlink inside the allowed directory that points outside it is refused.
        std::fs::create_dir_all(&allowed).unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, allowed.join("link")).unwrap();
        assert!(p.check_storage(&DataRoot::Local(allowed.join("link/data"))).is_err());
    }

    #[test]
    fn invalid_policies_are_refused() {
        let base = "plaintext_identifiers = \"hash\"\nk_anonymity = 5\n";
        for (doc, needle) in [
            (format!("jurisdiction = \"EU\"\n{base}[[storage]]\nlocal = \"*\"\n"), "not supported"),
            (format!("jurisdiction = \"US\"\n{base}[[storage]]\ns3 = \"s3://b\"\nregion = \"eu-west-1\"\n"), "outside the US"),
            (format!("jurisdiction = \"US\"\n{base}[[storage]]\ns3 = \"s3://b\"\n"), "needs a `region`"),
            (format!("jurisdiction = \"US\"\n{base}[[storage]]\nlocal = \"relative\"\n"), "absolute"),
            (format!("jurisdiction = \"US\"\n{base}storage = []\n"), "no storage"),
            (format!("jurisdiction = \"US\"\n{base}[[storage]]\nlocal = \"*\"\nsurprise = 1\n"), "unknown field"),
        ] {
            let err = Policy::from_toml(&doc).unwrap_err().to_string();
            assert!(err.contains(needle), "{err} lacks {needle}");
        }
    }

    #[test]
    fn hash_is_canonical() {
        let a = Policy::builtin();
        let b = Policy::from_toml(&BUILTIN_POLICY.replace("k_anonymity = 50", "k_anonymity    =   50")).unwrap();
        assert_eq!(a.sha256(), b.sha256());
        let c = Policy::from_toml(&BUILTIN_POLICY.replace("k_anonymity = 50", "k_anonymity = 51")).unwrap();
        assert_ne!(a.sha256(), c.sha256());
    }
}
