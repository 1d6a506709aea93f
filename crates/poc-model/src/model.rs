//! Qwen3 (dense) and Qwen3-MoE decoder stacks on candle, with the per-layer access the PoC
//! forward needs.
//!
//! The layer structure follows the reference server (vLLM): each decoder layer returns the
//! pair `(hidden, residual)`, and the next layer (or the final norm) adds them. RMSNorm
//! normalises in f32, rounds to the compute dtype, then multiplies by the weight; attention
//! runs in f32 (scores, softmax and the value product) whatever the compute dtype.

use std::ops::Range;

use candle_core::{D, DType, Device, IndexOp, Tensor};

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::fp8::{Fp8Path, Fp8Weight, dequantize_rows, dequantize_rows_to, quantize_activations};
use crate::routing::{group_by_expert, top_k};
use crate::weights::WeightSource;

/// What a component is loaded with: compute dtype, FP8 handling, device.
#[derive(Debug, Clone, Copy)]
struct Ctx<'a> {
    dtype: DType,
    fp8: Fp8Path,
    dev: &'a Device,
}

/// Bytes of attention scores processed at once on a CPU (sequences and query blocks are
/// chunked to stay below).
const ATTENTION_BUDGET_BYTES: usize = 32 << 20;

/// The same on a GPU: large enough that a block holds several sequences' 256-row query
/// blocks (fewer, larger products), small beside the weights.
const GPU_ATTENTION_BUDGET_BYTES: usize = 1 << 30;

/// The weight of a [`Linear`].
#[derive(Debug, Clone)]
enum Weight {
    /// `Wᵀ`, `[in, out]`, contiguous (on the CPU, bf16 weights widened to f32).
    Dense(Tensor),
    /// FP8 blocks kept resident, stacked along the output rows (gate and up projections
    /// that do not end on a block boundary stay separate parts).
    Fp8 {
        parts: Vec<Fp8Weight>,
        path: Fp8Path,
    },
}

/// `y = x Wᵀ (+ b)` for `x: [n, in]`, `W: [out, in]`.
///
/// Dense weights are kept transposed (`[in, out]`, contiguous), which the CPU matrix
/// product handles faster than a strided view. On the CPU, bf16 weights are also kept
/// widened to f32: candle's CPU bf16 product widens both operands to f32 and narrows the
/// result anyway, so doing the weight half once at load gives the same bits without
/// converting every weight on every call. FP8 weights may stay FP8 ([`Fp8Path`]).
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    weight: Weight,
    bias: Option<Tensor>,
    /// The dtype of activations and outputs (the stored weight may be wider).
    dtype: DType,
}

impl Linear {
    fn from_weight(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let dtype = weight.dtype();
        let weight = if weight.device().is_cpu() && dtype == DType::BF16 {
            weight.to_dtype(DType::F32)?
        } else {
            weight
        };
        Ok(Self {
            weight: Weight::Dense(weight.t()?.contiguous()?),
            bias,
            dtype,
        })
    }

    fn from_fp8(parts: Vec<Fp8Weight>, path: Fp8Path, dtype: DType) -> Result<Self> {
        let parts = match Fp8Weight::concat_rows(&parts)? {
            Some(one) if parts.len() > 1 => vec![one],
            _ => parts,
        };
        Ok(Self {
            weight: Weight::Fp8 { parts, path },
            bias: None,
            dtype,
        })
    }

    /// Loads the weights `names` (each `[rows_i, inp]`) stacked along the output rows.
    fn load_stacked(
        src: &dyn WeightSource,
        names: &[(String, usize)],
        inp: usize,
        bias: Option<Tensor>,
        ctx: Ctx<'_>,
    ) -> Result<Self> {
        if ctx.fp8 != Fp8Path::Dequantize {
            let mut parts = Vec::with_capacity(names.len());
            for (name, rows) in names {
                match src.fp8(name, &[*rows, inp], ctx.dev)? {
                    Some(w) => parts.push(w),
                    None => break,
                }
            }
            if parts.len() == names.len() {
                let mut lin = Self::from_fp8(parts, ctx.fp8, ctx.dtype)?;
                lin.bias = bias;
                return Ok(lin);
            }
        }
        let ws = names
            .iter()
            .map(|(name, rows)| src.tensor(name, &[*rows, inp], ctx.dtype, ctx.dev))
            .collect::<Result<Vec<_>>>()?;
        let w = if ws.len() == 1 {
            ws.into_iter().next().expect("one weight")
        } else {
            Tensor::cat(&ws, 0)?
        };
        Self::from_weight(w, bias)
    }

