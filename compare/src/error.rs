//! The crate's one error type.

/// A failed comparison.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request does not fit the data (a cutover outside the data, an unknown channel…).
    #[error("{0}")]
    Input(String),
    /// The tables the comparison reads are missing: run `tally attribute` first.
    #[error("{0}")]
    Missing(String),
    /// Reading or writing the store failed.
    #[error(transparent)]
    Storage(#[from] tally_core::StoreError),
    /// The query engine failed.
    #[error("query: {0}")]
    Query(#[from] datafusion::error::DataFusionError),
    /// An Arrow kernel failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

/// This crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
