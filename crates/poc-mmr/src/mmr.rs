//! The append-only Merkle Mountain Range in the reference's post-order layout.
//!
//! Nodes live in one array in post order: appending leaf `i` (0-based) pushes its hash,
//! then merges `trailing_zeros(i + 1)` times, each time hashing the node `2^(k+1) − 1`
//! positions to the left (the older sibling) with the newest node. For `n` leaves the
//! array has `2n − popcount(n)` nodes and leaf `i` sits at `2i − popcount(i)`.
//!
//! A count `n` splits into mountains of `2^h` leaves, one per set bit of `n`, largest
//! first. The root bags the peaks right to left: `acc = p_last`, then
//! `acc = H(0x01 || p_j || acc)` for the earlier peaks. Because the array is append-only,
//! the root and proofs of every earlier count stay available.

use thiserror::Error;

use crate::hash::{Hash, hash_node};

/// The largest number of leaves a store may hold (`2^30 − 1`, the reference's limit).
pub const MAX_LEAF_COUNT: u64 = (1 << 30) - 1;

/// Errors of root and proof queries.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MmrError {
    /// A snapshot count beyond the leaves present.
    #[error("count {count} exceeds the {leaves} leaves in the tree")]
    CountTooLarge {
        /// Requested snapshot count.
        count: u64,
        /// Leaves present.
        leaves: u64,
    },
    /// A leaf index outside the snapshot.
    #[error("leaf index {leaf} is not below the snapshot count {count}")]
    LeafOutOfRange {
        /// Requested leaf.
        leaf: u64,
        /// Snapshot count.
        count: u64,
    },
    /// A node array whose length does not match the leaf count.
    #[error("{nodes} nodes do not form an MMR of {leaves} leaves ({expected} expected)")]
    BadNodeCount {
        /// Nodes given.
        nodes: u64,
        /// Leaves claimed.
        leaves: u64,
        /// Nodes an MMR of that many leaves has.
        expected: u64,
    },
}

/// Position of leaf `i` in the post-order node array.
pub fn leaf_position(i: u64) -> u64 {
    2 * i - u64::from(i.count_ones())
}

/// Number of nodes of an MMR with `n` leaves.
pub fn node_count(n: u64) -> u64 {
    2 * n - u64::from(n.count_ones())
}

/// One mountain (perfect binary tree) of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mountain {
    /// Position of its peak in the node array.
    pub peak: u64,
    /// Height: the mountain holds `2^height` leaves.
    pub height: u32,
    /// Index of its first leaf.
    pub first_leaf: u64,
}

impl Mountain {
    /// Number of leaves.
    pub fn leaves(&self) -> u64 {
        1 << self.height
    }

    /// Position of its first (leftmost, lowest) node in the array.
    pub fn first_position(&self) -> u64 {
        self.peak + 1 - ((2 << self.height) - 1)
    }
}

/// The mountains of a snapshot of `count` leaves, left to right (largest first).
pub fn mountains(count: u64) -> Vec<Mountain> {
    let mut out = Vec::with_capacity(count.count_ones() as usize);
    let mut start = 0u64;
    let mut first_leaf = 0u64;
    for height in (0..64).rev() {
        if count & (1 << height) != 0 {
            let size = (2u64 << height) - 1;
            out.push(Mountain {
                peak: start + size - 1,
                height,
                first_leaf,
            });
            start += size;
            first_leaf += 1 << height;
        }
    }
    out
}

/// Bags peaks (left to right) into a root, right to left. `None` for no peaks.
pub fn bag_peaks(peaks: &[Hash]) -> Option<Hash> {
    let (last, rest) = peaks.split_last()?;
    Some(rest.iter().rev().fold(*last, |acc, p| hash_node(p, &acc)))
}

