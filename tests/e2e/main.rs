//! End-to-end tests: the real `tally` binary against real files in a temporary data directory.

mod attribution;
mod duckdb;
mod import;
mod keys;
mod measurement;
mod policy;
mod privacy;
mod sample;
mod serve;
mod sql;
mod support;
