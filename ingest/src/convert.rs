//! Validation at the edge: a raw input batch becomes a batch of a table's schema.
//!
//! Every way rows enter Tally — `tally import` from CSV, JSON lines or Parquet, and the native
//! HTTP endpoints — produces a *raw batch*: an Arrow batch whose columns are named as the
//! user named them (SPEC section 5: the table's columns, with identifiers as `em`/`em_sha256`/
//! `email`, `ph`/`ph_sha256`/`phone`, `external_id`/`external_id_sha256`) and typed however the
//! source typed them. [`convert`] checks every value once, column by column, normalizes and
//! hashes identifiers (plaintext goes no further than [`tally_core::ident`]), pseudonymizes them,
//! fills in what Tally computes (`received_at`, `jurisdiction`, `key_id`), and returns the
//! valid rows in the table schema plus one precise error per invalid row. Downstream code only
//! ever sees valid, pseudonymized rows.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBuilder, Date32Builder, FixedSizeBinaryBuilder, Float64Builder,
    Int64Builder, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use tally_core::ident::{self, IdField, PlaintextMode, Provenance};
use tally_core::schema::{ID_WIDTH, Table};
use tally_core::store::date_to_day;
use tally_core::{AdvertiserId, Pseudonymizer};

/// What [`convert`] needs besides the rows.
#[derive(Debug, Clone)]
pub struct Context {
    /// The advertiser the rows belong to when they don't say (the API key's; `--advertiser`).
    /// A row naming another advertiser is rejected.
    pub advertiser: Option<AdvertiserId>,
    /// Keys identifiers at rest.
    pub pseudonymizer: Pseudonymizer,
    /// Policy for plaintext identifiers.
    pub plaintext: PlaintextMode,
    /// The policy's jurisdiction, stored on every row.
    pub jurisdiction: String,
    /// `received_at` for every row, microseconds since the epoch.
    pub received_at: i64,
    /// Oldest acceptable event/touch time (the policy's retention), microseconds.
    pub oldest: Option<i64>,
    /// Latest acceptable event/touch time, microseconds.
    pub newest: Option<i64>,
}

/// One rejected row: where and why. Messages never contain identifier plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// Row index in the raw batch.
    pub row: usize,
    /// The column at fault, as the input named it.
    pub column: String,
    /// What is wrong.
    pub message: String,
}

/// The outcome of [`convert`].
#[derive(Debug)]
pub struct Converted {
    /// Valid rows, in the table schema.
    pub batch: RecordBatch,
    /// Raw-batch row index of each valid row, in order.
    pub kept: Vec<usize>,
    /// Invalid rows, one error each (the first found), ordered by row.
    pub rejected: Vec<RowError>,
    /// Identifier values that arrived as plaintext and were hashed here.
    pub hashed_on_arrival: usize,
}

/// A problem with the input as a whole (its columns), not with a row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    /// A column Tally does not know.
    #[error("unknown column `{column}` for `{table}` (accepted: {accepted})")]
    UnknownColumn {
        /// The column.
        column: String,
        /// The table.
        table: Table,
        /// The accepted names.
        accepted: String,
    },
    /// A column Tally computes itself.
    #[error("column `{0}` is set by Tally; remove it from the input")]
    Computed(String),
    /// A required column is absent.
    #[error("missing required column `{0}`")]
    Missing(String),
    /// Two columns give the same identifier.
    #[error("columns `{0}` and `{1}` both give the same identifier; keep one")]
    Conflict(String, String),
    /// A column of a type that cannot hold its values (e.g. a struct).
    #[error("column `{column}` has type {data_type}, which cannot hold {what}")]
    BadType {
        /// The column.
        column: String,
        /// Its type.
        data_type: String,
        /// What the column holds.
        what: &'static str,
    },
}

/// How an input column is read.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Advertiser,
    Text { required: bool },
    Lower { required: bool },
    OneOf(&'static [&'static str], Option<&'static str>),
    Time,
    Date,
    Float { non_negative: bool, required: bool },
    Count,
    Flag,
    Currency { required: bool },
    State,
    Ident(IdField),
    Received,
    Jurisdiction,
    KeyId,
}

/// How an identifier source column spells its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdForm {
    /// Digest or plaintext (`em`, `email`, `external_id`).
    Either,
    /// Digest only (`em_sha256`).
    Digest,
}

