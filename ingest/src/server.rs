//! The ingestion API (`tally serve`): HTTP in, durable rows out.
//!
//! Every write endpoint does the same four things: authenticate the key (and its tenant),
//! parse the body in the endpoint's dialect into a raw batch, validate it through
//! [`crate::convert`] (the one edge every row crosses), and append the valid rows to the
//! write-ahead log — answering 2xx only after the log is fsynced. The flusher turns the log
//! into Parquet in the background. Client mistakes get 4xx bodies that say what and where;
//! storage trouble gets 503 with `Retry-After`; nothing here panics on client input.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime};

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tally_core::schema::Table;
use tally_core::{AdvertiserId, KeyStore, Principal, Pseudonymizer, Store};

use crate::convert::{Context, RowError, convert};
use crate::dialect;
use crate::flush::{self, FlushStats};
use crate::histogram::Histogram;
use crate::raw::json_rows;
use crate::wal::{DirLock, Wal, WalConfig, WalError};

/// How long a graceful stop waits for the WAL to reach Parquet.
const SHUTDOWN_FLUSH_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Settings of the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Requests per second allowed per API key (token bucket refill).
    pub rate_per_key: f64,
    /// Burst size per API key.
    pub burst_per_key: f64,
    /// WAL segment thresholds.
    pub wal: WalConfig,
    /// Web origins whose pages may send the browser pixel (`/v1/pixel`) cross-origin.
    pub pixel_origins: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 8 * 1024 * 1024,
            rate_per_key: 2000.0,
            burst_per_key: 4000.0,
            wal: WalConfig::default(),
            pixel_origins: Vec::new(),
        }
    }
}

/// Failures starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The key store cannot be used.
    #[error(transparent)]
    KeyStore(#[from] tally_core::KeyStoreError),
    /// Binding, the WAL directory, or serving failed.
    #[error("{0}")]
    Io(String),
}

/// Counters for `/metrics` (label values come from small fixed sets).
#[derive(Debug, Default)]
struct Metrics {
    /// Per route (sorted, as `/metrics` lists them).
    routes: Mutex<BTreeMap<String, RouteStats>>,
    accepted: [AtomicU64; 4],
    rejected: Mutex<HashMap<&'static str, u64>>,
    /// Time each append waited for its rows to be in the fsynced log.
    wal_append: Histogram,
    wal_failures: AtomicU64,
}

/// What `/metrics` keeps of one route's requests.
#[derive(Debug, Default)]
struct RouteStats {
    /// Answers by status code.
    statuses: BTreeMap<u16, u64>,
    /// Time from the request reaching the route to the response (for ingest: parsed,
    /// validated, and in the fsynced log).
    duration: Histogram,
}

impl Metrics {
    fn reject(&self, reason: &'static str, n: u64) {
        *self.rejected.lock().expect("metrics lock").entry(reason).or_default() += n;
    }
}

/// Keys, reloaded when the key store file changes (keys are created while the server runs).
struct Keys {
    path: PathBuf,
    loaded: RwLock<(Arc<KeyStore>, Option<SystemTime>)>,
}

impl Keys {
    /// The advertiser whose live key lists `source` (a pixel or app id).
    fn source_owner(&self, source: &str) -> Option<AdvertiserId> {
        if let Some(a) = self.loaded.read().expect("keys lock").0.source_owner(source) {
            return Some(a.clone());
        }
        self.reload_if_changed()?.source_owner(source).cloned()
    }

    fn authenticate(&self, presented: &str) -> Option<Principal> {
        if let Some(p) = self.loaded.read().expect("keys lock").0.authenticate(presented) {
            return Some(p);
        }
        // Unknown key: reload if the file changed since we read it, then try once more.
        self.reload_if_changed()?.authenticate(presented)
    }

    /// The key store re-read, if its file changed since it was last read.
    fn reload_if_changed(&self) -> Option<Arc<KeyStore>> {
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        let stale = self.loaded.read().expect("keys lock").1 != modified;
        if stale && let Ok(store) = KeyStore::open_or_create(&self.path) {
            let store = Arc::new(store);
            *self.loaded.write().expect("keys lock") = (store.clone(), modified);
            return Some(store);
        }
        None
    }
}

