//! The served OpenAPI document (`GET /openapi.json`): every endpoint of [`crate::server`],
//! its request bodies and every answer, error bodies included, generated with `utoipa` from
//! the declarations below. The end-to-end test `openapi_document_covers_every_route` calls
//! every documented path on a real server (none may be unknown) and checks the SPEC's
//! endpoints are all documented.

#![allow(dead_code)] // the types and functions here exist to be described, not called

use utoipa::{OpenApi, ToSchema};

/// The OpenAPI 3.1 document of `tally serve`.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Tally ingestion API", description = "Server-side conversions and touchpoints: Meta CAPI and TikTok Events API compatible, plus native JSON. A 2xx means every accepted event is durable (fsynced to the write-ahead log)."),
    paths(capi_events, tiktok_events, tiktok_pixel_track, tiktok_pixel_batch, native_events, native_touchpoints, pixel_post, pixel_preflight, pixel_gif, healthz, readyz, metrics, openapi_json),
    components(schemas(
        CapiBody, CapiEvent, CapiUserData, CapiCustomData, CapiSuccess, CapiError, CapiErrorDetail,
        TikTokEventsBody, TikTokEvent, TikTokUser, TikTokProperties, TikTokPixelTrack, TikTokPixelBatch, TikTokReply,
        ConversionRow, TouchpointRow, RowsResult, RowRejection, NativeError
    )),
    tags((name = "meta", description = "Meta Conversions API compatible"), (name = "tiktok", description = "TikTok Events API compatible"), (name = "native", description = "Tally's own endpoints"), (name = "operations"))
)]
struct ApiDoc;

// ---- Meta CAPI ----

/// A Conversions API request (JSON; also form-encoded or multipart with `data` as a JSON array
/// of events or of JSON-encoded events).
#[derive(ToSchema)]
struct CapiBody {
    /// 1 to 1,000 events; all are stored or none.
    data: Vec<CapiEvent>,
    /// Present: the events are stored flagged as test events.
    test_event_code: Option<String>,
    /// The API key, when not in the query string.
    access_token: Option<String>,
    partner_agent: Option<String>,
}

#[derive(ToSchema)]
struct CapiEvent {
    event_name: String,
    /// Unix seconds, within the last 7 days and at most 10 minutes ahead.
    event_time: i64,
    event_id: Option<String>,
    action_source: Option<String>,
    opt_out: Option<bool>,
    user_data: Option<CapiUserData>,
    custom_data: Option<CapiCustomData>,
}

/// Identifiers as SHA-256 hex (or plaintext, normalized and hashed on arrival unless the policy
/// refuses plaintext); a string or a list (the first non-empty value counts).
#[derive(ToSchema)]
struct CapiUserData {
    em: Option<Vec<String>>,
    ph: Option<Vec<String>>,
    external_id: Option<Vec<String>>,
    /// US state (stored in plain as `geo_state` when `country` is absent or `us`).
    st: Option<Vec<String>>,
    country: Option<Vec<String>>,
    /// Stored as `click_id`.
    fbc: Option<String>,
    /// Reduced to `device_os`.
    client_user_agent: Option<String>,
}

#[derive(ToSchema)]
struct CapiCustomData {
    value: Option<f64>,
    /// ISO 4217.
    currency: Option<String>,
    order_id: Option<String>,
}

#[derive(ToSchema)]
struct CapiSuccess {
    events_received: usize,
    messages: Vec<String>,
    fbtrace_id: String,
}

/// Meta's error envelope.
#[derive(ToSchema)]
struct CapiError {
    error: CapiErrorDetail,
}

#[derive(ToSchema)]
struct CapiErrorDetail {
    /// Names the offending field as `$['data'][i]['user_data']['em']`.
    message: String,
    #[schema(example = "OAuthException")]
    r#type: String,
    /// 100 invalid parameter, 190 bad token, 2 unavailable (retry), 4 rate limit.
    code: i64,
    /// e.g. 2804003 event too old, 2804016 plaintext refused by policy.
    error_subcode: Option<i64>,
    error_user_title: Option<String>,
    error_user_msg: Option<String>,
    is_transient: bool,
    fbtrace_id: String,
}

#[utoipa::path(post, path = "/{api_version}/{pixel_id}/events", tag = "meta",
    params(("api_version" = String, Path, description = "v<major>.<minor>, e.g. v19.0"), ("pixel_id" = String, Path, description = "a source of the key's advertiser"), ("access_token" = Option<String>, Query, description = "the API key (or in the body)")),
    request_body(content = CapiBody, description = "JSON, form-encoded or multipart"),
    responses(
        (status = 200, description = "every event durable", body = CapiSuccess),
        (status = 400, description = "an invalid event or body; nothing stored", body = CapiError),
        (status = 401, description = "missing or unknown token", body = CapiError),
        (status = 403, description = "the pixel is not the key's advertiser's; nothing stored", body = CapiError),
        (status = 413, description = "body over --max-body-bytes"),
        (status = 429, description = "rate limit; Retry-After", body = CapiError),
        (status = 503, description = "storage cannot accept; Retry-After; nothing stored", body = CapiError),
    ))]
