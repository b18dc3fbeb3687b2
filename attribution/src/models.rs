//! The heuristic models (SPEC section 6.4) over one conversion's path.
//!
//! A path is the conversion's matched eligible touches ordered by `(touch_time, touch_id)`;
//! "first", "last", "earliest" and "latest" refer to that order. Every function writes one
//! credit per touch of the path (zero for touches a single-touch model skips); the credits of
//! a non-empty path sum to 1.

use crate::options::Model;

/// What a model needs to know of a touch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PathTouch {
    /// `touch_time`, microseconds.
    pub time: i64,
    /// A click (else an impression).
    pub click: bool,
    /// The channel's state index (for `markov`).
    pub channel: usize,
}

/// Credits of each touch of `path` under heuristic `model` (not `markov`), into `out`.
pub fn heuristic_credits(model: Model, path: &[PathTouch], event_time: i64, half_life: i64, out: &mut Vec<f64>) {
    out.clear();
    out.resize(path.len(), 0.0);
    let n = path.len();
    if n == 0 {
        return;
    }
    match model {
        Model::LastTouch => {
            let i = path.iter().rposition(|t| t.click).unwrap_or(n - 1);
            out[i] = 1.0;
        }
        Model::FirstTouch => {
            let i = path.iter().position(|t| t.click).unwrap_or(0);
            out[i] = 1.0;
        }
        Model::Linear => out.fill(1.0 / n as f64),
        Model::PositionBased => match n {
            1 => out[0] = 1.0,
            2 => out.fill(0.5),
            _ => {
                out.fill(0.2 / (n - 2) as f64);
                out[0] = 0.4;
                out[n - 1] = 0.4;
            }
        },
        Model::TimeDecay => {
            let hl = half_life as f64;
            for (o, t) in out.iter_mut().zip(path) {
                *o = (-((event_time - t.time) as f64) / hl).exp2();
            }
            let total: f64 = out.iter().sum();
            out.iter_mut().for_each(|o| *o /= total);
        }
        Model::Markov => unreachable!("markov credits come from crate::markov::path_credits"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::DAY;

    fn t(time: i64, click: bool) -> PathTouch {
        PathTouch { time, click, channel: 0 }
    }

    fn credits(model: Model, path: &[PathTouch]) -> Vec<f64> {
        let mut out = vec![];
        heuristic_credits(model, path, 10 * DAY, 7 * DAY, &mut out);
        assert!((out.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{model}: {out:?}");
        out
    }

    #[test]
    fn single_touch_models_prefer_clicks() {
        let path = [t(1, false), t(2, true), t(3, true), t(4, false)];
        assert_eq!(credits(Model::LastTouch, &path), [0.0, 0.0, 1.0, 0.0]);
        assert_eq!(credits(Model::FirstTouch, &path), [0.0, 1.0, 0.0, 0.0]);
        let views = [t(1, false), t(2, false)];
        assert_eq!(credits(Model::LastTouch, &views), [0.0, 1.0]);
        assert_eq!(credits(Model::FirstTouch, &views), [1.0, 0.0]);
    }

    #[test]
    fn multi_touch_models() {
        let four = [t(1, true), t(2, true), t(3, true), t(4, true)];
        assert_eq!(credits(Model::Linear, &four), [0.25; 4]);
        assert_eq!(credits(Model::PositionBased, &four), [0.4, 0.1, 0.1, 0.4]);
        assert_eq!(credits(Model::PositionBased, &four[..2]), [0.5, 0.5]);
        assert_eq!(credits(Model::PositionBased, &four[..1]), [1.0]);
        // Half-life 7 days: a touch 7 days before the conversion weighs half of one at the conversion.
        let decay = credits(Model::TimeDecay, &[t(3 * DAY, true), t(10 * DAY, true)]);
        assert!((decay[0] - 1.0 / 3.0).abs() < 1e-12 && (decay[1] - 2.0 / 3.0).abs() < 1e-12, "{decay:?}");
    }
}
