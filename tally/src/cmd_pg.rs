//! `tally pg`: the Postgres wire endpoint on its own (also started by `tally serve --pg`).

use std::io::Write;
use std::net::SocketAddr;

use anyhow::{Context as _, Result};
use tally_queries::pg::Endpoint;

use crate::config::Settings;

/// Options of `tally pg`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Log in with the advertiser id as user name and one of its API keys as password, e.g. \
`PGPASSWORD=$KEY psql -h 127.0.0.1 -p 5433 -U acme -c 'select count(*) from conversions'`. \
Each session shows that advertiser's rows only; only read-only queries run; every query is audited. \
The password travels in clear text: keep the endpoint on loopback or behind TLS.")]
pub(crate) struct PgArgs {
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:5433")]
    listen: SocketAddr,
}

/// The endpoint over `settings`' store, key store and audit log.
pub(crate) fn endpoint(settings: &Settings) -> Result<Endpoint> {
    Ok(Endpoint { store: settings.open_store()?, keystore: settings.keystore_path()?, audit: crate::cmd_sql::audit_log(settings)? })
}

/// Binds `addr` for the endpoint.
pub(crate) async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} for the Postgres endpoint"))
}

pub(crate) async fn run(settings: &Settings, args: PgArgs) -> Result<()> {
    let endpoint = endpoint(settings)?;
    let listener = bind(args.listen).await?;
    let shutdown = crate::cmd_serve::shutdown_signal()?;
    println!("postgres endpoint listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    tally_queries::pg::serve(listener, endpoint, shutdown).await?;
    Ok(())
}
