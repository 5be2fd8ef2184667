//! The statistics of repeated, interleaved measurements (pure): the
//! median and range of a set of runs, ratios paired round by round with
//! the baseline measured in the same round, and latency percentiles.
//!
//! Paired ratios, not a ratio of medians: load from elsewhere on a shared
//! machine comes and goes, and hits the configurations of one round
//! alike; dividing within the round cancels most of it.

use serde::Serialize;

/// The median, the middle half and the range of a set of values.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Spread {
    pub median: f64,
    /// The quartiles (nearest rank): half of the values lie between.
    pub p25: f64,
    pub p75: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// The spread of `v`; all zero when it is empty.
    pub fn of(v: &[f64]) -> Spread {
        if v.is_empty() {
            return Spread {
                median: 0.0,
                p25: 0.0,
                p75: 0.0,
                min: 0.0,
                max: 0.0,
            };
        }
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        let rank = |q: f64| s[((s.len() as f64 - 1.0) * q).round() as usize];
        Spread {
            median: median_sorted(&s),
            p25: rank(0.25),
            p75: rank(0.75),
            min: s[0],
            max: s[s.len() - 1],
        }
    }

    /// The range as a percentage of the median.
    pub fn range_pct(&self) -> f64 {
        if self.median == 0.0 {
            return 0.0;
        }
        (self.max - self.min) / self.median * 100.0
    }

    /// How far from 1.0 the range reaches, in percent: for the ratios of
    /// the baseline to itself, the noise of the worst round.
    pub fn reach_from_one_pct(&self) -> f64 {
        (self.max - 1.0).abs().max((1.0 - self.min).abs()) * 100.0
    }

    /// How far from 1.0 the middle half reaches, in percent: for the
    /// ratios of the baseline to itself, the noise floor a difference of
    /// medians must exceed to mean something (one disturbed round does
    /// not set it).
    pub fn middle_reach_from_one_pct(&self) -> f64 {
        (self.p75 - 1.0).abs().max((1.0 - self.p25).abs()) * 100.0
    }
}

fn median_sorted(s: &[f64]) -> f64 {
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// The spread of `values[i] / baseline[i]`, round by round.
pub fn paired_ratios(values: &[f64], baseline: &[f64]) -> Spread {
    let r: Vec<f64> = values
        .iter()
        .zip(baseline)
        .filter(|(_, b)| **b > 0.0)
        .map(|(v, b)| v / b)
        .collect();
    Spread::of(&r)
}

/// The quantiles a latency distribution is kept at (for its plot): every
/// percent, then 99.5 and 99.9.
pub fn cdf_points() -> Vec<f64> {
    (1..100)
        .map(|p| f64::from(p) / 100.0)
        .chain([0.995, 0.999])
        .collect()
}

/// The `q` quantile of sorted nanoseconds, in µs (nearest rank).
pub fn quantile_us(sorted_ns: &[u32], q: f64) -> f64 {
    if sorted_ns.is_empty() {
        return 0.0;
    }
    let i = ((sorted_ns.len() as f64 - 1.0) * q).round() as usize;
    f64::from(sorted_ns[i.min(sorted_ns.len() - 1)]) / 1e3
}

/// Rounds to `digits` decimals, for reports read by people and scripts.
pub fn round(x: f64, digits: i32) -> f64 {
    crate::stats::round(x, digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_range() {
        let s = Spread::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        let q = Spread::of(&[0.5, 0.98, 1.0, 1.01, 1.02, 1.03, 1.04, 1.05, 2.0]);
        assert_eq!((q.p25, q.p75), (1.0, 1.04));
        assert!((q.middle_reach_from_one_pct() - 4.0).abs() < 1e-9);
        assert!((q.reach_from_one_pct() - 100.0).abs() < 1e-9);
        assert_eq!(Spread::of(&[1.0, 2.0, 3.0, 10.0]).median, 2.5);
        assert_eq!(s.range_pct(), 100.0);
        assert_eq!(Spread::of(&[]).median, 0.0);
    }

    #[test]
    fn ratios_are_paired_by_round() {
        // The baseline moves with the machine's load; the config keeps
        // 10 % above it in every round: the paired ratio has no spread.
        let base = [100.0, 50.0, 80.0];
        let cfg = [110.0, 55.0, 88.0];
        let r = paired_ratios(&cfg, &base);
        assert!((r.median - 1.1).abs() < 1e-12);
        assert!(r.max - r.min < 1e-12);
        let noise = paired_ratios(&[98.0, 103.0], &[100.0, 100.0]);
        assert!((noise.reach_from_one_pct() - 3.0).abs() < 1e-9);
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let ns: Vec<u32> = (1..=1000).map(|i| i * 1000).collect();
        assert_eq!(quantile_us(&ns, 0.5), 501.0);
        assert_eq!(quantile_us(&ns, 0.99), 990.0);
        assert_eq!(quantile_us(&[], 0.5), 0.0);
        let pts = cdf_points();
        assert_eq!(pts.len(), 101);
        assert!(pts.windows(2).all(|w| w[0] < w[1]));
    }
}
