//! The ziggurat tables of numpy's `random_standard_normal` (256 layers, 52-bit).
//!
//! The layer widths `wi` are numpy's own, recovered from its outputs by
//! `scripts/numpy_ziggurat_widths.py` (the fast path returns `rabs × wi[idx]`, which pins
//! each double down). The acceptance thresholds and densities follow from them with the
//! classic construction (Marsaglia & Tsang): with `x_i = wi[i]·2^52` the layer edges,
//! `ki[i+1] = ⌊x_i / x_{i+1} · 2^52⌋`, `ki[0] = ⌊r / (wi[0]·2^52) · 2^52⌋`, `ki[1] = 0`,
//! `fi[i] = exp(−x_i²/2)`, `fi[0] = 1`. The tests compare two million draws with numpy's.

use std::sync::OnceLock;

use crate::ziggurat_wi::WI_BITS;

/// Start of the tail.
pub const NOR_R: f64 = 3.654_152_885_361_009;
/// `1 / NOR_R`.
pub const NOR_INV_R: f64 = 0.273_661_237_329_758_3;

/// `ki`, `wi`, `fi`.
#[derive(Debug)]
pub struct Tables {
    /// Acceptance thresholds on the 52-bit mantissa.
    pub ki: [u64; 256],
    /// Layer widths / 2^52.
    pub wi: [f64; 256],
    /// Density at the layer edges.
    pub fi: [f64; 256],
}

/// The tables (computed once).
pub fn tables() -> &'static Tables {
    static T: OnceLock<Tables> = OnceLock::new();
    T.get_or_init(|| {
        let m1 = 4_503_599_627_370_496.0_f64; // 2^52
        let wi: [f64; 256] = std::array::from_fn(|i| f64::from_bits(WI_BITS[i]));
        let x: [f64; 256] = std::array::from_fn(|i| wi[i] * m1);
        let mut ki = [0u64; 256];
        let mut fi = [0f64; 256];
        ki[0] = ((x[255] / x[0]) * m1) as u64;
        fi[0] = 1.0;
        for i in 1..256 {
            fi[i] = (-0.5 * x[i] * x[i]).exp();
        }
        for i in 1..255 {
            ki[i + 1] = ((x[i] / x[i + 1]) * m1) as u64;
        }
        Tables { ki, wi, fi }
    })
}
