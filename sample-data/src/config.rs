//! The knobs of a generated world: [`WorldConfig`] (window, users, rates, the
//! separation) and the channel/campaign catalog ([`ChannelConfig`], [`CampaignConfig`])
//! with its defaults. Everything here is plain data (serializable, so `truth/world.json`
//! can carry it); validation and the expected-volume arithmetic used to size a world
//! also live here.

use chrono::{DateTime, Datelike, Days, NaiveDate, Utc, Weekday};
use serde::{Deserialize, Serialize};

use crate::Error;

/// US states users live in (lowercase 2-letter, as Meta normalizes `st`) and their weights.
pub(crate) const STATES: [(&str, f64); 10] = [
    ("ca", 0.20),
    ("tx", 0.15),
    ("fl", 0.12),
    ("ny", 0.11),
    ("pa", 0.08),
    ("il", 0.08),
    ("oh", 0.07),
    ("ga", 0.07),
    ("nc", 0.06),
    ("mi", 0.06),
];

/// Device operating systems and their weights.
pub(crate) const DEVICES: [(&str, f64); 4] = [
    ("ios", 0.42),
    ("android", 0.30),
    ("windows", 0.16),
    ("macos", 0.12),
];

/// Everything that shapes a generated world. `WorldConfig::default()` is the demo world:
/// one advertiser (`acme`), 2,000 users, 61 days from 2026-08-01, TikTok separated on
/// 2026-09-15 with Google as the control.
///
/// Sizing: a world has about `advertisers × users × expected_touchpoints_per_user()`
/// touchpoints (≈ 23 per user with the default catalog and window);
/// [`WorldConfig::with_target_touchpoints`] sets `users` for a target volume.
///
/// ```
/// let config = tally_sample::WorldConfig::default().with_target_touchpoints(5_000_000);
/// assert!(config.users > 100_000);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorldConfig {
    /// Seed of every random draw; same seed and config ⇒ byte-identical files.
    pub seed: u64,
    /// Advertiser ids (`[a-z0-9_-]+`, at most 255); each gets its own users and pixel
    /// `px_<id>_web`, and the same campaign catalog.
    pub advertisers: Vec<String>,
    /// Users per advertiser (the scale knob, see [`WorldConfig::with_target_touchpoints`]).
    pub users: usize,
    /// First day of the window (UTC).
    pub start: NaiveDate,
    /// Number of days in the window.
    pub days: u32,
    /// The separation date: from 00:00 UTC on this day the treated channel loses identifiers.
    pub cutover: NaiveDate,
    /// The channel the separation degrades (default `tiktok`).
    pub treated_channel: String,
    /// The untouched control channel for difference-in-differences (default `google`).
    pub control_channel: String,
    /// `false`: identifiers as `em_sha256`, `ph_sha256`, `external_id_sha256` (hex SHA-256 of
    /// the normalized value); `true`: plaintext `email`, `phone`, `external_id` columns.
    pub plaintext_identifiers: bool,
    /// Share of conversions sent by both the server and the browser pixel (default 0.70).
    pub browser_copy_rate: f64,
    /// Share of conversions only the browser pixel saw (the server missed them; 0.03).
    pub browser_only_rate: f64,
    /// Share of *server-only* conversions whose server copy has no `event_id` (0.10 ⇒
    /// ≈ 2.8% of server copies); those cannot be deduplicated.
    pub missing_event_id_rate: f64,
    /// Probability per user of one extra `is_test = true` conversion (0.002).
    pub test_event_rate: f64,
    /// Share of conversions flagged `opt_out` (0.01).
    pub opt_out_rate: f64,
    /// Organic conversions per user per day, no ad involved (0.002).
    pub organic_rate: f64,
    /// Identifier presence on server copies of conversions (em 0.8, ph 0.6, external_id 0.5).
    pub server_id_rates: IdRates,
    /// Probability a browser copy carries `em` (advanced matching; 0.3).
    pub browser_em_rate: f64,
    /// Probability a browser copy carries the click id when the server copy's click id
    /// was captured (the cookie survived; 0.95).
    pub browser_click_id_rate: f64,
    /// Mean delay from a click to the conversion it causes, hours (24).
    pub click_delay_mean_hours: f64,
    /// Mean delay from an impression to the conversion it causes, hours (4).
    pub view_delay_mean_hours: f64,
    /// Causal click conversions happen within this many days (7; also the window of
    /// `ids_lost` and of the platforms' baseline claims).
    pub click_window_days: u32,
    /// Causal view-through conversions happen within this many days (1).
    pub view_window_days: u32,
    /// Mean order value in USD (65).
    pub mean_order_value: f64,
    /// After the cutover, the treated channel's touchpoints carry each of em/ph/external_id
    /// with this probability (0.10; before it, the channel's `touch_id_rates`).
    pub treated_id_rate_after: f64,
    /// After the cutover, conversions caused by a treated-channel click carry its click id
    /// with this probability (0.10; before it, the channel's `click_id_rate`).
    pub treated_click_id_rate_after: f64,
    /// After the cutover, the treated platform recognizes this share of pixel conversions
    /// in its own (baseline) reporting (0.55; before it, the channel's `platform_match_rate`).
    pub treated_platform_match_after: f64,
    /// Drop every touch and conversion at or after this instant (e.g. "now", so a world
    /// ending today has nothing in the future). `None`: the window's end.
    pub end_at: Option<DateTime<Utc>>,
    /// Rows per record batch written (65,536).
    pub batch_rows: usize,
    /// The channel and campaign catalog.
    pub channels: Vec<ChannelConfig>,
}

