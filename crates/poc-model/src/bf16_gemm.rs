//! bf16 matrix products on x86-64 CPUs with AVX512-BF16 (`vdpbf16ps`), selected at run
//! time (`docs/model.md`, "CPU bf16").
//!
//! `C = A · Wᵀ` for activations `A: [m, k]` (bf16, row-major) and a weight `W: [n, k]`
//! packed once at load ([`PackedWeight`]). Every product of two bf16 values is exact in
//! f32 and is accumulated in f32; the output is rounded once to bf16 (to nearest, ties
//! to even). That is the arithmetic of widening both operands to f32 and multiplying,
//! which the fallback does, up to the order of the f32 additions. `vdpbf16ps` reads
//! denormal bf16 inputs (below 1.2·10⁻³⁸) as zero; weights and activations do not hold
//! such values.
//!
//! The kernel: weights in panels of [`NR`] = 64 output columns, each column's two
//! consecutive `k` values in one 32-bit lane (exactly the pair `vdpbf16ps` multiplies);
//! a 6 × 64 tile of f32 accumulators (24 registers) per step over `k` pairs, the `A` pair
//! broadcast; blocks of [`KC`] pairs keep the weight block in L2; tiles of rows × panels
//! run in parallel on rayon's pool.

use half::bf16;
use rayon::prelude::*;

/// Output columns per packed panel (four 16-lane vectors).
pub const NR: usize = 64;
/// Rows per register tile.
const MR: usize = 6;
/// `k` pairs per cache block (a 64 KiB weight block).
const KC: usize = 256;
/// Rows per parallel task.
const MC: usize = 96;

/// Whether this CPU runs the kernel (AVX512-F and AVX512-BF16).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether models loaded now use the kernel: [`available`], unless the environment sets
/// `POC_CPU_BF16_KERNEL=off` (the widening f32 product then runs, e.g. to compare the two
/// side by side). Read once per process.
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        available() && std::env::var("POC_CPU_BF16_KERNEL").map_or(true, |v| v != "off")
    })
}

/// A weight `W: [n, k]` in the kernel's layout: `[n / NR panels][k / 2 pairs][NR]` of
/// `u32`, each the pair `(W[col][2p], W[col][2p + 1])` (low, high half), zero-padded at
/// the right and bottom edges.
#[derive(Debug, Clone)]
pub struct PackedWeight {
    n: usize,
    k: usize,
    pairs: usize,
    data: Vec<u32>,
}

