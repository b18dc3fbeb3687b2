//! Meta Conversions API dialect (`POST /{api_version}/{pixel_id}/events`, SPEC 3.1).
//!
//! Senders built for Meta — the official SDKs, tag managers, shop plugins — post here
//! unchanged. Bodies come as JSON or as form fields (url-encoded or multipart), and `data`
//! items may be event objects or JSON-encoded strings of event objects: the official Python
//! SDK `facebook_business` sends form-encoded `data` as a JSON array of JSON *strings*.
//!
//! [`capi_request_from_json`] / [`capi_request_from_form`] read a body into a
//! [`CapiRequest`] in one pass: each event is deserialized straight into the text columns of
//! a raw `conversions` batch (no JSON tree, no map per event; text is borrowed from the body
//! where it has no escapes) and checked as it is read. [`capi_rows`] hands over that batch
//! or the first reason the request must be refused; [`capi_path`] names a later row error
//! the way Meta would; [`capi_success`] and [`capi_error`] build Meta's response bodies.
//! Holds no state.

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, RecordBatchOptions, StringArray, StringBuilder};
use arrow::datatypes::{DataType, Field as Column, Schema};
use serde::Deserialize as _;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Value, json};
use tally_core::ident::{self, IdField};

use super::{DialectError, Field, MAX_EVENTS, event_time, random_id, time_text};

/// A Conversions API request body: its events already read into `conversions` input
/// columns (or the first event that cannot be), and the request-level fields.
#[derive(Debug)]
pub struct CapiRequest {
    events: Events,
    /// Present: the events are test events (stored flagged, excluded from attribution).
    pub test_event_code: Option<String>,
    /// The token, when sent in the body (it may also come in the query string).
    pub access_token: Option<String>,
    /// The integration that sent the events (informational).
    pub partner_agent: Option<String>,
}

impl CapiRequest {
    /// How many items `data` holds (read or not).
    pub fn len(&self) -> usize {
        self.events.count
    }

    /// Whether `data` holds no items.
    pub fn is_empty(&self) -> bool {
        self.events.count == 0
    }
}

/// Reads an `application/json` body: `{"data": [...], "test_event_code", "access_token",
/// "partner_agent", ...}`, checking each event against the window around `now_unix`. Other
/// top-level keys (`upload_tag`, `namespace_id`, ...) are accepted and ignored.
pub fn capi_request_from_json(body: &[u8], now_unix: i64) -> Result<CapiRequest, DialectError> {
    // UTF-8 checked once for the whole body: the reader then takes every string as it is
    // (`from_str`), instead of checking each one again (a tenth of the reading time).
    let text = std::str::from_utf8(body)
        .map_err(|e| DialectError::new(None, "$", format!("the body is not valid JSON: it is not UTF-8 (at byte {})", e.valid_up_to())))?;
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = BodySeed { now_unix }.deserialize(&mut de).and_then(|b| de.end().map(|()| b));
    let body = parsed.map_err(|e| DialectError::new(None, "$", format!("the body is not valid JSON: {e}")))?;
    let Some(body) = body else {
        return Err(DialectError::new(None, "$", "the body must be a JSON object with a `data` array"));
    };
    let events = events_of(body.data)?;
    let field = |key: &str, f: &Field| f.text().map(|t| t.map(Cow::into_owned)).map_err(|m| DialectError::new(None, format!("$['{key}']"), m));
    Ok(CapiRequest {
        events,
        test_event_code: field("test_event_code", &body.test_event_code)?,
        access_token: field("access_token", &body.access_token)?,
        partner_agent: field("partner_agent", &body.partner_agent)?,
    })
}

/// Reads form fields (`application/x-www-form-urlencoded` or `multipart/form-data`): `data`
/// is a JSON array of events or of JSON-encoded events. The first occurrence of a field counts.
pub fn capi_request_from_form(pairs: Vec<(String, String)>, now_unix: i64) -> Result<CapiRequest, DialectError> {
    let (mut test_event_code, mut access_token, mut partner_agent) = (None, None, None);
    let mut data = None;
    for (key, value) in pairs {
        let blank = value.trim().is_empty();
        let slot = match key.as_str() {
            "data" => {
                data.get_or_insert(value);
                continue;
            }
            "test_event_code" => &mut test_event_code,
            "access_token" => &mut access_token,
            "partner_agent" => &mut partner_agent,
            _ => continue,
        };
        if slot.is_none() && !blank {
            *slot = Some(value);
        }
    }
    let events = events_of(data.map(|text| data_text(&text, now_unix)))?;
    Ok(CapiRequest { events, test_event_code, access_token, partner_agent })
}

