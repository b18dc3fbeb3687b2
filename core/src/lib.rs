//! What every Tally stage agrees on: the table schemas, identifier normalization and
//! pseudonymization, the residency policy, storage paths, the key store and the Parquet store.
//!
//! Stages (ingest, attribution, queries) talk to each other only through what this crate
//! defines: a stage reads what the previous one wrote, through these schemas and paths.

pub mod audit;
pub mod ident;
pub mod keystore;
pub mod paths;
pub mod policy;
pub mod schema;
pub mod store;

pub use audit::{Action, AuditError, AuditLog};
pub use ident::{HashedId, IdField, PlaintextMode, PseudoId, Pseudonymizer};
pub use keystore::{KeyStore, KeyStoreError, Principal};
pub use paths::{AdvertiserId, DataRoot};
pub use policy::{Policy, PolicyError};
pub use schema::{DerivedTable, Table};
pub use store::{FileStamp, Part, PartitionKey, PartitionedWriter, Splitter, Store, StoreError, WrittenFile};

/// Any failure of this crate, by category.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The policy is invalid or refuses the operation.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The key store cannot be used.
    #[error(transparent)]
    KeyStore(#[from] KeyStoreError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