impl PackedWeight {
    /// Packs `w`, `[n, k]` row-major.
    ///
    /// # Panics
    /// If `w.len() != n * k`.
    pub fn pack(w: &[bf16], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "weight of {n} x {k}");
        let pairs = k.div_ceil(2);
        let panels = n.div_ceil(NR);
        let mut data = vec![0u32; panels * pairs * NR];
        if pairs > 0 {
            data.par_chunks_mut(pairs * NR)
                .enumerate()
                .for_each(|(j, panel)| {
                    for c in 0..NR.min(n - j * NR) {
                        let row = &w[(j * NR + c) * k..(j * NR + c + 1) * k];
                        // Column `c` of every pair: lanes `c`, `c + NR`, `c + 2 NR`, ….
                        for (lane, pair) in panel[c..].iter_mut().step_by(NR).zip(row.chunks(2)) {
                            let lo = u32::from(pair[0].to_bits());
                            let hi = pair.get(1).map_or(0, |h| u32::from(h.to_bits()));
                            *lane = lo | (hi << 16);
                        }
                    }
                });
        }
        Self { n, k, pairs, data }
    }

    /// Output columns.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Inner dimension.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Bytes held.
    pub fn resident_bytes(&self) -> usize {
        self.data.len() * 4
    }

    /// `A · Wᵀ` for `a: [m, k]` row-major, `[m, n]` row-major out.
    ///
    /// # Panics
    /// If `a.len() != m * k` or the CPU lacks the instructions ([`available`]).
    pub fn matmul(&self, a: &[bf16], m: usize) -> Vec<bf16> {
        assert_eq!(a.len(), m * self.k, "activations of {m} x {}", self.k);
        assert!(available(), "the CPU has no AVX512-BF16");
        let n = self.n;
        let mut out = vec![bf16::ZERO; m * n];
        if m == 0 || n == 0 {
            return out;
        }
        let panels = n.div_ceil(NR);
        let tiles = m.div_ceil(MC);
        let dst = SendPtr(out.as_mut_ptr());
        (0..tiles * panels).into_par_iter().for_each(|t| {
            let (mt, j) = (t / panels, t % panels);
            let rows = MC.min(m - mt * MC);
            let cols = NR.min(n - j * NR);
            let mut acc = [0f32; MC * NR];
            self.tile(a, mt * MC, rows, j, &mut acc);
            for r in 0..rows {
                let row = (mt * MC + r) * n + j * NR;
                // SAFETY: tasks own disjoint (row range × panel) blocks of `out`, and
                // `row + cols <= m * n` by the bounds above.
                let row_out = unsafe { std::slice::from_raw_parts_mut(dst.get().add(row), cols) };
                round_to_bf16(&acc[r * NR..r * NR + cols], row_out);
            }
        });
        out
    }

    /// Accumulates rows `m0..m0 + rows` of `A · Wᵀ` for panel `j` into `acc` (`[rows, NR]`).
    fn tile(&self, a: &[bf16], m0: usize, rows: usize, j: usize, acc: &mut [f32]) {
        let panel = &self.data[j * self.pairs * NR..(j + 1) * self.pairs * NR];
        let mut p0 = 0;
        while p0 < self.pairs {
            let p1 = (p0 + KC).min(self.pairs);
            let mut r = 0;
            while r < rows {
                let h = MR.min(rows - r);
                let a_rows = &a[(m0 + r) * self.k..(m0 + r + h) * self.k];
                let c = &mut acc[r * NR..(r + h) * NR];
                let args = Block {
                    a: a_rows,
                    k: self.k,
                    p0,
                    p1,
                    b: panel,
                    first: p0 == 0,
                };
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `matmul` checked that the CPU has AVX512-F and AVX512-BF16; the
                // slices cover `h` rows of `a`, pairs `p0..p1` of the panel and `h` rows
                // of the accumulators, which is all `micro` reads and writes.
                unsafe {
                    match h {
                        1 => x86::micro::<1>(&args, c),
                        2 => x86::micro::<2>(&args, c),
                        3 => x86::micro::<3>(&args, c),
                        4 => x86::micro::<4>(&args, c),
                        5 => x86::micro::<5>(&args, c),
                        _ => x86::micro::<6>(&args, c),
                    }
                }
                #[cfg(not(target_arch = "x86_64"))]
                let _ = (args, c);
                r += h;
            }
            p0 = p1;
        }
    }
}

/// `out[i] = bf16(src[i])`, rounded to nearest, ties to even (NaN stays a quiet NaN):
/// exactly `half::bf16::from_f32`, sixteen at a time.
fn round_to_bf16(src: &[f32], out: &mut [bf16]) {
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: the CPU has AVX512-F (checked just above).
        done = unsafe { x86::round_to_bf16(src, out) };
    }
    for (o, x) in out[done..].iter_mut().zip(&src[done..]) {
        *o = bf16::from_f32(*x);
    }
}

/// One register tile's inputs: `h` rows of `a` (`k` values each), pairs `p0..p1` of a
/// packed panel `b`, and whether the accumulators start at zero.
struct Block<'a> {
    a: &'a [bf16],
    k: usize,
    p0: usize,
    p1: usize,
    b: &'a [u32],
    first: bool,
}

#[derive(Clone, Copy)]
struct SendPtr(*mut bf16);
// SAFETY: the pointer is only written through at disjoint offsets by the tasks of one
// `matmul`, which outlives them.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

impl SendPtr {
    fn get(self) -> *mut bf16 {
        self.0
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Block, NR};

    /// The same 64 bytes as 32 bf16 lanes.
    #[inline(always)]
    fn bh(x: __m512i) -> __m512bh {
        // SAFETY: both are 64-byte vectors of plain integer lanes; every bit pattern is a
        // valid value of either.
        unsafe { std::mem::transmute::<__m512i, __m512bh>(x) }
    }

