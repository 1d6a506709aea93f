//! Attention: the rotary tables, grouped-query causal attention over the segments of a
//! step (each with its own key/value cache, or none), and the fused scale-mask-softmax.

use candle_core::{DType, Device, Tensor};

use super::Ctx;
use super::linear::{Linear, rms_norm};
use crate::config::ModelConfig;
use crate::error::Result;
use crate::weights::WeightSource;

/// Bytes of attention scores processed at once on a CPU (sequences and query blocks are
/// chunked to stay below).
const ATTENTION_BUDGET_BYTES: usize = 32 << 20;

/// The same on a GPU: large enough that a block holds several sequences' 256-row query
/// blocks (fewer, larger products), small beside the weights.
const GPU_ATTENTION_BUDGET_BYTES: usize = 1 << 30;

/// RoPE tables: `cos`, `sin` of `position * inv_freq`, `[max_len, head_dim / 2]`.
#[derive(Debug, Clone)]
pub(super) struct Rotary {
    cos: Tensor,
    sin: Tensor,
}

impl Rotary {
    pub(super) fn new(
        cfg: &ModelConfig,
        max_len: usize,
        dtype: DType,
        dev: &Device,
    ) -> Result<Self> {
        let half = cfg.head_dim / 2;
        let inv: Vec<f32> = (0..half)
            .map(|i| 1.0 / (cfg.rope_theta as f32).powf((2 * i) as f32 / cfg.head_dim as f32))
            .collect();
        let mut cos = Vec::with_capacity(max_len * half);
        let mut sin = Vec::with_capacity(max_len * half);
        for p in 0..max_len {
            for f in &inv {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        Ok(Self {
            cos: Tensor::from_vec(cos, (max_len, half), dev)?.to_dtype(dtype)?,
            sin: Tensor::from_vec(sin, (max_len, half), dev)?.to_dtype(dtype)?,
        })
    }

    /// Positions the tables cover.
    pub(super) fn max_len(&self) -> usize {
        self.cos.dim(0).unwrap_or(0)
    }

    pub(super) fn at(&self, start: usize, len: usize) -> Result<(Tensor, Tensor)> {
        Ok((
            self.cos.narrow(0, start, len)?,
            self.sin.narrow(0, start, len)?,
        ))
    }
}

#[derive(Debug, Clone)]
pub(super) struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: Tensor,
    k_norm: Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    eps: f64,
}

/// `e^x` for `x ≤ 0` in f32, vectorisable: `x = n ln2 + r`, a degree-7 polynomial for
/// `e^r` (|r| ≤ ln2 / 2, truncation < 1e-8 relative) and `2^n` from the exponent bits.
/// Below −87 the result is 0.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer
    let small = x < -87.0;
    let x = x.max(-87.0);
    let t = x * LOG2E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0 / 5040.0;
    let p = 1.0 / 720.0 + r * p;
    let p = 1.0 / 120.0 + r * p;
    let p = 1.0 / 24.0 + r * p;
    let p = 1.0 / 6.0 + r * p;
    let p = 0.5 + r * p;
    let p = 1.0 + r * p;
    let p = 1.0 + r * p;
    let pow2 = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if small { 0.0 } else { p * pow2 }
}

/// One row of the fused causal softmax: `row[..valid]` becomes the softmax of
/// `scale * row[..valid]`, the rest 0. Reductions use 16 lanes so they vectorise.
#[inline(always)]
fn softmax_row(row: &mut [f32], valid: usize, scale: f32) {
    const LANES: usize = 16;
    let (head, rest) = row.split_at_mut(valid);
    let mut m = [f32::NEG_INFINITY; LANES];
    let chunks = head.chunks_exact(LANES);
    let tail_max = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &v| a.max(v));
    for c in chunks {
        for i in 0..LANES {
            m[i] = m[i].max(c[i]);
        }
    }
    let max = m.iter().fold(tail_max, |a, &v| a.max(v)) * scale;
    for v in head.iter_mut() {
        *v = exp_nonpositive(*v * scale - max);
    }
    let mut acc = [0f32; LANES];
    let chunks = head.chunks_exact(LANES);
    let tail_sum: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += c[i];
        }
    }
    let inv = 1.0 / (acc.iter().sum::<f32>() + tail_sum);
    for v in head.iter_mut() {
        *v *= inv;
    }
    rest.fill(0.0);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn softmax_rows_avx2(
    data: &mut [f32],
    s: usize,
    rows: impl Fn(usize) -> usize,
    first: usize,
    scale: f32,
) {
    for (k, row) in data.chunks_mut(s).enumerate() {
        softmax_row(row, rows(first + k), scale);
    }
}

