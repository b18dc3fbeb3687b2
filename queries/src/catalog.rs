//! The catalog: one function builds the DataFusion session every reader uses.
//!
//! [`session_for`] registers each stored table (base and derived) under its SQL name as a view
//! with the SPEC's column order, over a hive-partitioned [`ListingTable`]. A session is bound
//! to a [`Reader`] *below* SQL: for an advertiser, each listing table is rooted at
//! `<table>/advertiser_id=<id>/`, so its scans list and open that advertiser's files only and
//! `advertiser_id` is a constant of the view — no query text can name another advertiser's
//! files (the column's value is `current_advertiser()`, a function rather than a literal, see
//! [`crate::udf`]). [`Reader::Admin`] (the operator on the host) roots the tables at `<table>/` with
//! `advertiser_id` read from the path. Either way `date` is a partition column: filters on it
//! prune whole directories before any file is opened (visible in `EXPLAIN` as fewer files).
//!
//! The session has no URL tables, no file-reading table functions, `information_schema` shows
//! exactly what is registered here, and SQL runs through [`crate::guard`], which refuses
//! anything but queries.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::Result;
use datafusion::execution::FunctionRegistry;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::Expr;
use datafusion::prelude::{SessionConfig, SessionContext, cast, col};
use tally_core::schema::{ADVERTISER_ID, DATE, DerivedTable, Table};
use tally_core::{AdvertiserId, DataRoot, Store};

/// Whose rows a session shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reader {
    /// One advertiser's rows, and nothing else.
    Advertiser(AdvertiserId),
    /// Every advertiser's rows: the operator on the host (audited).
    Admin,
}

impl Reader {
    /// The advertiser the session is bound to, if any.
    pub fn advertiser(&self) -> Option<&AdvertiserId> {
        match self {
            Reader::Advertiser(a) => Some(a),
            Reader::Admin => None,
        }
    }
}

/// How a session is set up, beyond whose rows it shows.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// Fixed parallelism (tests pin it so plans are stable); default: the machine's cores.
    pub target_partitions: Option<usize>,
    /// Expose identifiers (`em`, `ph`, `external_id`) as `Binary` rather than
    /// `FixedSizeBinary(32)`: the Postgres wire protocol cannot carry the latter.
    pub binary_identifiers: bool,
    /// Read a local store's files on the querying thread instead of tokio's blocking pool
    /// ([`crate::inline_fs`]): for one-shot command-line queries, not for a server's runtime.
    pub inline_reads: bool,
}

/// The operator's session over every advertiser's rows ([`Reader::Admin`]), for internal
/// summaries and tests; analysts get [`session_for`] with their [`Reader`].
pub async fn session(store: &Store) -> Result<SessionContext> {
    session_for(store, &Reader::Admin, &SessionOptions::default()).await
}

