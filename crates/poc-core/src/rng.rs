//! The reference's random primitives: the non-standard murmur hash, uniforms and
//! Box–Muller normals in the block layout (`docs/protocol/compute-v2.md` §1.2–§1.5).
//!
//! Integer parts (hashes, the u32 → f32 conversion, the uniforms) are bit-exact.
//! Normals follow the reference's op-by-op f32 rounding
//! (`r = sqrt(-2 * log(u1))`, `z0 = r * cos(2π * u2)`, `z1 = r * sin(2π * u2)`), with the
//! three transcendentals evaluated in f64 and rounded once to f32, so each of them is the
//! correctly rounded f32 value except in very rare near-halfway cases (at most 1 ulp away).
//! The reference itself (CUDA `logf`/`cosf`/`sinf`) is only 1–2 ulp accurate, so no
//! implementation can promise more than that on the normals.
//!
//! The kernels are written as fixed-width lane loops so the compiler vectorises them; on
//! x86-64 an AVX2 build of the same code is picked at run time. No fused multiply-add is
//! used anywhere, so every code path gives bit-identical results on every machine.

/// 2^-32 as f32 (exact).
const TWO_POW_MINUS_32: f32 = f32::from_bits(0x2f80_0000);

/// Lower clamp of `u1` (`torch.clamp(u1, min=1e-10)`), `f32(1e-10)`.
pub const U1_MIN: f32 = 1e-10;

/// The Python double `2 * math.pi` cast to f32 (= 6.2831854820251465).
pub const TWO_PI_F32: f32 = std::f64::consts::TAU as f32;

/// The reference's MurmurHash3-x86_32 variant for one 32-bit key.
///
/// Unlike the library function there is **no** `h ^= len` before the finaliser, so a stock
/// murmur3 crate gives different numbers (`murmur(0, 0) = 4279838538`).
#[inline(always)]
pub const fn murmur(key: u32, seed: u32) -> u32 {
    let mut k = key.wrapping_mul(0xcc9e_2d51);
    k = k.rotate_left(15);
    k = k.wrapping_mul(0x1b87_3593);
    let mut h = seed ^ k;
    h = h.rotate_left(13);
    h = h.wrapping_mul(5).wrapping_add(0xe654_6b64);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// `f32(hash) * 2^-32`, the u32 → f32 conversion rounding to nearest, ties to even.
/// Hashes ≥ 2^32 − 128 give exactly 1.0.
#[inline(always)]
pub fn uniform_from_hash(hash: u32) -> f32 {
    (hash as f32) * TWO_POW_MINUS_32
}

/// The `i`-th uniform of the stream `seed`: `uniform_from_hash(murmur(i, seed))`.
#[inline(always)]
pub fn uniform(seed: u32, i: u32) -> f32 {
    uniform_from_hash(murmur(i, seed))
}

/// Fills `out` with `murmur(first + i, seed)` for each position `i`.
pub fn fill_hashes(seed: u32, first: u32, out: &mut [u32]) {
    for (i, h) in out.iter_mut().enumerate() {
        *h = murmur(first.wrapping_add(i as u32), seed);
    }
}

// ---------------------------------------------------------------------------------------
// f64 kernels for log, sin and cos on the argument ranges Box–Muller needs.

const SQRT_2: f64 = std::f64::consts::SQRT_2;
/// ln 2 split so that `e * LN2_HI` is exact for |e| < 2^11.
const LN2_HI: f64 = 6.931_471_803_691_238e-1;
const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
/// π/2 split (33 leading bits, then the rest) so that `q * PIO2_1` is exact for small q.
const PIO2_1: f64 = 1.570_796_326_734_125_6;
const PIO2_1T: f64 = 6.077_100_506_506_192e-11;
/// 1.5 · 2^52: adding it rounds an f64 in [0, 2^51) to the nearest integer (ties to even).
const ROUND_MAGIC: f64 = 6_755_399_441_055_744.0;

/// Natural logarithm of a positive, normal f32, in f64 (relative error about 3e-16).
#[inline(always)]
fn ln_f32_arg(x: f32) -> f64 {
    let bits = x.to_bits();
    let e = ((bits >> 23) as i32) - 127;
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000) as f64; // [1, 2)
    let big = m > SQRT_2;
    let m = if big { m * 0.5 } else { m }; // [sqrt(1/2), sqrt(2))
    let e = (e + big as i32) as f64;
    // ln m = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.1716.
    let f = m - 1.0;
    let s = f / (2.0 + f);
    let z = s * s;
    let p = 1.0 / 23.0;
    let p = 1.0 / 21.0 + z * p;
    let p = 1.0 / 19.0 + z * p;
    let p = 1.0 / 17.0 + z * p;
    let p = 1.0 / 15.0 + z * p;
    let p = 1.0 / 13.0 + z * p;
    let p = 1.0 / 11.0 + z * p;
    let p = 1.0 / 9.0 + z * p;
    let p = 1.0 / 7.0 + z * p;
    let p = 1.0 / 5.0 + z * p;
    let p = 1.0 / 3.0 + z * p;
    // 2s(1 + z p) = 2s + 2s z p: keep the leading term separate for accuracy.
    let ln_m = 2.0 * s + (2.0 * s) * (z * p);
    e * LN2_HI + (e * LN2_LO + ln_m)
}

