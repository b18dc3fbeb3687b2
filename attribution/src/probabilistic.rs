//! Probabilistic cohort attribution for the conversions no touch matched (SPEC section 6.5),
//! and its self-validation on a holdout of matched conversions.
//!
//! **Cohorts and cells.** A cohort is `(geo_state, device_os)` (either can be switched off);
//! a cell is a cohort on one UTC day. A cohort whose population — the distinct people (hashed
//! emails) with a touch in it during the window — is under the policy's k-anonymity threshold
//! is merged: first its device into `*` (with the other small cohorts of its state), then its
//! state; a merged group still under the threshold is suppressed (its conversions get no
//! probabilistic row). Nothing finer than a merged cohort ever shapes an output row.
//!
//! **The model** (learned from the matched conversions, then fitted to the unmatched ones):
//! 1. From each matched conversion's deterministic `last_touch` touch: the lag (in days) from
//!    touch to conversion, separately for clicks and impressions — the kernels that turn a
//!    cohort's daily touches into the conversions they can cause on a later day.
//! 2. Per campaign and touch type, the matched rate ρ: matched conversions per lag-weighted
//!    *identified* touch (a touch carrying a hashed email, phone or customer id — the only
//!    kind a conversion can match by identity).
//! 3. The unmatched conversions that carry identifiers are, per cell, Poisson with mean
//!    `θ₀·population + Σ φ·identified touches + δ·Σ ρ*·(touches − identified touches)`: an
//!    organic rate, the campaigns' conversions that failed to match although their touches
//!    were identified, and those that could not match because the touches had lost their
//!    identifiers (the separation's signature). θ₀, δ ≥ 0 are fitted by maximum likelihood
//!    (EM). The failed-match rate φ is measured, not fitted: on the click-id matches (whose
//!    touch is known), the chance `s` that a touch carrying person identifiers shares one with
//!    the conversion, per identifier pattern of the conversion; a matched conversion without a
//!    click id that shares one with `k` touches of its path stands for `(1 − s)^k / (1 − (1 − s)^k)`
//!    unmatched ones of its campaign (inverse-probability weighting). ρ* is ρ without the
//!    coincidental matches: per touch type, the lags (hours) of matched conversions without a
//!    click id are an exponential (caused) plus uniform (coincidental: the person converted
//!    for another reason while the touch was the latest) mixture, fitted by EM. A coincidental
//!    match was caused by another touch of its path or by what causes unmatched conversions
//!    (organic, touches that lost their identifiers): shared out by their intensities per
//!    person and hour (ρ* × lag density for the path's touches; the cell's fitted organic and
//!    lost-identifier means per person), the path's share added to those campaigns' ρ*.
//!    An unmatched conversion's credit to campaign `c` is `c`'s share of its cell's mean; the
//!    organic share is the rest, so the credits sum to at most 1.
//! 4. Unmatched conversions with no identifier at all could never have matched, whatever
//!    caused them. Person identifiers (em, ph, external_id) are present independently of the
//!    cause, a click id is not (only a click can pass one), so their causes are those of the
//!    cell's conversions that carry person identifiers but no click id: the matched ones by
//!    their causes (the coincidental ones shared out as in step 3), the unmatched ones by step 3.
//!
//! **Intervals.** A bootstrap over days (days resampled with replacement, ρ and θ refitted,
//! B = 200) gives the estimator's spread; on top, each total gets the allocation noise of
//! the conversions themselves (a sum of Bernoulli draws, variance Σ r(1 − r)), so the 90%
//! interval is a predictive interval for the realized count. Why a bootstrap and not an
//! analytic posterior: see `docs/measurement.md`.
//!
//! **Validation.** A random holdout (10% by default, chosen by a hash of `conversion_key`, so
//! re-runs pick the same one) of matched conversions is left out of every fit; each holdout
//! conversion is then predicted from its cell alone — the model's identified-touch component
//! (ρ · identified touches), since these conversions are known to be matchable — and the
//! per-campaign predictions and intervals are compared with their deterministic campaigns.

use std::collections::{BTreeMap, HashMap};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Date32Type, Float64Type, TimestampMicrosecondType};
use chrono::{Duration, NaiveDate};
use datafusion::prelude::{SessionContext, col, lit};
use datafusion::scalar::ScalarValue;
use futures::StreamExt;
use tally_core::schema::Table;

use crate::error::Result;
use crate::options::{DAY, HOUR};

/// Bootstrap replicates behind every interval.
const REPLICATES: usize = 200;
/// EM iterations of the point fit (and of each replicate, warm-started from it).
const EM_ITERATIONS: usize = 400;
const EM_REPLICATE_ITERATIONS: usize = 60;

/// What the probabilistic step needs from the deterministic run, per conversion.
#[derive(Debug, Clone)]
pub(crate) struct MatchedTouchInfo {
    pub(crate) channel: String,
    pub(crate) campaign: String,
    pub(crate) click: bool,
    /// UTC day (days since the epoch) of the `last_touch` touch.
    pub(crate) touch_day: i32,
    /// Time of the `last_touch` touch (µs).
    pub(crate) touch_time: i64,
    /// The conversion's strongest match key is its click id.
    pub(crate) by_click: bool,
    /// Touches of its path that share a person identifier (em, ph, external_id) with it.
    pub(crate) id_touches: u32,
    /// For a click-id match: whether the clicked touch also shares a person identifier.
    pub(crate) click_shares: Option<bool>,
    /// The path's other touches `(campaign, click, time µs)`; empty for click-id matches.
    pub(crate) others: Vec<(String, bool, i64)>,
}

/// The knobs of the step.
#[derive(Debug, Clone)]
pub(crate) struct Params {
    pub(crate) from: NaiveDate,
    pub(crate) to: NaiveDate,
    pub(crate) click_window_days: i32,
    pub(crate) view_window_days: i32,
    pub(crate) holdout: f64,
    pub(crate) by_geo: bool,
    pub(crate) by_os: bool,
    pub(crate) k_anonymity: u64,
    pub(crate) seed: u64,
}

/// One campaign's probabilistic total for the window.
#[derive(Debug, Clone, PartialEq)]
pub struct CampaignTotal {
    /// Advertiser.
    pub advertiser_id: String,
    /// Channel of the campaign.
    pub channel: String,
    /// Campaign.
    pub campaign_id: String,
    /// Expected unmatched conversions caused by the campaign.
    pub credit: f64,
    /// 5th percentile (the 90% interval's low end).
    pub low: f64,
    /// 95th percentile.
    pub high: f64,
    /// Σ credit × value.
    pub value_credit: f64,
}

