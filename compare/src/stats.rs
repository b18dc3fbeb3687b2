//! The statistics behind every comparison, on `statrs` distributions: Welch's t interval and
//! test, a percentile bootstrap of a difference in means, and an exact Poisson rate test.
//!
//! Inputs are daily values; days are the units (a day's count is one observation), which is
//! what a marketing series is and keeps the tests honest about day-to-day noise.

use statrs::distribution::{Binomial, ContinuousCDF, DiscreteCDF, StudentsT};

/// Mean and sample variance (n − 1); `None` below two values.
pub(crate) fn mean_var(x: &[f64]) -> Option<(f64, f64)> {
    if x.len() < 2 {
        return None;
    }
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    Some((mean, var))
}

/// Mean of `x` (`None` when empty).
pub(crate) fn mean(x: &[f64]) -> Option<f64> {
    (!x.is_empty()).then(|| x.iter().sum::<f64>() / x.len() as f64)
}

/// Welch's comparison of `post − pre`: the difference of means, its `level` interval and the
/// two-sided p-value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Welch {
    /// `mean(post) − mean(pre)`.
    pub(crate) diff: f64,
    /// Interval low end.
    pub(crate) low: f64,
    /// Interval high end.
    pub(crate) high: f64,
    /// Two-sided p-value of "no difference".
    pub(crate) p_value: f64,
}

/// Welch's unequal-variance t interval and test for `mean(post) − mean(pre)`.
pub(crate) fn welch(pre: &[f64], post: &[f64], level: f64) -> Option<Welch> {
    let (m1, v1) = mean_var(pre)?;
    let (m2, v2) = mean_var(post)?;
    let (n1, n2) = (pre.len() as f64, post.len() as f64);
    let diff = m2 - m1;
    let se2 = v1 / n1 + v2 / n2;
    if se2 <= 0.0 {
        // Both series constant: the difference is exact.
        let p = if diff == 0.0 { 1.0 } else { 0.0 };
        return Some(Welch { diff, low: diff, high: diff, p_value: p });
    }
    let se = se2.sqrt();
    let df = se2.powi(2) / ((v1 / n1).powi(2) / (n1 - 1.0) + (v2 / n2).powi(2) / (n2 - 1.0));
    let t = StudentsT::new(0.0, 1.0, df.max(1.0)).ok()?;
    let q = t.inverse_cdf(1.0 - (1.0 - level) / 2.0);
    let p_value = (2.0 * t.sf((diff / se).abs())).min(1.0);
    Some(Welch { diff, low: diff - q * se, high: diff + q * se, p_value })
}

/// The `level` t interval of the mean of `x` (`None` below two values).
pub(crate) fn mean_interval(x: &[f64], level: f64) -> Option<(f64, f64)> {
    let x: Vec<f64> = x.iter().copied().filter(|v| v.is_finite()).collect();
    let (m, v) = mean_var(&x)?;
    let t = StudentsT::new(0.0, 1.0, (x.len() - 1) as f64).ok()?;
    let half = t.inverse_cdf(1.0 - (1.0 - level) / 2.0) * (v / x.len() as f64).sqrt();
    Some((m - half, m + half))
}

/// A SplitMix64 generator: deterministic resampling without a `rand` dependency.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 / (1u64 << 53) as f64 * n as f64) as usize % n.max(1)
    }
}

/// Percentile bootstrap interval of `mean(post) − mean(pre)` (days resampled with replacement
/// within each period, `replicates` times).
pub(crate) fn bootstrap_diff(pre: &[f64], post: &[f64], level: f64, replicates: usize, seed: u64) -> Option<(f64, f64)> {
    if pre.is_empty() || post.is_empty() {
        return None;
    }
    let mut rng = Rng(seed);
    let mut diffs: Vec<f64> = (0..replicates)
        .map(|_| {
            let a: f64 = (0..pre.len()).map(|_| pre[rng.below(pre.len())]).sum::<f64>() / pre.len() as f64;
            let b: f64 = (0..post.len()).map(|_| post[rng.below(post.len())]).sum::<f64>() / post.len() as f64;
            b - a
        })
        .collect();
    diffs.sort_by(f64::total_cmp);
    let q = |p: f64| {
        let pos = p * (diffs.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        diffs[lo] + (diffs[hi] - diffs[lo]) * (pos - lo as f64)
    };
    Some((q((1.0 - level) / 2.0), q(1.0 - (1.0 - level) / 2.0)))
}

/// Two-sided exact test that two Poisson counts have the same rate (over equal exposure):
/// given `x + y`, `x` is Binomial(x + y, ½) under the null.
pub(crate) fn poisson_rate_test(x: u64, y: u64) -> f64 {
    let n = x + y;
    if n == 0 {
        return 1.0;
    }
    let Ok(b) = Binomial::new(0.5, n) else { return 1.0 };
    let k = x.min(y);
    // P(X ≤ k) + P(X ≥ n − k), symmetric.
    let tail = b.cdf(k);
    (2.0 * tail).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn welch_matches_a_hand_computation() {
        // pre mean 2, var 1 (n 3); post mean 5, var 1 (n 3): se = sqrt(2/3), df = 4.
        let w = welch(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0], 0.95).unwrap();
        assert!((w.diff - 3.0).abs() < 1e-12);
        let se = (2.0f64 / 3.0).sqrt();
        // t(0.975, 4) = 2.776445
        assert!((w.high - (3.0 + 2.776445 * se)).abs() < 1e-4, "{w:?}");
        // t = 3.674, df 4: two-sided p ≈ 0.0213
        assert!((w.p_value - 0.0213).abs() < 5e-4, "{w:?}");
        assert!(welch(&[1.0], &[2.0, 3.0], 0.95).is_none());
    }

    #[test]
    fn bootstrap_brackets_the_difference() {
        let pre: Vec<f64> = (0..40).map(|i| 10.0 + (i % 5) as f64).collect();
        let post: Vec<f64> = (0..20).map(|i| 4.0 + (i % 5) as f64).collect();
        let (lo, hi) = bootstrap_diff(&pre, &post, 0.95, 2000, 1).unwrap();
        assert!(lo < -6.0 + 0.01 && -6.0 - 0.01 < hi && hi < -5.0 && lo > -7.0, "{lo} {hi}");
    }

    #[test]
    fn poisson_test_separates_rates() {
        assert_eq!(poisson_rate_test(0, 0), 1.0);
        assert!(poisson_rate_test(50, 52) > 0.5);
        assert!(poisson_rate_test(20, 60) < 1e-5);
        // x = 10, y = 0: 2 × 0.5^10
        assert!((poisson_rate_test(10, 0) - 2.0 * 0.5f64.powi(10)).abs() < 1e-12);
    }
}
