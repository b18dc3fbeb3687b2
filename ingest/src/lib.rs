//! Ingestion: everything between a sender (HTTP client or input file) and the Parquet store.
//!
//! Rows enter as *raw batches* ([`raw`]), are validated, normalized, hashed and pseudonymized
//! once at the edge ([`convert`]), and are written through the store's partitioned writer.
//! `tally import` ([`import`]) and the HTTP API share that path, so a row is treated the same
//! whichever way it arrives.

pub mod convert;
pub mod dialect;
pub mod flush;
pub mod histogram;
pub mod import;
pub mod raw;
pub mod openapi;
pub mod server;
pub mod wal;

pub use convert::{Context, Converted, RowError, ShapeError, convert};
pub use import::{ImportError, ImportReport, ImportRequest, Rejection, import};
pub use raw::Format;

use tally_core::schema::Table;
use tally_core::{AdvertiserId, Pseudonymizer, Store};

/// How far in the future an event or touch may be stamped (clock skew between servers).
pub const FUTURE_TOLERANCE_MICROS: i64 = 10 * 60 * 1_000_000;

impl Context {
    /// The context for rows of `table` arriving now at `store`: the policy's plaintext rule,
    /// jurisdiction and retention window for the table.
    pub fn for_table(store: &Store, table: Table, pseudonymizer: Pseudonymizer, advertiser: Option<AdvertiserId>) -> Context {
        let policy = store.policy();
        let now = chrono::Utc::now().timestamp_micros();
        let oldest = policy.retention_days(table.name()).map(|days| now - i64::from(days) * 86_400_000_000);
        Context {
            advertiser,
            pseudonymizer,
            plaintext: policy.plaintext_identifiers,
            jurisdiction: policy.jurisdiction.clone(),
            received_at: now,
            oldest,
            newest: Some(now + FUTURE_TOLERANCE_MICROS),
        }
    }
}
