//! numpy's random pipeline, bit for bit (`docs/protocol/compute-v1.md` §3): SHA-256 entropy words,
//! `SeedSequence` (pool of 4, hash mixing), `PCG64` seeded from it, `random()` doubles,
//! the ziggurat `standard_normal`, `normal`, and `permutation` (Fisher–Yates with masked
//! rejection on buffered 32-bit draws).

use sha2::{Digest, Sha256};

/// `get_extended_entropy(s, m)`: for i in 0..m, SHA-256 of `"{s}_{i}"` as 8 little-endian
/// `u32` words.
pub fn extended_entropy(s: &str, m: usize) -> Vec<u32> {
    let mut out = Vec::with_capacity(8 * m);
    for i in 0..m {
        let d = Sha256::digest(format!("{s}_{i}").as_bytes());
        out.extend(
            d.chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
    }
    out
}

const INIT_A: u32 = 0x43b0_d7e5;
const MULT_A: u32 = 0x931e_8875;
const INIT_B: u32 = 0x8b51_f9dd;
const MULT_B: u32 = 0x58f3_8ded;
const MIX_MULT_L: u32 = 0xca01_f9dd;
const MIX_MULT_R: u32 = 0x4973_f715;
const XSHIFT: u32 = 16;
const POOL: usize = 4;

fn hashmix(value: u32, hash_const: &mut u32) -> u32 {
    let mut v = value ^ *hash_const;
    *hash_const = hash_const.wrapping_mul(MULT_A);
    v = v.wrapping_mul(*hash_const);
    v ^ (v >> XSHIFT)
}

fn mix(x: u32, y: u32) -> u32 {
    let r = MIX_MULT_L
        .wrapping_mul(x)
        .wrapping_sub(MIX_MULT_R.wrapping_mul(y));
    r ^ (r >> XSHIFT)
}

/// numpy's `SeedSequence(entropy)` with no spawn key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedSequence {
    pool: [u32; POOL],
}

impl SeedSequence {
    /// Mixes the entropy words into the pool.
    pub fn new(entropy: &[u32]) -> Self {
        let mut pool = [0u32; POOL];
        let mut h = INIT_A;
        for (i, p) in pool.iter_mut().enumerate() {
            *p = hashmix(entropy.get(i).copied().unwrap_or(0), &mut h);
        }
        for src in 0..POOL {
            for dst in 0..POOL {
                if src != dst {
                    let v = hashmix(pool[src], &mut h);
                    pool[dst] = mix(pool[dst], v);
                }
            }
        }
        for e in entropy.iter().skip(POOL) {
            for p in pool.iter_mut() {
                let v = hashmix(*e, &mut h);
                *p = mix(*p, v);
            }
        }
        Self { pool }
    }

    /// `generate_state(n, uint64)`.
    pub fn generate_state_u64(&self, n: usize) -> Vec<u64> {
        let mut h = INIT_B;
        let words: Vec<u32> = (0..2 * n)
            .map(|i| {
                let mut v = self.pool[i % POOL] ^ h;
                h = h.wrapping_mul(MULT_B);
                v = v.wrapping_mul(h);
                v ^ (v >> XSHIFT)
            })
            .collect();
        words
            .chunks_exact(2)
            .map(|c| u64::from(c[0]) | (u64::from(c[1]) << 32))
            .collect()
    }
}

const PCG_MULT: u128 = (2_549_297_995_355_413_924u128 << 64) | 4_865_540_595_714_422_341u128;

/// numpy's `PCG64` (XSL-RR 128/64) with its 32-bit buffering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pcg64 {
    /// 128-bit state.
    pub state: u128,
    /// Increment (odd).
    pub inc: u128,
    buf32: Option<u32>,
}

impl Pcg64 {
    /// `PCG64(SeedSequence)`: `generate_state(4)` gives the seed and the stream.
    pub fn from_seed_sequence(ss: &SeedSequence) -> Self {
        let w = ss.generate_state_u64(4);
        let seed = (u128::from(w[0]) << 64) | u128::from(w[1]);
        let init = (u128::from(w[2]) << 64) | u128::from(w[3]);
        let inc = (init << 1) | 1;
        let mut state = 0u128.wrapping_mul(PCG_MULT).wrapping_add(inc);
        state = state.wrapping_add(seed);
        state = state.wrapping_mul(PCG_MULT).wrapping_add(inc);
        Self {
            state,
            inc,
            buf32: None,
        }
    }

    /// `get_rng(s, m)`: `default_rng(SeedSequence(extended_entropy(s, m)))`.
    pub fn from_string(s: &str, m: usize) -> Self {
        Self::from_seed_sequence(&SeedSequence::new(&extended_entropy(s, m)))
    }

    /// Next 64-bit output.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_mul(PCG_MULT).wrapping_add(self.inc);
        let x = ((self.state >> 64) as u64) ^ (self.state as u64);
        x.rotate_right((self.state >> 122) as u32)
    }

    /// Next 32-bit output: the low half of a 64-bit draw, then its buffered high half.
    pub fn next_u32(&mut self) -> u32 {
        if let Some(v) = self.buf32.take() {
            return v;
        }
        let v = self.next_u64();
        self.buf32 = Some((v >> 32) as u32);
        v as u32
    }

    /// `random()`: 53-bit double in [0, 1).
    pub fn next_double(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// `random_standard_normal` (the ziggurat).
    pub fn standard_normal(&mut self) -> f64 {
        let t = crate::ziggurat::tables();
        loop {
            let mut r = self.next_u64();
            let idx = (r & 0xff) as usize;
            r >>= 8;
            let sign = r & 1;
            let rabs = (r >> 1) & 0x000f_ffff_ffff_ffff;
            let mut x = rabs as f64 * t.wi[idx];
            if sign == 1 {
                x = -x;
            }
            if rabs < t.ki[idx] {
                return x;
            }
            if idx == 0 {
                loop {
                    let xx = -crate::ziggurat::NOR_INV_R * (-self.next_double()).ln_1p();
                    let yy = -(-self.next_double()).ln_1p();
                    if yy + yy > xx * xx {
                        return if (rabs >> 8) & 1 == 1 {
                            -(crate::ziggurat::NOR_R + xx)
                        } else {
                            crate::ziggurat::NOR_R + xx
                        };
                    }
                }
            } else if (t.fi[idx - 1] - t.fi[idx]) * self.next_double() + t.fi[idx]
                < (-0.5 * x * x).exp()
            {
                return x;
            }
        }
    }

    /// `normal(loc, scale)`: `loc + scale * standard_normal()`.
    pub fn normal(&mut self, loc: f64, scale: f64) -> f64 {
        loc + scale * self.standard_normal()
    }

    /// `random_interval(max)`: uniform in `0..=max` by masked rejection.
    pub fn interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        for s in [1, 2, 4, 8, 16, 32] {
            mask |= mask >> s;
        }
        if max <= u64::from(u32::MAX) {
            loop {
                let v = u64::from(self.next_u32()) & mask;
                if v <= max {
                    return v;
                }
            }
        }
        loop {
            let v = self.next_u64() & mask;
            if v <= max {
                return v;
            }
        }
    }

    /// `permutation(n)`: Fisher–Yates over `arange(n)` from the end.
    pub fn permutation(&mut self, n: usize) -> Vec<u32> {
        let mut a: Vec<u32> = (0..n as u32).collect();
        for i in (1..n).rev() {
            let j = self.interval(i as u64) as usize;
            a.swap(i, j);
        }
        a
    }
}
