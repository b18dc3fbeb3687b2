//! The Arrow schemas of Tally's tables (SPEC section 5), defined once.
//!
//! Each [`Table`] has a *table schema* — the columns SQL sees, in the SPEC's order — and a
//! *file schema*: the same columns less the hive partition columns (`advertiser_id`, and
//! `date` for the daily tables), which live only in the path
//! `<table>/advertiser_id=<id>/date=<YYYY-MM-DD>/…`. Readers (DataFusion, DuckDB) add the
//! partition columns back from the path.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Version of the on-disk layout, written to every file as `tally.schema_version`.
pub const SCHEMA_VERSION: &str = "1";

/// Width of a stored identifier (a keyed BLAKE3 digest).
pub const ID_WIDTH: i32 = 32;

/// The partition column every table has.
pub const ADVERTISER_ID: &str = "advertiser_id";
/// The daily partition column.
pub const DATE: &str = "date";

/// A stored table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// One row per received conversion event (server or browser copy).
    Conversions,
    /// Ad exposures: impressions and clicks.
    Touchpoints,
    /// Daily spend per campaign.
    Spend,
    /// Client-side numbers as the ad platforms reported them.
    Baseline,
}

impl Table {
    /// The base tables, in SPEC order.
    pub const BASE: [Table; 4] = [Table::Conversions, Table::Touchpoints, Table::Spend, Table::Baseline];

    /// The SQL name, which is also the directory name under the data root.
    pub fn name(self) -> &'static str {
        match self {
            Table::Conversions => "conversions",
            Table::Touchpoints => "touchpoints",
            Table::Spend => "spend",
            Table::Baseline => "baseline",
        }
    }

    /// The columns SQL sees, in SPEC order.
    pub fn schema(self) -> SchemaRef {
        static SCHEMAS: LazyLock<[SchemaRef; 4]> = LazyLock::new(|| Table::BASE.map(build_schema));
        SCHEMAS[self as usize].clone()
    }

    /// The columns stored inside each Parquet file: the table schema less the partition columns.
    pub fn file_schema(self) -> SchemaRef {
        static SCHEMAS: LazyLock<[SchemaRef; 4]> = LazyLock::new(|| {
            Table::BASE.map(|t| {
                let parts = t.partition_columns();
                let fields: Vec<_> = t
                    .schema()
                    .fields()
                    .iter()
                    .filter(|f| !parts.iter().any(|(name, _)| name == f.name()))
                    .cloned()
                    .collect();
                Arc::new(Schema::new(fields))
            })
        });
        SCHEMAS[self as usize].clone()
    }

    /// The hive partition columns, outermost first, with the type readers should give them.
    pub fn partition_columns(self) -> [(&'static str, DataType); 2] {
        [(ADVERTISER_ID, DataType::Utf8), (DATE, DataType::Date32)]
    }

    /// The column whose UTC date is the row's `date` partition.
    pub fn partition_time_column(self) -> &'static str {
        match self {
            Table::Conversions => "event_time",
            Table::Touchpoints => "touch_time",
            Table::Spend | Table::Baseline => DATE,
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Table {
    type Err = String;
    fn from_str(s: &str) -> Result<Table, String> {
        Table::BASE
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| format!("unknown table `{s}` (expected one of conversions, touchpoints, spend, baseline)"))
    }
}

/// A table `tally attribute` derives from the base tables (SPEC section 5).
///
/// Derived tables are hive-partitioned like the base ones (`advertiser_id`, and `date` = the
/// UTC date of `event_time`), and written by [`crate::Store::derived_writer`]. A run replaces
/// the partitions of its window (see [`crate::Store::replace_files`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DerivedTable {
    /// One row per distinct conversion: the winning copy's columns plus `conversion_key`, `sources`.
    ConversionsDedup,
    /// One row per credited touch (deterministic) or campaign (probabilistic), per model.
    AttributedConversions,
    /// Per campaign: the run's probabilistic total with its 90% interval (partition: the window's last day).
    ProbabilisticTotals,
    /// Per campaign: the run's holdout self-validation (partition: the window's last day).
    ProbabilisticValidation,
    /// Per day × channel × campaign: client vs server reconciliation (SPEC section 7).
    ClientServer,
    /// Per channel × metric: pre vs post a cutover (SPEC section 8; partition: the cutover day).
    Prepost,
}