fn kind_of(table: Table, column: &str) -> Kind {
    use Kind::*;
    match (table, column) {
        (_, "advertiser_id") => Advertiser,
        (_, "received_at") => Received,
        (_, "jurisdiction") => Jurisdiction,
        (_, "key_id") => KeyId,
        (_, "em") => Ident(IdField::Em),
        (_, "ph") => Ident(IdField::Ph),
        (_, "external_id") => Ident(IdField::ExternalId),
        (_, "geo_state") => State,
        (_, "device_os") => Lower { required: false },
        (_, "event_time" | "touch_time") => Time,
        (_, "date") => Date,
        (_, "currency") => Currency { required: matches!(table, Table::Spend) },
        (Table::Conversions, "origin") => OneOf(&["server", "browser"], Some("server")),
        (Table::Conversions, "is_test" | "opt_out") => Flag,
        (Table::Conversions, "value") => Float { non_negative: false, required: false },
        (Table::Conversions, "source_id" | "event_name") => Text { required: true },
        (Table::Touchpoints, "touch_type") => OneOf(&["impression", "click"], None),
        (Table::Touchpoints, "cost") => Float { non_negative: true, required: false },
        (Table::Touchpoints, "touch_id") => Text { required: true },
        (Table::Touchpoints | Table::Spend | Table::Baseline, "channel") => Lower { required: true },
        (_, "campaign_id") => Text { required: true },
        (Table::Spend, "spend") => Float { non_negative: true, required: true },
        (Table::Spend, "impressions" | "clicks") => Count,
        (Table::Baseline, "conversions") => Float { non_negative: true, required: true },
        (Table::Baseline, "value") => Float { non_negative: true, required: false },
        _ => Text { required: false },
    }
}

/// The input names accepted for a table column (identifiers have aliases).
fn aliases(column: &str) -> &'static [(&'static str, IdForm)] {
    match column {
        "em" => &[("em", IdForm::Either), ("em_sha256", IdForm::Digest), ("email", IdForm::Either)],
        "ph" => &[("ph", IdForm::Either), ("ph_sha256", IdForm::Digest), ("phone", IdForm::Either)],
        "external_id" => &[("external_id", IdForm::Either), ("external_id_sha256", IdForm::Digest)],
        _ => &[],
    }
}

fn is_computed(table: Table, name: &str) -> bool {
    matches!(name, "received_at" | "jurisdiction" | "key_id")
        || (name == "date" && matches!(table, Table::Conversions | Table::Touchpoints))
}

/// Every input column name `table` accepts.
pub fn accepted_columns(table: Table) -> Vec<String> {
    let mut out = Vec::new();
    for f in table.schema().fields() {
        let name = f.name().as_str();
        if is_computed(table, name) {
            continue;
        }
        let names = aliases(name);
        if names.is_empty() {
            out.push(name.to_owned());
        } else {
            out.extend(names.iter().map(|(n, _)| (*n).to_owned()));
        }
    }
    out
}

/// Per-row first errors: a flag per row, details only for the (rare) bad rows.
struct Errors {
    bad: Vec<bool>,
    first: std::collections::BTreeMap<usize, (String, String)>,
}

impl Errors {
    fn new(rows: usize) -> Errors {
        Errors { bad: vec![false; rows], first: std::collections::BTreeMap::new() }
    }

    fn set(&mut self, row: usize, column: &str, message: impl Into<String>) {
        if !self.bad[row] {
            self.bad[row] = true;
            self.first.insert(row, (column.to_owned(), message.into()));
        }
    }
}

/// Validates and converts `raw` into `table`'s schema. See the module docs. Rows listed in
/// `unreadable` (by the reader) are rejected with their reader's error.
pub fn convert(table: Table, raw: &RecordBatch, unreadable: &[RowError], ctx: &Context) -> Result<Converted, ShapeError> {
    let n = raw.num_rows();
    let schema = raw.schema();
    check_shape(table, &schema)?;
    let mut errors = Errors::new(n);
    for e in unreadable {
        errors.set(e.row, &e.column, e.message.clone());
    }
    let mut hashed_on_arrival = 0usize;
    let target = table.schema();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(target.fields().len());
    for field in target.fields() {
        let name = field.name().as_str();
        let kind = kind_of(table, name);
        let col: ArrayRef = match kind {
            Kind::Received => constant_times(n, ctx.received_at),
            Kind::Jurisdiction => Arc::new(StringArray::from_iter_values(std::iter::repeat_n(ctx.jurisdiction.as_str(), n))),
            Kind::KeyId => Arc::new(StringArray::from_iter_values(std::iter::repeat_n(ctx.pseudonymizer.key_id(), n))),
            Kind::Ident(id_field) => {
                let source = aliases(name).iter().find_map(|(alias, form)| schema.index_of(alias).ok().map(|i| (*alias, *form, raw.column(i))));
                match source {
                    None => Arc::new(FixedSizeBinaryBuilder::with_capacity(0, ID_WIDTH).finish_nulls(n)),
                    Some((alias, form, col)) => {
                        let (arr, hashed) = identifiers(col, alias, form, id_field, ctx, &mut errors)?;
                        hashed_on_arrival += hashed;
                        arr
                    }
                }
            }
            _ => {
                let col = schema.index_of(name).ok().map(|i| raw.column(i));
                read_column(kind, name, col, n, ctx, &mut errors)?
            }
        };
        columns.push(col);
    }
    // Assemble with everything nullable (rejected rows may hold nulls), keep the valid rows,
    // then re-wrap in the real schema, which checks non-nullable columns.
    let loose = Arc::new(Schema::new(target.fields().iter().map(|f| Field::new(f.name(), f.data_type().clone(), true)).collect::<Vec<_>>()));
    let all = RecordBatch::try_new(loose, columns).map_err(|e| ShapeError::BadType { column: "*".into(), data_type: e.to_string(), what: "rows" })?;
    let kept_batch = if errors.first.is_empty() {
        all
    } else {
        let mask: BooleanArray = errors.bad.iter().map(|bad| Some(!bad)).collect();
        filter_record_batch(&all, &mask).expect("mask has the batch's length")
    };
    let batch = RecordBatch::try_new(target.clone(), kept_batch.columns().to_vec()).expect("valid rows satisfy the schema");
    let kept = (0..n).filter(|row| !errors.bad[*row]).collect();
    let rejected = errors.first.into_iter().map(|(row, (column, message))| RowError { row, column, message }).collect();
    Ok(Converted { batch, kept, rejected, hashed_on_arrival })
}

