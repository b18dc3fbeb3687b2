//! Request dialects: the ad platforms' own event formats, turned into `conversions` rows.
//!
//! Advertisers already send server events to Meta (Conversions API) and TikTok (Events API
//! 2.0 and the legacy pixel endpoints the official TikTok SDK calls). Tally accepts those
//! requests unchanged, so pointing an existing integration at Tally is a base-URL change.
//! This module owns only the *shape*: it reads a dialect's body and returns one JSON object
//! per event whose keys are the `conversions` input columns (SPEC section 5), ready for
//! [`crate::raw::json_rows`] and [`crate::convert::convert`], which remain the one place
//! values are validated, normalized, hashed and pseudonymized. No HTTP here: the server maps
//! a [`DialectError`] (or a row error, through [`capi_path`] / [`tiktok_path`]) onto the
//! dialect's error envelope.
//!
//! What the dialect checks itself is what `convert` cannot know: the platform's limits
//! (1,000 events, `event_time` within the last 7 days and at most 10 minutes ahead) and the
//! nesting of its fields. Fields with no `conversions` column (names, birth dates, cities,
//! IP addresses, user agents, cookies, page URLs) are read only where a column is derived
//! from them (the user agent gives `device_os`) and are otherwise dropped unread, so their
//! plaintext never leaves this module — errors name paths, never values.

pub mod capi;
pub mod tiktok;

pub use capi::{CapiRequest, capi_error, capi_path, capi_request_from_form, capi_request_from_json, capi_rows, capi_success};
pub use tiktok::{TiktokShape, tiktok_error, tiktok_events_rows, tiktok_ok, tiktok_path, tiktok_pixel_rows, tiktok_request_id};

use std::sync::atomic::{AtomicU64, Ordering};

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// At most this many events per request (Meta's and TikTok's limit).
pub const MAX_EVENTS: usize = 1_000;

/// How old an event may be, in seconds (Meta's 7 days; TikTok's window is the same).
pub const MAX_AGE_SECS: i64 = 7 * 86_400;

/// A request that does not fit its dialect. The whole request is refused (as Meta does).
///
/// `path` names the failing field the way the dialect would (`$['data'][3]['event_time']`,
/// `data[3].event_time`); `message` says what is wrong and never contains a submitted value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct DialectError {
    /// The failing event's index in the request, when one event is at fault.
    pub index: Option<usize>,
    /// Where, in the dialect's notation.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl DialectError {
    pub(crate) fn new(index: Option<usize>, path: impl Into<String>, message: impl Into<String>) -> DialectError {
        DialectError { index, path: path.into(), message: message.into() }
    }

    /// Meta's `error_subcode` for this error, where Meta has a specific one
    /// (2804003 "Event Timestamp Too Old"); `None` means a plain code 100.
    pub fn capi_subcode(&self) -> Option<i64> {
        (self.message == TOO_OLD).then_some(2_804_003)
    }
}

pub(crate) const TOO_OLD: &str = "the event is more than 7 days old";
pub(crate) const TOO_NEW: &str = "the event is more than 10 minutes in the future";

/// The `device_os` value for a user agent: `ios`, `android`, `windows`, `macos`, `linux` or
/// `other`. Only this class is kept; the user agent itself is never stored.
///
/// ```
/// use tally_ingest::dialect::device_os;
/// assert_eq!(device_os("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X)"), "ios");
/// assert_eq!(device_os("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7)"), "macos");
/// ```
pub fn device_os(user_agent: &str) -> &'static str {
    // Every event with a user agent comes here, so no allocation and no searcher set-up: the
    // agent is lowercased into a stack buffer (long ones are cut: the platform is named early)
    // and each needle is looked for by its first byte.
    let mut buf = [0u8; 512];
    let n = user_agent.len().min(buf.len());
    buf[..n].copy_from_slice(&user_agent.as_bytes()[..n]);
    buf[..n].make_ascii_lowercase();
    let ua = &buf[..n];
    let has = |needle: &[u8]| ua.len() >= needle.len() && ua.windows(needle.len()).any(|w| w[0] == needle[0] && w == needle);
    let word = |w: &[u8]| ua.split(|c| !c.is_ascii_alphanumeric()).any(|t| t == w);
    // Order matters: iOS agents say "like Mac OS X", Android agents say "Linux", and old
    // Windows Phone agents claim to be Android and iPhone.
    if has(b"windows phone") {
        "windows"
    } else if has(b"iphone") || has(b"ipad") || has(b"ipod") || word(b"ios") {
        "ios"
    } else if has(b"android") {
        "android"
    } else if has(b"windows") {
        "windows"
    } else if has(b"macintosh") || has(b"mac os x") {
        "macos"
    } else if word(b"cros") {
        "other" // ChromeOS: Linux underneath, but not what ad platforms call Linux
    } else if has(b"linux") || has(b"x11") {
        "linux"
    } else {
        "other"
    }
}