/// The raw `conversions` rows of `req` (text columns, as [`crate::convert::convert`] takes
/// them) for the source `pixel_id`, or the first reason the request must be refused (a
/// refused request stores nothing, as at Meta).
///
/// Mapping: `event_name`, `event_id`, `event_time` (unix seconds, within the last 7 days and
/// at most 10 minutes ahead), `action_source`, `opt_out`; `user_data.{em, ph, external_id}`
/// (first non-empty of a string or list, digest or plaintext as sent — `convert` hashes
/// plaintext), `user_data.st` → `geo_state` (only a US state, and only when `country` is
/// absent or `us`), `user_data.fbc` → `click_id`, `user_data.client_user_agent` →
/// `device_os`; `custom_data.{value, currency, order_id}`. Every other field is skipped
/// unread.
pub fn capi_rows(pixel_id: &str, req: CapiRequest) -> Result<RecordBatch, DialectError> {
    let Events { count, columns, first_error, .. } = req.events;
    if count > MAX_EVENTS {
        return Err(DialectError::new(None, "$['data']", format!("`data` holds {count} events; at most {MAX_EVENTS} are accepted per request")));
    }
    if count == 0 {
        return Err(DialectError::new(None, "$['data']", "`data` holds no events"));
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let is_test = req.test_event_code.as_deref().is_some_and(|c| !c.trim().is_empty());
    Ok(columns.finish(pixel_id, is_test, count))
}

fn path(i: usize, keys: &[&str]) -> String {
    let mut p = format!("$['data'][{i}]");
    for k in keys {
        p.push_str(&format!("['{k}']"));
    }
    p
}

fn event_time_message(m: &str) -> String {
    if m.starts_with("the event") { m.to_owned() } else { format!("`event_time` {m}") }
}

/// The `conversions` input columns an event fills, in [`Row`] order.
const COLUMNS: [&str; 14] = [
    "event_name",
    "event_time",
    "event_id",
    "action_source",
    "opt_out",
    "em",
    "ph",
    "external_id",
    "click_id",
    "geo_state",
    "device_os",
    "value",
    "currency",
    "order_id",
];

/// One event's cells, in [`COLUMNS`] order.
type Row<'a> = [Option<Cow<'a, str>>; COLUMNS.len()];

/// The text columns of the events read so far.
#[derive(Debug)]
struct Columns([StringBuilder; COLUMNS.len()]);

impl Columns {
    fn new() -> Columns {
        Columns(std::array::from_fn(|_| StringBuilder::new()))
    }

    fn push(&mut self, row: Row<'_>) {
        for (b, cell) in self.0.iter_mut().zip(row) {
            b.append_option(cell);
        }
    }

    /// The raw batch: the constant columns, then each event column some event filled (a
    /// column no event has is left out, as the JSON readers leave out absent keys).
    fn finish(self, pixel_id: &str, is_test: bool, rows: usize) -> RecordBatch {
        let constant = |v: &str| Arc::new(StringArray::from_iter_values(std::iter::repeat_n(v, rows))) as ArrayRef;
        let mut names = vec!["source_id", "origin", "is_test"];
        let mut columns = vec![constant(pixel_id), constant("server"), constant(if is_test { "true" } else { "false" })];
        for (name, mut b) in COLUMNS.into_iter().zip(self.0) {
            let col = b.finish();
            if col.null_count() < rows {
                names.push(name);
                columns.push(Arc::new(col));
            }
        }
        let schema = Arc::new(Schema::new(names.into_iter().map(|n| Column::new(n, DataType::Utf8, true)).collect::<Vec<_>>()));
        RecordBatch::try_new_with_options(schema, columns, &RecordBatchOptions::new().with_row_count(Some(rows))).expect("columns of equal length")
    }
}

