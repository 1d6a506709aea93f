//! The validator's verdict on one participant (`docs/protocol/compute-v2.md` §4.7).
//!
//! For every recomputed nonce that the participant also sent a vector for, the nonce is a
//! **mismatch** when the received vector is malformed (not base64, wrong length, NaN/Inf)
//! or when the f32 L2 distance between the recomputed and the received vector is strictly
//! greater than `dist_threshold`. Then `p_value = P(X >= n_mismatch)` for
//! `X ~ Binomial(n_total, p_mismatch)` and `fraud_detected = p_value < fraud_threshold`.
//!
//! `n_total` is the number of received artifacts, whether or not the validator managed to
//! recompute them (the reference's semantics). One deliberate difference from the
//! reference: an *empty* received vector counts as malformed (a mismatch) instead of being
//! skipped; an honest prover never sends one.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::artifact::{Artifact, decode_vector_f32};
use crate::stats::binomial_upper_tail;

/// Thresholds of the statistical test (`stat_test` in ML-node requests).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StatTest {
    /// A nonce mismatches when its L2 distance is strictly greater than this.
    pub dist_threshold: f64,
    /// Mismatch probability of an honest participant (the binomial null hypothesis).
    pub p_mismatch: f64,
    /// Fraud is detected when the p-value is strictly below this.
    pub fraud_threshold: f64,
}

impl StatTest {
    /// The ML node's defaults (`vllm/poc/data.py`): 0.02, 0.001, 0.01.
    pub const REFERENCE_DEFAULTS: Self = Self {
        dist_threshold: 0.02,
        p_mismatch: 0.001,
        fraud_threshold: 0.01,
    };

    /// Checks that every threshold is usable.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let bad = |name: &'static str, value: f64| ValidationError::Parameter { name, value };
        if !(self.dist_threshold.is_finite() && self.dist_threshold >= 0.0) {
            return Err(bad("dist_threshold", self.dist_threshold));
        }
        if !(0.0..=1.0).contains(&self.p_mismatch) {
            return Err(bad("p_mismatch", self.p_mismatch));
        }
        if !(0.0..=1.0).contains(&self.fraud_threshold) {
            return Err(bad("fraud_threshold", self.fraud_threshold));
        }
        Ok(())
    }
}

impl Default for StatTest {
    fn default() -> Self {
        Self::REFERENCE_DEFAULTS
    }
}

/// The verdict, with exactly the fields of the ML node's validation response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationResult {
    /// Number of received artifacts.
    pub n_total: u64,
    /// Number of mismatching nonces.
    pub n_mismatch: u64,
    /// The mismatching nonces, in the order of the recomputed artifacts.
    pub mismatch_nonces: Vec<i64>,
    /// `P(X >= n_mismatch)`, `X ~ Binomial(n_total, p_mismatch)`; 1.0 when `n_total = 0`.
    pub p_value: f64,
    /// `p_value < fraud_threshold`.
    pub fraud_detected: bool,
}

/// Why a validation cannot be computed.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ValidationError {
    /// A threshold is NaN or out of range.
    #[error(
        "stat_test.{name} = {value} is out of range (dist_threshold must be >= 0, p_mismatch and fraud_threshold in [0, 1])"
    )]
    Parameter {
        /// Parameter name.
        name: &'static str,
        /// Offending value.
        value: f64,
    },
    /// The same nonce appears twice on one side.
    #[error("nonce {nonce} appears more than once in the {side} artifacts")]
    DuplicateNonce {
        /// The repeated nonce.
        nonce: i64,
        /// `"computed"` or `"received"`.
        side: &'static str,
    },
}

/// `(p_value, fraud_detected)` of the one-sided binomial test. `n_total = 0` gives
/// `(1.0, false)`.
pub fn fraud_test(
    n_mismatch: u64,
    n_total: u64,
    p_mismatch: f64,
    fraud_threshold: f64,
) -> Result<(f64, bool), ValidationError> {
    if n_total == 0 {
        return Ok((1.0, false));
    }
    let p_value = binomial_upper_tail(n_mismatch, n_total, p_mismatch).map_err(|_| {
        ValidationError::Parameter {
            name: "p_mismatch",
            value: p_mismatch,
        }
    })?;
    Ok((p_value, p_value < fraud_threshold))
}

