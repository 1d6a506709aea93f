//! Block-quantized FP8 weights kept as FP8 on the device, and the two ways of multiplying
//! by them (`docs/model.md`, "FP8 weights"):
//!
//! - **W8A16**: the weight is dequantized (`q · scale_inv` in f32, then rounded once to the
//!   compute dtype) into a temporary just before its product; activations stay in the
//!   compute dtype. The values are exactly those of dequantizing at load time, so the
//!   results are bit-identical to that path while the resident weight takes one byte per
//!   element.
//! - **W8A8**: activations are quantized per token in groups of 128 input features
//!   (`scale = max(amax, 1e-10) / 448`, `q = e4m3(clamp(x / scale, ±448))`, the scheme of
//!   the reference server's `per_token_group_quant_fp8`) and multiplied by the FP8 weight
//!   with f32 accumulation. [`Fp8Weight::matmul_w8a8`] is the emulation: both operands
//!   dequantized to f32, one f32 product; a block-scaled FP8 GEMM computes the same sums up
//!   to the order of f32 additions.

use candle_core::{D, DType, Device, Tensor};
use float8::F8E4M3;

use crate::error::{ModelError, Result};

/// Largest finite FP8 e4m3 value.
pub const E4M3_MAX: f32 = 448.0;
/// How linear layers whose checkpoint weights are FP8 are kept and multiplied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fp8Path {
    /// Dequantize every weight to the compute dtype at load (memory: 2–4 bytes per
    /// weight). The fastest on CPUs.
    #[default]
    Dequantize,
    /// Keep FP8 bytes plus block scales resident; dequantize one weight just before its
    /// product (memory: ~1 byte per weight). Bit-identical to [`Fp8Path::Dequantize`].
    W8A16,
    /// Keep FP8 resident and quantize activations per token group of 128 to FP8 as well.
    W8A8,
}

impl Fp8Path {
    /// Every path.
    pub const ALL: [Fp8Path; 3] = [Self::Dequantize, Self::W8A16, Self::W8A8];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Dequantize => "dequantize",
            Self::W8A16 => "w8a16",
            Self::W8A8 => "w8a8",
        }
    }

    /// Parses a command-line name (`dequantize`, `w8a16`, `w8a8`).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The default for a device: FP8 stays resident on GPUs (memory is what limits them);
    /// CPUs dequantize at load (their products are faster on wide weights).
    pub fn default_for(device: &Device) -> Self {
        if device.is_cpu() {
            Self::Dequantize
        } else {
            Self::W8A16
        }
    }
}

impl std::fmt::Display for Fp8Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One block-quantized FP8 matrix on a device: `w[r, c] ≈ q[r, c] · scale_inv[r / br, c / bc]`.
///
/// `q` is stored padded with zeros to whole blocks (only matrices whose sides are not
/// multiples of the block are padded, i.e. small test models), so dequantization is one
/// broadcast product over `[sr, br, sc, bc]`.
#[derive(Debug, Clone)]
pub struct Fp8Weight {
    /// `[sr · br, sc · bc]` FP8 e4m3.
    q: Tensor,
    /// `[sr, 1, sc, 1]` f32 multipliers.
    scale: Tensor,
    rows: usize,
    cols: usize,
    block: [usize; 2],
}