struct AppState {
    store: Store,
    /// The write-ahead log's directory.
    wal_dir: PathBuf,
    keys: Keys,
    pseudonymizer: Pseudonymizer,
    wal: Wal,
    flush: Arc<FlushStats>,
    metrics: Metrics,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
    config: ServerConfig,
}

/// A bound, ready server.
pub struct Server {
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    /// Resolves when the flusher thread has drained its queue and ended.
    flusher: tokio::sync::oneshot::Receiver<()>,
    /// This process's claim on the WAL directory, released once the flusher has ended.
    _wal_lock: DirLock,
}

impl Server {
    /// Opens the key store and WAL (handing leftover segments to the flusher) and binds.
    pub async fn bind(store: Store, keystore: PathBuf, config: ServerConfig) -> Result<Server, ServeError> {
        let io = |e: std::io::Error| ServeError::Io(e.to_string());
        let keys = KeyStore::open_or_create(&keystore)?;
        let pseudonymizer = keys.pseudonymizer()?;
        let state_dir = store.root().state_dir().ok_or_else(|| ServeError::Io("the server needs a local data directory for its write-ahead log".into()))?;
        let node = node_id(&state_dir).map_err(io)?;
        let (sealed_tx, sealed_rx) = tokio::sync::mpsc::unbounded_channel();
        let wal_dir = state_dir.join("wal");
        let wal_lock = DirLock::acquire(&wal_dir).map_err(io)?;
        let data_dir = state_dir.parent().expect("the state directory is inside the data directory");
        let removed = flush::remove_dead_temp_files(data_dir, &node).map_err(io)?;
        if removed > 0 {
            tracing::info!(files = removed, "removed unfinished Parquet files of a flush cut short; their segments are flushed again");
        }
        let (wal, pending) = Wal::open(&wal_dir, config.wal, sealed_tx).map_err(io)?;
        if !pending.is_empty() {
            tracing::info!(segments = pending.len(), "replaying write-ahead log segments left by the previous run");
        }
        let stats = Arc::new(FlushStats::default());
        let flusher = flush::spawn(store.clone(), pseudonymizer.key_id().to_owned(), node, pending, sealed_rx, stats.clone()).map_err(io)?;
        let listener = tokio::net::TcpListener::bind(config.listen).await.map_err(|e| ServeError::Io(format!("cannot listen on {}: {e}", config.listen)))?;
        let modified = std::fs::metadata(&keystore).and_then(|m| m.modified()).ok();
        let state = Arc::new(AppState {
            store,
            wal_dir,
            keys: Keys { path: keystore, loaded: RwLock::new((Arc::new(keys), modified)) },
            pseudonymizer,
            wal,
            flush: stats,
            metrics: Metrics::default(),
            buckets: Mutex::new(HashMap::new()),
            config,
        });
        Ok(Server { listener, state, flusher, _wal_lock: wal_lock })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves; then stops accepting, finishes in-flight requests,
    /// seals the WAL and flushes it to Parquet before returning.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
        let app = router(self.state.clone());
        axum::serve(self.listener, app).with_graceful_shutdown(shutdown).await.map_err(|e| ServeError::Io(e.to_string()))?;
        let _ = self.state.wal.seal().await;
        let backlog = self.state.flush.clone();
        let wal_dir = self.state.wal_dir.clone();
        // Dropping the last WAL handle ends its writer, which closes the flusher's queue.
        drop(self.state);
        // The rows are already durable in the WAL: if the store cannot take them now, stop
        // anyway after a grace period; the next start replays the remaining segments.
        if tokio::time::timeout(SHUTDOWN_FLUSH_GRACE, self.flusher).await.is_err() {
            let left = backlog.backlog.load(Ordering::Relaxed);
            return Err(ServeError::Io(format!(
                "stopped with {left} write-ahead log segment(s) not yet in Parquet (the store refused them); they are safe and will be flushed at the next start"
            )));
        }
        // Everything is in Parquet: the spare segments kept for reuse can go.
        crate::wal::remove_spares(&wal_dir).map_err(|e| ServeError::Io(e.to_string()))?;
        Ok(())
    }
}

