//! Runs the attribution on a data directory without the CLI (for profiling the library):
//!
//! ```text
//! cargo run -p tally-attribution --example attribute -- DATA_DIR [MEMORY_LIMIT]
//! ```

use std::sync::Arc;

use tally_attribution::{Options, parse_bytes, run};
use tally_core::{DataRoot, Policy, Store};

// As the `tally` binary does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let data = args.next().ok_or("usage: attribute DATA_DIR [MEMORY_LIMIT]")?;
    let memory_limit = args.next().map(|s| parse_bytes(&s)).transpose()?;
    let store = Store::open(DataRoot::local(data.as_ref())?, Policy::builtin())?;
    let options = Options { memory_limit, ..Options::default() };
    let started = std::time::Instant::now();
    let summary = run(&store, "bench", &options, Arc::new(|_| {})).await?;
    let stages: Vec<String> = summary.timings.iter().map(|(n, t)| format!("{n} {t:.2}s")).collect();
    println!("{} conversions, {:.2}s: {}", summary.conversions, started.elapsed().as_secs_f64(), stages.join(", "));
    Ok(())
}
