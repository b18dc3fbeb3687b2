//! `tally demo`: the main job on embedded defaults (SPEC section 2).
//!
//! Generates a sample world ending now, creates the advertiser's API key, starts the ingestion
//! server in-process on a free local port and posts the world through the real HTTP API — the
//! last 7 days of server-side conversions in Meta CAPI format, older history and the browser
//! pixel copies through the native endpoint, touchpoints through `/v1/touchpoints` — stops the
//! server (which flushes its write-ahead log to Parquet), loads spend and the platforms'
//! baseline through the import path (they have no HTTP endpoint), attributes, compares, and
//! writes the HTML report.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, TimestampMicrosecondType};
use serde_json::{Map, Value, json};
use tally_core::KeyStore;
use tally_core::schema::Table;
use tally_ingest::server::{Server, ServerConfig};
use tally_ingest::{Context, ImportRequest};
use tally_sample::{Format, WorldConfig};

use crate::config::Settings;
use crate::http;

/// Marks a data directory as the demo's own, so a re-run may clear it.
const MARKER: &str = "demo-data";
/// Events per CAPI request (Meta's limit is 1,000).
const CAPI_BATCH: usize = 1_000;
/// Rows per native request.
const NATIVE_BATCH: usize = 5_000;
/// CAPI refuses events older than 7 days; keep a margin for the time the demo takes.
const CAPI_MAX_AGE_MICROS: i64 = 7 * 86_400_000_000 - 3_600_000_000;

/// Options of `tally demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Users in the sample world.
    #[arg(long, default_value_t = 20_000)]
    users: usize,
    /// Random seed of the sample world.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Where to write the HTML report (default: `report.html` in the data directory).
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

