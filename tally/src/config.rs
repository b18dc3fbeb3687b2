//! Loading `tally.toml` and opening the data root under its policy.
//!
//! ```toml
//! data = "/srv/tally"            # default for --data
//! policy_file = "policy.toml"    # relative to this file; or an inline [policy] table
//! ```
//! Without a config file the built-in policy applies (US, any local directory).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;
use tally_core::{DataRoot, KeyStore, Policy, Store};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    data: Option<String>,
    policy_file: Option<PathBuf>,
    policy: Option<toml::Table>,
}

/// The settings every command starts from.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) root: DataRoot,
    pub(crate) policy: Policy,
}

impl Settings {
    /// Resolves `--data` (else the config's `data`, else `default_data`) and `--config`
    /// (default `tally.toml` if present).
    pub(crate) fn load(data: Option<&str>, config: Option<&Path>, default_data: &str) -> Result<Settings> {
        let default_config = Path::new("tally.toml");
        let (file, base) = match config {
            Some(path) => (read_config(path)?, path.parent().map(Path::to_path_buf).unwrap_or_default()),
            None if default_config.exists() => (read_config(default_config)?, PathBuf::new()),
            None => (ConfigFile::default(), PathBuf::new()),
        };
        let policy = match (&file.policy_file, &file.policy) {
            (Some(_), Some(_)) => bail!("config sets both `policy_file` and [policy]; keep one"),
            (Some(p), None) => Policy::from_file(&base.join(p))?,
            (None, Some(table)) => Policy::from_toml(&toml::to_string(table)?)?,
            (None, None) => Policy::builtin(),
        };
        let data = data.map(str::to_owned).or(file.data).unwrap_or_else(|| default_data.to_owned());
        let root = DataRoot::parse(&data).map_err(anyhow::Error::msg)?;
        Ok(Settings { root, policy })
    }

    /// Opens the store (refused if the policy does not allow the root).
    pub(crate) fn open_store(&self) -> Result<Store> {
        Ok(Store::open(self.root.clone(), self.policy.clone())?)
    }

    /// The key store file; only local data roots carry one.
    pub(crate) fn keystore_path(&self) -> Result<PathBuf> {
        match self.root.state_dir() {
            Some(dir) => Ok(dir.join("keystore.json")),
            None => bail!("an object-store data root needs a local key store; none is configured"),
        }
    }

    /// Opens (creating on first use) the key store, after checking the policy allows the root.
    pub(crate) fn keystore(&self) -> Result<KeyStore> {
        self.policy.check_storage(&self.root)?;
        Ok(KeyStore::open_or_create(&self.keystore_path()?)?)
    }
}

fn read_config(path: &Path) -> Result<ConfigFile> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config `{}`", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("config `{}`: {}", path.display(), e.message()))
}