/// Writes the post-order nodes of the perfect tree over `leaf_hashes` into `out`.
///
/// `leaf_hashes.len()` must be a power of two and `out.len() == 2 * leaf_hashes.len() - 1`.
/// The two halves of `out` (minus the last node) are the two subtrees, so callers can
/// fill them independently (on different threads) and combine them with [`hash_node`].
///
/// # Panics
/// If the lengths do not fit.
pub fn fill_perfect(leaf_hashes: &[Hash], out: &mut [Hash]) {
    let n = leaf_hashes.len();
    assert!(
        n.is_power_of_two(),
        "fill_perfect needs a power-of-two leaf count"
    );
    assert_eq!(out.len(), 2 * n - 1, "fill_perfect: output length");
    if n == 1 {
        out[0] = leaf_hashes[0];
        return;
    }
    let half = n / 2;
    let sub = 2 * half - 1;
    let (left, rest) = out.split_at_mut(sub);
    let (right, top) = rest.split_at_mut(sub);
    fill_perfect(&leaf_hashes[..half], left);
    fill_perfect(&leaf_hashes[half..], right);
    top[0] = hash_node(&left[sub - 1], &right[sub - 1]);
}

/// Computes, in place, the internal nodes of a perfect tree stored in post order whose
/// leaves are already at their positions (`out.len() == 2^(h+1) − 1`). The two halves
/// (minus the last node) are independent subtrees, so callers can fill them on different
/// threads and finish with [`hash_node`].
///
/// # Panics
/// If the length is not `2^(h+1) − 1`.
pub fn fill_internal(out: &mut [Hash]) {
    assert!(
        (out.len() + 1).is_power_of_two(),
        "fill_internal needs 2^(h+1) - 1 nodes"
    );
    if out.len() == 1 {
        return;
    }
    let sub = out.len() / 2;
    let (left, rest) = out.split_at_mut(sub);
    let (right, top) = rest.split_at_mut(sub);
    fill_internal(left);
    fill_internal(right);
    top[0] = hash_node(&left[sub - 1], &right[sub - 1]);
}

/// An in-memory MMR: every node of every leaf ever appended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mmr {
    nodes: Vec<Hash>,
    leaves: u64,
}

impl Mmr {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty tree with room for `leaves` leaves.
    pub fn with_capacity(leaves: u64) -> Self {
        Self {
            nodes: Vec::with_capacity(node_count(leaves) as usize),
            leaves: 0,
        }
    }

    /// A tree from a complete post-order node array (for example rebuilt in parallel with
    /// [`fill_perfect`] per mountain).
    pub fn from_nodes(nodes: Vec<Hash>, leaves: u64) -> Result<Self, MmrError> {
        let expected = node_count(leaves);
        if nodes.len() as u64 != expected {
            return Err(MmrError::BadNodeCount {
                nodes: nodes.len() as u64,
                leaves,
                expected,
            });
        }
        Ok(Self { nodes, leaves })
    }

    /// A tree from leaf hashes, built sequentially.
    pub fn from_leaf_hashes(leaf_hashes: &[Hash]) -> Self {
        let mut m = Self::with_capacity(leaf_hashes.len() as u64);
        for h in leaf_hashes {
            m.push(*h);
        }
        m
    }

    /// Number of leaves.
    pub fn leaves(&self) -> u64 {
        self.leaves
    }

    /// The post-order node array.
    pub fn nodes(&self) -> &[Hash] {
        &self.nodes
    }

    /// Bytes of node storage reserved.
    pub fn heap_bytes(&self) -> usize {
        self.nodes.capacity() * size_of::<Hash>()
    }

    /// Appends a leaf hash and returns its leaf index.
    pub fn push(&mut self, leaf_hash: Hash) -> u64 {
        let index = self.leaves;
        self.nodes.push(leaf_hash);
        let mut current = leaf_hash;
        for level in 0..(index + 1).trailing_zeros() {
            let sibling = self.nodes[self.nodes.len() - (2usize << level)];
            current = hash_node(&sibling, &current);
            self.nodes.push(current);
        }
        self.leaves += 1;
        index
    }