    fn load(
        src: &dyn WeightSource,
        name: &str,
        out: usize,
        inp: usize,
        bias: bool,
        ctx: Ctx<'_>,
    ) -> Result<Self> {
        let bias = if bias {
            Some(src.tensor(&format!("{name}.bias"), &[out], ctx.dtype, ctx.dev)?)
        } else {
            None
        };
        Self::load_stacked(src, &[(format!("{name}.weight"), out)], inp, bias, ctx)
    }

    /// Device bytes of the weight as held.
    fn resident_bytes(&self) -> usize {
        let b = self
            .bias
            .as_ref()
            .map_or(0, |b| b.elem_count() * b.dtype().size_in_bytes());
        b + match &self.weight {
            Weight::Dense(w) => w.elem_count() * w.dtype().size_in_bytes(),
            Weight::Fp8 { parts, .. } => parts.iter().map(Fp8Weight::resident_bytes).sum(),
        }
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.weight {
            Weight::Dense(wt) if wt.dtype() == self.dtype => x.matmul(wt)?,
            Weight::Dense(wt) => x.to_dtype(wt.dtype())?.matmul(wt)?.to_dtype(self.dtype)?,
            Weight::Fp8 {
                parts,
                path: Fp8Path::W8A8,
            } => {
                let xq = quantize_activations(x, parts[0].block()[1])?;
                xq.matmul(&dequantize_rows(parts)?.t()?)?
                    .to_dtype(self.dtype)?
            }
            Weight::Fp8 { parts, .. } if x.device().is_cpu() => {
                // W8A16 on CPUs: the dense path itself over the weight dequantized just
                // now (the values of dequantizing at load, so the same bits).
                let w = dequantize_rows(parts)?.to_dtype(self.dtype)?;
                Linear::from_weight(w, None)?.forward(x)?
            }
            Weight::Fp8 { parts, .. } => {
                // W8A16 on GPUs: one fused kernel dequantizes straight into the compute
                // dtype; cuBLAS reads the transposed view without a copy.
                x.matmul(&dequantize_rows_to(parts, self.dtype)?.t()?)?
            }
        };
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// RMSNorm over the last dimension: `bf16(x / sqrt(mean(x²) + eps)) * weight`, the
/// normalisation computed in f32.
pub(crate) fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    if dtype == DType::F32 {
        return Ok(candle_nn::ops::rms_norm(x, weight, eps as f32)?);
    }
    let xf = x.to_dtype(DType::F32)?;
    let inv = xf
        .sqr()?
        .mean_keepdim(D::Minus1)?
        .affine(1.0, eps)?
        .sqrt()?
        .recip()?;
    Ok(xf
        .broadcast_mul(&inv)?
        .to_dtype(dtype)?
        .broadcast_mul(weight)?)
}

/// RoPE tables: `cos`, `sin` of `position * inv_freq`, `[max_len, head_dim / 2]`.
#[derive(Debug, Clone)]
struct Rotary {
    cos: Tensor,
    sin: Tensor,
}

impl Rotary {
    fn new(cfg: &ModelConfig, max_len: usize, dtype: DType, dev: &Device) -> Result<Self> {
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

    fn at(&self, start: usize, len: usize) -> Result<(Tensor, Tensor)> {
        Ok((
            self.cos.narrow(0, start, len)?,
            self.sin.narrow(0, start, len)?,
        ))
    }
}

/// Keys and values of earlier positions (generation only).
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map_or(0, |(k, _)| k.dim(2).unwrap_or(0))
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone)]
struct Attention {
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
    fn load(ck: &dyn WeightSource, p: &str, cfg: &ModelConfig, ctx: Ctx<'_>) -> Result<Self> {
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

    /// `x`: the rows of every segment, one after the other, `[rows, H]` → `[rows, H]`.
    /// The projections run once over all rows; norms, rotary embedding and attention run
    /// per segment (a segment only ever attends to itself and its own cache).
    fn forward(&self, x: &Tensor, segs: &mut [Segment<'_>], rotary: &Rotary) -> Result<Tensor> {
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
type KvSlot = Option<(Tensor, Tensor)>;

/// A run of consecutive rows of a layer's input: `b` sequences of `l` positions each,
/// the first at position `start`. PoC prefill rows have no cache (positions from 0);
/// a chat sequence (`b = 1`) extends its cache.
struct Segment<'c> {
    b: usize,
    l: usize,
    start: usize,
    cache: Option<&'c mut KvSlot>,
}

/// SwiGLU MLP: `down(silu(gate(x)) * up(x))`, with the gate and up projections fused
/// into one `[in, 2 * inter]` product (the same sums per output, one call instead of two).
#[derive(Debug, Clone)]
pub(crate) struct Mlp {
    gate_up: Linear,
    down: Linear,
    inter: usize,
}

impl Mlp {
    fn load(ck: &dyn WeightSource, p: &str, h: usize, inter: usize, ctx: Ctx<'_>) -> Result<Self> {
        let gate_up = Linear::load_stacked(
            ck,
            &[
                (format!("{p}.gate_proj.weight"), inter),
                (format!("{p}.up_proj.weight"), inter),
            ],
            h,
            None,
            ctx,
        )?;
        Ok(Self {
            gate_up,
            down: Linear::load(ck, &format!("{p}.down_proj"), h, inter, false, ctx)?,
            inter,
        })
    }

    fn resident_bytes(&self) -> usize {
        self.gate_up.resident_bytes() + self.down.resident_bytes()
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gu = self.gate_up.forward(x)?;
        let g = gu.narrow(1, 0, self.inter)?.silu()?;
        self.down
            .forward(&(g * gu.narrow(1, self.inter, self.inter)?)?)
    }
}

/// Sparse MoE block: softmax router, top-k experts per token.
#[derive(Debug, Clone)]
struct Moe {
    router: Linear,
    experts: Vec<Mlp>,
    top_k: usize,
    norm_topk_prob: bool,
}

impl Moe {
    /// Routing on the device ([`crate::routing`]): softmax, top-k, renormalisation and the
    /// grouping by expert stay tensors; only the expert counts are read back. Each expert
    /// takes its rows in ascending token order and the weighted outputs are added back in
    /// ascending expert order, as the scalar definition does.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let logits = self.router.forward(x)?.to_dtype(DType::F32)?;
        let probs = candle_nn::ops::softmax_last_dim(&logits)?;
        let (ids, weights) = top_k(&probs, self.top_k, self.norm_topk_prob)?;
        let e = self.experts.len();
        let groups = group_by_expert(&ids, e)?;
        let weights = weights.flatten_all()?;
        let mut ys = Vec::new();
        for (ex, start) in groups.offsets().into_iter().enumerate() {
            let count = groups.counts[ex];
            if count == 0 {
                continue;
            }
            let rows = groups.tokens.narrow(0, start, count)?;
            let w = weights
                .index_select(&groups.slots.narrow(0, start, count)?, 0)?
                .reshape((count, 1))?
                .to_dtype(dtype)?;
            ys.push(
                self.experts[ex]
                    .forward(&x.index_select(&rows, 0)?)?
                    .broadcast_mul(&w)?,
            );
        }
        let out = Tensor::zeros(x.dims(), dtype, x.device())?;
        if ys.is_empty() {
            return Ok(out);
        }
        Ok(out.index_add(&groups.tokens, &Tensor::cat(&ys, 0)?, 0)?)
    }
}

#[derive(Debug, Clone)]
enum Ffn {
    Dense(Mlp),
    Sparse(Moe),
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    input_norm: Tensor,
    attn: Attention,
    post_norm: Tensor,
    ffn: Ffn,
    eps: f64,
}

impl DecoderLayer {
    fn load(ck: &dyn WeightSource, cfg: &ModelConfig, i: usize, ctx: Ctx<'_>) -> Result<Self> {
        let h = cfg.hidden_size;
        let p = format!("model.layers.{i}");
        let ffn = if cfg.is_moe_layer(i) {
            let m = cfg.moe.as_ref().expect("moe layer implies moe config");
            let experts = (0..m.num_experts)
                .map(|e| {
                    Mlp::load(
                        ck,
                        &format!("{p}.mlp.experts.{e}"),
                        h,
                        m.moe_intermediate_size,
                        ctx,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            // The router stays in the compute dtype (never FP8 in the reference layout).
            let router = Linear::load(
                ck,
                &format!("{p}.mlp.gate"),
                m.num_experts,
                h,
                false,
                Ctx {
                    fp8: Fp8Path::Dequantize,
                    ..ctx
                },
            )?;
            Ffn::Sparse(Moe {
                router,
                experts,
                top_k: m.experts_per_token,
                norm_topk_prob: m.norm_topk_prob,
            })
        } else {
            Ffn::Dense(Mlp::load(
                ck,
                &format!("{p}.mlp"),
                h,
                cfg.intermediate_size,
                ctx,
            )?)
        };
        let norm = |n: &str| ck.tensor(&format!("{p}.{n}.weight"), &[h], ctx.dtype, ctx.dev);
        Ok(Self {
            input_norm: norm("input_layernorm")?,
            attn: Attention::load(ck, &format!("{p}.self_attn"), cfg, ctx)?,
            post_norm: norm("post_attention_layernorm")?,
            ffn,
            eps: cfg.rms_norm_eps,
        })
    }

    fn resident_bytes(&self) -> usize {
        let a = &self.attn;
        let attn = a.q.resident_bytes()
            + a.k.resident_bytes()
            + a.v.resident_bytes()
            + a.o.resident_bytes();
        attn + match &self.ffn {
            Ffn::Dense(m) => m.resident_bytes(),
            Ffn::Sparse(m) => {
                m.router.resident_bytes() + m.experts.iter().map(Mlp::resident_bytes).sum::<usize>()
            }
        }
    }

    /// vLLM-style layer: returns `(ffn output, residual)`; their sum is the layer output.
    /// The rows of all segments go through the norms, projections and the MoE block
    /// together (each row on its own: routing, norms and products are per row); only
    /// attention looks at the segments ([`Attention::forward`]).
    fn forward(
        &self,
        hidden: &Tensor,
        residual: Option<&Tensor>,
        segs: &mut [Segment<'_>],
        rotary: &Rotary,
    ) -> Result<(Tensor, Tensor)> {
        let res = match residual {
            None => hidden.clone(),
            Some(r) => (hidden + r)?,
        };
        let h = rms_norm(&res, &self.input_norm, self.eps)?;
        let a = self.attn.forward(&h, segs, rotary)?;
        let res = (a + res)?;
        let h = rms_norm(&res, &self.post_norm, self.eps)?;
        let out = match &self.ffn {
            Ffn::Dense(m) => m.forward(&h)?,
            Ffn::Sparse(m) => m.forward(&h)?,
        };
        Ok((out, res))
    }
}

/// How to load a model: compute dtype, the devices of the layer pipeline, FP8 handling.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Compute dtype (f32, bf16 or f16).
    pub dtype: DType,
    /// One device per pipeline stage, in order (at least one). The embedding lives on the
    /// first, the final norm and the LM head on the last.
    pub devices: Vec<Device>,
    /// How FP8 checkpoint weights are kept; `None`: [`Fp8Path::default_for`] the first
    /// device.
    pub fp8: Option<Fp8Path>,
    /// The decoder layers of each device (contiguous, covering every layer); `None`: as
    /// the memory planner balances them ([`crate::plan`]).
    pub layers: Option<Vec<Range<usize>>>,
}

impl LoadOptions {
    /// One device, default FP8 handling.
    pub fn new(dtype: DType, device: &Device) -> Self {
        Self {
            dtype,
            devices: vec![device.clone()],
            fp8: None,
            layers: None,
        }
    }
}

/// One pipeline stage: a device and the contiguous decoder layers it holds.
#[derive(Debug)]
struct Stage {
    device: Device,
    layers: Range<usize>,
    rotary: Rotary,
}

/// A loaded Qwen3 or Qwen3-MoE model, possibly split over several devices.
#[derive(Debug)]
pub struct Qwen3Model {
    config: ModelConfig,
    dtype: DType,
    fp8: Fp8Path,
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    stages: Vec<Stage>,
    norm: Tensor,
    lm_head: Linear,
}

/// Per-layer hook of the PoC forward: receives the layer index and `(hidden, residual)`,
/// returns the transformed pair.
pub type LayerHook<'a> = dyn Fn(usize, Tensor, Tensor) -> Result<(Tensor, Tensor)> + 'a;

/// Checks that `ranges` split `0..layers` into contiguous, non-empty, ordered pieces.
fn check_ranges(ranges: &[Range<usize>], layers: usize) -> Result<()> {
    let mut next = 0;
    for r in ranges {
        if r.start != next || r.end <= r.start {
            return Err(ModelError::Request(format!(
                "layer ranges {ranges:?} must be non-empty, contiguous and cover 0..{layers}"
            )));
        }
        next = r.end;
    }
    if next != layers {
        return Err(ModelError::Request(format!(
            "layer ranges {ranges:?} must cover 0..{layers}"
        )));
    }
    Ok(())
}

impl Qwen3Model {
    /// Loads every weight of `ck` in `dtype` onto `device`. Missing tensors and wrong shapes
    /// are reported with the tensor's name.
    pub fn load(ck: &dyn WeightSource, dtype: DType, device: &Device) -> Result<Self> {
        Self::load_with(ck, &LoadOptions::new(dtype, device))
    }

    /// Loads with explicit options (several devices, FP8 handling, layer placement).
    pub fn load_with(ck: &dyn WeightSource, opts: &LoadOptions) -> Result<Self> {
        let cfg = ck.config().clone();
        let dtype = opts.dtype;
        if !matches!(dtype, DType::F32 | DType::BF16 | DType::F16) {
            return Err(ModelError::Request(format!(
                "compute dtype {dtype:?} is not supported (f32, bf16, f16)"
            )));
        }
        let Some(first) = opts.devices.first() else {
            return Err(ModelError::Request("at least one device is needed".into()));
        };
        let fp8 = opts.fp8.unwrap_or_else(|| Fp8Path::default_for(first));
        let ranges = match &opts.layers {
            Some(r) => r.clone(),
            None if opts.devices.len() == 1 => std::iter::once(0..cfg.num_hidden_layers).collect(),
            None => {
                let mut req = crate::plan::PlanRequest::new(opts.devices.len(), u64::MAX / 4);
                req.dtype = dtype;
                req.fp8 = fp8;
                crate::plan::plan(&cfg, &req)?
                    .per_device
                    .iter()
                    .map(|d| d.range())
                    .collect()
            }
        };
        if ranges.len() != opts.devices.len() {
            return Err(ModelError::Request(format!(
                "{} layer ranges for {} devices",
                ranges.len(),
                opts.devices.len()
            )));
        }
        check_ranges(&ranges, cfg.num_hidden_layers)?;
        let h = cfg.hidden_size;
        let max_len = cfg.max_position_embeddings.min(1 << 16);
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        let mut stages = Vec::with_capacity(ranges.len());
        for (device, range) in opts.devices.iter().zip(&ranges) {
            let ctx = Ctx {
                dtype,
                fp8,
                dev: device,
            };
            for i in range.clone() {
                layers.push(DecoderLayer::load(ck, &cfg, i, ctx)?);
            }
            stages.push(Stage {
                device: device.clone(),
                layers: range.clone(),
                rotary: Rotary::new(&cfg, max_len, dtype, device)?,
            });
        }
        if dtype != DType::F32 && opts.devices.iter().any(|d| !d.is_cpu()) {
            // Attention products on GPUs run in f32 over operands that are bf16/f16 values:
            // TF32 tensor cores multiply those exactly (and keep 10 mantissa bits of the
            // probabilities, more than the 16-bit types). f32 models keep full-precision
            // products.
            candle_core::cuda::set_gemm_reduced_precision_f32(true);
        }
        let last = opts.devices.last().expect("at least one device");
        let embed_tokens = ck.tensor(
            "model.embed_tokens.weight",
            &[cfg.vocab_size, h],
            dtype,
            first,
        )?;
        let lm_head = Linear::from_weight(
            if cfg.tie_word_embeddings && !ck.contains("lm_head.weight") {
                embed_tokens.to_device(last)?
            } else {
                ck.tensor("lm_head.weight", &[cfg.vocab_size, h], dtype, last)?
            },
            None,
        )?;
        let norm = ck.tensor("model.norm.weight", &[h], dtype, last)?;
        Ok(Self {
            config: cfg,
            dtype,
            fp8,
            embed_tokens,
            layers,
            stages,
            norm,
            lm_head,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The compute dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// How FP8 weights are kept.
    pub fn fp8_path(&self) -> Fp8Path {
        self.fp8
    }

    /// The first device (where inputs go in).
    pub fn device(&self) -> &Device {
        &self.stages[0].device
    }

    /// Number of pipeline stages.
    pub fn stage_count(&self) -> usize {
        self.stages.len()
    }

    /// Device and decoder layers of each stage.
    pub fn stages(&self) -> Vec<(Device, Range<usize>)> {
        self.stages
            .iter()
            .map(|s| (s.device.clone(), s.layers.clone()))
            .collect()
    }

    /// The device holding decoder layer `layer`.
    pub fn layer_device(&self, layer: usize) -> &Device {
        let s = self
            .stages
            .iter()
            .find(|s| s.layers.contains(&layer))
            .unwrap_or_else(|| self.stages.last().expect("a stage"));
        &s.device
    }

    /// Bytes the weights of decoder layer `layer` hold on its device.
    pub fn layer_resident_bytes(&self, layer: usize) -> usize {
        self.layers
            .get(layer)
            .map_or(0, DecoderLayer::resident_bytes)
    }

    /// Longest sequence the position tables cover.
    pub fn max_len(&self) -> usize {
        self.stages[0].rotary.cos.dim(0).unwrap_or(0)
    }

    fn check_len(&self, len: usize) -> Result<()> {
        if len == 0 || len > self.max_len() {
            return Err(ModelError::Request(format!(
                "sequence length {len} is outside 1..={} supported by this model",
                self.max_len()
            )));
        }
        Ok(())
    }

    /// Runs the decoder layers of stage `stage` on a PoC prefill batch (`b` sequences of
    /// `l` positions from 0, no cache): `hidden` (and the `residual` of the previous layer,
    /// `None` before the first) are moved to the stage's device, and `hook` runs after
    /// every layer. Returns the last layer's `(hidden, residual)`.
    pub fn forward_stage(
        &self,
        stage: usize,
        hidden: Tensor,
        residual: Option<Tensor>,
        (b, l): (usize, usize),
        hook: &LayerHook<'_>,
    ) -> Result<(Tensor, Tensor)> {
        self.check_len(l)?;
        self.run_stage(
            stage,
            hidden,
            residual,
            Some((b, l)),
            Some(hook),
            &mut [],
            &[],
        )
    }

    /// The decoder layers of one stage over a step's rows: the PoC rows (`poc`: `b`
    /// sequences of `l`) first, then each chat segment at its cache position `starts[i]`.
    /// `hook` sees the PoC rows only.
    #[allow(clippy::too_many_arguments)]
    fn run_stage(
        &self,
        stage: usize,
        hidden: Tensor,
        residual: Option<Tensor>,
        poc: Option<(usize, usize)>,
        hook: Option<&LayerHook<'_>>,
        chats: &mut [ChatRows<'_>],
        starts: &[usize],
    ) -> Result<(Tensor, Tensor)> {
        let st = self.stages.get(stage).ok_or_else(|| {
            ModelError::Request(format!("stage {stage} of {}", self.stages.len()))
        })?;
        let mut hidden = hidden.to_device(&st.device)?;
        let mut residual = residual.map(|r| r.to_device(&st.device)).transpose()?;
        let total = hidden.dim(0)?;
        let poc_rows = poc.map_or(0, |(b, l)| b * l);
        for i in st.layers.clone() {
            let mut segs = Vec::with_capacity(chats.len() + 1);
            if let Some((b, l)) = poc {
                segs.push(Segment {
                    b,
                    l,
                    start: 0,
                    cache: None,
                });
            }
            for (c, &start) in chats.iter_mut().zip(starts) {
                segs.push(Segment {
                    b: 1,
                    l: c.tokens.len(),
                    start,
                    cache: Some(&mut c.cache.layers[i]),
                });
            }
            let (h, r) =
                self.layers[i].forward(&hidden, residual.as_ref(), &mut segs, &st.rotary)?;
            let (h, r) = match hook {
                Some(hook) if poc_rows == total => hook(i, h, r)?,
                Some(hook) if poc_rows > 0 => {
                    // The PoC transform touches the PoC rows only.
                    let rest = total - poc_rows;
                    let (ph, pr) = hook(i, h.narrow(0, 0, poc_rows)?, r.narrow(0, 0, poc_rows)?)?;
                    (
                        Tensor::cat(&[&ph, &h.narrow(0, poc_rows, rest)?], 0)?,
                        Tensor::cat(&[&pr, &r.narrow(0, poc_rows, rest)?], 0)?,
                    )
                }
                _ => (h, r),
            };
            hidden = h;
            residual = Some(r);
        }
        Ok((hidden, residual.expect("every stage has a layer")))
    }

    /// The last position of every sequence after the final norm, `[b, H]` in f32, from the
    /// last layer's `(hidden, residual)`.
    pub fn finish_last(
        &self,
        hidden: &Tensor,
        residual: &Tensor,
        (b, l): (usize, usize),
    ) -> Result<Tensor> {
        let dev = &self.stages.last().expect("a stage").device;
        let last = |t: &Tensor| -> Result<Tensor> {
            Ok(t.to_device(dev)?
                .reshape((b, l, self.config.hidden_size))?
                .i((.., l - 1, ..))?
                .contiguous()?)
        };
        let total = (last(hidden)? + last(residual)?)?;
        Ok(rms_norm(&total, &self.norm, self.config.rms_norm_eps)?.to_dtype(DType::F32)?)
    }

    /// The PoC prefill: `inputs: [b * l, H]` in the compute dtype are fed as input embeddings
    /// (positions 0..l-1, causal attention within each sequence, no cache); `hook` runs
    /// after every layer on its `(hidden, residual)` output. Returns the last position of
    /// every sequence after the final norm, `[b, H]` in f32. The stages run one after the
    /// other; [`crate::poc::PocEngine::compute`] overlaps them across batches.
    pub fn forward_embeds_last(
        &self,
        inputs: &Tensor,
        b: usize,
        l: usize,
        hook: &LayerHook<'_>,
    ) -> Result<Tensor> {
        let mut hidden = inputs.clone();
        let mut residual = None;
        for s in 0..self.stages.len() {
            let (h, r) = self.forward_stage(s, hidden, residual, (b, l), hook)?;
            hidden = h;
            residual = Some(r);
        }
        self.finish_last(&hidden, &residual.expect("a stage"), (b, l))
    }

    /// Runs `tokens` (one sequence) through the model, extending `cache`; returns the
    /// logits of the last position in f32, `[vocab]`.
    pub fn forward_tokens(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        let out = self.forward_mixed(None, &mut [ChatRows { tokens, cache }])?;
        Ok(out.chat_logits.expect("one chat sequence").squeeze(0)?)
    }

    /// One step over a mixed token batch (`docs/mlnode.md`, "Scheduling"): PoC prefill rows
    /// (`poc`, reflections applied to those rows only, no cache) and chat rows (each
    /// sequence's next tokens: a prefill chunk or one decode token, appended to its cache).
    /// Linear and MoE layers run once over all rows; attention runs per segment. The PoC
    /// result is that of [`Qwen3Model::forward_embeds_last`] on the PoC rows alone, and each
    /// chat's logits those of [`Qwen3Model::forward_tokens`] on its tokens alone, up to the
    /// matrix products' summation order (`tests/engine.rs` measures it).
    pub fn forward_mixed(
        &self,
        poc: Option<PocRows<'_>>,
        chats: &mut [ChatRows<'_>],
    ) -> Result<MixedOutput> {
        let shape = poc.as_ref().map(|p| (p.b, p.l));
        if let Some((b, l)) = shape {
            self.check_len(l)?;
            if b == 0 {
                return Err(ModelError::Request("a PoC part needs a sequence".into()));
            }
        }
        let mut starts = Vec::with_capacity(chats.len());
        for c in chats.iter_mut() {
            if c.tokens.is_empty() {
                return Err(ModelError::Request("a chat part needs a token".into()));
            }
            let start = c.cache.len();
            self.check_len(start + c.tokens.len())?;
            if c.cache.layers.len() != self.layers.len() {
                c.cache.layers = vec![None; self.layers.len()];
            }
            starts.push(start);
        }
        if shape.is_none() && chats.is_empty() {
            return Ok(MixedOutput {
                poc_last: None,
                chat_logits: None,
            });
        }
        let mut parts = Vec::with_capacity(2);
        if let Some(p) = &poc {
            parts.push(p.inputs.to_device(self.device())?);
        }
        if !chats.is_empty() {
            let ids: Vec<u32> = chats
                .iter()
                .flat_map(|c| c.tokens.iter().copied())
                .collect();
            let n = ids.len();
            let ids = Tensor::from_vec(ids, n, self.device())?;
            parts.push(self.embed_tokens.index_select(&ids, 0)?);
        }
        let mut hidden = if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Tensor::cat(&parts, 0)?
        };
        let hook = poc.as_ref().map(|p| p.hook);
        let mut residual = None;
        for s in 0..self.stages.len() {
            let (h, r) = self.run_stage(s, hidden, residual, shape, hook, chats, &starts)?;
            hidden = h;
            residual = Some(r);
        }
        let residual = residual.expect("a stage");
        let poc_rows = shape.map_or(0, |(b, l)| b * l);
        let poc_last = match shape {
            Some(bl) if chats.is_empty() => Some(self.finish_last(&hidden, &residual, bl)?),
            Some(bl) => Some(self.finish_last(
                &hidden.narrow(0, 0, poc_rows)?,
                &residual.narrow(0, 0, poc_rows)?,
                bl,
            )?),
            None => None,
        };
        let chat_logits = if chats.is_empty() {
            None
        } else {
            let mut last = Vec::with_capacity(chats.len());
            let mut end = poc_rows;
            for c in chats.iter() {
                end += c.tokens.len();
                last.push((end - 1) as u32);
            }
            let n = last.len();
            let idx = Tensor::from_vec(last, n, hidden.device())?;
            let total = (hidden.index_select(&idx, 0)? + residual.index_select(&idx, 0)?)?;
            let h = rms_norm(&total, &self.norm, self.config.rms_norm_eps)?;
            Some(self.lm_head.forward(&h)?.to_dtype(DType::F32)?)
        };
        Ok(MixedOutput {
            poc_last,
            chat_logits,
        })
    }
}

/// One chat sequence's share of a [`Qwen3Model::forward_mixed`] step.
pub struct ChatRows<'a> {
    /// Its next tokens: a prefill chunk or one decode token.
    pub tokens: &'a [u32],
    /// Its cache, extended by `tokens`.
    pub cache: &'a mut KvCache,
}

/// The PoC share of a [`Qwen3Model::forward_mixed`] step.
pub struct PocRows<'a> {
    /// `[b * l, H]` input embeddings in the compute dtype, on the first device.
    pub inputs: Tensor,
    /// Sequences.
    pub b: usize,
    /// Positions per sequence.
    pub l: usize,
    /// Runs after every layer on the PoC rows' `(hidden, residual)` only.
    pub hook: &'a LayerHook<'a>,
}

/// What a [`Qwen3Model::forward_mixed`] step returns.
#[derive(Debug)]
pub struct MixedOutput {
    /// The last position of every PoC sequence after the final norm, `[b, H]` in f32.
    pub poc_last: Option<Tensor>,
    /// The logits of each chat sequence's last new position, `[chats, vocab]` in f32.
    pub chat_logits: Option<Tensor>,
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