fn softmax_rows(
    data: &mut [f32],
    s: usize,
    rows: impl Fn(usize) -> usize,
    first: usize,
    scale: f32,
) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        unsafe { softmax_rows_avx2(data, s, rows, first, scale) };
        return;
    }
    for (k, row) in data.chunks_mut(s).enumerate() {
        softmax_row(row, rows(first + k), scale);
    }
}

/// Scaled, causally masked softmax over the last dimension, in place and in one pass (CPU).
///
/// The scores `[.., rows, s]` have row `r` belonging to the query at position
/// `offset + (r % l)`; keys after that position get probability 0.
struct CausalSoftmax {
    l: usize,
    s: usize,
    offset: usize,
    scale: f32,
}

impl candle_core::InplaceOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }

    fn cpu_fwd(
        &self,
        storage: &mut candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        use rayon::prelude::*;
        let candle_core::CpuStorage::F32(data) = storage else {
            candle_core::bail!("causal-softmax expects f32 scores");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("causal-softmax expects contiguous scores");
        };
        let (l, s, offset) = (self.l, self.s, self.offset);
        let valid = move |row: usize| (offset + row % l + 1).min(s);
        let rows_per_task = (1 << 16) / s.max(1) + 1;
        data[start..end]
            .par_chunks_mut(rows_per_task * s)
            .enumerate()
            .for_each(|(t, chunk)| softmax_rows(chunk, s, valid, t * rows_per_task, self.scale));
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &mut candle_core::CudaStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        crate::kernels::causal_softmax(storage, layout, (self.l, self.s, self.offset), self.scale)
    }
}

