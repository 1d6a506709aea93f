//! Property tests of the protocol core (proptest).

use std::collections::HashSet;

use base64::Engine;
use half::f16;
use poc_core::NonceIterator;
use poc_core::artifact::{decode_vector, encode_f16, vector_from_bytes};
use poc_core::haar::haar_rotate;
use poc_core::householder::{householder_vector, reflect};
use poc_core::pick::{pick_indices, pick_scores};
use poc_core::rng::{dot, l2_norm};
use proptest::prelude::*;

fn finite_f16() -> impl Strategy<Value = f16> {
    any::<u16>()
        .prop_filter("finite", |b| b & 0x7c00 != 0x7c00)
        .prop_map(f16::from_bits)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn reflection_preserves_the_norm_and_is_an_involution(
        x in prop::collection::vec(-100.0f32..100.0, 1..256),
        layer in 0usize..128,
        block in "[A-Za-z0-9]{1,16}",
    ) {
        let v = householder_vector(&block, layer, x.len());
        let mut y = x.clone();
        reflect(&mut y, &v);
        let (nx, ny) = (l2_norm(&x), l2_norm(&y));
        prop_assert!((nx - ny).abs() <= 1e-4 * nx.max(1e-6), "norm {nx} -> {ny}");
        reflect(&mut y, &v);
        for (a, b) in x.iter().zip(&y) {
            prop_assert!((a - b).abs() <= 1e-3 * a.abs() + 1e-3, "{a} -> {b}");
        }
    }

    #[test]
    fn picks_are_unique_in_range_stable_and_smallest(
        dim in 1usize..3000,
        k_raw in 1usize..64,
        nonce in any::<i64>(),
        block in "[ -~]{0,24}",
        key in "[0-9a-f]{0,66}",
    ) {
        let k = k_raw.min(dim);
        let picked = pick_indices(&block, &key, nonce, k, dim).unwrap();
        prop_assert_eq!(picked.len(), k);
        prop_assert!(picked.iter().all(|&d| d < dim));
        prop_assert_eq!(picked.iter().collect::<HashSet<_>>().len(), k);
        prop_assert_eq!(&picked, &pick_indices(&block, &key, nonce, k, dim).unwrap());
        // They are the k smallest scores.
        let scores = pick_scores(&block, &key, nonce, k, dim);
        let chosen: HashSet<usize> = picked.iter().copied().collect();
        let max_in = picked.iter().map(|&d| scores[d]).max().unwrap();
        let min_out = (0..dim).filter(|d| !chosen.contains(d)).map(|d| scores[d]).min();
        if let Some(min_out) = min_out {
            prop_assert!(max_in <= min_out);
        }
        // The first k - 1 are in ascending index order.
        prop_assert!(picked[..k - 1].windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn haar_chain_preserves_the_norm(
        y in prop::collection::vec(-1.0f32..1.0, 1..64),
        nonce in any::<i64>(),
    ) {
        let mut z = y.clone();
        haar_rotate("B", "K", nonce, &mut z).unwrap();
        let (a, b) = (l2_norm(&y), l2_norm(&z));
        prop_assert!((a - b).abs() <= 1e-5 * (1.0 + a), "{a} -> {b}");
        // Orthogonal maps preserve inner products too.
        let mut e = vec![0f32; y.len()];
        e[0] = 1.0;
        let before = dot(&y, &e);
        haar_rotate("B", "K", nonce, &mut e).unwrap();
        prop_assert!((before - dot(&z, &e)).abs() <= 1e-5 * (1.0 + a));
    }

    #[test]
    fn codec_round_trips_finite_vectors(v in prop::collection::vec(finite_f16(), 0..64)) {
        let b64 = encode_f16(&v);
        let back = decode_vector(&b64, Some(v.len())).unwrap();
        prop_assert_eq!(
            back.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn decoding_never_panics_on_arbitrary_text(s in ".{0,200}", k in prop::option::of(0usize..40)) {
        let _ = decode_vector(&s, k);
    }

    #[test]
    fn decoding_never_panics_on_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..200),
        k in prop::option::of(0usize..120),
    ) {
        let _ = vector_from_bytes(&bytes, k);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
        if let Ok(v) = decode_vector(&b64, k) {
            prop_assert_eq!(v.len() * 2, bytes.len());
            prop_assert!(v.iter().all(|x| x.is_finite()));
        }
    }

    #[test]
    fn nonce_streams_are_disjoint(
        node_count in 1u64..8,
        n_groups in 1u64..8,
        take in 1usize..50,
    ) {
        let mut all = HashSet::new();
        for node in 0..node_count {
            for group in 0..n_groups {
                for v in NonceIterator::new(node, node_count, group, n_groups).unwrap().take(take) {
                    prop_assert!(all.insert(v));
                }
            }
        }
        let total = (node_count * n_groups) as i64 * take as i64;
        prop_assert_eq!(all, (0..total).collect::<HashSet<_>>());
    }
}

/// Every one of the 63,488 finite FP16 bit patterns survives encode → decode.
#[test]
fn codec_round_trips_every_finite_f16() {
    let all: Vec<f16> = (0..=u16::MAX)
        .filter(|b| b & 0x7c00 != 0x7c00)
        .map(f16::from_bits)
        .collect();
    assert_eq!(all.len(), 63_488);
    for chunk in all.chunks(12) {
        let back = decode_vector(&encode_f16(chunk), Some(chunk.len())).unwrap();
        for (a, b) in chunk.iter().zip(&back) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
        // And through f32, as the validator compares them.
        let widened: Vec<f32> = chunk.iter().map(|x| x.to_f32()).collect();
        assert_eq!(
            poc_core::artifact::encode_vector(&widened),
            encode_f16(chunk)
        );
    }
}
