//! The k-dim pick (`random_pick_indices`, `docs/protocol/compute-v2.md` §2.7).
//!
//! Each of the `dim` hidden dimensions gets the score `murmur(d, seed)` with
//! `seed = seed("{block_hash}_{public_key}_nonce_{nonce}_pick_{k}")`; the `k` dimensions
//! with the **smallest** scores are chosen.
//!
//! The order of the chosen indices matters (it is the coordinate order fed to the Haar
//! chain). The normative order is the one PyTorch's CUDA `topk(sorted=False)` produces:
//! first every index whose score is strictly smaller than the k-th smallest score, in
//! ascending index order, then the indices whose score equals the k-th smallest score,
//! in ascending index order, until `k` are written. Without a tie at the k-th score this
//! is "the k−1 smallest-score indices in ascending index order, then the index of the
//! k-th smallest score". With a tie there, the lower indices win.

use thiserror::Error;

use crate::rng::fill_hashes;
use crate::seed::{pick_seed_string, seed_from_string};

/// Why a pick (or a Haar chain, which shares the `k_dim` rule) cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KDimError {
    /// `k_dim` was zero.
    #[error("k_dim must be at least 1")]
    Zero,
    /// `k_dim` was larger than the vector it picks from.
    #[error("k_dim {k} exceeds the hidden size {dim}")]
    TooLarge {
        /// Requested `k_dim`.
        k: usize,
        /// Size of the vector picked from.
        dim: usize,
    },
}

/// Checks `1 <= k <= dim`.
pub fn check_k_dim(k: usize, dim: usize) -> Result<(), KDimError> {
    if k == 0 {
        Err(KDimError::Zero)
    } else if k > dim {
        Err(KDimError::TooLarge { k, dim })
    } else {
        Ok(())
    }
}

/// The pick scores `murmur(d, seed)` for `d = 0..dim`.
pub fn pick_scores(
    block_hash: &str,
    public_key: &str,
    nonce: i64,
    k: usize,
    dim: usize,
) -> Vec<u32> {
    let seed = seed_from_string(&pick_seed_string(block_hash, public_key, nonce, k));
    let mut scores = vec![0u32; dim];
    fill_hashes(seed, 0, &mut scores);
    scores
}

/// The `k` indices with the smallest scores, in the normative CUDA order (module docs).
pub fn pick_from_scores(scores: &[u32], k: usize) -> Result<Vec<usize>, KDimError> {
    check_k_dim(k, scores.len())?;
    let mut sorted = scores.to_vec();
    let (_, &mut kth, _) = sorted.select_nth_unstable(k - 1);
    let mut chosen: Vec<usize> = scores
        .iter()
        .enumerate()
        .filter(|&(_, &s)| s < kth)
        .map(|(d, _)| d)
        .collect();
    let missing = k - chosen.len();
    chosen.extend(
        scores
            .iter()
            .enumerate()
            .filter(|&(_, &s)| s == kth)
            .map(|(d, _)| d)
            .take(missing),
    );
    Ok(chosen)
}

/// `random_pick_indices` for one nonce: `k` of the `dim` dimensions, CUDA order.
pub fn pick_indices(
    block_hash: &str,
    public_key: &str,
    nonce: i64,
    k: usize,
    dim: usize,
) -> Result<Vec<usize>, KDimError> {
    check_k_dim(k, dim)?;
    pick_from_scores(&pick_scores(block_hash, public_key, nonce, k, dim), k)
}

/// `out[j] = x[indices[j]]`.
///
/// # Panics
/// If an index is out of range.
pub fn gather(x: &[f32], indices: &[usize]) -> Vec<f32> {
    indices.iter().map(|&i| x[i]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k_out_of_range_is_an_error() {
        assert_eq!(pick_indices("b", "k", 0, 0, 10), Err(KDimError::Zero));
        assert_eq!(
            pick_indices("b", "k", 0, 11, 10),
            Err(KDimError::TooLarge { k: 11, dim: 10 })
        );
        assert_eq!(pick_indices("b", "k", 0, 10, 10).unwrap().len(), 10);
        assert_eq!(
            KDimError::TooLarge { k: 11, dim: 10 }.to_string(),
            "k_dim 11 exceeds the hidden size 10"
        );
    }

    #[test]
    fn order_is_strictly_smaller_ascending_then_kth() {
        // Indices:      0   1   2   3   4   5
        let scores = [50, 10, 40, 20, 30, 60];
        // 3 smallest: 10 (1), 20 (3), 30 (4): the k-th is 30 at 4, the others ascending.
        assert_eq!(pick_from_scores(&scores, 3).unwrap(), vec![1, 3, 4]);
        // 4 smallest: k-th is 40 at 2, so [1, 3, 4] then 2.
        assert_eq!(pick_from_scores(&scores, 4).unwrap(), vec![1, 3, 4, 2]);
        assert_eq!(pick_from_scores(&scores, 1).unwrap(), vec![1]);
        assert_eq!(
            pick_from_scores(&scores, 6).unwrap(),
            vec![0, 1, 2, 3, 4, 5]
        );
    }

    #[test]
    fn ties_at_the_kth_score_take_lower_indices_after_the_strictly_smaller() {
        // Scores: idx 10 has 5, idx 1, 2, 8 have 7.
        let mut scores = vec![100u32; 12];
        scores[10] = 5;
        scores[1] = 7;
        scores[2] = 7;
        scores[8] = 7;
        assert_eq!(pick_from_scores(&scores, 3).unwrap(), vec![10, 1, 2]);
        assert_eq!(pick_from_scores(&scores, 2).unwrap(), vec![10, 1]);
        assert_eq!(pick_from_scores(&scores, 4).unwrap(), vec![10, 1, 2, 8]);
        // A tie below the k-th score keeps ascending index order.
        let scores = [3u32, 1, 1, 2];
        assert_eq!(pick_from_scores(&scores, 3).unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn gather_follows_the_index_order() {
        let x = [0.0, 1.0, 2.0, 3.0];
        assert_eq!(gather(&x, &[3, 0, 2]), vec![3.0, 0.0, 2.0]);
    }
}
