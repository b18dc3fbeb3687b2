//! The causal model of one user: who they are, which ads reach them, which of those ads
//! make them convert (the ground truth), how each conversion is reported (server copy,
//! browser copy, identifiers) and what the separation takes away. Pure computation on a
//! per-user RNG, so users are independent and can be generated in any chunking; the
//! output lands in a reusable [`UserWorld`] scratch buffer.

use rand::{Rng, distr::Distribution};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Gamma, LogNormal, Poisson};

use crate::catalog::{Catalog, DAY, HOUR, SECOND};
use crate::config::STATES;
use crate::ids::{self, Person, SALT_CLICK, SALT_EVENT, SALT_TOUCH, SEQ_BITS};
use crate::{Billing, Error, WorldConfig};

/// Identifier bits.
pub(crate) const EM: u8 = 1;
pub(crate) const PH: u8 = 2;
pub(crate) const EXT: u8 = 4;

/// One user's identity and traits.
pub(crate) struct Profile {
    pub(crate) user: u64,
    pub(crate) state: usize,
    pub(crate) device: usize,
    /// The three identifiers as emitted: plaintext or SHA-256 hex, `[em, ph, external_id]`.
    pub(crate) ids: [String; 3],
}

/// An impression or click.
pub(crate) struct Touch {
    pub(crate) time: i64,
    pub(crate) campaign: u16,
    pub(crate) adgroup: u16,
    pub(crate) ad: u16,
    pub(crate) click: bool,
    /// An impression followed by its own click (it cannot cause a conversion itself).
    pub(crate) led_to_click: bool,
    pub(crate) cost: f64,
    pub(crate) click_id: Option<String>,
    /// Identifier bits the touch carries.
    pub(crate) ids: u8,
    /// Identifier bits it would carry without the separation.
    pub(crate) ids_cf: u8,
    pub(crate) touch_id: String,
}

/// One distinct conversion and how it was reported.
pub(crate) struct Conversion {
    /// True conversion time (the server copy's `event_time`).
    pub(crate) time: i64,
    /// Index into `UserWorld::touches` of the causal touch; `None` = organic or test.
    pub(crate) cause: Option<usize>,
    pub(crate) is_test: bool,
    pub(crate) value: f64,
    pub(crate) in_server: bool,
    pub(crate) in_browser: bool,
    pub(crate) has_event_id: bool,
    pub(crate) browser_time: i64,
    /// Identifier bits on the server copy.
    pub(crate) server_ids: u8,
    /// The causal click's id reached the site (server copy carries it).
    pub(crate) click_captured: bool,
    pub(crate) browser_em: bool,
    pub(crate) browser_click: bool,
    pub(crate) opt_out: bool,
    pub(crate) ids_lost: bool,
    pub(crate) event_id: String,
    pub(crate) order_id: String,
}

/// A platform's claim in its own reporting: campaign, day index, value.
pub(crate) struct Claim {
    pub(crate) campaign: usize,
    pub(crate) day: usize,
    pub(crate) value: f64,
}

/// Scratch output of one simulated user (reused across users).
pub(crate) struct UserWorld {
    pub(crate) profile: Profile,
    pub(crate) touches: Vec<Touch>,
    pub(crate) conversions: Vec<Conversion>,
    pub(crate) claims: Vec<Claim>,
}

impl UserWorld {
    pub(crate) fn new() -> Self {
        UserWorld {
            profile: Profile {
                user: 0,
                state: 0,
                device: 0,
                ids: Default::default(),
            },
            touches: Vec::new(),
            conversions: Vec::new(),
            claims: Vec::new(),
        }
    }
}

/// Simulates users of one advertiser.
pub(crate) struct Simulator<'a> {
    config: &'a WorldConfig,
    catalog: &'a Catalog,
    advertiser: usize,
    advertiser_id: &'a str,
    activity: Gamma<f64>,
    order_value: LogNormal<f64>,
    click_window: i64,
    view_window: i64,
}

fn poisson(rng: &mut ChaCha8Rng, lambda: f64) -> u64 {
    if lambda <= 0.0 || !lambda.is_finite() {
        return 0;
    }
    match Poisson::new(lambda) {
        Ok(p) => p.sample(rng) as u64,
        Err(_) => 0,
    }
}

/// Exponential with `mean`, truncated to `[0, cap)` (inverse CDF).
fn truncated_exp(rng: &mut ChaCha8Rng, mean: f64, cap: f64) -> f64 {
    let u: f64 = rng.random();
    let x = -mean * (1.0 - u * (1.0 - (-cap / mean).exp())).ln();
    x.clamp(0.0, cap)
}

