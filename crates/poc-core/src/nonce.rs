//! Nonce assignment (`NonceIterator`, `docs/protocol/compute-v2.md` §3.1).
//!
//! `value(x) = node_id + group_id * node_count + x * (n_groups * node_count)` for
//! x = 0, 1, 2, …: every (ML node, replica group) pair gets a disjoint arithmetic
//! progression, and together they cover 0, 1, 2, … without gaps.

use thiserror::Error;

/// Invalid iterator parameters.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NonceIteratorError {
    /// `node_count` or `n_groups` is zero.
    #[error(
        "node_count and n_groups must be at least 1 (got node_count {node_count}, n_groups {n_groups})"
    )]
    ZeroCount {
        /// Nodes of the participant.
        node_count: u64,
        /// Replica groups inside the node.
        n_groups: u64,
    },
    /// `node_id >= node_count` or `group_id >= n_groups`.
    #[error(
        "node_id {node_id} must be below node_count {node_count} and group_id {group_id} below n_groups {n_groups}"
    )]
    OutOfRange {
        /// This node's number.
        node_id: u64,
        /// Nodes of the participant.
        node_count: u64,
        /// This replica's number.
        group_id: u64,
        /// Replica groups inside the node.
        n_groups: u64,
    },
    /// The stride `node_count * n_groups` does not fit in an i64.
    #[error("node_count {node_count} times n_groups {n_groups} overflows")]
    Overflow {
        /// Nodes of the participant.
        node_count: u64,
        /// Replica groups inside the node.
        n_groups: u64,
    },
}

/// The endless nonce stream of one (node, group). Ends only when the next value would
/// overflow an `i64`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonceIterator {
    next: Option<i64>,
    stride: i64,
}

impl NonceIterator {
    /// The stream of `node_id` of `node_count` and `group_id` of `n_groups`.
    pub fn new(
        node_id: u64,
        node_count: u64,
        group_id: u64,
        n_groups: u64,
    ) -> Result<Self, NonceIteratorError> {
        if node_count == 0 || n_groups == 0 {
            return Err(NonceIteratorError::ZeroCount {
                node_count,
                n_groups,
            });
        }
        if node_id >= node_count || group_id >= n_groups {
            return Err(NonceIteratorError::OutOfRange {
                node_id,
                node_count,
                group_id,
                n_groups,
            });
        }
        let overflow = NonceIteratorError::Overflow {
            node_count,
            n_groups,
        };
        let stride = node_count
            .checked_mul(n_groups)
            .and_then(|s| i64::try_from(s).ok())
            .ok_or(overflow)?;
        // node_id < node_count and group_id < n_groups, so the start is below the stride.
        let start = (node_id + group_id * node_count) as i64;
        Ok(Self {
            next: Some(start),
            stride,
        })
    }

    /// The stream of a node talking to one replica (`group_id = 0`, `n_groups = 1`).
    pub fn for_node(node_id: u64, node_count: u64) -> Result<Self, NonceIteratorError> {
        Self::new(node_id, node_count, 0, 1)
    }

    /// The same stream from its first value `>= min` on (a restarted node resuming where
    /// it left off); values below are skipped, the stream's members stay the same.
    pub fn starting_at(mut self, min: i64) -> Self {
        if let Some(start) = self.next
            && min > start
        {
            // The smallest x with start + x * stride >= min.
            let gap = min - start; // > 0, and fits: start >= 0
            let x = gap / self.stride + i64::from(gap % self.stride != 0);
            self.next = x
                .checked_mul(self.stride)
                .and_then(|d| start.checked_add(d));
        }
        self
    }

    /// The next `n` values as one batch (fewer only at the end of the i64 range).
    pub fn take_batch(&mut self, n: usize) -> Vec<i64> {
        self.by_ref().take(n).collect()
    }
}

impl Iterator for NonceIterator {
    type Item = i64;

    fn next(&mut self) -> Option<i64> {
        let value = self.next?;
        self.next = value.checked_add(self.stride);
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn first(node: u64, nodes: u64, group: u64, groups: u64, n: usize) -> Vec<i64> {
        NonceIterator::new(node, nodes, group, groups)
            .unwrap()
            .take(n)
            .collect()
    }

    #[test]
    fn streams_are_disjoint_and_cover_everything() {
        let mut all = BTreeSet::new();
        for node in 0..3 {
            for group in 0..2 {
                for v in first(node, 3, group, 2, 10) {
                    assert!(all.insert(v), "{v} produced twice");
                }
            }
        }
        assert_eq!(all, (0..60).collect());
    }

    #[test]
    fn a_resumed_stream_skips_only_what_was_done() {
        let it = || NonceIterator::new(1, 2, 1, 2).unwrap(); // 3, 7, 11, 15, ...
        let v = |i: NonceIterator| i.take(3).collect::<Vec<_>>();
        assert_eq!(v(it().starting_at(0)), vec![3, 7, 11]);
        assert_eq!(v(it().starting_at(7)), vec![7, 11, 15]);
        assert_eq!(v(it().starting_at(8)), vec![11, 15, 19]);
        assert_eq!(v(it().starting_at(-5)), vec![3, 7, 11]);
        let even = NonceIterator::for_node(0, 2).unwrap();
        assert_eq!(
            even.starting_at(i64::MAX).next(),
            None,
            "past the i64 range"
        );
        let last = NonceIterator::for_node(0, 1).unwrap().starting_at(i64::MAX);
        assert_eq!(last.collect::<Vec<_>>(), vec![i64::MAX]);
    }

    #[test]
    fn bad_parameters_are_errors() {
        assert!(matches!(
            NonceIterator::new(0, 0, 0, 1),
            Err(NonceIteratorError::ZeroCount { .. })
        ));
        assert!(matches!(
            NonceIterator::new(0, 1, 0, 0),
            Err(NonceIteratorError::ZeroCount { .. })
        ));
        assert!(matches!(
            NonceIterator::new(1, 1, 0, 1),
            Err(NonceIteratorError::OutOfRange { .. })
        ));
        assert!(matches!(
            NonceIterator::new(0, 1, 2, 2),
            Err(NonceIteratorError::OutOfRange { .. })
        ));
        assert!(matches!(
            NonceIterator::new(0, u64::MAX, 0, 2),
            Err(NonceIteratorError::Overflow { .. })
        ));
    }

    #[test]
    fn batches_continue_where_the_last_ended() {
        let mut it = NonceIterator::for_node(0, 2).unwrap();
        assert_eq!(it.take_batch(3), vec![0, 2, 4]);
        assert_eq!(it.take_batch(2), vec![6, 8]);
    }

    #[test]
    fn the_stream_ends_instead_of_overflowing() {
        let mut it = NonceIterator::new(0, 1 << 62, 0, 1).unwrap();
        assert_eq!(it.take_batch(5), vec![0, 1 << 62]);
    }
}