/// Presence probabilities of the three person identifiers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IdRates {
    /// Hashed email.
    pub em: f64,
    /// Hashed phone.
    pub ph: f64,
    /// Hashed external (customer) id.
    pub external_id: f64,
}

/// How a channel's click ids look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClickIdStyle {
    /// `ttclid`-like: `E.C.P.<base64url>`.
    Tiktok,
    /// Meta `fbc`: `fb.1.<click ms>.<fbclid>`.
    Meta,
    /// `gclid`-like: `Cj0KCQjw<base64url>`.
    Google,
    /// Snap `ScCid`: a UUID.
    Snap,
    /// `clk_<hex>`.
    Generic,
}

/// One ad channel (platform) and its campaigns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelConfig {
    /// Channel name as written in `channel` columns (`tiktok`, `meta`, `google`, `snap`).
    pub name: String,
    /// Click id format.
    pub click_id_style: ClickIdStyle,
    /// Share of users the channel reaches at all.
    pub reach: f64,
    /// Exposure multiplier per `device_os` (missing: 1.0); makes cohorts informative.
    pub device_affinity: Vec<(String, f64)>,
    /// Identifier presence on this channel's touchpoints (the platform's identity graph).
    pub touch_id_rates: IdRates,
    /// Share of conversions caused by this channel's clicks whose server copy carries
    /// the click id (pass-through of `ttclid`/`fbclid`/`gclid` to the site).
    pub click_id_rate: f64,
    /// Share of pixel conversions the platform recognizes in its own reporting (baseline).
    pub platform_match_rate: f64,
    /// The platform's modeled-conversion multiplier in its reporting (baseline).
    pub modeled_uplift: f64,
    /// The channel's campaigns.
    pub campaigns: Vec<CampaignConfig>,
}

/// How a campaign is billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Billing {
    /// Impressions cost `price / 1000` each, clicks nothing.
    Cpm,
    /// Clicks cost `price` each, impressions nothing.
    Cpc,
}

/// One campaign: its flight, targeting, delivery, prices and causal effect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignConfig {
    /// `campaign_id`, e.g. `tt_back_to_school`; adgroups are `<id>_ag<n>`, ads `<id>_ag<n>_ad<m>`.
    pub id: String,
    /// Number of adgroups.
    pub adgroups: u32,
    /// Ads per adgroup.
    pub ads_per_adgroup: u32,
    /// Flight start, as a fraction of the window (0.0 = first day).
    pub active_from: f64,
    /// Flight end (exclusive), as a fraction of the window (1.0 = through the last day).
    pub active_to: f64,
    /// Delivery weight of Saturdays and Sundays relative to weekdays (0 = weekdays only).
    pub weekend_weight: f64,
    /// States targeted (empty: all).
    pub states: Vec<String>,
    /// Expected impressions per reached user per (weekday) active day.
    pub impressions_per_day: f64,
    /// Click-through rate: probability an impression is followed by a click.
    pub ctr: f64,
    /// CPM or CPC billing.
    pub billing: Billing,
    /// CPM (USD per 1,000 impressions) or CPC (USD per click). These are *effective*
    /// prices: simulated people convert far more often than real audiences (so that a
    /// few thousand of them show measurable effects), and the default prices (CPM
    /// $120–380, CPC $2.4–3.2) bring CPA and ROAS back to realistic ranges (ROAS ≈ 1.5–8).
    pub price: f64,
    /// Probability a click causes a conversion.
    pub click_cvr: f64,
    /// Probability an impression that was not clicked causes a (view-through) conversion.
    pub view_cvr: f64,
}

