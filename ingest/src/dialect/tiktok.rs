//! TikTok dialects (SPEC 3.2): Events API 2.0 and the legacy pixel endpoints.
//!
//! Advertisers send TikTok server events in two shapes: Events API 2.0
//! (`POST /open_api/v1.3/event/track/`, events under `data[]` with `user`, `properties`,
//! `page`) and the legacy pixel API (`/pixel/track/` for one event, `/pixel/batch/` for a
//! `batch[]`, identifiers under `context.user`, the click id in `context.ad.callback`) —
//! the only one the official Python SDK (`tiktok-business-api-sdk-official`) calls. Both
//! become `conversions` rows here; [`tiktok_path`] names a row error in the sender's terms
//! and [`tiktok_ok`] / [`tiktok_error`] build TikTok's response bodies. Holds no state.
//!
//! TikTok wants identifiers SHA-256 hashed but senders (the SDK included) often send them
//! plain; either passes through to `convert`, which hashes plaintext by policy. TikTok
//! phones are E.164 (`+16505551212`): `convert` normalizes them to the same digits as Meta's.

use serde_json::{Map, Value, json};

use super::{DialectError, Field, MAX_EVENTS, event_time, first_value, object, put, random_bytes, scalar, text, time_text};

/// Which TikTok body a path refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TiktokShape {
    /// Events API 2.0: `{"event_source_id", "data": [...]}`.
    Events,
    /// Legacy `/pixel/track/`: one event at the top level.
    PixelTrack,
    /// Legacy `/pixel/batch/`: `{"pixel_code", "batch": [...]}`.
    PixelBatch,
}

/// Events API 2.0 (`POST /open_api/v1.3/event/track/`): the pixel code (`event_source_id`)
/// and one `conversions` row per event of `data`, or the first reason to refuse the request.
///
/// Mapping: `event` → `event_name`, `event_time` (unix seconds or ISO 8601, within the
/// last 7 days and at most 10 minutes ahead of `now_unix`), `event_id`;
/// `user.{email, phone, external_id}` → `em`, `ph`, `external_id` (first non-empty of a string
/// or list); `user.ttclid` → `click_id`; `user.user_agent` → `device_os`;
/// `properties.{value, currency, order_id}`; `event_source` → `action_source` (`web` →
/// `website`, `offline` → `physical_store`, else as sent); `is_test` = `test_event_code`
/// present. `user.ip`, `user.ttp`, `page`, `limited_data_use` and unknown keys are dropped.
pub fn tiktok_events_rows(body: &[u8], now_unix: i64) -> Result<(String, Vec<Map<String, Value>>), DialectError> {
    let body = parse_body(body)?;
    let source = required_text(&body, "event_source_id")?;
    let is_test = test_code(&body)?;
    let action_source =
        text(body.get("event_source")).map_err(|m| DialectError::new(None, "event_source", m))?.map(|s| match s.to_ascii_lowercase().as_str() {
            "web" => "website".to_owned(),
            "offline" => "physical_store".to_owned(),
            other => other.to_owned(),
        });
    let events = events(&body, "data")?;
    let rows = events
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = At { index: Some(i), prefix: format!("data[{i}]") };
            let event = at.event(item)?;
            let mut row = base_row(&source, is_test);
            put(&mut row, "action_source", action_source.clone());
            common(&at, event, "event_time", true, now_unix, &mut row)?;
            if let Some(user) = at.object(event, "user")? {
                identifiers(&at, "user", user, ["phone", "phone_number"], &mut row)?;
                put(&mut row, "click_id", at.text(user, "user.ttclid", "ttclid")?);
                put(&mut row, "device_os", at.text(user, "user.user_agent", "user_agent")?.map(|ua| super::device_os(&ua)));
            }
            if !row.contains_key("click_id")
                && let Some(ad) = at.object(event, "ad")?
            {
                put(&mut row, "click_id", at.text(ad, "ad.callback", "callback")?);
            }
            Ok(row)
        })
        .collect::<Result<Vec<_>, DialectError>>()?;
    Ok((source, rows))
}

