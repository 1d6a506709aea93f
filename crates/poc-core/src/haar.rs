//! The Haar-like rotation of the picked coordinates (`docs/protocol/compute-v2.md` §2.9): k−1 random
//! Householder reflections applied in the order j = 0, 1, …, k−2, all in f32.

use crate::householder::reflect;
use crate::pick::{KDimError, check_k_dim};
use crate::rng::unit_normal_vector;
use crate::seed::{haar_seed_string, seed_from_string};

/// The unit vector of Haar step `j` (`k` normals, seed
/// `"{block_hash}_{public_key}_nonce_{nonce}_haar_hh_{k}_{j}"`).
pub fn haar_vector(block_hash: &str, public_key: &str, nonce: i64, k: usize, j: usize) -> Vec<f32> {
    unit_normal_vector(
        seed_from_string(&haar_seed_string(block_hash, public_key, nonce, k, j)),
        k,
    )
}

/// Rotates `y` (length `k = y.len()`) in place: for j = 0..k−2, `y ← y − 2 (y·w_j) w_j`.
pub fn haar_rotate(
    block_hash: &str,
    public_key: &str,
    nonce: i64,
    y: &mut [f32],
) -> Result<(), KDimError> {
    let k = y.len();
    check_k_dim(k, k)?;
    for j in 0..k - 1 {
        reflect(y, &haar_vector(block_hash, public_key, nonce, k, j));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{dot, l2_norm};

    #[test]
    fn k_zero_is_an_error_and_k_one_is_identity() {
        assert_eq!(haar_rotate("b", "k", 0, &mut []), Err(KDimError::Zero));
        let mut y = [0.5f32];
        haar_rotate("b", "k", 0, &mut y).unwrap();
        assert_eq!(y, [0.5]);
    }

    #[test]
    fn rotation_is_orthogonal_on_a_basis() {
        let k = 12;
        let basis: Vec<Vec<f32>> = (0..k)
            .map(|i| {
                let mut e = vec![0f32; k];
                e[i] = 1.0;
                haar_rotate("b", "k", 7, &mut e).unwrap();
                e
            })
            .collect();
        for i in 0..k {
            for j in 0..k {
                let d = dot(&basis[i], &basis[j]);
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((d - want).abs() < 1e-5, "<e{i}, e{j}> = {d}");
            }
        }
        assert!((l2_norm(&basis[0]) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn rotation_depends_on_the_nonce() {
        let mut a = [1.0f32, 0.0, 0.0, 0.0];
        let mut b = a;
        haar_rotate("b", "k", 1, &mut a).unwrap();
        haar_rotate("b", "k", 2, &mut b).unwrap();
        assert_ne!(a, b);
    }
}