pub(crate) async fn run(settings: &Settings, args: DemoArgs) -> Result<()> {
    let started = Instant::now();
    let store = settings.open_store()?;
    let data = store.root().local_dir().context("the demo runs on a local data directory")?.to_path_buf();
    prepare(&data)?;

    let now = chrono::Utc::now();
    let today = now.date_naive();
    let mut config = WorldConfig::ending_on(today, 61);
    config.seed = args.seed;
    config.users = args.users;
    config.end_at = Some(now);
    let world = tempfile::Builder::new().prefix("tally-demo-world-").tempdir().context("cannot create a scratch directory")?;
    step(&format!(
        "1/6 generating a sample world: {} users, {} → {}, `{}` loses identifiers on {}",
        config.users, config.start, today, config.treated_channel, config.cutover
    ));
    let summary = crate::cmd_sample::generate(&config, world.path(), Format::Parquet)?;

    step("2/6 creating the advertiser's API key and starting the server on a free local port");
    let keystore_path = settings.keystore_path()?;
    let advertiser: tally_core::AdvertiserId = config.advertisers[0].parse().map_err(anyhow::Error::msg)?;
    let source = format!("px_{advertiser}_web");
    let (key, record) = KeyStore::create_api_key(&keystore_path, advertiser.clone(), [source.clone()].into())?;
    let server = Server::bind(store.clone(), keystore_path.clone(), ServerConfig { listen: "127.0.0.1:0".parse()?, ..ServerConfig::default() }).await?;
    let addr = server.local_addr();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async move {
        let _ = stop_rx.await;
    }));
    println!("    key {} for `{advertiser}` (source `{source}`); listening on http://{addr}", record.id);

    step("3/6 posting through the HTTP API");
    let posted = post_world(&addr.to_string(), &key, world.path(), &source, now.timestamp_micros()).await;
    let _ = stop_tx.send(());
    let stopped = serving.await.context("the server task failed")?;
    let posted = posted?;
    stopped.context("the server could not flush its write-ahead log")?;
    println!(
        "    conversions: {} server copies of the last 7 days in {} CAPI requests, {} older or browser copies in {} native requests; touchpoints: {} in {} requests",
        posted.capi_events, posted.capi_requests, posted.native_events, posted.native_event_requests, posted.touchpoints, posted.touch_requests
    );
    let keys = KeyStore::open_or_create(&keystore_path)?;
    for table in [Table::Spend, Table::Baseline] {
        let file = world.path().join(format!("{}.parquet", table.name()));
        let request =
            ImportRequest { table, files: vec![file], format: None, strict: true, context: Context::for_table(&store, table, keys.pseudonymizer()?, None) };
        let report = tally_ingest::import(&store, &request, |_| {}).await?;
        if !report.committed {
            let first = report.rejected.first().map(ToString::to_string).unwrap_or_default();
            bail!("the sample world has {} invalid {} rows (first: {first})", report.rejected_total, table);
        }
    }
    let ctx = tally_queries::session(&store).await?;
    let stored = count_rows(&ctx).await?;
    let expected = [summary.rows.touchpoints, summary.rows.conversions, summary.rows.spend, summary.rows.baseline];
    if stored != expected {
        bail!("stored row counts {stored:?} (touchpoints, conversions, spend, baseline) differ from the generated {expected:?}");
    }
    println!("    flushed to Parquet: {} touchpoints, {} conversion copies, {} spend and {} baseline rows", stored[0], stored[1], stored[2], stored[3]);

    step("4/6 attributing (deterministic models, then probabilistic cohorts with self-validation)");
    let key_id = keys.pseudonymizer()?.key_id().to_owned();
    let attribution = tally_attribution::run(&store, &key_id, &tally_attribution::Options::default(), Arc::new(|_| {})).await?;
    let matched: usize = attribution.matched_by_key.values().sum();
    println!("    {} distinct conversions: {} matched by identifiers, {} not", attribution.conversions, matched, attribution.unmatched);
    if let Some(p) = &attribution.probabilistic {
        println!(
            "    modeled: {:.0} of the unmatched credited to campaigns; self-check on {} hidden matches: WAPE {}, 90% intervals cover {}",
            p.credited,
            p.holdout,
            p.wape.map_or("–".into(), |w| format!("{:.1}%", 100.0 * w)),
            p.coverage.map_or("–".into(), |c| format!("{:.0}% of campaigns", 100.0 * c))
        );
    }

    step("5/6 comparing: client vs server, and before vs after the cutover");
    let ctx = tally_queries::session(&store).await?;
    let (from, to) = tally_compare::window(&ctx).await?;
    // Today is not over: its partial count would read as a drop, so the comparisons stop at
    // yesterday.
    let to = to.min(today - chrono::Duration::days(1)).max(from);
    let cs = crate::cmd_compare::client_server(&store, &key_id, &ctx, from, to, None).await?;
    let pp = crate::cmd_compare::prepost(&store, &key_id, &ctx, from, to, config.cutover, &config.control_channel, None).await?;
    let rows = pp.rows();
    let find = |ch: &str, m: &str| rows.iter().find(|r| r.channel == ch && r.metric == m);
    if let (Some(det), Some(total)) = (find(&config.treated_channel, "attributed_deterministic"), find(&config.treated_channel, "attributed_total")) {
        println!(
            "    {}: matched conversions/day {:.1} → {:.1} (p {}), with modeled ones {:.1} → {:.1}; vs `{}`: {:.1} a day (95% {:.1} … {:.1})",
            config.treated_channel,
            det.pre_mean.unwrap_or(0.0),
            det.post_mean.unwrap_or(0.0),
            det.p_value.map_or("–".into(), |p| format!("{p:.1e}")),
            total.pre_mean.unwrap_or(0.0),
            total.post_mean.unwrap_or(0.0),
            config.control_channel,
            det.did.unwrap_or(0.0),
            det.did_low.unwrap_or(0.0),
            det.did_high.unwrap_or(0.0)
        );
    }

    step("6/6 writing the report");
    let report = args.html.clone().unwrap_or_else(|| data.join("report.html"));
    let ctx = tally_queries::session(&store).await?;
    crate::cmd_compare::write_report(&ctx, &report, Some((from, to)), Some(&cs), Some(&pp)).await?;
    println!(
        "\ndone in {:.1}s.\nReport: {}\nData:   {} (hive-partitioned Parquet; tables conversions, touchpoints, spend, baseline, conversions_dedup, \
         attributed_conversions, probabilistic_totals, probabilistic_validation, client_server, prepost)",
        started.elapsed().as_secs_f64(),
        report.display(),
        data.display()
    );
    Ok(())
}