fn check_shape(table: Table, schema: &Schema) -> Result<(), ShapeError> {
    let accepted = accepted_columns(table);
    for f in schema.fields() {
        let name = f.name().as_str();
        if is_computed(table, name) {
            return Err(ShapeError::Computed(name.to_owned()));
        }
        if !accepted.iter().any(|a| a == name) {
            return Err(ShapeError::UnknownColumn { column: name.to_owned(), table, accepted: accepted.join(", ") });
        }
    }
    for id in ["em", "ph", "external_id"] {
        let present: Vec<&str> = aliases(id).iter().map(|(a, _)| *a).filter(|a| schema.index_of(a).is_ok()).collect();
        if present.len() > 1 {
            return Err(ShapeError::Conflict(present[0].to_owned(), present[1].to_owned()));
        }
    }
    for f in table.schema().fields() {
        let name = f.name().as_str();
        let required = !f.is_nullable()
            && !is_computed(table, name)
            && !matches!(kind_of(table, name), Kind::Advertiser | Kind::Flag | Kind::OneOf(_, Some(_)));
        if required && schema.index_of(name).is_err() {
            return Err(ShapeError::Missing(name.to_owned()));
        }
    }
    Ok(())
}

/// The column as text (numbers and booleans as their text); empty and blank values become null.
fn as_text(col: &ArrayRef, name: &str, what: &'static str) -> Result<StringArray, ShapeError> {
    let utf8 = match col.data_type() {
        DataType::Utf8 => col.clone(),
        DataType::Null
        | DataType::LargeUtf8
        | DataType::Utf8View
        | DataType::Dictionary(..)
        | DataType::Boolean
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal128(..)
        | DataType::Date32 => cast(col, &DataType::Utf8).map_err(|_| bad_type(col, name, what))?,
        _ => return Err(bad_type(col, name, what)),
    };
    Ok(utf8.as_string::<i32>().clone())
}

fn bad_type(col: &ArrayRef, name: &str, what: &'static str) -> ShapeError {
    ShapeError::BadType { column: name.to_owned(), data_type: col.data_type().to_string(), what }
}

fn text_values(arr: &StringArray) -> impl Iterator<Item = Option<&str>> {
    arr.iter().map(|v| v.and_then(clean))
}

/// The value without surrounding whitespace; `None` if blank. Most values need no trimming,
/// which two byte checks establish.
fn clean(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(f), Some(l)) if f.is_ascii_graphic() && l.is_ascii_graphic() => Some(s),
        _ => Some(s.trim()).filter(|t| !t.is_empty()),
    }
}

/// Whether a text column can be stored as it came: every value already clean (and lowercase
/// when `lower`), and no missing value where one is required. Then no byte is copied.
fn passes_through(text: &StringArray, lower: bool, required: bool) -> bool {
    (!required || text.null_count() == 0)
        && text.iter().flatten().all(|v| clean(v).is_some_and(|c| c.len() == v.len()) && !(lower && v.bytes().any(|c| c.is_ascii_uppercase())))
}

/// Normalizes each distinct value of a low-cardinality column once. Neighbouring rows
/// usually repeat a value, so the previous one is checked before the map.
struct Memo<'a, T> {
    last: Option<(&'a str, T)>,
    seen: std::collections::HashMap<&'a str, T>,
}

impl<'a, T: Clone> Memo<'a, T> {
    fn new() -> Self {
        Memo { last: None, seen: std::collections::HashMap::new() }
    }
    fn get(&mut self, v: &'a str, f: impl FnOnce(&str) -> T) -> T {
        if let Some((prev, out)) = &self.last
            && *prev == v
        {
            return out.clone();
        }
        let out = self.seen.entry(v).or_insert_with(|| f(v)).clone();
        self.last = Some((v, out.clone()));
        out
    }
}

