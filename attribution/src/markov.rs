//! The first-order Markov model (SPEC section 6.4, `markov`), computed exactly.
//!
//! States are the advertiser's channels plus `START`, `CONV` and `NULL`. Each converting path
//! adds `START → c₁ → … → cₖ → CONV` to the transition counts, each non-converting path
//! `START → c₁ → … → cₖ → NULL`. With `P` the row-normalized counts, the conversion
//! probability is the probability of absorption in `CONV` from `START`, solved as the linear
//! system `(I − Q) x = r` (Gaussian elimination with partial pivoting, no simulation). The
//! removal effect of channel `c` is `1 − P₋c(CONV) / P(CONV)`, where `P₋c` sends every
//! transition into `c` to `NULL`. Self-transitions (`c → c`) are kept; they do not change any
//! absorption probability. Counts are integers, so the result does not depend on the order
//! paths were added in: the same input gives the same credits.

/// Transition counts of one advertiser over `channels` channel states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transitions {
    channels: usize,
    counts: Vec<u64>,
}

impl Transitions {
    /// Empty counts over channel states `0..channels`.
    pub fn new(channels: usize) -> Transitions {
        let states = channels + 3;
        Transitions { channels, counts: vec![0; states * states] }
    }

    fn start(&self) -> usize {
        self.channels
    }
    fn conv(&self) -> usize {
        self.channels + 1
    }
    fn null(&self) -> usize {
        self.channels + 2
    }
    fn states(&self) -> usize {
        self.channels + 3
    }

    fn add(&mut self, from: usize, to: usize) {
        let s = self.states();
        self.counts[from * s + to] += 1;
    }

    /// Adds one path (its channels in order); `converted` ends it in `CONV`, else `NULL`.
    pub fn add_path(&mut self, path: impl IntoIterator<Item = usize>, converted: bool) {
        let mut prev = self.start();
        let mut any = false;
        for c in path {
            self.add(prev, c);
            prev = c;
            any = true;
        }
        if any {
            let end = if converted { self.conv() } else { self.null() };
            self.add(prev, end);
        }
    }

    /// Adds `other`'s counts (same channel count).
    pub fn merge(&mut self, other: &Transitions) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// Grows to `channels` channel states, keeping the counts.
    pub fn widen(&self, channels: usize) -> Transitions {
        let mut out = Transitions::new(channels.max(self.channels));
        let map = |s: usize| if s < self.channels { s } else { out.channels + (s - self.channels) };
        let old = self.states();
        for from in 0..old {
            for to in 0..old {
                let n = self.counts[from * old + to];
                if n > 0 {
                    let s = out.states();
                    out.counts[map(from) * s + map(to)] = n;
                }
            }
        }
        out
    }

    /// Probability of reaching `CONV` from `START`, with channel `removed` (if any) sending
    /// all its traffic to `NULL`.
    pub fn conversion_probability(&self, removed: Option<usize>) -> f64 {
        let s = self.states();
        // Transient states: START and every channel with outgoing transitions, except the removed one.
        let transient: Vec<usize> = (0..self.channels)
            .chain(std::iter::once(self.start()))
            .filter(|&i| Some(i) != removed && (0..s).any(|j| self.counts[i * s + j] > 0))
            .collect();
        let Some(start_pos) = transient.iter().position(|&i| i == self.start()) else { return 0.0 };
        let m = transient.len();
        let mut pos = vec![usize::MAX; s];
        for (k, &i) in transient.iter().enumerate() {
            pos[i] = k;
        }
        // Row k of the augmented system (I − Q | r).
        let mut a = vec![0.0f64; m * (m + 1)];
        for (k, &i) in transient.iter().enumerate() {
            let total: u64 = (0..s).map(|j| self.counts[i * s + j]).sum();
            let total = total as f64;
            a[k * (m + 1) + k] = 1.0;
            for j in 0..s {
                let n = self.counts[i * s + j];
                if n == 0 {
                    continue;
                }
                let p = n as f64 / total;
                if j == self.conv() {
                    a[k * (m + 1) + m] += p;
                } else if pos[j] != usize::MAX {
                    a[k * (m + 1) + pos[j]] -= p;
                }
                // NULL, the removed channel, and channels without exits absorb to nothing.
            }
        }
        solve(&mut a, m).map(|x| x[start_pos]).unwrap_or(0.0)
    }

    /// The removal effect of each channel state (0 for channels never visited).
    pub fn removal_effects(&self) -> Vec<f64> {
        let base = self.conversion_probability(None);
        let s = self.states();
        (0..self.channels)
            .map(|c| {
                let visited = (0..s).any(|j| self.counts[j * s + c] > 0);
                if base <= 0.0 || !visited {
                    0.0
                } else {
                    (1.0 - self.conversion_probability(Some(c)) / base).max(0.0)
                }
            })
            .collect()
    }
}

