//! What a generation run produced: row counts per file and the ground-truth tallies
//! (copies, dedup-ability, causal conversions per channel before and after the
//! cutover). Returned by [`generate`](crate::generate) and written, with the config, to
//! `truth/world.json`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Format, WorldConfig};

/// Rows written per file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRows {
    /// `conversions.<ext>` (server and browser copies).
    pub conversions: u64,
    /// `touchpoints.<ext>`.
    pub touchpoints: u64,
    /// `spend.<ext>`.
    pub spend: u64,
    /// `baseline.<ext>`.
    pub baseline: u64,
    /// `truth/conversions.parquet` (one per distinct conversion, test events included).
    pub truth: u64,
}

/// A count before and after the cutover (by the conversion's true `event_time`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrePost {
    /// `event_time` before 00:00 UTC of the cutover date.
    pub pre: u64,
    /// `event_time` on or after it.
    pub post: u64,
}

impl PrePost {
    pub(crate) fn add(&mut self, post: bool) {
        if post {
            self.post += 1;
        } else {
            self.pre += 1;
        }
    }
}

/// Counts of a generated world (all advertisers together).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Rows per file.
    pub rows: TableRows,
    /// Users simulated (advertisers × users).
    pub users: u64,
    /// Impression touchpoints.
    pub impressions: u64,
    /// Click touchpoints.
    pub clicks: u64,
    /// Distinct conversions with only a server copy (test events included; every
    /// conversion without `event_id` is server-only).
    pub server_only: u64,
    /// Distinct conversions with only a browser copy.
    pub browser_only: u64,
    /// Distinct conversions with both copies (same `event_id`).
    pub both: u64,
    /// Server copies without `event_id` (cannot be deduplicated).
    pub without_event_id: u64,
    /// `is_test` conversions (excluded from the tallies below).
    pub test_conversions: u64,
    /// Non-test conversions caused by a touch.
    pub causal_conversions: u64,
    /// Non-test conversions with no causal touch.
    pub organic_conversions: u64,
    /// Non-test conversions whose deterministic link the separation removed (`ids_lost`).
    pub ids_lost: u64,
    /// Non-test causal conversions per true channel, pre/post cutover.
    pub conversions_by_channel: BTreeMap<String, PrePost>,
    /// Non-test organic conversions, pre/post cutover.
    pub organic_by_period: PrePost,
}

/// The document written to `truth/world.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorldFile {
    /// Always `tally-sample`.
    pub generator: String,
    /// The format of the table files.
    pub format: Format,
    /// File name per table, relative to the output directory.
    pub files: BTreeMap<String, String>,
    /// The configuration the world was generated from.
    pub config: WorldConfig,
    /// The counts.
    pub summary: Summary,
}
