//! Leaf and node hashing (SHA-256 with domain prefixes, `docs/protocol/chain-and-api.md` §6.5).
//!
//! Both hashes are computed on the raw SHA-256 compression function with precomputed
//! padding: a node (65 bytes) is exactly two blocks and a leaf with a vector of up to 50
//! bytes (24 in production) is one block, so no streaming buffer is involved.

use sha2::block_api::compress256;
use sha2::{Digest, Sha256};

/// A 32-byte SHA-256 digest: a leaf hash, a node hash or a root.
pub type Hash = [u8; 32];

/// Domain prefix of leaf hashes.
pub const LEAF_PREFIX: u8 = 0x00;
/// Domain prefix of internal-node hashes.
pub const NODE_PREFIX: u8 = 0x01;

/// SHA-256 initial state.
const IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

fn state_to_hash(state: &[u32; 8]) -> Hash {
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// `SHA-256(0x00 || LE32(nonce) || vector)`; the nonce is taken as its two's-complement
/// 32-bit pattern.
pub fn hash_leaf(nonce: i32, vector: &[u8]) -> Hash {
    let len = 5 + vector.len();
    if len <= 55 {
        let mut block = [0u8; 64];
        block[0] = LEAF_PREFIX;
        block[1..5].copy_from_slice(&nonce.to_le_bytes());
        block[5..len].copy_from_slice(vector);
        block[len] = 0x80;
        block[56..].copy_from_slice(&((len as u64) * 8).to_be_bytes());
        let mut state = IV;
        compress256(&mut state, &[block]);
        return state_to_hash(&state);
    }
    let mut h = Sha256::new();
    h.update([LEAF_PREFIX]);
    h.update(nonce.to_le_bytes());
    h.update(vector);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn hash_node(left: &Hash, right: &Hash) -> Hash {
    let mut blocks = [[0u8; 64]; 2];
    blocks[0][0] = NODE_PREFIX;
    blocks[0][1..33].copy_from_slice(left);
    blocks[0][33..64].copy_from_slice(&right[..31]);
    blocks[1][0] = right[31];
    blocks[1][1] = 0x80;
    blocks[1][56..].copy_from_slice(&(65u64 * 8).to_be_bytes());
    let mut state = IV;
    compress256(&mut state, &blocks);
    state_to_hash(&state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference_leaf(nonce: i32, vector: &[u8]) -> Hash {
        let mut data = vec![LEAF_PREFIX];
        data.extend_from_slice(&nonce.to_le_bytes());
        data.extend_from_slice(vector);
        Sha256::digest(&data).into()
    }

    #[test]
    fn fast_paths_equal_plain_sha256() {
        for len in 0..120 {
            let v: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            for nonce in [0, 1, -1, i32::MAX, i32::MIN, 123_456] {
                assert_eq!(hash_leaf(nonce, &v), reference_leaf(nonce, &v), "len {len}");
            }
        }
        let l = [7u8; 32];
        let mut r = [9u8; 32];
        r[31] = 0xee;
        let mut data = vec![NODE_PREFIX];
        data.extend_from_slice(&l);
        data.extend_from_slice(&r);
        let want: Hash = Sha256::digest(&data).into();
        assert_eq!(hash_node(&l, &r), want);
    }

    #[test]
    fn nonce_is_little_endian_twos_complement() {
        let a = hash_leaf(-1, &[1, 2]);
        let mut data = vec![0u8, 0xff, 0xff, 0xff, 0xff, 1, 2];
        assert_eq!(a, <Hash>::from(Sha256::digest(&data)));
        data[1] = 0xfe;
        assert_ne!(a, <Hash>::from(Sha256::digest(&data)));
    }
}