impl Fp8Weight {
    /// Builds the matrix from its stored parts: `q` is `[rows, cols]` FP8 bytes (row-major,
    /// host memory), `scale_inv` the `[ceil(rows/br), ceil(cols/bc)]` f32 multipliers.
    pub fn from_parts(
        q: &[u8],
        scale_inv: &[f32],
        [rows, cols]: [usize; 2],
        block: [usize; 2],
        device: &Device,
    ) -> Result<Self> {
        let [br, bc] = block;
        if br == 0 || bc == 0 {
            return Err(ModelError::Request(
                "the FP8 block size must be positive".into(),
            ));
        }
        let (sr, sc) = (rows.div_ceil(br), cols.div_ceil(bc));
        if q.len() != rows * cols || scale_inv.len() != sr * sc {
            return Err(ModelError::Request(format!(
                "FP8 matrix [{rows}, {cols}] with blocks {br}x{bc} needs {} bytes and {} scales, got {} and {}",
                rows * cols,
                sr * sc,
                q.len(),
                scale_inv.len()
            )));
        }
        let (pr, pc) = (sr * br, sc * bc);
        let bytes: Vec<F8E4M3> = if (pr, pc) == (rows, cols) {
            q.iter().map(|&b| F8E4M3::from_bits(b)).collect()
        } else {
            let mut v = vec![F8E4M3::from_bits(0); pr * pc];
            for (r, row) in q.chunks_exact(cols).enumerate() {
                for (d, &b) in v[r * pc..r * pc + cols].iter_mut().zip(row) {
                    *d = F8E4M3::from_bits(b);
                }
            }
            v
        };
        Ok(Self {
            q: Tensor::from_vec(bytes, (pr, pc), device)?,
            scale: Tensor::from_slice(scale_inv, (sr, 1, sc, 1), device)?,
            rows,
            cols,
            block,
        })
    }

    /// `[rows, cols]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// `[rows, cols]` of one scale block.
    pub fn block(&self) -> [usize; 2] {
        self.block
    }

    /// Device bytes held (FP8 elements plus f32 scales).
    pub fn resident_bytes(&self) -> usize {
        self.q.elem_count() + self.scale.elem_count() * 4
    }

    /// The device.
    pub fn device(&self) -> &Device {
        self.q.device()
    }

    /// Stacks matrices with the same columns and block along the rows without
    /// dequantizing them; `None` when a part other than the last does not end on a block
    /// boundary (its scales would straddle two matrices).
    pub fn concat_rows(parts: &[Fp8Weight]) -> Result<Option<Fp8Weight>> {
        let Some(first) = parts.first() else {
            return Ok(None);
        };
        let aligned = parts.iter().all(|p| {
            p.cols == first.cols && p.block == first.block && p.rows.is_multiple_of(p.block[0])
        });
        if !aligned {
            return Ok(None);
        }
        let qs: Vec<&Tensor> = parts.iter().map(|p| &p.q).collect();
        let ss: Vec<&Tensor> = parts.iter().map(|p| &p.scale).collect();
        Ok(Some(Self {
            q: Tensor::cat(&qs, 0)?,
            scale: Tensor::cat(&ss, 0)?,
            rows: parts.iter().map(|p| p.rows).sum(),
            cols: first.cols,
            block: first.block,
        }))
    }

    /// The weight in f32, `[rows, cols]`: `f32(q) · scale_inv`, one f32 product per element
    /// (exactly what dequantizing the checkpoint at load computes).
    pub fn dequantize(&self) -> Result<Tensor> {
        let [br, bc] = self.block;
        let (pr, pc) = self.q.dims2()?;
        let (sr, sc) = (pr / br, pc / bc);
        let w = self
            .q
            .to_dtype(DType::F32)?
            .reshape((sr, br, sc, bc))?
            .broadcast_mul(&self.scale)?
            .reshape((pr, pc))?;
        Ok(if (pr, pc) == (self.rows, self.cols) {
            w
        } else {
            w.narrow(0, 0, self.rows)?
                .narrow(1, 0, self.cols)?
                .contiguous()?
        })
    }

    /// The weight in `dtype`, `[rows, cols]`: [`Fp8Weight::dequantize`] rounded once to
    /// `dtype`. On GPUs, bf16 and f32 come from one fused kernel (read FP8, write the
    /// result) with the same arithmetic.
    pub fn dequantize_to(&self, dtype: DType) -> Result<Tensor> {
        if self.q.device().is_cuda() && matches!(dtype, DType::BF16 | DType::F32) {
            let [br, bc] = self.block;
            let (pr, pc) = self.q.dims2()?;
            let scale = self.scale.reshape((pr / br) * (pc / bc))?;
            let w = self.q.apply_op2_no_bwd(
                &scale,
                &Dequantize {
                    block: self.block,
                    dtype,
                },
            )?;
            let _ = bc;
            return Ok(if (pr, pc) == (self.rows, self.cols) {
                w
            } else {
                w.narrow(0, 0, self.rows)?
                    .narrow(1, 0, self.cols)?
                    .contiguous()?
            });
        }
        Ok(self.dequantize()?.to_dtype(dtype)?)
    }