/// A stable id for this data directory's ingest node, part of every file name it flushes.
fn node_id(state_dir: &std::path::Path) -> std::io::Result<String> {
    let path = state_dir.join("node-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        return Ok(id.trim().to_owned());
    }
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).map_err(std::io::Error::other)?;
    let id = hex::encode(b);
    std::fs::create_dir_all(state_dir)?;
    std::fs::write(&path, &id)?;
    Ok(id)
}

fn router(state: Arc<AppState>) -> Router {
    let max = state.config.max_body_bytes;
    Router::new()
        .route("/v1/events", post(native_events))
        .route("/v1/touchpoints", post(native_touchpoints))
        .route("/{api_version}/{pixel_id}/events", post(capi_events))
        .route("/open_api/v1.3/event/track/", post(tiktok_events))
        .route("/open_api/v1.3/pixel/track/", post(tiktok_pixel_track))
        .route("/open_api/v1.3/pixel/batch/", post(tiktok_pixel_batch))
        .route("/v1/pixel", post(pixel_post).options(pixel_preflight))
        .route("/v1/pixel.gif", get(pixel_gif))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(|| async { axum::Json(crate::openapi::document()) }))
        .layer(DefaultBodyLimit::max(max))
        .layer(middleware::from_fn_with_state(state.clone(), count_requests))
        .with_state(state)
}

async fn count_requests(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(req).await;
    let mut routes = state.metrics.routes.lock().expect("metrics lock");
    let stats = routes.entry(route).or_default();
    stats.duration.observe(started.elapsed());
    *stats.statuses.entry(response.status().as_u16()).or_default() += 1;
    response
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let backlog = state.flush.backlog.load(Ordering::Relaxed);
    if backlog > 64 {
        return (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "5")], format!("flush backlog of {backlog} segments\n")).into_response();
    }
    (StatusCode::OK, "ready\n").into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    use std::fmt::Write;
    let m = &state.metrics;
    let f = &state.flush;
    let mut out = String::new();
    out.push_str("# TYPE tally_http_requests_total counter\n");
    let routes = m.routes.lock().expect("metrics lock");
    for (route, stats) in routes.iter() {
        for (status, n) in &stats.statuses {
            let _ = writeln!(out, "tally_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
        }
    }
    out.push_str("# TYPE tally_events_accepted_total counter\n");
    for t in Table::BASE {
        let _ = writeln!(out, "tally_events_accepted_total{{table=\"{t}\"}} {}", m.accepted[t as usize].load(Ordering::Relaxed));
    }
    out.push_str("# TYPE tally_events_rejected_total counter\n");
    let mut rejected: Vec<_> = m.rejected.lock().expect("metrics lock").iter().map(|(k, v)| (*k, *v)).collect();
    rejected.sort();
    for (reason, n) in rejected {
        let _ = writeln!(out, "tally_events_rejected_total{{reason=\"{reason}\"}} {n}");
    }
    for (name, kind, value) in [
        ("tally_wal_failures_total", "counter", m.wal_failures.load(Ordering::Relaxed) as f64),
        ("tally_flush_segments_total", "counter", f.segments.load(Ordering::Relaxed) as f64),
        ("tally_flush_rows_total", "counter", f.rows.load(Ordering::Relaxed) as f64),
        ("tally_flush_files_total", "counter", f.files.load(Ordering::Relaxed) as f64),
        ("tally_flush_failures_total", "counter", f.failures.load(Ordering::Relaxed) as f64),
        ("tally_flush_backlog_segments", "gauge", f.backlog.load(Ordering::Relaxed) as f64),
    ] {
        let _ = writeln!(out, "# TYPE {name} {kind}\n{name} {value}");
    }
    out.push_str("# TYPE tally_http_request_duration_seconds histogram\n");
    for (route, stats) in routes.iter() {
        stats.duration.render(&mut out, "tally_http_request_duration_seconds", &format!("route=\"{route}\""));
    }
    drop(routes);
    out.push_str("# TYPE tally_wal_append_duration_seconds histogram\n");
    m.wal_append.render(&mut out, "tally_wal_append_duration_seconds", "");
    out.push_str("# TYPE tally_flush_duration_seconds histogram\n");
    f.duration.render(&mut out, "tally_flush_duration_seconds", "");
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// A native-endpoint error: `{"error": "..."}` with a status.
fn native_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

fn unavailable(e: &WalError) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, HeaderValue::from_static("1"))], axum::Json(json!({ "error": e.to_string() }))).into_response()
}

