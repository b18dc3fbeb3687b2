//! The analyst catalog: one function builds the DataFusion session every reader uses.
//!
//! Each stored table is a hive-partitioned [`ListingTable`] over the store (partition columns
//! `advertiser_id` and `date` come from the path), exposed under its SQL name as a view with
//! the SPEC's column order; filters on `advertiser_id` and `date` prune whole directories.
//! The derived tables `tally attribute` writes (`conversions_dedup`, `attributed_conversions`)
//! are registered the same way once they exist.

use std::sync::Arc;

use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::error::Result;
use datafusion::prelude::{SessionConfig, SessionContext, col};
use tally_core::Store;
use tally_core::schema::{DerivedTable, Table};

/// A session with every base table of `store` registered.
pub async fn session(store: &Store) -> Result<SessionContext> {
    let config = SessionConfig::new().with_information_schema(true);
    let ctx = SessionContext::new_with_config(config);
    for table in Table::BASE {
        register(&ctx, store, table.name(), table.schema(), table.file_schema(), table.partition_columns())?;
    }
    for table in DerivedTable::ALL {
        let exists = store.list_files(table.name()).await.map(|f| !f.is_empty()).unwrap_or(false);
        if exists {
            register(&ctx, store, table.name(), table.schema(), table.file_schema(), table.partition_columns())?;
        }
    }
    Ok(ctx)
}

fn register(
    ctx: &SessionContext,
    store: &Store,
    name: &str,
    schema: SchemaRef,
    file_schema: SchemaRef,
    partitions: [(&'static str, DataType); 2],
) -> Result<()> {
    let url = ListingTableUrl::parse(store.table_url(name))?;
    let partition_cols = partitions.iter().map(|(n, t)| ((*n).to_owned(), t.clone())).collect();
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(partition_cols);
    let config = ListingTableConfig::new(url).with_listing_options(options).with_schema(file_schema);
    let listing = Arc::new(ListingTable::try_new(config)?);
    // The view puts the columns in SPEC order (a listing table puts partition columns last).
    let mut columns: Vec<_> = schema.fields().iter().map(|f| col(format!("\"{}\"", f.name()))).collect();
    if schema.field_with_name("date").is_err() {
        columns.push(col("date"));
    }
    let view = ctx.read_table(listing)?.select(columns)?.into_view();
    ctx.register_table(name, view)?;
    Ok(())
}
