//! The random-weight Llama-style transformer of PoC v1 (`docs/protocol/compute-v1.md` §4) on candle, in
//! fp16 like the reference: RMSNorm in f32 then cast (`type_as`) and scaled by the fp16
//! weight; RoPE with the fp16-rounded cos/sin table, rotated in f32 on interleaved channel
//! pairs; fp16 attention scores with an f32 softmax; SwiGLU; f32 logits of the last
//! position.

use candle_core::{D, DType, Device, Result, Tensor};
use half::f16;

use crate::params::V1Params;
use crate::weights::init_weights;

struct Layer {
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    wo: Tensor,
    w1: Tensor,
    w2: Tensor,
    w3: Tensor,
    attn_norm: Tensor,
    ffn_norm: Tensor,
}

/// A built model for one block hash.
pub struct V1Model {
    params: V1Params,
    layers: Vec<Layer>,
    norm: Tensor,
    output: Tensor,
    cos: Tensor,
    sin: Tensor,
    device: Device,
}

fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let xf = x.to_dtype(DType::F32)?;
    let ms = xf.sqr()?.mean_keepdim(D::Minus1)?;
    let y = xf
        .broadcast_div(&(ms + eps)?.sqrt()?)?
        .to_dtype(x.dtype())?;
    y.broadcast_mul(w)
}

fn linear(x: &Tensor, w_t: &Tensor) -> Result<Tensor> {
    x.broadcast_matmul(w_t)
}

impl V1Model {
    /// Builds the model from the block hash (weights from the pool).
    pub fn build(params: &V1Params, block_hash: &str, device: &Device) -> Result<Self> {
        params.validate().map_err(candle_core::Error::msg)?;
        let mut w = std::collections::HashMap::new();
        for (name, shape, values) in init_weights(params, block_hash) {
            w.insert(name, Tensor::from_vec(values, shape, device)?);
        }
        let take = |n: &str| -> Result<Tensor> {
            w.get(n)
                .cloned()
                .ok_or_else(|| candle_core::Error::msg(format!("missing {n}")))
        };
        // Linear weights are [out, in]; store transposed for x @ Wᵀ.
        let t = |n: &str| -> Result<Tensor> { take(n)?.t()?.contiguous() };
        let mut layers = Vec::new();
        for i in 0..params.n_layers {
            let p = format!("layers.{i}");
            layers.push(Layer {
                wq: t(&format!("{p}.attention.wq.weight"))?,
                wk: t(&format!("{p}.attention.wk.weight"))?,
                wv: t(&format!("{p}.attention.wv.weight"))?,
                wo: t(&format!("{p}.attention.wo.weight"))?,
                w1: t(&format!("{p}.feed_forward.w1.weight"))?,
                w2: t(&format!("{p}.feed_forward.w2.weight"))?,
                w3: t(&format!("{p}.feed_forward.w3.weight"))?,
                attn_norm: take(&format!("{p}.attention_norm.weight"))?,
                ffn_norm: take(&format!("{p}.ffn_norm.weight"))?,
            });
        }
        // RoPE table for 2·seq_len positions in f32, rounded to fp16 as the reference's
        // forward does, used in f32.
        let hd = params.head_dim();
        let half = hd / 2;
        let freqs: Vec<f32> = (0..half)
            .map(|i| 1.0 / (params.rope_theta as f32).powf((2 * i) as f32 / hd as f32))
            .collect();
        let n = 2 * params.seq_len;
        let mut cos = Vec::with_capacity(n * half);
        let mut sin = Vec::with_capacity(n * half);
        for p in 0..n {
            for f in &freqs {
                let a = p as f32 * f;
                cos.push(f16::from_f32(a.cos()).to_f32());
                sin.push(f16::from_f32(a.sin()).to_f32());
            }
        }
        Ok(Self {
            params: params.clone(),
            layers,
            norm: take("norm.weight")?,
            output: t("output.weight")?,
            cos: Tensor::from_vec(cos, (n, half), device)?,
            sin: Tensor::from_vec(sin, (n, half), device)?,
            device: device.clone(),
        })
    }