/// One JSON value as the dialects read it: text borrowed from the body where it can be; for
/// an object only its kind, and for an array only what an identifier list yields (its first
/// non-empty item). The Meta reader deserializes straight into it; the TikTok reader views a
/// parsed [`Value`] through [`Field::of`]. The rules below ([`Field::text`],
/// [`Field::scalar`], [`Field::ident`], [`event_time`]) are the one statement of how a value
/// is read, whichever way it came.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) enum Field<'a> {
    /// Absent or `null`.
    #[default]
    Null,
    Str(Cow<'a, str>),
    Num(serde_json::Number),
    Bool(bool),
    /// An array: its first non-empty identifier item, or why it is not a list of strings.
    List(Result<Option<Cow<'a, str>>, &'static str>),
    Object,
}

const SHAPE: &str = "must be a string or a list of strings";

impl<'a> Field<'a> {
    /// A field of a parsed value (`None`: absent).
    pub(crate) fn of(v: Option<&'a Value>) -> Field<'a> {
        match v {
            None | Some(Value::Null) => Field::Null,
            Some(Value::String(s)) => Field::Str(Cow::Borrowed(s)),
            Some(Value::Number(n)) => Field::Num(n.clone()),
            Some(Value::Bool(b)) => Field::Bool(*b),
            Some(Value::Array(items)) => Field::List(first_ident(items.iter().map(|item| Field::of(Some(item))))),
            Some(Value::Object(_)) => Field::Object,
        }
    }

    /// A value that must be a string (numbers taken as their text), or absent; blank is absent.
    pub(crate) fn text(&self) -> Result<Option<Cow<'a, str>>, &'static str> {
        match self {
            Field::Null => Ok(None),
            Field::Str(s) => Ok((!s.trim().is_empty()).then(|| s.clone())),
            Field::Num(n) => Ok(Some(Cow::Owned(n.to_string()))),
            _ => Err("must be a string"),
        }
    }

    /// A single value as text: strings as given, numbers and booleans as their JSON text;
    /// null and blank strings as absent.
    pub(crate) fn scalar(&self) -> Result<Option<Cow<'a, str>>, &'static str> {
        match self {
            Field::Bool(b) => Ok(Some(Cow::Borrowed(if *b { "true" } else { "false" }))),
            Field::List(_) | Field::Object => Err("must be a single value, not an array or object"),
            other => other.text(),
        }
    }

    /// An identifier given as a string or a list of strings: the string, or the list's first
    /// non-empty item (numbers are taken as their text).
    pub(crate) fn ident(&self) -> Result<Option<Cow<'a, str>>, &'static str> {
        match self {
            Field::List(first) => first.clone(),
            item => item.ident_item(),
        }
    }

    /// One item of an identifier list: a string (blank is absent) or a number's text.
    fn ident_item(&self) -> Result<Option<Cow<'a, str>>, &'static str> {
        match self {
            Field::Null | Field::Str(_) | Field::Num(_) => self.text(),
            _ => Err(SHAPE),
        }
    }
}

/// The first non-empty identifier among list items; items after it are not looked at.
fn first_ident<'a>(items: impl IntoIterator<Item = Field<'a>>) -> Result<Option<Cow<'a, str>>, &'static str> {
    for item in items {
        if let Some(s) = item.ident_item()? {
            return Ok(Some(s));
        }
    }
    Ok(None)
}