/// `(sin x, cos x)` in f64 for 0 ≤ x ≤ 8 (relative error about 2e-16, also near zeros).
#[inline(always)]
fn sincos_small(x: f64) -> (f64, f64) {
    let t = x * std::f64::consts::FRAC_2_PI + ROUND_MAGIC;
    let q = t.to_bits() as u32; // low bits hold round(x * 2/π)
    let qf = t - ROUND_MAGIC;
    // Exact for 0 ≤ q ≤ 5 (Sterbenz), then the tail of π/2.
    let y = (x - qf * PIO2_1) - qf * PIO2_1T; // |y| ≤ π/4
    let z = y * y;
    // Taylor series to y^17 / y^18: truncation error < 1e-19 on |y| ≤ π/4.
    let s = 1.0 / 355_687_428_096_000.0;
    let s = -1.0 / 1_307_674_368_000.0 + z * s;
    let s = 1.0 / 6_227_020_800.0 + z * s;
    let s = -1.0 / 39_916_800.0 + z * s;
    let s = 1.0 / 362_880.0 + z * s;
    let s = -1.0 / 5_040.0 + z * s;
    let s = 1.0 / 120.0 + z * s;
    let s = -1.0 / 6.0 + z * s;
    let sin_y = y + y * (z * s);
    let c = 1.0 / 6_402_373_705_728_000.0;
    let c = -1.0 / 20_922_789_888_000.0 + z * c;
    let c = 1.0 / 87_178_291_200.0 + z * c;
    let c = -1.0 / 479_001_600.0 + z * c;
    let c = 1.0 / 3_628_800.0 + z * c;
    let c = -1.0 / 40_320.0 + z * c;
    let c = 1.0 / 720.0 + z * c;
    let c = -1.0 / 24.0 + z * c;
    let c = 1.0 / 2.0 + z * c;
    let cos_y = 1.0 - z * c;
    let swap = q & 1 != 0;
    let (s0, c0) = if swap { (cos_y, sin_y) } else { (sin_y, cos_y) };
    let sin_neg = q & 2 != 0;
    let cos_neg = q.wrapping_add(1) & 2 != 0;
    (
        if sin_neg { -s0 } else { s0 },
        if cos_neg { -c0 } else { c0 },
    )
}

/// One Box–Muller pair from its two hashes, with the reference's f32 rounding after each op
/// (the scalar form of the vectorised kernel below).
#[cfg(test)]
fn box_muller_pair(h1: u32, h2: u32) -> (f32, f32) {
    let u1 = uniform_from_hash(h1).max(U1_MIN);
    let u2 = uniform_from_hash(h2);
    let l = ln_f32_arg(u1) as f32;
    let r = (-2.0f32 * l).sqrt();
    let a = TWO_PI_F32 * u2;
    let (s, c) = sincos_small(a as f64);
    (r * (c as f32), r * (s as f32))
}

/// Pairs processed per kernel call (lanes of the vectorised loops).
const LANES: usize = 16;

