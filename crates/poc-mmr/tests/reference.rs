//! The MMR against an independent, recursive reading of the specification
//! (`docs/protocol/chain-and-api.md` §6.5): peaks are the roots of perfect trees over consecutive runs of
//! `2^h` leaves (largest first), bagged right to left; a proof lists the siblings from the
//! leaf to its peak, then the other peaks left to right. Nothing here uses the post-order
//! array, so layout mistakes in the implementation cannot cancel out.

use poc_mmr::{Hash, Mmr, VerifyError, hash_leaf, hash_node, verify_artifact, verify_proof};
use proptest::prelude::*;

fn vector(i: u64) -> Vec<u8> {
    (0..24)
        .map(|j| (i as u8).wrapping_mul(31).wrapping_add(j))
        .collect()
}

fn nonce(i: u64) -> i32 {
    // Mix of signs so the two's-complement encoding is exercised.
    (i as i32).wrapping_mul(-7919).wrapping_add(13)
}

fn leaf_hashes(n: u64) -> Vec<Hash> {
    (0..n).map(|i| hash_leaf(nonce(i), &vector(i))).collect()
}

fn perfect_root(leaves: &[Hash]) -> Hash {
    if leaves.len() == 1 {
        leaves[0]
    } else {
        let (l, r) = leaves.split_at(leaves.len() / 2);
        hash_node(&perfect_root(l), &perfect_root(r))
    }
}

/// (start, len) of each mountain of a count, left to right.
fn runs(count: u64) -> Vec<(usize, usize)> {
    let mut out = vec![];
    let mut start = 0usize;
    for h in (0..64).rev() {
        if count >> h & 1 == 1 {
            out.push((start, 1usize << h));
            start += 1 << h;
        }
    }
    out
}

fn reference_root(leaves: &[Hash], count: u64) -> Hash {
    let peaks: Vec<Hash> = runs(count)
        .iter()
        .map(|&(s, l)| perfect_root(&leaves[s..s + l]))
        .collect();
    let mut acc = *peaks.last().unwrap();
    for p in peaks[..peaks.len() - 1].iter().rev() {
        acc = hash_node(p, &acc);
    }
    acc
}

fn reference_proof(leaves: &[Hash], leaf: usize, count: u64) -> Vec<Hash> {
    let rs = runs(count);
    let own = rs
        .iter()
        .position(|&(s, l)| leaf >= s && leaf < s + l)
        .unwrap();
    let (s, l) = rs[own];
    // Siblings bottom-up inside the mountain.
    let mut path = vec![];
    let (mut lo, mut len) = (s, l);
    while len > 1 {
        let half = len / 2;
        if leaf < lo + half {
            path.push(perfect_root(&leaves[lo + half..lo + len]));
        } else {
            path.push(perfect_root(&leaves[lo..lo + half]));
            lo += half;
        }
        len = half;
    }
    path.reverse();
    for (j, &(s, l)) in rs.iter().enumerate() {
        if j != own {
            path.push(perfect_root(&leaves[s..s + l]));
        }
    }
    path
}

#[test]
fn roots_for_every_count_up_to_300() {
    let leaves = leaf_hashes(300);
    let t = Mmr::from_leaf_hashes(&leaves);
    for count in 1..=300u64 {
        assert_eq!(
            t.root_at(count).unwrap().unwrap(),
            reference_root(&leaves, count),
            "count {count}"
        );
        // Building only `count` leaves gives the same root as the historical query.
        if count % 37 == 0 {
            let small = Mmr::from_leaf_hashes(&leaves[..count as usize]);
            assert_eq!(small.root(), t.root_at(count).unwrap());
        }
    }
}