/// A session over every table of `store` that `reader` may see, with Tally's UDFs.
pub async fn session_for(store: &Store, reader: &Reader, options: &SessionOptions) -> Result<SessionContext> {
    let mut config = SessionConfig::new().with_information_schema(true).with_default_catalog_and_schema("datafusion", "public");
    if let Some(n) = options.target_partitions {
        config = config.with_target_partitions(n);
    }
    // Evaluate filters while decoding Parquet (late materialization): reports filter
    // `attributed_conversions` on `model`/`method` and then read wide string keys of the few
    // rows left; without it every key of every model is decoded first.
    config.options_mut().execution.parquet.pushdown_filters = true;
    config.options_mut().execution.parquet.reorder_filters = true;
    // No hash-join filters pushed into the probe side's scan: the keys reports join on
    // (`touch_id`, `conversion_key`) are random strings, so the filter prunes no row group and
    // only adds a hash lookup per probe row while decoding. Measured on the 50M-touch world:
    // `match_quality` 2.3–2.7 s with it, 1.4–1.6 s without; `top_conversion_paths` 7.4–8.4 s
    // vs 6.5–7.4 s.
    config.options_mut().optimizer.enable_join_dynamic_filter_pushdown = false;
    // Build one hash table for a join side of up to 8M rows / 512 MB instead of hash-partitioning
    // both sides: `top_conversion_paths` then probes the 50M touchpoints as they are read instead
    // of hashing and moving every one of them between threads first (5.4 s instead of 5.8–6.3 s,
    // 8.0 s of CPU instead of 9.6–10.5 s).
    config.options_mut().optimizer.hash_join_single_partition_threshold = 512 << 20;
    config.options_mut().optimizer.hash_join_single_partition_threshold_rows = 8 << 20;
    // Stop pre-aggregating per thread once groups are 40% of rows or more (DataFusion: 80%): a
    // grouping by conversion (2 rows each on average, 1.3M rows into 0.68M groups) then hashes
    // each row once, in the final aggregation. `path_length_distribution` 0.22–0.27 s of CPU
    // instead of 0.35–0.49 s, `match_quality` 1.3–1.6 s instead of 1.5–1.9 s.
    config.options_mut().execution.skip_partial_aggregation_probe_ratio_threshold = 0.4;
    let ctx = SessionContext::new_with_config(config);
    if options.inline_reads && matches!(store.root(), DataRoot::Local(_)) {
        let local = ObjectStoreUrl::local_filesystem();
        ctx.register_object_store(local.as_ref(), Arc::new(crate::inline_fs::InlineLocalFs::new()));
    }
    crate::udf::register(&ctx, reader.advertiser().map(AdvertiserId::as_str));
    for table in Table::BASE {
        let spec = Spec { name: table.name(), schema: table.schema(), file_schema: table.file_schema() };
        register(&ctx, store, reader, options, spec)?;
    }
    for table in DerivedTable::ALL {
        let exists = store.has_files(table.name()).await.unwrap_or(false);
        if exists {
            let spec = Spec { name: table.name(), schema: table.schema(), file_schema: table.file_schema() };
            register(&ctx, store, reader, options, spec)?;
        }
    }
    Ok(ctx)
}

/// The tables a session shows, sorted (for error messages and listings).
pub fn table_names(ctx: &SessionContext) -> Vec<String> {
    let mut names: Vec<String> = ctx.catalog("datafusion").and_then(|c| c.schema("public")).map(|s| s.table_names()).unwrap_or_default();
    names.sort();
    names
}

struct Spec {
    name: &'static str,
    schema: SchemaRef,
    file_schema: SchemaRef,
}

/// The stored identifier columns.
const IDENTIFIERS: [&str; 3] = ["em", "ph", "external_id"];

fn register(ctx: &SessionContext, store: &Store, reader: &Reader, options: &SessionOptions, spec: Spec) -> Result<()> {
    let table_url = store.table_url(spec.name);
    // The listing root decides which files a scan can ever open.
    let (url, partition_cols) = match reader {
        Reader::Advertiser(a) => (format!("{table_url}{ADVERTISER_ID}={a}/"), vec![(DATE.to_owned(), DataType::Date32)]),
        Reader::Admin => (table_url, vec![(ADVERTISER_ID.to_owned(), DataType::Utf8), (DATE.to_owned(), DataType::Date32)]),
    };
    let options_ = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet").with_table_partition_cols(partition_cols);
    // The file schema never holds `advertiser_id`; for the daily tables it holds no `date` either.
    let file_schema = tally_core::schema::with_string_views(&spec.file_schema);
    let config = ListingTableConfig::new(ListingTableUrl::parse(url)?).with_listing_options(options_).with_schema(file_schema);
    let listing = Arc::new(ListingTable::try_new(config)?);
    // The session's own `current_advertiser()` (registered with the advertiser it is bound to).
    let tenant = ctx.udf(crate::udf::CURRENT_ADVERTISER)?;
    // The view puts the columns in SPEC order (a listing table puts partition columns last).
    let mut columns: Vec<Expr> = spec
        .schema
        .fields()
        .iter()
        .map(|f| {
            let name = f.name().as_str();
            match (name, reader) {
                // Not `lit(a)`: see `crate::udf::current_advertiser` (a literal column makes
                // DataFusion treat groupings on it as pre-sorted, and slow).
                (ADVERTISER_ID, Reader::Advertiser(_)) => tenant.call(vec![]).alias(ADVERTISER_ID),
                _ if options.binary_identifiers && IDENTIFIERS.contains(&name) => cast(col(format!("\"{name}\"")), DataType::Binary).alias(name),
                _ => col(format!("\"{name}\"")),
            }
        })
        .collect();
    if spec.schema.field_with_name(DATE).is_err() {
        columns.push(col(DATE));
    }
    let view = ctx.read_table(listing)?.select(columns)?.into_view();
    ctx.register_table(spec.name, view)?;
    Ok(())
}