impl Default for WorldConfig {
    fn default() -> Self {
        WorldConfig {
            seed: 42,
            advertisers: vec!["acme".to_owned()],
            users: 2_000,
            start: date(2026, 8, 1),
            days: 61,
            cutover: date(2026, 9, 15),
            treated_channel: "tiktok".to_owned(),
            control_channel: "google".to_owned(),
            plaintext_identifiers: false,
            browser_copy_rate: 0.70,
            browser_only_rate: 0.03,
            missing_event_id_rate: 0.10,
            test_event_rate: 0.002,
            opt_out_rate: 0.01,
            organic_rate: 0.002,
            server_id_rates: IdRates {
                em: 0.8,
                ph: 0.6,
                external_id: 0.5,
            },
            browser_em_rate: 0.3,
            browser_click_id_rate: 0.95,
            click_delay_mean_hours: 24.0,
            view_delay_mean_hours: 4.0,
            click_window_days: 7,
            view_window_days: 1,
            mean_order_value: 65.0,
            treated_id_rate_after: 0.10,
            treated_click_id_rate_after: 0.10,
            treated_platform_match_after: 0.55,
            end_at: None,
            batch_rows: 65_536,
            channels: default_channels(),
        }
    }
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap_or(NaiveDate::MIN)
}

impl WorldConfig {
    /// The default world moved so that its last day is `last_day` and it spans `days`
    /// days; the cutover keeps its relative position (day 45 of 61 by default).
    ///
    /// ```
    /// use chrono::NaiveDate;
    /// let last = NaiveDate::from_ymd_opt(2027, 1, 31).unwrap();
    /// let config = tally_sample::WorldConfig::ending_on(last, 61);
    /// assert_eq!(config.start, NaiveDate::from_ymd_opt(2026, 12, 2).unwrap());
    /// assert_eq!(config.cutover, NaiveDate::from_ymd_opt(2027, 1, 16).unwrap());
    /// ```
    pub fn ending_on(last_day: NaiveDate, days: u32) -> Self {
        let default = WorldConfig::default();
        let days = days.max(1);
        let offset = (default.cutover - default.start).num_days() as f64 / default.days as f64;
        let start = last_day
            .checked_sub_days(Days::new(u64::from(days - 1)))
            .unwrap_or(last_day);
        let cutover_day = (offset * f64::from(days)).round() as u64;
        let cutover = start
            .checked_add_days(Days::new(cutover_day))
            .unwrap_or(last_day);
        WorldConfig {
            start,
            days,
            cutover,
            ..default
        }
    }

    /// Sets `users` so that the world has about `touchpoints` touchpoints in total
    /// (over all advertisers). Roughly 220,000 users per 5 million touchpoints with the
    /// default catalog and window; generation time and file size are linear in it.
    pub fn with_target_touchpoints(mut self, touchpoints: u64) -> Self {
        let per_user = self.expected_touchpoints_per_user();
        let advertisers = self.advertisers.len().max(1) as f64;
        if per_user > 0.0 {
            self.users = ((touchpoints as f64 / per_user / advertisers).ceil() as usize).max(1);
        }
        self
    }

    /// Expected touchpoints (impressions plus clicks) per user over the window, from
    /// the catalog: Σ reach × E[device affinity] × targeted share × impressions/day ×
    /// weighted active days × (1 + ctr).
    pub fn expected_touchpoints_per_user(&self) -> f64 {
        let mut total = 0.0;
        for channel in &self.channels {
            let affinity: f64 = DEVICES.iter().map(|(os, w)| w * channel.affinity(os)).sum();
            for campaign in &channel.campaigns {
                let targeted: f64 = if campaign.states.is_empty() {
                    1.0
                } else {
                    STATES
                        .iter()
                        .filter(|(s, _)| campaign.states.iter().any(|t| t == s))
                        .map(|(_, w)| w)
                        .sum()
                };
                let weight: f64 = self.active_days(campaign).iter().map(|(_, w)| w).sum();
                total += channel.reach
                    * affinity
                    * targeted
                    * campaign.impressions_per_day
                    * weight
                    * (1.0 + campaign.ctr);
            }
        }
        total
    }

