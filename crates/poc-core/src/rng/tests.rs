use super::*;

#[test]
fn murmur_is_not_stock_murmur3() {
    // Stock MurmurHash3_x86_32 of the LE bytes 00000000, seed 0, is 0x2362f9de.
    assert_ne!(murmur(0, 0), 0x2362_f9de);
}

#[test]
fn uniform_rounds_to_nearest_even_and_reaches_one() {
    assert_eq!(uniform_from_hash(0), 0.0);
    assert_eq!(uniform_from_hash(u32::MAX), 1.0);
    assert_eq!(uniform_from_hash(4_294_967_168), 1.0); // 2^32 - 128: tie, rounds up
    assert!(uniform_from_hash(4_294_967_167) < 1.0);
    // 2^24 + 1 is a tie between 2^24 and 2^24 + 2: ties to even gives 2^24.
    assert_eq!(
        uniform_from_hash((1 << 24) + 1),
        (1u32 << 24) as f32 * 2f32.powi(-32)
    );
    assert_eq!(
        uniform_from_hash((1 << 24) + 3),
        ((1u32 << 24) + 4) as f32 * 2f32.powi(-32)
    );
}

#[test]
fn constants() {
    assert_eq!(TWO_PI_F32 as f64, 6.283_185_482_025_146_5);
    assert_eq!(U1_MIN, 1e-10_f64 as f32);
}

#[test]
fn ln_kernel_matches_std() {
    let mut worst = 0f64;
    let mut x = 1e-10f32;
    while x <= 1.0 {
        let got = ln_f32_arg(x);
        let want = (x as f64).ln();
        if want != 0.0 {
            worst = worst.max(((got - want) / want).abs());
        } else {
            assert_eq!(got, 0.0);
        }
        x = f32::from_bits(x.to_bits() + 4099);
    }
    assert!(worst < 1e-15, "worst relative error {worst}");
    assert_eq!(ln_f32_arg(1.0).to_bits(), 0.0f64.to_bits());
}

#[test]
fn sincos_kernel_matches_std() {
    let mut worst = 0f64;
    let mut bits = 0u32;
    loop {
        let x = f32::from_bits(bits);
        if x > 8.0 {
            break;
        }
        let (s, c) = sincos_small(x as f64);
        let xs = x as f64;
        for (got, want) in [(s, xs.sin()), (c, xs.cos())] {
            let err = (got - want).abs() / want.abs().max(f64::MIN_POSITIVE);
            worst = worst.max(if want == 0.0 { got.abs() } else { err });
        }
        bits += 997;
    }
    assert!(worst < 2e-15, "worst relative error {worst}");
    // Near the zeros of sin/cos the relative accuracy must hold too.
    for x in [
        std::f32::consts::PI,
        std::f32::consts::FRAC_PI_2,
        TWO_PI_F32,
        4.712_389,
    ] {
        let (s, c) = sincos_small(x as f64);
        let xs = x as f64;
        assert!(((s - xs.sin()) / xs.sin()).abs() < 1e-14, "sin {x}");
        assert!(((c - xs.cos()) / xs.cos()).abs() < 1e-14, "cos {x}");
    }
}

#[test]
fn fast_normals_agree_with_the_reference_emulation() {
    // Millions of pairs: every value within 1 ulp, almost all identical.
    let n = 3_000_000;
    let mut differing = 0usize;
    for seed in [1_589_641_989u32, 7, 0xdead_beef] {
        let fast = normals(seed, n);
        let slow = reference::normals(seed, n);
        for (f, s) in fast.iter().zip(&slow) {
            let d = ulp_distance(*f, *s);
            assert!(d <= 1, "{f} vs {s}: {d} ulp");
            differing += (d != 0) as usize;
        }
    }
    eprintln!(
        "{differing} of {} normals differ by 1 ulp from the std emulation",
        3 * n
    );
    assert!(
        differing < 3 * n / 10_000,
        "{differing} values differ by 1 ulp"
    );
}

#[test]
fn normal_pair_edge_cases() {
    // u1 = 1.0 gives r = -0.0, so an exact (signed) zero sample.
    let (c, s) = box_muller_pair(u32::MAX, 123);
    assert_eq!(c, 0.0);
    assert_eq!(s, 0.0);
    // hash 0 gives u1 = 0, clamped to 1e-10.
    let (c, _) = box_muller_pair(0, 0);
    let r = (-2.0f32 * ((U1_MIN as f64).ln() as f32)).sqrt();
    assert_eq!(c, r);
    // u2 = 1.0: cos ≈ 1, sin ≈ 1.748e-7.
    let (c, s) = box_muller_pair(1 << 31, u32::MAX);
    let r = (-2.0f32 * (0.5f64.ln() as f32)).sqrt();
    assert_eq!(c, r);
    assert!((s / r - 1.748_455_7e-7).abs() < 1e-12, "{s}");
}

#[test]
fn block_layout_not_interleaved() {
    let seed = 99;
    let v = normals(seed, 10);
    let p = 5;
    for j in 0..p {
        let (c, s) = box_muller_pair(murmur(j as u32, seed), murmur((p + j) as u32, seed));
        assert_eq!(v[j].to_bits(), c.to_bits());
        assert_eq!(v[p + j].to_bits(), s.to_bits());
    }
}

#[test]
fn odd_length_drops_the_last_sin() {
    let seed = 5;
    let v = normals(seed, 7); // P = 4, keys 0..8
    let p = 4;
    for j in 0..p {
        let (c, s) = box_muller_pair(murmur(j as u32, seed), murmur((p + j) as u32, seed));
        assert_eq!(v[j].to_bits(), c.to_bits());
        if p + j < 7 {
            assert_eq!(v[p + j].to_bits(), s.to_bits());
        }
    }
    assert_eq!(v.len(), 7);
}

#[test]
fn split_draw_equals_whole_draw() {
    for n in [0usize, 1, 2, 3, 31, 32, 33, 1000, 1001] {
        let whole = normals(77, n);
        for max_pairs in [1usize, 3, 16, 17, 10_000] {
            let mut parts = vec![f32::NAN; n];
            let chunks = split_normals(77, &mut parts, max_pairs);
            assert_eq!(chunks.iter().map(NormalChunk::len).sum::<usize>(), n);
            for c in chunks.into_iter().rev() {
                c.fill();
            }
            assert_eq!(
                whole.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                parts.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                "n {n}, max_pairs {max_pairs}"
            );
        }
    }
}

#[test]
fn portable_and_avx2_paths_are_bit_identical() {
    let n: usize = 100_001;
    let p = n.div_ceil(2);
    let mut a = vec![0f32; n];
    let (ac, as_) = a.split_at_mut(p);
    fill_pairs_portable(3, p, 0, ac, as_);
    let b = normals(3, n);
    assert_eq!(
        a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        b.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
fn ulp_distance_counts_across_zero() {
    assert_eq!(ulp_distance(1.0, 1.0), 0);
    assert_eq!(ulp_distance(1.0, f32::from_bits(1.0f32.to_bits() + 2)), 2);
    assert_eq!(ulp_distance(0.0, -0.0), 0);
    assert_eq!(ulp_distance(f32::from_bits(1), -f32::from_bits(1)), 2);
}
