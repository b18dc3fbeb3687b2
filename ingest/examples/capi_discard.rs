//! The parse-and-discard peer of the ingest benchmark (`ingest/benches/serve_throughput.py`):
//! a minimal axum server that deserializes a Meta CAPI JSON body into typed structs, checks
//! the token is present, and answers Meta's success body — no validation, no hashing, no
//! write-ahead log, no fsync. What Tally's durable path is compared against.
//!
//! `cargo run -p tally-ingest --example capi_discard -- 127.0.0.1:0` prints `listening on http://ADDR`.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};

#[path = "common/capi_peer.rs"]
mod capi_peer;
use capi_peer::Body;

async fn events(Path((_version, _pixel)): Path<(String, String)>, Query(query): Query<HashMap<String, String>>, body: axum::body::Bytes) -> (StatusCode, Json<Value>) {
    match serde_json::from_slice::<Body>(&body) {
        Ok(b) if query.contains_key("access_token") || b.access_token.is_some() => {
            (StatusCode::OK, Json(json!({ "events_received": b.data.len(), "messages": [], "fbtrace_id": "discard" })))
        }
        Ok(_) => (StatusCode::UNAUTHORIZED, Json(json!({ "error": { "message": "no access token" } }))),
        Err(e) => (StatusCode::BAD_REQUEST, Json(json!({ "error": { "message": e.to_string() } }))),
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let app = axum::Router::new()
        .route("/{version}/{pixel}/events", post(events))
        .layer(axum::extract::DefaultBodyLimit::max(8 * 1024 * 1024));
    axum::serve(listener, app).await
}
