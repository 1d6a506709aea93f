//! Distributions of L2 distances: percentiles, summaries, histograms, mismatch rates.
//! Pure functions over slices (`docs/calibrate.md`, "Distances").

use serde::{Deserialize, Serialize};

/// The percentile `q` (0..=100) of sorted finite values, linearly interpolated between
/// the closest ranks (NumPy's default `linear` method); `None` for no values.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let pos = (q.clamp(0.0, 100.0) / 100.0) * (n - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
}

/// Summary of one distance distribution. Non-finite distances (a vector that could not be
/// computed) count as mismatches at every threshold and are left out of the statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Distances summarised (finite ones).
    pub n: usize,
    /// Non-finite distances.
    pub non_finite: usize,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p98: f64,
    pub p99_9: f64,
    pub max: f64,
}

/// The finite values, sorted.
pub fn sorted_finite(values: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    v
}

impl Summary {
    /// The summary of `values` (zeros when none is finite).
    pub fn of(values: &[f64]) -> Self {
        let s = sorted_finite(values);
        let p = |q| percentile(&s, q).unwrap_or(0.0);
        let mean = if s.is_empty() {
            0.0
        } else {
            s.iter().sum::<f64>() / s.len() as f64
        };
        Self {
            n: s.len(),
            non_finite: values.len() - s.len(),
            mean,
            p50: p(50.0),
            p90: p(90.0),
            p98: p(98.0),
            p99_9: p(99.9),
            max: s.last().copied().unwrap_or(0.0),
        }
    }
}

/// The share of distances strictly above `threshold` (the validator's mismatch rule);
/// non-finite distances mismatch. 0 for no values.
pub fn mismatch_rate(values: &[f64], threshold: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let m = values
        .iter()
        .filter(|d| !d.is_finite() || **d > threshold)
        .count();
    m as f64 / values.len() as f64
}

/// Counts of `values` in `bins` equal bins over `[0, max]`; values above `max` (and
/// non-finite ones) go to the last bin.
pub fn histogram(values: &[f64], bins: usize, max: f64) -> Vec<u64> {
    let bins = bins.max(1);
    let mut out = vec![0u64; bins];
    for &v in values {
        let i = if v.is_finite() && max > 0.0 {
            ((v.max(0.0) / max) * bins as f64) as usize
        } else {
            bins - 1
        };
        out[i.min(bins - 1)] += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_as_numpy() {
        // numpy.percentile([1, 2, 3, 4], [0, 25, 50, 98, 100]) = 1, 1.75, 2.5, 3.94, 4.
        let s = [1.0, 2.0, 3.0, 4.0];
        let got: Vec<f64> = [0.0, 25.0, 50.0, 98.0, 100.0]
            .iter()
            .map(|&q| percentile(&s, q).unwrap())
            .collect();
        let want = [1.0, 1.75, 2.5, 3.94, 4.0];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{got:?}");
        }
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7.0], 99.9), Some(7.0));
    }

    #[test]
    fn summaries_leave_non_finite_values_out_but_count_them_as_mismatches() {
        let v = [0.1, 0.3, f64::INFINITY, 0.2, f64::NAN];
        let s = Summary::of(&v);
        assert_eq!((s.n, s.non_finite), (3, 2));
        assert!((s.mean - 0.2).abs() < 1e-12 && s.max == 0.3 && s.p50 == 0.2);
        assert_eq!(mismatch_rate(&v, 0.25), 3.0 / 5.0);
        assert_eq!(mismatch_rate(&v, 0.3), 2.0 / 5.0, "strictly above");
        assert_eq!(mismatch_rate(&[], 0.3), 0.0);
    }

    #[test]
    fn histograms_put_outliers_in_the_last_bin() {
        let h = histogram(&[0.0, 0.05, 0.5, 0.99, 1.0, 7.0, f64::INFINITY], 4, 1.0);
        assert_eq!(h, vec![2, 0, 1, 4]);
        assert_eq!(histogram(&[1.0], 0, 0.0), vec![1]);
    }
}