#[inline(always)]
fn pair_block(seed: u32, key1: u32, key2: u32, z0: &mut [f32; LANES], z1: &mut [f32; LANES]) {
    let mut h1 = [0u32; LANES];
    let mut h2 = [0u32; LANES];
    for i in 0..LANES {
        h1[i] = murmur(key1.wrapping_add(i as u32), seed);
        h2[i] = murmur(key2.wrapping_add(i as u32), seed);
    }
    let mut r = [0f32; LANES];
    for i in 0..LANES {
        let u1 = uniform_from_hash(h1[i]).max(U1_MIN);
        let l = ln_f32_arg(u1) as f32;
        r[i] = (-2.0f32 * l).sqrt();
    }
    for i in 0..LANES {
        let a = TWO_PI_F32 * uniform_from_hash(h2[i]);
        let (s, c) = sincos_small(a as f64);
        z0[i] = r[i] * (c as f32);
        z1[i] = r[i] * (s as f32);
    }
}

#[inline(always)]
fn fill_pairs_generic(
    seed: u32,
    pairs: usize,
    first: usize,
    cos_out: &mut [f32],
    sin_out: &mut [f32],
) {
    let count = cos_out.len();
    let mut z0 = [0f32; LANES];
    let mut z1 = [0f32; LANES];
    let mut done = 0;
    while done < count {
        let j = first + done;
        pair_block(seed, j as u32, (pairs + j) as u32, &mut z0, &mut z1);
        let take = LANES.min(count - done);
        cos_out[done..done + take].copy_from_slice(&z0[..take]);
        let sin_take = take.min(sin_out.len().saturating_sub(done));
        sin_out[done..done + sin_take].copy_from_slice(&z1[..sin_take]);
        done += take;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn fill_pairs_avx2(
    seed: u32,
    pairs: usize,
    first: usize,
    cos_out: &mut [f32],
    sin_out: &mut [f32],
) {
    fill_pairs_generic(seed, pairs, first, cos_out, sin_out)
}

fn fill_pairs_portable(
    seed: u32,
    pairs: usize,
    first: usize,
    cos_out: &mut [f32],
    sin_out: &mut [f32],
) {
    fill_pairs_generic(seed, pairs, first, cos_out, sin_out)
}

/// Computes pairs `first .. first + cos_out.len()` of a block-layout normal draw that has
/// `pairs` pairs in total (`pairs = ceil(n / 2)` for a draw of `n` normals).
///
/// `cos_out[i]` receives element `first + i` of the draw (the cos branch of pair
/// `first + i`) and `sin_out[i]` element `pairs + first + i` (its sin branch). `sin_out`
/// may be shorter than `cos_out` by one, for the dropped last sin value of an odd `n`.
/// Splitting a draw into such ranges lets callers spread one draw over threads.
///
/// # Panics
/// If `sin_out` is longer than `cos_out`, or the range ends past `pairs`.
pub fn fill_normal_pairs(
    seed: u32,
    pairs: usize,
    first: usize,
    cos_out: &mut [f32],
    sin_out: &mut [f32],
) {
    assert!(
        sin_out.len() <= cos_out.len(),
        "sin_out longer than cos_out"
    );
    assert!(
        first + cos_out.len() <= pairs,
        "pair range ends past the draw"
    );
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { fill_pairs_avx2(seed, pairs, first, cos_out, sin_out) };
        return;
    }
    fill_pairs_portable(seed, pairs, first, cos_out, sin_out)
}

/// `_normal(seed, n)` with `n = out.len()`: Box–Muller normals in the **block layout**.
///
/// With `P = ceil(n / 2)`, element `j < P` is `r_j cos(2π u2_j)` and element `P + j` is
/// `r_j sin(2π u2_j)`, where `u1_j = uniform(seed, j)` (clamped at [`U1_MIN`]) and
/// `u2_j = uniform(seed, P + j)`. For odd `n` the last sin value is dropped.
pub fn fill_normals(seed: u32, out: &mut [f32]) {
    let pairs = out.len().div_ceil(2);
    let (cos_out, sin_out) = out.split_at_mut(pairs);
    fill_normal_pairs(seed, pairs, 0, cos_out, sin_out);
}

/// [`fill_normals`] into a new vector.
pub fn normals(seed: u32, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n];
    fill_normals(seed, &mut out);
    out
}