fn step(what: &str) {
    println!("==> {what}");
}

/// What [`post_world`] sent.
#[derive(Debug, Default)]
struct Posted {
    capi_events: usize,
    capi_requests: usize,
    native_events: usize,
    native_event_requests: usize,
    touchpoints: usize,
    touch_requests: usize,
}

/// Posts the generated conversions and touchpoints to the server at `addr`.
async fn post_world(addr: &str, key: &str, world: &Path, source: &str, now: i64) -> Result<Posted> {
    let mut posted = Posted::default();
    let conversions = read_parquet(&world.join("conversions.parquet"))?;
    let mut capi: Vec<Value> = Vec::new();
    let mut native: Vec<Value> = Vec::new();
    for b in &conversions {
        let time = b.column_by_name("event_time").context("conversions.parquet lacks event_time")?.as_primitive::<TimestampMicrosecondType>();
        let origin = b.column_by_name("origin").context("conversions.parquet lacks origin")?.as_string::<i32>();
        let is_test = b.column_by_name("is_test").context("conversions.parquet lacks is_test")?.as_boolean();
        for i in 0..b.num_rows() {
            let recent = now - time.value(i) < CAPI_MAX_AGE_MICROS;
            if recent && origin.value(i) == "server" && !is_test.value(i) {
                capi.push(capi_event(b, i)?);
            } else {
                native.push(Value::Object(row_json(b, i)));
            }
        }
    }
    let capi_path = format!("/v19.0/{source}/events?access_token={key}");
    for chunk in capi.chunks(CAPI_BATCH) {
        let body = json!({ "data": chunk }).to_string();
        let (status, reply) = http::post(addr, &capi_path, None, "application/json", body.as_bytes()).await?;
        if status != 200 {
            bail!("the CAPI endpoint answered {status}: {reply}");
        }
        posted.capi_events += chunk.len();
        posted.capi_requests += 1;
    }
    for chunk in native.chunks(NATIVE_BATCH) {
        posted.native_events += post_native(addr, key, "/v1/events", chunk).await?;
        posted.native_event_requests += 1;
    }
    for b in &read_parquet(&world.join("touchpoints.parquet"))? {
        let rows: Vec<Value> = (0..b.num_rows()).map(|i| Value::Object(row_json(b, i))).collect();
        for chunk in rows.chunks(NATIVE_BATCH) {
            posted.touchpoints += post_native(addr, key, "/v1/touchpoints", chunk).await?;
            posted.touch_requests += 1;
        }
    }
    Ok(posted)
}

async fn post_native(addr: &str, key: &str, path: &str, rows: &[Value]) -> Result<usize> {
    let body = Value::Array(rows.to_vec()).to_string();
    let (status, reply) = http::post(addr, path, Some(key), "application/json", body.as_bytes()).await?;
    if status != 200 {
        bail!("`{path}` answered {status}: {reply}");
    }
    let reply: Value = serde_json::from_str(&reply).with_context(|| format!("`{path}` answered with invalid JSON"))?;
    let rejected = reply["rejected"].as_array().map_or(0, Vec::len);
    if rejected > 0 {
        bail!("`{path}` rejected {rejected} rows of the sample world (first: {})", reply["rejected"][0]);
    }
    Ok(reply["accepted"].as_u64().unwrap_or(0) as usize)
}

fn read_parquet(path: &Path) -> Result<Vec<RecordBatch>> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open `{}`", path.display()))?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?.with_batch_size(8192).build()?;
    Ok(reader.collect::<Result<Vec<_>, _>>()?)
}

