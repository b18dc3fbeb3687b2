//! `tally-sample`: a seeded generator of a realistic advertiser world — conversions,
//! ad touchpoints, spend and the platforms' own reporting — together with the ground
//! truth that produced it, so that Tally's attribution, reconciliation and pre/post
//! comparison can be checked against the answer.
//!
//! ```no_run
//! use tally_sample::{Format, WorldConfig, generate};
//! let config = WorldConfig::default(); // acme, 2,000 users, 2026-08-01 + 61 days
//! let summary = generate(&config, "sample".as_ref(), Format::Csv)?;
//! # Ok::<(), tally_sample::Error>(())
//! ```
//!
//! # The world model
//!
//! **People.** Each advertiser has `users` people. A person has an email
//! (`user123.x7@example.com`), a phone (`1` + 10 digits) and an external id
//! (`cust-000123`) — already normalized, so their SHA-256 is the normalized hash Meta
//! and Tally compute — a US state (`geo_state`, ten states, skewed) and a `device_os`
//! (`ios`, `android`, `windows`, `macos`, skewed). Every row about the person carries
//! the same state and device. People differ in activity (a Gamma-distributed exposure
//! multiplier), in which channels reach them at all (`reach`, by channel) and in how
//! much each channel shows them ads (`device_affinity`: TikTok and Snap favour phones,
//! Google desktops), and some campaigns target only some states — so `(date, geo_state,
//! device_os)` cohorts carry information about the campaign mix.
//!
//! **Exposure.** Channels (`tiktok`, `meta`, `google`, `snap` by default) run 2–4
//! campaigns each, each with adgroups and ads, a flight (a sub-range of the window,
//! weekend weighting), a delivery rate, a click-through rate and CPM or CPC pricing. A
//! person's impressions per campaign are Poisson over the campaign's active days at
//! US-evening-heavy hours; an impression is followed by a click with probability `ctr`
//! (a second touchpoint seconds later carrying a platform-shaped click id: `ttclid`-,
//! `fbc`- or `gclid`-like). Spend is the sum of the touchpoints' costs.
//!
//! **What is causal (the ground truth).** Walking a person's touches in time order, a
//! click causes a conversion with its campaign's `click_cvr`, an impression that was not
//! clicked with its `view_cvr`. The delay is exponential (mean `click_delay_mean_hours`,
//! 24 h, or `view_delay_mean_hours`, 4 h), truncated so the conversion happens within the
//! click window (7 days) / view window (1 day) **and before the person's next touch** —
//! so the causal touch is always the person's latest touch before the conversion. On
//! top, organic conversions happen at `organic_rate` per person per day with no cause,
//! and a few `is_test` events (no cause). Conversions after the window's end are not
//! observed. All conversions are `Purchase` with a log-normal `value` in USD and a unique
//! `order_id`. Conversion behaviour is identical before and after the cutover.
//!
//! **How conversions are reported.** Each distinct conversion is sent by the
//! advertiser's server, by the browser pixel, or both: both with `browser_copy_rate`
//! (70%), browser-only with `browser_only_rate` (3%), server-only otherwise. Both copies
//! share `event_id`, `source_id` (`px_<advertiser>_web`), `order_id` and `value`; the
//! browser copy fires seconds to minutes after the server's `event_time`. The server copy
//! carries `em`/`ph`/`external_id` with 80/60/50% and, when the cause was a click, that
//! click's id with the channel's `click_id_rate` (60–80%); the browser copy carries `em`
//! 30% of the time and the click id when the server had it (95%). A share of server-only
//! conversions (`missing_event_id_rate`) have no `event_id` at all and cannot be
//! deduplicated. Touchpoints carry the person's identifiers as the platform's identity
//! graph knows them (≈85% each, `touch_id_rates`).
//!
//! **The separation.** From 00:00 UTC on `cutover`, the treated channel (`tiktok`):
//! its touchpoints carry each identifier only `treated_id_rate_after` (10%) of the time;
//! conversions caused by its clicks from then on carry the click id only
//! `treated_click_id_rate_after` (10%) of the time (click-id pass-through broke); and the
//! platform's own reporting recognizes fewer pixel conversions
//! (`treated_platform_match_after`). The media still works: exposure and conversion
//! probabilities do not change. The control channel (`google`) is untouched.
//! Deterministic matching on TikTok therefore drops after the cutover while true TikTok
//! conversions do not. The random draws behind identifier presence are shared between
//! the actual world and the counterfactual one without the separation, so the
//! difference between them is exactly what the separation removed.
//!
//! **Baseline.** What each ad platform reports (client-side view): for every browser
//! copy of a non-test conversion, each platform with a click of the person in the last
//! 7 days, else an impression in the last day, claims it for that touch's campaign (on
//! the browser copy's date) when it recognizes the person (`platform_match_rate`).
//! Several platforms may claim the same conversion (view-through over-claiming). Daily
//! claims × the platform's `modeled_uplift` × log-normal noise, rounded to 2 decimals.
//!
//! # Files
//!
//! In `out_dir`, the import format of SPEC §5 (see [`table_schema`] for exact types):
//! - `conversions.<ext>` — `advertiser_id, source_id, event_id, event_name, event_time,
//!   origin, action_source, em_sha256, ph_sha256, external_id_sha256, click_id, device_os,
//!   geo_state, value, currency, order_id, is_test, opt_out` (with
//!   `plaintext_identifiers` the three hash columns are `email, phone, external_id`).
//! - `touchpoints.<ext>` — `advertiser_id, touch_id, channel, campaign_id, adgroup_id,
//!   ad_id, touch_type, touch_time, em_sha256, ph_sha256, external_id_sha256, click_id,
//!   device_os, geo_state, cost`.
//! - `spend.<ext>` — `advertiser_id, channel, campaign_id, date, spend, impressions,
//!   clicks, currency`: one row per campaign per active day (and any other day with
//!   delivery); counts and spend equal the touchpoints'.
//! - `baseline.<ext>` — `advertiser_id, channel, campaign_id, date, conversions, value`.
//! - `truth/conversions.parquet` — one row per distinct conversion: `advertiser_id,
//!   source_id, event_id, order_id, event_time, true_channel, true_campaign_id,
//!   true_touch_id, in_server, in_browser, has_event_id, is_test, ids_lost, value`.
//!   `true_*` are NULL for organic and test conversions. `event_time` is the true time
//!   (the server copy's, or the browser copy's for browser-only conversions). `ids_lost`
//!   is true when deterministic matching (SPEC §6: a shared click id, em, ph or
//!   external_id with any of the person's touches within 7 days for clicks / 1 day for
//!   impressions, using the deduplicated conversion's identifiers) would find a touch in
//!   the counterfactual world without the separation but finds none in the actual one.
//! - `truth/world.json` — the [`WorldConfig`] and the [`Summary`] counts.
//!
//! Rows are grouped by person (touches and conversion copies each in time order per
//! person), not globally sorted by time.
//!
//! # Determinism and scale
//!
//! Every person has an RNG (`ChaCha8`) derived from `(seed, advertiser, user index)`;
//! no hash-map order or thread timing reaches the output, so the same config gives
//! byte-identical files. Generation streams: batches of `batch_rows` rows go to a writer
//! thread, memory stays bounded (a few hundred MB at most) whatever `users` is. The world
//! has about `users × expected_touchpoints_per_user()` (≈ 23) touchpoints per advertiser;
//! [`WorldConfig::with_target_touchpoints`] picks `users` for a target (≈ 220k users for
//! 5M touchpoints, ≈ 2.2M for 50M).

mod catalog;
mod config;
mod error;
mod generate;
mod ids;
mod ledger;
mod schema;
mod sim;
mod sink;
mod summary;
mod tables;

pub use config::{
    Billing, CampaignConfig, ChannelConfig, ClickIdStyle, IdRates, WorldConfig, default_channels,
};
pub use error::Error;
pub use generate::generate;
pub use schema::{Format, Table, table_schema, timestamp_type};
pub use summary::{PrePost, Summary, TableRows, WorldFile};