fn read_column(kind: Kind, name: &str, col: Option<&ArrayRef>, n: usize, ctx: &Context, errors: &mut Errors) -> Result<ArrayRef, ShapeError> {
    Ok(match kind {
        Kind::Advertiser => {
            let mut b = StringBuilder::with_capacity(n, n * 8);
            let forced = ctx.advertiser.as_ref();
            match col {
                None => {
                    if forced.is_none() {
                        return Err(ShapeError::Missing("advertiser_id".into()));
                    }
                    (0..n).for_each(|_| b.append_option(forced.map(AdvertiserId::as_str)));
                }
                Some(col) => {
                    let text = as_text(col, name, "advertiser ids")?;
                    let mut valid = Memo::new();
                    for (row, v) in text_values(&text).enumerate() {
                        match (v, forced) {
                            (None, Some(f)) => b.append_value(f.as_str()),
                            (None, None) => {
                                errors.set(row, name, "`advertiser_id` is required");
                                b.append_null();
                            }
                            (Some(v), Some(f)) if v != f.as_str() => {
                                errors.set(row, name, format!("row belongs to advertiser `{v}`, not `{f}`"));
                                b.append_null();
                            }
                            (Some(v), _) => match valid.get(v, |v| v.parse::<AdvertiserId>().map(drop)) {
                                Ok(()) => b.append_value(v),
                                Err(e) => {
                                    errors.set(row, name, e);
                                    b.append_null();
                                }
                            },
                        }
                    }
                }
            }
            Arc::new(b.finish())
        }
        Kind::Text { required } | Kind::Lower { required } => {
            let lower = matches!(kind, Kind::Lower { .. });
            let mut b = StringBuilder::with_capacity(n, n * 16);
            match col {
                None if required => return Err(ShapeError::Missing(name.to_owned())),
                None => (0..n).for_each(|_| b.append_null()),
                Some(col) => {
                    let text = as_text(col, name, "text")?;
                    if passes_through(&text, lower, required) {
                        return Ok(Arc::new(text));
                    }
                    for (row, v) in text_values(&text).enumerate() {
                        match v {
                            None if required => {
                                errors.set(row, name, format!("`{name}` is required"));
                                b.append_null();
                            }
                            None => b.append_null(),
                            Some(v) if lower && v.bytes().any(|c| c.is_ascii_uppercase()) => b.append_value(v.to_ascii_lowercase()),
                            Some(v) => b.append_value(v),
                        }
                    }
                }
            }
            Arc::new(b.finish())
        }
        Kind::OneOf(allowed, default) => {
            let mut b = StringBuilder::with_capacity(n, n * 8);
            let text = col.map(|c| as_text(c, name, "text")).transpose()?;
            for row in 0..n {
                let v = text.as_ref().and_then(|t| t.is_valid(row).then(|| t.value(row))).and_then(clean).or(default);
                match v.map(|v| allowed.iter().find(|a| a.eq_ignore_ascii_case(v))) {
                    Some(Some(v)) => b.append_value(v),
                    Some(None) => {
                        errors.set(row, name, format!("`{name}` must be one of {}", allowed.join(", ")));
                        b.append_null();
                    }
                    None => {
                        errors.set(row, name, format!("`{name}` is required (one of {})", allowed.join(", ")));
                        b.append_null();
                    }
                }
            }
            Arc::new(b.finish())
        }
        Kind::Flag => {
            let mut b = BooleanBuilder::with_capacity(n);
            match col {
                None => (0..n).for_each(|_| b.append_value(false)),
                Some(col) => {
                    let text = as_text(col, name, "booleans")?;
                    let is = |v: &str, words: [&str; 4]| words.iter().any(|w| w.eq_ignore_ascii_case(v));
                    for (row, v) in text_values(&text).enumerate() {
                        match v {
                            None => b.append_value(false),
                            Some(v) if is(v, ["false", "0", "f", "no"]) => b.append_value(false),
                            Some(v) if is(v, ["true", "1", "t", "yes"]) => b.append_value(true),
                            Some(_) => {
                                errors.set(row, name, format!("`{name}` must be true or false"));
                                b.append_value(false);
                            }
                        }
                    }
                }
            }
            Arc::new(b.finish())
        }
        Kind::Float { non_negative, required } => {
            let mut b = Float64Builder::with_capacity(n);
            match col {
                None => (0..n).for_each(|_| b.append_null()),
                Some(col) => {
                    let floats = match col.data_type() {
                        DataType::Float64 => col.as_primitive::<arrow::datatypes::Float64Type>().clone(),
                        t if t.is_numeric() => cast(col, &DataType::Float64).map_err(|_| bad_type(col, name, "numbers"))?.as_primitive().clone(),
                        _ => {
                            let text = as_text(col, name, "numbers")?;
                            text_values(&text).map(|v| v.map(|s| s.parse::<f64>().unwrap_or(f64::NAN))).collect()
                        }
                    };
                    for (row, v) in floats.iter().enumerate() {
                        match v {
                            None if required => {
                                errors.set(row, name, format!("`{name}` is required"));
                                b.append_null();
                            }
                            None => b.append_null(),
                            Some(x) if !x.is_finite() => {
                                errors.set(row, name, format!("`{name}` must be a number"));
                                b.append_null();
                            }
                            Some(x) if non_negative && x < 0.0 => {
                                errors.set(row, name, format!("`{name}` must not be negative"));
                                b.append_null();
                            }
                            Some(x) => b.append_value(x),
                        }
                    }
                }
            }
            Arc::new(b.finish())
        }
        Kind::Count => {
            let mut b = Int64Builder::with_capacity(n);
            match col {
                None => (0..n).for_each(|_| b.append_null()),
                Some(col) => {
                    let text = as_text(col, name, "counts")?;
                    for (row, v) in text_values(&text).enumerate() {
                        match v.map(|s| s.parse::<i64>()) {
                            None => b.append_null(),
                            Some(Ok(x)) if x >= 0 => b.append_value(x),
                            Some(_) => {
                                errors.set(row, name, format!("`{name}` must be a whole number ≥ 0"));
                                b.append_null();
                            }
                        }
                    }
                }
            }
            Arc::new(b.finish())
        }
        Kind::Currency { required } => {
            let mut b = StringBuilder::with_capacity(n, n * 3);
            let text = col.map(|c| as_text(c, name, "currency codes")).transpose()?;
            let mut codes = Memo::new();
            for row in 0..n {
                let v = text.as_ref().and_then(|t| t.is_valid(row).then(|| t.value(row))).and_then(clean);
                match v {
                    None if required => {
                        errors.set(row, name, format!("`{name}` is required"));
                        b.append_null();
                    }
                    None => b.append_null(),
                    Some(v) => match codes.get(v, currency) {
                        Some(code) => b.append_value(code),
                        None => {
                            errors.set(row, name, format!("`{name}` must be an ISO 4217 code such as USD"));
                            b.append_null();
                        }
                    },
                }
            }
            Arc::new(b.finish())
        }
        Kind::State => {
            let mut b = StringBuilder::with_capacity(n, n * 2);
            match col {
                None => (0..n).for_each(|_| b.append_null()),
                Some(col) => {
                    let text = as_text(col, name, "US states")?;
                    let mut states = Memo::new();
                    for (row, v) in text_values(&text).enumerate() {
                        match v.map(|v| states.get(v, |v| ident::plain_low_cardinality(IdField::St, v))) {
                            None => b.append_null(),
                            Some(Ok(s)) => b.append_value(s),
                            Some(Err(e)) => {
                                errors.set(row, name, e.to_string().replace("`st`", "`geo_state`"));
                                b.append_null();
                            }
                        }
                    }
                }
            }
            Arc::new(b.finish())
        }
        Kind::Time => {
            let col = col.ok_or_else(|| ShapeError::Missing(name.to_owned()))?;
            let times = timestamps(col, name, errors)?;
            let mut b = TimestampMicrosecondBuilder::with_capacity(n);
            for (row, t) in times.into_iter().enumerate() {
                match t {
                    Some(t) if ctx.oldest.is_some_and(|o| t < o) => {
                        errors.set(row, name, format!("`{name}` is older than the policy's retention allows"));
                        b.append_null();
                    }
                    Some(t) if ctx.newest.is_some_and(|o| t > o) => {
                        errors.set(row, name, format!("`{name}` is in the future"));
                        b.append_null();
                    }
                    Some(t) => b.append_value(t),
                    None => {
                        errors.set(row, name, format!("`{name}` is required"));
                        b.append_null();
                    }
                }
            }
            Arc::new(b.finish().with_timezone("UTC"))
        }
        Kind::Date => {
            let col = col.ok_or_else(|| ShapeError::Missing(name.to_owned()))?;
            let mut b = Date32Builder::with_capacity(n);
            if let Some(d) = col.as_primitive_opt::<arrow::datatypes::Date32Type>() {
                for (row, v) in d.iter().enumerate() {
                    if v.is_none() {
                        errors.set(row, name, format!("`{name}` is required"));
                    }
                    b.append_option(v);
                }
            } else {
                let text = as_text(col, name, "dates")?;
                for (row, v) in text_values(&text).enumerate() {
                    match v.map(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d")) {
                        Some(Ok(d)) => b.append_value(date_to_day(d)),
                        Some(Err(_)) => {
                            errors.set(row, name, format!("`{name}` must be a date YYYY-MM-DD"));
                            b.append_null();
                        }
                        None => {
                            errors.set(row, name, format!("`{name}` is required"));
                            b.append_null();
                        }
                    }
                }
            }
            Arc::new(b.finish())
        }
        Kind::Received | Kind::Jurisdiction | Kind::KeyId | Kind::Ident(_) => unreachable!("handled by convert"),
    })
}

