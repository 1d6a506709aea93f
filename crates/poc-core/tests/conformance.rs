//! Conformance vectors of the specification (`docs/protocol/compute-v2.md`), section by section,
//! exercised through the public API. Integers, seeds, picks and encodings must match
//! exactly; f32 values (printed in the spec to 7 decimals) within that rounding plus about
//! two f32 ulp, which is what the reference itself guarantees across platforms (§1.4, §9).

use half::f16;
use poc_core::artifact::{base64_len, decode_vector_f32, encode_vector, vector_to_bytes};
use poc_core::haar::haar_vector;
use poc_core::householder::householder_vector;
use poc_core::inputs::generate_inputs;
use poc_core::pick::{gather, pick_indices, pick_scores};
use poc_core::projection::{artifact_from_hidden, project_hidden, sphere_normalize};
use poc_core::rng::{l2_norm, murmur, normals, uniform};
use poc_core::seed::{
    haar_seed_string, inputs_seed_string, layer_seed_string, pick_seed_string, seed_from_string,
    sha256, sub_seeds_from_string, target_seed_string,
};
use poc_core::stats::binomial_upper_tail;
use poc_core::{InputRng, NonceIterator};

const BH: &str = "TEST_BLOCK";
const PK: &str = "test_pub_keys";

fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 6e-8 + 3e-7 * w.abs(),
            "element {i}: got {g}, want {w}"
        );
    }
}

fn rel(got: f64, want: f64) -> f64 {
    ((got - want) / want).abs()
}

/// §1.1: string → seed.
#[test]
fn s1_1_seed_from_string() {
    let s = inputs_seed_string(BH, PK, 0);
    assert_eq!(s, "TEST_BLOCK_test_pub_keys_nonce0");
    assert_eq!(
        &sha256(&s)[..8],
        &[0x5e, 0xc0, 0x03, 0x05, 0x6b, 0xf2, 0x80, 0x28]
    );
    assert_eq!(seed_from_string(&s), 1_589_641_989);
}

/// §1.2: the murmur variant without the length mix.
#[test]
fn s1_2_murmur() {
    assert_eq!(murmur(0, 0), 4_279_838_538);
    assert_ne!(murmur(0, 0), 593_689_054); // stock murmur3 of LE 00000000, seed 0
    assert_eq!(murmur(1, 0), 2_277_397_642);
    assert_eq!(murmur(0, 1), 2_903_176_787);
    let want = [
        3_139_624_308u32,
        2_416_545_486,
        4_226_773_262,
        3_387_253_356,
    ];
    for (i, w) in want.iter().enumerate() {
        assert_eq!(murmur(i as u32, 42), *w);
    }
}

/// §1.3: uniforms, seed 1589641989, i = 0..7.
#[test]
fn s1_3_uniform() {
    let seed = 1_589_641_989;
    let hashes = [
        1_838_284_147u32,
        1_263_909_213,
        1_169_763_974,
        2_162_981_214,
        774_272_996,
        1_416_271_733,
        2_849_565_540,
        3_816_772_884,
    ];
    let want = [
        0.428_008_88f32,
        0.294_276_8,
        0.272_356_9,
        0.503_608_3,
        0.180_274_49,
        0.329_751_46,
        0.663_466_16,
        0.888_661_7,
    ];
    for i in 0..8 {
        assert_eq!(murmur(i as u32, seed), hashes[i]);
        let u = uniform(seed, i as u32);
        // Exact: f32(hash) * 2^-32.
        assert_eq!(u, (hashes[i] as f64 / 4_294_967_296.0) as f32);
        assert!((u - want[i]).abs() < 5e-9, "u[{i}] = {u}");
    }
}

/// §1.4, §1.5, §7.3: Householder vector of layer 0 (H = 5120), raw and unit.
#[test]
fn s1_5_householder_vector() {
    let seed = seed_from_string(&layer_seed_string(BH, 0));
    assert_eq!(seed, 2_284_659_359);
    let raw = normals(seed, 5120);
    assert_close(
        &raw[..4],
        &[0.765_975_3, -0.278_716_8, 0.122_789_9, 0.613_833_7],
    );
    let v = householder_vector(BH, 0, 5120);
    assert_close(
        &v[..4],
        &[0.010_735_31, -0.003_906_28, 0.001_720_93, 0.008_603_01],
    );
    assert!((l2_norm(&v) - 1.0).abs() < 1e-6);
}

/// §1.6, §7.3: the seed catalogue.
#[test]
fn s1_6_seed_strings() {
    assert_eq!(seed_from_string(&layer_seed_string(BH, 63)), 3_761_415_555);
    assert_eq!(seed_from_string(&target_seed_string(BH, PK)), 3_424_823_091);
    assert_eq!(
        seed_from_string(&haar_seed_string(BH, PK, 0, 12, 10)),
        2_528_024_933
    );
    assert_eq!(
        pick_seed_string(BH, PK, 0, 12),
        "TEST_BLOCK_test_pub_keys_nonce_0_pick_12"
    );
    assert_eq!(
        haar_seed_string(BH, PK, 3, 12, 0),
        "TEST_BLOCK_test_pub_keys_nonce_3_haar_hh_12_0"
    );
    assert_eq!(layer_seed_string(BH, 5), "TEST_BLOCK_layer_5_householder");
}