#[test]
fn proofs_for_every_leaf_of_many_counts_verify() {
    let leaves = leaf_hashes(300);
    let t = Mmr::from_leaf_hashes(&leaves);
    for count in (1..=300u64).filter(|c| c % 7 == 0 || *c <= 40 || c.is_power_of_two()) {
        let root = reference_root(&leaves, count);
        let all: Vec<u64> = (0..count).collect();
        let batch = t.proofs(&all, count).unwrap();
        for leaf in 0..count {
            let p = t.proof(leaf, count).unwrap();
            assert_eq!(
                p,
                reference_proof(&leaves, leaf as usize, count),
                "{leaf}/{count}"
            );
            assert_eq!(p, batch[leaf as usize]);
            verify_artifact(&root, count, leaf, nonce(leaf), &vector(leaf), &p).unwrap();
        }
    }
}

/// Every single-bit change of the data, proof, root, count or index is rejected.
#[test]
fn any_flipped_bit_fails_verification() {
    let leaves = leaf_hashes(300);
    let t = Mmr::from_leaf_hashes(&leaves);
    for (leaf, count) in [
        (0u64, 1u64),
        (5, 7),
        (100, 300),
        (299, 300),
        (128, 129),
        (63, 64),
        (200, 255),
    ] {
        let root = t.root_at(count).unwrap().unwrap();
        let p = t.proof(leaf, count).unwrap();
        let (n, v) = (nonce(leaf), vector(leaf));
        verify_artifact(&root, count, leaf, n, &v, &p).unwrap();
        for bit in 0..v.len() * 8 {
            let mut w = v.clone();
            w[bit / 8] ^= 1 << (bit % 8);
            assert!(verify_artifact(&root, count, leaf, n, &w, &p).is_err());
        }
        for bit in 0..32 {
            assert!(verify_artifact(&root, count, leaf, n ^ (1 << bit), &v, &p).is_err());
        }
        for item in 0..p.len() {
            for bit in 0..256 {
                let mut q = p.clone();
                q[item][bit / 8] ^= 1 << (bit % 8);
                assert!(verify_artifact(&root, count, leaf, n, &v, &q).is_err());
            }
        }
        for bit in 0..256 {
            let mut r = root;
            r[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                verify_artifact(&r, count, leaf, n, &v, &p),
                Err(VerifyError::RootMismatch)
            );
        }
        for bit in 0..32 {
            assert!(verify_artifact(&root, count ^ (1 << bit), leaf, n, &v, &p).is_err());
            assert!(verify_artifact(&root, count, leaf ^ (1 << bit), n, &v, &p).is_err());
        }
        // Wrong vector length (a truncated or extended vector) also fails.
        assert!(verify_artifact(&root, count, leaf, n, &v[..23], &p).is_err());
        let mut longer = v.clone();
        longer.push(0);
        assert!(verify_artifact(&root, count, leaf, n, &longer, &p).is_err());
    }
}

#[test]
fn proofs_against_older_snapshots_stay_valid_as_the_tree_grows() {
    let leaves = leaf_hashes(300);
    let mut t = Mmr::new();
    let mut snapshots = vec![];
    for (i, h) in leaves.iter().enumerate() {
        t.push(*h);
        let count = i as u64 + 1;
        if count.is_multiple_of(50) {
            snapshots.push((count, t.root().unwrap()));
        }
        for &(c, root) in &snapshots {
            let leaf = c / 2;
            let p = t.proof(leaf, c).unwrap();
            verify_proof(&root, c, leaf, &leaves[leaf as usize], &p).unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn random_snapshots_match_the_reference(count in 1u64..3000, pick in any::<u64>()) {
        let leaves = leaf_hashes(count + 17);
        let t = Mmr::from_leaf_hashes(&leaves);
        let leaf = pick % count;
        let p = t.proof(leaf, count).unwrap();
        prop_assert_eq!(&p, &reference_proof(&leaves, leaf as usize, count));
        let root = reference_root(&leaves, count);
        prop_assert_eq!(t.root_at(count).unwrap(), Some(root));
        prop_assert!(verify_proof(&root, count, leaf, &leaves[leaf as usize], &p).is_ok());
        // The proof of another leaf does not verify this one (unless both hash the same).
        let other = (leaf + 1) % count;
        if other != leaf {
            prop_assert!(verify_proof(&root, count, other, &leaves[leaf as usize], &p).is_err());
        }
    }
}