    /// Day indexes (0-based in the window) a campaign delivers on, with their weights.
    pub(crate) fn active_days(&self, campaign: &CampaignConfig) -> Vec<(u32, f64)> {
        let days = f64::from(self.days);
        let from = (campaign.active_from * days).floor().max(0.0) as u32;
        let to = ((campaign.active_to * days).ceil().min(days)).max(0.0) as u32;
        (from..to)
            .filter_map(|d| {
                let day = self.start.checked_add_days(Days::new(u64::from(d)))?;
                let w = match day.weekday() {
                    Weekday::Sat | Weekday::Sun => campaign.weekend_weight,
                    _ => 1.0,
                };
                (w > 0.0).then_some((d, w))
            })
            .collect()
    }

    /// Checks ranges and names; called by [`generate`](crate::generate).
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |msg: String| Err(Error::InvalidConfig(msg));
        if self.advertisers.is_empty() || self.advertisers.len() > 255 {
            return bad("`advertisers` must list 1 to 255 ids".into());
        }
        for a in &self.advertisers {
            if a.is_empty()
                || !a
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            {
                return bad(format!("advertiser id `{a}` must match `[a-z0-9_-]+`"));
            }
        }
        let mut sorted = self.advertisers.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != self.advertisers.len() {
            return bad("`advertisers` has duplicates".into());
        }
        if self.users as u64 >= 1 << 36 {
            return bad("`users` must be below 2^36".into());
        }
        if self.days == 0 || self.days > 3660 {
            return bad("`days` must be 1 to 3660".into());
        }
        if self.batch_rows == 0 {
            return bad("`batch_rows` must be positive".into());
        }
        let probabilities = [
            ("browser_copy_rate", self.browser_copy_rate),
            ("browser_only_rate", self.browser_only_rate),
            ("missing_event_id_rate", self.missing_event_id_rate),
            ("test_event_rate", self.test_event_rate),
            ("opt_out_rate", self.opt_out_rate),
            ("server_id_rates.em", self.server_id_rates.em),
            ("server_id_rates.ph", self.server_id_rates.ph),
            (
                "server_id_rates.external_id",
                self.server_id_rates.external_id,
            ),
            ("browser_em_rate", self.browser_em_rate),
            ("browser_click_id_rate", self.browser_click_id_rate),
            ("treated_id_rate_after", self.treated_id_rate_after),
            (
                "treated_click_id_rate_after",
                self.treated_click_id_rate_after,
            ),
            (
                "treated_platform_match_after",
                self.treated_platform_match_after,
            ),
        ];
        for (name, p) in probabilities {
            if !(0.0..=1.0).contains(&p) {
                return bad(format!("`{name}` must be a probability, got {p}"));
            }
        }
        if self.browser_copy_rate + self.browser_only_rate > 1.0 {
            return bad("`browser_copy_rate + browser_only_rate` exceeds 1".into());
        }
        let positive = [
            ("organic_rate", self.organic_rate, true),
            ("click_delay_mean_hours", self.click_delay_mean_hours, false),
            ("view_delay_mean_hours", self.view_delay_mean_hours, false),
            ("mean_order_value", self.mean_order_value, false),
        ];
        for (name, v, zero_ok) in positive {
            if !v.is_finite() || v < 0.0 || (!zero_ok && v == 0.0) {
                return bad(format!("`{name}` must be positive, got {v}"));
            }
        }
        if self.click_window_days == 0 || self.view_window_days == 0 {
            return bad("`click_window_days` and `view_window_days` must be positive".into());
        }
        let mut names: Vec<&str> = Vec::new();
        let mut campaign_ids: Vec<&str> = Vec::new();
        for c in &self.channels {
            if c.name.is_empty() || names.contains(&c.name.as_str()) {
                return bad(format!("channel name `{}` is empty or repeated", c.name));
            }
            names.push(&c.name);
            for (name, p) in [
                ("reach", c.reach),
                ("touch_id_rates.em", c.touch_id_rates.em),
                ("touch_id_rates.ph", c.touch_id_rates.ph),
                ("touch_id_rates.external_id", c.touch_id_rates.external_id),
                ("click_id_rate", c.click_id_rate),
                ("platform_match_rate", c.platform_match_rate),
            ] {
                if !(0.0..=1.0).contains(&p) {
                    return bad(format!(
                        "channel `{}`: `{name}` must be a probability",
                        c.name
                    ));
                }
            }
            if c.device_affinity
                .iter()
                .any(|(_, m)| !m.is_finite() || *m < 0.0)
                || !c.modeled_uplift.is_finite()
                || c.modeled_uplift < 0.0
            {
                return bad(format!(
                    "channel `{}`: multipliers must be non-negative",
                    c.name
                ));
            }
            for k in &c.campaigns {
                if k.id.is_empty() || campaign_ids.contains(&k.id.as_str()) {
                    return bad(format!("campaign id `{}` is empty or repeated", k.id));
                }
                campaign_ids.push(&k.id);
                if k.adgroups == 0 || k.ads_per_adgroup == 0 {
                    return bad(format!("campaign `{}` needs adgroups and ads", k.id));
                }
                for (name, p) in [
                    ("ctr", k.ctr),
                    ("click_cvr", k.click_cvr),
                    ("view_cvr", k.view_cvr),
                ] {
                    if !(0.0..=1.0).contains(&p) {
                        return bad(format!(
                            "campaign `{}`: `{name}` must be a probability",
                            k.id
                        ));
                    }
                }
                for (name, v) in [
                    ("impressions_per_day", k.impressions_per_day),
                    ("price", k.price),
                    ("weekend_weight", k.weekend_weight),
                    ("active_from", k.active_from),
                    ("active_to", k.active_to),
                ] {
                    if !v.is_finite() || v < 0.0 {
                        return bad(format!(
                            "campaign `{}`: `{name}` must be non-negative",
                            k.id
                        ));
                    }
                }
            }
        }
        for (what, name) in [
            ("treated_channel", &self.treated_channel),
            ("control_channel", &self.control_channel),
        ] {
            if !names.contains(&name.as_str()) {
                return bad(format!("`{what}` `{name}` is not a configured channel"));
            }
        }
        if self.treated_channel == self.control_channel {
            return bad("`treated_channel` and `control_channel` must differ".into());
        }
        Ok(())
    }
}

