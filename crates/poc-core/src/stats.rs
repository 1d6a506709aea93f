//! The exact one-sided binomial test the validators run (`docs/protocol/compute-v2.md` §4.7, §6.1).
//!
//! `p_value = P(X >= k)` for `X ~ Binomial(n, p)`, i.e. SciPy's
//! `binomtest(k, n, p, alternative="greater").pvalue`.
//!
//! The tail is summed term by term from whichever side is small, each term computed with
//! Loader's saddle-point expansion of the binomial probability (C. Loader, "Fast and
//! accurate computation of binomial probabilities", 2000), which keeps nearly full f64
//! relative accuracy even where the terms are tiny. The result is accurate to about
//! 1e-13 relative for n up to 10^6 and every p-value above the f64 underflow range
//! (the test suite checks 1e-12 against 50-digit references).

use thiserror::Error;

/// Bad parameters for the binomial tail.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum BinomialError {
    /// `p` is NaN or outside [0, 1].
    #[error("mismatch probability {0} is not in [0, 1]")]
    Probability(f64),
}

/// `ln(n!) - ln(sqrt(2πn) (n/e)^n)` for n = 0..=15.
const STIRLERR_SMALL: [f64; 16] = [
    0.0,
    0.081_061_466_795_327_26,
    0.041_340_695_955_409_3,
    0.027_677_925_684_998_34,
    0.020_790_672_103_765_093,
    0.016_644_691_189_821_193,
    0.013_876_128_823_070_748,
    0.011_896_709_945_891_77,
    0.010_411_265_261_972_096,
    0.009_255_462_182_712_733,
    0.008_330_563_433_362_87,
    0.007_573_675_487_951_841,
    0.006_942_840_107_209_53,
    0.006_408_994_188_004_207,
    0.005_951_370_112_758_847_5,
    0.005_554_733_551_962_801,
];

/// Stirling-series error term `ln(n!) - ln(sqrt(2πn) (n/e)^n)` for an integer `n`.
fn stirlerr(n: u64) -> f64 {
    if n < 16 {
        return STIRLERR_SMALL[n as usize];
    }
    const S0: f64 = 1.0 / 12.0;
    const S1: f64 = 1.0 / 360.0;
    const S2: f64 = 1.0 / 1260.0;
    const S3: f64 = 1.0 / 1680.0;
    const S4: f64 = 1.0 / 1188.0;
    let x = n as f64;
    let xx = x * x;
    if n > 500 {
        (S0 - S1 / xx) / x
    } else if n > 80 {
        (S0 - (S1 - S2 / xx) / xx) / x
    } else if n > 35 {
        (S0 - (S1 - (S2 - S3 / xx) / xx) / xx) / x
    } else {
        (S0 - (S1 - (S2 - (S3 - S4 / xx) / xx) / xx) / xx) / x
    }
}

/// Deviance term `x ln(x / np) + np - x`, accurate also when `x ≈ np`.
fn bd0(x: f64, np: f64) -> f64 {
    if (x - np).abs() < 0.1 * (x + np) {
        let mut v = (x - np) / (x + np);
        let mut s = (x - np) * v;
        if s.abs() < f64::MIN_POSITIVE {
            return s;
        }
        let mut ej = 2.0 * x * v;
        v *= v;
        for j in 1..1000 {
            ej *= v;
            let s1 = s + ej / f64::from(2 * j + 1);
            if s1 == s {
                return s1;
            }
            s = s1;
        }
        s
    } else {
        x * (x / np).ln() + np - x
    }
}

/// `P(X = x)` for `X ~ Binomial(n, p)`, `q = 1 - p`, `0 < p < 1`, `x <= n`.
fn binomial_pmf(x: u64, n: u64, p: f64, q: f64) -> f64 {
    let nf = n as f64;
    if x == 0 {
        let lc = if p < 0.1 {
            -bd0(nf, nf * q) - nf * p
        } else {
            nf * q.ln()
        };
        return lc.exp();
    }
    if x == n {
        let lc = if q < 0.1 {
            -bd0(nf, nf * p) - nf * q
        } else {
            nf * p.ln()
        };
        return lc.exp();
    }
    let xf = x as f64;
    let lc = stirlerr(n) - stirlerr(x) - stirlerr(n - x) - bd0(xf, nf * p) - bd0(nf - xf, nf * q);
    // ln(2π x (n - x) / n); `(n - x) / n` is formed exactly first (log1p(-x/n) would lose
    // digits when x is close to n).
    let lf = (2.0 * std::f64::consts::PI).ln() + xf.ln() + ((nf - xf) / nf).ln();
    (lc - 0.5 * lf).exp()
}