/// Checks the key's token bucket; `Err` is the 429 response.
fn rate_limit(state: &AppState, principal: &Principal) -> Result<(), Response> {
    let mut buckets = state.buckets.lock().expect("bucket lock");
    let now = Instant::now();
    let (tokens, last) = buckets.entry(principal.key_id.clone()).or_insert((state.config.burst_per_key, now));
    *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * state.config.rate_per_key).min(state.config.burst_per_key);
    *last = now;
    if *tokens >= 1.0 {
        *tokens -= 1.0;
        return Ok(());
    }
    let wait = ((1.0 - *tokens) / state.config.rate_per_key).ceil().max(1.0);
    Err((StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, wait.to_string())], axum::Json(json!({ "error": "rate limit exceeded for this key" })))
        .into_response())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

async fn native_events(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    native(&state, Table::Conversions, &headers, &body).await
}

async fn native_touchpoints(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    native(&state, Table::Touchpoints, &headers, &body).await
}

/// `POST /v1/events` and `/v1/touchpoints`: a JSON array or JSON lines; per-row results.
async fn native(state: &AppState, table: Table, headers: &HeaderMap, body: &[u8]) -> Response {
    let Some(principal) = bearer(headers).and_then(|k| state.keys.authenticate(k)) else {
        state.metrics.reject("unauthorized", 1);
        return native_error(StatusCode::UNAUTHORIZED, "missing or unknown API key (Authorization: Bearer KEY)");
    };
    if let Err(r) = rate_limit(state, &principal) {
        return r;
    }
    native_rows(state, table, &principal, parse_rows(body), None).await.into_response()
}

/// A JSON array, one object, or JSON lines: one entry per row, unparseable lines as errors.
fn parse_rows(body: &[u8]) -> Vec<Result<Value, String>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(items)) => items.into_iter().map(Ok).collect(),
        Ok(Value::Object(o)) => vec![Ok(Value::Object(o))],
        _ => body
            .split(|b| *b == b'\n')
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            .map(|l| serde_json::from_slice(l).map_err(|e| format!("invalid JSON: {e}")))
            .collect(),
    }
}

/// Validates rows for `principal`, appends the good ones to the WAL, answers per row. With
/// `origin`, every row's `origin` is set to it (whatever the sender claimed).
async fn native_rows(
    state: &AppState,
    table: Table,
    principal: &Principal,
    mut values: Vec<Result<Value, String>>,
    origin: Option<&str>,
) -> Result<Stored, Response> {
    if let Some(origin) = origin {
        for v in values.iter_mut().flatten() {
            if let Value::Object(o) = v {
                o.insert("origin".into(), Value::String(origin.into()));
            }
        }
    }
    if values.is_empty() {
        return Err(native_error(StatusCode::BAD_REQUEST, "the body holds no rows (send a JSON array or JSON lines)"));
    }
    let (raw, unreadable) = json_rows(values);
    let ctx = Context::for_table(&state.store, table, state.pseudonymizer.clone(), Some(principal.advertiser_id.clone()));
    let converted = match convert(table, &raw, &unreadable, &ctx) {
        Ok(c) => c,
        Err(e) => {
            state.metrics.reject("invalid", raw.num_rows() as u64);
            return Err(native_error(StatusCode::BAD_REQUEST, e.to_string()));
        }
    };
    let mut rejected = converted.rejected;
    let mut batch = converted.batch;
    if table == Table::Conversions {
        let (kept, foreign) = own_sources_only(&batch, &converted.kept, principal);
        batch = kept;
        rejected.extend(foreign);
        rejected.sort_by_key(|e| e.row);
    }
    state.metrics.reject("invalid", rejected.len() as u64);
    if let Err(e) = append(state, table, &batch).await {
        return Err(unavailable(&e));
    }
    let rejected = rejected.iter().map(|e| json!({ "index": e.row, "error": format!("`{}`: {}", e.column, e.message) })).collect();
    Ok(Stored { accepted: batch.num_rows(), rejected })
}