/// The items of `data` as they are read: counted, and checked and stored as columns up to
/// the first one that cannot be (the request is refused then; later items are skipped).
#[derive(Debug)]
struct Events {
    count: usize,
    columns: Columns,
    first_error: Option<DialectError>,
    now_unix: i64,
}

impl Events {
    fn new(now_unix: i64) -> Events {
        Events { count: 0, columns: Columns::new(), first_error: None, now_unix }
    }

    /// Whether the next item needs reading (not past the limit, no earlier refusal).
    fn wants_more(&self) -> bool {
        self.first_error.is_none() && self.count < MAX_EVENTS
    }

    fn add(&mut self, item: Result<Event<'_>, &'static str>) {
        let i = self.count;
        self.count += 1;
        let stored = item.map_err(|m| DialectError::new(Some(i), path(i, &[]), m)).and_then(|event| {
            let row = event.row(i, self.now_unix)?;
            self.columns.push(row);
            Ok(())
        });
        if let Err(e) = stored {
            self.first_error = Some(e);
        }
    }
}

/// What `data` held, if anything.
enum Data {
    Events(Box<Events>),
    NotArray,
}

fn events_of(data: Option<Data>) -> Result<Events, DialectError> {
    let bad = |m: &str| DialectError::new(None, "$['data']", m);
    match data {
        None => Err(bad("the parameter `data` is required")),
        Some(Data::NotArray) => Err(bad("`data` must be a JSON array of events")),
        Some(Data::Events(events)) => Ok(*events),
    }
}

/// `data` given as text holding a JSON array (form fields are text).
fn data_text(text: &str, now_unix: i64) -> Data {
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = (DataSeed { now_unix }).deserialize(&mut de).and_then(|d| de.end().map(|()| d));
    match parsed {
        Ok(Some(events @ Data::Events(_))) => events,
        _ => Data::NotArray,
    }
}

/// The `visit_*` methods of a visitor for the JSON scalars it does not take (booleans and
/// numbers): each yields `$value`, so a wrong type is a value to report, not a parse error.
macro_rules! scalars_are {
    ($value:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok($value)
        }
    };
}

/// The top-level object; `None` when the body is JSON but not an object.
struct Body<'a> {
    data: Option<Data>,
    test_event_code: Field<'a>,
    access_token: Field<'a>,
    partner_agent: Field<'a>,
}

struct BodySeed {
    now_unix: i64,
}

impl<'de> DeserializeSeed<'de> for BodySeed {
    type Value = Option<Body<'de>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BodySeed {
    type Value = Option<Body<'de>>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut body = Body { data: None, test_event_code: Field::Null, access_token: Field::Null, partner_agent: Field::Null };
        const KEYS: &[&str] = &["data", "test_event_code", "access_token", "partner_agent"];
        while let Some(key) = map.next_key_seed(Key(KEYS))? {
            match key {
                Some(0) => body.data = map.next_value_seed(DataSeed { now_unix: self.now_unix })?,
                Some(1) => body.test_event_code = map.next_value()?,
                Some(2) => body.access_token = map.next_value()?,
                Some(3) => body.partner_agent = map.next_value()?,
                _ => drop(map.next_value::<IgnoredAny>()?),
            }
        }
        Ok(Some(body))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    scalars_are!(None);
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// A map key, as its index in a list of wanted names (`None`: not wanted).
struct Key(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().position(|k| *k == v))
    }
}

/// `data`: `None` for null, the events of an array, or an array held in a string.
struct DataSeed {
    now_unix: i64,
}

impl<'de> DeserializeSeed<'de> for DataSeed {
    type Value = Option<Data>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DataSeed {
    type Value = Option<Data>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of events")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut events = Events::new(self.now_unix);
        while seq.next_element_seed(ItemSeed(&mut events))?.is_some() {}
        Ok(Some(Data::Events(Box::new(events))))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(data_text(v, self.now_unix)))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Some(Data::NotArray))
    }
    scalars_are!(Some(Data::NotArray));
}

/// One item of `data`, added to the events as it is read.
struct ItemSeed<'e>(&'e mut Events);