/// Legacy pixel API: `/pixel/track/` (`batch == false`, one event at the top level) or
/// `/pixel/batch/` (`batch == true`, events under `batch`), as the official SDK sends them:
/// `{"pixel_code", "event", "event_id", "timestamp" (ISO 8601), "context": {"user": {"email",
/// "phone_number", "external_id", "ttp"}, "ad": {"callback"}, "user_agent", "ip", "page"},
/// "properties": {"value", "currency", "contents", ...}, "test_event_code"}`. Returns the
/// pixel code and the rows. `context.ad.callback` is the ttclid (`click_id`); a missing
/// `timestamp` means now (TikTok stamps such events on receipt); `action_source` is `website`.
pub fn tiktok_pixel_rows(body: &[u8], batch: bool, now_unix: i64) -> Result<(String, Vec<Map<String, Value>>), DialectError> {
    let body = parse_body(body)?;
    let source = required_text(&body, "pixel_code")?;
    let is_test = test_code(&body)?;
    let one;
    let items: &[Value] = if batch {
        events(&body, "batch")?
    } else {
        one = [Value::Object(body.clone())];
        &one
    };
    let rows = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = if batch { At { index: Some(i), prefix: format!("batch[{i}]") } } else { At { index: None, prefix: String::new() } };
            let event = at.event(item)?;
            let mut row = base_row(&source, is_test);
            row.insert("action_source".into(), "website".into());
            let stamped;
            let event = if event.get("timestamp").is_none_or(Value::is_null) {
                let mut copy = event.clone();
                copy.insert("timestamp".into(), now_unix.into());
                stamped = copy;
                &stamped
            } else {
                event
            };
            common(&at, event, "timestamp", true, now_unix, &mut row)?;
            if let Some(context) = at.object(event, "context")? {
                let sub = At { index: at.index, prefix: at.join("context") };
                if let Some(user) = sub.object(context, "user")? {
                    identifiers(&sub, "user", user, ["phone_number", "phone"], &mut row)?;
                }
                if let Some(ad) = sub.object(context, "ad")? {
                    put(&mut row, "click_id", sub.text(ad, "ad.callback", "callback")?);
                }
                put(&mut row, "device_os", sub.text(context, "user_agent", "user_agent")?.map(|ua| super::device_os(&ua)));
            }
            Ok(row)
        })
        .collect::<Result<Vec<_>, DialectError>>()?;
    Ok((source, rows))
}

/// Where an event sits: its index and its path prefix (`data[2]`, `batch[2]`, or empty for a
/// single pixel event).
struct At {
    index: Option<usize>,
    prefix: String,
}

impl At {
    fn join(&self, rel: &str) -> String {
        match (self.prefix.is_empty(), rel.is_empty()) {
            (true, true) => "body".to_owned(),
            (true, false) => rel.to_owned(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}.{rel}", self.prefix),
        }
    }

    fn err(&self, rel: &str, message: &str) -> DialectError {
        DialectError::new(self.index, self.join(rel), message)
    }

    fn event<'a>(&self, item: &'a Value) -> Result<&'a Map<String, Value>, DialectError> {
        item.as_object().ok_or_else(|| self.err("", "must be an event object"))
    }

    fn object<'a>(&self, parent: &'a Map<String, Value>, key: &str) -> Result<Option<&'a Map<String, Value>>, DialectError> {
        object(parent.get(key)).map_err(|m| self.err(key, m))
    }

    fn text(&self, parent: &Map<String, Value>, rel: &str, key: &str) -> Result<Option<String>, DialectError> {
        text(parent.get(key)).map_err(|m| self.err(rel, m))
    }
}

fn parse_body(body: &[u8]) -> Result<Map<String, Value>, DialectError> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(DialectError::new(None, "body", "the body must be a JSON object")),
        Err(e) => Err(DialectError::new(None, "body", format!("the body is not valid JSON: {e}"))),
    }
}

fn required_text(body: &Map<String, Value>, key: &str) -> Result<String, DialectError> {
    text(body.get(key)).map_err(|m| DialectError::new(None, key, m))?.ok_or_else(|| DialectError::new(None, key, format!("`{key}` is required")))
}

fn test_code(body: &Map<String, Value>) -> Result<bool, DialectError> {
    Ok(text(body.get("test_event_code")).map_err(|m| DialectError::new(None, "test_event_code", m))?.is_some())
}