/// Neumaier-compensated sum.
#[derive(Default)]
struct Sum {
    sum: f64,
    comp: f64,
}

impl Sum {
    fn add(&mut self, v: f64) {
        let t = self.sum + v;
        if self.sum.abs() >= v.abs() {
            self.comp += (self.sum - t) + v;
        } else {
            self.comp += (v - t) + self.sum;
        }
        self.sum = t;
    }

    fn value(&self) -> f64 {
        self.sum + self.comp
    }
}

/// Relative size below which the rest of a geometric-bounded tail is negligible.
const TAIL_EPS: f64 = 1e-18;

/// `P(X >= k)` for `X ~ Binomial(n, p)` (the one-sided "greater" binomial test p-value).
pub fn binomial_upper_tail(k: u64, n: u64, p: f64) -> Result<f64, BinomialError> {
    if !(0.0..=1.0).contains(&p) {
        return Err(BinomialError::Probability(p));
    }
    if k == 0 {
        return Ok(1.0);
    }
    if k > n || p == 0.0 {
        return Ok(0.0);
    }
    if p == 1.0 {
        return Ok(1.0);
    }
    let q = 1.0 - p;
    let odds = p / q;
    let nf = n as f64;
    if (k as f64) > nf * p {
        // Terms decrease from k on: sum upward until the geometric bound on the rest is
        // negligible.
        let mut sum = Sum::default();
        for j in k..=n {
            let t = binomial_pmf(j, n, p, q);
            sum.add(t);
            let r = (nf - j as f64) / (j as f64 + 1.0) * odds;
            if t == 0.0 || (r < 1.0 && t * r / (1.0 - r) <= sum.value() * TAIL_EPS) {
                break;
            }
        }
        Ok(sum.value().min(1.0))
    } else {
        // P(X >= k) >= 1/2 here: compute 1 - P(X <= k - 1), summing downward.
        let mut sum = Sum::default();
        for j in (0..k).rev() {
            let t = binomial_pmf(j, n, p, q);
            sum.add(t);
            let r = j as f64 / (nf - j as f64 + 1.0) / odds;
            if t == 0.0 || (r < 1.0 && t * r / (1.0 - r) <= sum.value() * TAIL_EPS) {
                break;
            }
        }
        Ok((1.0 - sum.value()).clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(got: f64, want: f64) -> f64 {
        ((got - want) / want).abs()
    }

    #[test]
    fn stirlerr_table_agrees_with_the_series_at_the_boundary() {
        // The series at n = 15 is already accurate; the table must agree with it.
        let x = 15.0f64;
        let xx = x * x;
        let series = (1.0 / 12.0
            - (1.0 / 360.0 - (1.0 / 1260.0 - (1.0 / 1680.0 - 1.0 / (1188.0 * xx)) / xx) / xx) / xx)
            / x;
        assert!(rel(STIRLERR_SMALL[15], series) < 1e-12);
    }

    #[test]
    fn pmf_sums_to_one() {
        for (n, p) in [(10u64, 0.3), (200, 0.02), (1000, 0.5), (57, 0.999)] {
            let q = 1.0 - p;
            let s: f64 = (0..=n).map(|x| binomial_pmf(x, n, p, q)).sum();
            assert!((s - 1.0).abs() < 1e-13, "n {n} p {p}: {s}");
        }
        // Exact small cases.
        assert!(rel(binomial_pmf(1, 2, 0.5, 0.5), 0.5) < 1e-15);
        assert!(rel(binomial_pmf(3, 3, 0.1, 0.9), 0.001) < 1e-14);
    }

    #[test]
    fn edge_cases() {
        assert_eq!(binomial_upper_tail(0, 0, 0.5), Ok(1.0));
        assert_eq!(binomial_upper_tail(0, 10, 0.5), Ok(1.0));
        assert_eq!(binomial_upper_tail(11, 10, 0.5), Ok(0.0));
        assert_eq!(binomial_upper_tail(1, 10, 0.0), Ok(0.0));
        assert_eq!(binomial_upper_tail(10, 10, 1.0), Ok(1.0));
        assert!(binomial_upper_tail(1, 1, f64::NAN).is_err());
        assert_eq!(
            binomial_upper_tail(1, 1, 1.5),
            Err(BinomialError::Probability(1.5))
        );
        assert_eq!(
            BinomialError::Probability(-1.0).to_string(),
            "mismatch probability -1 is not in [0, 1]"
        );
    }
}