impl<'de> DeserializeSeed<'de> for ItemSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.0.wants_more() {
            let item = d.deserialize_any(ItemVisitor)?;
            match item {
                Item::Event(event) => self.0.add(Ok(event)),
                Item::Encoded(text) => self.0.add(encoded_event(&text)),
                Item::Other => self.0.add(Err("must be an event object or a JSON-encoded event object")),
            }
        } else {
            IgnoredAny::deserialize(d)?;
            self.0.count += 1;
        }
        Ok(())
    }
}

fn encoded_event(text: &str) -> Result<Event<'_>, &'static str> {
    match serde_json::from_str::<Item<'_>>(text) {
        Ok(Item::Event(event)) => Ok(event),
        _ => Err("a string item of `data` must hold a JSON-encoded event object"),
    }
}

// Built and matched once per event, never stored: boxing the event would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Item<'a> {
    Event(Event<'a>),
    Encoded(Cow<'a, str>),
    Other,
}

impl<'de> serde::Deserialize<'de> for Item<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ItemVisitor)
    }
}

struct ItemVisitor;

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = Item<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an event")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Item<'de>, A::Error> {
        Event::from_map(map).map(Item::Event)
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Item<'de>, E> {
        Ok(Item::Encoded(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Item<'de>, E> {
        Ok(Item::Encoded(Cow::Owned(v.to_owned())))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Item<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Item::Other)
    }
    fn visit_unit<E>(self) -> Result<Item<'de>, E> {
        Ok(Item::Other)
    }
    scalars_are!(Item::Other);
}

/// An object read field by field from a map (only the fields the dialect maps).
trait FromMap<'de>: Sized {
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error>;
}

/// An optional nested object: absent (or null), an object, or something else.
#[derive(Default)]
enum Nested<T> {
    #[default]
    Absent,
    Object(T),
    NotObject,
}

impl<'de, T: FromMap<'de>> serde::Deserialize<'de> for Nested<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NestedVisitor(std::marker::PhantomData))
    }
}

struct NestedVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: FromMap<'de>> Visitor<'de> for NestedVisitor<T> {
    type Value = Nested<T>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Nested<T>, A::Error> {
        T::from_map(map).map(Nested::Object)
    }
    fn visit_unit<E>(self) -> Result<Nested<T>, E> {
        Ok(Nested::Absent)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Nested<T>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Nested::NotObject)
    }
    scalars_are!(Nested::NotObject);
    fn visit_str<E>(self, _: &str) -> Result<Nested<T>, E> {
        Ok(Nested::NotObject)
    }
}

/// The fields of an event that map to columns (a repeated key: the last one counts).
#[derive(Default)]
struct Event<'a> {
    event_name: Field<'a>,
    event_time: Field<'a>,
    event_id: Field<'a>,
    action_source: Field<'a>,
    opt_out: Field<'a>,
    user_data: Nested<User<'a>>,
    custom_data: Nested<Custom<'a>>,
}

#[derive(Default)]
struct User<'a> {
    em: Field<'a>,
    ph: Field<'a>,
    external_id: Field<'a>,
    fbc: Field<'a>,
    country: Field<'a>,
    st: Field<'a>,
    client_user_agent: Field<'a>,
}

#[derive(Default)]
struct Custom<'a> {
    value: Field<'a>,
    currency: Field<'a>,
    order_id: Field<'a>,
}

impl<'de> FromMap<'de> for Event<'de> {
    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        const KEYS: &[&str] = &["event_name", "event_time", "event_id", "action_source", "opt_out", "user_data", "custom_data"];
        let mut e = Event::default();
        while let Some(key) = map.next_key_seed(Key(KEYS))? {
            match key {
                Some(0) => e.event_name = map.next_value()?,
                Some(1) => e.event_time = map.next_value()?,
                Some(2) => e.event_id = map.next_value()?,
                Some(3) => e.action_source = map.next_value()?,
                Some(4) => e.opt_out = map.next_value()?,
                Some(5) => e.user_data = map.next_value()?,
                Some(6) => e.custom_data = map.next_value()?,
                _ => drop(map.next_value::<IgnoredAny>()?),
            }
        }
        Ok(e)
    }
}