/// Microseconds since the epoch from RFC 3339 text, unix seconds (integer or fractional), or an
/// Arrow timestamp (a timestamp without zone is taken as UTC).
fn timestamps(col: &ArrayRef, name: &str, errors: &mut Errors) -> Result<Vec<Option<i64>>, ShapeError> {
    let n = col.len();
    Ok(match col.data_type() {
        DataType::Timestamp(_, tz) => {
            let target = DataType::Timestamp(TimeUnit::Microsecond, tz.clone());
            let micros = cast(col, &target).map_err(|_| bad_type(col, name, "times"))?;
            micros.as_primitive::<arrow::datatypes::TimestampMicrosecondType>().iter().collect()
        }
        t if t.is_integer() => {
            let secs = cast(col, &DataType::Int64).map_err(|_| bad_type(col, name, "times"))?;
            let secs = secs.as_primitive::<arrow::datatypes::Int64Type>();
            (0..n).map(|row| secs.is_valid(row).then(|| secs.value(row)).and_then(|s| unix_seconds(s as f64, row, name, errors))).collect()
        }
        t if t.is_floating() => {
            let secs = cast(col, &DataType::Float64).map_err(|_| bad_type(col, name, "times"))?;
            let secs = secs.as_primitive::<arrow::datatypes::Float64Type>();
            (0..n).map(|row| secs.is_valid(row).then(|| secs.value(row)).and_then(|s| unix_seconds(s, row, name, errors))).collect()
        }
        _ => {
            let text = as_text(col, name, "times")?;
            text_values(&text)
                .enumerate()
                .map(|(row, v)| {
                    let v = v?;
                    // Numbers first: they fail fast on times, while the time formats are slow to reject numbers.
                    if let Ok(s) = v.parse::<f64>() {
                        return unix_seconds(s, row, name, errors);
                    }
                    let t = parse_time(v);
                    if t.is_none() {
                        errors.set(row, name, format!("`{name}` must be an RFC 3339 time (2026-08-01T12:00:00Z) or unix seconds"));
                    }
                    t
                })
                .collect()
        }
    })
}