/// L2 distance in f32 (differences, squares and their sum rounded to f32 as numpy does).
///
/// # Panics
/// If the vectors differ in length.
pub fn l2_distance(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "l2_distance: vector lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

/// Whether a decoded received vector mismatches the recomputed one: wrong length,
/// a non-finite value, or an L2 distance strictly greater than `dist_threshold`
/// (compared in f64, as numpy compares an f32 distance with a Python float).
pub fn is_mismatch(computed: &[f32], received: &[f32], dist_threshold: f64) -> bool {
    if computed.len() != received.len() || received.iter().any(|v| !v.is_finite()) {
        return true;
    }
    let d = l2_distance(computed, received);
    !d.is_finite() || f64::from(d) > dist_threshold
}

/// Compares recomputed vectors with the received artifacts and runs the binomial test.
///
/// `computed` holds `(nonce, vector)` for every nonce the validator managed to recompute.
/// Received nonces without a recomputed vector count in `n_total` only.
pub fn compare_artifacts(
    computed: &[(i64, Vec<f32>)],
    received: &[Artifact],
    stat: &StatTest,
) -> Result<ValidationResult, ValidationError> {
    stat.validate()?;
    let mut by_nonce: HashMap<i64, &str> = HashMap::with_capacity(received.len());
    for a in received {
        if by_nonce.insert(a.nonce, &a.vector_b64).is_some() {
            return Err(ValidationError::DuplicateNonce {
                nonce: a.nonce,
                side: "received",
            });
        }
    }
    let mut seen = std::collections::HashSet::with_capacity(computed.len());
    let mut mismatch_nonces = Vec::new();
    for (nonce, vector) in computed {
        if !seen.insert(*nonce) {
            return Err(ValidationError::DuplicateNonce {
                nonce: *nonce,
                side: "computed",
            });
        }
        let Some(b64) = by_nonce.get(nonce) else {
            continue;
        };
        let mismatch = match decode_vector_f32(b64, Some(vector.len())) {
            Ok(r) => is_mismatch(vector, &r, stat.dist_threshold),
            Err(_) => true,
        };
        if mismatch {
            mismatch_nonces.push(*nonce);
        }
    }
    let n_total = received.len() as u64;
    let n_mismatch = mismatch_nonces.len() as u64;
    let (p_value, fraud_detected) =
        fraud_test(n_mismatch, n_total, stat.p_mismatch, stat.fraud_threshold)?;
    Ok(ValidationResult {
        n_total,
        n_mismatch,
        mismatch_nonces,
        p_value,
        fraud_detected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::encode_vector;

    fn art(nonce: i64, v: &[f32]) -> Artifact {
        Artifact {
            nonce,
            vector_b64: encode_vector(v),
        }
    }

    #[test]
    fn mismatch_threshold_boundary() {
        // Reference test: a distance of 0.015 mismatches at 0.01 but not at 0.02.
        let a = [0.0f32, 0.0];
        let b = [0.015f32, 0.0];
        assert!(!is_mismatch(&a, &b, 0.02));
        assert!(is_mismatch(&a, &b, 0.01));
        // Strictly greater: a distance equal to the threshold is not a mismatch.
        assert!(!is_mismatch(&a, &[0.5, 0.0], 0.5));
        assert!(is_mismatch(&a, &[0.5, 0.0], 0.499_999));
        // Wrong length and non-finite values always mismatch.
        assert!(is_mismatch(&a, &[0.0], 10.0));
        assert!(is_mismatch(&a, &[f32::NAN, 0.0], 10.0));
        assert!(is_mismatch(&a, &[f32::INFINITY, 0.0], 10.0));
    }

    #[test]
    fn fraud_test_cases_from_the_reference_tests() {
        let (p, f) = fraud_test(0, 100, 0.001, 0.01).unwrap();
        assert!(!f && p > 0.01);
        assert_eq!(p, 1.0);
        let (_, f) = fraud_test(50, 100, 0.001, 0.01).unwrap();
        assert!(f);
        assert_eq!(fraud_test(0, 0, 0.001, 0.01).unwrap(), (1.0, false));
        let (p, _) = fraud_test(1, 10, 0.001, 0.01).unwrap();
        assert!(p < 0.1);
        // Strict comparison: 1 of 10 gives p = 0.00996 < 0.01 -> fraud.
        let (p, f) = fraud_test(1, 10, 0.001, 0.01).unwrap();
        assert!(f, "p = {p}");
        let (p, f) = fraud_test(1, 10, 0.001, p).unwrap();
        assert!(!f, "p == threshold is not fraud ({p})");
    }

    #[test]
    fn compare_counts_and_lists_mismatches() {
        let computed = vec![
            (1, vec![1.0f32, 0.0]),
            (2, vec![0.0, 1.0]),
            (3, vec![0.6, 0.8]),
            (4, vec![0.6, 0.8]),
        ];
        let received = vec![
            art(1, &[1.0, 0.0]),
            art(2, &[1.0, 0.0]), // far
            art(3, &[0.6, 0.8]),
            Artifact {
                nonce: 4,
                vector_b64: "!!".into(),
            }, // malformed
            art(5, &[0.0, 0.0]), // not recomputed: counts in n_total only
        ];
        let r = compare_artifacts(&computed, &received, &StatTest::default()).unwrap();
        assert_eq!(r.n_total, 5);
        assert_eq!(r.n_mismatch, 2);
        assert_eq!(r.mismatch_nonces, vec![2, 4]);
        assert!(r.fraud_detected);
        assert!((r.p_value - binomial_upper_tail(2, 5, 0.001).unwrap()).abs() < 1e-18);
    }

    #[test]
    fn empty_and_wrong_length_received_vectors_mismatch() {
        let computed = vec![(1, vec![1.0f32, 0.0]), (2, vec![1.0f32, 0.0])];
        let received = vec![
            Artifact {
                nonce: 1,
                vector_b64: String::new(),
            },
            art(2, &[1.0, 0.0, 0.0]),
        ];
        let r = compare_artifacts(&computed, &received, &StatTest::default()).unwrap();
        assert_eq!(r.mismatch_nonces, vec![1, 2]);
    }

    #[test]
    fn empty_input_is_not_fraud() {
        let r = compare_artifacts(&[], &[], &StatTest::default()).unwrap();
        assert_eq!(
            r,
            ValidationResult {
                n_total: 0,
                n_mismatch: 0,
                mismatch_nonces: vec![],
                p_value: 1.0,
                fraud_detected: false
            }
        );
    }

    #[test]
    fn duplicates_and_bad_parameters_are_errors() {
        let dup = vec![art(1, &[1.0]), art(1, &[1.0])];
        assert_eq!(
            compare_artifacts(&[], &dup, &StatTest::default()),
            Err(ValidationError::DuplicateNonce {
                nonce: 1,
                side: "received"
            })
        );
        let dup = vec![(1, vec![1.0]), (1, vec![1.0])];
        assert!(matches!(
            compare_artifacts(&dup, &[], &StatTest::default()),
            Err(ValidationError::DuplicateNonce {
                side: "computed",
                ..
            })
        ));
        let bad = StatTest {
            p_mismatch: 1.5,
            ..StatTest::default()
        };
        assert!(matches!(
            compare_artifacts(&[], &[], &bad),
            Err(ValidationError::Parameter {
                name: "p_mismatch",
                ..
            })
        ));
        let bad = StatTest {
            dist_threshold: f64::NAN,
            ..StatTest::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn result_json_has_exactly_the_reference_fields() {
        let r = ValidationResult {
            n_total: 3,
            n_mismatch: 1,
            mismatch_nonces: vec![7],
            p_value: 0.5,
            fraud_detected: false,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"n_total":3,"n_mismatch":1,"mismatch_nonces":[7],"p_value":0.5,"fraud_detected":false}"#
        );
    }
}
