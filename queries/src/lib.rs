//! The analyst catalog: one function builds the DataFusion session every reader uses.
//!
//! Each stored table is a hive-partitioned [`ListingTable`] over the store (partition columns
//! `advertiser_id` and `date` come from the path), exposed under its SQL name as a view with
//! the SPEC's column order; filters on `advertiser_id` and `date` prune whole directories.

use std::sync::Arc;

use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::Result;
use datafusion::prelude::{SessionConfig, SessionContext, col};
use tally_core::Store;
use tally_core::schema::Table;

/// A session with every base table of `store` registered.
pub async fn session(store: &Store) -> Result<SessionContext> {
    let config = SessionConfig::new().with_information_schema(true);
    let ctx = SessionContext::new_with_config(config);
    for table in Table::BASE {
        register(&ctx, store, table)?;
    }
    Ok(ctx)
}

fn register(ctx: &SessionContext, store: &Store, table: Table) -> Result<()> {
    let url = ListingTableUrl::parse(store.table_url(table.name()))?;
    let partition_cols = table.partition_columns().iter().map(|(n, t)| ((*n).to_owned(), t.clone())).collect();
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(partition_cols);
    let config = ListingTableConfig::new(url).with_listing_options(options).with_schema(table.file_schema());
    let listing = Arc::new(ListingTable::try_new(config)?);
    // The view puts the columns in SPEC order (a listing table puts partition columns last).
    let mut columns: Vec<_> = table.schema().fields().iter().map(|f| col(format!("\"{}\"", f.name()))).collect();
    if table.schema().field_with_name("date").is_err() {
        columns.push(col("date"));
    }
    let view = ctx.read_table(listing)?.select(columns)?.into_view();
    ctx.register_table(table.name(), view)?;
    Ok(())
}