fn capi_events() {}

// ---- TikTok ----

/// Events API 2.0 body.
#[derive(ToSchema)]
struct TikTokEventsBody {
    #[schema(example = "web")]
    event_source: String,
    /// The pixel (a source of the key's advertiser).
    event_source_id: String,
    test_event_code: Option<String>,
    data: Vec<TikTokEvent>,
}

#[derive(ToSchema)]
struct TikTokEvent {
    event: String,
    /// Unix seconds or ISO 8601.
    event_time: String,
    event_id: Option<String>,
    user: Option<TikTokUser>,
    properties: Option<TikTokProperties>,
}

#[derive(ToSchema)]
struct TikTokUser {
    email: Option<String>,
    /// E.164; normalized to the same digits as Meta's before hashing.
    phone: Option<String>,
    external_id: Option<String>,
    ttclid: Option<String>,
    user_agent: Option<String>,
}

#[derive(ToSchema)]
struct TikTokProperties {
    value: Option<f64>,
    currency: Option<String>,
    order_id: Option<String>,
}

/// Legacy `pixel/track` body (what the official business SDK sends).
#[derive(ToSchema)]
struct TikTokPixelTrack {
    pixel_code: String,
    event: String,
    event_id: Option<String>,
    /// ISO 8601.
    timestamp: Option<String>,
    test_event_code: Option<String>,
    context: Option<serde_json::Value>,
    properties: Option<TikTokProperties>,
}

/// Legacy `pixel/batch` body.
#[derive(ToSchema)]
struct TikTokPixelBatch {
    pixel_code: String,
    batch: Vec<TikTokPixelTrack>,
}

/// TikTok's answer, success or error (HTTP 200 for 40001/40002, as TikTok).
#[derive(ToSchema)]
struct TikTokReply {
    /// 0 OK; 40001 authentication; 40002 invalid parameter; 40100 rate limit; 50002 unavailable.
    code: i64,
    message: String,
    request_id: String,
    data: serde_json::Value,
}

#[utoipa::path(post, path = "/open_api/v1.3/event/track/", tag = "tiktok",
    params(("Access-Token" = String, Header, description = "the API key")),
    request_body = TikTokEventsBody,
    responses(
        (status = 200, description = "code 0: every event durable; 40001/40002: refused, nothing stored", body = TikTokReply),
        (status = 403, description = "the pixel is not the key's advertiser's", body = TikTokReply),
        (status = 413, description = "body over --max-body-bytes"),
        (status = 429, description = "rate limit (code 40100); Retry-After", body = TikTokReply),
        (status = 503, description = "storage cannot accept (code 50002); Retry-After", body = TikTokReply),
    ))]
fn tiktok_events() {}

#[utoipa::path(post, path = "/open_api/v1.3/pixel/track/", tag = "tiktok",
    params(("Access-Token" = String, Header, description = "the API key")),
    request_body = TikTokPixelTrack,
    responses(
        (status = 200, description = "code 0 or a TikTok error code", body = TikTokReply),
        (status = 403, body = TikTokReply), (status = 413, description = "too large"), (status = 429, body = TikTokReply), (status = 503, body = TikTokReply),
    ))]
fn tiktok_pixel_track() {}

#[utoipa::path(post, path = "/open_api/v1.3/pixel/batch/", tag = "tiktok",
    params(("Access-Token" = String, Header, description = "the API key")),
    request_body = TikTokPixelBatch,
    responses(
        (status = 200, description = "code 0 or a TikTok error code", body = TikTokReply),
        (status = 403, body = TikTokReply), (status = 413, description = "too large"), (status = 429, body = TikTokReply), (status = 503, body = TikTokReply),
    ))]
fn tiktok_pixel_batch() {}

// ---- native ----

/// A `conversions` row (SPEC 5). Identifiers as SHA-256 hex or plaintext (`email`, `phone`
/// also accepted); times as RFC 3339 or unix seconds; the advertiser comes from the key.
#[derive(ToSchema)]
struct ConversionRow {
    source_id: String,
    event_id: Option<String>,
    event_name: String,
    event_time: String,
    /// `server` (default) or `browser`.
    origin: Option<String>,
    action_source: Option<String>,
    em: Option<String>,
    ph: Option<String>,
    external_id: Option<String>,
    click_id: Option<String>,
    device_os: Option<String>,
    geo_state: Option<String>,
    value: Option<f64>,
    currency: Option<String>,
    order_id: Option<String>,
    is_test: Option<bool>,
    opt_out: Option<bool>,
}

/// A `touchpoints` row (SPEC 5).
#[derive(ToSchema)]
struct TouchpointRow {
    touch_id: String,
    channel: String,
    campaign_id: String,
    adgroup_id: Option<String>,
    ad_id: Option<String>,
    /// `impression` or `click`.
    touch_type: String,
    touch_time: String,
    em: Option<String>,
    ph: Option<String>,
    external_id: Option<String>,
    click_id: Option<String>,
    device_os: Option<String>,
    geo_state: Option<String>,
    cost: Option<f64>,
}

