//! From the last-token hidden state to the artifact vector (`docs/protocol/compute-v2.md` §2.6–§2.10):
//! sphere-normalise, pick k dimensions (CUDA order), gather, Haar-rotate, normalise again,
//! round to FP16. Everything is f32, with the reference's literal `+ 1e-8` epsilons.

use half::f16;

use crate::artifact::{Artifact, encode_f16};
use crate::haar::haar_rotate;
use crate::pick::{KDimError, gather, pick_indices};
use crate::rng::l2_norm;

/// The epsilon of both normalisations, `f32(1e-8)` = 9.99999994e-09.
pub const NORM_EPS: f32 = 1e-8;

/// `x / (||x||_2 + 1e-8)` in f32.
pub fn sphere_normalize(x: &[f32]) -> Vec<f32> {
    let denom = l2_norm(x) + NORM_EPS;
    x.iter().map(|&v| v / denom).collect()
}

/// The picked, rotated and normalised k values of one nonce, before the FP16 cast.
pub fn project_hidden_f32(
    block_hash: &str,
    public_key: &str,
    nonce: i64,
    hidden_state: &[f32],
    k: usize,
) -> Result<Vec<f32>, KDimError> {
    let x = sphere_normalize(hidden_state);
    let chosen = pick_indices(block_hash, public_key, nonce, k, hidden_state.len())?;
    let mut y = gather(&x, &chosen);
    haar_rotate(block_hash, public_key, nonce, &mut y)?;
    Ok(sphere_normalize(&y))
}

/// The artifact vector of one nonce (k FP16 values) from its last-token hidden state
/// (after the final norm, as f32). A non-finite hidden state gives non-finite values;
/// callers decide whether to drop such nonces.
pub fn project_hidden(
    block_hash: &str,
    public_key: &str,
    nonce: i64,
    hidden_state: &[f32],
    k: usize,
) -> Result<Vec<f16>, KDimError> {
    Ok(
        project_hidden_f32(block_hash, public_key, nonce, hidden_state, k)?
            .into_iter()
            .map(f16::from_f32)
            .collect(),
    )
}

/// [`project_hidden`] encoded as a wire artifact.
pub fn artifact_from_hidden(
    block_hash: &str,
    public_key: &str,
    nonce: i64,
    hidden_state: &[f32],
    k: usize,
) -> Result<Artifact, KDimError> {
    let v = project_hidden(block_hash, public_key, nonce, hidden_state, k)?;
    Ok(Artifact {
        nonce,
        vector_b64: encode_f16(&v),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_unit_norm_and_deterministic() {
        let h: Vec<f32> = (0..256).map(|d| ((d * 37) % 101) as f32 - 50.0).collect();
        let a = project_hidden_f32("b", "k", 5, &h, 12).unwrap();
        assert!((l2_norm(&a) - 1.0).abs() < 1e-6);
        assert_eq!(a, project_hidden_f32("b", "k", 5, &h, 12).unwrap());
        assert_ne!(a, project_hidden_f32("b", "k", 6, &h, 12).unwrap());
    }

    #[test]
    fn invalid_k_is_reported() {
        let h = vec![1.0f32; 8];
        assert_eq!(project_hidden("b", "k", 0, &h, 0), Err(KDimError::Zero));
        assert_eq!(
            project_hidden("b", "k", 0, &h, 9),
            Err(KDimError::TooLarge { k: 9, dim: 8 })
        );
    }

    #[test]
    fn epsilon_is_the_f32_of_1e_minus_8() {
        assert_eq!(NORM_EPS, 1e-8);
        assert_eq!(sphere_normalize(&[0.0, 0.0]), vec![0.0, 0.0]);
    }
}