/// RFC 3339 / ISO 8601 text to microseconds; a time without offset is taken as UTC.
pub fn parse_time(s: &str) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc).timestamp_micros());
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc().timestamp_micros());
        }
    }
    if let Ok(t) = DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%#z") {
        return Some(t.with_timezone(&Utc).timestamp_micros());
    }
    None
}

fn unix_seconds(s: f64, row: usize, name: &str, errors: &mut Errors) -> Option<i64> {
    // Beyond year 5138 in seconds means the sender used milliseconds.
    if !s.is_finite() || !(0.0..1e11).contains(&s) {
        errors.set(row, name, format!("`{name}` must be unix seconds (this looks like milliseconds or is out of range)"));
        return None;
    }
    Some((s * 1e6).round() as i64)
}

/// Hashes (if needed) and pseudonymizes one identifier column.
fn identifiers(col: &ArrayRef, alias: &str, form: IdForm, field: IdField, ctx: &Context, errors: &mut Errors) -> Result<(ArrayRef, usize), ShapeError> {
    let n = col.len();
    let mut b = FixedSizeBinaryBuilder::with_capacity(n, ID_WIDTH);
    let mut hashed = 0;
    let text = as_text(col, alias, "identifiers")?;
    // Exports often list one person's rows together: a value equal to the previous row's is
    // not hashed again (same input, same pseudonym).
    let mut last: Option<(&str, [u8; ID_WIDTH as usize], bool)> = None;
    for (row, v) in text_values(&text).enumerate() {
        let Some(v) = v else {
            b.append_null();
            continue;
        };
        if let Some((prev, pseudo, on_arrival)) = &last
            && *prev == v
        {
            hashed += usize::from(*on_arrival);
            b.append_value(pseudo).expect("32 bytes");
            continue;
        }
        let result = match form {
            IdForm::Digest => tally_core::HashedId::from_hex(v)
                .map(|h| (h, Provenance::SenderHashed))
                .ok_or_else(|| format!("`{alias}` must be 64 hex characters (a SHA-256 digest)")),
            IdForm::Either => ident::hash_identifier(field, v, ctx.plaintext).map_err(|e| e.to_string().replacen(&format!("`{field}`"), &format!("`{alias}`"), 1)),
        };
        match result {
            Ok((h, how)) => {
                let on_arrival = how == Provenance::HashedOnArrival;
                hashed += usize::from(on_arrival);
                let pseudo = *ctx.pseudonymizer.pseudonymize(&h).as_bytes();
                b.append_value(pseudo).expect("32 bytes");
                last = Some((v, pseudo, on_arrival));
            }
            Err(message) => {
                errors.set(row, alias, message);
                b.append_null();
            }
        }
    }
    Ok((Arc::new(b.finish()), hashed))
}

fn constant_times(n: usize, micros: i64) -> ArrayRef {
    Arc::new(arrow::array::TimestampMicrosecondArray::from_value(micros, n).with_timezone("UTC"))
}

trait FinishNulls {
    fn finish_nulls(self, n: usize) -> arrow::array::FixedSizeBinaryArray;
}

impl FinishNulls for FixedSizeBinaryBuilder {
    fn finish_nulls(mut self, n: usize) -> arrow::array::FixedSizeBinaryArray {
        (0..n).for_each(|_| self.append_null());
        self.finish()
    }
}

