//! Meta Conversions API dialect (`POST /{api_version}/{pixel_id}/events`, SPEC 3.1).
//!
//! Senders built for Meta — the official SDKs, tag managers, shop plugins — post here
//! unchanged. Bodies come as JSON or as form fields (url-encoded or multipart), and `data`
//! items may be event objects or JSON-encoded strings of event objects: the official Python
//! SDK `facebook_business` sends form-encoded `data` as a JSON array of JSON *strings*.
//! [`capi_request_from_json`] / [`capi_request_from_form`] read a body into a
//! [`CapiRequest`]; [`capi_rows`] turns its events into `conversions` rows; [`capi_path`]
//! names a row error the way Meta would; [`capi_success`] and [`capi_error`] build Meta's
//! response bodies. Holds no state.

use serde_json::{Map, Value, json};
use tally_core::ident::{self, IdField};

use super::{DialectError, MAX_EVENTS, event_time, first_value, object, put, random_id, scalar, text, time_value};

/// A Conversions API request body, read but not yet checked event by event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CapiRequest {
    /// The events: objects, or strings holding JSON-encoded objects (decoded by [`capi_rows`]).
    pub data: Vec<Value>,
    /// Present: the events are test events (stored flagged, excluded from attribution).
    pub test_event_code: Option<String>,
    /// The token, when sent in the body (it may also come in the query string).
    pub access_token: Option<String>,
    /// The integration that sent the events (informational).
    pub partner_agent: Option<String>,
}

/// Reads an `application/json` body: `{"data": [...], "test_event_code", "access_token",
/// "partner_agent", ...}`. Other top-level keys (`upload_tag`, `namespace_id`, ...) are
/// accepted and ignored.
pub fn capi_request_from_json(body: &[u8]) -> Result<CapiRequest, DialectError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| DialectError::new(None, "$", format!("the body is not valid JSON: {e}")))?;
    let Value::Object(mut body) = value else {
        return Err(DialectError::new(None, "$", "the body must be a JSON object with a `data` array"));
    };
    let data = data_array(body.remove("data"))?;
    let field = |key: &str| text(body.get(key)).map_err(|m| DialectError::new(None, format!("$['{key}']"), m));
    Ok(CapiRequest {
        data,
        test_event_code: field("test_event_code")?,
        access_token: field("access_token")?,
        partner_agent: field("partner_agent")?,
    })
}

/// Reads form fields (`application/x-www-form-urlencoded` or `multipart/form-data`): `data`
/// is a JSON array of events or of JSON-encoded events. The first occurrence of a field counts.
pub fn capi_request_from_form(pairs: Vec<(String, String)>) -> Result<CapiRequest, DialectError> {
    let mut req = CapiRequest::default();
    let mut data = None;
    for (key, value) in pairs {
        let blank = value.trim().is_empty();
        let slot = match key.as_str() {
            "data" => {
                data.get_or_insert(value);
                continue;
            }
            "test_event_code" => &mut req.test_event_code,
            "access_token" => &mut req.access_token,
            "partner_agent" => &mut req.partner_agent,
            _ => continue,
        };
        if slot.is_none() && !blank {
            *slot = Some(value);
        }
    }
    req.data = data_array(data.map(Value::String))?;
    Ok(req)
}

/// `data` as a list: a JSON array, or text holding one (form fields are text).
fn data_array(v: Option<Value>) -> Result<Vec<Value>, DialectError> {
    let bad = |m: &str| DialectError::new(None, "$['data']", m);
    match v {
        None | Some(Value::Null) => Err(bad("the parameter `data` is required")),
        Some(Value::Array(items)) => Ok(items),
        Some(Value::String(s)) => match serde_json::from_str(&s) {
            Ok(Value::Array(items)) => Ok(items),
            _ => Err(bad("`data` must be a JSON array of events")),
        },
        Some(_) => Err(bad("`data` must be a JSON array of events")),
    }
}