/// One campaign's holdout validation.
#[derive(Debug, Clone, PartialEq)]
pub struct CampaignCheck {
    /// Advertiser.
    pub advertiser_id: String,
    /// Channel of the campaign.
    pub channel: String,
    /// Campaign.
    pub campaign_id: String,
    /// Holdout conversions the model gives the campaign.
    pub predicted: f64,
    /// Holdout conversions the deterministic `last_touch` gives it.
    pub actual: i64,
    /// The prediction's 90% interval.
    pub low: f64,
    /// The prediction's 90% interval.
    pub high: f64,
}

impl CampaignCheck {
    /// Whether the interval covers the actual count.
    pub fn covered(&self) -> bool {
        self.low <= self.actual as f64 && self.actual as f64 <= self.high
    }
}

/// What the probabilistic step did, for the run summary.
#[derive(Debug, Clone, Default)]
pub struct ProbabilisticSummary {
    /// Unmatched conversions (not in the holdout).
    pub unmatched: usize,
    /// Unmatched conversions in suppressed cohorts (no probabilistic rows).
    pub suppressed: usize,
    /// Cohorts (of the cohort dimensions, before merging) merged for k-anonymity.
    pub merged_cohorts: usize,
    /// Σ probabilistic credit (the rest of the unmatched conversions is modeled organic).
    pub credited: f64,
    /// Per-campaign totals.
    pub totals: Vec<CampaignTotal>,
    /// Holdout conversions.
    pub holdout: usize,
    /// Per-campaign holdout checks.
    pub checks: Vec<CampaignCheck>,
    /// Σ|predicted − actual| / Σ actual over the holdout's campaigns.
    pub wape: Option<f64>,
    /// Share of the holdout's campaigns whose 90% interval covers the actual count.
    pub coverage: Option<f64>,
    /// Fitted organic rate, failed-match coefficient (1: measured, not fitted) and lost-identifier rate per advertiser.
    pub fitted: BTreeMap<String, [f64; 3]>,
}

/// A probabilistic row of `attributed_conversions`.
#[derive(Debug, Clone)]
pub(crate) struct ProbRow {
    pub(crate) conv: u32,
    pub(crate) channel: String,
    pub(crate) campaign: String,
    pub(crate) credit: f64,
    pub(crate) low: f64,
    pub(crate) high: f64,
}

/// Touch counts of one (day, cohort, campaign, type) from the store.
struct ActivityRow {
    adv: String,
    day: i32,
    geo: String,
    os: String,
    channel: String,
    campaign: String,
    click: bool,
    identified: bool,
    n: f64,
}

fn date_lit(d: NaiveDate) -> datafusion::prelude::Expr {
    lit(ScalarValue::Date32(Some(tally_core::store::date_to_day(d))))
}

/// A string column as `Utf8`.
fn utf8_column(batch: &RecordBatch, name: &str) -> Result<arrow::array::StringArray> {
    let c = batch.column_by_name(name).ok_or_else(|| crate::error::Error::Input(format!("column `{name}` missing")))?;
    Ok(arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8)?.as_string::<i32>().clone())
}

/// Row `i` of a string column, NULL as "".
fn text(a: &arrow::array::StringArray, i: usize) -> &str {
    if a.is_valid(i) { a.value(i) } else { "" }
}

/// Daily touch counts per cohort and campaign (for the lookback before `from` too), and the
/// population of each cohort (distinct hashed emails with a touch in the window).
///
/// Aggregated while the scan streams, not by a DataFusion aggregate: the result is small
/// (days × cohorts × campaigns) and this way the step runs within any `--memory-limit` the
/// deterministic sweep runs within.
async fn read_activity(ctx: &SessionContext, p: &Params) -> Result<(Vec<ActivityRow>, Vec<(String, String, String, f64)>)> {
    let start = p.from - Duration::days(i64::from(p.click_window_days.max(p.view_window_days)) + 1);
    let from_day = tally_core::store::date_to_day(p.from);
    let columns = ["advertiser_id", "date", "geo_state", "device_os", "channel", "campaign_id", "touch_type", "em", "ph", "external_id"];
    let mut stream = ctx
        .table(Table::Touchpoints.name())
        .await?
        .filter(col("date").gt_eq(date_lit(start)).and(col("date").lt_eq(date_lit(p.to))))?
        .select(columns.iter().map(|c| col(*c)).collect::<Vec<_>>())?
        .execute_stream()
        .await?;
    // Per row only integers are hashed: each text column is interned through the batch's
    // dictionary (a few distinct values per batch), the key is a tuple of interned ids, and the
    // people of a cohort are the first 8 bytes of their hashed email. Keying by owned strings
    // instead cost ≈ 40 s on the 50M-touch world (six allocations and a SipHash per touch).
    type Key = (u32, i32, u32, u32, u32, u32, bool, bool);
    let mut names = crate::sweep::Interner::default();
    let mut counts: FastMap<Key, f64> = FastMap::default();
    // Every (cohort, person) seen, deduplicated at the end by sorting: tens of millions of
    // inserts into hash sets of millions of people were one cache miss each (≈ 9 s at 50M).
    let mut people: FastMap<(u32, u32, u32), Vec<u64>> = FastMap::default();
    while let Some(b) = stream.next().await {
        let b = b?;
        let mut text = |i: usize| names.column_ids(b.column(i));
        let (adv, geo, os, ch, camp, ty) = (text(0)?, text(2)?, text(3)?, text(4)?, text(5)?, text(6)?);
        let click = names.id("click");
        let date = arrow::compute::cast(b.column(1), &arrow::datatypes::DataType::Date32)?;
        let date = date.as_primitive::<Date32Type>();
        let (em, ph, ext) = (b.column(7), b.column(8), b.column(9));
        let emails = em.as_fixed_size_binary();
        for i in 0..b.num_rows() {
            let identified = em.is_valid(i) || ph.is_valid(i) || ext.is_valid(i);
            let key = (adv[i], date.value(i), geo[i], os[i], ch[i], camp[i], ty[i] == click, identified);
            if date.value(i) >= from_day && em.is_valid(i) {
                let digest = emails.value(i);
                let person = u64::from_le_bytes(digest[..8].try_into().expect("32-byte digest"));
                people.entry((key.0, key.2, key.3)).or_default().push(person);
            }
            *counts.entry(key).or_default() += 1.0;
        }
    }
    let name = |id: u32| names.names[id as usize].clone();
    type Named = (String, i32, String, String, String, String, bool, bool);
    let mut counts: Vec<(Named, f64)> =
        counts.into_iter().map(|((a, d, g, o, c, k, click, identified), n)| ((name(a), d, name(g), name(o), name(c), name(k), click, identified), n)).collect();
    let people: Vec<((String, String, String), usize)> = people
        .into_iter()
        .map(|((a, g, o), mut seen)| {
            seen.sort_unstable();
            seen.dedup();
            ((name(a), name(g), name(o)), seen.len())
        })
        .collect();
    // Sorted, so campaigns get the same indexes and sums the same order on every run (a hash
    // map's order differs between processes).
    counts.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let rows = counts
        .into_iter()
        .map(|((adv, day, geo, os, channel, campaign, click, identified), n)| ActivityRow { adv, day, geo, os, channel, campaign, click, identified, n })
        .collect();
    let mut pop: Vec<(String, String, String, f64)> = people.into_iter().map(|((a, g, o), n)| (a, g, o, n as f64)).collect();
    pop.sort_unstable_by(|a, b| (&a.0, &a.1, &a.2).cmp(&(&b.0, &b.1, &b.2)));
    Ok((rows, pop))
}

