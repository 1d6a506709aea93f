//! Linear layers (dense, or FP8 blocks kept resident) and RMSNorm.

use std::sync::Arc;

use candle_core::{D, DType, Tensor};

use super::Ctx;
use crate::bf16_gemm::{self, PackedWeight};
use crate::error::Result;
use crate::fp8::{Fp8Path, Fp8Weight, dequantize_rows, dequantize_rows_to, quantize_activations};
use crate::weights::WeightSource;

/// The weight of a [`Linear`].
#[derive(Debug, Clone)]
enum Weight {
    /// `Wᵀ`, `[in, out]`, contiguous (on the CPU, bf16 weights widened to f32 where the
    /// bf16 kernel does not run).
    Dense(Tensor),
    /// bf16 `W` packed for the CPU's AVX512-BF16 kernel ([`bf16_gemm`]).
    Bf16(Arc<PackedWeight>),
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
/// product handles faster than a strided view. On a CPU with AVX512-BF16, bf16 weights
/// are packed for [`bf16_gemm`] (bf16 products accumulated in f32, one rounding of the
/// output). Elsewhere bf16 weights are kept widened to f32: candle's CPU bf16 product
/// widens both operands to f32 and narrows the result anyway, so doing the weight half
/// once at load gives the same bits without converting every weight on every call. FP8
/// weights may stay FP8 ([`Fp8Path`]).
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    weight: Weight,
    bias: Option<Tensor>,
    /// The dtype of activations and outputs (the stored weight may be wider).
    dtype: DType,
}

impl Linear {
    pub(super) fn from_weight(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let dtype = weight.dtype();
        let cpu_bf16 = weight.device().is_cpu() && dtype == DType::BF16;
        if cpu_bf16 && bf16_gemm::enabled() {
            let (n, k) = weight.dims2()?;
            let w = weight.flatten_all()?.to_vec1::<half::bf16>()?;
            return Ok(Self {
                weight: Weight::Bf16(Arc::new(PackedWeight::pack(&w, n, k))),
                bias,
                dtype,
            });
        }
        let weight = if cpu_bf16 {
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

    pub(super) fn from_fp8(parts: Vec<Fp8Weight>, path: Fp8Path, dtype: DType) -> Result<Self> {
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
    pub(super) fn load_stacked(
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

    pub(super) fn load(
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
    pub(super) fn resident_bytes(&self) -> usize {
        let b = self
            .bias
            .as_ref()
            .map_or(0, |b| b.elem_count() * b.dtype().size_in_bytes());
        b + match &self.weight {
            Weight::Dense(w) => w.elem_count() * w.dtype().size_in_bytes(),
            Weight::Bf16(w) => w.resident_bytes(),
            Weight::Fp8 { parts, .. } => parts.iter().map(Fp8Weight::resident_bytes).sum(),
        }
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.weight {
            Weight::Dense(wt) if wt.dtype() == self.dtype => x.matmul(wt)?,
            Weight::Dense(wt) => x.to_dtype(wt.dtype())?.matmul(wt)?.to_dtype(self.dtype)?,
            Weight::Bf16(w) => packed_matmul(x, w)?,
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

/// `x · Wᵀ` with the packed bf16 kernel, `x: [.., in]` bf16 on the CPU.
fn packed_matmul(x: &Tensor, w: &PackedWeight) -> Result<Tensor> {
    let x = x.to_dtype(DType::BF16)?.contiguous()?;
    let mut dims = x.dims().to_vec();
    let k = dims.last().copied().unwrap_or(0);
    if k != w.k() {
        return Err(candle_core::Error::Msg(format!(
            "linear layer of {} inputs applied to {k}",
            w.k()
        ))
        .into());
    }
    let m = x.elem_count() / k.max(1);
    let out = {
        let (storage, layout) = x.storage_and_layout();
        let candle_core::Storage::Cpu(candle_core::CpuStorage::BF16(v)) = &*storage else {
            return Err(
                candle_core::Error::Msg("the bf16 kernel runs on CPU bf16 tensors".into()).into(),
            );
        };
        let o = layout.start_offset();
        w.matmul(&v[o..o + m * k], m)
    };
    if let Some(d) = dims.last_mut() {
        *d = w.n();
    }
    Ok(Tensor::from_vec(out, dims, x.device())?)
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
