//! Detection power of the validators' one-sided binomial test, for one validator (exact)
//! and for the weighted vote of many (Monte Carlo with a seed) (`docs/calibrate.md`,
//! "Test power").

use poc_core::stats::{BinomialError, binomial_upper_tail};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The chain's test: `p_value = P(X >= k)`, `X ~ Binomial(n, p_mismatch)`; fraud when
/// `p_value < p_value_threshold`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Test {
    pub p_mismatch: f64,
    pub p_value_threshold: f64,
}

impl Test {
    /// The smallest mismatch count flagged among `n` samples; `None` when none is (even
    /// `n` mismatches keep the p-value at or above the threshold).
    pub fn critical_k(&self, n: u64) -> Result<Option<u64>, BinomialError> {
        // The tail falls as k grows: bisect for the first k with tail < threshold.
        if binomial_upper_tail(n, n, self.p_mismatch)? >= self.p_value_threshold {
            return Ok(None);
        }
        let (mut lo, mut hi) = (0u64, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if binomial_upper_tail(mid, n, self.p_mismatch)? < self.p_value_threshold {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Ok(Some(lo))
    }

    /// The probability that one validator sampling `n` nonces flags a prover whose
    /// sampled nonces each mismatch with probability `q` (independently): `P(Y >= k*)`,
    /// `Y ~ Binomial(n, q)`; exact.
    pub fn flag_probability(&self, n: u64, q: f64) -> Result<f64, BinomialError> {
        match self.critical_k(n)? {
            None => Ok(0.0),
            Some(k) => binomial_upper_tail(k, n, q.clamp(0.0, 1.0)),
        }
    }
}

/// The per-sample mismatch probability of a prover that answers a `fraction` of its
/// nonces with a cheater's vectors (mismatch rate `cheat`) and the rest honestly
/// (`honest`).
pub fn mixed_rate(fraction: f64, cheat: f64, honest: f64) -> f64 {
    let f = fraction.clamp(0.0, 1.0);
    f * cheat + (1.0 - f) * honest
}

/// The chain's PoC v2 vote rule without guardians: accepted iff the weight voting valid
/// is more than `⌊2·total / 3⌋` (integer, as the chain computes it).
pub fn accepted(valid: i64, total: i64) -> bool {
    valid > total * 2 / 3
}

/// The probability, over `trials` seeded Monte Carlo rounds, that a prover is *rejected*
/// when every validator (of the given weights) independently votes invalid with
/// probability `p_flag`.
pub fn rejection_probability(weights: &[i64], p_flag: f64, trials: u32, seed: u64) -> f64 {
    if trials == 0 {
        return 0.0;
    }
    let total: i64 = weights.iter().sum();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let p = p_flag.clamp(0.0, 1.0);
    let mut rejected = 0u32;
    for _ in 0..trials {
        let valid: i64 = weights.iter().filter(|_| !rng.random_bool(p)).sum();
        if !accepted(valid, total) {
            rejected += 1;
        }
    }
    f64::from(rejected) / f64::from(trials)
}

/// A set of validator weights for the vote simulation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Weights {
    /// Where it came from (`uniform:N`, `heavy:N`, a file).
    pub name: String,
    pub weights: Vec<i64>,
}

impl Weights {
    /// `n` validators of weight 1.
    pub fn uniform(n: usize) -> Self {
        Self {
            name: format!("uniform:{n}"),
            weights: vec![1; n],
        }
    }

    /// `n` validators with heavy-tailed weights, as PoC weights are spread on a live
    /// network: Pareto with shape 1.1 (a few hold much, most hold little), scaled so
    /// the smallest is about 1,000, from a fixed seed.
    pub fn heavy(n: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_0377);
        let mut w: Vec<i64> = (0..n)
            .map(|_| {
                let u: f64 = rng.random_range(f64::EPSILON..1.0);
                (1000.0 * u.powf(-1.0 / 1.1)).min(1e12) as i64
            })
            .collect();
        w.sort_unstable_by(|a, b| b.cmp(a));
        Self {
            name: format!("heavy:{n}"),
            weights: w,
        }
    }

    /// The share of the total held by the largest `k` validators.
    pub fn top_share(&self, k: usize) -> f64 {
        let mut w = self.weights.clone();
        w.sort_unstable_by(|a, b| b.cmp(a));
        let total: i64 = w.iter().sum();
        if total == 0 {
            return 0.0;
        }
        w.iter().take(k).sum::<i64>() as f64 / total as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAIN: Test = Test {
        p_mismatch: 0.1,
        p_value_threshold: 0.05,
    };

    #[test]
    fn the_critical_count_is_the_first_with_a_p_value_below_the_threshold() {
        for n in [1u64, 10, 50, 200, 1000] {
            match CHAIN.critical_k(n).unwrap() {
                Some(k) => {
                    assert!(binomial_upper_tail(k, n, 0.1).unwrap() < 0.05);
                    if k > 0 {
                        assert!(binomial_upper_tail(k - 1, n, 0.1).unwrap() >= 0.05);
                    }
                }
                None => assert!(binomial_upper_tail(n, n, 0.1).unwrap() >= 0.05),
            }
        }
        // One sample: P(X >= 1) = 0.1 ≥ 0.05, so nothing can be flagged.
        assert_eq!(CHAIN.critical_k(1).unwrap(), None);
        // n = 200, p = 0.1: P(X >= 28) = 0.04343, P(X >= 27) = 0.06722 (exact sums).
        assert_eq!(CHAIN.critical_k(200).unwrap(), Some(28));
    }

    #[test]
    fn power_is_the_binomial_tail_at_the_critical_count() {
        // A prover that always mismatches is flagged with certainty; one at the null
        // rate at most at the test's level.
        assert_eq!(CHAIN.flag_probability(200, 1.0).unwrap(), 1.0);
        let fa = CHAIN.flag_probability(200, 0.1).unwrap();
        assert!(fa < 0.05 && fa > 0.03, "{fa}");
        assert_eq!(CHAIN.flag_probability(1, 1.0).unwrap(), 0.0);
        // More samples, more power.
        let q = mixed_rate(0.1, 1.0, 0.1);
        assert!(CHAIN.flag_probability(1000, q).unwrap() > CHAIN.flag_probability(100, q).unwrap());
        assert!((mixed_rate(0.04, 0.77, 0.02) - (0.04 * 0.77 + 0.96 * 0.02)).abs() < 1e-15);
    }

    #[test]
    fn the_vote_rule_is_the_chains_integer_two_thirds() {
        assert!(accepted(7, 10) && !accepted(6, 10));
        assert!(!accepted(2, 3) && accepted(3, 3));
    }

    #[test]
    fn monte_carlo_is_seeded_and_bounded_by_the_extremes() {
        let w = Weights::heavy(377, 1);
        let a = rejection_probability(&w.weights, 0.2, 2000, 9);
        assert_eq!(a, rejection_probability(&w.weights, 0.2, 2000, 9));
        assert_eq!(rejection_probability(&w.weights, 0.0, 100, 9), 0.0);
        assert_eq!(rejection_probability(&w.weights, 1.0, 100, 9), 1.0);
        // Uniform weights and 1 % flags: rejection needs > 1/3 of 377 flagging.
        assert_eq!(
            rejection_probability(&Weights::uniform(377).weights, 0.01, 500, 3),
            0.0
        );
        assert_eq!(w.weights.len(), 377);
        assert!(w.top_share(10) > 0.2, "heavy-tailed: {}", w.top_share(10));
        assert_eq!(Weights::uniform(4).top_share(1), 0.25);
    }
}
