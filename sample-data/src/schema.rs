//! The Arrow schemas of the files the generator writes — Tally's import format
//! (SPEC §5: the tables' columns, identifiers as `*_sha256` hex or plaintext) plus the
//! ground-truth table — and the output [`Format`]s. Column names and order here are the
//! contract; tests and importers read files back with these schemas.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

/// Output file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// CSV with a header; timestamps RFC 3339 (`2026-08-01T13:45:12.123456Z`), dates
    /// `YYYY-MM-DD`, nulls as empty fields.
    Csv,
    /// JSON lines, one object per row with every column (nulls explicit); timestamps as
    /// RFC 3339 strings.
    Jsonl,
    /// Parquet (zstd), Arrow types as in [`table_schema`].
    Parquet,
}

impl Format {
    /// File extension: `csv`, `jsonl`, `parquet`.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
            Format::Parquet => "parquet",
        }
    }
}

/// The tables the generator writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Table {
    /// `conversions.<ext>`: server and browser copies of conversion events.
    Conversions,
    /// `touchpoints.<ext>`: impressions and clicks.
    Touchpoints,
    /// `spend.<ext>`: one row per campaign per day.
    Spend,
    /// `baseline.<ext>`: what the ad platforms report (client-side view).
    Baseline,
    /// `truth/conversions.parquet`: one row per distinct conversion, with its cause.
    Truth,
}

impl Table {
    /// Tables in the order files are listed.
    pub const ALL: [Table; 5] = [
        Table::Conversions,
        Table::Touchpoints,
        Table::Spend,
        Table::Baseline,
        Table::Truth,
    ];

    /// The table's name (`conversions`, …, `truth`).
    pub fn name(self) -> &'static str {
        match self {
            Table::Conversions => "conversions",
            Table::Touchpoints => "touchpoints",
            Table::Spend => "spend",
            Table::Baseline => "baseline",
            Table::Truth => "truth",
        }
    }

    /// Path of the table's file relative to the output directory.
    pub fn file_name(self, format: Format) -> String {
        match self {
            Table::Truth => "truth/conversions.parquet".to_owned(),
            t => format!("{}.{}", t.name(), format.extension()),
        }
    }
}

/// `Timestamp(Microsecond, Some("UTC"))`.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

fn identifier_fields(plaintext: bool) -> [Field; 3] {
    if plaintext {
        [
            utf8("email", true),
            utf8("phone", true),
            utf8("external_id", true),
        ]
    } else {
        [
            utf8("em_sha256", true),
            utf8("ph_sha256", true),
            utf8("external_id_sha256", true),
        ]
    }
}

/// The schema of `table`'s file; `plaintext` selects `email, phone, external_id` over
/// the `*_sha256` columns (conversions and touchpoints only).
pub fn table_schema(table: Table, plaintext: bool) -> SchemaRef {
    let ids = identifier_fields(plaintext);
    let fields: Vec<Field> = match table {
        Table::Conversions => {
            let mut f = vec![
                utf8("advertiser_id", false),
                utf8("source_id", false),
                utf8("event_id", true),
                utf8("event_name", false),
                Field::new("event_time", timestamp_type(), false),
                utf8("origin", false),
                utf8("action_source", false),
            ];
            f.extend(ids);
            f.extend([
                utf8("click_id", true),
                utf8("device_os", true),
                utf8("geo_state", true),
                Field::new("value", DataType::Float64, true),
                utf8("currency", true),
                utf8("order_id", true),
                Field::new("is_test", DataType::Boolean, false),
                Field::new("opt_out", DataType::Boolean, false),
            ]);
            f
        }
        Table::Touchpoints => {
            let mut f = vec![
                utf8("advertiser_id", false),
                utf8("touch_id", false),
                utf8("channel", false),
                utf8("campaign_id", false),
                utf8("adgroup_id", true),
                utf8("ad_id", true),
                utf8("touch_type", false),
                Field::new("touch_time", timestamp_type(), false),
            ];
            f.extend(ids);
            f.extend([
                utf8("click_id", true),
                utf8("device_os", true),
                utf8("geo_state", true),
                Field::new("cost", DataType::Float64, true),
            ]);
            f
        }
        Table::Spend => vec![
            utf8("advertiser_id", false),
            utf8("channel", false),
            utf8("campaign_id", false),
            Field::new("date", DataType::Date32, false),
            Field::new("spend", DataType::Float64, false),
            Field::new("impressions", DataType::Int64, false),
            Field::new("clicks", DataType::Int64, false),
            utf8("currency", false),
        ],
        Table::Baseline => vec![
            utf8("advertiser_id", false),
            utf8("channel", false),
            utf8("campaign_id", false),
            Field::new("date", DataType::Date32, false),
            Field::new("conversions", DataType::Float64, false),
            Field::new("value", DataType::Float64, false),
        ],
        Table::Truth => vec![
            utf8("advertiser_id", false),
            utf8("source_id", false),
            utf8("event_id", true),
            utf8("order_id", false),
            Field::new("event_time", timestamp_type(), false),
            utf8("true_channel", true),
            utf8("true_campaign_id", true),
            utf8("true_touch_id", true),
            Field::new("in_server", DataType::Boolean, false),
            Field::new("in_browser", DataType::Boolean, false),
            Field::new("has_event_id", DataType::Boolean, false),
            Field::new("is_test", DataType::Boolean, false),
            Field::new("ids_lost", DataType::Boolean, false),
            Field::new("value", DataType::Float64, false),
        ],
    };
    Arc::new(Schema::new(fields))
}
