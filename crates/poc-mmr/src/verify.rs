//! The strict proof verifier.
//!
//! A proof for `(leaf_index, count)` must have **exactly** `h + (#peaks − 1)` items, where
//! `h` is the height of the leaf's mountain in the snapshot of `count` leaves: the first
//! `h` are folded from the leaf up (the current node is the left child iff the local
//! index bit at that level is 0), the peak so obtained is put back at its place among the
//! remaining items (the other peaks, left to right), and the peaks are bagged right to
//! left. The reference verifier ignores surplus trailing items; an honest prover never
//! sends any, so rejecting them is compatible.

use thiserror::Error;

use crate::hash::{Hash, hash_leaf, hash_node};

/// Why a proof does not verify.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VerifyError {
    /// The snapshot is empty: nothing can be proven against it.
    #[error("the snapshot count is 0")]
    EmptySnapshot,
    /// The leaf index is not inside the snapshot.
    #[error("leaf index {leaf} is not below the snapshot count {count}")]
    LeafOutOfRange {
        /// Claimed leaf index.
        leaf: u64,
        /// Snapshot count.
        count: u64,
    },
    /// The proof has too few or too many items.
    #[error(
        "proof has {got} hashes; leaf {leaf} of a {count}-leaf snapshot needs exactly {expected}"
    )]
    ProofLength {
        /// Items received.
        got: usize,
        /// Items required.
        expected: usize,
        /// Leaf index.
        leaf: u64,
        /// Snapshot count.
        count: u64,
    },
    /// A hash (root or proof item) is not 32 bytes.
    #[error("{what} is {len} bytes, not 32")]
    HashLength {
        /// Which value (`"root"` or `"proof item N"`).
        what: String,
        /// Its length.
        len: usize,
    },
    /// The recomputed root differs from the committed one.
    #[error("the proof does not lead to the committed root")]
    RootMismatch,
}

/// Verifies that `leaf_hash` is leaf `leaf_index` of the snapshot of `count` leaves whose
/// root is `root`.
pub fn verify_proof(
    root: &Hash,
    count: u64,
    leaf_index: u64,
    leaf_hash: &Hash,
    proof: &[Hash],
) -> Result<(), VerifyError> {
    if count == 0 {
        return Err(VerifyError::EmptySnapshot);
    }
    if leaf_index >= count {
        return Err(VerifyError::LeafOutOfRange {
            leaf: leaf_index,
            count,
        });
    }
    // Locate the leaf's mountain without allocating: mountains are the set bits of
    // `count`, largest first.
    let peaks = count.count_ones() as usize;
    let (mut first_leaf, mut index) = (0u64, 0usize);
    let mut own = None;
    for h in (0..64u32).rev() {
        if count >> h & 1 == 1 {
            if own.is_none() && leaf_index < first_leaf + (1 << h) {
                own = Some((index, h as usize, leaf_index - first_leaf));
            }
            first_leaf += 1 << h;
            index += 1;
        }
    }
    let (own, height, local) = own.expect("leaf below count lies in a mountain");
    let expected = height + peaks - 1;
    if proof.len() != expected {
        return Err(VerifyError::ProofLength {
            got: proof.len(),
            expected,
            leaf: leaf_index,
            count,
        });
    }
    let mut current = *leaf_hash;
    for (level, sibling) in proof[..height].iter().enumerate() {
        current = if (local >> level) & 1 == 0 {
            hash_node(&current, sibling)
        } else {
            hash_node(sibling, &current)
        };
    }
    // Bag right to left; the leaf's peak sits at position `own` among the other peaks.
    let others = &proof[height..];
    let peak = |j: usize| -> &Hash {
        match j.cmp(&own) {
            std::cmp::Ordering::Less => &others[j],
            std::cmp::Ordering::Equal => &current,
            std::cmp::Ordering::Greater => &others[j - 1],
        }
    };
    let mut acc = *peak(peaks - 1);
    for j in (0..peaks - 1).rev() {
        acc = hash_node(peak(j), &acc);
    }
    if &acc == root {
        Ok(())
    } else {
        Err(VerifyError::RootMismatch)
    }
}

/// [`verify_proof`] for an artifact `(nonce, vector)`.
pub fn verify_artifact(
    root: &Hash,
    count: u64,
    leaf_index: u64,
    nonce: i32,
    vector: &[u8],
    proof: &[Hash],
) -> Result<(), VerifyError> {
    verify_proof(root, count, leaf_index, &hash_leaf(nonce, vector), proof)
}

/// Converts decoded bytes (e.g. from base64 on the wire) to a hash, checking the length.
pub fn hash_from_bytes(what: impl Into<String>, bytes: &[u8]) -> Result<Hash, VerifyError> {
    bytes.try_into().map_err(|_| VerifyError::HashLength {
        what: what.into(),
        len: bytes.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mmr::Mmr;

    fn tree(n: u64) -> Mmr {
        Mmr::from_leaf_hashes(
            &(0..n)
                .map(|i| hash_leaf(i as i32, &[1, 2, 3]))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn good_proofs_verify_and_bad_ones_do_not() {
        let t = tree(11);
        let root = t.root_at(11).unwrap().unwrap();
        for leaf in 0..11 {
            let p = t.proof(leaf, 11).unwrap();
            let lh = *t.leaf_hash(leaf).unwrap();
            assert_eq!(verify_proof(&root, 11, leaf, &lh, &p), Ok(()));
            let mut longer = p.clone();
            longer.push([0; 32]);
            assert!(matches!(
                verify_proof(&root, 11, leaf, &lh, &longer),
                Err(VerifyError::ProofLength { .. })
            ));
            if !p.is_empty() {
                assert!(matches!(
                    verify_proof(&root, 11, leaf, &lh, &p[..p.len() - 1]),
                    Err(VerifyError::ProofLength { .. })
                ));
            }
        }
        let lh = *t.leaf_hash(0).unwrap();
        assert_eq!(
            verify_proof(&root, 0, 0, &lh, &[]),
            Err(VerifyError::EmptySnapshot)
        );
        assert_eq!(
            verify_proof(&root, 11, 11, &lh, &[]),
            Err(VerifyError::LeafOutOfRange {
                leaf: 11,
                count: 11
            })
        );
    }

    #[test]
    fn single_leaf_snapshot_has_an_empty_proof() {
        let t = tree(1);
        let root = t.root().unwrap();
        assert!(t.proof(0, 1).unwrap().is_empty());
        assert_eq!(
            verify_proof(&root, 1, 0, t.leaf_hash(0).unwrap(), &[]),
            Ok(())
        );
    }

    #[test]
    fn hash_lengths_are_checked() {
        assert!(hash_from_bytes("root", &[0; 32]).is_ok());
        assert_eq!(
            hash_from_bytes("proof item 3", &[0; 31]),
            Err(VerifyError::HashLength {
                what: "proof item 3".into(),
                len: 31
            })
        );
    }
}
