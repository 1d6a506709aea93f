//! Per-layer Householder reflections ("structure breaking", `docs/protocol/compute-v2.md` §2.3).
//!
//! After every decoder layer `i` of the PoC forward, the layer's output (hidden state and
//! residual) is reflected per token: `x ← x − 2 (x·v_i) v_i` with the unit vector
//! `v_i = unit(_normal(seed("{block_hash}_layer_{i}_householder"), H))`.

use half::bf16;

use crate::rng::{dot, unit_normal_vector};
use crate::seed::{layer_seed_string, seed_from_string};

/// The unit reflection vector of decoder layer `layer` (global index) for a round.
pub fn householder_vector(block_hash: &str, layer: usize, hidden: usize) -> Vec<f32> {
    unit_normal_vector(
        seed_from_string(&layer_seed_string(block_hash, layer)),
        hidden,
    )
}

/// The reflection vectors of layers `0..num_layers`.
pub fn householder_vectors(block_hash: &str, num_layers: usize, hidden: usize) -> Vec<Vec<f32>> {
    (0..num_layers)
        .map(|i| householder_vector(block_hash, i, hidden))
        .collect()
}

/// `x ← x − 2 (x·v) v` in f32 for one vector (the dot product accumulates in f64).
///
/// # Panics
/// If `x` and `v` differ in length.
pub fn reflect(x: &mut [f32], v: &[f32]) {
    assert_eq!(x.len(), v.len(), "reflect: vector lengths differ");
    let t = 2.0 * dot(x, v);
    for (xi, &vi) in x.iter_mut().zip(v) {
        *xi -= t * vi;
    }
}

/// [`reflect`] applied to every row of a row-major `[rows, v.len()]` matrix.
///
/// # Panics
/// If the matrix length is not a multiple of `v.len()`.
pub fn reflect_rows(x: &mut [f32], v: &[f32]) {
    assert!(
        !v.is_empty() && x.len().is_multiple_of(v.len()),
        "reflect_rows: matrix is not made of rows of the vector's length"
    );
    for row in x.chunks_exact_mut(v.len()) {
        reflect(row, v);
    }
}

/// The reference's bf16 reflection of one token, op by op as eager PyTorch rounds it:
/// `vb = bf16(v)`; `p = bf16(x * vb)`; `dot = bf16(f32 sum of p)`; `t = 2 * dot` (exact);
/// `tv = bf16(t * vb)`; `x = bf16(x - tv)`.
///
/// This is the oracle for model implementations that reflect on bf16 activations. The
/// sum is accumulated in f64 and rounded to f32 then bf16 (the CUDA reduction accumulates
/// in f32 in an unspecified order, so the last f32 bit may differ there).
///
/// # Panics
/// If `x` and `v` differ in length.
pub fn reflect_bf16(x: &mut [bf16], v: &[f32]) {
    assert_eq!(x.len(), v.len(), "reflect_bf16: vector lengths differ");
    let vb: Vec<f32> = v.iter().map(|&e| bf16::from_f32(e).to_f32()).collect();
    let sum: f64 = x
        .iter()
        .zip(&vb)
        .map(|(xi, &vi)| bf16::from_f32(xi.to_f32() * vi).to_f64())
        .sum();
    let dot = bf16::from_f32(sum as f32).to_f32();
    let t = 2.0 * dot;
    for (xi, &vi) in x.iter_mut().zip(&vb) {
        let tv = bf16::from_f32(t * vi).to_f32();
        *xi = bf16::from_f32(xi.to_f32() - tv);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_per_layer_and_per_round() {
        let vs = householder_vectors("B", 3, 64);
        assert_eq!(vs.len(), 3);
        assert_ne!(vs[0], vs[1]);
        assert_eq!(vs[2], householder_vector("B", 2, 64));
        assert_ne!(vs[0], householder_vector("C", 0, 64));
    }

    #[test]
    fn reflection_maps_v_to_minus_v_and_fixes_the_orthogonal_plane() {
        let v = householder_vector("B", 0, 8);
        let mut x = v.clone();
        reflect(&mut x, &v);
        for (a, b) in x.iter().zip(&v) {
            assert!((a + b).abs() < 1e-6);
        }
        // A vector orthogonal to v is unchanged (up to rounding).
        let mut w: Vec<f32> = (0..8).map(|i| i as f32 - 3.5).collect();
        let t = dot(&w, &v);
        for (wi, vi) in w.iter_mut().zip(&v) {
            *wi -= t * vi;
        }
        let before = w.clone();
        reflect(&mut w, &v);
        for (a, b) in w.iter().zip(&before) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn rows_are_reflected_independently() {
        let v = householder_vector("B", 1, 4);
        let mut m: Vec<f32> = (0..12).map(|i| i as f32).collect();
        reflect_rows(&mut m, &v);
        for r in 0..3 {
            let mut row: Vec<f32> = (0..4).map(|i| (r * 4 + i) as f32).collect();
            reflect(&mut row, &v);
            assert_eq!(&m[r * 4..r * 4 + 4], &row[..]);
        }
    }

    #[test]
    fn bf16_reflection_follows_the_op_sequence() {
        let v = householder_vector("B", 0, 16);
        let x: Vec<bf16> = (0..16)
            .map(|i| bf16::from_f32(i as f32 * 0.37 - 2.0))
            .collect();
        let mut y = x.clone();
        reflect_bf16(&mut y, &v);
        // Hand-rolled op sequence.
        let vb: Vec<f32> = v.iter().map(|&e| bf16::from_f32(e).to_f32()).collect();
        let p: Vec<f32> = x
            .iter()
            .zip(&vb)
            .map(|(a, b)| bf16::from_f32(a.to_f32() * b).to_f32())
            .collect();
        let d = bf16::from_f32(p.iter().map(|&e| e as f64).sum::<f64>() as f32).to_f32();
        for i in 0..16 {
            let tv = bf16::from_f32(2.0 * d * vb[i]).to_f32();
            assert_eq!(y[i], bf16::from_f32(x[i].to_f32() - tv));
        }
        // And it is close to the exact reflection.
        let mut exact: Vec<f32> = x.iter().map(|e| e.to_f32()).collect();
        reflect(&mut exact, &v);
        for (a, b) in y.iter().zip(&exact) {
            assert!((a.to_f32() - b).abs() < 0.05, "{a} vs {b}");
        }
    }
}
