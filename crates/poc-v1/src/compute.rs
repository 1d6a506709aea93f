//! The per-nonce pipeline and validation of PoC v1 (`docs/protocol/compute-v1.md` §6, §9): inputs,
//! forward, last-position logits, the nonce's vocabulary permutation, unit-sphere
//! normalisation (f32), the distance to the round's target (f64), `dist < r_target`; and
//! the validator's binomial test.

use candle_core::{Device, Result, Tensor};
use half::f16;
use serde::{Deserialize, Serialize};

use crate::model::V1Model;
use crate::numpy::Pcg64;
use crate::params::V1Params;

/// `PROBABILITY_MISMATCH` of the v1 validator.
pub const PROBABILITY_MISMATCH: f64 = 5e-4;
/// The api node's default `r_target` (2025-08).
pub const DEFAULT_R_TARGET: f64 = 1.401_356_466_045_817_3;
/// The api node's default fraud threshold.
pub const DEFAULT_FRAUD_THRESHOLD: f64 = 1e-7;

/// The nonce's input embeddings `[L, dim]`: `standard_normal` in f64, then f32, then f16.
pub fn inputs(
    block_hash: &str,
    public_key: &str,
    nonce: i64,
    seq_len: usize,
    dim: usize,
) -> Vec<f16> {
    let mut g = Pcg64::from_string(&format!("{block_hash}_{public_key}_nonce{nonce}"), 4);
    (0..seq_len * dim)
        .map(|_| f16::from_f32(g.standard_normal() as f32))
        .collect()
}

/// The nonce's vocabulary permutation.
pub fn permutation(block_hash: &str, public_key: &str, nonce: i64, vocab: usize) -> Vec<u32> {
    Pcg64::from_string(
        &format!("{block_hash}_{public_key}_nonce_{nonce}_permutations"),
        1,
    )
    .permutation(vocab)
}

/// The round's unit target (no public key in the seed).
pub fn target(block_hash: &str, vocab: usize) -> Vec<f64> {
    let mut g = Pcg64::from_string(&format!("{block_hash}_target"), 1);
    let t: Vec<f64> = (0..vocab).map(|_| g.standard_normal()).collect();
    let n = t.iter().map(|x| x * x).sum::<f64>().sqrt();
    t.into_iter().map(|x| x / n).collect()
}

/// Distance of permuted, normalised logits to the target: `o' = o[perm]` in f32,
/// `o' /= ||o'||` in f32, then `||o' − t||` in f64.
pub fn distance(logits: &[f32], perm: &[u32], target: &[f64]) -> f64 {
    let permuted: Vec<f32> = perm.iter().map(|i| logits[*i as usize]).collect();
    let norm = permuted.iter().map(|x| x * x).sum::<f32>().sqrt();
    permuted
        .iter()
        .zip(target)
        .map(|(o, t)| f64::from(o / norm) - t)
        .map(|d| d * d)
        .sum::<f64>()
        .sqrt()
}

/// One round's compute: the model of a block hash and its target.
pub struct V1Round {
    /// The model.
    pub model: V1Model,
    pub block_hash: String,
    target: Vec<f64>,
}

impl V1Round {
    /// Builds the round's model (CPU unless a device is given).
    pub fn build(params: &V1Params, block_hash: &str, device: &Device) -> Result<Self> {
        Ok(Self {
            model: V1Model::build(params, block_hash, device)?,
            block_hash: block_hash.to_owned(),
            target: target(block_hash, params.vocab_size),
        })
    }

    /// Distances of `nonces` for `public_key`. Each nonce is its own forward, so a
    /// distance never depends on which other nonces were computed with it (fp16 products
    /// of different shapes round differently).
    pub fn distances(&self, public_key: &str, nonces: &[i64]) -> Result<Vec<f64>> {
        let p = self.model.params();
        let (l, d) = (p.seq_len, p.dim);
        let mut out = Vec::with_capacity(nonces.len());
        for n in nonces {
            let x = Tensor::from_vec(
                inputs(&self.block_hash, public_key, *n, l, d),
                (1, l, d),
                self.model.device(),
            )?;
            let logits = self.model.forward(&x)?.squeeze(0)?.to_vec1::<f32>()?;
            out.push(distance(
                &logits,
                &permutation(&self.block_hash, public_key, *n, p.vocab_size),
                &self.target,
            ));
        }
        Ok(out)
    }
}