impl<'de> Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FieldVisitor)
    }
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Field<'de>, E> {
        Ok(Field::Null)
    }
    fn visit_none<E>(self) -> Result<Field<'de>, E> {
        Ok(Field::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Field<'de>, E> {
        Ok(Field::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Field<'de>, E> {
        Ok(Field::Num(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Field<'de>, E> {
        Ok(Field::Num(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Field<'de>, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Field::Null, Field::Num))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field<'de>, A::Error> {
        // As `first_ident`: the first item that is non-empty or of the wrong shape decides.
        let mut first = Ok(None);
        while let Some(item) = seq.next_element::<Field<'de>>()? {
            if let Ok(None) = first {
                first = item.ident_item();
            }
        }
        Ok(Field::List(first))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Field::Object)
    }
}

/// The first non-empty value of an identifier given as a string or a list of strings
/// (numbers are taken as their text). `Err` holds the reason, never the value.
pub(crate) fn first_value(v: &Value) -> Result<Option<String>, &'static str> {
    Field::of(Some(v)).ident().map(|s| s.map(Cow::into_owned))
}

/// A single (non-nested) value as text: strings as given, numbers and booleans as their
/// JSON text; null and blank strings as absent.
pub(crate) fn scalar(v: Option<&Value>) -> Result<Option<String>, &'static str> {
    Field::of(v).scalar().map(|s| s.map(Cow::into_owned))
}

/// A value that must be a string (numbers taken as their text), or absent.
pub(crate) fn text(v: Option<&Value>) -> Result<Option<String>, &'static str> {
    Field::of(v).text().map(|s| s.map(Cow::into_owned))
}

/// An optional nested object.
pub(crate) fn object(v: Option<&Value>) -> Result<Option<&Map<String, Value>>, &'static str> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err("must be an object"),
    }
}

/// An event time as microseconds since the epoch: unix seconds (a number or numeric text)
/// or, when `iso` is allowed, ISO 8601 text. Checked against the dialects' window around
/// `now_unix`.
pub(crate) fn event_time(v: &Field<'_>, iso: bool, now_unix: i64) -> Result<i64, &'static str> {
    let seconds = |s: f64| -> Result<i64, &'static str> {
        if !s.is_finite() || s < 0.0 {
            Err("must be unix seconds")
        } else if s >= 1e11 {
            Err("must be unix seconds (this looks like milliseconds)")
        } else {
            Ok((s * 1e6).round() as i64)
        }
    };
    let wanted = if iso { "must be unix seconds or an ISO 8601 time" } else { "must be unix seconds (an integer)" };
    let micros = match v {
        Field::Null => return Err("is required"),
        Field::Num(n) => seconds(n.as_f64().ok_or(wanted)?)?,
        Field::Str(s) => {
            let s = s.trim();
            if s.is_empty() {
                return Err("is required");
            }
            match s.parse::<f64>() {
                Ok(x) => seconds(x)?,
                Err(_) if iso => parse_iso(s).ok_or(wanted)?,
                Err(_) => return Err(wanted),
            }
        }
        _ => return Err(wanted),
    };
    if micros < (now_unix - MAX_AGE_SECS) * 1_000_000 {
        Err(TOO_OLD)
    } else if micros > now_unix * 1_000_000 + crate::FUTURE_TOLERANCE_MICROS {
        Err(TOO_NEW)
    } else {
        Ok(micros)
    }
}

/// ISO 8601 text to microseconds: RFC 3339, offsets without a colon (`+0000`), or no offset
/// (taken as UTC).
fn parse_iso(s: &str) -> Option<i64> {
    crate::convert::parse_time(s).or_else(|| chrono::DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z").ok().map(|t| t.timestamp_micros()))
}

/// The row text for an event time: integer seconds when whole, else RFC 3339 (UTC,
/// microseconds) — both forms `convert` reads back exactly.
pub(crate) fn time_text(micros: i64) -> String {
    if micros % 1_000_000 == 0 {
        (micros / 1_000_000).to_string()
    } else {
        let t = chrono::DateTime::from_timestamp_micros(micros).expect("in range: checked against now");
        t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    }
}

/// Inserts `value` under `key` when present.
pub(crate) fn put(row: &mut Map<String, Value>, key: &str, value: Option<impl Into<Value>>) {
    if let Some(v) = value {
        row.insert(key.to_owned(), v.into());
    }
}

/// `len` characters of `[A-Za-z0-9_-]`, unique per call within a process and unlikely to
/// repeat across processes (trace ids only, not secrets).
pub(crate) fn random_id(len: usize) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    random_bytes(len).into_iter().map(|b| char::from(ALPHABET[usize::from(b % 64)])).collect()
}

