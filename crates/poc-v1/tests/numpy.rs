//! The numpy pipeline against numpy itself (`scripts/numpy_v1_reference.py`) and the
//! derived vectors of `docs/protocol/compute-v1.md` §3.

use poc_v1::numpy::{Pcg64, SeedSequence, extended_entropy};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn reference() -> Value {
    serde_json::from_str(include_str!("data/numpy_reference.json")).unwrap()
}

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().parse().unwrap())
        .collect()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

const S: &str = "TEST_BLOCK_test_pub_key_nonce0";

#[test]
fn seeding_matches_numpy_and_the_spec() {
    let r = reference();
    let e = extended_entropy(S, 4);
    assert_eq!(e[0], 0xb2b4_5f59, "spec: first entropy word");
    assert_eq!(
        e.iter().map(|x| u64::from(*x)).collect::<Vec<_>>(),
        r["entropy"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect::<Vec<_>>()
    );
    let st = SeedSequence::new(&e).generate_state_u64(4);
    assert_eq!(
        st,
        vec![
            0xb60c_1d68_2237_9ef7,
            0x68a4_f1c0_714b_27c3,
            0x8869_991d_04c1_9bf1,
            0xe5da_f10e_7930_1268
        ],
        "spec"
    );
    assert_eq!(st, u64s(&r["generate_state"]));
    let g = Pcg64::from_string(S, 4);
    assert_eq!(g.state.to_string(), r["pcg_state"].as_str().unwrap());
    assert_eq!(g.inc.to_string(), r["pcg_inc"].as_str().unwrap());
    assert_eq!(
        g.state, 326_791_377_148_918_566_898_606_319_301_670_600_885u128,
        "spec"
    );
    let mut g = Pcg64::from_string(S, 4);
    let raw: Vec<u64> = (0..5).map(|_| g.next_u64()).collect();
    assert_eq!(raw[0], 14_976_887_695_853_920_271, "spec: first raw output");
    assert_eq!(raw, u64s(&r["raw"]));
    let mut g = Pcg64::from_string(S, 4);
    let d: Vec<f64> = (0..3).map(|_| g.next_double()).collect();
    assert_eq!(
        d,
        vec![0.8118987088458121, 0.8278365598783528, 0.24569686290240145],
        "spec"
    );
}

#[test]
fn normals_match_numpy_bit_for_bit() {
    let r = reference();
    let mut g = Pcg64::from_string("seed-A", 4);
    let head: Vec<f64> = (0..16).map(|_| g.standard_normal()).collect();
    assert_eq!(head, f64s(&r["normals_head"]));
    // Two million draws exercise every layer, the wedges and the tail.
    let mut g = Pcg64::from_string("seed-B", 4);
    let mut h = Sha256::new();
    let (mut lo, mut hi) = (f64::MAX, f64::MIN);
    for _ in 0..2_000_000 {
        let x = g.standard_normal();
        lo = lo.min(x);
        hi = hi.max(x);
        h.update(x.to_le_bytes());
    }
    assert_eq!(vec![lo, hi], f64s(&r["normals_2m_extremes"]));
    assert_eq!(hex(&h.finalize()), r["normals_2m_sha256"].as_str().unwrap());
    let mut g = Pcg64::from_string("TEST_BLOCK", 4);
    let pool: Vec<f64> = (0..8).map(|_| g.normal(0.0, 0.02)).collect();
    assert_eq!(pool, f64s(&r["normal_scaled_head"]));
    // Spec §5: the pool prefix as f32.
    let want = [
        -0.022236994f32,
        0.012364983,
        0.030445382,
        -0.006038336,
        -0.014648315,
        0.00024949037,
    ];
    for (a, b) in pool.iter().zip(want) {
        assert_eq!(*a as f32, b);
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn permutations_match_numpy() {
    let r = reference();
    let mut g = Pcg64::from_string("TEST_BLOCK_test_pub_key_nonce_0_permutations", 1);
    let p = g.permutation(8196);
    assert_eq!(
        &p[..10],
        &[3590, 3737, 3255, 7344, 1492, 4261, 2824, 2856, 2942, 3632],
        "spec"
    );
    assert_eq!(
        p[..10].iter().map(|x| u64::from(*x)).collect::<Vec<_>>(),
        r["perm_head"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect::<Vec<_>>()
    );
    let bytes: Vec<u8> = p.iter().flat_map(|x| i64::from(*x).to_le_bytes()).collect();
    assert_eq!(
        hex(&Sha256::digest(&bytes)),
        r["perm_sha256"].as_str().unwrap()
    );
    for (k, want) in r["perm_small"].as_array().unwrap().iter().enumerate() {
        let n = k + 1;
        let got = Pcg64::from_string(&format!("p{n}"), 1).permutation(n);
        let want: Vec<u32> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(got, want, "n = {n}");
    }
}

#[test]
fn inputs_and_target_match_numpy() {
    let r = reference();
    let mut g = Pcg64::from_string(S, 4);
    let inputs: Vec<f64> = (0..256 * 1792).map(|_| g.standard_normal()).collect();
    assert_eq!(&inputs[..6], f64s(&r["inputs_head"]).as_slice());
    assert_eq!(inputs[0], 0.3054810173787808, "spec");
    let f16: Vec<u8> = inputs
        .iter()
        .flat_map(|x| half::f16::from_f32(*x as f32).to_le_bytes())
        .collect();
    assert_eq!(
        hex(&Sha256::digest(&f16)),
        r["inputs_f16_sha256"].as_str().unwrap()
    );
    let mut g = Pcg64::from_string("TEST_BLOCK_target", 1);
    let t: Vec<f64> = (0..8196).map(|_| g.standard_normal()).collect();
    let norm = t.iter().map(|x| x * x).sum::<f64>().sqrt();
    let head: Vec<f64> = t[..6].iter().map(|x| x / norm).collect();
    let want = f64s(&r["target_head"]);
    for (a, b) in head.iter().zip(&want) {
        assert!((a - b).abs() <= 1e-17, "{a} vs {b}");
    }
    assert_eq!(want[0], 0.003532523604297144, "spec");
}