impl<'de> FromMap<'de> for User<'de> {
    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        const KEYS: &[&str] = &["em", "ph", "external_id", "fbc", "country", "st", "client_user_agent"];
        let mut u = User::default();
        while let Some(key) = map.next_key_seed(Key(KEYS))? {
            let slot = match key {
                Some(0) => &mut u.em,
                Some(1) => &mut u.ph,
                Some(2) => &mut u.external_id,
                Some(3) => &mut u.fbc,
                Some(4) => &mut u.country,
                Some(5) => &mut u.st,
                Some(6) => &mut u.client_user_agent,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = map.next_value()?;
        }
        Ok(u)
    }
}

impl<'de> FromMap<'de> for Custom<'de> {
    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        const KEYS: &[&str] = &["value", "currency", "order_id"];
        let mut c = Custom::default();
        while let Some(key) = map.next_key_seed(Key(KEYS))? {
            let slot = match key {
                Some(0) => &mut c.value,
                Some(1) => &mut c.currency,
                Some(2) => &mut c.order_id,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = map.next_value()?;
        }
        Ok(c)
    }
}

impl<'a> Event<'a> {
    /// The event's cells, or the first reason it cannot be stored (checked in field order).
    fn row(&self, i: usize, now_unix: i64) -> Result<Row<'a>, DialectError> {
        let err = |keys: &[&str], message: &str| DialectError::new(Some(i), path(i, keys), message);
        let mut row: Row<'a> = Default::default();
        let [event_name, event_time_cell, event_id, action_source, opt_out, em, ph, external_id, click_id, geo_state, device_os, value, currency, order_id] =
            &mut row;
        let name = self.event_name.text().map_err(|m| err(&["event_name"], m))?;
        *event_name = Some(name.ok_or_else(|| err(&["event_name"], "`event_name` is required"))?);
        let micros = event_time(&self.event_time, false, now_unix).map_err(|m| err(&["event_time"], &event_time_message(m)))?;
        *event_time_cell = Some(Cow::Owned(time_text(micros)));
        *event_id = self.event_id.text().map_err(|m| err(&["event_id"], m))?;
        *action_source = self.action_source.text().map_err(|m| err(&["action_source"], m))?;
        *opt_out = self.opt_out.scalar().map_err(|m| err(&["opt_out"], m))?;
        match &self.user_data {
            Nested::Absent => {}
            Nested::NotObject => return Err(err(&["user_data"], "must be an object")),
            Nested::Object(user) => {
                let id = |key: &str, f: &Field<'a>| f.ident().map_err(|m| err(&["user_data", key], m));
                *em = id("em", &user.em)?;
                *ph = id("ph", &user.ph)?;
                *external_id = id("external_id", &user.external_id)?;
                *click_id = id("fbc", &user.fbc)?;
                // A state is kept only when the country is absent, `us` or unreadable.
                let us = match id("country", &user.country)? {
                    None => true,
                    Some(c) => ident::plain_low_cardinality(IdField::Country, &c).map_or(true, |c| c == "us"),
                };
                if us {
                    // Only what decodes to a US state is kept; Meta accepts any region.
                    *geo_state = id("st", &user.st)?.and_then(|s| ident::plain_low_cardinality(IdField::St, &s).ok()).map(Cow::Owned);
                }
                let ua = user.client_user_agent.text().map_err(|m| err(&["user_data", "client_user_agent"], m))?;
                *device_os = ua.map(|ua| Cow::Borrowed(super::device_os(&ua)));
            }
        }
        match &self.custom_data {
            Nested::Absent => {}
            Nested::NotObject => return Err(err(&["custom_data"], "must be an object")),
            Nested::Object(custom) => {
                *value = custom.value.scalar().map_err(|m| err(&["custom_data", "value"], m))?;
                *currency = custom.currency.scalar().map_err(|m| err(&["custom_data", "currency"], m))?;
                *order_id = custom.order_id.scalar().map_err(|m| err(&["custom_data", "order_id"], m))?;
            }
        }
        Ok(row)
    }
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
    use serde_json::Map;
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
        capi_request_from_form(serde_urlencoded::from_str(body).unwrap(), NOW).unwrap()
    }

    fn json_body(body: &Value) -> Result<CapiRequest, DialectError> {
        capi_request_from_json(body.to_string().as_bytes(), NOW)
    }

    /// The non-null cells of a raw batch, row by row, as JSON strings.
    fn text_rows(batch: &RecordBatch) -> Vec<Map<String, Value>> {
        (0..batch.num_rows())
            .map(|i| {
                let schema = batch.schema();
                schema
                    .fields()
                    .iter()
                    .zip(batch.columns())
                    .filter(|(_, c)| c.is_valid(i))
                    .map(|(f, c)| (f.name().clone(), json!(c.as_string::<i32>().value(i))))
                    .collect()
            })
            .collect()
    }

    fn stored(pixel_id: &str, req: CapiRequest) -> Result<Vec<Map<String, Value>>, DialectError> {
        capi_rows(pixel_id, req).map(|b| text_rows(&b))
    }

    fn event(extra: Value) -> Value {
        let mut e = json!({"event_name": "Purchase", "event_time": 1_700_000_000, "action_source": "website"});
        e.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        e
    }

    fn rows_of(events: Vec<Value>) -> Result<Vec<Map<String, Value>>, DialectError> {
        stored("px1", json_body(&json!({ "data": events }))?)
    }

    #[test]
    fn python_sdk_form_body() {
        let req = form(SDK_FORM);
        assert_eq!(req.test_event_code.as_deref(), Some("TEST123"));
        assert_eq!(req.access_token, None);
        assert_eq!(req.len(), 1, "one event, double-encoded by the SDK");
        let rows = stored("1234567890", req).unwrap();
        let want = json!({
            "source_id": "1234567890", "origin": "server", "is_test": "true",
            "event_name": "Purchase", "event_time": "1700000000", "event_id": "evt-1", "action_source": "website",
            "em": JANE_EM,
            "ph": "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176",
            "external_id": "cust-42",
            "geo_state": "ca",
            "click_id": "fb.1.1554763741205.AbCdEfGhIjKlMnOpQrStUvWxYz1234567890",
            "device_os": "ios",
            "value": "123.45", "currency": "usd", "order_id": "order-9",
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
        assert_eq!(stored("p", req).unwrap()[0]["is_test"], json!("false"));
        // Form `data` holding objects rather than strings.
        let objects = serde_urlencoded::to_string([("data", json!([event(json!({}))]).to_string())]).unwrap();
        assert_eq!(stored("p", form(&objects)).unwrap()[0]["event_name"], json!("Purchase"));
        // No `data`, or `data` not an array.
        let e = capi_request_from_form(vec![("access_token".into(), "t".into())], NOW).unwrap_err();
        assert_eq!(e.path, "$['data']");
        let e = capi_request_from_form(vec![("data".into(), "{\"event_name\":1}".into())], NOW).unwrap_err();
        assert_eq!(e.to_string(), "$['data']: `data` must be a JSON array of events");
    }

    #[test]
    fn json_body_with_objects_and_encoded_strings() {
        let body = json!({
            "data": [event(json!({"event_id": 7})), event(json!({"event_name": "Lead"})).to_string()],
            "test_event_code": "TEST1", "access_token": "tok", "partner_agent": "gtm", "upload_tag": "x",
        });
        let req = json_body(&body).unwrap();
        assert_eq!((req.access_token.as_deref(), req.partner_agent.as_deref()), (Some("tok"), Some("gtm")));
        let rows = stored("p", req).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["event_id"], json!("7"));
        assert_eq!(rows[1]["event_name"], json!("Lead"));
        assert!(rows.iter().all(|r| r["is_test"] == json!("true")));

        let e = rows_of(vec![json!("not json"), json!(3)]).unwrap_err();
        assert_eq!((e.index, e.path.as_str()), (Some(0), "$['data'][0]"));
        assert!(e.message.contains("JSON-encoded event object"), "{e}");
        let e = rows_of(vec![event(json!({})), json!(3)]).unwrap_err();
        assert_eq!((e.index, e.path.as_str()), (Some(1), "$['data'][1]"));
        for (body, path, message) in [
            (&b"{\"data\":"[..], "$", "not valid JSON"),
            (b"{\"data\":[]} x", "$", "not valid JSON"),
            (b"[]", "$", "must be a JSON object"),
            (b"\"data\"", "$", "must be a JSON object"),
            (b"{}", "$['data']", "is required"),
            (b"{\"data\":null}", "$['data']", "is required"),
            (b"{\"data\":{}}", "$['data']", "must be a JSON array"),
            (b"{\"data\":\"[1\"}", "$['data']", "must be a JSON array"),
            (b"{\"data\":[],\"access_token\":[1]}", "$['access_token']", "must be a string"),
            // Text that is not UTF-8 is refused, wherever it is.
            (b"{\"d\xffa\":[]}", "$", "not valid JSON"),
            (b"{\"data\":[{\"user_data\":{\"\xc3(\":1}}]}", "$", "not valid JSON"),
        ] {
            let e = capi_request_from_json(body, NOW).unwrap_err();
            assert_eq!(e.path, path, "{}", String::from_utf8_lossy(body));
            assert!(e.message.contains(message), "{e}");
        }
        // `data` as text holding the array, a repeated key (the last counts), escapes.
        let text = json!({"data": json!([event(json!({"event_id": "a"}))]).to_string()});
        assert_eq!(stored("p", json_body(&text).unwrap()).unwrap()[0]["event_id"], json!("a"));
        let twice = format!("{{\"data\":[{0},{0}],\"data\":[{0}]}}", event(json!({})));
        assert_eq!(capi_request_from_json(twice.as_bytes(), NOW).unwrap().len(), 1);
        let escaped = rows_of(vec![event(json!({"event_id": "a\"b\u{e9}", "user_data": {"em": ["", "x\ty@example.com"]}}))]).unwrap();
        assert_eq!((&escaped[0]["event_id"], &escaped[0]["em"]), (&json!("a\"bé"), &json!("x\ty@example.com")));
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
        let bad_late = [many(1000), vec![json!(3)]].concat();
        assert!(rows_of(bad_late).unwrap_err().message.contains("1001 events"), "the count is checked first");
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
        let sdk = capi_rows("1234567890", form(SDK_FORM)).unwrap();
        let plain = json!({"data": [event(json!({"user_data": {"em": ["  Jane.Doe@Example.COM "], "fn": "Jane"}}))]});
        let plain = capi_rows("1234567890", json_body(&plain).unwrap()).unwrap();
        let sdk = convert(Table::Conversions, &sdk, &[], &ctx()).unwrap();
        let plain = convert(Table::Conversions, &plain, &[], &ctx()).unwrap();
        assert!(sdk.rejected.is_empty() && plain.rejected.is_empty(), "{:?} {:?}", sdk.rejected, plain.rejected);
        assert_eq!(sdk.hashed_on_arrival + plain.hashed_on_arrival, 2, "the SDK's plaintext external_id and the plaintext email");
        let want = ctx().pseudonymizer.pseudonymize(&HashedId::from_hex(JANE_EM).unwrap());
        for out in [&sdk, &plain] {
            assert_eq!(out.batch.column_by_name("em").unwrap().as_fixed_size_binary().value(0), want.as_bytes());
        }
        let col = |name: &str| sdk.batch.column_by_name(name).unwrap().clone();
        assert_eq!(col("geo_state").as_string::<i32>().value(0), "ca");
        assert_eq!(col("currency").as_string::<i32>().value(0), "USD");
        assert_eq!(col("advertiser_id").as_string::<i32>().value(0), "acme");
        assert!(col("is_test").as_boolean().value(0));
        assert!(!plain.batch.column_by_name("is_test").unwrap().as_boolean().value(0));

        // A row error from convert maps back to Meta's path, without the value.
        let bad = json!({"data": [event(json!({})), event(json!({"user_data": {"em": "not-an-email"}}))]});
        let out = convert(Table::Conversions, &capi_rows("p", json_body(&bad).unwrap()).unwrap(), &[], &ctx()).unwrap();
        let e = &out.rejected[0];
        assert_eq!(capi_path(e.row, &e.column), "$['data'][1]['user_data']['em']");
        assert!(!e.message.contains("not-an-email"), "{}", e.message);
    }
}