/// `len` bytes that differ on every call: BLAKE3 of the clock, a counter and the process id.
pub(crate) fn random_bytes(len: usize) -> Vec<u8> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mut h = blake3::Hasher::new();
    h.update(&nanos.to_le_bytes());
    h.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    let mut bytes = vec![0u8; len];
    h.finalize_xof().fill(&mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn user_agent_to_device_os() {
        let table = [
            ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1", "ios"),
            ("Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148", "ios"),
            ("Instagram 300.0.0.0 (iOS 17_0; en_US; scale=3.00)", "ios"),
            ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Mobile Safari/537.36", "android"),
            ("Dalvik/2.1.0 (Linux; U; Android 13; SM-S911B Build/TP1A.220624.014)", "android"),
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36", "windows"),
            (
                "Mozilla/5.0 (Mobile; Windows Phone 8.1; Android 4.0; ARM; Trident/7.0; Touch; rv:11.0; IEMobile/11.0; NOKIA; Lumia 635) like iPhone OS 7_0_3 Mac OS X",
                "windows",
            ),
            ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15", "macos"),
            ("Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0", "linux"),
            ("Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36", "other"),
            ("okhttp/4.12.0", "other"),
            ("curl/8.5.0", "other"),
            ("Kiosk/1.0", "other"),
        ];
        for (ua, want) in table {
            assert_eq!(device_os(ua), want, "{ua}");
        }
        let long = format!("Mozilla/5.0 (Linux; Android 14) {}", "x".repeat(5000));
        assert_eq!(device_os(&long), "android", "a long agent is read from its start");
        assert_eq!(device_os(""), "other");
    }

    #[test]
    fn identifiers_as_strings_or_lists() {
        assert_eq!(first_value(&json!("a")), Ok(Some("a".into())));
        assert_eq!(first_value(&json!(["", "  ", null, "b", "c"])), Ok(Some("b".into())));
        assert_eq!(first_value(&json!([])), Ok(None));
        assert_eq!(first_value(&json!("  ")), Ok(None));
        assert_eq!(first_value(&json!(12345)), Ok(Some("12345".into())));
        assert!(first_value(&json!({"x": "Jane"})).unwrap_err().contains("string or a list"));
        assert!(first_value(&json!([["nested"]])).is_err());
    }

    #[test]
    fn event_time_window_and_forms() {
        let now = 1_700_000_000;
        assert_eq!(event_time(&Field::of(Some(&json!(now))), false, now), Ok(now * 1_000_000));
        assert_eq!(event_time(&Field::of(Some(&json!(now.to_string()))), false, now), Ok(now * 1_000_000));
        assert_eq!(event_time(&Field::of(Some(&json!(now - 7 * 86_400))), false, now), Ok((now - 7 * 86_400) * 1_000_000));
        assert_eq!(event_time(&Field::of(Some(&json!(now - 8 * 86_400))), false, now), Err(TOO_OLD));
        assert_eq!(event_time(&Field::of(Some(&json!(now + 600))), false, now), Ok((now + 600) * 1_000_000));
        assert_eq!(event_time(&Field::of(Some(&json!(now + 660))), false, now), Err(TOO_NEW));
        assert!(event_time(&Field::of(Some(&json!(now * 1000))), false, now).unwrap_err().contains("milliseconds"));
        assert!(event_time(&Field::Null, false, now).unwrap_err().contains("required"));
        // ISO only where the dialect allows it.
        assert!(event_time(&Field::of(Some(&json!("2023-11-14T22:13:20Z"))), false, now).is_err());
        for iso in ["2023-11-14T22:13:20Z", "2023-11-14T23:13:20+01:00", "2023-11-14T22:13:20+0000", "2023-11-14T22:13:20"] {
            assert_eq!(event_time(&Field::of(Some(&json!(iso))), true, now), Ok(now * 1_000_000), "{iso}");
        }
        assert_eq!(event_time(&Field::of(Some(&json!("2023-11-14T22:13:20.250Z"))), true, now), Ok(now * 1_000_000 + 250_000));
        assert!(event_time(&Field::of(Some(&json!("yesterday"))), true, now).is_err());
    }

    #[test]
    fn time_values_round_trip_through_convert_forms() {
        assert_eq!(time_text(1_700_000_000_000_000), "1700000000");
        assert_eq!(time_text(1_700_000_000_250_000), "2023-11-14T22:13:20.250000Z");
        assert_eq!(crate::convert::parse_time("2023-11-14T22:13:20.250000Z"), Some(1_700_000_000_250_000));
    }

    #[test]
    fn random_ids_differ_and_use_the_alphabet() {
        let a = random_id(23);
        let b = random_id(23);
        assert_eq!(a.len(), 23);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-'), "{a}");
    }
}