    /// W8A8 emulation of `x Wᵀ` for `x: [n, cols]`: activations quantized per token and
    /// group of `bc` input features, both operands dequantized to f32, one f32 product.
    /// Returns `[n, rows]` in f32.
    pub fn matmul_w8a8(&self, x: &Tensor) -> Result<Tensor> {
        let xq = quantize_activations(x, self.block[1])?;
        Ok(xq.matmul(&self.dequantize()?.t()?)?)
    }
}

/// The fused dequantization `round(f32(q) · scale)` of a padded FP8 matrix (`q`:
/// `[rows, cols]` e4m3; `scale`: the flat `[rows/br · cols/bc]` f32 multipliers) into
/// bf16 or f32. The CPU version is the definition the CUDA kernel follows.
struct Dequantize {
    block: [usize; 2],
    dtype: DType,
}

impl Dequantize {
    fn value(&self, q: &[F8E4M3], s: &[f32], cols: usize, i: usize) -> f32 {
        let [br, bc] = self.block;
        let (r, c) = (i / cols, i % cols);
        q[i].to_f32() * s[(r / br) * (cols / bc) + c / bc]
    }
}

impl candle_core::CustomOp2 for Dequantize {
    fn name(&self) -> &'static str {
        "dequantize-fp8"
    }

    fn cpu_fwd(
        &self,
        q: &candle_core::CpuStorage,
        ql: &candle_core::Layout,
        s: &candle_core::CpuStorage,
        sl: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use candle_core::CpuStorage as C;
        let (C::F8E4M3(q), C::F32(s)) = (q, s) else {
            candle_core::bail!("fp8 dequantization expects F8E4M3 weights and f32 scales");
        };
        let (Some((q0, q1)), Some((s0, s1))) = (ql.contiguous_offsets(), sl.contiguous_offsets())
        else {
            candle_core::bail!("fp8 dequantization expects contiguous operands");
        };
        let &[_, cols] = ql.shape().dims() else {
            candle_core::bail!("fp8 dequantization expects a matrix");
        };
        let (q, s) = (&q[q0..q1], &s[s0..s1]);
        let n = q.len();
        let out = match self.dtype {
            DType::BF16 => C::BF16(
                (0..n)
                    .map(|i| half::bf16::from_f32(self.value(q, s, cols, i)))
                    .collect(),
            ),
            DType::F32 => C::F32((0..n).map(|i| self.value(q, s, cols, i)).collect()),
            other => candle_core::bail!("fp8 dequantization into {other:?}"),
        };
        Ok((out, ql.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        q: &candle_core::CudaStorage,
        ql: &candle_core::Layout,
        s: &candle_core::CudaStorage,
        sl: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, candle_core::Shape)> {
        crate::kernels::dequantize_fp8((q, ql), (s, sl), self.block, self.dtype == DType::BF16)
    }
}

/// Dequantizes several FP8 matrices stacked along the rows, `[Σ rows, cols]` in f32.
pub fn dequantize_rows(parts: &[Fp8Weight]) -> Result<Tensor> {
    if parts.len() == 1 {
        return parts[0].dequantize();
    }
    let ws = parts
        .iter()
        .map(Fp8Weight::dequantize)
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&ws, 0)?)
}

/// Dequantizes several FP8 matrices stacked along the rows into `dtype`,
/// `[Σ rows, cols]` (each part rounded once, as [`Fp8Weight::dequantize_to`]).
pub fn dequantize_rows_to(parts: &[Fp8Weight], dtype: DType) -> Result<Tensor> {
    if parts.len() == 1 {
        return parts[0].dequantize_to(dtype);
    }
    let ws = parts
        .iter()
        .map(|p| p.dequantize_to(dtype))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&ws, 0)?)
}

