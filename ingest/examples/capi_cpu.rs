//! CPU per Meta CAPI request, stage by stage, against a parse-and-discard peer in the same
//! process: what one 1,000-event request costs a request worker before it waits for the log.
//!
//! `cargo run -p tally-ingest --example capi_cpu [-- EVENTS [ITERATIONS]]`
//!
//! The body is the serve benchmark's (`ingest/benches/serve_throughput.py`): hashed em, ph
//! and external_id, value, currency, event and order ids. Stages, as `tally serve` runs them:
//! 1. read: the typed Meta reader into text columns (`capi_request_from_json` + `capi_rows`);
//! 2. convert: validation, normalization, keyed BLAKE3 of the identifiers, typed columns;
//! 3. frame: the WAL frame (Arrow IPC + CRC32) the log writer copies out.
//!
//! The peer deserializes the same body into the typed structs `capi_discard` uses
//! (`examples/common/capi_peer.rs`). Stages and peer are interleaved round by round; the best
//! round of each is printed.

use std::time::{Duration, Instant};

use tally_core::schema::Table;
use tally_core::{PlaintextMode, Pseudonymizer};
use tally_ingest::{Context, convert, dialect, wal};

#[path = "common/capi_peer.rs"]
mod capi_peer;
use capi_peer::Body;

fn body(events: usize, now: i64) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut hex = || format!("{:016x}{:016x}{:016x}{:016x}", next(), next(), next(), next());
    let items: Vec<String> = (0..events)
        .map(|i| {
            format!(
                r#"{{"event_name":"Purchase","event_time":{},"event_id":"e{i}","action_source":"website","event_source_url":"https://shop.example.com/checkout","user_data":{{"em":["{}"],"ph":["{}"],"external_id":["{}"],"client_ip_address":"203.0.113.9","client_user_agent":"Mozilla/5.0","fbp":"fb.1.1700000000.123"}},"custom_data":{{"value":{}.{:02},"currency":"USD","order_id":"o{i}"}}}}"#,
                now - (i as i64 % 3600),
                hex(),
                hex(),
                hex(),
                5 + i % 195,
                i % 100
            )
        })
        .collect();
    format!(r#"{{"data":[{}]}}"#, items.join(",")).into_bytes()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let events: usize = args.next().map_or(1000, |a| a.parse().expect("EVENTS is a number"));
    let iterations: usize = args.next().map_or(200, |a| a.parse().expect("ITERATIONS is a number"));
    let now = chrono::Utc::now().timestamp();
    let body = body(events, now);
    let ctx = Context {
        advertiser: Some("bench".parse().expect("a valid advertiser id")),
        pseudonymizer: Pseudonymizer::new("k1", [7; 32]),
        plaintext: PlaintextMode::Hash,
        jurisdiction: "US".into(),
        received_at: now * 1_000_000,
        oldest: None,
        newest: None,
    };
    let mut best = [Duration::MAX; 4];
    let mut frame_bytes = 0;
    for _round in 0..5 {
        let mut spent = [Duration::ZERO; 4];
        for _ in 0..iterations {
            let t = Instant::now();
            let parsed: Body = serde_json::from_slice(&body).expect("the peer parses the body");
            assert_eq!(parsed.data.len(), events);
            drop(parsed);
            spent[0] += t.elapsed();

            let t = Instant::now();
            let req = dialect::capi_request_from_json(&body, now).expect("tally reads the body");
            let raw = dialect::capi_rows("px1", req).expect("every event is readable");
            spent[1] += t.elapsed();
            let t = Instant::now();
            let converted = convert(Table::Conversions, &raw, &[], &ctx).expect("the columns fit");
            assert!(converted.rejected.is_empty(), "{:?}", converted.rejected.first());
            spent[2] += t.elapsed();
            let t = Instant::now();
            let frame = wal::encode_payload(Table::Conversions, &converted.batch).expect("the batch encodes");
            frame_bytes = frame.len();
            spent[3] += t.elapsed();
        }
        for (b, s) in best.iter_mut().zip(spent) {
            *b = (*b).min(s / iterations as u32);
        }
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let tally = best[1] + best[2] + best[3];
    println!("{events}-event CAPI body of {} bytes, best of 5 rounds of {iterations}:", body.len());
    println!("  peer (serde into typed structs)   {:>8.0} us", us(best[0]));
    println!("  tally read (typed Meta reader)    {:>8.0} us", us(best[1]));
    println!("  tally convert (validate, hash)    {:>8.0} us", us(best[2]));
    println!("  tally WAL frame ({frame_bytes} bytes)  {:>8.0} us", us(best[3]));
    println!("  tally total                       {:>8.0} us = {:.2}x the peer", us(tally), tally.as_secs_f64() / best[0].as_secs_f64());
}
