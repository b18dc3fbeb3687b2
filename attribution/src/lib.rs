//! `tally-attribution`: the batch attribution of SPEC section 6 on Apache DataFusion.
//!
//! [`run`] reads `conversions` and `touchpoints` from the store, deduplicates conversion
//! copies, matches touches to conversions deterministically (shared `click_id`, `em`, `ph`,
//! `external_id`, within the click and view windows), credits each conversion's path under
//! the six models and writes `conversions_dedup` and `attributed_conversions`, replacing the
//! window's previous output. The match is a sort-once sweep, not a range join: see
//! [`sweep`](crate::sweep) and `docs/attribution.md`.
//!
//! ```no_run
//! # async fn f(store: tally_core::Store) -> Result<(), tally_attribution::Error> {
//! use std::sync::Arc;
//! use tally_attribution::{Options, run};
//! let summary = run(&store, "k1", &Options::default(), Arc::new(|_| {})).await?;
//! println!("{} conversions", summary.conversions);
//! # Ok(()) }
//! ```

mod dedup;
mod error;
mod job;
mod journeys;
mod keys;
pub mod markov;
pub mod models;
mod options;
mod probabilistic;
mod scan;
mod sweep;

pub use dedup::DEDUP_WINDOW;
pub use error::{Error, Result};
pub use job::{Progress, Summary, run};
pub use keys::MatchKey;
pub use options::{Model, Options, parse_bytes, parse_cohort, parse_duration};
pub use probabilistic::{CampaignCheck, CampaignTotal, ProbabilisticSummary};
