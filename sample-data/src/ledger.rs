//! Per-advertiser daily ledgers: spend (summed from the touchpoints as they are
//! generated, so `spend` always agrees with `touchpoints`) and the platforms' claimed
//! conversions (turned into the noisy, over-claiming `baseline`). Campaigns × days
//! cells, small whatever the number of users.

use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::Error;
use crate::catalog::Catalog;
use crate::sim::UserWorld;
use crate::tables::DailyRows;

#[derive(Clone, Copy, Default)]
struct SpendCell {
    spend: f64,
    impressions: u64,
    clicks: u64,
}

#[derive(Clone, Copy, Default)]
struct ClaimCell {
    conversions: f64,
    value: f64,
}

pub(crate) struct Ledger {
    days: usize,
    spend: Vec<SpendCell>,
    claims: Vec<ClaimCell>,
}

impl Ledger {
    pub(crate) fn new(cat: &Catalog) -> Self {
        let days = cat.days as usize;
        let cells = days * cat.campaigns.len();
        Ledger {
            days,
            spend: vec![SpendCell::default(); cells],
            claims: vec![ClaimCell::default(); cells],
        }
    }

    pub(crate) fn add_user(&mut self, cat: &Catalog, world: &UserWorld) {
        for t in &world.touches {
            let cell = &mut self.spend[usize::from(t.campaign) * self.days + cat.day_of(t.time)];
            cell.spend += t.cost;
            if t.click {
                cell.clicks += 1;
            } else {
                cell.impressions += 1;
            }
        }
        for c in &world.claims {
            let cell = &mut self.claims[c.campaign * self.days + c.day];
            cell.conversions += 1.0;
            cell.value += c.value;
        }
    }

    /// Writes spend rows (one per campaign per active day, plus any day with delivery)
    /// and baseline rows (the same days plus any day with claims). Baseline numbers are
    /// claims × the platform's modeled uplift × log-normal noise (σ = 0.15), 2 decimals.
    pub(crate) fn emit(
        &self,
        advertiser: &str,
        cat: &Catalog,
        rng: &mut ChaCha8Rng,
        out: &mut DailyRows,
    ) -> Result<(), Error> {
        let noise = Normal::new(0.0, 0.15).map_err(|e| Error::Internal(e.to_string()))?;
        for (ki, k) in cat.campaigns.iter().enumerate() {
            let channel = &cat.channels[k.channel];
            for day in 0..self.days {
                let s = self.spend[ki * self.days + day];
                let c = self.claims[ki * self.days + day];
                let delivered = k.active[day] || s.impressions > 0 || s.clicks > 0;
                let date = cat.date(day);
                if delivered {
                    let spend = (s.spend * 1e6).round() / 1e6;
                    out.push_spend(
                        advertiser,
                        &channel.name,
                        &k.id,
                        date,
                        spend,
                        s.impressions,
                        s.clicks,
                    );
                }
                let z: f64 = noise.sample(rng);
                let factor = channel.modeled_uplift * z.exp();
                if delivered || c.conversions > 0.0 {
                    let conversions = (c.conversions * factor * 100.0).round() / 100.0;
                    let value = (c.value * factor * 100.0).round() / 100.0;
                    out.push_baseline(advertiser, &channel.name, &k.id, date, conversions, value);
                }
            }
        }
        Ok(())
    }
}
