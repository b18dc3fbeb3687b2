//! What a run is asked to do: the window, the models, the lookback windows and the limits.

use std::fmt;
use std::str::FromStr;

use chrono::NaiveDate;

use crate::error::{Error, Result};

/// Microseconds in an hour.
pub(crate) const HOUR: i64 = 3_600_000_000;
/// Microseconds in a day.
pub(crate) const DAY: i64 = 24 * HOUR;

/// An attribution model (SPEC section 6.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Model {
    /// The latest click; if no click, the latest impression.
    LastTouch,
    /// The earliest click; if no click, the earliest impression.
    FirstTouch,
    /// Equal credit to every touch.
    Linear,
    /// 40% first, 40% last, 20% over the middle; 2 touches 50/50; 1 touch 100%.
    PositionBased,
    /// Weight `2^(-(event_time - touch_time) / half_life)`, normalized.
    TimeDecay,
    /// First-order Markov removal effect per channel, split over the channel's touches.
    Markov,
}

impl Model {
    /// Every model, in the SPEC's order.
    pub const ALL: [Model; 6] = [Model::LastTouch, Model::FirstTouch, Model::Linear, Model::PositionBased, Model::TimeDecay, Model::Markov];

    /// The name stored in `attributed_conversions.model`.
    pub fn name(self) -> &'static str {
        match self {
            Model::LastTouch => "last_touch",
            Model::FirstTouch => "first_touch",
            Model::Linear => "linear",
            Model::PositionBased => "position_based",
            Model::TimeDecay => "time_decay",
            Model::Markov => "markov",
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Model {
    type Err = String;
    fn from_str(s: &str) -> Result<Model, String> {
        Model::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| {
            format!("unknown model `{s}` (expected one of last_touch, first_touch, linear, position_based, time_decay, markov)")
        })
    }
}

/// Options of one run.
#[derive(Debug, Clone)]
pub struct Options {
    /// First day (UTC) of conversions to attribute; default: the first day with conversions.
    pub from: Option<NaiveDate>,
    /// Last day (UTC, inclusive); default: the last day with conversions.
    pub to: Option<NaiveDate>,
    /// Models to run (deduplicated, in [`Model::ALL`] order).
    pub models: Vec<Model>,
    /// Click lookback, microseconds (default 7 days).
    pub click_window: i64,
    /// Impression lookback, microseconds (default 1 day).
    pub view_window: i64,
    /// Time-decay half-life, microseconds (default 7 days).
    pub half_life: i64,
    /// Memory the run may use, bytes (`None`: unbounded).
    pub memory_limit: Option<usize>,
    /// Parallel partitions of the scans (default: the number of cores).
    pub target_partitions: usize,
    /// Run the probabilistic cohort step for unmatched conversions (SPEC 6.5; default on).
    pub probabilistic: bool,
    /// Share of matched conversions held out to validate the probabilistic model (0.10).
    pub holdout: f64,
    /// Cohort dimensions besides the date: `geo_state`, `device_os` (both by default).
    pub cohort_geo: bool,
    /// See `cohort_geo`.
    pub cohort_os: bool,
    /// Seed of the holdout choice and the bootstrap.
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            from: None,
            to: None,
            models: Model::ALL.to_vec(),
            click_window: 7 * DAY,
            view_window: DAY,
            half_life: 7 * DAY,
            memory_limit: None,
            target_partitions: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            probabilistic: true,
            holdout: 0.10,
            cohort_geo: true,
            cohort_os: true,
            seed: 6,
        }
    }
}

impl Options {
    pub(crate) fn validate(&self) -> Result<()> {
        if let (Some(from), Some(to)) = (self.from, self.to)
            && to < from
        {
            return Err(Error::InvalidOptions(format!("`--to` {to} is before `--from` {from}")));
        }
        if self.models.is_empty() {
            return Err(Error::InvalidOptions("no model selected".into()));
        }
        if self.click_window < 0 || self.view_window < 0 {
            return Err(Error::InvalidOptions("windows must not be negative".into()));
        }
        if !(0.0..0.5).contains(&self.holdout) {
            return Err(Error::InvalidOptions(format!("`--holdout` must be in [0, 0.5), got {}", self.holdout)));
        }
        if self.half_life <= 0 {
            return Err(Error::InvalidOptions("`--half-life` must be positive".into()));
        }
        Ok(())
    }

    /// The longest lookback: how far before a conversion a touch can be eligible.
    pub(crate) fn max_window(&self) -> i64 {
        self.click_window.max(self.view_window)
    }
}

/// Parses a cohort list such as `date,geo_state,device_os` into (by geo, by device).
pub fn parse_cohort(s: &str) -> Result<(bool, bool), String> {
    let (mut geo, mut os) = (false, false);
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part {
            "date" => {}
            "geo_state" => geo = true,
            "device_os" => os = true,
            other => return Err(format!("unknown cohort dimension `{other}` (expected date, geo_state, device_os)")),
        }
    }
    Ok((geo, os))
}

/// Parses a duration such as `7d`, `36h`, `90m`, `30s` into microseconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("invalid duration `{s}` (use e.g. 7d, 36h, 90m)"))?;
    let unit_micros = match unit {
        "d" | "day" | "days" => DAY,
        "h" | "hour" | "hours" => HOUR,
        "m" | "min" | "minutes" => 60_000_000,
        "s" | "sec" | "seconds" => 1_000_000,
        _ => return Err(format!("invalid duration `{s}`: unit must be d, h, m or s")),
    };
    Ok((n * unit_micros as f64).round() as i64)
}

/// Parses a byte size such as `4G`, `512M`, `1.5GiB` (binary units).
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("invalid size `{s}` (use e.g. 4G, 512M)"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0_f64.powi(4),
        _ => return Err(format!("invalid size `{s}`: unit must be K, M, G or T")),
    };
    Ok((n * mult) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("7d").unwrap(), 7 * DAY);
        assert_eq!(parse_duration("36h").unwrap(), 36 * HOUR);
        assert_eq!(parse_duration("1.5h").unwrap(), 90 * 60_000_000);
        assert!(parse_duration("7w").is_err());
        assert_eq!(parse_bytes("4G").unwrap(), 4 << 30);
        assert_eq!(parse_bytes("512MiB").unwrap(), 512 << 20);
        assert!(parse_bytes("lots").is_err());
        assert_eq!("position_based".parse::<Model>().unwrap(), Model::PositionBased);
        assert!("u_shaped".parse::<Model>().is_err());
    }
}