    /// Hash of leaf `i`.
    pub fn leaf_hash(&self, i: u64) -> Option<&Hash> {
        (i < self.leaves).then(|| &self.nodes[leaf_position(i) as usize])
    }

    fn check_count(&self, count: u64) -> Result<(), MmrError> {
        if count > self.leaves {
            Err(MmrError::CountTooLarge {
                count,
                leaves: self.leaves,
            })
        } else {
            Ok(())
        }
    }

    /// The peak hashes of snapshot `count`, left to right.
    pub fn peaks_at(&self, count: u64) -> Result<Vec<Hash>, MmrError> {
        self.check_count(count)?;
        Ok(mountains(count)
            .iter()
            .map(|m| self.nodes[m.peak as usize])
            .collect())
    }

    /// The root over all leaves (`None` when empty).
    pub fn root(&self) -> Option<Hash> {
        self.root_at(self.leaves).expect("own count is valid")
    }

    /// The root of the snapshot of the first `count` leaves (`None` for 0).
    pub fn root_at(&self, count: u64) -> Result<Option<Hash>, MmrError> {
        Ok(bag_peaks(&self.peaks_at(count)?))
    }

    /// Inclusion proof of leaf `leaf` in snapshot `count`: the siblings from the leaf up to
    /// its mountain's peak, then the other peaks of the snapshot, left to right.
    pub fn proof(&self, leaf: u64, count: u64) -> Result<Vec<Hash>, MmrError> {
        self.check_count(count)?;
        let ms = mountains(count);
        self.proof_in(leaf, count, &ms)
    }

    /// Proofs of many leaves of one snapshot (the mountains are computed once).
    pub fn proofs(&self, leaves: &[u64], count: u64) -> Result<Vec<Vec<Hash>>, MmrError> {
        self.check_count(count)?;
        let ms = mountains(count);
        leaves
            .iter()
            .map(|&l| self.proof_in(l, count, &ms))
            .collect()
    }