type FastMap<K, V> = datafusion::common::HashMap<K, V>;

/// SplitMix64: a small deterministic generator for the bootstrap (no thread or time input).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64).min(n as f64 - 1.0) as usize
    }
    fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Whether a conversion is in the validation holdout: a hash of its key below `share`.
pub(crate) fn in_holdout(conversion_key: &str, share: f64, seed: u64) -> bool {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(conversion_key.as_bytes());
    let b = h.finalize();
    let v = u64::from_le_bytes(b.as_bytes()[..8].try_into().expect("8 bytes"));
    ((v >> 11) as f64 / (1u64 << 53) as f64) < share
}

/// Quantile of a sorted slice (linear interpolation).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// One advertiser's cells.
struct World {
    campaigns: Vec<(String, String)>,
    days: usize,
    cohorts: usize,
    /// Per cohort: population and whether suppressed.
    population: Vec<f64>,
    suppressed: Vec<bool>,
    /// Per cell × (campaign, type): lag-weighted touches, and identified touches. Type 0 click, 1 impression.
    act: Vec<f64>,
    act_id: Vec<f64>,
    /// Per cell × (campaign, type): matched (non-holdout) conversions.
    matched: Vec<f64>,
    /// Per cell: unmatched conversions carrying identifiers (type b), and without (type a).
    unmatched_b: Vec<f64>,
    unmatched_a: Vec<f64>,
    /// Per cell × campaign: matched (non-holdout) conversions whose strongest key is not a click id.
    matched_nc: Vec<f64>,
    /// Per cell: type-b unmatched conversions without a click id.
    unmatched_b_nc: Vec<f64>,
    /// Per cell × campaign: holdout conversions by their deterministic campaign.
    holdout: Vec<f64>,
    /// Per cell × campaign: Σ over the matched (non-holdout) conversions without a click id of
    /// the odds that such a conversion goes unmatched (see [`match_odds`]).
    nc_odds: Vec<f64>,
    /// Per cell × (campaign, type): the expected number of the matched (non-holdout)
    /// conversions that are coincidental — the person converted for another reason while the
    /// touch happened to be the latest in the window (see [`coincidence`]).
    coincidental: Vec<f64>,
    /// Per cell × (campaign, type): the expected number of the coincidental matches that another
    /// touch of their path caused (shared out in [`run`] after a first fit).
    reassigned: Vec<f64>,
    /// Per cell × campaign: the expected causes of the matched conversions without a click id —
    /// the non-coincidental part by their deterministic campaign, the coincidental part by the
    /// other touches of their path and the cell's touches that lost their identifiers (the rest
    /// of it is organic).
    nc_cause: Vec<f64>,
}

