//! The analyst surface: one catalog, the SQL guard, saved reports and the Postgres endpoint.
//!
//! - [`catalog`]: the one function that builds a DataFusion session for a [`Reader`] (one
//!   advertiser, or the operator), with the tenant boundary enforced by the table providers.
//! - [`guard`]: only read-only queries run.
//! - [`reports`]: the saved reports (`queries/reports/*.sql`) and their named parameters.
//! - [`pg`]: the Postgres wire endpoint (`tally pg`, `tally serve --pg`): user = advertiser id,
//!   password = API key, the same catalog and guard.
//!
//! Every query and export is recorded in the audit log ([`tally_core::AuditLog`]) by the caller
//! before it runs.

pub mod catalog;
pub mod guard;
pub mod inline_fs;
mod path_agg;
pub mod pg;
pub mod reports;
mod udf;

pub use catalog::{Reader, SessionOptions, session, session_for, table_names};
pub use reports::Report;

/// Failures of the analyst surface, by what the user can do about them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The statement is not a read-only query.
    #[error("{0}")]
    Refused(String),
    /// The SQL does not parse or plan (DataFusion's message, with the table list on unknown tables).
    #[error("{0}")]
    Sql(String),
    /// Unknown report or bad parameter.
    #[error("{0}")]
    Report(String),
    /// Running the query failed.
    #[error("{0}")]
    Execution(#[from] datafusion::error::DataFusionError),
}

/// The audit actor naming `reader` (with `operator` for an advertiser-bound session opened on
/// the host without a key).
pub fn audit_actor(reader: &Reader, with_key: bool) -> String {
    match (reader, with_key) {
        (Reader::Advertiser(a), true) => format!("advertiser:{a}"),
        (Reader::Advertiser(a), false) => format!("operator:{a}"),
        (Reader::Admin, _) => "admin".to_owned(),
    }
}