/// `v / ||v||_2` in f32 (the norm is accumulated in f64 and rounded once).
/// A zero vector is returned unchanged.
pub fn normalize(v: &mut [f32]) {
    let norm = l2_norm(v);
    if norm > 0.0 {
        for x in v.iter_mut() {
            *x /= norm;
        }
    }
}

/// `||v||_2`, accumulated in f64 and rounded once to f32.
pub fn l2_norm(v: &[f32]) -> f32 {
    v.iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt() as f32
}

/// Dot product of two f32 slices, accumulated in f64 and rounded once to f32.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64) * (y as f64))
        .sum::<f64>() as f32
}

/// `unit(_normal(seed, n))`: a unit vector of `n` normals (Householder and Haar vectors).
pub fn unit_normal_vector(seed: u32, n: usize) -> Vec<f32> {
    let mut v = normals(seed, n);
    normalize(&mut v);
    v
}

/// A contiguous piece of one block-layout normal draw, to be filled independently of the
/// other pieces (for example on another thread). Created by [`split_normals`].
#[derive(Debug)]
pub struct NormalChunk<'a> {
    seed: u32,
    pairs: usize,
    first: usize,
    cos_out: &'a mut [f32],
    sin_out: &'a mut [f32],
}

impl NormalChunk<'_> {
    /// Number of normals this chunk writes.
    pub fn len(&self) -> usize {
        self.cos_out.len() + self.sin_out.len()
    }

    /// Whether the chunk writes nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Computes the chunk's values.
    pub fn fill(self) {
        fill_normal_pairs(
            self.seed,
            self.pairs,
            self.first,
            self.cos_out,
            self.sin_out,
        );
    }
}

/// Splits the draw `_normal(seed, out.len())` into chunks of at most `max_pairs` pairs.
/// Filling every chunk (in any order, on any thread) gives exactly [`fill_normals`].
pub fn split_normals(seed: u32, out: &mut [f32], max_pairs: usize) -> Vec<NormalChunk<'_>> {
    let max_pairs = max_pairs.max(1);
    let pairs = out.len().div_ceil(2);
    let (mut cos_rest, mut sin_rest) = out.split_at_mut(pairs);
    let mut chunks = Vec::with_capacity(pairs.div_ceil(max_pairs));
    let mut first = 0;
    while first < pairs {
        let take = max_pairs.min(pairs - first);
        let (c, cr) = std::mem::take(&mut cos_rest).split_at_mut(take);
        let sin_take = take.min(sin_rest.len());
        let (s, sr) = std::mem::take(&mut sin_rest).split_at_mut(sin_take);
        cos_rest = cr;
        sin_rest = sr;
        chunks.push(NormalChunk {
            seed,
            pairs,
            first,
            cos_out: c,
            sin_out: s,
        });
        first += take;
    }
    chunks
}

#[cfg(test)]
pub(crate) mod reference {
    //! Straightforward scalar emulation of the reference op sequence, using the standard
    //! library's f64 transcendentals, as an oracle for the fast kernels.
    use super::*;

    pub fn normal_pair(h1: u32, h2: u32) -> (f32, f32) {
        let u1 = uniform_from_hash(h1).max(U1_MIN);
        let u2 = uniform_from_hash(h2);
        let l = (u1 as f64).ln() as f32;
        let r = (-2.0f32 * l).sqrt();
        let a = (TWO_PI_F32 * u2) as f64;
        (r * (a.cos() as f32), r * (a.sin() as f32))
    }

    pub fn normals(seed: u32, n: usize) -> Vec<f32> {
        let p = n.div_ceil(2);
        let mut out = vec![0f32; 2 * p];
        for j in 0..p {
            let (c, s) = normal_pair(murmur(j as u32, seed), murmur((p + j) as u32, seed));
            out[j] = c;
            out[p + j] = s;
        }
        out.truncate(n);
        out
    }
}

/// Distance in units in the last place between two finite f32 values of any sign.
pub fn ulp_distance(a: f32, b: f32) -> u32 {
    fn ordered(x: f32) -> i64 {
        let bits = x.to_bits() as i32;
        if bits < 0 {
            -((bits & 0x7fff_ffff) as i64)
        } else {
            bits as i64
        }
    }
    (ordered(a) - ordered(b)).unsigned_abs() as u32
}

#[cfg(test)]
mod tests;