/// The validator's verdict on a batch (`ValidatedBatch`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Nonces whose recomputed distance is above `r_target`.
    pub n_invalid: u64,
    /// `P(X ≥ n_invalid)`, `X ~ Binomial(n, 5e-4)`; 1 when empty.
    pub probability_honest: f64,
    /// `probability_honest < fraud_threshold`.
    pub fraud_detected: bool,
}

/// The v1 statistical test on recomputed distances.
pub fn verdict(computed: &[f64], r_target: f64, fraud_threshold: f64) -> Verdict {
    let n_invalid = computed.iter().filter(|d| **d > r_target).count() as u64;
    let p = if computed.is_empty() {
        1.0
    } else {
        poc_core::stats::binomial_upper_tail(n_invalid, computed.len() as u64, PROBABILITY_MISMATCH)
            .unwrap_or(1.0)
    };
    Verdict {
        n_invalid,
        probability_honest: p,
        fraud_detected: p < fraud_threshold,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binomial_vectors_of_the_spec() {
        let d = |bad: usize| {
            (0..200)
                .map(|i| if i < bad { 2.0 } else { 1.0 })
                .collect::<Vec<f64>>()
        };
        for (bad, p) in [
            (1, 0.09519),
            (2, 0.004658),
            (3, 1.525e-4),
            (4, 3.738e-6),
            (5, 7.306e-8),
        ] {
            let v = verdict(&d(bad), DEFAULT_R_TARGET, DEFAULT_FRAUD_THRESHOLD);
            assert_eq!(v.n_invalid, bad as u64);
            assert!(
                (v.probability_honest / p - 1.0).abs() < 1e-3,
                "{bad}: {}",
                v.probability_honest
            );
            assert_eq!(v.fraud_detected, bad >= 5);
        }
        assert_eq!(verdict(&[], 1.0, 1e-7).probability_honest, 1.0);
        // Exactly r_target counts as valid.
        assert_eq!(
            verdict(&[DEFAULT_R_TARGET], DEFAULT_R_TARGET, 1e-7).n_invalid,
            0
        );
    }

    #[test]
    fn target_and_permutation_vectors_of_the_spec() {
        let t = target("TEST_BLOCK", 8196);
        assert!((t[0] - 0.003532523604297144).abs() < 1e-17);
        assert!((t[2] - 0.015007055985967351).abs() < 1e-17);
        assert_eq!(
            &permutation("TEST_BLOCK", "test_pub_key", 0, 8196)[..4],
            &[3590, 3737, 3255, 7344]
        );
        let x = inputs("TEST_BLOCK", "test_pub_key", 0, 2, 1792);
        assert_eq!(x[0], f16::from_f32(0.305_481_02));
        assert_eq!(x[1792], f16::from_f32(-0.498_880_84));
    }

    #[test]
    fn tiny_round_is_deterministic_batch_invariant_and_near_the_sphere() {
        let p = V1Params::tiny();
        let r = V1Round::build(&p, "blockhash-1", &Device::Cpu).unwrap();
        let a = r.distances("pk", &[0, 1, 2, 3]).unwrap();
        let b = r.distances("pk", &[2]).unwrap();
        assert_eq!(
            a[2], b[0],
            "a nonce's distance does not depend on its batch"
        );
        assert_eq!(a, r.distances("pk", &[0, 1, 2, 3]).unwrap());
        // Two unit vectors in 8196 dimensions: distances near sqrt(2).
        assert!(a.iter().all(|d| (1.2..1.6).contains(d)), "{a:?}");
        assert_ne!(a, r.distances("other-pk", &[0, 1, 2, 3]).unwrap());
        let r2 = V1Round::build(&p, "blockhash-2", &Device::Cpu).unwrap();
        assert_ne!(a, r2.distances("pk", &[0, 1, 2, 3]).unwrap());
    }
}