/// Solves the `m × m` system held as an augmented row-major matrix; `None` if singular.
fn solve(a: &mut [f64], m: usize) -> Option<Vec<f64>> {
    let w = m + 1;
    for col in 0..m {
        let pivot = (col..m).max_by(|&x, &y| a[x * w + col].abs().total_cmp(&a[y * w + col].abs()))?;
        if a[pivot * w + col].abs() < 1e-300 {
            return None;
        }
        if pivot != col {
            for k in 0..w {
                a.swap(pivot * w + k, col * w + k);
            }
        }
        let d = a[col * w + col];
        for row in 0..m {
            if row == col {
                continue;
            }
            let f = a[row * w + col] / d;
            if f != 0.0 {
                for k in col..w {
                    a[row * w + k] -= f * a[col * w + k];
                }
            }
        }
    }
    Some((0..m).map(|i| a[i * w + m] / a[i * w + i]).collect())
}

/// Markov credit of each touch of one path: each channel on the path gets its removal effect
/// normalized over the channels on the path, split equally over that channel's touches.
/// Falls back to equal credit if no channel on the path has a positive removal effect.
pub(crate) fn path_credits(channels: &[usize], effects: &[f64], out: &mut Vec<f64>) {
    out.clear();
    let mut distinct: Vec<usize> = channels.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let effect = |c: usize| effects.get(c).copied().unwrap_or(0.0);
    let total: f64 = distinct.iter().map(|&c| effect(c)).sum();
    if total <= 0.0 {
        let n = channels.len() as f64;
        out.extend(channels.iter().map(|_| 1.0 / n));
        return;
    }
    for &c in channels {
        let touches = channels.iter().filter(|&&x| x == c).count() as f64;
        out.push(effect(c) / total / touches);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook example (Anderl et al.; the worked example of the R package
    /// ChannelAttribution's tutorial): paths C1>C2>C3 converting, C1 not, C2>C3 not.
    /// P(CONV) = 1/3; removing C1 leaves 1/6 (effect 0.5), removing C2 or C3 leaves 0
    /// (effect 1); normalized shares 0.2 / 0.4 / 0.4.
    #[test]
    fn textbook_removal_effects() {
        let mut t = Transitions::new(3);
        t.add_path([0, 1, 2], true);
        t.add_path([0], false);
        t.add_path([1, 2], false);
        assert!((t.conversion_probability(None) - 1.0 / 3.0).abs() < 1e-12);
        assert!((t.conversion_probability(Some(0)) - 1.0 / 6.0).abs() < 1e-12);
        let re = t.removal_effects();
        assert!((re[0] - 0.5).abs() < 1e-12 && (re[1] - 1.0).abs() < 1e-12 && (re[2] - 1.0).abs() < 1e-12, "{re:?}");
        let mut out = vec![];
        path_credits(&[0, 1, 2], &re, &mut out);
        let want = [0.2, 0.4, 0.4];
        assert!(out.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-12), "{out:?}");
    }

    #[test]
    fn self_loops_do_not_change_absorption_and_touches_share_their_channel() {
        let mut a = Transitions::new(2);
        a.add_path([0, 1], true);
        a.add_path([0], false);
        let mut b = Transitions::new(2);
        b.add_path([0, 0, 1, 1], true);
        b.add_path([0, 0], false);
        assert!((a.conversion_probability(None) - b.conversion_probability(None)).abs() < 1e-12);
        let mut out = vec![];
        path_credits(&[0, 1, 0], &[0.5, 1.0], &mut out);
        assert!((out.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((out[0] - 1.0 / 6.0).abs() < 1e-12 && (out[1] - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn loops_are_solved_exactly_not_simulated() {
        // START→A; A→B 1/2, A→CONV 1/2; B→A 1/2, B→NULL 1/2.
        // x_A = 1/2 + 1/2 x_B, x_B = 1/2 x_A  ⇒  x_A = 2/3.
        let mut t = Transitions::new(2);
        t.add_path([0], true);
        t.add_path([0, 1], false);
        t.add_path([0, 1, 0], true);
        // counts: S→A 3; A→CONV 2, A→B 2; B→NULL 1, B→A 1.
        assert!((t.conversion_probability(None) - 2.0 / 3.0).abs() < 1e-12);
        let w = t.widen(5);
        assert!((w.conversion_probability(None) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(Transitions::new(1).conversion_probability(None), 0.0);
    }
}