/// One `conversions` row per event of `req`, for the source `pixel_id`, or the first reason
/// the request must be refused (a refused request stores nothing, as at Meta).
///
/// Mapping: `event_name`, `event_id`, `event_time` (unix seconds, within the last 7 days and
/// at most 10 minutes ahead of `now_unix`), `action_source`, `opt_out`;
/// `user_data.{em, ph, external_id}` (first non-empty of a string or list, digest or
/// plaintext as sent — `convert` hashes plaintext), `user_data.st` → `geo_state` (only a US
/// state, and only when `country` is absent or `us`), `user_data.fbc` → `click_id`,
/// `user_data.client_user_agent` → `device_os`; `custom_data.{value, currency, order_id}`.
/// Every other field is accepted and dropped unread.
pub fn capi_rows(pixel_id: &str, req: &CapiRequest, now_unix: i64) -> Result<Vec<Map<String, Value>>, DialectError> {
    if req.data.len() > MAX_EVENTS {
        return Err(DialectError::new(
            None,
            "$['data']",
            format!("`data` holds {} events; at most {MAX_EVENTS} are accepted per request", req.data.len()),
        ));
    }
    if req.data.is_empty() {
        return Err(DialectError::new(None, "$['data']", "`data` holds no events"));
    }
    let is_test = req.test_event_code.as_deref().is_some_and(|c| !c.trim().is_empty());
    req.data.iter().enumerate().map(|(i, item)| event_row(i, item, pixel_id, is_test, now_unix)).collect()
}

fn path(i: usize, keys: &[&str]) -> String {
    let mut p = format!("$['data'][{i}]");
    for k in keys {
        p.push_str(&format!("['{k}']"));
    }
    p
}

fn event_row(i: usize, item: &Value, pixel_id: &str, is_test: bool, now_unix: i64) -> Result<Map<String, Value>, DialectError> {
    let err = |keys: &[&str], message: &str| DialectError::new(Some(i), path(i, keys), message);
    let decoded;
    let event = match item {
        Value::Object(o) => o,
        Value::String(s) => {
            decoded = serde_json::from_str::<Value>(s).ok();
            decoded.as_ref().and_then(Value::as_object).ok_or_else(|| err(&[], "a string item of `data` must hold a JSON-encoded event object"))?
        }
        _ => return Err(err(&[], "must be an event object or a JSON-encoded event object")),
    };
    let mut row = Map::new();
    row.insert("source_id".into(), pixel_id.into());
    row.insert("origin".into(), "server".into());
    row.insert("is_test".into(), is_test.into());

    let name = text(event.get("event_name")).map_err(|m| err(&["event_name"], m))?;
    row.insert("event_name".into(), name.ok_or_else(|| err(&["event_name"], "`event_name` is required"))?.into());
    let micros = event_time(event.get("event_time"), false, now_unix).map_err(|m| err(&["event_time"], &event_time_message(m)))?;
    row.insert("event_time".into(), time_value(micros));
    for key in ["event_id", "action_source"] {
        put(&mut row, key, text(event.get(key)).map_err(|m| err(&[key], m))?);
    }
    put(&mut row, "opt_out", scalar(event.get("opt_out")).map_err(|m| err(&["opt_out"], m))?);

    if let Some(user) = object(event.get("user_data")).map_err(|m| err(&["user_data"], m))? {
        let first = |key: &str| match user.get(key) {
            None => Ok(None),
            Some(v) => first_value(v).map_err(|m| err(&["user_data", key], m)),
        };
        for key in ["em", "ph", "external_id"] {
            put(&mut row, key, first(key)?);
        }
        put(&mut row, "click_id", first("fbc")?);
        // A state is kept only when the country is absent, `us` or unreadable.
        let us = match first("country")? {
            None => true,
            Some(c) => ident::plain_low_cardinality(IdField::Country, &c).map_or(true, |c| c == "us"),
        };
        if us {
            // Only what decodes to a US state is kept; Meta accepts any region.
            put(&mut row, "geo_state", first("st")?.and_then(|s| ident::plain_low_cardinality(IdField::St, &s).ok()));
        }
        let ua = text(user.get("client_user_agent")).map_err(|m| err(&["user_data", "client_user_agent"], m))?;
        put(&mut row, "device_os", ua.map(|ua| super::device_os(&ua)));
    }
    if let Some(custom) = object(event.get("custom_data")).map_err(|m| err(&["custom_data"], m))? {
        for key in ["value", "currency", "order_id"] {
            put(&mut row, key, scalar(custom.get(key)).map_err(|m| err(&["custom_data", key], m))?);
        }
    }
    Ok(row)
}

fn event_time_message(m: &str) -> String {
    if m.starts_with("the event") { m.to_owned() } else { format!("`event_time` {m}") }
}