/// §1.7: stronger RNG sub-seeds and inputs (L = 128, H = 5120, seg = 81920).
#[test]
fn s1_7_stronger_rng() {
    assert_eq!(
        sub_seeds_from_string(&inputs_seed_string(BH, PK, 0)),
        [
            1_589_641_989,
            1_811_054_632,
            2_092_028_337,
            1_372_497_962,
            2_845_890_790,
            282_738_888,
            1_675_009_164,
            1_960_591_446
        ]
    );
    let x = generate_inputs(BH, PK, 0, InputRng::Stronger, 128, 5120);
    assert_close(
        &x[..4],
        &[0.013_824_8, 0.947_009_4, 1.612_846_7, -1.149_367_2],
    );
    assert_close(&x[81_920..81_921], &[-2.425_967_5]);
}

/// §2.1, §7.3: standard inputs of nonce 0 (L = 128, H = 5120).
#[test]
fn s2_1_inputs() {
    let (l, h) = (128, 5120);
    let x = generate_inputs(BH, PK, 0, InputRng::Standard, l, h);
    assert_eq!(x.len(), l * h);
    assert_close(
        &x[..8],
        &[
            -0.497_480_8,
            1.561_351_3,
            1.435_917_5,
            -1.171_284_9,
            1.458_792,
            0.236_983,
            -0.020_958_6,
            0.476_605_8,
        ],
    );
    assert_close(
        &x[h..h + 4],
        &[0.652_527_3, -0.024_671_9, -1.439_468_4, 0.621_111_8],
    );
    // Element P = 327680: the first sin value (block layout).
    assert_close(&x[327_680..327_681], &[1.204_049_7]);
    assert_eq!(x, normals(1_589_641_989, l * h));
}

/// §2.7: pick table, H = 5120, k = 12, CUDA order.
#[test]
fn s2_7_pick() {
    let table: [(u32, [usize; 12]); 4] = [
        (
            2_826_662_626,
            [
                58, 609, 1639, 2112, 2529, 3159, 3879, 4280, 4315, 4717, 5021, 427,
            ],
        ),
        (
            1_575_255_174,
            [
                23, 707, 792, 2357, 2774, 3045, 3184, 3689, 3835, 4159, 4575, 1220,
            ],
        ),
        (
            383_259_061,
            [
                444, 539, 567, 634, 2013, 3470, 3496, 3706, 4225, 4655, 4891, 3968,
            ],
        ),
        (
            1_832_181_948,
            [
                476, 604, 1068, 3385, 3570, 3830, 3941, 4568, 4616, 4841, 4873, 3984,
            ],
        ),
    ];
    for (nonce, (seed, want)) in table.iter().enumerate() {
        let nonce = nonce as i64;
        assert_eq!(
            seed_from_string(&pick_seed_string(BH, PK, nonce, 12)),
            *seed
        );
        assert_eq!(
            pick_indices(BH, PK, nonce, 12, 5120).unwrap(),
            want,
            "nonce {nonce}"
        );
    }
    // nonce 0: the 12th-smallest hash is 13002210 at index 427, hence last.
    assert_eq!(pick_scores(BH, PK, 0, 12, 5120)[427], 13_002_210);
}

/// §2.9: first Haar vector of nonce 0 (k = 12, j = 0), raw and unit.
#[test]
fn s2_9_haar_vector() {
    let raw = normals(seed_from_string(&haar_seed_string(BH, PK, 0, 12, 0)), 12);
    assert_close(
        &raw,
        &[
            0.226_223_3,
            -0.866_609_7,
            -0.893_541_3,
            -0.466_380_2,
            -0.083_076_0,
            -0.486_962_2,
            -0.205_250_1,
            -0.484_078_7,
            0.582_803_4,
            2.607_687_2,
            -0.085_855_0,
            -0.061_818_0,
        ],
    );
    assert_close(
        &haar_vector(BH, PK, 0, 12, 0),
        &[
            0.073_437_1,
            -0.281_320_9,
            -0.290_063_5,
            -0.151_397_5,
            -0.026_968_3,
            -0.158_078_8,
            -0.066_628_8,
            -0.157_142_8,
            0.189_191,
            0.846_513_6,
            -0.027_870_5,
            -0.020_067_5,
        ],
    );
}

/// §2.10: encodings.
#[test]
fn s2_10_encoding() {
    assert_eq!(
        encode_vector(&[1.0; 12]),
        "ADwAPAA8ADwAPAA8ADwAPAA8ADwAPAA8"
    );
    assert_eq!(encode_vector(&[1.0]), "ADw=");
    assert_eq!(
        encode_vector(&[0.1, 0.2, 0.3, -0.5, 1.0]),
        "Zi5mMs00ALgAPA=="
    );
    assert_eq!(base64_len(12), 32);
    assert_eq!(
        vector_to_bytes(&[1.0, 1.0, 1.0]),
        vec![0x00, 0x3c, 0x00, 0x3c, 0x00, 0x3c]
    );
}