impl DerivedTable {
    /// Every derived table.
    pub const ALL: [DerivedTable; 6] = [
        DerivedTable::ConversionsDedup,
        DerivedTable::AttributedConversions,
        DerivedTable::ProbabilisticTotals,
        DerivedTable::ProbabilisticValidation,
        DerivedTable::ClientServer,
        DerivedTable::Prepost,
    ];

    /// The SQL name, which is also the directory name under the data root.
    pub fn name(self) -> &'static str {
        match self {
            DerivedTable::ConversionsDedup => "conversions_dedup",
            DerivedTable::AttributedConversions => "attributed_conversions",
            DerivedTable::ProbabilisticTotals => "probabilistic_totals",
            DerivedTable::ProbabilisticValidation => "probabilistic_validation",
            DerivedTable::ClientServer => "client_server",
            DerivedTable::Prepost => "prepost",
        }
    }

    /// The columns SQL sees, in SPEC order.
    pub fn schema(self) -> SchemaRef {
        static SCHEMAS: LazyLock<[SchemaRef; 6]> = LazyLock::new(|| DerivedTable::ALL.map(build_derived_schema));
        SCHEMAS[self as usize].clone()
    }

    /// The columns stored inside each Parquet file: the table schema less the partition
    /// columns (`advertiser_id`, and `date` where the table has one).
    pub fn file_schema(self) -> SchemaRef {
        static SCHEMAS: LazyLock<[SchemaRef; 6]> = LazyLock::new(|| {
            DerivedTable::ALL.map(|t| {
                let fields: Vec<_> = t.schema().fields().iter().filter(|f| f.name() != ADVERTISER_ID && f.name() != DATE).cloned().collect();
                Arc::new(Schema::new(fields))
            })
        });
        SCHEMAS[self as usize].clone()
    }

    /// The hive partition columns, outermost first, with the type readers should give them.
    pub fn partition_columns(self) -> [(&'static str, DataType); 2] {
        [(ADVERTISER_ID, DataType::Utf8), (DATE, DataType::Date32)]
    }

    /// The column whose UTC date is the row's `date` partition.
    pub fn partition_time_column(self) -> &'static str {
        match self {
            DerivedTable::ConversionsDedup | DerivedTable::AttributedConversions => "event_time",
            DerivedTable::ProbabilisticTotals | DerivedTable::ProbabilisticValidation => "window_to",
            DerivedTable::ClientServer => DATE,
            DerivedTable::Prepost => "cutover",
        }
    }
}

