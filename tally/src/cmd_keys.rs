//! `tally keys …`: advertiser API keys. Creations and revocations go to the audit log.

use anyhow::Result;
use serde_json::json;
use tally_core::{Action, AdvertiserId, KeyStore, audit};

use crate::cmd_sql::audit_log;
use crate::config::Settings;

/// `tally keys` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum KeysCommand {
    /// Create an API key; prints the key alone on stdout (it is shown only this once).
    Create {
        /// The advertiser the key acts for.
        #[arg(long)]
        advertiser: AdvertiserId,
        /// A source (Meta pixel id / TikTok pixel code) the key may write to; repeatable.
        #[arg(long = "source")]
        sources: Vec<String>,
    },
    /// List API keys (ids, advertisers, sources; never the keys).
    List,
    /// Revoke an API key by its id (`ak_…`, from `tally keys list`).
    Revoke {
        /// The key id.
        id: String,
    },
}

pub(crate) fn run(settings: &Settings, cmd: KeysCommand) -> Result<()> {
    settings.policy.check_storage(&settings.root)?;
    let path = settings.keystore_path()?;
    match cmd {
        KeysCommand::Create { advertiser, sources } => {
            let (secret, record) = KeyStore::create_api_key(&path, advertiser, sources.into_iter().collect())?;
            let detail = audit::detail([
                ("key_id", json!(record.id)),
                ("advertiser", json!(record.advertiser_id.as_str())),
                ("sources", json!(record.sources)),
            ]);
            audit_log(settings)?.append("admin", Action::KeyCreate, detail)?;
            eprintln!("created {} for advertiser `{}`", record.id, record.advertiser_id);
            println!("{secret}");
        }
        KeysCommand::List => {
            let store = KeyStore::open_or_create(&path)?;
            println!("{:<18} {:<16} {:<26} {:<8} sources", "id", "advertiser", "created", "status");
            for k in store.api_keys() {
                let status = if k.revoked_at.is_some() { "revoked" } else { "active" };
                let sources: Vec<&str> = k.sources.iter().map(String::as_str).collect();
                println!(
                    "{:<18} {:<16} {:<26} {:<8} {}",
                    k.id,
                    k.advertiser_id,
                    k.created_at.format("%Y-%m-%dT%H:%M:%SZ"),
                    status,
                    sources.join(",")
                );
            }
        }
        KeysCommand::Revoke { id } => {
            let record = KeyStore::revoke_api_key(&path, &id)?;
            let detail = audit::detail([("key_id", json!(record.id)), ("advertiser", json!(record.advertiser_id.as_str()))]);
            audit_log(settings)?.append("admin", Action::KeyRevoke, detail)?;
            println!("revoked {} (advertiser `{}`)", record.id, record.advertiser_id);
        }
    }
    Ok(())
}