/// Causal attention with f32 scores and softmax. `q: [b, heads, l, d]`, `k, v: [b,
/// kv_heads, s, d]`; query `i` sits at position `s - l + i`. Returns `[b, heads, l, d]` in
/// f32.
///
/// Grouped-query attention without copying keys: the queries of one key/value head form
/// one `[groups * rows, d]` matrix. Queries are processed in blocks that only look at the
/// keys they may attend to (about half the work of the full square), with the scale, mask
/// and softmax fused into one in-place pass (a CUDA kernel on GPUs), and at most a budget
/// of scores alive at a time (no full score matrix per head). The operands are the compute
/// dtype's values widened to f32, so the products are exact products of bf16 values
/// accumulated in f32; on GPUs with a 16-bit compute dtype the products run on tensor
/// cores (TF32, exact for bf16 operands; see [`Qwen3Model::load_with`]).
fn attend(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, kv_heads: usize) -> Result<Tensor> {
    let (b, _, l, d) = q.dims4()?;
    let s = k.dim(2)?;
    let groups = heads / kv_heads;
    let offset = s - l;
    let on_cpu = q.device().is_cpu();
    let budget = if on_cpu {
        ATTENTION_BUDGET_BYTES
    } else {
        GPU_ATTENTION_BUDGET_BYTES
    };
    let scale = 1.0 / (d as f64).sqrt();
    let per_seq = heads * l * s * 4;
    let chunk = (budget / per_seq.max(1)).clamp(1, b);
    let mut outs = Vec::with_capacity(b.div_ceil(chunk));
    for start in (0..b).step_by(chunk) {
        let n = chunk.min(b - start);
        let qc = q.narrow(0, start, n)?.to_dtype(DType::F32)?;
        let kc = k.narrow(0, start, n)?.to_dtype(DType::F32)?;
        let vc = v.narrow(0, start, n)?.to_dtype(DType::F32)?;
        // At most 256 query rows per block: the blocks then skip ~40 % of the key
        // positions a full square would score.
        let block = (budget / (n * heads * s * 4).max(1)).clamp(16, 256).min(l);
        let mut blocks = Vec::with_capacity(l.div_ceil(block));
        for i0 in (0..l).step_by(block) {
            let rows = block.min(l - i0);
            let keys = offset + i0 + rows;
            let qb =
                qc.narrow(2, i0, rows)?
                    .contiguous()?
                    .reshape((n, kv_heads, groups * rows, d))?;
            // The keys (and values) this block may see. cuBLAS takes the narrowed view
            // only when it is a plain strided batch; a copy on GPUs keeps every layout
            // valid, and the CPU product reads the view directly (no copy).
            let visible = |t: &Tensor| -> Result<Tensor> {
                let v = t.narrow(2, 0, keys)?;
                Ok(if on_cpu { v } else { v.contiguous()? })
            };
            let mut scores = qb.matmul(&visible(&kc)?.t()?)?;
            if !scores.is_contiguous() {
                scores = scores.contiguous()?;
            }
            scores.inplace_op1(&CausalSoftmax {
                l: rows,
                s: keys,
                offset: offset + i0,
                scale: scale as f32,
            })?;
            let out = scores.matmul(&visible(&vc)?)?; // [n, kv_heads, groups * rows, d]
            blocks.push(out.reshape((n, heads, rows, d))?);
        }
        outs.push(if blocks.len() == 1 {
            blocks.pop().expect("one block")
        } else {
            Tensor::cat(&blocks, 2)?
        });
    }
    Ok(if outs.len() == 1 {
        outs.pop().expect("one chunk")
    } else {
        Tensor::cat(&outs, 0)?
    })
}

impl Attention {
    pub(super) fn load(
        ck: &dyn WeightSource,
        p: &str,
        cfg: &ModelConfig,
        ctx: Ctx<'_>,
    ) -> Result<Self> {
        let (h, hd, nh, nkv) = (
            cfg.hidden_size,
            cfg.head_dim,
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
        );
        let bias = cfg.attention_bias;
        Ok(Self {
            q: Linear::load(ck, &format!("{p}.q_proj"), nh * hd, h, bias, ctx)?,
            k: Linear::load(ck, &format!("{p}.k_proj"), nkv * hd, h, bias, ctx)?,
            v: Linear::load(ck, &format!("{p}.v_proj"), nkv * hd, h, bias, ctx)?,
            o: Linear::load(ck, &format!("{p}.o_proj"), h, nh * hd, false, ctx)?,
            q_norm: ck.tensor(&format!("{p}.q_norm.weight"), &[hd], ctx.dtype, ctx.dev)?,
            k_norm: ck.tensor(&format!("{p}.k_norm.weight"), &[hd], ctx.dtype, ctx.dev)?,
            heads: nh,
            kv_heads: nkv,
            head_dim: hd,
            eps: cfg.rms_norm_eps,
        })
    }

    /// Bytes its projections hold on their device.
    pub(super) fn resident_bytes(&self) -> usize {
        self.q.resident_bytes()
            + self.k.resident_bytes()
            + self.v.resident_bytes()
            + self.o.resident_bytes()
    }