/// Per-row partial success: good rows are durable, bad ones listed.
#[derive(ToSchema)]
struct RowsResult {
    accepted: usize,
    rejected: Vec<RowRejection>,
}

#[derive(ToSchema)]
struct RowRejection {
    /// The row's position in the body.
    index: usize,
    /// Names the column and the reason.
    error: String,
}

#[derive(ToSchema)]
struct NativeError {
    error: String,
}

#[utoipa::path(post, path = "/v1/events", tag = "native",
    params(("Authorization" = String, Header, description = "Bearer KEY")),
    request_body(content = Vec<ConversionRow>, description = "a JSON array, one object, or JSON lines (application/x-ndjson)"),
    responses(
        (status = 200, description = "per-row result", body = RowsResult),
        (status = 400, description = "unusable body (no rows, unknown column)", body = NativeError),
        (status = 401, description = "missing or unknown key", body = NativeError),
        (status = 413, description = "body over --max-body-bytes"),
        (status = 429, description = "rate limit; Retry-After", body = NativeError),
        (status = 503, description = "storage cannot accept; Retry-After; nothing stored", body = NativeError),
    ))]
fn native_events() {}

#[utoipa::path(post, path = "/v1/touchpoints", tag = "native",
    params(("Authorization" = String, Header, description = "Bearer KEY")),
    request_body(content = Vec<TouchpointRow>, description = "a JSON array, one object, or JSON lines"),
    responses(
        (status = 200, description = "per-row result", body = RowsResult),
        (status = 400, body = NativeError), (status = 401, body = NativeError), (status = 413, description = "too large"),
        (status = 429, body = NativeError), (status = 503, body = NativeError),
    ))]
fn native_touchpoints() {}

#[utoipa::path(post, path = "/v1/pixel", tag = "native",
    description = "The browser copy of conversions, stored with origin = 'browser'. No key: the rows' source_id names the pixel. Requests with an Origin not configured (--pixel-origin) get 403.",
    request_body(content = Vec<ConversionRow>, description = "a JSON object, array or JSON lines"),
    responses(
        (status = 200, description = "per-row result; CORS headers for configured origins", body = RowsResult),
        (status = 400, description = "no source_id or unusable body", body = NativeError),
        (status = 403, description = "origin not allowed", body = NativeError),
        (status = 404, description = "unknown pixel", body = NativeError),
        (status = 429, body = NativeError), (status = 503, body = NativeError),
    ))]
fn pixel_post() {}

#[utoipa::path(options, path = "/v1/pixel", tag = "native",
    responses((status = 204, description = "CORS preflight for a configured origin"), (status = 403, description = "origin not allowed", body = NativeError)))]
fn pixel_preflight() {}

#[utoipa::path(get, path = "/v1/pixel.gif", tag = "native",
    description = "One browser conversion in the query string; answers a 1×1 GIF once it is durable.",
    params(
        ("source_id" = String, Query), ("event_name" = String, Query), ("event_time" = String, Query, description = "unix seconds or RFC 3339"),
        ("event_id" = Option<String>, Query), ("em" = Option<String>, Query), ("ph" = Option<String>, Query), ("external_id" = Option<String>, Query),
        ("value" = Option<f64>, Query), ("currency" = Option<String>, Query), ("order_id" = Option<String>, Query), ("click_id" = Option<String>, Query),
    ),
    responses(
        (status = 200, description = "stored", content_type = "image/gif"),
        (status = 400, description = "the row was refused (reason given)", body = NativeError),
        (status = 403, body = NativeError), (status = 404, body = NativeError), (status = 429, body = NativeError), (status = 503, body = NativeError),
    ))]
fn pixel_gif() {}

// ---- operations ----

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "the process is up", content_type = "text/plain")))]
fn healthz() {}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "ready", content_type = "text/plain"), (status = 503, description = "flush backlog too large; Retry-After", content_type = "text/plain")))]
fn readyz() {}

#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text: requests, events accepted/rejected by reason, WAL and flush counters", content_type = "text/plain")))]
fn metrics() {}

#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "this document", content_type = "application/json")))]
fn openapi_json() {}

#[cfg(test)]
mod tests {
    #[test]
    fn document_lists_every_path_with_its_error_bodies() {
        let doc = serde_json::to_value(super::document()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        assert_eq!(paths.len(), 12, "{:?}", paths.keys().collect::<Vec<_>>());
        let capi = &paths["/{api_version}/{pixel_id}/events"]["post"]["responses"];
        for status in ["200", "400", "401", "403", "413", "429", "503"] {
            assert!(capi.get(status).is_some(), "CAPI documents {status}");
        }
        assert!(doc["components"]["schemas"]["CapiErrorDetail"]["properties"]["error_subcode"].is_object());
    }
}
