//! The key store: the pseudonymization key(s) and the advertisers' API keys.
//!
//! One JSON file, `<data>/_tally/keystore.json`, mode 0600 in a 0700 directory, created on first
//! use. API keys are stored only as BLAKE3 hashes: the plaintext key is printed once by
//! `tally keys create` and never kept. Creation is atomic and create-if-absent (two processes
//! starting at once agree on one pseudonymization key); updates take an exclusive file lock and
//! replace the file by rename, so a reader never sees half a key store.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ident::Pseudonymizer;
use crate::paths::AdvertiserId;

/// Key store failures.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// Reading or writing the file failed.
    #[error("key store `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a key store.
    #[error("key store `{path}` is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No such API key id.
    #[error("no API key with id `{0}`")]
    UnknownKey(String),
    /// A source (pixel id) already belongs to another advertiser.
    #[error("source `{source_id}` already belongs to advertiser `{owner}`")]
    SourceTaken {
        /// The source.
        source_id: String,
        /// Its owner.
        owner: String,
    },
}

/// A pseudonymization key.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PseudoKey {
    id: String,
    /// 32 bytes, hex.
    key: String,
    created_at: DateTime<Utc>,
}

/// An advertiser API key, as stored (hash only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// Short public id, for listing and revoking.
    pub id: String,
    /// BLAKE3 of the key, hex.
    pub hash: String,
    /// The advertiser the key acts for.
    pub advertiser_id: AdvertiserId,
    /// Sources (pixel ids) the key may write to. A source belongs to one advertiser.
    pub sources: BTreeSet<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Contents {
    version: u32,
    active_pseudonymization_key: String,
    pseudonymization_keys: Vec<PseudoKey>,
    api_keys: Vec<ApiKeyRecord>,
}

/// The loaded key store.
#[derive(Debug, Clone)]
pub struct KeyStore {
    path: PathBuf,
    contents: Contents,
}

/// What an API key resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The key's public id.
    pub key_id: String,
    /// The advertiser.
    pub advertiser_id: AdvertiserId,
    /// Sources it may write to.
    pub sources: BTreeSet<String>,
}

impl KeyStore {
    /// Opens the key store at `path`, creating it (with a fresh pseudonymization key) if absent.
    pub fn open_or_create(path: &Path) -> Result<KeyStore, KeyStoreError> {
        let io = |source| KeyStoreError::Io { path: path.to_path_buf(), source };
        if !path.exists() {
            let dir = path.parent().unwrap_or(Path::new("."));
            fs::create_dir_all(dir).map_err(io)?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io)?;
            let contents = Contents {
                version: 1,
                active_pseudonymization_key: "k1".into(),
                pseudonymization_keys: vec![PseudoKey {
                    id: "k1".into(),
                    key: hex::encode(random_bytes::<32>().map_err(io)?),
                    created_at: Utc::now(),
                }],
                api_keys: vec![],
            };
            let tmp = write_temp(path, &contents).map_err(io)?;
            // hard_link fails if the file exists: the first creator wins, everyone reads its key.
            let linked = fs::hard_link(&tmp, path);
            let _ = fs::remove_file(&tmp);
            match linked {
                Ok(()) => sync_dir(dir).map_err(io)?,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(e)),
            }
        }
        KeyStore::load(path)
    }

    fn load(path: &Path) -> Result<KeyStore, KeyStoreError> {
        let io = |source| KeyStoreError::Io { path: path.to_path_buf(), source };
        let mode = fs::metadata(path).map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(KeyStoreError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("permissions {:o} let others read it (expected 600)", mode & 0o777),
            });
        }
        let bytes = fs::read(path).map_err(io)?;
        let contents: Contents = serde_json::from_slice(&bytes)
            .map_err(|e| KeyStoreError::Corrupt { path: path.to_path_buf(), reason: e.to_string() })?;
        let store = KeyStore { path: path.to_path_buf(), contents };
        store.pseudonymizer()?; // validates the active key
        Ok(store)
    }

    /// The pseudonymizer for the active key.
    pub fn pseudonymizer(&self) -> Result<Pseudonymizer, KeyStoreError> {
        let c = &self.contents;
        let corrupt = |reason: &str| KeyStoreError::Corrupt { path: self.path.clone(), reason: reason.into() };
        let k = c
            .pseudonymization_keys
            .iter()
            .find(|k| k.id == c.active_pseudonymization_key)
            .ok_or_else(|| corrupt("the active pseudonymization key is missing"))?;
        let mut key = [0u8; 32];
        hex::decode_to_slice(&k.key, &mut key).map_err(|_| corrupt("a pseudonymization key is not 32 hex bytes"))?;
        Ok(Pseudonymizer::new(k.id.clone(), key))
    }

    /// Creates an API key for `advertiser` allowed to write to `sources`; returns the plaintext
    /// key (shown once) and its record.
    pub fn create_api_key(
        path: &Path,
        advertiser: AdvertiserId,
        sources: BTreeSet<String>,
    ) -> Result<(String, ApiKeyRecord), KeyStoreError> {
        KeyStore::update(path, |c| {
            for s in &sources {
                if let Some(other) = c.api_keys.iter().find(|k| k.sources.contains(s) && k.advertiser_id != advertiser) {
                    return Err(KeyStoreError::SourceTaken { source_id: s.clone(), owner: other.advertiser_id.to_string() });
                }
            }
            let io = |source| KeyStoreError::Io { path: path.to_path_buf(), source };
            let secret = format!("tally_{}", hex::encode(random_bytes::<24>().map_err(io)?));
            let hash = blake3::hash(secret.as_bytes()).to_hex().to_string();
            let record = ApiKeyRecord {
                id: format!("ak_{}", &hash[..12]),
                hash,
                advertiser_id: advertiser.clone(),
                sources: sources.clone(),
                created_at: Utc::now(),
                revoked_at: None,
            };
            c.api_keys.push(record.clone());
            Ok((secret, record))
        })
    }

    /// Revokes the API key with public id `id`.
    pub fn revoke_api_key(path: &Path, id: &str) -> Result<ApiKeyRecord, KeyStoreError> {
        KeyStore::update(path, |c| {
            let k = c.api_keys.iter_mut().find(|k| k.id == id).ok_or_else(|| KeyStoreError::UnknownKey(id.into()))?;
            if k.revoked_at.is_none() {
                k.revoked_at = Some(Utc::now());
            }
            Ok(k.clone())
        })
    }

    /// All API keys (hashes only).
    pub fn api_keys(&self) -> &[ApiKeyRecord] {
        &self.contents.api_keys
    }

    /// Resolves a presented API key; `None` if unknown or revoked.
    pub fn authenticate(&self, presented: &str) -> Option<Principal> {
        let hash = blake3::hash(presented.trim().as_bytes()).to_hex();
        self.contents
            .api_keys
            .iter()
            .find(|k| k.revoked_at.is_none() && k.hash == hash.as_str())
            .map(|k| Principal { key_id: k.id.clone(), advertiser_id: k.advertiser_id.clone(), sources: k.sources.clone() })
    }

    /// The advertiser owning `source` (pixel id), if any live key names it.
    pub fn source_owner(&self, source: &str) -> Option<&AdvertiserId> {
        self.contents
            .api_keys
            .iter()
            .find(|k| k.revoked_at.is_none() && k.sources.contains(source))
            .map(|k| &k.advertiser_id)
    }

    /// Read-modify-write under an exclusive lock; the file is replaced by rename.
    fn update<T>(path: &Path, f: impl FnOnce(&mut Contents) -> Result<T, KeyStoreError>) -> Result<T, KeyStoreError> {
        let io = |source| KeyStoreError::Io { path: path.to_path_buf(), source };
        KeyStore::open_or_create(path)?;
        let lock_path = path.with_extension("lock");
        let lock = OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(&lock_path).map_err(io)?;
        lock.lock().map_err(io)?;
        let mut store = KeyStore::load(path)?;
        let out = f(&mut store.contents)?;
        let tmp = write_temp(path, &store.contents).map_err(io)?;
        fs::rename(&tmp, path).map_err(io)?;
        sync_dir(path.parent().unwrap_or(Path::new("."))).map_err(io)?;
        drop(lock);
        Ok(out)
    }
}

