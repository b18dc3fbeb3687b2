//! The crate's one error type. Variants are the categories a caller can act on: a
//! configuration to fix, a file system problem at a named path, or a failure inside the
//! Arrow/Parquet/JSON encoders (which points at a bug or at a full disk).

use std::path::PathBuf;

/// Everything that can go wrong while generating a world.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The [`WorldConfig`](crate::WorldConfig) is inconsistent; the message names the field.
    #[error("invalid world config: {0}")]
    InvalidConfig(String),

    /// Creating, writing, syncing or renaming an output file failed.
    #[error("i/o error on `{path}`: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Building or encoding a record batch failed (CSV, JSON lines).
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    /// Encoding a Parquet file failed.
    #[error("parquet error: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),

    /// Writing `truth/world.json` failed.
    #[error("json error: {0}")]
    Json(#[from] serde_json::Error),

    /// A bug: a thread panicked or an internal limit was exceeded.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
