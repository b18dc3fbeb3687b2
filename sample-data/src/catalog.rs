//! The runtime form of a [`WorldConfig`]: the window as microsecond instants, channels
//! and campaigns flattened into indexable arrays with their precomputed day samplers,
//! targeting masks and adgroup/ad ids. Built once per `generate` call and shared by the
//! user simulation and the ledgers.

use chrono::{NaiveDate, NaiveTime};
use rand::distr::weighted::WeightedIndex;

use crate::config::{DEVICES, STATES};
use crate::{Billing, ClickIdStyle, Error, IdRates, WorldConfig};

/// Microseconds per second / hour / day.
pub(crate) const SECOND: i64 = 1_000_000;
pub(crate) const HOUR: i64 = 3_600 * SECOND;
pub(crate) const DAY: i64 = 24 * HOUR;

/// Relative activity per UTC hour: a US audience, busiest in the US evening.
const DIURNAL: [f64; 24] = [
    9.0, 8.0, 7.0, 6.0, 4.0, 3.0, 2.0, 1.5, 1.2, 1.0, 1.2, 2.0, 3.0, 4.0, 5.0, 5.5, 6.0, 6.0, 6.5,
    7.0, 7.0, 7.5, 8.0, 9.0,
];

pub(crate) struct ChannelRt {
    pub(crate) name: String,
    pub(crate) style: ClickIdStyle,
    pub(crate) reach: f64,
    /// Exposure multiplier per device index (see `DEVICES`).
    pub(crate) affinity: [f64; DEVICES.len()],
    pub(crate) touch_id_rates: IdRates,
    pub(crate) click_id_rate: f64,
    pub(crate) platform_match_rate: f64,
    pub(crate) modeled_uplift: f64,
    pub(crate) treated: bool,
}

pub(crate) struct CampaignRt {
    pub(crate) channel: usize,
    pub(crate) id: String,
    pub(crate) adgroup_ids: Vec<String>,
    /// `ad_ids[adgroup][ad]`.
    pub(crate) ad_ids: Vec<Vec<String>>,
    /// Active day indexes and a sampler over them (`None`: never active in the window).
    pub(crate) days: Vec<u32>,
    pub(crate) day_sampler: Option<WeightedIndex<f64>>,
    /// Σ of active days' weights.
    pub(crate) weight: f64,
    /// `active[day]`.
    pub(crate) active: Vec<bool>,
    /// `targeted[state index]`.
    pub(crate) targeted: [bool; STATES.len()],
    pub(crate) impressions_per_day: f64,
    pub(crate) ctr: f64,
    pub(crate) billing: Billing,
    pub(crate) price: f64,
    pub(crate) click_cvr: f64,
    pub(crate) view_cvr: f64,
}

pub(crate) struct Catalog {
    pub(crate) channels: Vec<ChannelRt>,
    pub(crate) campaigns: Vec<CampaignRt>,
    pub(crate) start: NaiveDate,
    pub(crate) days: u32,
    pub(crate) start_us: i64,
    /// Exclusive end of the window (the earlier of its last midnight and `end_at`).
    pub(crate) end_us: i64,
    pub(crate) cutover_us: i64,
    pub(crate) hours: WeightedIndex<f64>,
    pub(crate) states: WeightedIndex<f64>,
    pub(crate) devices: WeightedIndex<f64>,
}

pub(crate) fn midnight_us(day: NaiveDate) -> i64 {
    day.and_time(NaiveTime::MIN).and_utc().timestamp_micros()
}

fn weighted(
    weights: impl IntoIterator<Item = f64>,
    what: &str,
) -> Result<WeightedIndex<f64>, Error> {
    WeightedIndex::new(weights).map_err(|e| Error::Internal(format!("weights of {what}: {e}")))
}

impl Catalog {
    pub(crate) fn new(config: &WorldConfig) -> Result<Self, Error> {
        let start_us = midnight_us(config.start);
        let mut end_us = start_us + i64::from(config.days) * DAY;
        if let Some(end_at) = config.end_at {
            end_us = end_us.min(end_at.timestamp_micros());
        }
        let channels = config
            .channels
            .iter()
            .map(|c| ChannelRt {
                name: c.name.clone(),
                style: c.click_id_style,
                reach: c.reach,
                affinity: std::array::from_fn(|i| c.affinity(DEVICES[i].0)),
                touch_id_rates: c.touch_id_rates,
                click_id_rate: c.click_id_rate,
                platform_match_rate: c.platform_match_rate,
                modeled_uplift: c.modeled_uplift,
                treated: c.name == config.treated_channel,
            })
            .collect();
        let mut campaigns = Vec::new();
        for (ci, channel) in config.channels.iter().enumerate() {
            for k in &channel.campaigns {
                let active_days = config.active_days(k);
                let days: Vec<u32> = active_days.iter().map(|(d, _)| *d).collect();
                let weight = active_days.iter().map(|(_, w)| w).sum();
                let day_sampler = if days.is_empty() {
                    None
                } else {
                    Some(weighted(active_days.iter().map(|(_, w)| *w), &k.id)?)
                };
                let mut active = vec![false; config.days as usize];
                for d in &days {
                    active[*d as usize] = true;
                }
                let adgroup_ids: Vec<String> = (1..=k.adgroups)
                    .map(|g| format!("{}_ag{g}", k.id))
                    .collect();
                let ad_ids = adgroup_ids
                    .iter()
                    .map(|g| {
                        (1..=k.ads_per_adgroup)
                            .map(|a| format!("{g}_ad{a}"))
                            .collect()
                    })
                    .collect();
                campaigns.push(CampaignRt {
                    channel: ci,
                    id: k.id.clone(),
                    adgroup_ids,
                    ad_ids,
                    days,
                    day_sampler,
                    weight,
                    active,
                    targeted: std::array::from_fn(|s| {
                        k.states.is_empty() || k.states.iter().any(|t| t == STATES[s].0)
                    }),
                    impressions_per_day: k.impressions_per_day,
                    ctr: k.ctr,
                    billing: k.billing,
                    price: k.price,
                    click_cvr: k.click_cvr,
                    view_cvr: k.view_cvr,
                });
            }
        }
        if campaigns.len() > usize::from(u16::MAX) {
            return Err(Error::InvalidConfig("at most 65,535 campaigns".into()));
        }
        Ok(Catalog {
            channels,
            campaigns,
            start: config.start,
            days: config.days,
            start_us,
            end_us,
            cutover_us: midnight_us(config.cutover),
            hours: weighted(DIURNAL, "hours")?,
            states: weighted(STATES.iter().map(|(_, w)| *w), "states")?,
            devices: weighted(DEVICES.iter().map(|(_, w)| *w), "devices")?,
        })
    }

    /// Day index (0-based) of an instant inside the window.
    pub(crate) fn day_of(&self, t: i64) -> usize {
        ((t - self.start_us).div_euclid(DAY)).clamp(0, i64::from(self.days) - 1) as usize
    }

    /// The date of a day index.
    pub(crate) fn date(&self, day: usize) -> NaiveDate {
        self.start
            .checked_add_days(chrono::Days::new(day as u64))
            .unwrap_or(self.start)
    }
}