/// Per-token-group FP8 quantization of activations, returned dequantized in f32:
/// for each row and group of `group` consecutive features,
/// `scale = max(max|x|, 1e-10) / 448`, `x' = e4m3(clamp(x / scale, −448, 448)) · scale`.
pub fn quantize_activations(x: &Tensor, group: usize) -> Result<Tensor> {
    let x = x.to_dtype(DType::F32)?;
    let (n, cols) = x.dims2()?;
    let groups = cols.div_ceil(group);
    let padded = groups * group;
    let xp = if padded == cols {
        x
    } else {
        Tensor::cat(
            &[
                &x,
                &Tensor::zeros((n, padded - cols), DType::F32, x.device())?,
            ],
            1,
        )?
    };
    let g = xp.reshape((n, groups, group))?;
    // A true division, as the reference kernel computes it (not a product by 1/448).
    let fp8_max = Tensor::new(E4M3_MAX, g.device())?;
    let scale = g
        .abs()?
        .max_keepdim(D::Minus1)?
        .maximum(1e-10)?
        .broadcast_div(&fp8_max)?;
    let q = g
        .broadcast_div(&scale)?
        .clamp(-E4M3_MAX, E4M3_MAX)?
        .to_dtype(DType::F8E4M3)?
        .to_dtype(DType::F32)?;
    let back = q.broadcast_mul(&scale)?.reshape((n, padded))?;
    Ok(if padded == cols {
        back
    } else {
        back.narrow(1, 0, cols)?.contiguous()?
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantize::quantize_matrix;

    fn matrix(rows: usize, cols: usize, seed: u32) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| {
                let h = (i as u32 ^ seed).wrapping_mul(2_654_435_761);
                (h >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    #[test]
    fn dequantize_matches_the_scalar_definition_on_odd_shapes() {
        for (rows, cols, block) in [(5, 7, [2, 3]), (4, 6, [2, 3]), (130, 3, [128, 128])] {
            let w = matrix(rows, cols, 7);
            let (q, s) = quantize_matrix(&w, rows, cols, block);
            let f = Fp8Weight::from_parts(&q, &s, [rows, cols], block, &Device::Cpu).unwrap();
            let got = f.dequantize().unwrap().to_vec2::<f32>().unwrap();
            let sc = cols.div_ceil(block[1]);
            for r in 0..rows {
                for c in 0..cols {
                    let want = F8E4M3::from_bits(q[r * cols + c]).to_f32()
                        * s[(r / block[0]) * sc + c / block[1]];
                    assert_eq!(got[r][c].to_bits(), want.to_bits(), "[{r}, {c}]");
                }
            }
        }
    }

    #[test]
    fn the_fused_dequantization_is_the_tensor_one() {
        // The definition the GPU kernel follows, against the tensor operations, on a
        // padded shape and on every FP8 code (NaN included).
        for (rows, cols, block) in [(5, 7, [2, 3]), (16, 16, [4, 8])] {
            let mut w = matrix(rows, cols, 3);
            w[0] = 1e-9; // a subnormal code
            let (mut q, s) = quantize_matrix(&w, rows, cols, block);
            for (i, b) in q.iter_mut().enumerate().take(256.min(rows * cols)) {
                *b = i as u8;
            }
            let f = Fp8Weight::from_parts(&q, &s, [rows, cols], block, &Device::Cpu).unwrap();
            let (pr, pc) = f.q.dims2().unwrap();
            let flat = f.scale.reshape((pr / block[0]) * (pc / block[1])).unwrap();
            for dtype in [DType::F32, DType::BF16] {
                let fused =
                    f.q.apply_op2_no_bwd(&flat, &Dequantize { block, dtype })
                        .unwrap()
                        .narrow(0, 0, rows)
                        .unwrap()
                        .narrow(1, 0, cols)
                        .unwrap()
                        .to_dtype(DType::F32)
                        .unwrap()
                        .to_vec2::<f32>()
                        .unwrap();
                let want = f
                    .dequantize_to(dtype)
                    .unwrap()
                    .to_dtype(DType::F32)
                    .unwrap()
                    .to_vec2::<f32>()
                    .unwrap();
                for (a, b) in fused.iter().flatten().zip(want.iter().flatten()) {
                    assert!(
                        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                        "{a} vs {b} ({dtype:?})"
                    );
                }
            }
        }
    }

    #[test]
    fn aligned_parts_stack_without_dequantizing() {
        let block = [2, 4];
        let a = matrix(4, 6, 1);
        let b = matrix(2, 6, 2);
        let (qa, sa) = quantize_matrix(&a, 4, 6, block);
        let (qb, sb) = quantize_matrix(&b, 2, 6, block);
        let fa = Fp8Weight::from_parts(&qa, &sa, [4, 6], block, &Device::Cpu).unwrap();
        let fb = Fp8Weight::from_parts(&qb, &sb, [2, 6], block, &Device::Cpu).unwrap();
        let both = Fp8Weight::concat_rows(&[fa.clone(), fb.clone()])
            .unwrap()
            .unwrap();
        assert_eq!(both.shape(), [6, 6]);
        let want = dequantize_rows(&[fa.clone(), fb])
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(both.dequantize().unwrap().to_vec2::<f32>().unwrap(), want);
        // A part ending inside a block cannot be stacked.
        let c = matrix(3, 6, 3);
        let (qc, sc) = quantize_matrix(&c, 3, 6, block);
        let fc = Fp8Weight::from_parts(&qc, &sc, [3, 6], block, &Device::Cpu).unwrap();
        assert!(Fp8Weight::concat_rows(&[fc, fa]).unwrap().is_none());
    }

    #[test]
    fn activation_groups_quantize_like_the_reference_scheme() {
        let x = vec![
            1.0f32, -3.0, 0.5, 0.25, 100.0, 0.0, //
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
        ];
        let t = Tensor::from_vec(x.clone(), (2, 6), &Device::Cpu).unwrap();
        let got = quantize_activations(&t, 4)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (r, row) in x.chunks(6).enumerate() {
            for (g, grp) in row.chunks(4).enumerate() {
                let amax = grp.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-10);
                let s = amax / 448.0;
                for (i, &v) in grp.iter().enumerate() {
                    let want = F8E4M3::from_f32((v / s).clamp(-448.0, 448.0)).to_f32() * s;
                    assert_eq!(got[r][g * 4 + i], want, "row {r} group {g} item {i}");
                }
            }
        }
        // The largest magnitude of a group is represented exactly.
        assert_eq!(got[0][1], -3.0);
        assert_eq!(got[0][4], 100.0);
        assert!(got[1].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn w8a8_is_close_to_w8a16() {
        let (n, rows, cols, block) = (3, 8, 16, [4, 8]);
        let w = matrix(rows, cols, 9);
        let (q, s) = quantize_matrix(&w, rows, cols, block);
        let f = Fp8Weight::from_parts(&q, &s, [rows, cols], block, &Device::Cpu).unwrap();
        let x = Tensor::from_vec(matrix(n, cols, 11), (n, cols), &Device::Cpu).unwrap();
        let a = f.matmul_w8a8(&x).unwrap().to_vec2::<f32>().unwrap();
        let b = x
            .matmul(&f.dequantize().unwrap().t().unwrap())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let mut differ = false;
        for (ra, rb) in a.iter().zip(&b) {
            for (va, vb) in ra.iter().zip(rb) {
                // e4m3 rounding of activations: relative 2^-4 per element at most.
                assert!((va - vb).abs() < 0.1, "{va} vs {vb}");
                differ |= va != vb;
            }
        }
        assert!(differ, "activation quantization changed nothing");
    }
}