/// The JSON path Meta would name for a `conversions` input column of event `index` — for
/// reporting a row error from [`crate::convert::convert`] (its `column`).
///
/// ```
/// use tally_ingest::dialect::capi_path;
/// assert_eq!(capi_path(3, "em"), "$['data'][3]['user_data']['em']");
/// assert_eq!(capi_path(3, "value"), "$['data'][3]['custom_data']['value']");
/// ```
pub fn capi_path(index: usize, column: &str) -> String {
    match column {
        "em" | "em_sha256" | "email" => path(index, &["user_data", "em"]),
        "ph" | "ph_sha256" | "phone" => path(index, &["user_data", "ph"]),
        "external_id" | "external_id_sha256" => path(index, &["user_data", "external_id"]),
        "geo_state" => path(index, &["user_data", "st"]),
        "click_id" => path(index, &["user_data", "fbc"]),
        "device_os" => path(index, &["user_data", "client_user_agent"]),
        "value" | "currency" | "order_id" => path(index, &["custom_data", column]),
        "event_id" | "event_name" | "event_time" | "action_source" | "opt_out" => path(index, &[column]),
        "is_test" => "$['test_event_code']".to_owned(),
        "source_id" => "pixel_id".to_owned(),
        _ => path(index, &[]),
    }
}

/// Meta's success body. All three keys are always present: the official SDKs read each.
pub fn capi_success(events_received: usize, messages: Vec<String>) -> Value {
    json!({"events_received": events_received, "messages": messages, "fbtrace_id": random_id(23)})
}

