//! The ziggurat tables of numpy's `random_standard_normal` (256 layers, 52-bit), computed
//! with the classic recurrence (Marsaglia & Tsang) from `r` and the layer area `v`.

use std::sync::OnceLock;

/// Start of the tail.
pub const NOR_R: f64 = 3.654_152_885_361_008_796_351_947_251_8;
/// `1 / NOR_R`.
pub const NOR_INV_R: f64 = 0.273_661_237_329_758_272_033_382_475_96;
/// Area of each layer.
pub const NOR_V: f64 = 0.004_928_673_233_99;

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
        let mut ki = [0u64; 256];
        let mut wi = [0f64; 256];
        let mut fi = [0f64; 256];
        let mut dn = NOR_R;
        let mut tn = dn;
        let q = NOR_V / (-0.5 * dn * dn).exp();
        ki[0] = ((dn / q) * m1) as u64;
        ki[1] = 0;
        wi[0] = q / m1;
        wi[255] = dn / m1;
        fi[0] = 1.0;
        fi[255] = (-0.5 * dn * dn).exp();
        for i in (1..=254).rev() {
            dn = (-2.0 * (NOR_V / dn + (-0.5 * dn * dn).exp()).ln()).sqrt();
            ki[i + 1] = ((dn / tn) * m1) as u64;
            tn = dn;
            fi[i] = (-0.5 * dn * dn).exp();
            wi[i] = dn / m1;
        }
        Tables { ki, wi, fi }
    })
}
