//! The crate's one error type: what went wrong, by category a user can act on.

use tally_core::StoreError;

/// A failed attribution run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The options are inconsistent (a window that ends before it starts, an unknown model…).
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// Reading or writing the store failed.
    #[error(transparent)]
    Storage(#[from] StoreError),
    /// The query engine failed while reading the input tables.
    #[error("query: {0}")]
    Query(#[from] datafusion::error::DataFusionError),
    /// An Arrow kernel failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// The run needs more memory than `--memory-limit` allows.
    #[error("memory limit: {0}")]
    MemoryLimit(String),
    /// The input does not have the shape the stored tables must have.
    #[error("unexpected input: {0}")]
    Input(String),
}

/// This crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