/// What [`native_rows`] stored: rows accepted (durable) and the rejected ones with reasons.
struct Stored {
    accepted: usize,
    rejected: Vec<Value>,
}

impl IntoResponse for Stored {
    fn into_response(self) -> Response {
        (StatusCode::OK, axum::Json(json!({ "accepted": self.accepted, "rejected": self.rejected }))).into_response()
    }
}

/// A 1×1 transparent GIF.
const PIXEL_GIF: &[u8] =
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";

/// The CORS answer for a pixel request: `Err` (403) when a page of an origin not configured
/// (`tally serve --pixel-origin`) sent it; `Ok` with the headers to add otherwise.
fn pixel_cors(state: &AppState, headers: &HeaderMap) -> Result<Vec<(header::HeaderName, HeaderValue)>, Response> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(Vec::new()); // not a cross-origin browser request
    };
    let allowed = origin.to_str().is_ok_and(|o| state.config.pixel_origins.iter().any(|a| a == o));
    if !allowed {
        state.metrics.reject("origin", 1);
        return Err(native_error(StatusCode::FORBIDDEN, format!("origin {origin:?} may not send this pixel (tally serve --pixel-origin ORIGIN)")));
    }
    Ok(vec![(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone()), (header::VARY, HeaderValue::from_static("Origin"))])
}