/// Per matched conversion without a click id `(campaign, lag in hours)`, of one touch type
/// with lookback `window` hours: the probability that the match is coincidental.
///
/// A conversion a touch caused follows it closely: its lag is taken to be exponential
/// (truncated to the window) with a rate shared by all campaigns of the touch type. A
/// conversion that happened for another reason — organic, or caused by something that left no
/// matchable touch — falls anywhere in the window the touch keeps open, so its lag is
/// uniform. A two-component mixture fitted by EM (per campaign its own causal share, shrunk to
/// the pooled share) separates the two; each conversion's coincidental probability is its
/// posterior under the uniform component. Click-id matches are causal and not part of it.
fn coincidence(lags: &[(usize, f64)], campaigns: usize, window: f64) -> (Vec<f64>, Option<f64>) {
    const PRIOR: f64 = 20.0;
    if lags.is_empty() || window <= 0.0 {
        return (vec![0.0; lags.len()], None);
    }
    let uniform = 1.0 / window;
    let mean: f64 = lags.iter().map(|l| l.1).sum::<f64>() / lags.len() as f64;
    let mut rate = 2.0 / mean.max(1e-3);
    let mut share = vec![0.8; campaigns];
    let mut r = vec![0.0; lags.len()];
    for _ in 0..200 {
        let norm = 1.0 - (-rate * window).exp();
        for (i, &(c, x)) in lags.iter().enumerate() {
            let causal = share[c] * rate * (-rate * x).exp() / norm;
            let other = (1.0 - share[c]) * uniform;
            r[i] = if causal + other > 0.0 { causal / (causal + other) } else { 0.0 };
        }
        let (mut sum_r, mut n) = (vec![0.0; campaigns], vec![0.0; campaigns]);
        let (mut weight, mut moment) = (0.0, 0.0);
        for (i, &(c, x)) in lags.iter().enumerate() {
            sum_r[c] += r[i];
            n[c] += 1.0;
            weight += r[i];
            moment += r[i] * x;
        }
        let pooled = weight / lags.len() as f64;
        for c in 0..campaigns {
            share[c] = (sum_r[c] + PRIOR * pooled) / (n[c] + PRIOR);
        }
        // The truncated exponential's rate whose mean is the weighted mean lag (bisection:
        // the mean 1/λ − W/(e^{λW} − 1) falls from W/2 to 0 as λ grows).
        let target = if weight > 0.0 { moment / weight } else { window / 2.0 };
        let (mut lo, mut hi) = (1e-9_f64, 1e3_f64);
        for _ in 0..100 {
            let mid = (lo * hi).sqrt();
            let m = 1.0 / mid - window / ((mid * window).exp_m1());
            if m > target {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        rate = (lo * hi).sqrt();
    }
    (r.iter().map(|v| 1.0 - v).collect(), Some(rate))
}

/// What the matched conversions say per (campaign, type), under day weights: `rho` matched
/// conversions per identified touch, `fail` unmatched conversions with person identifiers the
/// campaign causes per identified touch (failed identity matches).
#[derive(Debug, Clone)]
struct Rates {
    rho: Vec<f64>,
    /// ρ without the coincidental matches: the conversions the campaign's touches cause.
    causal: Vec<f64>,
    fail: Vec<f64>,
}

/// The odds that a conversion with person identifiers but no click id goes unmatched, from a
/// matched one that shares a person identifier with `k` touches of its path: each eligible
/// touch shares one with probability `s` (measured per identifier pattern of the conversion),
/// so a conversion like it matches with probability `1 − (1 − s)^k` and for each one matched
/// `(1 − s)^k / (1 − (1 − s)^k)` like it did not (inverse-probability weighting; `k` is a lower
/// bound of the eligible touches, so the odds are an upper bound).
fn match_odds(s: f64, k: u32) -> f64 {
    let q = (1.0 - s).clamp(0.0, 1.0).powi(k.max(1) as i32);
    if q < 1.0 { q / (1.0 - q) } else { 0.0 }
}

impl World {
    fn width(&self) -> usize {
        self.campaigns.len() * 2
    }
    fn cells(&self) -> usize {
        self.days * self.cohorts
    }
    fn day_of(&self, cell: usize) -> usize {
        cell / self.cohorts
    }

    /// ρ and the failed-match rates per (campaign, type) with day weights `w`.
    ///
    /// A conversion caused by campaign `c` that carries person identifiers but no click id
    /// matches when a touch of its path shares one of them; for every matched conversion of `c`
    /// without a click id, its [`match_odds`] like it went unmatched.
    #[allow(clippy::needless_range_loop)] // parallel arrays indexed by campaign and day
    fn rates(&self, w: &[f64]) -> Rates {
        let width = self.width();
        let n = self.campaigns.len();
        let mut m = vec![0.0; width];
        let mut a = vec![0.0; width];
        let mut nc = vec![0.0; n];
        let mut odds = vec![0.0; n];
        let mut co = vec![0.0; width];
        let mut re = vec![0.0; width];
        for g in 0..self.cells() {
            let wd = w[self.day_of(g)];
            if wd == 0.0 || self.suppressed[g % self.cohorts] {
                continue;
            }
            for j in 0..width {
                m[j] += wd * self.matched[g * width + j];
                a[j] += wd * self.act_id[g * width + j];
                co[j] += wd * self.coincidental[g * width + j];
                re[j] += wd * self.reassigned[g * width + j];
            }
            for c in 0..n {
                nc[c] += wd * self.matched_nc[g * n + c];
                odds[c] += wd * self.nc_odds[g * n + c];
            }
        }
        let rho: Vec<f64> = m.iter().zip(&a).map(|(m, a)| if *a > 0.0 { m / a } else { 0.0 }).collect();
        let causal: Vec<f64> = (0..width).map(|j| if a[j] > 0.0 { (m[j] - co[j] + re[j]).max(0.0) / a[j] } else { 0.0 }).collect();
        let mut fail = vec![0.0; width];
        for c in 0..n {
            let odds = if nc[c] > 0.0 { odds[c] / nc[c] } else { 0.0 };
            // Coincidental matches out, the matches other campaigns' touches caused in (all without a click id).
            let moved = re[c * 2] + re[c * 2 + 1] - co[c * 2] - co[c * 2 + 1];
            let matched = m[c * 2] + m[c * 2 + 1] + moved;
            let share_nc = if matched > 0.0 { ((nc[c] + moved) / matched).clamp(0.0, 1.0) } else { 0.0 };
            for t in 0..2 {
                fail[c * 2 + t] = causal[c * 2 + t] * share_nc * odds;
            }
        }
        Rates { rho, causal, fail }
    }

    /// Features `[population, Σ fail·identified touches, Σρ·(touches − identified)]` of cell `g`.
    fn features(&self, g: usize, r: &Rates) -> [f64; 3] {
        let width = self.width();
        let mut x1 = 0.0;
        let mut x2 = 0.0;
        for j in 0..width {
            let a = self.act[g * width + j];
            let id = self.act_id[g * width + j];
            x1 += r.fail[j] * id;
            x2 += r.causal[j] * (a - id).max(0.0);
        }
        [self.population[g % self.cohorts], x1, x2]
    }

    /// Maximum-likelihood θ (EM for a Poisson mixture with non-negative coefficients). The
    /// failed-match component is measured, not fitted: its coefficient stays 1.
    fn fit(&self, r: &Rates, w: &[f64], start: [f64; 3], iterations: usize) -> [f64; 3] {
        let feats: Vec<(usize, [f64; 3])> =
            (0..self.cells()).filter(|&g| w[self.day_of(g)] > 0.0 && !self.suppressed[g % self.cohorts]).map(|g| (g, self.features(g, r))).collect();
        let mut theta = start;
        theta[1] = 1.0;
        let mut denom = [0.0; 3];
        for (g, x) in &feats {
            for k in 0..3 {
                denom[k] += w[self.day_of(*g)] * x[k];
            }
        }
        for _ in 0..iterations {
            let mut num = [0.0; 3];
            for (g, x) in &feats {
                let u = self.unmatched_b[*g];
                if u == 0.0 {
                    continue;
                }
                let mu: f64 = (0..3).map(|k| theta[k] * x[k]).sum();
                if mu <= 0.0 {
                    continue;
                }
                for k in 0..3 {
                    num[k] += w[self.day_of(*g)] * u * theta[k] * x[k] / mu;
                }
            }
            for k in [0, 2] {
                theta[k] = if denom[k] > 0.0 { num[k] / denom[k] } else { 0.0 };
            }
        }
        theta
    }

    /// Per campaign: the credit of an unmatched conversion with identifiers (type b) and of one
    /// without (type a) in cell `g`, and the holdout allocation.
    fn allocate(&self, g: usize, r: &Rates, theta: &[f64; 3], b: &mut [f64], a: &mut [f64], h: &mut [f64]) {
        let width = self.width();
        let n = self.campaigns.len();
        let x = self.features(g, r);
        let mu: f64 = (0..3).map(|k| theta[k] * x[k]).sum();
        let mut ident = 0.0;
        for c in 0..n {
            let mut v = 0.0;
            let mut hv = 0.0;
            for t in 0..2 {
                let j = c * 2 + t;
                let act = self.act[g * width + j];
                let id = self.act_id[g * width + j];
                v += theta[1] * r.fail[j] * id + theta[2] * r.causal[j] * (act - id).max(0.0);
                hv += r.rho[j] * id;
            }
            b[c] = if mu > 0.0 { v / mu } else { 0.0 };
            h[c] = hv;
            ident += hv;
        }
        for v in h.iter_mut() {
            *v = if ident > 0.0 { *v / ident } else { 0.0 };
        }
        // Type a (no identifier at all): the cause mix of the cell's conversions that carry
        // person identifiers but no click id — person identifiers are present independently of
        // the cause, a click id is not (only click-caused conversions can carry one).
        // The matched ones count with their expected causes (`nc_cause`): a coincidental match
        // goes to the other touches of its path or to the organic share, not to the touch the
        // last-touch rule picked.
        let matched: f64 = (0..n).map(|c| self.matched_nc[g * n + c]).sum();
        let ub = self.unmatched_b_nc[g];
        let total = matched + ub;
        for c in 0..n {
            a[c] = if total > 0.0 { (self.nc_cause[g * n + c] + ub * b[c]) / total } else { b[c] };
        }
    }
}

/// Runs the step over the window's conversions. `last[i]` is conversion `i`'s deterministic
/// `last_touch` touch (`None`: unmatched). Returns the probabilistic rows and the summary.
pub(crate) async fn run(
    ctx: &SessionContext,
    convs: &RecordBatch,
    advertisers: &[String],
    conv_adv: &[u32],
    last: &[Option<MatchedTouchInfo>],
    p: &Params,
) -> Result<(Vec<ProbRow>, ProbabilisticSummary)> {
    let (activity, pop) = read_activity(ctx, p).await?;
    let mut summary = ProbabilisticSummary::default();
    let mut rows = Vec::new();
    let from_day = tally_core::store::date_to_day(p.from);
    let days = (p.to - p.from).num_days() as usize + 1;
    let time = convs.column_by_name("event_time").expect("schema").as_primitive::<TimestampMicrosecondType>();
    let geo = utf8_column(convs, "geo_state")?;
    let os = utf8_column(convs, "device_os")?;
    let key = convs.column_by_name("conversion_key").expect("schema").as_string::<i32>();
    let value = convs.column_by_name("value").expect("schema").as_primitive::<Float64Type>();
    let click_col = convs.column_by_name("click_id").expect("schema");
    let has_click: Vec<bool> = (0..convs.num_rows()).map(|i| click_col.is_valid(i)).collect();
    let pattern: Vec<usize> = (0..convs.num_rows())
        .map(|i| {
            ["em", "ph", "external_id"].iter().enumerate().filter(|(_, c)| convs.column_by_name(c).expect("schema").is_valid(i)).map(|(b, _)| 1 << b).sum()
        })
        .collect();
    let has_person: Vec<bool> = pattern.iter().map(|&p| p != 0).collect();
    let has_ids: Vec<bool> =
        (0..convs.num_rows()).map(|i| ["em", "ph", "external_id", "click_id"].iter().any(|c| convs.column_by_name(c).expect("schema").is_valid(i))).collect();

    for (a, adv) in advertisers.iter().enumerate() {
        let conv_ids: Vec<usize> = (0..convs.num_rows()).filter(|&i| conv_adv[i] as usize == a).collect();
        if conv_ids.is_empty() {
            continue;
        }
        let dims = |g: &str, o: &str| (if p.by_geo { g.to_owned() } else { "*".to_owned() }, if p.by_os { o.to_owned() } else { "*".to_owned() });
        // Cohort populations and k-anonymity merging.
        let mut population: BTreeMap<(String, String), f64> = BTreeMap::new();
        for (ad, g, o, n) in &pop {
            if ad == adv {
                *population.entry(dims(g, o)).or_default() += n;
            }
        }
        for r in activity.iter().filter(|r| &r.adv == adv) {
            population.entry(dims(&r.geo, &r.os)).or_default();
        }
        for &i in &conv_ids {
            population.entry(dims(text(&geo, i), text(&os, i))).or_default();
        }
        let k = p.k_anonymity as f64;
        let mut group: BTreeMap<(String, String), (String, String)> = BTreeMap::new();
        let mut merged_pop: BTreeMap<(String, String), f64> = BTreeMap::new();
        for (c, n) in &population {
            let to = if *n >= k { c.clone() } else { (c.0.clone(), "*".to_owned()) };
            if to != *c {
                summary.merged_cohorts += 1;
            }
            group.insert(c.clone(), to.clone());
            *merged_pop.entry(to).or_default() += n;
        }
        let small: Vec<(String, String)> = merged_pop.iter().filter(|(c, n)| **n < k && c.1 == "*").map(|(c, _)| c.clone()).collect();
        for c in &small {
            let n = merged_pop.remove(c).unwrap_or(0.0);
            *merged_pop.entry(("*".to_owned(), "*".to_owned())).or_default() += n;
            for v in group.values_mut() {
                if v == c {
                    *v = ("*".to_owned(), "*".to_owned());
                }
            }
        }
        let cohort_names: Vec<(String, String)> = merged_pop.keys().cloned().collect();
        let cohort_index: HashMap<(String, String), usize> = cohort_names.iter().cloned().enumerate().map(|(i, c)| (c, i)).collect();
        let cohort_of = |g: &str, o: &str| group.get(&dims(g, o)).and_then(|c| cohort_index.get(c)).copied();

        // Campaigns.
        let mut campaigns: Vec<(String, String)> = Vec::new();
        let mut campaign_index: HashMap<String, usize> = HashMap::new();
        let mut campaign_id = |ch: &str, camp: &str, campaigns: &mut Vec<(String, String)>| {
            *campaign_index.entry(camp.to_owned()).or_insert_with(|| {
                campaigns.push((ch.to_owned(), camp.to_owned()));
                campaigns.len() - 1
            })
        };
        for r in activity.iter().filter(|r| &r.adv == adv) {
            campaign_id(&r.channel, &r.campaign, &mut campaigns);
        }
        for &i in &conv_ids {
            if let Some(m) = &last[i] {
                campaign_id(&m.channel, &m.campaign, &mut campaigns);
            }
        }
        let n_camp = campaigns.len();
        let width = n_camp * 2;
        let cohorts = cohort_names.len();
        let cells = days * cohorts;
        let mut w = World {
            campaigns: campaigns.clone(),
            days,
            cohorts,
            population: cohort_names.iter().map(|c| merged_pop[c]).collect(),
            suppressed: cohort_names.iter().map(|c| merged_pop[c] < k).collect(),
            act: vec![0.0; cells * width],
            act_id: vec![0.0; cells * width],
            matched: vec![0.0; cells * width],
            unmatched_b: vec![0.0; cells],
            unmatched_a: vec![0.0; cells],
            matched_nc: vec![0.0; cells * n_camp],
            unmatched_b_nc: vec![0.0; cells],
            holdout: vec![0.0; cells * n_camp],
            nc_odds: vec![0.0; cells * n_camp],
            coincidental: vec![0.0; cells * width],
            reassigned: vec![0.0; cells * width],
            nc_cause: vec![0.0; cells * n_camp],
        };

        // The chance that a touch shares a person identifier with a conversion, per identifier
        // pattern of the conversion: measured on the click-id matches with person identifiers,
        // whose touch is known — does the clicked touch share one too?
        let mut shares = [(0.0, 0.0); 8];
        for &i in &conv_ids {
            if let Some(Some(shared)) = last[i].as_ref().map(|m| m.click_shares)
                && has_person[i]
                && !in_holdout(key.value(i), p.holdout, p.seed)
            {
                shares[pattern[i]].0 += f64::from(u8::from(shared));
                shares[pattern[i]].1 += 1.0;
            }
        }
        let shares: Vec<f64> = shares.iter().map(|(k, n)| (k + 1.0) / (n + 2.0)).collect();
        // Conversions into cells; lag kernels from the matched ones.
        let max_lag = [p.click_window_days.max(0) as usize, p.view_window_days.max(0) as usize];
        let mut lags = [vec![0.0; max_lag[0] + 1], vec![0.0; max_lag[1] + 1]];
        let mut cell_of_conv: Vec<(usize, Option<usize>)> = Vec::new();
        let mut holdout_convs: Vec<(usize, usize)> = Vec::new();
        let mut nc_lags: [Vec<(usize, usize, f64, usize)>; 2] = [Vec::new(), Vec::new()];
        for &i in &conv_ids {
            let day = time.value(i).div_euclid(DAY) as i32;
            let d = (day - from_day) as usize;
            let cohort = cohort_of(text(&geo, i), text(&os, i));
            let g = cohort.map(|c| d * cohorts + c);
            match &last[i] {
                Some(m) => {
                    let c = campaign_index[&m.campaign];
                    let t = usize::from(!m.click);
                    if in_holdout(key.value(i), p.holdout, p.seed) {
                        if let Some(g) = g {
                            w.holdout[g * n_camp + c] += 1.0;
                            holdout_convs.push((g, c));
                        }
                        continue;
                    }
                    let lag = (day - m.touch_day).clamp(0, max_lag[t] as i32) as usize;
                    lags[t][lag] += 1.0;
                    if let Some(g) = g {
                        w.matched[g * width + c * 2 + t] += 1.0;
                        if !m.by_click {
                            w.matched_nc[g * n_camp + c] += 1.0;
                            w.nc_odds[g * n_camp + c] += match_odds(shares[pattern[i]], m.id_touches);
                            let hours = (time.value(i) - m.touch_time).max(0) as f64 / HOUR as f64;
                            nc_lags[t].push((g, c, hours, i));
                        }
                    }
                }
                None => {
                    summary.unmatched += 1;
                    match g {
                        Some(g) if !w.suppressed[g % cohorts] => {
                            if has_ids[i] {
                                w.unmatched_b[g] += 1.0;
                                if !has_click[i] {
                                    w.unmatched_b_nc[g] += 1.0;
                                }
                            } else {
                                w.unmatched_a[g] += 1.0;
                            }
                            cell_of_conv.push((i, Some(g)));
                        }
                        _ => {
                            summary.suppressed += 1;
                            cell_of_conv.push((i, None));
                        }
                    }
                }
            }
        }
        // Per matched conversion without a click id `(cell, campaign, conversion, coincidental
        // probability)`, and per touch type the causal lag density (per hour).
        let mut nc_convs: Vec<(usize, usize, usize, f64)> = Vec::new();
        let mut lag_density: Vec<Box<dyn Fn(f64) -> f64>> = Vec::new();
        for (t, entries) in nc_lags.iter().enumerate() {
            let window = 24.0 * max_lag[t] as f64;
            let by_campaign: Vec<(usize, f64)> = entries.iter().map(|&(_, c, x, _)| (c, x.min(window))).collect();
            let (probs, rate) = coincidence(&by_campaign, n_camp, window);
            for (&(g, c, _, i), p) in entries.iter().zip(probs) {
                w.coincidental[g * width + c * 2 + t] += p;
                w.nc_cause[g * n_camp + c] += 1.0 - p;
                nc_convs.push((g, c, i, p));
            }
            lag_density.push(match rate {
                Some(rate) if window > 0.0 => {
                    Box::new(move |x: f64| if (0.0..=window).contains(&x) { rate * (-rate * x).exp() / -(-rate * window).exp_m1() } else { 0.0 })
                }
                _ => Box::new(move |x: f64| if (0.0..=window).contains(&x) && window > 0.0 { 1.0 / window } else { 0.0 }),
            });
        }
        for l in &mut lags {
            let s: f64 = l.iter().sum();
            if s > 0.0 {
                l.iter_mut().for_each(|v| *v /= s);
            } else {
                let n = l.len() as f64;
                l.iter_mut().for_each(|v| *v = 1.0 / n);
            }
        }
        // Touches into cells through the lag kernels.
        for r in activity.iter().filter(|r| &r.adv == adv) {
            let Some(cohort) = cohort_of(&r.geo, &r.os) else { continue };
            let c = campaign_index[&r.campaign];
            let t = usize::from(!r.click);
            for (lag, wl) in lags[t].iter().enumerate() {
                let d = r.day + lag as i32 - from_day;
                if d < 0 || d as usize >= days || *wl == 0.0 {
                    continue;
                }
                let g = d as usize * cohorts + cohort;
                w.act[g * width + c * 2 + t] += wl * r.n;
                if r.identified {
                    w.act_id[g * width + c * 2 + t] += wl * r.n;
                }
            }
        }

        // Point fit: a first fit without the coincidental matches' causes, which gives the rates
        // those causes are weighed by, then the fit with them.
        let ones = vec![1.0; days];
        let rho = w.rates(&ones);
        let theta = w.fit(&rho, &ones, [1e-3, 1.0, 0.5], EM_ITERATIONS);
        // A coincidental match was caused by another touch of its path, or by what causes the
        // unmatched conversions — organic, or a touch that had lost its identifiers: in
        // proportion to each one's intensity per person and hour, the path's touches at their
        // lags (ρ* × the touch type's lag density), the others the cell's fitted means
        // (θ₀ · population and δ · ρ* · unidentified touches) per person. All are rates of
        // conversions carrying identifiers.
        for &(g, _, i, p_co) in &nc_convs {
            let Some(m) = &last[i] else { continue };
            let people = w.population[g % cohorts] * 24.0;
            if people <= 0.0 {
                continue;
            }
            let organic = theta[0] / 24.0;
            let lost: Vec<f64> = (0..width).map(|j| theta[2] * rho.causal[j] * (w.act[g * width + j] - w.act_id[g * width + j]).max(0.0) / people).collect();
            let causes: Vec<(usize, f64)> = m
                .others
                .iter()
                .filter_map(|(camp, click, t)| {
                    let c = *campaign_index.get(camp)?;
                    let ty = usize::from(!*click);
                    let hours = (time.value(i) - t) as f64 / HOUR as f64;
                    Some((c * 2 + ty, rho.causal[c * 2 + ty] * lag_density[ty](hours)))
                })
                .collect();
            let total = organic + lost.iter().sum::<f64>() + causes.iter().map(|x| x.1).sum::<f64>();
            if total <= 0.0 {
                continue;
            }
            for (j, intensity) in causes {
                let share = p_co * intensity / total;
                w.reassigned[g * width + j] += share;
                w.nc_cause[g * n_camp + j / 2] += share;
            }
            for (j, intensity) in lost.iter().enumerate() {
                w.nc_cause[g * n_camp + j / 2] += p_co * intensity / total;
            }
        }
        let rho = w.rates(&ones);
        let theta = w.fit(&rho, &ones, theta, EM_ITERATIONS);
        summary.fitted.insert(adv.clone(), theta);
        let mut b = vec![0.0; n_camp];
        let mut av = vec![0.0; n_camp];
        let mut h = vec![0.0; n_camp];
        let mut point_total = vec![0.0; n_camp];
        let mut point_var = vec![0.0; n_camp];
        let mut hold_pred = vec![0.0; n_camp];
        let mut hold_var = vec![0.0; n_camp];
        let mut cell_b: Vec<Vec<f64>> = vec![Vec::new(); cells];
        let mut cell_a: Vec<Vec<f64>> = vec![Vec::new(); cells];
        for g in 0..cells {
            let (ub, ua, nh) = (w.unmatched_b[g], w.unmatched_a[g], (0..n_camp).map(|c| w.holdout[g * n_camp + c]).sum::<f64>());
            if ub + ua + nh == 0.0 {
                continue;
            }
            w.allocate(g, &rho, &theta, &mut b, &mut av, &mut h);
            for c in 0..n_camp {
                point_total[c] += ub * b[c] + ua * av[c];
                point_var[c] += ub * b[c] * (1.0 - b[c]) + ua * av[c] * (1.0 - av[c]);
                hold_pred[c] += nh * h[c];
                hold_var[c] += nh * h[c] * (1.0 - h[c]);
            }
            cell_b[g] = b.clone();
            cell_a[g] = av.clone();
        }

        // Bootstrap over days.
        let mut rng = Rng(p.seed ^ 0x5EED_0000_0000_0000 ^ (a as u64).wrapping_mul(0x9E37_79B9));
        let mut reps_total: Vec<Vec<f64>> = vec![Vec::with_capacity(REPLICATES); n_camp];
        let mut reps_hold: Vec<Vec<f64>> = vec![Vec::with_capacity(REPLICATES); n_camp];
        let mut reps_params: Vec<(Rates, [f64; 3])> = Vec::with_capacity(REPLICATES);
        for _ in 0..REPLICATES {
            let mut wd = vec![0.0; days];
            for _ in 0..days {
                wd[rng.below(days)] += 1.0;
            }
            let rho_b = w.rates(&wd);
            let theta_b = w.fit(&rho_b, &wd, theta, EM_REPLICATE_ITERATIONS);
            let mut tot = vec![0.0; n_camp];
            let mut hold = vec![0.0; n_camp];
            for g in 0..cells {
                let wg = wd[w.day_of(g)];
                let (ub, ua, nh) = (w.unmatched_b[g], w.unmatched_a[g], (0..n_camp).map(|c| w.holdout[g * n_camp + c]).sum::<f64>());
                if wg == 0.0 || ub + ua + nh == 0.0 {
                    continue;
                }
                w.allocate(g, &rho_b, &theta_b, &mut b, &mut av, &mut h);
                for c in 0..n_camp {
                    tot[c] += wg * (ub * b[c] + ua * av[c]);
                    hold[c] += wg * nh * h[c];
                }
            }
            for c in 0..n_camp {
                reps_total[c].push(tot[c] + point_var[c].sqrt() * rng.normal());
                reps_hold[c].push(hold[c] + hold_var[c].sqrt() * rng.normal());
            }
            reps_params.push((rho_b, theta_b));
        }
        let interval = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            (quantile(v, 0.05).max(0.0), quantile(v, 0.95).max(0.0))
        };

        // Per-conversion rows, with per-cell credit intervals from the replicates' parameters.
        let mut cell_interval: HashMap<(usize, bool), Vec<(f64, f64)>> = HashMap::new();
        let mut value_credit = vec![0.0; n_camp];
        for &(i, g) in &cell_of_conv {
            let Some(g) = g else { continue };
            let typed_a = !has_ids[i];
            let point = if typed_a { &cell_a[g] } else { &cell_b[g] };
            let bounds = cell_interval.entry((g, typed_a)).or_insert_with(|| {
                let mut per: Vec<Vec<f64>> = vec![Vec::with_capacity(REPLICATES); n_camp];
                for (rho_b, theta_b) in &reps_params {
                    w.allocate(g, rho_b, theta_b, &mut b, &mut av, &mut h);
                    let src = if typed_a { &av } else { &b };
                    for c in 0..n_camp {
                        per[c].push(src[c]);
                    }
                }
                per.iter_mut().map(interval).collect()
            });
            for c in 0..n_camp {
                let r = point[c];
                if r < 1e-6 {
                    continue;
                }
                if value.is_valid(i) {
                    value_credit[c] += r * value.value(i);
                }
                summary.credited += r;
                rows.push(ProbRow {
                    conv: i as u32,
                    channel: campaigns[c].0.clone(),
                    campaign: campaigns[c].1.clone(),
                    credit: r,
                    low: bounds[c].0.min(r),
                    high: bounds[c].1.max(r),
                });
            }
        }
        for c in 0..n_camp {
            let (low, high) = interval(&mut reps_total[c]);
            if point_total[c] > 0.0 || high > 0.0 {
                summary.totals.push(CampaignTotal {
                    advertiser_id: adv.clone(),
                    channel: campaigns[c].0.clone(),
                    campaign_id: campaigns[c].1.clone(),
                    credit: point_total[c],
                    low: low.min(point_total[c]),
                    high: high.max(point_total[c]),
                    value_credit: value_credit[c],
                });
            }
        }
        // Validation.
        summary.holdout += holdout_convs.len();
        let mut actual = vec![0i64; n_camp];
        for &(_, c) in &holdout_convs {
            actual[c] += 1;
        }
        for c in 0..n_camp {
            if actual[c] == 0 && hold_pred[c] < 0.5 {
                continue;
            }
            let (low, high) = interval(&mut reps_hold[c]);
            summary.checks.push(CampaignCheck {
                advertiser_id: adv.clone(),
                channel: campaigns[c].0.clone(),
                campaign_id: campaigns[c].1.clone(),
                predicted: hold_pred[c],
                actual: actual[c],
                low: low.min(hold_pred[c]),
                high: high.max(hold_pred[c]),
            });
        }
    }
    let actual: i64 = summary.checks.iter().map(|c| c.actual).sum();
    if actual > 0 {
        let err: f64 = summary.checks.iter().map(|c| (c.predicted - c.actual as f64).abs()).sum();
        summary.wape = Some(err / actual as f64);
        summary.coverage = Some(summary.checks.iter().filter(|c| c.covered()).count() as f64 / summary.checks.len() as f64);
    }
    summary.totals.sort_by(|a, b| (&a.advertiser_id, &a.channel, &a.campaign_id).cmp(&(&b.advertiser_id, &b.channel, &b.campaign_id)));
    summary.checks.sort_by(|a, b| (&a.advertiser_id, &a.channel, &a.campaign_id).cmp(&(&b.advertiser_id, &b.channel, &b.campaign_id)));
    Ok((rows, summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holdout_is_stable_and_near_its_share() {
        let n = 20_000;
        let picked = (0..n).filter(|i| in_holdout(&format!("k{i}"), 0.1, 7)).count();
        assert!((1_700..2_300).contains(&picked), "{picked}");
        assert_eq!(in_holdout("abc", 0.1, 7), in_holdout("abc", 0.1, 7));
        assert!(!(0..1000).any(|i| in_holdout(&format!("k{i}"), 0.0, 7)));
    }

    #[test]
    fn quantiles_interpolate() {
        let v = [0.0, 1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.5), 2.0);
        assert!((quantile(&v, 0.05) - 0.2).abs() < 1e-12);
    }

    /// Lags of one campaign: 300 causal (exponential, mean 24 h) and 100 uniform over the
    /// 168-hour window; the mixture must find about 100 coincidental ones.
    #[test]
    fn coincidence_separates_a_planted_mixture() {
        let mut rng = Rng(3);
        let mut lags: Vec<(usize, f64)> = (0..300).map(|_| (0, (-24.0 * rng.uniform().max(1e-12).ln()).min(168.0))).collect();
        lags.extend((0..100).map(|_| (0, 168.0 * rng.uniform())));
        let found: f64 = coincidence(&lags, 1, 168.0).0.iter().sum();
        assert!((75.0..125.0).contains(&found), "{found}");
    }

    /// A conversion matched through one touch that shares an identifier with probability 0.9
    /// stands for 0.1/0.9 unmatched ones; through two, for 0.01/0.99.
    #[test]
    fn match_odds_weigh_by_the_touches_that_matched() {
        assert!((match_odds(0.9, 1) - 0.1 / 0.9).abs() < 1e-12);
        assert!((match_odds(0.9, 2) - 0.01 / 0.99).abs() < 1e-12);
        assert_eq!(match_odds(1.0, 1), 0.0);
        assert_eq!(match_odds(0.0, 3), 0.0);
    }

    /// Two cohorts, one campaign active only in the first: the EM must give the campaign the
    /// excess of unmatched conversions there and leave the organic rate to explain the second.
    #[test]
    fn em_recovers_a_planted_split() {
        let days = 50;
        let mut w = World {
            campaigns: vec![("tiktok".into(), "tt".into())],
            days,
            cohorts: 2,
            population: vec![1000.0, 1000.0],
            suppressed: vec![false, false],
            act: vec![0.0; days * 2 * 2],
            act_id: vec![0.0; days * 2 * 2],
            matched: vec![0.0; days * 2 * 2],
            unmatched_b: vec![0.0; days * 2],
            unmatched_a: vec![0.0; days * 2],
            matched_nc: vec![0.0; days * 2],
            unmatched_b_nc: vec![0.0; days * 2],
            holdout: vec![0.0; days * 2],
            nc_odds: vec![0.0; days * 2],
            coincidental: vec![0.0; days * 2 * 2],
            reassigned: vec![0.0; days * 2 * 2],
            nc_cause: vec![0.0; days * 2],
        };
        // Cohort 0: 100 clicks a day, 90 identified; matched 9 a day ⇒ ρ = 0.1.
        // Unmatched: organic 2/day in both; cohort 0 adds 0.1 × 10 unidentified = 1/day.
        for d in 0..days {
            let g = d * 2;
            w.act[g * 2] = 100.0;
            w.act_id[g * 2] = 90.0;
            w.matched[g * 2] = 9.0;
            w.unmatched_b[g] = 3.0;
            w.unmatched_b[g + 1] = 2.0;
        }
        let ones = vec![1.0; days];
        let rho = w.rates(&ones);
        assert!((rho.rho[0] - 0.1).abs() < 1e-12);
        let theta = w.fit(&rho, &ones, [1e-3, 1.0, 0.5], 2000);
        let (mut b, mut a, mut h) = (vec![0.0], vec![0.0], vec![0.0]);
        w.allocate(0, &rho, &theta, &mut b, &mut a, &mut h);
        assert!((3.0 * b[0] - 1.0).abs() < 0.05, "credited {} of 3, theta {theta:?}", 3.0 * b[0]);
        w.allocate(1, &rho, &theta, &mut b, &mut a, &mut h);
        assert_eq!(b[0], 0.0);
    }
}