fn events<'a>(body: &'a Map<String, Value>, key: &str) -> Result<&'a [Value], DialectError> {
    let items = match body.get(key) {
        Some(Value::Array(items)) => items.as_slice(),
        None | Some(Value::Null) => {
            return Err(DialectError::new(None, key, format!("`{key}` is required")));
        }
        Some(_) => {
            return Err(DialectError::new(None, key, format!("`{key}` must be an array of events")));
        }
    };
    if items.len() > MAX_EVENTS {
        return Err(DialectError::new(None, key, format!("`{key}` holds {} events; at most {MAX_EVENTS} are accepted per request", items.len())));
    }
    if items.is_empty() {
        return Err(DialectError::new(None, key, format!("`{key}` holds no events")));
    }
    Ok(items)
}

fn base_row(source: &str, is_test: bool) -> Map<String, Value> {
    let mut row = Map::new();
    row.insert("source_id".into(), source.into());
    row.insert("origin".into(), "server".into());
    row.insert("is_test".into(), is_test.into());
    row
}

/// `event`, the time, `event_id` and `properties`, common to both shapes.
fn common(at: &At, event: &Map<String, Value>, time_key: &str, iso: bool, now_unix: i64, row: &mut Map<String, Value>) -> Result<(), DialectError> {
    let name = at.text(event, "event", "event")?.ok_or_else(|| at.err("event", "`event` is required"))?;
    row.insert("event_name".into(), name.into());
    let micros = event_time(&Field::of(event.get(time_key)), iso, now_unix).map_err(|m| {
        let m = if m.starts_with("the event") { m.to_owned() } else { format!("`{time_key}` {m}") };
        at.err(time_key, &m)
    })?;
    row.insert("event_time".into(), time_text(micros).into());
    put(row, "event_id", at.text(event, "event_id", "event_id")?);
    if let Some(props) = at.object(event, "properties")? {
        for key in ["value", "currency", "order_id"] {
            put(row, key, scalar(props.get(key)).map_err(|m| at.err(&format!("properties.{key}"), m))?);
        }
    }
    Ok(())
}

/// `email`, the phone (under either spelling) and `external_id` of a user object at `rel`.
fn identifiers(at: &At, rel: &str, user: &Map<String, Value>, phone_keys: [&str; 2], row: &mut Map<String, Value>) -> Result<(), DialectError> {
    let first = |key: &str| match user.get(key) {
        None => Ok(None),
        Some(v) => first_value(v).map_err(|m| at.err(&format!("{rel}.{key}"), m)),
    };
    put(row, "em", first("email")?);
    let phone = match first(phone_keys[0])? {
        Some(p) => Some(p),
        None => first(phone_keys[1])?,
    };
    put(row, "ph", phone);
    put(row, "external_id", first("external_id")?);
    Ok(())
}

/// The path in the sender's body for a `conversions` input column of event `index` — for
/// reporting a row error from [`crate::convert::convert`] (its `column`).
///
/// ```
/// use tally_ingest::dialect::{tiktok_path, TiktokShape};
/// assert_eq!(tiktok_path(2, "em", TiktokShape::Events), "data[2].user.email");
/// assert_eq!(tiktok_path(2, "click_id", TiktokShape::PixelBatch), "batch[2].context.ad.callback");
/// ```
pub fn tiktok_path(index: usize, column: &str, shape: TiktokShape) -> String {
    let events = shape == TiktokShape::Events;
    let pick = |e: &'static str, p: &'static str| if events { e } else { p };
    let rel = match column {
        "source_id" => return pick("event_source_id", "pixel_code").to_owned(),
        "is_test" => return "test_event_code".to_owned(),
        "action_source" if events => return "event_source".to_owned(),
        "event_name" => "event",
        "event_time" => pick("event_time", "timestamp"),
        "event_id" => "event_id",
        "em" | "em_sha256" | "email" => pick("user.email", "context.user.email"),
        "ph" | "ph_sha256" | "phone" => pick("user.phone", "context.user.phone_number"),
        "external_id" | "external_id_sha256" => pick("user.external_id", "context.user.external_id"),
        "click_id" => pick("user.ttclid", "context.ad.callback"),
        "device_os" => pick("user.user_agent", "context.user_agent"),
        "value" => "properties.value",
        "currency" => "properties.currency",
        "order_id" => "properties.order_id",
        _ => "",
    };
    let at = match shape {
        TiktokShape::Events => At { index: Some(index), prefix: format!("data[{index}]") },
        TiktokShape::PixelBatch => At { index: Some(index), prefix: format!("batch[{index}]") },
        TiktokShape::PixelTrack => At { index: None, prefix: String::new() },
    };
    at.join(rel)
}