/// §2.6–§2.10: the end-to-end check without a model, h[d] = d + 1, nonce 0.
#[test]
fn s2_10_end_to_end_without_a_model() {
    let h: Vec<f32> = (0..5120).map(|d| (d + 1) as f32).collect();
    let xk = gather(
        &sphere_normalize(&h),
        &pick_indices(BH, PK, 0, 12, 5120).unwrap(),
    );
    assert_close(
        &xk,
        &[
            0.000_278_90,
            0.002_883_51,
            0.007_752_40,
            0.009_988_30,
            0.011_959_49,
            0.014_937_54,
            0.018_341_03,
            0.020_236_59,
            0.020_402_04,
            0.022_302_32,
            0.023_739_35,
            0.002_023_19,
        ],
    );
    let v: Vec<f32> = project_hidden(BH, PK, 0, &h, 12)
        .unwrap()
        .into_iter()
        .map(f16::to_f32)
        .collect();
    let want = [
        -0.07129, -0.56445, -0.28296, -0.02884, 0.33423, -0.08197, 0.56006, 0.29468, 0.21692,
        -0.00874, -0.13916, -0.09900,
    ];
    for (g, w) in v.iter().zip(want) {
        assert!((g - w).abs() < 5e-5, "{g} vs {w}"); // printed to 5 significant digits
    }
    let a = artifact_from_hidden(BH, PK, 0, &h, 12).unwrap();
    assert_eq!(a.vector_b64, "kKyEuIe0YqdZNT+tezi3NPEyeqB0sFau");
    assert_eq!(decode_vector_f32(&a.vector_b64, Some(12)).unwrap(), v);
}

/// §3.1: NonceIterator sequences from the reference tests, plus the derived one.
#[test]
fn s3_1_nonce_iterator() {
    let first = |node, nodes, group, groups, n| -> Vec<i64> {
        NonceIterator::new(node, nodes, group, groups)
            .unwrap()
            .take(n)
            .collect()
    };
    assert_eq!(first(0, 1, 0, 1, 5), vec![0, 1, 2, 3, 4]);
    assert_eq!(first(1, 3, 0, 1, 3), vec![1, 4, 7]);
    assert_eq!(first(1, 2, 1, 2, 4), vec![3, 7, 11, 15]);
    assert_eq!(first(2, 5, 3, 4, 4), vec![17, 37, 57, 77]);
}

/// §6.1: the validation report's binomial table (N = 200, p0 = 0.02), 4 digits printed.
#[test]
fn s6_1_binomial_table() {
    let table = [
        (1u64, 0.9824),
        (4, 0.5685),
        (5, 0.3712),
        (7, 0.1086),
        (8, 0.04934),
        (9, 0.02017),
        (10, 0.007479),
        (12, 0.0007862),
        (20, 5.391e-09),
    ];
    for (k, want) in table {
        let got = binomial_upper_tail(k, 200, 0.02).unwrap();
        assert!(rel(got, want) < 1e-3, "k {k}: {got} vs {want}");
    }
}

/// §6.5, §7.3 item 3: further p-values, and a tiny tail.
#[test]
fn s7_3_binomial_p_values() {
    let cases = [
        (1u64, 10u64, 0.001, 0.009955),
        (2, 100, 0.001, 0.004638),
        (35, 2000, 0.02, 0.8087),
        (32, 200, 0.1, 0.005354),
        (1, 10, 0.001, 0.00996),
    ];
    for (k, n, p, want) in cases {
        let got = binomial_upper_tail(k, n, p).unwrap();
        assert!(rel(got, want) < 1e-3, "P(X>={k}|{n},{p}) = {got} vs {want}");
    }
    // §6.5: with p_mismatch 0.1 and N = 200, fraud needs >= 28 mismatches for p < 0.05
    // and >= 31 for p < 0.01.
    assert!(binomial_upper_tail(28, 200, 0.1).unwrap() < 0.05);
    assert!(binomial_upper_tail(27, 200, 0.1).unwrap() >= 0.05);
    assert!(binomial_upper_tail(31, 200, 0.1).unwrap() < 0.01);
    assert!(binomial_upper_tail(30, 200, 0.1).unwrap() >= 0.01);
    // Full-precision values (SciPy / mpmath).
    assert!(
        rel(
            binomial_upper_tail(1, 10, 0.001).unwrap(),
            0.009_955_119_790_251_77
        ) < 1e-13
    );
    assert!(
        rel(
            binomial_upper_tail(4, 200, 0.02).unwrap(),
            0.568_505_026_838_492_6
        ) < 1e-13
    );
    assert!(rel(binomial_upper_tail(10, 10, 0.001).unwrap(), 1e-30) < 1e-13);
}