impl ChannelConfig {
    /// Exposure multiplier for a device.
    pub(crate) fn affinity(&self, os: &str) -> f64 {
        self.device_affinity
            .iter()
            .find(|(d, _)| d == os)
            .map_or(1.0, |(_, m)| *m)
    }
}

#[allow(clippy::too_many_arguments)]
fn campaign(
    id: &str,
    active: (f64, f64),
    weekend_weight: f64,
    states: &[&str],
    impressions_per_day: f64,
    ctr: f64,
    billing: Billing,
    price: f64,
    cvr: (f64, f64),
) -> CampaignConfig {
    CampaignConfig {
        id: id.to_owned(),
        adgroups: 3,
        ads_per_adgroup: 2,
        active_from: active.0,
        active_to: active.1,
        weekend_weight,
        states: states.iter().map(|s| (*s).to_owned()).collect(),
        impressions_per_day,
        ctr,
        billing,
        price,
        click_cvr: cvr.0,
        view_cvr: cvr.1,
    }
}

fn affinity(pairs: &[(&str, f64)]) -> Vec<(String, f64)> {
    pairs.iter().map(|(d, m)| ((*d).to_owned(), *m)).collect()
}

/// The default catalog: TikTok, Meta, Google and Snap with 2–4 campaigns each. Flights
/// are fractions of the window; every channel has campaigns running across the
/// default cutover (day 45 of 61), and the treated (TikTok) and control (Google)
/// channels deliver at a steady level across it (TikTok's back-to-school campaign hands
/// over to a fall launch at 60% of the window), so their true conversions are flat.
#[rustfmt::skip]
pub fn default_channels() -> Vec<ChannelConfig> {
    use Billing::{Cpc, Cpm};
    let ids = |em, ph, external_id| IdRates { em, ph, external_id };
    let social = ids(0.85, 0.85, 0.85);
    // campaign(id, flight as window fractions, weekend weight, states, impressions/day, ctr,
    //          billing, price, (click_cvr, view_cvr))
    vec![
        ChannelConfig {
            name: "tiktok".into(),
            click_id_style: ClickIdStyle::Tiktok,
            reach: 0.55,
            device_affinity: affinity(&[("ios", 1.3), ("android", 1.2), ("windows", 0.4), ("macos", 0.5)]),
            touch_id_rates: social,
            click_id_rate: 0.70,
            platform_match_rate: 0.85,
            modeled_uplift: 1.4,
            campaigns: vec![
                campaign("tt_spark_ads",        (0.0, 1.0),  1.2, &[],                      0.09, 0.03,  Cpm, 320.0, (0.18, 0.007)),
                campaign("tt_retargeting",      (0.1, 1.0),  1.2, &[],                      0.05, 0.045, Cpm, 380.0, (0.25, 0.01)),
                campaign("tt_back_to_school",   (0.0, 0.6),  1.3, &["ca", "tx", "fl"],      0.08, 0.035, Cpm, 300.0, (0.16, 0.006)),
                campaign("tt_fall_launch",      (0.6, 1.0),  1.3, &["ca", "tx", "fl"],      0.08, 0.035, Cpm, 310.0, (0.16, 0.006)),
            ],
        },
        ChannelConfig {
            name: "meta".into(),
            click_id_style: ClickIdStyle::Meta,
            reach: 0.80,
            device_affinity: affinity(&[("ios", 1.1), ("android", 1.1), ("windows", 0.8), ("macos", 0.8)]),
            touch_id_rates: social,
            click_id_rate: 0.75,
            platform_match_rate: 0.90,
            modeled_uplift: 1.45,
            campaigns: vec![
                campaign("fb_prospecting",      (0.0, 1.0),  1.1, &[],                      0.08, 0.025, Cpm, 260.0, (0.16, 0.006)),
                campaign("fb_retargeting",      (0.0, 1.0),  1.1, &[],                      0.04, 0.04,  Cpm, 320.0, (0.25, 0.01)),
                campaign("fb_advantage_plus",   (0.3, 1.0),  1.1, &[],                      0.05, 0.03,  Cpm, 300.0, (0.2, 0.008)),
                campaign("fb_flash_sale",       (0.45, 0.62), 1.5, &["ny", "pa", "il", "oh"], 0.12, 0.04, Cpm, 350.0, (0.22, 0.008)),
            ],
        },
        ChannelConfig {
            name: "google".into(),
            click_id_style: ClickIdStyle::Google,
            reach: 0.70,
            device_affinity: affinity(&[("ios", 0.8), ("android", 0.9), ("windows", 1.4), ("macos", 1.3)]),
            touch_id_rates: social,
            click_id_rate: 0.80,
            platform_match_rate: 0.90,
            modeled_uplift: 1.2,
            campaigns: vec![
                campaign("gg_brand_search",     (0.0, 1.0),  0.8, &[],                      0.03, 0.15,  Cpc, 2.4,   (0.3, 0.0)),
                campaign("gg_nonbrand_search",  (0.0, 1.0),  0.8, &[],                      0.05, 0.07,  Cpc, 3.2,   (0.15, 0.0)),
                campaign("gg_pmax",             (0.0, 1.0),  1.0, &[],                      0.06, 0.02,  Cpm, 120.0, (0.14, 0.003)),
            ],
        },
        ChannelConfig {
            name: "snap".into(),
            click_id_style: ClickIdStyle::Snap,
            reach: 0.30,
            device_affinity: affinity(&[("ios", 1.5), ("android", 1.1), ("windows", 0.2), ("macos", 0.3)]),
            touch_id_rates: ids(0.8, 0.8, 0.6),
            click_id_rate: 0.60,
            platform_match_rate: 0.80,
            modeled_uplift: 1.5,
            campaigns: vec![
                campaign("sc_stories",          (0.0, 0.8),  1.3, &[],                      0.06, 0.02,  Cpm, 210.0, (0.1, 0.003)),
                campaign("sc_dynamic_ads",      (0.5, 1.0),  1.3, &[],                      0.04, 0.03,  Cpm, 280.0, (0.14, 0.005)),
            ],
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_sized() {
        let c = WorldConfig::default();
        c.validate().expect("default config is valid");
        let per_user = c.expected_touchpoints_per_user();
        assert!((10.0..60.0).contains(&per_user), "{per_user}");
    }

    #[test]
    fn validation_rejects_unknown_treated_channel() {
        let c = WorldConfig {
            treated_channel: "myspace".into(),
            ..WorldConfig::default()
        };
        assert!(matches!(c.validate(), Err(Error::InvalidConfig(m)) if m.contains("myspace")));
    }

    #[test]
    fn target_touchpoints_scales_users() {
        let c = WorldConfig::default().with_target_touchpoints(1_000_000);
        let got = c.users as f64 * c.expected_touchpoints_per_user();
        assert!((got - 1e6).abs() < 100.0, "{got}");
    }
}