/// Meta's error envelope. `code` is Meta's: 100 invalid parameter, 190 invalid access
/// token, 4/17/613 rate limits, 1/2 temporary failures (`transient`). `subcode` is Meta's
/// `error_subcode` (2804003 event too old, 2804016 plaintext refused by policy), null when
/// there is none. `message` should name the failing field (`$['data'][3]...`); it is also
/// the `error_user_msg`.
pub fn capi_error(message: &str, code: i64, subcode: Option<i64>, transient: bool) -> Value {
    let title = match (code, subcode) {
        (_, Some(2_804_003)) => "Event Timestamp Too Old",
        (_, Some(2_804_016)) => "Plaintext Identifier Refused",
        (190, _) => "Invalid OAuth Access Token",
        (4 | 17 | 32 | 613, _) => "Too Many Requests",
        _ if transient => "Temporarily Unavailable",
        (100, _) => "Invalid Parameter",
        _ => "Request Failed",
    };
    json!({"error": {
        "message": message,
        "type": "OAuthException",
        "code": code,
        "error_subcode": subcode,
        "is_transient": transient,
        "error_user_title": title,
        "error_user_msg": message,
        "fbtrace_id": random_id(23),
    }})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::{Context, convert};
    use arrow::array::AsArray;
    use tally_core::ident::PlaintextMode;
    use tally_core::schema::Table;
    use tally_core::{HashedId, Pseudonymizer};

    /// `facebook_business` 26.0.3, `EventRequest(events=[...], pixel_id="1234567890",
    /// test_event_code="TEST123").execute()` after `FacebookAdsApi.init(access_token="TOKEN123")`:
    /// the body it posted, captured from a local server. (`access_token` went in the query
    /// string: `POST /v26.0/1234567890/events?access_token=TOKEN123`.) The SDK hashed `em`, `ph`,
    /// `fn` and `st` itself ("Jane.Doe@Example.com", "+1 (650) 555-1212", "Jane", "CA") and
    /// sent `external_id` "cust-42" as given.
    const SDK_FORM: &str = "test_event_code=TEST123&data=%5B%22%7B%5C%22event_name%5C%22%3A+%5C%22Purchase%5C%22%2C+%5C%22event_time%5C%22%3A+1700000000%2C+%5C%22event_source_url%5C%22%3A+%5C%22https%3A%2F%2Fshop.example%2Fcheckout%5C%22%2C+%5C%22event_id%5C%22%3A+%5C%22evt-1%5C%22%2C+%5C%22user_data%5C%22%3A+%7B%5C%22em%5C%22%3A+%5B%5C%2286e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d%5C%22%5D%2C+%5C%22ph%5C%22%3A+%5B%5C%22e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176%5C%22%5D%2C+%5C%22fn%5C%22%3A+%5B%5C%2281f8f6dde88365f3928796ec7aa53f72820b06db8664f5fe76a7eb13e24546a2%5C%22%5D%2C+%5C%22st%5C%22%3A+%5B%5C%226959097001d10501ac7d54c0bdb8db61420f658f2922cc26e46d536119a31126%5C%22%5D%2C+%5C%22external_id%5C%22%3A+%5B%5C%22cust-42%5C%22%5D%2C+%5C%22client_ip_address%5C%22%3A+%5C%22203.0.113.7%5C%22%2C+%5C%22client_user_agent%5C%22%3A+%5C%22Mozilla%2F5.0+%28iPhone%3B+CPU+iPhone+OS+17_4+like+Mac+OS+X%29+AppleWebKit%2F605.1.15+%28KHTML%2C+like+Gecko%29+Version%2F17.4+Mobile%2F15E148+Safari%2F604.1%5C%22%2C+%5C%22fbc%5C%22%3A+%5C%22fb.1.1554763741205.AbCdEfGhIjKlMnOpQrStUvWxYz1234567890%5C%22%2C+%5C%22fbp%5C%22%3A+%5C%22fb.1.1558571054389.1098115397%5C%22%7D%2C+%5C%22custom_data%5C%22%3A+%7B%5C%22value%5C%22%3A+123.45%2C+%5C%22currency%5C%22%3A+%5C%22usd%5C%22%2C+%5C%22order_id%5C%22%3A+%5C%22order-9%5C%22%7D%2C+%5C%22action_source%5C%22%3A+%5C%22website%5C%22%7D%22%5D";

    /// SHA-256 of "jane.doe@example.com" (hashlib).
    const JANE_EM: &str = "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d";
    const NOW: i64 = 1_700_000_100;

    fn form(body: &str) -> CapiRequest {
        capi_request_from_form(serde_urlencoded::from_str(body).unwrap()).unwrap()
    }

    fn event(extra: Value) -> Value {
        let mut e = json!({"event_name": "Purchase", "event_time": 1_700_000_000, "action_source": "website"});
        e.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        e
    }

    fn rows_of(events: Vec<Value>) -> Result<Vec<Map<String, Value>>, DialectError> {
        capi_rows("px1", &CapiRequest { data: events, ..CapiRequest::default() }, NOW)
    }

    #[test]
    fn python_sdk_form_body() {
        let req = form(SDK_FORM);
        assert_eq!(req.test_event_code.as_deref(), Some("TEST123"));
        assert_eq!(req.access_token, None);
        assert!(req.data[0].is_string(), "the SDK double-encodes events");
        let rows = capi_rows("1234567890", &req, NOW).unwrap();
        let want = json!({
            "source_id": "1234567890", "origin": "server", "is_test": true,
            "event_name": "Purchase", "event_time": 1_700_000_000, "event_id": "evt-1", "action_source": "website",
            "em": JANE_EM,
            "ph": "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176",
            "external_id": "cust-42",
            "geo_state": "ca",
            "click_id": "fb.1.1554763741205.AbCdEfGhIjKlMnOpQrStUvWxYz1234567890",
            "device_os": "ios",
            "value": 123.45, "currency": "usd", "order_id": "order-9",
        });
        assert_eq!(Value::Object(rows[0].clone()), want);
    }

    #[test]
    fn token_and_request_fields_in_the_form_body() {
        // The SDK's custom-HTTP-client path (`execute_with_client`) puts the token in the body,
        // beside `appsecret_proof` and the optional request fields.
        let extra = "access_token=TOKEN123&appsecret_proof=abc&partner_agent=wordpress&namespace_id=n&upload_tag=t&test_event_code=";
        let req = form(&format!("{extra}&{}", SDK_FORM.replace("test_event_code=TEST123&", "")));
        assert_eq!(req.access_token.as_deref(), Some("TOKEN123"));
        assert_eq!(req.partner_agent.as_deref(), Some("wordpress"));
        assert_eq!(req.test_event_code, None, "a blank code is no code");
        assert_eq!(capi_rows("p", &req, NOW).unwrap()[0]["is_test"], json!(false));
        // Form `data` holding objects rather than strings.
        let objects = serde_urlencoded::to_string([("data", json!([event(json!({}))]).to_string())]).unwrap();
        assert_eq!(capi_rows("p", &form(&objects), NOW).unwrap()[0]["event_name"], json!("Purchase"));
        // No `data`, or `data` not an array.
        let e = capi_request_from_form(vec![("access_token".into(), "t".into())]).unwrap_err();
        assert_eq!(e.path, "$['data']");
        let e = capi_request_from_form(vec![("data".into(), "{\"event_name\":1}".into())]).unwrap_err();
        assert_eq!(e.to_string(), "$['data']: `data` must be a JSON array of events");
    }

    #[test]
    fn json_body_with_objects_and_encoded_strings() {
        let body = json!({
            "data": [event(json!({"event_id": 7})), event(json!({"event_name": "Lead"})).to_string()],
            "test_event_code": "TEST1", "access_token": "tok", "partner_agent": "gtm", "upload_tag": "x",
        });
        let req = capi_request_from_json(body.to_string().as_bytes()).unwrap();
        assert_eq!((req.access_token.as_deref(), req.partner_agent.as_deref()), (Some("tok"), Some("gtm")));
        let rows = capi_rows("p", &req, NOW).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["event_id"], json!("7"));
        assert_eq!(rows[1]["event_name"], json!("Lead"));
        assert!(rows.iter().all(|r| r["is_test"] == json!(true)));

        let e = capi_rows("p", &CapiRequest { data: vec![json!("not json"), json!(3)], ..Default::default() }, NOW).unwrap_err();
        assert_eq!((e.index, e.path.as_str()), (Some(0), "$['data'][0]"));
        assert_eq!(capi_request_from_json(b"{\"data\":").unwrap_err().path, "$");
        assert_eq!(capi_request_from_json(b"[]").unwrap_err().path, "$");
        assert_eq!(capi_request_from_json(b"{}").unwrap_err().path, "$['data']");
    }

    #[test]
    fn identifiers_as_strings_or_lists() {
        let rows = rows_of(vec![
            event(json!({"user_data": {"em": ["", JANE_EM, "other@example.com"], "ph": "+1 650 555 1212", "external_id": [42]}})),
            event(json!({"user_data": {"em": JANE_EM, "ph": [], "external_id": "  "}})),
        ])
        .unwrap();
        assert_eq!(rows[0]["em"], json!(JANE_EM));
        assert_eq!(rows[0]["ph"], json!("+1 650 555 1212"));
        assert_eq!(rows[0]["external_id"], json!("42"));
        assert_eq!(rows[1]["em"], json!(JANE_EM));
        assert!(!rows[1].contains_key("ph") && !rows[1].contains_key("external_id"), "{:?}", rows[1]);
        let e = rows_of(vec![event(json!({})), event(json!({"user_data": {"ph": {"n": 1}}}))]).unwrap_err();
        assert_eq!(e.to_string(), "$['data'][1]['user_data']['ph']: must be a string or a list of strings");
        assert_eq!(e.index, Some(1));
    }

    #[test]
    fn state_click_id_and_user_agent() {
        let rows = rows_of(vec![
            event(json!({"user_data": {"st": ["California"], "client_user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64)"}})),
            event(json!({"user_data": {"st": "on", "country": "ca"}})),
            event(json!({"user_data": {"st": "wa", "country": "au"}})),
            event(json!({"user_data": {"st": "wa", "country": "US", "fbc": ["fb.1.2.abc"]}})),
            event(json!({"user_data": {"fbp": "fb.1.2.3"}})),
        ])
        .unwrap();
        assert_eq!((&rows[0]["geo_state"], &rows[0]["device_os"]), (&json!("ca"), &json!("windows")));
        assert!(!rows[1].contains_key("geo_state"), "Ontario is no US state");
        assert!(!rows[2].contains_key("geo_state"), "Western Australia is not Washington");
        assert_eq!((&rows[3]["geo_state"], &rows[3]["click_id"]), (&json!("wa"), &json!("fb.1.2.abc")));
        assert!(!rows[4].contains_key("click_id"), "no fbc, no click id (fbp is a browser id, not a click)");
    }

    #[test]
    fn at_most_1000_events() {
        let many = |n| vec![event(json!({})); n];
        assert_eq!(rows_of(many(1000)).unwrap().len(), 1000);
        let e = rows_of(many(1001)).unwrap_err();
        assert_eq!(e.path, "$['data']");
        assert!(e.message.contains("1001 events") && e.message.contains("at most 1000"), "{e}");
        assert!(rows_of(vec![]).is_err());
    }

    #[test]
    fn event_time_window() {
        let old = rows_of(vec![event(json!({})), event(json!({"event_time": NOW - 8 * 86_400}))]).unwrap_err();
        assert_eq!(old.to_string(), "$['data'][1]['event_time']: the event is more than 7 days old");
        assert_eq!((old.index, old.capi_subcode()), (Some(1), Some(2_804_003)));
        let ahead = rows_of(vec![event(json!({"event_time": NOW + 11 * 60}))]).unwrap_err();
        assert_eq!(ahead.to_string(), "$['data'][0]['event_time']: the event is more than 10 minutes in the future");
        assert_eq!(ahead.capi_subcode(), None);
        assert!(rows_of(vec![event(json!({"event_time": NOW + 9 * 60}))]).is_ok());
        let iso = rows_of(vec![event(json!({"event_time": "2023-11-14T22:13:20Z"}))]).unwrap_err();
        assert_eq!(iso.to_string(), "$['data'][0]['event_time']: `event_time` must be unix seconds (an integer)");
        let mut no_time = event(json!({}));
        no_time.as_object_mut().unwrap().remove("event_time");
        assert!(rows_of(vec![no_time]).unwrap_err().to_string().ends_with("['event_time']: `event_time` is required"));
        let mut no_name = event(json!({}));
        no_name.as_object_mut().unwrap().remove("event_name");
        assert_eq!(rows_of(vec![no_name]).unwrap_err().path, "$['data'][0]['event_name']");
    }

    #[test]
    fn paths_for_row_errors() {
        let cases = [
            ("em", "$['data'][3]['user_data']['em']"),
            ("ph", "$['data'][3]['user_data']['ph']"),
            ("external_id", "$['data'][3]['user_data']['external_id']"),
            ("geo_state", "$['data'][3]['user_data']['st']"),
            ("click_id", "$['data'][3]['user_data']['fbc']"),
            ("device_os", "$['data'][3]['user_data']['client_user_agent']"),
            ("value", "$['data'][3]['custom_data']['value']"),
            ("currency", "$['data'][3]['custom_data']['currency']"),
            ("order_id", "$['data'][3]['custom_data']['order_id']"),
            ("event_time", "$['data'][3]['event_time']"),
            ("opt_out", "$['data'][3]['opt_out']"),
            ("is_test", "$['test_event_code']"),
            ("*", "$['data'][3]"),
        ];
        for (column, want) in cases {
            assert_eq!(capi_path(3, column), want, "{column}");
        }
    }

    #[test]
    fn envelopes_have_every_key() {
        let ok = capi_success(3, vec!["`em` hashed on arrival".into()]);
        let obj = ok.as_object().unwrap();
        assert_eq!(obj.len(), 3);
        assert_eq!((&ok["events_received"], &ok["messages"][0]), (&json!(3), &json!("`em` hashed on arrival")));
        assert!(ok["fbtrace_id"].as_str().is_some_and(|s| !s.is_empty()));
        assert_eq!(capi_success(0, vec![])["messages"], json!([]));

        let err = capi_error("$['data'][0]['event_time']: the event is more than 7 days old", 100, Some(2_804_003), false);
        let e = err["error"].as_object().unwrap();
        for key in ["message", "type", "code", "error_subcode", "is_transient", "error_user_title", "error_user_msg", "fbtrace_id"] {
            assert!(e.contains_key(key), "missing {key}");
        }
        assert_eq!((&e["type"], &e["code"], &e["error_subcode"]), (&json!("OAuthException"), &json!(100), &json!(2_804_003)));
        assert_eq!(e["error_user_title"], json!("Event Timestamp Too Old"));
        let auth = capi_error("Invalid OAuth access token", 190, None, false);
        assert_eq!((&auth["error"]["code"], &auth["error"]["error_subcode"]), (&json!(190), &Value::Null));
        assert_eq!(capi_error("busy", 2, None, true)["error"]["is_transient"], json!(true));
    }

    #[test]
    fn plaintext_of_dropped_fields_goes_nowhere() {
        let user = json!({
            "em": JANE_EM, "fn": "Jane", "ln": ["Doe"], "db": "19800101", "ge": "f", "ct": "Springfield",
            "zp": "62704", "country": "us", "fbp": "fb.1.2.3", "client_ip_address": "203.0.113.7",
            "client_user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) Janebrowser",
        });
        let rows = rows_of(vec![event(json!({"user_data": user, "event_source_url": "https://x.example/?name=Jane",
            "custom_data": {"value": 5, "contents": [{"id": "Jane"}], "customer_name": "Jane"},
            "data_processing_options": ["LDU"], "data_processing_options_country": 1, "unknown_key": "Jane"}))])
        .unwrap();
        let text = serde_json::to_string(&rows).unwrap();
        for secret in ["Jane", "Doe", "19800101", "Springfield", "62704", "203.0.113.7", "fb.1.2.3", "Mozilla"] {
            assert!(!text.contains(secret), "{secret} leaked into {text}");
        }
        assert_eq!(rows[0]["device_os"], json!("macos"));
        // Errors name paths, never values.
        let bad = [
            event(json!({"user_data": {"fn": "Jane", "em": {"Jane": "Jane"}}})),
            event(json!({"user_data": {"fn": "Jane"}, "event_time": "Jane"})),
            event(json!({"user_data": {"fn": "Jane"}, "event_name": ["Jane"]})),
            event(json!({"user_data": {"fn": "Jane", "client_user_agent": ["Jane"]}})),
            json!("{\"user_data\":{\"fn\":\"Jane\"}"),
        ];
        for b in bad {
            let e = rows_of(vec![b]).unwrap_err();
            assert!(!e.to_string().contains("Jane"), "{e}");
        }
    }

    fn ctx() -> Context {
        Context {
            advertiser: Some("acme".parse().unwrap()),
            pseudonymizer: Pseudonymizer::new("k1", [7; 32]),
            plaintext: PlaintextMode::Hash,
            jurisdiction: "US".into(),
            received_at: NOW * 1_000_000,
            oldest: None,
            newest: Some(NOW * 1_000_000 + crate::FUTURE_TOLERANCE_MICROS),
        }
    }

    #[test]
    fn end_to_end_through_convert() {
        // The SDK's hashed email, and the same person's plaintext email from a JSON sender.
        let mut rows = capi_rows("1234567890", &form(SDK_FORM), NOW).unwrap();
        let plain = json!({"data": [event(json!({"user_data": {"em": ["  Jane.Doe@Example.COM "], "fn": "Jane"}}))]});
        rows.extend(capi_rows("1234567890", &capi_request_from_json(plain.to_string().as_bytes()).unwrap(), NOW).unwrap());
        let (raw, unreadable) = crate::raw::json_rows(rows.into_iter().map(|r| Ok(Value::Object(r))).collect());
        let out = convert(Table::Conversions, &raw, &unreadable, &ctx()).unwrap();
        assert!(out.rejected.is_empty(), "{:?}", out.rejected);
        assert_eq!(out.hashed_on_arrival, 2, "the SDK's plaintext external_id and the plaintext email");
        let want = ctx().pseudonymizer.pseudonymize(&HashedId::from_hex(JANE_EM).unwrap());
        let em = out.batch.column_by_name("em").unwrap().as_fixed_size_binary();
        assert_eq!(em.value(0), want.as_bytes());
        assert_eq!(em.value(1), want.as_bytes());
        let col = |name: &str| out.batch.column_by_name(name).unwrap().clone();
        assert_eq!(col("geo_state").as_string::<i32>().value(0), "ca");
        assert_eq!(col("currency").as_string::<i32>().value(0), "USD");
        assert_eq!(col("advertiser_id").as_string::<i32>().value(0), "acme");
        assert!(col("is_test").as_boolean().value(0));
        assert!(!col("is_test").as_boolean().value(1));

        // A row error from convert maps back to Meta's path, without the value.
        let bad = capi_rows("p", &CapiRequest { data: vec![event(json!({})), event(json!({"user_data": {"em": "not-an-email"}}))], ..Default::default() }, NOW).unwrap();
        let (raw, unreadable) = crate::raw::json_rows(bad.into_iter().map(|r| Ok(Value::Object(r))).collect());
        let out = convert(Table::Conversions, &raw, &unreadable, &ctx()).unwrap();
        let e = &out.rejected[0];
        assert_eq!(capi_path(e.row, &e.column), "$['data'][1]['user_data']['em']");
        assert!(!e.message.contains("not-an-email"), "{}", e.message);
    }
}