impl fmt::Display for DerivedTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn build_derived_schema(table: DerivedTable) -> SchemaRef {
    use DataType::{Boolean, Date32, Float64, Int64, Utf8};
    let s = |name: &str, nullable| Field::new(name, Utf8, nullable);
    let f = |name: &str, nullable| Field::new(name, Float64, nullable);
    let i = |name: &str| Field::new(name, Int64, false);
    let d = |name: &str| Field::new(name, Date32, false);
    let fields = match table {
        DerivedTable::ConversionsDedup => {
            let mut fields: Vec<Field> = Table::Conversions.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
            fields.push(s("conversion_key", false));
            fields.push(s("sources", false));
            fields
        }
        DerivedTable::AttributedConversions => vec![
            s("advertiser_id", false),
            s("conversion_key", false),
            s("event_name", false),
            Field::new("event_time", timestamp_type(), false),
            s("model", false),
            s("method", false),
            s("match_key", false),
            s("touch_id", true),
            s("channel", true),
            s("campaign_id", true),
            Field::new("credit", Float64, false),
            Field::new("value_credit", Float64, true),
            Field::new("credit_low", Float64, true),
            Field::new("credit_high", Float64, true),
        ],
        DerivedTable::ProbabilisticTotals => vec![
            s("advertiser_id", false),
            d("window_from"),
            d("window_to"),
            s("channel", false),
            s("campaign_id", false),
            f("credit", false),
            f("credit_low", false),
            f("credit_high", false),
            f("value_credit", true),
        ],
        DerivedTable::ProbabilisticValidation => vec![
            s("advertiser_id", false),
            d("window_from"),
            d("window_to"),
            s("channel", false),
            s("campaign_id", false),
            f("predicted", false),
            i("actual"),
            f("low", false),
            f("high", false),
            Field::new("covered", Boolean, false),
            i("holdout"),
            f("wape", true),
            f("coverage", true),
        ],
        DerivedTable::ClientServer => vec![
            s("advertiser_id", false),
            d(DATE),
            s("channel", true),
            s("campaign_id", true),
            i("server_only"),
            i("browser_only"),
            i("both"),
            f("dedup_key_coverage", false),
            f("match_rate", false),
            f("attributed_server", false),
            f("baseline_conversions", true),
            f("discrepancy", true),
            f("p_value", true),
            Field::new("flagged", Boolean, false),
        ],
        DerivedTable::Prepost => vec![
            s("advertiser_id", false),
            d("cutover"),
            s("control", false),
            s("channel", false),
            s("metric", false),
            f("pre_mean", true),
            f("post_mean", true),
            f("diff", true),
            f("diff_low", true),
            f("diff_high", true),
            f("boot_low", true),
            f("boot_high", true),
            f("p_value", true),
            f("did_vs_control", true),
            f("did_low", true),
            f("did_high", true),
            f("share_lost_identifiers", true),
            f("share_fewer_conversions", true),
            i("pre_days"),
            i("post_days"),
        ],
    };
    Arc::new(Schema::new(fields))
}

/// `Timestamp(Microsecond, "UTC")`: every Tally timestamp.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// `FixedSizeBinary(32)`: every stored identifier.
pub fn id_type() -> DataType {
    DataType::FixedSizeBinary(ID_WIDTH)
}

fn build_schema(table: Table) -> SchemaRef {
    use DataType::{Boolean, Date32, Float64, Int64, Utf8};
    let s = |name: &str, nullable| Field::new(name, Utf8, nullable);
    let ts = |name: &str, nullable| Field::new(name, timestamp_type(), nullable);
    let id = |name: &str| Field::new(name, id_type(), true);
    let fields = match table {
        Table::Conversions => vec![
            s("advertiser_id", false),
            s("source_id", false),
            s("event_id", true),
            s("event_name", false),
            ts("event_time", false),
            ts("received_at", false),
            s("origin", false),
            s("action_source", true),
            id("em"),
            id("ph"),
            id("external_id"),
            s("click_id", true),
            s("device_os", true),
            s("geo_state", true),
            Field::new("value", Float64, true),
            s("currency", true),
            s("order_id", true),
            Field::new("is_test", Boolean, false),
            Field::new("opt_out", Boolean, false),
            s("jurisdiction", false),
            s("key_id", false),
        ],
        Table::Touchpoints => vec![
            s("advertiser_id", false),
            s("touch_id", false),
            s("channel", false),
            s("campaign_id", false),
            s("adgroup_id", true),
            s("ad_id", true),
            s("touch_type", false),
            ts("touch_time", false),
            id("em"),
            id("ph"),
            id("external_id"),
            s("click_id", true),
            s("device_os", true),
            s("geo_state", true),
            Field::new("cost", Float64, true),
            s("jurisdiction", false),
            s("key_id", false),
        ],
        Table::Spend => vec![
            s("advertiser_id", false),
            s("channel", false),
            s("campaign_id", false),
            Field::new("date", Date32, false),
            Field::new("spend", Float64, false),
            Field::new("impressions", Int64, true),
            Field::new("clicks", Int64, true),
            s("currency", false),
        ],
        Table::Baseline => vec![
            s("advertiser_id", false),
            s("channel", false),
            s("campaign_id", false),
            Field::new("date", Date32, false),
            Field::new("conversions", Float64, false),
            Field::new("value", Float64, true),
        ],
    };
    Arc::new(Schema::new(fields))
}

