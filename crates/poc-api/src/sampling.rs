//! Auditable leaf sampling: which leaves a validator asks a participant to prove.
//!
//! A pure function of public data, so anyone can recompute a validator's sample:
//!
//! 1. If `sample_size >= count`, every index `0..count` in order.
//! 2. Otherwise `seed = SHA-256("poc-v2-leaf-sample/v1|" + validator_hex_pubkey + "|" +
//!    block_hash + "|" + stage_height)` — the validator's compressed public key and the
//!    hash of the block at which the stage's validation starts, both lowercase hex; the
//!    stage height in decimal.
//! 3. A stream of 64-bit words: block `b` is `SHA-256(seed ‖ LE64(b))`, read as four
//!    little-endian `u64`s, for b = 0, 1, 2, …
//! 4. `uniform(m)`: take the next word `x`; reject it while `x >= floor(2^64 / m) · m`;
//!    return `x mod m` (no modulo bias).
//! 5. Partial Fisher–Yates over the virtual array `0..count`: for `i` in `0..sample_size`,
//!    `j = i + uniform(count − i)`, swap positions `i` and `j`, emit position `i`.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

struct WordStream {
    seed: [u8; 32],
    block: u64,
    words: [u64; 4],
    next: usize,
}

impl WordStream {
    fn new(seed: [u8; 32]) -> Self {
        Self {
            seed,
            block: 0,
            words: [0; 4],
            next: 4,
        }
    }

    fn word(&mut self) -> u64 {
        if self.next == 4 {
            let mut h = Sha256::new();
            h.update(self.seed);
            h.update(self.block.to_le_bytes());
            let d = h.finalize();
            for (i, w) in self.words.iter_mut().enumerate() {
                *w = u64::from_le_bytes(d[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
            }
            self.block += 1;
            self.next = 0;
        }
        self.next += 1;
        self.words[self.next - 1]
    }

    fn uniform(&mut self, m: u64) -> u64 {
        let zone = (u64::MAX / m) * m;
        loop {
            let x = self.word();
            if x < zone {
                return x % m;
            }
        }
    }
}

/// The sampling seed (step 2).
pub fn sample_seed(validator_hex_pubkey: &str, block_hash: &str, stage_height: i64) -> [u8; 32] {
    let text = format!(
        "poc-v2-leaf-sample/v1|{}|{}|{stage_height}",
        validator_hex_pubkey.to_ascii_lowercase(),
        block_hash.to_ascii_lowercase()
    );
    Sha256::digest(text.as_bytes()).into()
}

/// The leaf indices a validator requests (see the module docs).
pub fn sample_leaf_indices(
    validator_hex_pubkey: &str,
    block_hash: &str,
    stage_height: i64,
    count: u32,
    sample_size: u32,
) -> Vec<u32> {
    if sample_size >= count {
        return (0..count).collect();
    }
    let mut rng = WordStream::new(sample_seed(validator_hex_pubkey, block_hash, stage_height));
    let mut swapped: HashMap<u32, u32> = HashMap::with_capacity(sample_size as usize * 2);
    let mut out = Vec::with_capacity(sample_size as usize);
    for i in 0..sample_size {
        let j = i + rng.uniform(u64::from(count - i)) as u32;
        let vi = swapped.get(&i).copied().unwrap_or(i);
        let vj = swapped.get(&j).copied().unwrap_or(j);
        swapped.insert(j, vi);
        out.push(vj);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn small_counts_take_everything_in_order() {
        assert_eq!(
            sample_leaf_indices("02ab", "ff", 7, 5, 200),
            vec![0, 1, 2, 3, 4]
        );
        assert_eq!(
            sample_leaf_indices("02ab", "ff", 7, 5, 5),
            vec![0, 1, 2, 3, 4]
        );
        assert!(sample_leaf_indices("02ab", "ff", 7, 0, 3).is_empty());
    }

    #[test]
    fn matches_a_plain_fisher_yates_on_a_real_array() {
        // The swap-map version equals the textbook shuffle of an explicit array.
        let (key, hash, h, count, k) = ("03deadbeef", "ABCDEF", 123, 1000u32, 200u32);
        let mut rng = WordStream::new(sample_seed(key, hash, h));
        let mut a: Vec<u32> = (0..count).collect();
        let mut want = vec![];
        for i in 0..k as usize {
            let j = i + rng.uniform((count as usize - i) as u64) as usize;
            a.swap(i, j);
            want.push(a[i]);
        }
        assert_eq!(sample_leaf_indices(key, hash, h, count, k), want);
        // Hex case does not matter; every input does.
        assert_eq!(
            sample_leaf_indices("03DEADBEEF", "abcdef", h, count, k),
            want
        );
        assert_ne!(sample_leaf_indices(key, hash, h + 1, count, k), want);
        assert_ne!(sample_leaf_indices("03deadbeee", hash, h, count, k), want);
        assert_ne!(sample_leaf_indices(key, "ABCDEE", h, count, k), want);
    }

    #[test]
    fn first_word_is_the_documented_derivation() {
        let seed = sample_seed("02aa", "bb", 5);
        assert_eq!(
            seed,
            <[u8; 32]>::from(Sha256::digest(b"poc-v2-leaf-sample/v1|02aa|bb|5"))
        );
        let mut h = Sha256::new();
        h.update(seed);
        h.update(0u64.to_le_bytes());
        let d = h.finalize();
        let w0 = u64::from_le_bytes(d[..8].try_into().unwrap());
        let mut s = WordStream::new(seed);
        assert_eq!(s.word(), w0);
    }

    proptest! {
        #[test]
        fn samples_are_distinct_and_in_range(count in 1u32..5000, k in 0u32..600, h in any::<i64>()) {
            let s = sample_leaf_indices("02ff", "00", h, count, k);
            prop_assert_eq!(s.len() as u32, k.min(count));
            let set: std::collections::HashSet<u32> = s.iter().copied().collect();
            prop_assert_eq!(set.len(), s.len());
            prop_assert!(s.iter().all(|i| *i < count));
        }
    }
}
