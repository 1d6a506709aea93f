//! Seed strings and the string → 32-bit seed function.
//!
//! Every random quantity of PoC v2 is derived from a UTF-8 string built from the round's
//! block hash, the participant's public key and the nonce. The strings below are normative
//! (`docs/protocol/compute-v2.md` §1.6): any change of spelling, case or separator changes every vector.
//! `block_hash` and `public_key` are opaque and used verbatim.

use sha2::{Digest, Sha256};

/// SHA-256 of the UTF-8 bytes of `s`.
pub fn sha256(s: &str) -> [u8; 32] {
    let digest = Sha256::digest(s.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(&digest);
    out
}

/// `_seed_from_string`: the first four SHA-256 digest bytes of `s`, read as a big-endian u32.
pub fn seed_from_string(s: &str) -> u32 {
    let d = sha256(s);
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// The eight big-endian u32 words of SHA-256(`s`), used by the stronger-RNG input generator
/// (`docs/protocol/compute-v2.md` §1.7). Word 0 equals [`seed_from_string`].
pub fn sub_seeds_from_string(s: &str) -> [u32; 8] {
    let d = sha256(s);
    let mut out = [0u32; 8];
    for (m, word) in out.iter_mut().enumerate() {
        *word = u32::from_be_bytes([d[4 * m], d[4 * m + 1], d[4 * m + 2], d[4 * m + 3]]);
    }
    out
}

/// `"{block_hash}_{public_key}_nonce{nonce}"` (no `_` between `nonce` and the number):
/// the per-nonce input embeddings.
pub fn inputs_seed_string(block_hash: &str, public_key: &str, nonce: i64) -> String {
    format!("{block_hash}_{public_key}_nonce{nonce}")
}

/// `"{block_hash}_layer_{layer}_householder"`: the reflection vector of decoder layer
/// `layer` (global index). It has no public key: one set per round, shared by every node.
pub fn layer_seed_string(block_hash: &str, layer: usize) -> String {
    format!("{block_hash}_layer_{layer}_householder")
}

/// `"{block_hash}_{public_key}_nonce_{nonce}_pick_{k}"`: scores of the k-dim pick.
pub fn pick_seed_string(block_hash: &str, public_key: &str, nonce: i64, k: usize) -> String {
    format!("{block_hash}_{public_key}_nonce_{nonce}_pick_{k}")
}

/// `"{block_hash}_{public_key}_nonce_{nonce}_haar_hh_{k}_{j}"`: Haar-chain reflection `j`.
pub fn haar_seed_string(
    block_hash: &str,
    public_key: &str,
    nonce: i64,
    k: usize,
    j: usize,
) -> String {
    format!("{block_hash}_{public_key}_nonce_{nonce}_haar_hh_{k}_{j}")
}

/// `"{block_hash}_{public_key}_target"`: the r_target-era target vector. Not used by the
/// artifact pipeline; kept because the reference still defines it.
pub fn target_seed_string(block_hash: &str, public_key: &str) -> String {
    format!("{block_hash}_{public_key}_target")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_nonces_format_like_python_str() {
        assert_eq!(inputs_seed_string("b", "k", -7), "b_k_nonce-7");
        assert_eq!(pick_seed_string("b", "k", -7, 12), "b_k_nonce_-7_pick_12");
    }
}