    fn proof_in(&self, leaf: u64, count: u64, ms: &[Mountain]) -> Result<Vec<Hash>, MmrError> {
        if leaf >= count {
            return Err(MmrError::LeafOutOfRange { leaf, count });
        }
        let own = ms
            .iter()
            .position(|m| leaf < m.first_leaf + m.leaves())
            .expect("leaf below count lies in a mountain");
        let m = ms[own];
        let local = leaf - m.first_leaf;
        let mut proof = Vec::with_capacity(m.height as usize + ms.len() - 1);
        let mut pos = leaf_position(leaf);
        for level in 0..m.height {
            let span = (2u64 << level) - 1; // nodes in a subtree of this level
            if (local >> level) & 1 == 0 {
                let sibling = pos + span;
                proof.push(self.nodes[sibling as usize]);
                pos = sibling + 1;
            } else {
                proof.push(self.nodes[(pos - span) as usize]);
                pos += 1;
            }
        }
        debug_assert_eq!(pos, m.peak);
        for (j, other) in ms.iter().enumerate() {
            if j != own {
                proof.push(self.nodes[other.peak as usize]);
            }
        }
        Ok(proof)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::hash_leaf;

    fn leaf(i: u64) -> Hash {
        hash_leaf(i as i32, &[i as u8; 24])
    }

    #[test]
    fn layout_formulas() {
        assert_eq!(
            (0..8).map(leaf_position).collect::<Vec<_>>(),
            vec![0, 1, 3, 4, 7, 8, 10, 11]
        );
        assert_eq!(
            (0..8).map(node_count).collect::<Vec<_>>(),
            vec![0, 1, 3, 4, 7, 8, 10, 11]
        );
        let m = mountains(11); // 8 + 2 + 1
        assert_eq!(
            m,
            vec![
                Mountain {
                    peak: 14,
                    height: 3,
                    first_leaf: 0
                },
                Mountain {
                    peak: 17,
                    height: 1,
                    first_leaf: 8
                },
                Mountain {
                    peak: 18,
                    height: 0,
                    first_leaf: 10
                },
            ]
        );
        assert_eq!(m[1].first_position(), 15);
        assert!(mountains(0).is_empty());
    }

    #[test]
    fn small_trees_by_hand() {
        let mut t = Mmr::new();
        assert_eq!(t.root(), None);
        t.push(leaf(0));
        assert_eq!(t.root(), Some(leaf(0)));
        t.push(leaf(1));
        let n01 = hash_node(&leaf(0), &leaf(1));
        assert_eq!(t.nodes(), &[leaf(0), leaf(1), n01]);
        assert_eq!(t.root(), Some(n01));
        t.push(leaf(2));
        assert_eq!(t.root(), Some(hash_node(&n01, &leaf(2))));
        t.push(leaf(3));
        let n23 = hash_node(&leaf(2), &leaf(3));
        let n0123 = hash_node(&n01, &n23);
        assert_eq!(t.nodes().len(), 7);
        assert_eq!(t.root(), Some(n0123));
        t.push(leaf(4));
        t.push(leaf(5));
        t.push(leaf(6));
        // Peaks 0123, 45, 6; bagged right to left.
        let n45 = hash_node(&leaf(4), &leaf(5));
        assert_eq!(
            t.root(),
            Some(hash_node(&n0123, &hash_node(&n45, &leaf(6))))
        );
        // Historical roots.
        assert_eq!(t.root_at(2).unwrap(), Some(n01));
        assert_eq!(t.root_at(0).unwrap(), None);
        assert_eq!(
            t.root_at(8),
            Err(MmrError::CountTooLarge {
                count: 8,
                leaves: 7
            })
        );
        // Proof of leaf 5 in snapshot 7: sibling 4, then peaks 0123 and 6.
        assert_eq!(t.proof(5, 7).unwrap(), vec![leaf(4), n0123, leaf(6)]);
        // Proof of leaf 2 in snapshot 3: no siblings (own mountain is the single leaf), peak 01.
        assert_eq!(t.proof(2, 3).unwrap(), vec![n01]);
        assert_eq!(
            t.proof(3, 3),
            Err(MmrError::LeafOutOfRange { leaf: 3, count: 3 })
        );
    }

    #[test]
    fn fill_perfect_equals_pushing() {
        for h in 0..8 {
            let n = 1usize << h;
            let leaves: Vec<Hash> = (0..n as u64).map(leaf).collect();
            let mut out = vec![[0u8; 32]; 2 * n - 1];
            fill_perfect(&leaves, &mut out);
            assert_eq!(out, Mmr::from_leaf_hashes(&leaves).nodes());
        }
    }

    #[test]
    fn fill_internal_equals_pushing() {
        for n in [1u64, 2, 3, 5, 8, 13, 64, 100] {
            let leaves: Vec<Hash> = (0..n).map(leaf).collect();
            let mut nodes = vec![[0u8; 32]; node_count(n) as usize];
            for (i, h) in leaves.iter().enumerate() {
                nodes[leaf_position(i as u64) as usize] = *h;
            }
            for m in mountains(n) {
                let size = 2 * m.leaves() as usize - 1;
                let start = m.first_position() as usize;
                fill_internal(&mut nodes[start..start + size]);
            }
            assert_eq!(nodes, Mmr::from_leaf_hashes(&leaves).nodes());
        }
    }

    #[test]
    fn from_nodes_checks_the_length() {
        let t = Mmr::from_leaf_hashes(&(0..5).map(leaf).collect::<Vec<_>>());
        assert_eq!(Mmr::from_nodes(t.nodes().to_vec(), 5).unwrap(), t);
        assert_eq!(
            Mmr::from_nodes(t.nodes().to_vec(), 4),
            Err(MmrError::BadNodeCount {
                nodes: 8,
                leaves: 4,
                expected: 7
            })
        );
    }
}