    /// The parameters.
    pub fn params(&self) -> &V1Params {
        &self.params
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    fn rope(&self, x: &Tensor, l: usize) -> Result<Tensor> {
        // x: [B, L, H, hd] fp16 → pairs (2i, 2i+1) rotated in f32.
        let (b, _, h, hd) = x.dims4()?;
        let xf = x.to_dtype(DType::F32)?.reshape((b, l, h, hd / 2, 2))?;
        let re = xf.narrow(4, 0, 1)?.squeeze(4)?;
        let im = xf.narrow(4, 1, 1)?.squeeze(4)?;
        let cos = self.cos.narrow(0, 0, l)?.reshape((1, l, 1, hd / 2))?;
        let sin = self.sin.narrow(0, 0, l)?.reshape((1, l, 1, hd / 2))?;
        let out_re = (re.broadcast_mul(&cos)? - im.broadcast_mul(&sin)?)?;
        let out_im = (re.broadcast_mul(&sin)? + im.broadcast_mul(&cos)?)?;
        Tensor::stack(&[out_re, out_im], 4)?
            .reshape((b, l, h, hd))?
            .to_dtype(x.dtype())
    }

    /// Last-position logits (f32, `[B, vocab]`) for fp16 input embeddings `[B, L, dim]`.
    pub fn forward(&self, h: &Tensor) -> Result<Tensor> {
        let p = &self.params;
        let (b, l, d) = h.dims3()?;
        let (nh, hd) = (p.n_heads, p.head_dim());
        let mask = if l > 1 {
            let m: Vec<f32> = (0..l)
                .flat_map(|i| (0..l).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
                .collect();
            Some(Tensor::from_vec(m, (l, l), &self.device)?.to_dtype(DType::F16)?)
        } else {
            None
        };
        let scale = (hd as f64).sqrt();
        let mut h = h.clone();
        for layer in &self.layers {
            let x = rms_norm(&h, &layer.attn_norm, p.norm_eps)?;
            let q = self.rope(&linear(&x, &layer.wq)?.reshape((b, l, nh, hd))?, l)?;
            let k = self.rope(&linear(&x, &layer.wk)?.reshape((b, l, nh, hd))?, l)?;
            let v = linear(&x, &layer.wv)?.reshape((b, l, nh, hd))?;
            let (q, k, v) = (
                q.transpose(1, 2)?.contiguous()?,
                k.transpose(1, 2)?.contiguous()?,
                v.transpose(1, 2)?.contiguous()?,
            );
            let mut scores = (q.matmul(&k.t()?.contiguous()?)? / scale)?;
            if let Some(m) = &mask {
                scores = scores.broadcast_add(m)?;
            }
            let probs = candle_nn_softmax(&scores.to_dtype(DType::F32)?)?.to_dtype(DType::F16)?;
            let out = probs
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b, l, d))?;
            let h1 = (&h + linear(&out, &layer.wo)?)?;
            let x = rms_norm(&h1, &layer.ffn_norm, p.norm_eps)?;
            let a = linear(&x, &layer.w1)?;
            let silu = (a.to_dtype(DType::F32)?.silu()?).to_dtype(DType::F16)?;
            let ff = linear(&(silu * linear(&x, &layer.w3)?)?, &layer.w2)?;
            h = (h1 + ff)?;
        }
        let last = h.narrow(1, l - 1, 1)?;
        let x = rms_norm(&last, &self.norm, p.norm_eps)?;
        linear(&x, &self.output)?.to_dtype(DType::F32)?.squeeze(1)
    }
}

fn candle_nn_softmax(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?;
    let e = x.broadcast_sub(&max)?.exp()?;
    let s = e.sum_keepdim(D::Minus1)?;
    e.broadcast_div(&s)
}