fn round_to(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

impl<'a> Simulator<'a> {
    pub(crate) fn new(
        config: &'a WorldConfig,
        catalog: &'a Catalog,
        advertiser: usize,
    ) -> Result<Self, Error> {
        let advertiser_id = config
            .advertisers
            .get(advertiser)
            .map_or("", String::as_str);
        let sigma: f64 = 0.6;
        let mu = config.mean_order_value.ln() - sigma * sigma / 2.0;
        Ok(Simulator {
            config,
            catalog,
            advertiser,
            advertiser_id,
            activity: Gamma::new(2.0, 0.5).map_err(|e| Error::Internal(e.to_string()))?,
            order_value: LogNormal::new(mu, sigma).map_err(|e| Error::Internal(e.to_string()))?,
            click_window: i64::from(config.click_window_days) * DAY,
            view_window: i64::from(config.view_window_days) * DAY,
        })
    }

    /// Simulates user `user` into `out` (cleared first).
    pub(crate) fn simulate(
        &self,
        user: u64,
        rng: &mut ChaCha8Rng,
        out: &mut UserWorld,
    ) -> Result<(), Error> {
        out.touches.clear();
        out.conversions.clear();
        out.claims.clear();
        let (activity, reach, organic) = self.profile(user, rng, &mut out.profile);
        self.touches(user, rng, activity, &reach, out)?;
        self.conversions(user, rng, organic, out)?;
        self.report(rng, out);
        Ok(())
    }

    /// Draws the user's traits; returns (activity, per-channel exposure, organic propensity).
    fn profile(&self, user: u64, rng: &mut ChaCha8Rng, p: &mut Profile) -> (f64, Vec<f64>, f64) {
        let cat = self.catalog;
        p.user = user;
        p.state = cat.states.sample(rng);
        p.device = cat.devices.sample(rng);
        let activity = self.activity.sample(rng);
        let reach = cat
            .channels
            .iter()
            .map(|c| {
                let reached = rng.random::<f64>() < c.reach;
                if reached { c.affinity[p.device] } else { 0.0 }
            })
            .collect();
        let organic = self.activity.sample(rng);
        let tag = [rng.random::<u8>(), rng.random::<u8>()];
        let area = rng.random_range(201..990u16);
        let person = Person::new(user, tag, area);
        p.ids = if self.config.plaintext_identifiers {
            [person.email, person.phone, person.external_id]
        } else {
            [
                ids::sha256_hex(&person.email),
                ids::sha256_hex(&person.phone),
                ids::sha256_hex(&person.external_id),
            ]
        };
        (activity, reach, organic)
    }

    /// Impressions and clicks, sorted by time, with identifiers.
    fn touches(
        &self,
        user: u64,
        rng: &mut ChaCha8Rng,
        activity: f64,
        reach: &[f64],
        out: &mut UserWorld,
    ) -> Result<(), Error> {
        let cat = self.catalog;
        let state = out.profile.state;
        let mut click_seq = 0u64;
        for (ki, k) in cat.campaigns.iter().enumerate() {
            let exposure = reach[k.channel];
            let Some(sampler) = &k.day_sampler else {
                continue;
            };
            if exposure <= 0.0 || !k.targeted[state] {
                continue;
            }
            let n = poisson(rng, k.impressions_per_day * k.weight * activity * exposure);
            for _ in 0..n {
                let day = i64::from(k.days[sampler.sample(rng)]);
                let hour = cat.hours.sample(rng) as i64;
                let t = cat.start_us + day * DAY + hour * HOUR + rng.random_range(0..HOUR);
                let adgroup = rng.random_range(0..k.adgroup_ids.len()) as u16;
                let ad = rng.random_range(0..k.ad_ids[adgroup as usize].len()) as u16;
                let jitter: f64 = rng.random_range(0.7..1.3);
                let clicked = rng.random::<f64>() < k.ctr;
                let click_delay =
                    SECOND + (rng.random::<f64>().max(1e-12).ln() * -20.0 * SECOND as f64) as i64;
                let click_jitter: f64 = rng.random_range(0.6..1.4);
                let noise: u128 = rng.random();
                if t >= cat.end_us {
                    continue;
                }
                let imp_cost = match k.billing {
                    Billing::Cpm => round_to(k.price / 1000.0 * jitter, 6),
                    Billing::Cpc => 0.0,
                };
                let tc = t + click_delay;
                let click = clicked && tc < cat.end_us;
                out.touches.push(Touch {
                    time: t,
                    campaign: ki as u16,
                    adgroup,
                    ad,
                    click: false,
                    led_to_click: click,
                    cost: imp_cost,
                    click_id: None,
                    ids: 0,
                    ids_cf: 0,
                    touch_id: String::new(),
                });
                if click {
                    let code = ids::unique_code(SALT_CLICK, self.advertiser, user, click_seq);
                    click_seq += 1;
                    let click_cost = match k.billing {
                        Billing::Cpm => 0.0,
                        Billing::Cpc => round_to(k.price * click_jitter, 6),
                    };
                    let style = cat.channels[k.channel].style;
                    out.touches.push(Touch {
                        time: tc,
                        campaign: ki as u16,
                        adgroup,
                        ad,
                        click: true,
                        led_to_click: false,
                        cost: click_cost,
                        click_id: Some(ids::click_id(style, code, noise, tc / 1000)),
                        ids: 0,
                        ids_cf: 0,
                        touch_id: String::new(),
                    });
                }
            }
        }
        if out.touches.len() as u64 >= 1 << SEQ_BITS {
            return Err(Error::Internal(format!(
                "user {user} has more than 2^20 touches"
            )));
        }
        // Stable: ties keep generation order, so the result is deterministic.
        out.touches.sort_by_key(|t| t.time);
        for (i, touch) in out.touches.iter_mut().enumerate() {
            let code = ids::unique_code(SALT_TOUCH, self.advertiser, user, i as u64);
            touch.touch_id = format!("tp_{code:016x}");
            let channel = &cat.channels[cat.campaigns[usize::from(touch.campaign)].channel];
            let pre = channel.touch_id_rates;
            let separated = channel.treated && touch.time >= cat.cutover_us;
            for (bit, rate) in [(EM, pre.em), (PH, pre.ph), (EXT, pre.external_id)] {
                let u: f64 = rng.random();
                let actual = if separated {
                    self.config.treated_id_rate_after
                } else {
                    rate
                };
                if u < rate {
                    touch.ids_cf |= bit;
                }
                if u < actual {
                    touch.ids |= bit;
                }
            }
        }
        Ok(())
    }

    /// Causal, organic and test conversions, sorted by time.
    fn conversions(
        &self,
        user: u64,
        rng: &mut ChaCha8Rng,
        organic: f64,
        out: &mut UserWorld,
    ) -> Result<(), Error> {
        let cat = self.catalog;
        let cfg = self.config;
        let mut found: Vec<(i64, Option<usize>, bool)> = Vec::new();
        for (i, touch) in out.touches.iter().enumerate() {
            let k = &cat.campaigns[usize::from(touch.campaign)];
            let (p, window, mean_hours) = if touch.click {
                (k.click_cvr, self.click_window, cfg.click_delay_mean_hours)
            } else if !touch.led_to_click {
                (k.view_cvr, self.view_window, cfg.view_delay_mean_hours)
            } else {
                continue;
            };
            if p <= 0.0 || rng.random::<f64>() >= p {
                continue;
            }
            let mut cap = window;
            if let Some(next) = out.touches.get(i + 1) {
                cap = cap.min(next.time - touch.time - 1);
            }
            let delay = truncated_exp(rng, mean_hours * HOUR as f64, cap.max(0) as f64) as i64;
            let t = touch.time + delay.max(1);
            if cap < 1 || t >= cat.end_us {
                continue;
            }
            found.push((t, Some(i), false));
        }
        let span = cat.end_us - cat.start_us;
        let organic_n = poisson(rng, cfg.organic_rate * f64::from(cat.days) * organic);
        for _ in 0..organic_n {
            let t = cat.start_us + rng.random_range(0..span.max(1));
            found.push((t, None, false));
        }
        if rng.random::<f64>() < cfg.test_event_rate {
            let t = cat.start_us + rng.random_range(0..span.max(1));
            found.push((t, None, true));
        }
        found.retain(|(t, _, _)| *t < cat.end_us);
        if found.len() as u64 >= 1 << SEQ_BITS {
            return Err(Error::Internal(format!(
                "user {user} has more than 2^20 conversions"
            )));
        }
        found.sort_by_key(|(t, _, _)| *t);

        for (seq, (time, cause, is_test)) in found.into_iter().enumerate() {
            let value = round_to(self.order_value.sample(rng), 2).max(1.0);
            let copies: f64 = rng.random();
            let (in_server, in_browser) = if copies < cfg.browser_copy_rate {
                (true, true)
            } else if copies < cfg.browser_copy_rate + cfg.browser_only_rate {
                (false, true)
            } else {
                (true, false)
            };
            let no_event_id = rng.random::<f64>() < cfg.missing_event_id_rate;
            let has_event_id = !(in_server && !in_browser && no_event_id);
            let mut server_ids = 0;
            let rates = cfg.server_id_rates;
            for (bit, rate) in [(EM, rates.em), (PH, rates.ph), (EXT, rates.external_id)] {
                if rng.random::<f64>() < rate {
                    server_ids |= bit;
                }
            }
            let u_click: f64 = rng.random();
            let u_browser_em: f64 = rng.random();
            let u_browser_click: f64 = rng.random();
            let offset =
                SECOND / 2 + (rng.random::<f64>().max(1e-12).ln() * -40.0 * SECOND as f64) as i64;
            let opt_out = rng.random::<f64>() < cfg.opt_out_rate;

            // Did the causal click's id reach the site? With and without the separation.
            let (captured, captured_cf) = match cause {
                Some(i) if out.touches[i].click => {
                    let touch = &out.touches[i];
                    let channel = &cat.channels[cat.campaigns[usize::from(touch.campaign)].channel];
                    let pre = channel.click_id_rate;
                    let separated = channel.treated && touch.time >= cat.cutover_us;
                    let actual = if separated {
                        cfg.treated_click_id_rate_after
                    } else {
                        pre
                    };
                    (u_click < actual, u_click < pre)
                }
                _ => (false, false),
            };
            let browser_click = captured && u_browser_click < cfg.browser_click_id_rate;
            let browser_click_cf = captured_cf && u_browser_click < cfg.browser_click_id_rate;
            let browser_em = u_browser_em < cfg.browser_em_rate;
            let browser_time = if in_server {
                (time + offset).min(cat.end_us - 1).max(time)
            } else {
                time
            };

            // What the deduplicated conversion carries (server fields, gaps from the browser).
            let mut merged = 0u8;
            if in_server {
                merged |= server_ids;
            }
            if in_browser && browser_em {
                merged |= EM;
            }
            let click = (in_server && captured) || (in_browser && browser_click);
            let click_cf = (in_server && captured_cf) || (in_browser && browser_click_cf);
            let matchable =
                self.matchable(&out.touches, time, merged, cause.filter(|_| click), false);
            let matchable_cf =
                self.matchable(&out.touches, time, merged, cause.filter(|_| click_cf), true);

            let event_code = ids::unique_code(SALT_EVENT, self.advertiser, user, seq as u64);
            out.conversions.push(Conversion {
                time,
                cause,
                is_test,
                value,
                in_server,
                in_browser,
                has_event_id,
                browser_time,
                server_ids,
                click_captured: captured,
                browser_em,
                browser_click,
                opt_out,
                ids_lost: matchable_cf && !matchable,
                event_id: format!("ev_{event_code:016x}"),
                order_id: format!("ord-{}-{user:07}-{seq:02}", self.advertiser_id),
            });
        }
        Ok(())
    }

    /// Would deterministic matching (SPEC §6.2–6.3, default windows) find a touch for a
    /// conversion at `time` carrying `ids` (and the click id of touch `click_of`)?
    fn matchable(
        &self,
        touches: &[Touch],
        time: i64,
        ids: u8,
        click_of: Option<usize>,
        cf: bool,
    ) -> bool {
        let end = touches.partition_point(|t| t.time <= time);
        for j in (0..end).rev() {
            let t = &touches[j];
            let age = time - t.time;
            if age > self.click_window.max(self.view_window) {
                break;
            }
            let window = if t.click {
                self.click_window
            } else {
                self.view_window
            };
            if age > window {
                continue;
            }
            let touch_ids = if cf { t.ids_cf } else { t.ids };
            if click_of == Some(j) || touch_ids & ids != 0 {
                return true;
            }
        }
        false
    }

    /// The platforms' own view (baseline): each platform claims a pixel conversion for its
    /// latest click within the click window, else its latest impression within the view
    /// window, when it recognizes the user — several platforms may claim the same one.
    fn report(&self, rng: &mut ChaCha8Rng, out: &mut UserWorld) {
        let cat = self.catalog;
        for conv in &out.conversions {
            if !conv.in_browser || conv.is_test {
                continue;
            }
            let bt = conv.browser_time;
            let end = out.touches.partition_point(|t| t.time <= bt);
            for (ci, channel) in cat.channels.iter().enumerate() {
                let mut click = None;
                let mut view = None;
                for t in out.touches[..end].iter().rev() {
                    let age = bt - t.time;
                    if age > self.click_window.max(self.view_window) {
                        break;
                    }
                    let k = usize::from(t.campaign);
                    if cat.campaigns[k].channel != ci {
                        continue;
                    }
                    if t.click && age <= self.click_window {
                        click = Some(k);
                        break;
                    }
                    if !t.click && view.is_none() && age <= self.view_window {
                        view = Some(k);
                    }
                }
                let Some(campaign) = click.or(view) else {
                    continue;
                };
                let rate = if channel.treated && bt >= cat.cutover_us {
                    self.config.treated_platform_match_after
                } else {
                    channel.platform_match_rate
                };
                if rng.random::<f64>() < rate {
                    out.claims.push(Claim {
                        campaign,
                        day: cat.day_of(bt),
                        value: conv.value,
                    });
                }
            }
        }
    }
}

/// The state index's name (for cohort columns).
pub(crate) fn state_name(i: usize) -> &'static str {
    STATES[i].0
}