    /// `x`: the rows of every segment, one after the other, `[rows, H]` → `[rows, H]`.
    /// The projections run once over all rows; norms, rotary embedding and attention run
    /// per segment (a segment only ever attends to itself and its own cache).
    pub(super) fn forward(
        &self,
        x: &Tensor,
        segs: &mut [Segment<'_>],
        rotary: &Rotary,
    ) -> Result<Tensor> {
        let q_all = self.q.forward(x)?;
        let k_all = self.k.forward(x)?;
        let v_all = self.v.forward(x)?;
        let single = segs.len() == 1;
        let mut outs = Vec::with_capacity(segs.len());
        let mut offset = 0;
        for seg in segs.iter_mut() {
            let (b, l) = (seg.b, seg.l);
            let rows = b * l;
            let (cos, sin) = rotary.at(seg.start, l)?;
            let part = |t: &Tensor| -> Result<Tensor> {
                Ok(if single {
                    t.clone()
                } else {
                    t.narrow(0, offset, rows)?
                })
            };
            let shape = |y: Tensor, heads: usize, norm: Option<&Tensor>| -> Result<Tensor> {
                let y = y.reshape((b, l, heads, self.head_dim))?;
                let y = match norm {
                    Some(w) => rms_norm(&y, w, self.eps)?,
                    None => y,
                };
                let y = y.transpose(1, 2)?.contiguous()?;
                Ok(match norm {
                    Some(_) => candle_nn::rotary_emb::rope(&y, &cos, &sin)?,
                    None => y,
                })
            };
            let q = shape(part(&q_all)?, self.heads, Some(&self.q_norm))?;
            let mut k = shape(part(&k_all)?, self.kv_heads, Some(&self.k_norm))?;
            let mut v = shape(part(&v_all)?, self.kv_heads, None)?;
            if let Some(slot) = seg.cache.as_deref_mut() {
                if let Some((pk, pv)) = slot.as_ref() {
                    k = Tensor::cat(&[pk, &k], 2)?;
                    v = Tensor::cat(&[pv, &v], 2)?;
                }
                *slot = Some((k.clone(), v.clone()));
            }
            let out = attend(&q, &k, &v, self.heads, self.kv_heads)?.to_dtype(x.dtype())?;
            outs.push(
                out.transpose(1, 2)?
                    .reshape((rows, self.heads * self.head_dim))?,
            );
            offset += rows;
        }
        let out = if single {
            outs.pop().expect("one segment")
        } else {
            Tensor::cat(&outs, 0)?
        };
        self.o.forward(&out)
    }
}

/// Cached keys and values of one layer of one sequence: `[1, kv_heads, positions, d]` each.
pub(super) type KvSlot = Option<(Tensor, Tensor)>;

/// A run of consecutive rows of a layer's input: `b` sequences of `l` positions each,
/// the first at position `start`. PoC prefill rows have no cache (positions from 0);
/// a chat sequence (`b = 1`) extends its cache.
pub(super) struct Segment<'c> {
    pub(super) b: usize,
    pub(super) l: usize,
    pub(super) start: usize,
    pub(super) cache: Option<&'c mut KvSlot>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_accurate() {
        let mut worst = 0f64;
        let mut x = 0f32;
        while x > -90.0 {
            let got = exp_nonpositive(x) as f64;
            let want = (x as f64).exp();
            if want > 1e-37 {
                worst = worst.max(((got - want) / want).abs());
            } else {
                assert!(got < 1e-36);
            }
            x -= 0.000_37;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-100.0), 0.0);
    }

    #[test]
    fn causal_softmax_matches_the_op_sequence() {
        let (l, s) = (5usize, 7usize);
        let offset = s - l;
        let data: Vec<f32> = (0..2 * l * s)
            .map(|i| ((i * 37 % 11) as f32) - 5.0)
            .collect();
        let t = Tensor::from_vec(data.clone(), (2, l, s), &Device::Cpu).unwrap();
        t.inplace_op1(&CausalSoftmax {
            l,
            s,
            offset,
            scale: 0.5,
        })
        .unwrap();
        let got = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (r, row) in data.chunks(s).enumerate() {
            let valid = offset + r % l + 1;
            let m = row[..valid]
                .iter()
                .map(|v| v * 0.5)
                .fold(f32::NEG_INFINITY, f32::max);
            let z: f32 = row[..valid].iter().map(|v| (v * 0.5 - m).exp()).sum();
            for j in 0..s {
                let want = if j < valid {
                    (row[j] * 0.5 - m).exp() / z
                } else {
                    0.0
                };
                assert!((got[r * s + j] - want).abs() < 1e-6, "row {r} col {j}");
            }
        }
    }
}