/// `OPTIONS /v1/pixel`: the CORS preflight.
async fn pixel_preflight(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match pixel_cors(&state, &headers) {
        Ok(mut cors) => {
            cors.push((header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST, GET, OPTIONS")));
            cors.push((header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("content-type")));
            cors.push((header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400")));
            with_headers(StatusCode::NO_CONTENT.into_response(), cors)
        }
        Err(r) => r,
    }
}

/// `POST /v1/pixel`: the browser copy of conversions (`origin = 'browser'`). A page holds no
/// secret, so there is no API key: the rows' `source_id` names the pixel, which must belong to
/// an advertiser (a key created with `--source`); rows naming another pixel are refused.
async fn pixel_post(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let cors = match pixel_cors(&state, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let response = pixel_rows(&state, parse_rows(&body)).await.into_response();
    with_headers(response, cors)
}

/// `GET /v1/pixel.gif?source_id=…&event_name=…&event_id=…&event_time=…&em=…&value=…`: the same
/// as `POST /v1/pixel` with one row in the query; answers a 1×1 GIF once the row is durable.
async fn pixel_gif(State(state): State<Arc<AppState>>, headers: HeaderMap, Query(query): Query<Vec<(String, String)>>) -> Response {
    let mut cors = match pixel_cors(&state, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let mut row = serde_json::Map::new();
    for (k, v) in query {
        // Query values are text; the columns that are numbers or flags get JSON numbers/booleans.
        let value = match k.as_str() {
            "value" | "event_time" => v.parse::<f64>().ok().and_then(|n| serde_json::Number::from_f64(n).map(Value::Number)).unwrap_or(Value::String(v)),
            "is_test" | "opt_out" => v.parse::<bool>().map(Value::Bool).unwrap_or(Value::String(v)),
            _ => Value::String(v),
        };
        row.insert(k, value);
    }
    match pixel_rows(&state, vec![Ok(Value::Object(row))]).await {
        Ok(stored) if stored.accepted == 1 => {}
        Ok(stored) => {
            let error = stored.rejected.first().and_then(|r| r["error"].as_str()).unwrap_or("the row was refused").to_owned();
            return with_headers(native_error(StatusCode::BAD_REQUEST, error), cors);
        }
        Err(response) => return with_headers(response, cors),
    }
    cors.push((header::CONTENT_TYPE, HeaderValue::from_static("image/gif")));
    cors.push((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
    with_headers(PIXEL_GIF.into_response(), cors)
}

async fn pixel_rows(state: &AppState, rows: Vec<Result<Value, String>>) -> Result<Stored, Response> {
    let source = rows.iter().flatten().find_map(|r| r.get("source_id")?.as_str().map(str::to_owned));
    let Some(source) = source else {
        state.metrics.reject("invalid", rows.len().max(1) as u64);
        return Err(native_error(StatusCode::BAD_REQUEST, "`source_id` (the pixel id) is required"));
    };
    let owner = state.keys.source_owner(&source);
    let Some(advertiser_id) = owner else {
        state.metrics.reject("unknown_source", rows.len() as u64);
        return Err(native_error(StatusCode::NOT_FOUND, format!("unknown pixel `{source}`")));
    };
    let principal = Principal { key_id: format!("pixel:{source}"), advertiser_id, sources: [source].into() };
    rate_limit(state, &principal)?;
    native_rows(state, Table::Conversions, &principal, rows, Some("browser")).await
}

fn with_headers(mut response: Response, headers: Vec<(header::HeaderName, HeaderValue)>) -> Response {
    response.headers_mut().extend(headers);
    response
}

/// Appends valid rows to the WAL (resolving once they are fsynced) and counts it.
async fn append(state: &AppState, table: Table, batch: &RecordBatch) -> Result<(), WalError> {
    if batch.num_rows() == 0 {
        return Ok(());
    }
    let started = Instant::now();
    let appended = state.wal.append(table, batch).await;
    let m = &state.metrics;
    m.wal_append.observe(started.elapsed());
    match &appended {
        Ok(()) => m.accepted[table as usize].fetch_add(batch.num_rows() as u64, Ordering::Relaxed),
        Err(_) => m.wal_failures.fetch_add(1, Ordering::Relaxed),
    };
    appended
}

/// Keeps the conversions whose `source_id` the key may write to; the others are row errors.
fn own_sources_only(batch: &RecordBatch, kept: &[usize], principal: &Principal) -> (RecordBatch, Vec<RowError>) {
    let sources = batch.column_by_name("source_id").expect("conversions have source_id").as_string::<i32>();
    let mut errors = Vec::new();
    let mask: BooleanArray = (0..batch.num_rows())
        .map(|i| {
            let ok = principal.sources.contains(sources.value(i));
            if !ok {
                errors.push(RowError {
                    row: kept[i],
                    column: "source_id".into(),
                    message: format!("source `{}` is not one this key may write to", sources.value(i)),
                });
            }
            Some(ok)
        })
        .collect();
    if errors.is_empty() {
        return (batch.clone(), errors);
    }
    (filter_record_batch(batch, &mask).expect("mask fits"), errors)
}

/// Rows from a vendor dialect, validated all-or-nothing and appended to the WAL.
enum Outcome {
    /// Stored; rows and how many identifiers arrived in plaintext.
    Stored { rows: usize, hashed_on_arrival: usize },
    /// A row is invalid: its index, input column and message (nothing stored).
    Invalid { row: usize, column: String, message: String, plaintext_refused: bool },
    /// The WAL could not take the rows (nothing acknowledged).
    Unavailable(WalError),
}

async fn store_all_or_nothing(state: &AppState, principal: &Principal, raw: &RecordBatch, unreadable: &[RowError]) -> Outcome {
    let ctx = Context::for_table(&state.store, Table::Conversions, state.pseudonymizer.clone(), Some(principal.advertiser_id.clone()));
    let converted = match convert(Table::Conversions, raw, unreadable, &ctx) {
        Ok(c) => c,
        Err(e) => {
            return Outcome::Invalid { row: 0, column: String::new(), message: e.to_string(), plaintext_refused: false };
        }
    };
    if let Some(e) = converted.rejected.first() {
        state.metrics.reject("invalid", raw.num_rows() as u64);
        let plaintext_refused = e.message.contains("policy refuses plaintext");
        return Outcome::Invalid { row: e.row, column: e.column.clone(), message: e.message.clone(), plaintext_refused };
    }
    if let Err(e) = append(state, Table::Conversions, &converted.batch).await {
        return Outcome::Unavailable(e);
    }
    Outcome::Stored { rows: converted.batch.num_rows(), hashed_on_arrival: converted.hashed_on_arrival }
}

fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Meta's error envelope with an HTTP status.
fn capi_fail(status: StatusCode, message: &str, code: i64, subcode: Option<i64>, transient: bool) -> Response {
    let body = dialect::capi_error(message, code, subcode, transient);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        return (status, [(header::RETRY_AFTER, HeaderValue::from_static("1"))], axum::Json(body)).into_response();
    }
    (status, axum::Json(body)).into_response()
}

/// `POST /{api_version}/{pixel_id}/events` — Meta Conversions API.
async fn capi_events(
    State(state): State<Arc<AppState>>,
    Path((api_version, pixel_id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Response {
    let version_ok = api_version
        .strip_prefix('v')
        .and_then(|v| v.split_once('.'))
        .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty() && a.bytes().all(|c| c.is_ascii_digit()) && b.bytes().all(|c| c.is_ascii_digit()));
    if !version_ok {
        return capi_fail(StatusCode::BAD_REQUEST, &format!("Unknown path components: /{api_version}"), 2500, None, false);
    }
    let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let parsed = if content_type.starts_with("multipart/form-data") {
        match axum::extract::Multipart::from_request(request, &()).await {
            Ok(mut multipart) => {
                let mut pairs = Vec::new();
                loop {
                    match multipart.next_field().await {
                        Ok(Some(field)) => {
                            let name = field.name().unwrap_or("").to_owned();
                            match field.text().await {
                                Ok(text) => pairs.push((name, text)),
                                Err(e) => {
                                    return capi_fail(StatusCode::BAD_REQUEST, &format!("unreadable multipart field: {e}"), 100, None, false);
                                }
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            return capi_fail(e.status(), &format!("invalid multipart body: {}", e.body_text()), 100, None, false);
                        }
                    }
                }
                dialect::capi_request_from_form(pairs, now_unix())
            }
            Err(e) => return capi_fail(StatusCode::BAD_REQUEST, &e.body_text(), 100, None, false),
        }
    } else {
        let body = match Bytes::from_request(request, &()).await {
            Ok(b) => b,
            Err(e) => return capi_fail(e.status(), &e.body_text(), 100, None, false),
        };
        if content_type.starts_with("application/x-www-form-urlencoded") {
            match serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body) {
                Ok(pairs) => dialect::capi_request_from_form(pairs, now_unix()),
                Err(e) => {
                    return capi_fail(StatusCode::BAD_REQUEST, &format!("invalid form body: {e}"), 100, None, false);
                }
            }
        } else {
            dialect::capi_request_from_json(&body, now_unix())
        }
    };
    let req = match parsed {
        Ok(r) => r,
        Err(e) => {
            return capi_fail(StatusCode::BAD_REQUEST, &e.to_string(), 100, e.capi_subcode(), false);
        }
    };
    let token = query.get("access_token").cloned().or_else(|| req.access_token.clone());
    let Some(principal) = token.as_deref().and_then(|t| state.keys.authenticate(t)) else {
        state.metrics.reject("unauthorized", req.len() as u64);
        return capi_fail(StatusCode::UNAUTHORIZED, "Invalid OAuth access token - Cannot parse access token", 190, None, false);
    };
    if let Err(r) = rate_limit(&state, &principal) {
        return r;
    }
    if !principal.sources.contains(&pixel_id) {
        state.metrics.reject("forbidden", req.len() as u64);
        return capi_fail(
            StatusCode::FORBIDDEN,
            &format!(
                "Unsupported post request. Object with ID '{pixel_id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation"
            ),
            100,
            Some(33),
            false,
        );
    }
    let events = req.len() as u64;
    let raw = match dialect::capi_rows(&pixel_id, req) {
        Ok(raw) => raw,
        Err(e) => {
            state.metrics.reject("invalid", events);
            return capi_fail(StatusCode::BAD_REQUEST, &e.to_string(), 100, e.capi_subcode(), false);
        }
    };
    match store_all_or_nothing(&state, &principal, &raw, &[]).await {
        Outcome::Stored { rows, hashed_on_arrival } => {
            let mut messages = Vec::new();
            if hashed_on_arrival > 0 {
                messages.push(format!("{hashed_on_arrival} customer information values arrived unhashed; they were normalized and SHA-256 hashed on arrival"));
            }
            (StatusCode::OK, axum::Json(dialect::capi_success(rows, messages))).into_response()
        }
        Outcome::Invalid { row, column, message, plaintext_refused } => {
            let at = if column.is_empty() { "$['data']".to_owned() } else { dialect::capi_path(row, &column) };
            let subcode = plaintext_refused.then_some(2_804_016);
            capi_fail(StatusCode::BAD_REQUEST, &format!("Invalid parameter at {at}: {message}"), 100, subcode, false)
        }
        Outcome::Unavailable(e) => capi_fail(StatusCode::SERVICE_UNAVAILABLE, &e.to_string(), 2, None, true),
    }
}

/// TikTok answers HTTP 200 with its own code (0 = OK, 40001 auth, 40002 parameter).
fn tiktok_reply(code: i64, message: &str) -> Response {
    if code == 0 {
        return (StatusCode::OK, axum::Json(dialect::tiktok_ok(&dialect::tiktok_request_id()))).into_response();
    }
    (StatusCode::OK, axum::Json(dialect::tiktok_error(code, message))).into_response()
}

async fn tiktok_events(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    tiktok(&state, &headers, dialect::TiktokShape::Events, dialect::tiktok_events_rows(&body, now_unix())).await
}

async fn tiktok_pixel_track(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    tiktok(&state, &headers, dialect::TiktokShape::PixelTrack, dialect::tiktok_pixel_rows(&body, false, now_unix())).await
}

async fn tiktok_pixel_batch(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    tiktok(&state, &headers, dialect::TiktokShape::PixelBatch, dialect::tiktok_pixel_rows(&body, true, now_unix())).await
}

async fn tiktok(
    state: &AppState,
    headers: &HeaderMap,
    shape: dialect::TiktokShape,
    parsed: Result<(String, Vec<serde_json::Map<String, Value>>), dialect::DialectError>,
) -> Response {
    let token = headers.get("access-token").and_then(|v| v.to_str().ok());
    let Some(principal) = token.and_then(|t| state.keys.authenticate(t)) else {
        state.metrics.reject("unauthorized", 1);
        return tiktok_reply(40001, "Access token is incorrect or has been revoked.");
    };
    if let Err(r) = rate_limit(state, &principal) {
        return r;
    }
    let (pixel, rows) = match parsed {
        Ok(p) => p,
        Err(e) => return tiktok_reply(40002, &e.to_string()),
    };
    if !principal.sources.contains(&pixel) {
        state.metrics.reject("forbidden", rows.len() as u64);
        return tiktok_reply(40001, &format!("No permission to operate pixel code {pixel}"));
    }
    let (raw, unreadable) = json_rows(rows.into_iter().map(|r| Ok(Value::Object(r))).collect());
    match store_all_or_nothing(state, &principal, &raw, &unreadable).await {
        Outcome::Stored { .. } => tiktok_reply(0, "OK"),
        Outcome::Invalid { row, column, message, .. } => {
            let at = if column.is_empty() { "data".to_owned() } else { dialect::tiktok_path(row, &column, shape) };
            tiktok_reply(40002, &format!("{at}: {message}"))
        }
        Outcome::Unavailable(e) => {
            (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, HeaderValue::from_static("1"))], axum::Json(dialect::tiktok_error(50002, &e.to_string())))
                .into_response()
        }
    }
}