/// One row as a JSON object of its non-null columns (timestamps as RFC 3339).
fn row_json(b: &RecordBatch, i: usize) -> Map<String, Value> {
    let mut m = Map::new();
    for (f, c) in b.schema().fields().iter().zip(b.columns()) {
        if c.is_null(i) {
            continue;
        }
        let v = match c.data_type() {
            DataType::Utf8 => json!(c.as_string::<i32>().value(i)),
            DataType::Float64 => json!(c.as_primitive::<Float64Type>().value(i)),
            DataType::Boolean => json!(c.as_boolean().value(i)),
            DataType::Timestamp(..) => {
                let t = c.as_primitive::<TimestampMicrosecondType>().value(i);
                json!(chrono::DateTime::from_timestamp_micros(t).map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)).unwrap_or_default())
            }
            _ => continue,
        };
        m.insert(f.name().clone(), v);
    }
    m
}

/// A user agent the server maps back to `os` (the sample world knows only the OS).
fn user_agent(os: &str) -> &'static str {
    match os {
        "ios" => "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
        "android" => "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Mobile Safari/537.36",
        "windows" => "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
        "macos" => "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
        _ => "Mozilla/5.0 (X11; Linux x86_64)",
    }
}

/// A server copy as a Meta CAPI server event (identifiers already SHA-256 hex).
fn capi_event(b: &RecordBatch, i: usize) -> Result<Value> {
    let row = row_json(b, i);
    let s = |k: &str| row.get(k).cloned();
    let time = b.column_by_name("event_time").context("event_time")?.as_primitive::<TimestampMicrosecondType>().value(i);
    let mut user = Map::new();
    for (from, to) in [("em_sha256", "em"), ("ph_sha256", "ph"), ("external_id_sha256", "external_id"), ("click_id", "fbc"), ("geo_state", "st")] {
        if let Some(v) = s(from) {
            user.insert(to.into(), v);
        }
    }
    if let Some(Value::String(os)) = s("device_os") {
        user.insert("client_user_agent".into(), json!(user_agent(&os)));
    }
    let mut custom = Map::new();
    for k in ["value", "currency", "order_id"] {
        if let Some(v) = s(k) {
            custom.insert(k.into(), v);
        }
    }
    let mut event = json!({
        "event_name": s("event_name"),
        "event_time": time.div_euclid(1_000_000),
        "action_source": s("action_source").unwrap_or(json!("website")),
        "opt_out": s("opt_out").unwrap_or(json!(false)),
        "user_data": user,
        "custom_data": custom,
    });
    if let Some(id) = s("event_id") {
        event["event_id"] = id;
    }
    Ok(event)
}

/// The demo writes only into an empty directory or one it made before (which it clears).
fn prepare(data: &Path) -> Result<()> {
    let marker = data.join("_tally").join(MARKER);
    let has_data = std::fs::read_dir(data)?.flatten().any(|e| e.file_name() != "_tally");
    let has_keys = data.join("_tally/keystore.json").exists();
    if (has_data || has_keys) && !marker.exists() {
        bail!("`{}` already holds data that the demo did not make; pass --data with an empty or new directory", data.display());
    }
    for entry in std::fs::read_dir(data)?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).with_context(|| format!("cannot clear `{}`", path.display()))?;
        } else if path.file_name().is_some_and(|n| n == "report.html") {
            std::fs::remove_file(&path)?;
        }
    }
    std::fs::create_dir_all(data.join("_tally"))?;
    std::fs::write(&marker, "made by `tally demo`; the demo clears this directory when it runs again\n")?;
    Ok(())
}

async fn count_rows(ctx: &datafusion::prelude::SessionContext) -> Result<[u64; 4]> {
    let mut out = [0u64; 4];
    for (i, table) in [Table::Touchpoints, Table::Conversions, Table::Spend, Table::Baseline].iter().enumerate() {
        out[i] = ctx.table(table.name()).await?.count().await? as u64;
    }
    Ok(out)
}
