//! `tally serve`: the ingestion API (and, with `--pg`, the Postgres wire endpoint).

use std::io::Write;
use std::net::SocketAddr;

use anyhow::Result;
use tally_ingest::server::{Server, ServerConfig};

use crate::config::Settings;

/// Options of `tally serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Largest accepted request body, in bytes (larger bodies get 413).
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Requests per second allowed per API key (beyond it: 429 with Retry-After).
    #[arg(long, default_value_t = 2000.0)]
    rate_per_key: f64,
    /// A web origin (e.g. https://shop.example.com) whose pages may send the browser pixel,
    /// /v1/pixel, cross-origin; repeat for several. Pixel requests from other origins get 403.
    #[arg(long = "pixel-origin", value_name = "ORIGIN")]
    pixel_origins: Vec<String>,
    /// Also serve SQL over the Postgres wire protocol on this address (see `tally pg --help`).
    #[arg(long, value_name = "ADDR")]
    pg: Option<SocketAddr>,
}

pub(crate) async fn run(settings: &Settings, args: ServeArgs) -> Result<()> {
    let store = settings.open_store()?;
    for origin in &args.pixel_origins {
        let host = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
        if !host.is_some_and(|h| !h.is_empty() && !h.contains(['/', ' ', '*'])) {
            anyhow::bail!("--pixel-origin `{origin}`: an origin is scheme://host[:port], like https://shop.example.com (browsers send it without a path)");
        }
    }
    let config = ServerConfig {
        listen: args.listen,
        max_body_bytes: args.max_body_bytes,
        rate_per_key: args.rate_per_key,
        burst_per_key: args.rate_per_key * 2.0,
        pixel_origins: args.pixel_origins,
        ..ServerConfig::default()
    };
    let server = Server::bind(store, settings.keystore_path()?, config).await?;
    let pg = match args.pg {
        Some(addr) => {
            let endpoint = crate::cmd_pg::endpoint(settings)?;
            let listener = crate::cmd_pg::bind(addr).await?;
            Some((listener.local_addr()?, tokio::spawn(tally_queries::pg::serve(listener, endpoint, shutdown_signal()?))))
        }
        None => None,
    };
    // Handlers go in before the address is announced: a client that reads the address and
    // signals at once must get a graceful stop, not the default (fatal) action.
    let shutdown = shutdown_signal()?;
    println!("listening on http://{}", server.local_addr());
    if let Some((addr, _)) = &pg {
        println!("postgres endpoint listening on {addr}");
    }
    std::io::stdout().flush()?;
    server.run(shutdown).await?;
    if let Some((_, pg)) = pg {
        pg.abort();
    }
    eprintln!("tally serve: stopped; the write-ahead log is flushed");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM; both handlers are installed when this returns.
pub(crate) fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