/// A fresh TikTok-style request id: the UTC time (`YYYYMMDDhhmmss`) and 18 hex digits.
pub fn tiktok_request_id() -> String {
    format!("{}{}", chrono::Utc::now().format("%Y%m%d%H%M%S"), hex::encode_upper(random_bytes(9)))
}

/// TikTok's success body: `{"code": 0, "message": "OK", "request_id", "data": {}}`.
pub fn tiktok_ok(request_id: &str) -> Value {
    json!({"code": 0, "message": "OK", "request_id": request_id, "data": {}})
}

/// TikTok's error body with a fresh request id. `code` is TikTok's: 40001 authentication,
/// 40002 invalid parameter (also 40100 rate limit, 50002 server error). The official SDK
/// raises on any `code != 0`.
pub fn tiktok_error(code: i64, message: &str) -> Value {
    json!({"code": code, "message": message, "request_id": tiktok_request_id(), "data": {}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::{Context, convert};
    use arrow::array::AsArray;
    use tally_core::ident::PlaintextMode;
    use tally_core::schema::Table;
    use tally_core::{HashedId, Pseudonymizer};

    /// `tiktok-business-api-sdk-official` 1.1.3, `EventCallbackApi.pixel_track("TTTOKEN",
    /// body=PixelTrackBody(...))`: the body it posted to `/open_api/v1.3/pixel/track/`
    /// (header `Access-Token`), captured from a local server. No hashing by the SDK.
    const SDK_TRACK: &str = r#"{"context": {"ad": {"callback": "E.C.P.cb123"}, "ip": "203.0.113.9", "page": {"referrer": "https://www.tiktok.com/", "url": "https://shop.example/p"}, "user": {"email": "jane.doe@example.com", "external_id": "cust-42", "phone_number": "+16505551212", "ttp": "ttp-abc"}, "user_agent": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Mobile Safari/537.36"}, "event": "CompletePayment", "event_id": "tt-1", "pixel_code": "CPIXEL123", "properties": {"contents": [{"content_id": "sku-1", "content_type": "product", "price": 10.5, "quantity": 2}], "currency": "USD", "value": 21.0}, "timestamp": "2023-11-14T22:13:20Z"}"#;

    /// The same SDK's `pixel_batch` body (`/open_api/v1.3/pixel/batch/`): two events, the
    /// second with an empty `ad` and no identifiers, each with `"type": "track"`.
    const SDK_BATCH: &str = r#"{"batch": [{"context": {"ad": {"callback": "E.C.P.cb124"}, "ip": "203.0.113.9", "page": {"referrer": "https://www.tiktok.com/", "url": "https://shop.example/p"}, "user": {"email": "5f0d2a4e1d4a0d5f5b5c9f1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f", "external_id": "cust-43", "phone_number": "+16505551212", "ttp": "ttp-abc"}, "user_agent": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Mobile Safari/537.36"}, "event": "CompletePayment", "event_id": "tt-2", "properties": {"contents": [{"content_id": "sku-1", "content_type": "product", "price": 10.5, "quantity": 2}], "currency": "USD", "value": 21.0}, "timestamp": "2023-11-14T22:13:20Z", "type": "track"}, {"context": {"ad": {}, "ip": "203.0.113.9", "page": {"referrer": "https://www.tiktok.com/", "url": "https://shop.example/p"}, "user": {"ttp": "ttp-abc"}, "user_agent": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Mobile Safari/537.36"}, "event": "AddToCart", "event_id": "tt-3", "properties": {"currency": "USD", "value": 5}, "timestamp": "2023-11-14T22:14:20Z", "type": "track"}], "pixel_code": "CPIXEL123"}"#;

    const NOW: i64 = 1_700_000_100;
    /// SHA-256 of "jane.doe@example.com" and of "16505551212" (hashlib).
    const JANE_EM: &str = "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d";
    const JANE_PH: &str = "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176";

    fn events_body(data: Vec<Value>) -> Vec<u8> {
        json!({"event_source": "web", "event_source_id": "CPIXEL9", "data": data}).to_string().into_bytes()
    }

    fn ev(extra: Value) -> Value {
        let mut e = json!({"event": "CompletePayment", "event_time": 1_700_000_000});
        e.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        e
    }

    #[test]
    fn sdk_pixel_track() {
        let (pixel, rows) = tiktok_pixel_rows(SDK_TRACK.as_bytes(), false, NOW).unwrap();
        assert_eq!(pixel, "CPIXEL123");
        let want = json!({
            "source_id": "CPIXEL123", "origin": "server", "is_test": false, "action_source": "website",
            "event_name": "CompletePayment", "event_time": "1700000000", "event_id": "tt-1",
            "em": "jane.doe@example.com", "ph": "+16505551212", "external_id": "cust-42",
            "click_id": "E.C.P.cb123", "device_os": "android", "value": "21.0", "currency": "USD",
        });
        assert_eq!(Value::Object(rows[0].clone()), want);
        let text = serde_json::to_string(&rows).unwrap();
        for dropped in ["203.0.113.9", "ttp-abc", "shop.example", "Mozilla", "sku-1"] {
            assert!(!text.contains(dropped), "{dropped} in {text}");
        }
        // With a test code, and with the timestamp left out (TikTok stamps it on receipt).
        let mut body: Value = serde_json::from_str(SDK_TRACK).unwrap();
        body["test_event_code"] = json!("TEST42");
        body.as_object_mut().unwrap().remove("timestamp");
        let (_, rows) = tiktok_pixel_rows(body.to_string().as_bytes(), false, NOW).unwrap();
        assert_eq!((&rows[0]["is_test"], &rows[0]["event_time"]), (&json!(true), &json!(NOW.to_string())));
    }

    #[test]
    fn sdk_pixel_batch() {
        let (pixel, rows) = tiktok_pixel_rows(SDK_BATCH.as_bytes(), true, NOW).unwrap();
        assert_eq!((pixel.as_str(), rows.len()), ("CPIXEL123", 2));
        assert_eq!(rows[0]["em"], json!("5f0d2a4e1d4a0d5f5b5c9f1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f"));
        assert_eq!((&rows[0]["click_id"], &rows[0]["external_id"]), (&json!("E.C.P.cb124"), &json!("cust-43")));
        assert_eq!((&rows[1]["event_name"], &rows[1]["event_time"]), (&json!("AddToCart"), &json!("1700000060")));
        for absent in ["em", "ph", "external_id", "click_id"] {
            assert!(!rows[1].contains_key(absent), "{absent}: {:?}", rows[1]);
        }
        // The batch body is not a track body and vice versa.
        assert_eq!(tiktok_pixel_rows(SDK_TRACK.as_bytes(), true, NOW).unwrap_err().path, "batch");
        assert_eq!(tiktok_pixel_rows(SDK_BATCH.as_bytes(), false, NOW).unwrap_err().path, "event");
    }

    #[test]
    fn events_api_rows() {
        let body = json!({"event_source": "web", "event_source_id": "CPIXEL9", "test_event_code": "TEST1", "data": [
            ev(json!({"event_id": "e1", "event_time": "2023-11-14T22:13:20Z",
                "user": {"email": ["", JANE_EM], "phone": "+16505551212", "external_id": ["x1", "x2"], "ttclid": "E.C.P.t",
                         "ttp": "ttp-1", "ip": "203.0.113.9", "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X)"},
                "properties": {"value": "9.5", "currency": "EUR", "order_id": 77, "contents": [{"content_id": "a"}]},
                "page": {"url": "https://shop.example/?email=jane"}, "limited_data_use": true})),
            ev(json!({"event_time": 1_700_000_000.5, "user": {"email": JANE_EM, "phone": []}})),
        ]});
        let (pixel, rows) = tiktok_events_rows(body.to_string().as_bytes(), NOW).unwrap();
        assert_eq!(pixel, "CPIXEL9");
        let want = json!({
            "source_id": "CPIXEL9", "origin": "server", "is_test": true, "action_source": "website",
            "event_name": "CompletePayment", "event_time": "1700000000", "event_id": "e1",
            "em": JANE_EM, "ph": "+16505551212", "external_id": "x1", "click_id": "E.C.P.t", "device_os": "ios",
            "value": "9.5", "currency": "EUR", "order_id": "77",
        });
        assert_eq!(Value::Object(rows[0].clone()), want);
        assert_eq!(rows[1]["event_time"], json!("2023-11-14T22:13:20.500000Z"));
        assert_eq!(rows[1]["em"], json!(JANE_EM));
        assert!(!rows[1].contains_key("ph"));
        assert!(!serde_json::to_string(&rows).unwrap().contains("jane"), "page url dropped");

        let e = tiktok_events_rows(&events_body(vec![ev(json!({})), ev(json!({"user": {"email": {"a": "jane@x.co"}}}))]), NOW).unwrap_err();
        assert_eq!(e.to_string(), "data[1].user.email: must be a string or a list of strings");
        assert_eq!(e.index, Some(1));
        let e = tiktok_events_rows(json!({"data": [ev(json!({}))]}).to_string().as_bytes(), NOW).unwrap_err();
        assert_eq!(e.to_string(), "event_source_id: `event_source_id` is required");
    }

    #[test]
    fn time_window_and_forms() {
        let old = NOW - 8 * 86_400;
        let e = tiktok_events_rows(&events_body(vec![ev(json!({})), ev(json!({"event_time": old}))]), NOW).unwrap_err();
        assert_eq!(e.to_string(), "data[1].event_time: the event is more than 7 days old");
        let iso_old = chrono::DateTime::from_timestamp(old, 0).unwrap().to_rfc3339();
        let e = tiktok_events_rows(&events_body(vec![ev(json!({"event_time": iso_old}))]), NOW).unwrap_err();
        assert_eq!(e.path, "data[0].event_time");
        let e = tiktok_events_rows(&events_body(vec![ev(json!({"event_time": NOW + 11 * 60}))]), NOW).unwrap_err();
        assert_eq!(e.to_string(), "data[0].event_time: the event is more than 10 minutes in the future");
        let e = tiktok_events_rows(&events_body(vec![ev(json!({"event_time": "soon"}))]), NOW).unwrap_err();
        assert_eq!(e.to_string(), "data[0].event_time: `event_time` must be unix seconds or an ISO 8601 time");
        // ISO and seconds give the same row value.
        let (_, rows) =
            tiktok_events_rows(&events_body(vec![ev(json!({"event_time": "2023-11-14T22:13:20+00:00"})), ev(json!({"event_time": "1700000000"}))]), NOW)
                .unwrap();
        assert_eq!(rows[0]["event_time"], rows[1]["event_time"]);

        let mut batch: Value = serde_json::from_str(SDK_BATCH).unwrap();
        batch["batch"][1]["timestamp"] = json!("2023-11-06T22:13:20Z");
        let e = tiktok_pixel_rows(batch.to_string().as_bytes(), true, NOW).unwrap_err();
        assert_eq!((e.path.as_str(), e.index), ("batch[1].timestamp", Some(1)));
        let future = SDK_TRACK.replace("2023-11-14T22:13:20Z", "2023-11-14T22:26:00Z");
        let e = tiktok_pixel_rows(future.as_bytes(), false, NOW).unwrap_err();
        assert_eq!((e.path.as_str(), e.index), ("timestamp", None));
    }

    #[test]
    fn at_most_1000_events() {
        let (_, rows) = tiktok_events_rows(&events_body(vec![ev(json!({})); 1000]), NOW).unwrap();
        assert_eq!(rows.len(), 1000);
        let e = tiktok_events_rows(&events_body(vec![ev(json!({})); 1001]), NOW).unwrap_err();
        assert_eq!(e.path, "data");
        assert!(e.message.contains("1001 events"), "{e}");
        let batch = json!({"pixel_code": "P", "batch": vec![ev(json!({})); 1001]});
        assert_eq!(tiktok_pixel_rows(batch.to_string().as_bytes(), true, NOW).unwrap_err().path, "batch");
    }

    #[test]
    fn paths_for_row_errors() {
        use TiktokShape::*;
        let cases = [
            (Events, "em", "data[2].user.email"),
            (Events, "ph", "data[2].user.phone"),
            (Events, "click_id", "data[2].user.ttclid"),
            (Events, "event_time", "data[2].event_time"),
            (Events, "value", "data[2].properties.value"),
            (Events, "source_id", "event_source_id"),
            (Events, "*", "data[2]"),
            (PixelTrack, "em", "context.user.email"),
            (PixelTrack, "ph", "context.user.phone_number"),
            (PixelTrack, "event_time", "timestamp"),
            (PixelTrack, "*", "body"),
            (PixelBatch, "ph", "batch[2].context.user.phone_number"),
            (PixelBatch, "device_os", "batch[2].context.user_agent"),
            (PixelBatch, "currency", "batch[2].properties.currency"),
            (PixelBatch, "source_id", "pixel_code"),
        ];
        for (shape, column, want) in cases {
            assert_eq!(tiktok_path(2, column, shape), want, "{shape:?} {column}");
        }
    }

    #[test]
    fn envelopes() {
        assert_eq!(tiktok_ok("r1"), json!({"code": 0, "message": "OK", "request_id": "r1", "data": {}}));
        let e = tiktok_error(40002, "data[0].event_time: the event is more than 7 days old");
        let o = e.as_object().unwrap();
        assert_eq!(o.len(), 4);
        assert_eq!((&o["code"], &o["data"]), (&json!(40002), &json!({})));
        let id = o["request_id"].as_str().unwrap();
        assert_eq!(id.len(), 32);
        assert_ne!(id, tiktok_request_id());
    }

    #[test]
    fn same_person_matches_across_meta_and_tiktok() {
        let ctx = Context {
            advertiser: Some("acme".parse().unwrap()),
            pseudonymizer: Pseudonymizer::new("k1", [9; 32]),
            plaintext: PlaintextMode::Hash,
            jurisdiction: "US".into(),
            received_at: NOW * 1_000_000,
            oldest: None,
            newest: Some(NOW * 1_000_000 + crate::FUTURE_TOLERANCE_MICROS),
        };
        // The SDK's plaintext email and E.164 phone, and a TikTok event with hashed ones.
        let (_, mut rows) = tiktok_pixel_rows(SDK_TRACK.as_bytes(), false, NOW).unwrap();
        let (_, hashed) = tiktok_events_rows(&events_body(vec![ev(json!({"user": {"email": JANE_EM, "phone": [JANE_PH]}}))]), NOW).unwrap();
        rows.extend(hashed);
        let (raw, unreadable) = crate::raw::json_rows(rows.into_iter().map(|r| Ok(Value::Object(r))).collect());
        let out = convert(Table::Conversions, &raw, &unreadable, &ctx).unwrap();
        assert!(out.rejected.is_empty(), "{:?}", out.rejected);
        let em = out.batch.column_by_name("em").unwrap().as_fixed_size_binary();
        let ph = out.batch.column_by_name("ph").unwrap().as_fixed_size_binary();
        let pseudo = |hex: &str| ctx.pseudonymizer.pseudonymize(&HashedId::from_hex(hex).unwrap());
        assert_eq!((em.value(0), em.value(1)), (pseudo(JANE_EM).as_bytes().as_slice(), pseudo(JANE_EM).as_bytes().as_slice()));
        assert_eq!((ph.value(0), ph.value(1)), (pseudo(JANE_PH).as_bytes().as_slice(), pseudo(JANE_PH).as_bytes().as_slice()));
        let click = out.batch.column_by_name("click_id").unwrap().as_string::<i32>();
        assert_eq!(click.value(0), "E.C.P.cb123");

        // A row error maps back to the sender's path.
        let bad = SDK_TRACK.replace("jane.doe@example.com", "not an email");
        let (_, rows) = tiktok_pixel_rows(bad.as_bytes(), false, NOW).unwrap();
        let (raw, unreadable) = crate::raw::json_rows(rows.into_iter().map(|r| Ok(Value::Object(r))).collect());
        let out = convert(Table::Conversions, &raw, &unreadable, &ctx).unwrap();
        let e = &out.rejected[0];
        assert_eq!(tiktok_path(e.row, &e.column, TiktokShape::PixelTrack), "context.user.email");
    }
}
