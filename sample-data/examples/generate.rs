//! Generates a world and prints its summary and the time it took — the sizing benchmark.
//!
//! ```text
//! cargo run --release -p tally-sample --example generate -- OUT_DIR [csv|jsonl|parquet] [TOUCHPOINTS]
//! ```
//! Without `TOUCHPOINTS`, the default world (2,000 users). Measure peak memory with
//! `/usr/bin/time -v`.

use std::time::Instant;

use tally_sample::{Format, WorldConfig, generate};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args
        .next()
        .ok_or("usage: generate OUT_DIR [csv|jsonl|parquet] [TOUCHPOINTS]")?;
    let format = match args.next().as_deref() {
        None | Some("parquet") => Format::Parquet,
        Some("csv") => Format::Csv,
        Some("jsonl") => Format::Jsonl,
        Some(other) => return Err(format!("unknown format `{other}`").into()),
    };
    let mut config = WorldConfig::default();
    if let Some(n) = args.next() {
        config = config.with_target_touchpoints(n.parse()?);
    }
    let started = Instant::now();
    let summary = generate(&config, out.as_ref(), format)?;
    let secs = started.elapsed().as_secs_f64();
    println!("{}", serde_json::to_string_pretty(&summary)?);
    println!(
        "users {} touchpoints {} conversions {} in {secs:.1} s ({:.2} M touchpoints/s)",
        config.users,
        summary.rows.touchpoints,
        summary.rows.conversions,
        summary.rows.touchpoints as f64 / secs / 1e6
    );
    Ok(())
}