/// `schema` with its `Utf8` columns read as `Utf8View`: the Parquet reader then decodes
/// dictionary-encoded text (channel, model, campaign…) into views of the dictionary instead of
/// copying every value, and groupings and joins compare inline views of up to 12 bytes.
pub fn with_string_views(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| if f.data_type() == &DataType::Utf8 { f.as_ref().clone().with_data_type(DataType::Utf8View) } else { f.as_ref().clone() })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_column_order() {
        let names = |t: Table| t.schema().fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>().join(",");
        assert_eq!(
            names(Table::Conversions),
            "advertiser_id,source_id,event_id,event_name,event_time,received_at,origin,action_source,em,ph,\
             external_id,click_id,device_os,geo_state,value,currency,order_id,is_test,opt_out,jurisdiction,key_id"
        );
        assert_eq!(
            names(Table::Touchpoints),
            "advertiser_id,touch_id,channel,campaign_id,adgroup_id,ad_id,touch_type,touch_time,em,ph,external_id,\
             click_id,device_os,geo_state,cost,jurisdiction,key_id"
        );
        assert_eq!(names(Table::Spend), "advertiser_id,channel,campaign_id,date,spend,impressions,clicks,currency");
        assert_eq!(names(Table::Baseline), "advertiser_id,channel,campaign_id,date,conversions,value");
    }

    #[test]
    fn derived_tables_follow_the_spec() {
        let names = |t: DerivedTable| t.schema().fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>().join(",");
        assert!(names(DerivedTable::ConversionsDedup).ends_with("jurisdiction,key_id,conversion_key,sources"));
        assert_eq!(
            names(DerivedTable::AttributedConversions),
            "advertiser_id,conversion_key,event_name,event_time,model,method,match_key,touch_id,channel,campaign_id,\
             credit,value_credit,credit_low,credit_high"
        );
        for t in DerivedTable::ALL {
            let partitions = if t.schema().field_with_name(DATE).is_ok() { 2 } else { 1 };
            assert_eq!(t.file_schema().fields().len(), t.schema().fields().len() - partitions);
            assert!(t.file_schema().field_with_name(ADVERTISER_ID).is_err());
            assert!(t.schema().field_with_name(t.partition_time_column()).is_ok(), "{t}");
        }
        assert_eq!(
            names(DerivedTable::ClientServer),
            "advertiser_id,date,channel,campaign_id,server_only,browser_only,both,dedup_key_coverage,match_rate,\
             attributed_server,baseline_conversions,discrepancy,p_value,flagged"
        );
    }

    #[test]
    fn file_schema_drops_partition_columns() {
        for t in Table::BASE {
            let file = t.file_schema();
            assert!(file.field_with_name(ADVERTISER_ID).is_err());
            assert!(file.field_with_name(DATE).is_err());
            let expected = t.schema().fields().len() - if t.schema().field_with_name(DATE).is_ok() { 2 } else { 1 };
            assert_eq!(file.fields().len(), expected, "{t}");
        }
        assert_eq!(Table::Conversions.schema().field_with_name("em").unwrap().data_type(), &id_type());
        assert_eq!("spend".parse::<Table>().unwrap(), Table::Spend);
        assert!("nope".parse::<Table>().is_err());
    }
}
