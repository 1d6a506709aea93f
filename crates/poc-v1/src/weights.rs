//! Weight initialisation from the block hash: the pool scheme (`docs/protocol/compute-v1.md` §5).

use half::f16;
use sha2::{Digest, Sha256};

use crate::numpy::Pcg64;
use crate::params::V1Params;

/// Smallest pool.
pub const MIN_POOL: u64 = 50_000;

/// `max(50000, int(total × 0.05))`.
pub fn pool_size(total: u64) -> u64 {
    MIN_POOL.max((total as f64 * 0.05) as u64)
}

/// `int(sha256(f"{block_hash}_{name}").hexdigest()[:8], 16)`.
pub fn name_hash(block_hash: &str, name: &str) -> u64 {
    let d = Sha256::digest(format!("{block_hash}_{name}").as_bytes());
    u64::from(u32::from_be_bytes([d[0], d[1], d[2], d[3]]))
}

/// Start of a parameter's slice in the pool (`numel ≤ pool`).
pub fn offset(block_hash: &str, name: &str, numel: u64, pool: u64) -> u64 {
    name_hash(block_hash, name) % (pool - numel + 1)
}

/// The pool: `normal(0, 0.02, size)` in f64, rounded to f32, then to f16.
pub fn pool_values(block_hash: &str, size: u64) -> Vec<f16> {
    let mut g = Pcg64::from_string(block_hash, 4);
    (0..size)
        .map(|_| f16::from_f32(g.normal(0.0, 0.02) as f32))
        .collect()
}

/// Every parameter's values (row-major), by name, in `parameters()` order.
pub fn init_weights(p: &V1Params, block_hash: &str) -> Vec<(String, Vec<usize>, Vec<f16>)> {
    let params = p.parameters();
    let total = p.total_parameters();
    let pool_n = pool_size(total);
    let pool = pool_values(block_hash, pool_n);
    params
        .into_iter()
        .map(|(name, shape)| {
            let numel = shape.iter().product::<usize>() as u64;
            let values = if numel <= pool_n {
                let s = offset(block_hash, &name, numel, pool_n) as usize;
                pool[s..s + numel as usize].to_vec()
            } else {
                // Tile the pool, then rotate left by name_hash mod numel.
                let mut v: Vec<f16> = Vec::with_capacity(numel as usize);
                while (v.len() as u64) < numel {
                    let take = (numel - v.len() as u64).min(pool_n) as usize;
                    v.extend_from_slice(&pool[..take]);
                }
                let r = (name_hash(block_hash, &name) % numel) as usize;
                v.rotate_left(r);
                v
            };
            (name, shape, values)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mainnet_pool_and_offsets_match_the_spec() {
        let m = V1Params::mainnet();
        let pool = pool_size(m.total_parameters());
        assert_eq!(pool, 888_156_147);
        let cases = [
            ("tok_embeddings.weight", 14_687_232u64, 782_503_937u64),
            ("layers.0.attention.wq.weight", 3_211_264, 353_184_087),
            ("layers.0.feed_forward.w1.weight", 88_080_384, 155_479_131),
            ("layers.0.attention_norm.weight", 1792, 401_905_904),
            ("norm.weight", 1792, 272_944_462),
            ("output.weight", 14_687_232, 581_136_552),
        ];
        for (name, numel, want) in cases {
            assert_eq!(offset("TEST_BLOCK", name, numel, pool), want, "{name}");
        }
        let v = pool_values("TEST_BLOCK", 6);
        let want = [
            -0.02223206f32,
            0.01236725,
            0.03044128,
            -0.00603867,
            -0.01464844,
            0.00024939,
        ];
        for (a, b) in v.iter().zip(want) {
            assert!((a.to_f32() - b).abs() < 1e-8, "{a} vs {b}");
        }
    }

    #[test]
    fn tiling_when_the_pool_is_smaller() {
        let p = V1Params::tiny();
        let w = init_weights(&p, "abc");
        let total: usize = w.iter().map(|(_, _, v)| v.len()).sum();
        assert_eq!(total as u64, p.total_parameters());
        assert!(
            w.iter()
                .all(|(_, s, v)| s.iter().product::<usize>() == v.len())
        );
        // The 8196×64 embedding is larger than the pool: tiled and rotated.
        let n = pool_size(p.total_parameters());
        let emb = &w[0].2;
        assert!(emb.len() as u64 > n);
        let pool = pool_values("abc", n);
        let r = (name_hash("abc", "tok_embeddings.weight") % emb.len() as u64) as usize;
        assert_eq!(emb[0], pool[r % n as usize]);
        assert_eq!(emb[emb.len() - r], pool[0]);
    }
}
