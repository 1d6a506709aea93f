//! Per-nonce input embeddings (`docs/protocol/compute-v2.md` §1.6, §1.7, §2.1).
//!
//! The input of nonce `n` is `_normal(seed("{block_hash}_{public_key}_nonce{n}"), L*H)`
//! viewed row-major as `[L, H]` (token `t`, channel `d` is element `t*H + d`). The model
//! later casts it to its compute dtype and feeds it as `inputs_embeds`.

use serde::{Deserialize, Serialize};

use crate::rng::{NormalChunk, split_normals};
use crate::seed::{inputs_seed_string, seed_from_string, sub_seeds_from_string};

/// Which input generator a PoC request selects (`poc_stronger_rng`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputRng {
    /// One 32-bit seed, one block-layout draw of `L*H` normals (the default).
    #[default]
    Standard,
    /// "Concat-murmur": all 32 digest bytes as eight sub-seeds, eight segments of
    /// `ceil(L*H / 8)` normals, each with its own block layout (§1.7).
    Stronger,
}

impl InputRng {
    /// The generator selected by the request flag `poc_stronger_rng`.
    pub fn from_stronger_flag(stronger: bool) -> Self {
        if stronger {
            Self::Stronger
        } else {
            Self::Standard
        }
    }
}

/// Fills `out` (length `L*H`, row-major `[L, H]`) with the inputs of one nonce.
pub fn fill_inputs(block_hash: &str, public_key: &str, nonce: i64, rng: InputRng, out: &mut [f32]) {
    for chunk in split_inputs(block_hash, public_key, nonce, rng, out, usize::MAX) {
        chunk.fill();
    }
}

/// The inputs of one nonce as a new `[seq_len, hidden]` row-major vector.
pub fn generate_inputs(
    block_hash: &str,
    public_key: &str,
    nonce: i64,
    rng: InputRng,
    seq_len: usize,
    hidden: usize,
) -> Vec<f32> {
    let mut out = vec![0f32; seq_len * hidden];
    fill_inputs(block_hash, public_key, nonce, rng, &mut out);
    out
}

/// Splits the input generation of one nonce into independent chunks of at most
/// `max_pairs` Box–Muller pairs. Filling all of them (on any threads, in any order) gives
/// exactly [`fill_inputs`]; this is how callers spread one nonce over several cores.
pub fn split_inputs<'a>(
    block_hash: &str,
    public_key: &str,
    nonce: i64,
    rng: InputRng,
    out: &'a mut [f32],
    max_pairs: usize,
) -> Vec<NormalChunk<'a>> {
    let seed_string = inputs_seed_string(block_hash, public_key, nonce);
    match rng {
        InputRng::Standard => split_normals(seed_from_string(&seed_string), out, max_pairs),
        InputRng::Stronger => {
            let seeds = sub_seeds_from_string(&seed_string);
            let seg = out.len().div_ceil(8).max(1);
            out.chunks_mut(seg)
                .zip(seeds)
                .flat_map(|(segment, seed)| split_normals(seed, segment, max_pairs))
                .collect()
        }
    }
}

/// The stronger-RNG inputs computed the plain way (one segment after another); used to
/// check [`split_inputs`].
#[cfg(test)]
fn stronger_inputs_plain(block_hash: &str, public_key: &str, nonce: i64, n: usize) -> Vec<f32> {
    use crate::rng::fill_normals;
    let seeds = sub_seeds_from_string(&inputs_seed_string(block_hash, public_key, nonce));
    let seg = n.div_ceil(8);
    let mut out = vec![0f32; n];
    for (m, seed) in seeds.iter().enumerate() {
        let start = m * seg;
        if start >= n {
            break;
        }
        let end = (start + seg).min(n);
        fill_normals(*seed, &mut out[start..end]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BH: &str = "TEST_BLOCK";
    const PK: &str = "test_pub_keys";

    #[test]
    fn stronger_inputs_on_lengths_not_divisible_by_eight() {
        for n in [1usize, 2, 7, 9, 15, 17, 63, 100, 1001] {
            let mut x = vec![f32::NAN; n];
            fill_inputs(BH, PK, 3, InputRng::Stronger, &mut x);
            assert_eq!(x, stronger_inputs_plain(BH, PK, 3, n), "n = {n}");
        }
    }

    #[test]
    fn split_inputs_equals_fill_inputs() {
        for rng in [InputRng::Standard, InputRng::Stronger] {
            let whole = generate_inputs(BH, PK, 9, rng, 16, 96);
            let mut parts = vec![f32::NAN; 16 * 96];
            for c in split_inputs(BH, PK, 9, rng, &mut parts, 37) {
                c.fill();
            }
            assert_eq!(whole, parts);
        }
    }

    #[test]
    fn inputs_depend_on_every_seed_component() {
        let base = generate_inputs(BH, PK, 0, InputRng::Standard, 4, 64);
        assert_eq!(base, generate_inputs(BH, PK, 0, InputRng::Standard, 4, 64));
        assert_ne!(base, generate_inputs(BH, PK, 1, InputRng::Standard, 4, 64));
        assert_ne!(
            base,
            generate_inputs("TEST_BLOCK2", PK, 0, InputRng::Standard, 4, 64)
        );
        assert_ne!(
            base,
            generate_inputs(BH, "other", 0, InputRng::Standard, 4, 64)
        );
        assert_ne!(
            base,
            generate_inputs("test_block", PK, 0, InputRng::Standard, 4, 64)
        );
    }

    #[test]
    fn input_statistics_look_standard_normal() {
        let x = generate_inputs(BH, PK, 0, InputRng::Standard, 256, 4096);
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        let kurt = x.iter().map(|&v| (v as f64 - mean).powi(4)).sum::<f64>() / n / (var * var);
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var.sqrt() - 1.0).abs() < 0.01, "std {}", var.sqrt());
        assert!((kurt - 3.0).abs() < 0.1, "kurtosis {kurt}");
    }

    #[test]
    fn stronger_flag_maps_to_generator() {
        assert_eq!(InputRng::from_stronger_flag(true), InputRng::Stronger);
        assert_eq!(InputRng::from_stronger_flag(false), InputRng::Standard);
        assert_eq!(InputRng::default(), InputRng::Standard);
    }
}
