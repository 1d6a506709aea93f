//! The set of stored nonces (duplicate detection), with a fast keyed hash for `i32`.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};

/// A keyed multiplicative hash for 32-bit nonces. The key is random per process
/// (taken from the standard library's randomly seeded hasher), so colliding nonce sets
/// cannot be precomputed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NonceHashBuilder {
    key: u64,
}

impl Default for NonceHashBuilder {
    fn default() -> Self {
        let key = std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64);
        Self { key: key | 1 }
    }
}

impl BuildHasher for NonceHashBuilder {
    type Hasher = NonceHasher;

    fn build_hasher(&self) -> NonceHasher {
        NonceHasher {
            key: self.key,
            state: 0,
        }
    }
}

/// See [`NonceHashBuilder`].
pub(crate) struct NonceHasher {
    key: u64,
    state: u64,
}

impl Hasher for NonceHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.state = (self.state.rotate_left(8) ^ u64::from(b)).wrapping_mul(self.key);
        }
    }

    /// Nonces arrive in long arithmetic runs (`NonceIterator`), so the hash keeps the low 8
    /// bits of the nonce and mixes only the rest: each run of 256 nonces fills nearby
    /// buckets (cache-friendly inserts and lookups), while the blocks themselves, and the
    /// top bits the table uses as tags, are spread by the keyed mix.
    fn write_i32(&mut self, n: i32) {
        let n = u64::from(n as u32);
        let m = ((n >> 8) ^ self.key.rotate_left(32)).wrapping_mul(self.key);
        let m = m ^ (m >> 29);
        self.state = (m.wrapping_mul(0x9e37_79b9_7f4a_7c15) & !0xff) | (n & 0xff);
    }

    fn finish(&self) -> u64 {
        self.state
    }
}

/// The nonce set type used by the store.
pub(crate) type NonceSet = HashSet<i32, NonceHashBuilder>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_a_set() {
        let mut s = NonceSet::default();
        for i in -1000..1000 {
            assert!(s.insert(i * 7));
        }
        for i in -1000..1000 {
            assert!(!s.insert(i * 7));
            assert!(s.contains(&(i * 7)));
            assert!(!s.contains(&(i * 7 + 1)));
        }
    }

    #[test]
    fn keys_differ_between_builders() {
        let (a, b) = (NonceHashBuilder::default(), NonceHashBuilder::default());
        assert_ne!(a.hash_one(5i32), b.hash_one(5i32));
    }
}