/// The uppercase ISO 4217 code, if `s` is one.
pub fn currency(s: &str) -> Option<&'static str> {
    let upper = s.to_ascii_uppercase();
    CURRENCIES.iter().find(|c| **c == upper).copied()
}

/// Active ISO 4217 currency codes.
const CURRENCIES: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BGN", "BHD", "BIF",
    "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF", "CHF", "CLP", "CNY", "COP", "CRC",
    "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS",
    "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD",
    "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL",
    "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MYR", "MZN", "NAD",
    "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD",
    "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP",
    "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS", "VES",
    "VND", "VUV", "WST", "XAF", "XCD", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWL",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::json_rows;

    fn ctx() -> Context {
        Context {
            advertiser: None,
            pseudonymizer: Pseudonymizer::new("k1", [1; 32]),
            plaintext: PlaintextMode::Hash,
            jurisdiction: "US".into(),
            received_at: 1_700_000_000_000_000,
            oldest: Some(1_600_000_000_000_000),
            newest: Some(1_800_000_000_000_000),
        }
    }

    fn rows(json: &[&str]) -> (RecordBatch, Vec<RowError>) {
        json_rows(json.iter().map(|s| serde_json::from_str(s).map_err(|e| e.to_string())).collect())
    }

    fn run(table: Table, json: &[&str], ctx: &Context) -> Result<Converted, ShapeError> {
        let (raw, bad) = rows(json);
        convert(table, &raw, &bad, ctx)
    }

    const TOUCH: &str = r#"{"advertiser_id":"acme","touch_id":"t","channel":"meta","campaign_id":"c","touch_type":"click","touch_time":"2024-01-01T00:00:00Z"}"#;

    fn with(base: &str, extra: &str) -> String {
        format!("{},{}", base.trim_end_matches('}'), &extra[1..])
    }

    #[test]
    fn times_in_every_accepted_form() {
        let forms = [
            r#"{"touch_time":"2024-01-01T00:00:00Z"}"#,
            r#"{"touch_time":"2024-01-01T01:00:00+01:00"}"#,
            r#"{"touch_time":"2024-01-01 00:00:00"}"#,
            r#"{"touch_time":1704067200}"#,
            r#"{"touch_time":"1704067200.0"}"#,
        ];
        let json: Vec<String> = forms.iter().map(|f| with(TOUCH, f).replace(r#""touch_time":"2024-01-01T00:00:00Z","#, "")).collect();
        let json: Vec<&str> = json.iter().map(String::as_str).collect();
        let out = run(Table::Touchpoints, &json, &ctx()).unwrap();
        assert!(out.rejected.is_empty(), "{:?}", out.rejected);
        let t = out.batch.column_by_name("touch_time").unwrap().as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        assert!(t.values().iter().all(|v| *v == 1_704_067_200_000_000), "{t:?}");
    }

    #[test]
    fn milliseconds_retention_and_future_are_rejected() {
        let json = [
            with(TOUCH, r#"{"touch_time":1704067200000}"#).replace(r#""touch_time":"2024-01-01T00:00:00Z","#, ""),
            TOUCH.replace("2024-01-01", "2019-01-01"),
            TOUCH.replace("2024-01-01", "2030-01-01"),
        ];
        let json: Vec<&str> = json.iter().map(String::as_str).collect();
        let out = run(Table::Touchpoints, &json, &ctx()).unwrap();
        let msgs: Vec<&str> = out.rejected.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(msgs.len(), 3);
        assert!(msgs[0].contains("looks like milliseconds"));
        assert!(msgs[1].contains("older than the policy's retention"));
        assert!(msgs[2].contains("in the future"));
    }

    #[test]
    fn identifiers_are_pseudonymized_whatever_their_form() {
        let digest = "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f";
        let json = [
            with(TOUCH, r#"{"em":"John_Smith@Gmail.com"}"#),
            with(TOUCH, &format!(r#"{{"em":"{}"}}"#, digest.to_uppercase())),
            with(TOUCH, r#"{"em":"nope"}"#),
            TOUCH.to_owned(),
        ];
        let json: Vec<&str> = json.iter().map(String::as_str).collect();
        let out = run(Table::Touchpoints, &json, &ctx()).unwrap();
        assert_eq!(out.hashed_on_arrival, 1);
        assert_eq!(out.rejected.len(), 1);
        assert_eq!(out.rejected[0].row, 2);
        assert_eq!(out.kept, [0, 1, 3]);
        let em = out.batch.column_by_name("em").unwrap().as_fixed_size_binary();
        let want = ctx().pseudonymizer.pseudonymize(&tally_core::HashedId::from_hex(digest).unwrap());
        assert_eq!(em.value(0), want.as_bytes());
        assert_eq!(em.value(1), want.as_bytes());
        assert!(em.is_null(2));
        let key_id = out.batch.column_by_name("key_id").unwrap().as_string::<i32>();
        assert_eq!(key_id.value(0), "k1");
    }

    #[test]
    fn runs_of_one_identifier_are_hashed_once_and_counted_per_row() {
        let other = "a5b4ad3b0a1ae4a9b4e8e06a8d0bdb8e9b8ec7b1a1d1e2f3a4b5c6d7e8f9a0b1";
        let json = [
            with(TOUCH, r#"{"em":"John_Smith@Gmail.com"}"#),
            with(TOUCH, r#"{"em":"John_Smith@Gmail.com"}"#),
            with(TOUCH, r#"{"em":"nope"}"#),
            with(TOUCH, r#"{"em":"nope"}"#),
            with(TOUCH, &format!(r#"{{"em":"{other}"}}"#)),
            with(TOUCH, &format!(r#"{{"em":"{other}"}}"#)),
            with(TOUCH, r#"{"em":"John_Smith@Gmail.com"}"#),
        ];
        let json: Vec<&str> = json.iter().map(String::as_str).collect();
        let out = run(Table::Touchpoints, &json, &ctx()).unwrap();
        // Every plaintext row counts, repeated or not; every bad row is reported, repeated or not.
        assert_eq!(out.hashed_on_arrival, 3);
        assert_eq!(out.rejected.iter().map(|r| r.row).collect::<Vec<_>>(), [2, 3]);
        let em = out.batch.column_by_name("em").unwrap().as_fixed_size_binary();
        let john = ctx().pseudonymizer.pseudonymize(&tally_core::HashedId::from_hex("62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f").unwrap());
        let other = ctx().pseudonymizer.pseudonymize(&tally_core::HashedId::from_hex(other).unwrap());
        let kept: Vec<&[u8]> = (0..em.len()).map(|i| em.value(i)).collect();
        assert_eq!(kept, [john.as_bytes(), john.as_bytes(), other.as_bytes(), other.as_bytes(), john.as_bytes()].map(|b| &b[..]));
    }

    #[test]
    fn shape_errors() {
        let e = run(Table::Touchpoints, &[&with(TOUCH, r#"{"emial":"x"}"#)], &ctx()).unwrap_err();
        assert!(matches!(e, ShapeError::UnknownColumn { ref column, .. } if column == "emial"), "{e}");
        let e = run(Table::Touchpoints, &[&with(TOUCH, r#"{"em":"a@b.co","email":"a@b.co"}"#)], &ctx()).unwrap_err();
        assert_eq!(e, ShapeError::Conflict("em".into(), "email".into()));
        let e = run(Table::Touchpoints, &[&TOUCH.replace(r#""campaign_id":"c","#, "")], &ctx()).unwrap_err();
        assert_eq!(e, ShapeError::Missing("campaign_id".into()));
        let e = run(Table::Touchpoints, &[&with(TOUCH, r#"{"received_at":"x"}"#)], &ctx()).unwrap_err();
        assert_eq!(e, ShapeError::Computed("received_at".into()));
    }

    #[test]
    fn conversions_defaults_and_enumerations() {
        let base = r#"{"advertiser_id":"acme","source_id":"px","event_name":"Purchase","event_time":"2024-01-01T00:00:00Z"}"#;
        let json = [
            base.to_owned(),
            with(base, r#"{"origin":"Browser","currency":"eur","is_test":true}"#),
            with(base, r#"{"origin":"app"}"#),
            with(base, r#"{"currency":"XXQ"}"#),
            with(base, r#"{"value":"NaN"}"#),
            with(base, r#"{"contents":[1,2]}"#),
        ];
        let json: Vec<&str> = json.iter().map(String::as_str).collect();
        let (raw, bad) = rows(&json);
        // `contents` (nested) makes the row unreadable — and an unknown column for the batch.
        assert_eq!(bad.len(), 1);
        let out = convert(Table::Conversions, &raw, &bad, &ctx()).unwrap();
        let origin = out.batch.column_by_name("origin").unwrap().as_string::<i32>();
        assert_eq!(origin.value(0), "server");
        assert_eq!(origin.value(1), "browser");
        assert_eq!(out.batch.column_by_name("currency").unwrap().as_string::<i32>().value(1), "EUR");
        assert!(out.batch.column_by_name("is_test").unwrap().as_boolean().value(1));
        let cols: Vec<(usize, &str)> = out.rejected.iter().map(|e| (e.row, e.column.as_str())).collect();
        assert_eq!(cols, [(2, "origin"), (3, "currency"), (4, "value"), (5, "contents")]);
    }

    #[test]
    fn forced_advertiser() {
        let mut c = ctx();
        c.advertiser = Some("acme".parse().unwrap());
        let json = [TOUCH.replace(r#""advertiser_id":"acme","#, ""), TOUCH.replace("acme", "globex")];
        let json: Vec<&str> = json.iter().map(String::as_str).collect();
        let (raw, bad) = rows(&json);
        let out = convert(Table::Touchpoints, &raw, &bad, &c).unwrap();
        assert_eq!(out.kept, [0]);
        assert_eq!(out.rejected[0].message, "row belongs to advertiser `globex`, not `acme`");
    }
}
