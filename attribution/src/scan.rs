//! Reading the base tables: a DataFusion session over the store, and the two scans a run
//! needs, as DataFrames (logical plans) so the same plans can later run on Ballista.
//!
//! Filters on the hive `date` partition prune whole directories; filters on the time column
//! prune row groups by their statistics. Touch text comes back as `Utf8View`, conversion
//! text as `Utf8`; the consumers accept either.

use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::execution::memory_pool::{FairSpillPool, MemoryPool, UnboundedMemoryPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{DataFrame, Expr, SessionConfig, SessionContext, col, lit};
use datafusion::scalar::ScalarValue;
use tally_core::Store;
use tally_core::schema::Table;

use crate::error::Result;
use crate::options::Options;

/// Share of `--memory-limit` given to the tracked pool (DataFusion's operators and the
/// journey buffers); the rest is headroom for what no pool tracks (decoding, output encoding).
const POOL_SHARE: f64 = 0.6;

/// A session with `conversions` and `touchpoints` registered, and the memory pool it uses.
pub(crate) fn session(store: &Store, options: &Options) -> Result<(SessionContext, Arc<dyn MemoryPool>)> {
    let pool: Arc<dyn MemoryPool> = match options.memory_limit {
        Some(limit) => Arc::new(FairSpillPool::new((limit as f64 * POOL_SHARE) as usize)),
        None => Arc::new(UnboundedMemoryPool::default()),
    };
    let runtime = RuntimeEnvBuilder::new().with_memory_pool(pool.clone()).build_arc()?;
    let config = SessionConfig::new().with_target_partitions(options.target_partitions.max(1)).with_batch_size(32 * 1024);
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    for table in [Table::Conversions, Table::Touchpoints] {
        let url = ListingTableUrl::parse(store.table_url(table.name()))?;
        let partition_cols = table.partition_columns().iter().map(|(n, t)| ((*n).to_owned(), t.clone())).collect();
        let listing = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(partition_cols);
        // Touch text is read as views of the Parquet dictionaries (no copy of each value);
        // the conversions are few and their consumers want `Utf8`.
        let schema = match table {
            Table::Touchpoints => tally_core::schema::with_string_views(&table.file_schema()),
            _ => table.file_schema(),
        };
        let config = ListingTableConfig::new(url).with_listing_options(listing).with_schema(schema);
        ctx.register_table(table.name(), Arc::new(ListingTable::try_new(config)?))?;
    }
    Ok((ctx, pool))
}

fn date(d: NaiveDate) -> Expr {
    lit(ScalarValue::Date32(Some(tally_core::store::date_to_day(d))))
}

fn timestamp(micros: i64) -> Expr {
    lit(ScalarValue::TimestampMicrosecond(Some(micros), Some("UTC".into())))
}

/// Non-test conversions whose `event_time` date lies in `from..=to`, every column.
pub(crate) async fn conversions(ctx: &SessionContext, from: NaiveDate, to: NaiveDate) -> Result<DataFrame> {
    let columns: Vec<Expr> = Table::Conversions.schema().fields().iter().map(|f| col(format!("\"{}\"", f.name()))).collect();
    Ok(ctx
        .table(Table::Conversions.name())
        .await?
        .filter(col("date").gt_eq(date(from)).and(col("date").lt_eq(date(to))).and(col("is_test").eq(lit(false))))?
        .select(columns)?)
}

/// The touch columns the sweep needs, for touches with `touch_time` in `[start, end)`.
pub(crate) async fn touchpoints(ctx: &SessionContext, start: i64, end: i64) -> Result<DataFrame> {
    let day = |micros: i64| {
        let d = micros.div_euclid(crate::options::DAY) as i32;
        lit(ScalarValue::Date32(Some(d)))
    };
    let columns = ["advertiser_id", "touch_id", "channel", "campaign_id", "touch_type", "touch_time", "em", "ph", "external_id", "click_id"];
    Ok(ctx
        .table(Table::Touchpoints.name())
        .await?
        .filter(
            col("date")
                .gt_eq(day(start))
                .and(col("date").lt_eq(day(end - 1)))
                .and(col("touch_time").gt_eq(timestamp(start)))
                .and(col("touch_time").lt(timestamp(end))),
        )?
        .select(columns.iter().map(|c| col(*c)).collect::<Vec<_>>())?)
}