    /// Rounds the whole vectors of `src` into `out` (see [`super::round_to_bf16`]);
    /// returns how many values it wrote.
    ///
    /// # Safety
    /// The CPU must have AVX512-F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn round_to_bf16(src: &[f32], out: &mut [half::bf16]) -> usize {
        let n = src.len().min(out.len()) / 16 * 16;
        let abs = _mm512_set1_epi32(0x7fff_ffff);
        let inf = _mm512_set1_epi32(0x7f80_0000);
        let half = _mm512_set1_epi32(0x7fff);
        let one = _mm512_set1_epi32(1);
        let quiet = _mm512_set1_epi32(0x40);
        for i in (0..n).step_by(16) {
            // SAFETY: `i + 16 <= n <= src.len()`.
            let u = _mm512_castps_si512(unsafe { _mm512_loadu_ps(src.as_ptr().add(i)) });
            let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(u), one);
            let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(u, _mm512_add_epi32(half, lsb)));
            let nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, abs), inf);
            let nan_bits = _mm512_or_si512(_mm512_srli_epi32::<16>(u), quiet);
            let r = _mm512_mask_blend_epi32(nan, rounded, nan_bits);
            // SAFETY: `i + 16 <= n <= out.len()`; 16 lanes narrowed to 16 `u16`.
            unsafe {
                _mm256_storeu_si256(out.as_mut_ptr().add(i).cast(), _mm512_cvtepi32_epi16(r))
            };
        }
        n
    }

    /// `acc[r][..] (+)= Σ_p a[r][2p..2p+2] · b[p][..]` for `R` rows and one 64-column
    /// panel over pairs `p0..p1`.
    ///
    /// # Safety
    /// The CPU must have AVX512-F and AVX512-BF16; `args.a` must hold `R` rows of
    /// `args.k` values, `args.b` pairs up to `p1` of `NR` lanes, `acc` `R × NR` values.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn micro<const R: usize>(args: &Block<'_>, acc: &mut [f32]) {
        debug_assert!(args.a.len() >= R * args.k && acc.len() >= R * NR);
        debug_assert!(args.b.len() >= args.p1 * NR);
        let a = args.a.as_ptr().cast::<u16>();
        let b = args.b.as_ptr();
        let out = acc.as_mut_ptr();
        let mut c = [[_mm512_setzero_ps(); 4]; R];
        if !args.first {
            for (r, row) in c.iter_mut().enumerate() {
                for (v, x) in row.iter_mut().enumerate() {
                    // SAFETY: `r * NR + v * 16 + 16 <= R * NR <= acc.len()`.
                    *x = unsafe { _mm512_loadu_ps(out.add(r * NR + v * 16)) };
                }
            }
        }
        // Pairs with both values inside the row; a last odd `k` value is paired with 0.
        let k = args.k;
        let full = (k / 2).min(args.p1);
        // One pair step: four weight vectors, each row's pair broadcast, 4·R products.
        macro_rules! step {
            ($p:expr, |$r:ident| $pair:expr) => {{
                let p = $p;
                // SAFETY: `p < p1`, so the panel holds lanes `p * NR .. p * NR + 64`.
                let bv: [__m512bh; 4] = unsafe {
                    let bp = b.add(p * NR).cast::<__m512i>();
                    [
                        bh(_mm512_loadu_si512(bp)),
                        bh(_mm512_loadu_si512(bp.add(1))),
                        bh(_mm512_loadu_si512(bp.add(2))),
                        bh(_mm512_loadu_si512(bp.add(3))),
                    ]
                };
                for ($r, row) in c.iter_mut().enumerate() {
                    let pair: u32 = $pair;
                    let va = bh(_mm512_set1_epi32(pair as i32));
                    row[0] = _mm512_dpbf16_ps(row[0], va, bv[0]);
                    row[1] = _mm512_dpbf16_ps(row[1], va, bv[1]);
                    row[2] = _mm512_dpbf16_ps(row[2], va, bv[2]);
                    row[3] = _mm512_dpbf16_ps(row[3], va, bv[3]);
                }
            }};
        }
        for p in args.p0..full.max(args.p0) {
            // SAFETY: `2p + 1 < k`: both values of the pair are inside row `r`.
            step!(p, |r| unsafe {
                a.add(r * k + 2 * p).cast::<u32>().read_unaligned()
            });
        }
        if k % 2 == 1 && args.p1 == k.div_ceil(2) && full >= args.p0 {
            // SAFETY: `k - 1` is the row's last value.
            step!(k / 2, |r| u32::from(unsafe { *a.add(r * k + k - 1) }));
        }
        for (r, row) in c.iter().enumerate() {
            for (v, x) in row.iter().enumerate() {
                // SAFETY: as for the loads.
                unsafe { _mm512_storeu_ps(out.add(r * NR + v * 16), *x) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic spread of bf16 values around ±1 (with a few large and small).
    fn values(n: usize, seed: u64) -> Vec<bf16> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let u = (s >> 11) as f64 / (1u64 << 53) as f64;
                let e = ((s >> 3) % 9) as i32 - 4;
                bf16::from_f64((u * 2.0 - 1.0) * 2f64.powi(e))
            })
            .collect()
    }

    /// The exact dot products (f64 is exact for bf16 × bf16 products and these sums'
    /// magnitudes to far below the bf16 rounding).
    fn reference(a: &[bf16], w: &[bf16], m: usize, n: usize, k: usize) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|t| a[i * k + t].to_f64() * w[j * k + t].to_f64())
                    .sum();
            }
        }
        out
    }

    #[test]
    fn odd_shapes_match_the_exact_product_rounded_once() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX512-BF16");
            return;
        }
        for &(m, n, k) in &[
            (1, 1, 1),
            (1, 64, 2),
            (5, 17, 3),
            (7, 63, 31),
            (13, 65, 64),
            (6, 130, 513),
            (97, 70, 600),
            (2, 3, 1100),
        ] {
            let a = values(m * k, (m * 31 + k) as u64);
            let w = values(n * k, (n * 17 + k) as u64);
            let got = PackedWeight::pack(&w, n, k).matmul(&a, m);
            let want = reference(&a, &w, m, n, k);
            let mut exact = 0;
            for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                let (row, col) = (i / n, i % n);
                let mag: f64 = (0..k)
                    .map(|t| (a[row * k + t].to_f64() * w[col * k + t].to_f64()).abs())
                    .sum();
                // One bf16 rounding of the result, plus f32 accumulation error.
                let bound = e.abs() * 2f64.powi(-8) + mag * (k as f64) * 2f64.powi(-24) + 1e-30;
                assert!(
                    (g.to_f64() - e).abs() <= bound,
                    "{m}x{n}x{k} [{row},{col}]: {g} vs {e}"
                );
                exact += usize::from(*g == bf16::from_f64(*e));
            }
            // Almost every output is the exact product rounded once.
            assert!(
                exact * 100 >= got.len() * 97,
                "{m}x{n}x{k}: {exact}/{}",
                got.len()
            );
        }
    }

    #[test]
    fn rounding_to_bf16_is_halfs_for_every_kind_of_value() {
        let mut src: Vec<f32> = (0..4096u32)
            .map(|i| f32::from_bits(i.wrapping_mul(0x9e37_79b9) ^ (i << 7)))
            .collect();
        src.extend([
            0.0,
            -0.0,
            1.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MAX,
            f32::MIN_POSITIVE,
            f32::from_bits(0x3f80_8000),
            f32::from_bits(0x3f81_8000),
            f32::from_bits(0x7f7f_ffff),
            f32::from_bits(1),
            f32::from_bits(0xff80_0001),
        ]);
        let mut out = vec![bf16::ZERO; src.len()];
        round_to_bf16(&src, &mut out);
        for (x, o) in src.iter().zip(&out) {
            assert_eq!(
                o.to_bits(),
                bf16::from_f32(*x).to_bits(),
                "{x:e} ({:#x})",
                x.to_bits()
            );
        }
    }

    #[test]
    fn empty_products_are_empty() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX512-BF16");
            return;
        }
        let w = PackedWeight::pack(&values(6, 1), 3, 2);
        assert!(w.matmul(&[], 0).is_empty());
        assert_eq!((w.n(), w.k()), (3, 2));
        let z = PackedWeight::pack(&[], 4, 0).matmul(&[], 5);
        assert_eq!(z, vec![bf16::ZERO; 20]);
    }
}