fn write_temp(path: &Path, contents: &Contents) -> std::io::Result<PathBuf> {
    let tmp = path.with_extension(format!("tmp-{}-{}", std::process::id(), hex::encode(random_bytes::<6>()?)));
    let mut f = OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(contents).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    Ok(tmp)
}

fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(std::io::Error::other)?;
    Ok(b)
}

/// fsync a directory so a rename or create inside it survives a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_authenticate_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("_tally/keystore.json");
        let store = KeyStore::open_or_create(&path).unwrap();
        let p1 = store.pseudonymizer().unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        // Re-opening keeps the same pseudonymization key.
        let p2 = KeyStore::open_or_create(&path).unwrap().pseudonymizer().unwrap();
        let id = crate::ident::hash_identifier(crate::ident::IdField::Em, "a@b.co", crate::ident::PlaintextMode::Hash).unwrap().0;
        assert_eq!(p1.pseudonymize(&id), p2.pseudonymize(&id));

        let acme: AdvertiserId = "acme".parse().unwrap();
        let (secret, rec) = KeyStore::create_api_key(&path, acme.clone(), ["px1".to_string()].into()).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&secret), "the plaintext key must not be stored");
        let store = KeyStore::open_or_create(&path).unwrap();
        let who = store.authenticate(&secret).unwrap();
        assert_eq!(who.advertiser_id, acme);
        assert_eq!(store.source_owner("px1"), Some(&acme));
        assert!(store.authenticate("tally_wrong").is_none());

        // Another advertiser cannot claim acme's source.
        let err = KeyStore::create_api_key(&path, "globex".parse().unwrap(), ["px1".to_string()].into()).unwrap_err();
        assert!(matches!(err, KeyStoreError::SourceTaken { .. }));

        KeyStore::revoke_api_key(&path, &rec.id).unwrap();
        assert!(KeyStore::open_or_create(&path).unwrap().authenticate(&secret).is_none());
        assert!(matches!(KeyStore::revoke_api_key(&path, "ak_nope"), Err(KeyStoreError::UnknownKey(_))));
    }

    #[test]
    fn racing_creators_agree_on_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ks.json");
        let keys: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8).map(|_| s.spawn(|| KeyStore::open_or_create(&path).unwrap().pseudonymizer().unwrap())).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let id = crate::ident::HashedId::from_hex(&"ab".repeat(32)).unwrap();
        assert!(keys.windows(2).all(|w| w[0].pseudonymize(&id) == w[1].pseudonymize(&id)));
    }

    #[test]
    fn world_readable_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ks.json");
        KeyStore::open_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = KeyStore::open_or_create(&path).unwrap_err().to_string();
        assert!(err.contains("permissions"), "{err}");
    }
}
