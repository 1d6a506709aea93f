//! Block-wise FP8 (e4m3) quantization of a checkpoint, in the layout of
//! `Qwen/Qwen3-235B-A22B-Instruct-2507-FP8`: every 2-D `*_proj.weight` is stored as FP8 with
//! one f32 `*_proj.weight_scale_inv` multiplier per block; routers, norms, embeddings and
//! the LM head keep their dtype.

use std::path::Path;

use candle_core::{DType, Device};
use float8::F8E4M3;
use rayon::prelude::*;

use crate::error::{ModelError, Result};
use crate::fp8::E4M3_MAX;
use crate::tensors::{RawTensor, write_safetensors};
use crate::weights::Checkpoint;

/// What [`quantize_fp8`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantizeSummary {
    /// Weights converted to FP8.
    pub quantized: usize,
    /// Tensors copied unchanged.
    pub copied: usize,
}

/// Quantizes a `[rows, cols]` f32 matrix: per `block` tile, `scale = max|w| / 448`,
/// `q = e4m3(w / scale)` (round to nearest, saturating). Returns the FP8 bytes and the
/// `[ceil(rows/br), ceil(cols/bc)]` scales (multipliers: `w ≈ q * scale`).
pub fn quantize_matrix(
    w: &[f32],
    rows: usize,
    cols: usize,
    block: [usize; 2],
) -> (Vec<u8>, Vec<f32>) {
    let [br, bc] = block;
    let (sr, sc) = (rows.div_ceil(br), cols.div_ceil(bc));
    let mut scales = vec![0f32; sr * sc];
    for r in 0..rows {
        for c in 0..cols {
            let s = &mut scales[(r / br) * sc + c / bc];
            *s = s.max(w[r * cols + c].abs());
        }
    }
    for s in &mut scales {
        *s = if *s > 0.0 { *s / E4M3_MAX } else { 1.0 };
    }
    let q = (0..rows * cols)
        .map(|i| {
            let (r, c) = (i / cols, i % cols);
            F8E4M3::from_f32(w[i] / scales[(r / br) * sc + c / bc]).to_bits()
        })
        .collect();
    (q, scales)
}

/// Whether a tensor is a linear weight that FP8 checkpoints quantize.
pub fn is_quantized_weight(name: &str, shape: &[usize]) -> bool {
    shape.len() == 2 && name.ends_with("_proj.weight")
}

/// Writes an FP8 block-quantized copy of the checkpoint in `input` to `output`.
pub fn quantize_fp8(input: &Path, output: &Path, block: [usize; 2]) -> Result<QuantizeSummary> {
    let ck = Checkpoint::open(input)?;
    if ck.config().fp8.is_some() {
        return Err(ModelError::Request(format!(
            "{} is already FP8-quantized",
            input.display()
        )));
    }
    if block[0] == 0 || block[1] == 0 {
        return Err(ModelError::Request(
            "the block size must be positive".into(),
        ));
    }
    std::fs::create_dir_all(output)
        .map_err(|e| ModelError::io(format!("cannot create {}", output.display()), e))?;
    let names: Vec<(String, Vec<usize>)> =
        ck.tensors().into_iter().map(|(n, _, s)| (n, s)).collect();
    let parts: Vec<Vec<RawTensor>> = names
        .par_iter()
        .map(|(name, shape)| {
            if is_quantized_weight(name, shape) {
                let w = ck
                    .tensor(name, shape, DType::F32, &Device::Cpu)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                let (q, s) = quantize_matrix(&w, shape[0], shape[1], block);
                let sshape = vec![shape[0].div_ceil(block[0]), shape[1].div_ceil(block[1])];
                Ok(vec![
                    (name.clone(), safetensors::Dtype::F8_E4M3, shape.clone(), q),
                    (
                        format!("{name}_scale_inv"),
                        safetensors::Dtype::F32,
                        sshape,
                        s.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    ),
                ])
            } else {
                let (dt, shape, bytes) = ck.raw(name)?;
                Ok(vec![(name.clone(), dt, shape, bytes.to_vec())])
            }
        })
        .collect::<Result<_>>()?;
    let quantized = names
        .iter()
        .filter(|(n, s)| is_quantized_weight(n, s))
        .count();
    let tensors: Vec<_> = parts.into_iter().flatten().collect();
    write_safetensors(&output.join("model.safetensors"), &tensors)?;

    let cfg_path = input.join("config.json");
    let text = std::fs::read_to_string(&cfg_path)
        .map_err(|e| ModelError::io(format!("cannot read {}", cfg_path.display()), e))?;
    let mut cfg: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| ModelError::Config {
            path: cfg_path.clone(),
            reason: e.to_string(),
        })?;
    cfg["quantization_config"] = serde_json::json!({
        "quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
        "weight_block_size": block,
        "modules_to_not_convert": ["lm_head", "mlp.gate", "embed_tokens", "norm"],
    });
    let out_cfg = output.join("config.json");
    std::fs::write(
        &out_cfg,
        serde_json::to_string_pretty(&cfg).expect("json") + "\n",
    )
    .map_err(|e| ModelError::io(format!("cannot write {}", out_cfg.display()), e))?;
    copy_side_files(input, output, false)?;
    Ok(QuantizeSummary {
        quantized,
        copied: names.len() - quantized,
    })
}

/// Rounds a row to 4 bits: symmetric, `scale = max|w| / 7`, `w' = clamp(round(w / scale),
/// -8, 7) * scale`.
pub fn round_row_4bit(row: &mut [f32]) {
    let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
    if max == 0.0 {
        return;
    }
    let scale = max / 7.0;
    for v in row {
        *v = (*v / scale).round().clamp(-8.0, 7.0) * scale;
    }
}

/// Writes a copy of a checkpoint whose linear weights (`*_proj.weight`) are rounded to 4
/// bits per row, in the original dtype: a "cheaper model" of the kind PoC must tell apart
/// from the served one.
pub fn round_4bit(input: &Path, output: &Path) -> Result<QuantizeSummary> {
    let ck = Checkpoint::open(input)?;
    if ck.config().fp8.is_some() {
        return Err(ModelError::Request(format!(
            "{} is FP8-quantized; round the original instead",
            input.display()
        )));
    }
    std::fs::create_dir_all(output)
        .map_err(|e| ModelError::io(format!("cannot create {}", output.display()), e))?;
    let names: Vec<(String, Vec<usize>)> =
        ck.tensors().into_iter().map(|(n, _, s)| (n, s)).collect();
    let tensors: Vec<RawTensor> = names
        .par_iter()
        .map(|(name, _)| {
            let (dt, shape, bytes) = ck.raw(name)?;
            if !is_quantized_weight(name, &shape) {
                return Ok((name.clone(), dt, shape, bytes.to_vec()));
            }
            let mut w = ck
                .tensor(name, &shape, DType::F32, &Device::Cpu)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            for row in w.chunks_mut(shape[1]) {
                round_row_4bit(row);
            }
            let bytes = match dt {
                safetensors::Dtype::F32 => w.iter().flat_map(|v| v.to_le_bytes()).collect(),
                safetensors::Dtype::F16 => w
                    .iter()
                    .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                    .collect(),
                _ => w
                    .iter()
                    .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                    .collect(),
            };
            Ok((name.clone(), dt, shape, bytes))
        })
        .collect::<Result<_>>()?;
    let quantized = names
        .iter()
        .filter(|(n, s)| is_quantized_weight(n, s))
        .count();
    write_safetensors(&output.join("model.safetensors"), &tensors)?;
    copy_side_files(input, output, true)?;
    Ok(QuantizeSummary {
        quantized,
        copied: names.len() - quantized,
    })
}

/// Copies every file of a model directory except the weights (and `config.json` unless
/// `with_config`).
fn copy_side_files(input: &Path, output: &Path, with_config: bool) -> Result<()> {
    for entry in std::fs::read_dir(input)
        .map_err(|e| ModelError::io(format!("cannot list {}", input.display()), e))?
    {
        let path = entry
            .map_err(|e| ModelError::io("cannot list the input", e))?
            .path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let skip = (name == "config.json" && !with_config)
            || name.ends_with(".safetensors")
            || name == "model.safetensors.index.json";
        if path.is_file() && !skip {
            std::fs::copy(&path, output.join(name))
                .map_err(|e| ModelError::io(format!("cannot copy {}", path.display()), e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_scale_to_the_fp8_range() {
        let (rows, cols) = (3, 5);
        let w: Vec<f32> = (0..rows * cols).map(|i| (i as f32 - 7.0) * 0.37).collect();
        let (q, s) = quantize_matrix(&w, rows, cols, [2, 2]);
        assert_eq!(s.len(), 2 * 3);
        for r in 0..rows {
            for c in 0..cols {
                let scale = s[(r / 2) * 3 + c / 2];
                let back = F8E4M3::from_bits(q[r * cols + c]).to_f32() * scale;
                let orig = w[r * cols + c];
                // e4m3 has 3 mantissa bits: relative error at most 2^-4.
                assert!(
                    (back - orig).abs() <= orig.abs() / 16.0 + 1e-6,
                    "{orig} -> {back}"
                );
            }
        }
        // The largest magnitude of each block maps to ±448.
        let (q, _) = quantize_matrix(&[0.0, -2.0, 1.0, 0.5], 1, 4, [1, 4]);
        assert_eq!(F8E4M3::from_bits(q[1]).to_f32(), -448.0);
        // An all-zero block gets scale 1 and zeros.
        let (q, s) = quantize_matrix(&[0.0; 4], 2, 2, [2, 2]);
        assert_eq!(s, vec![1.0]);
        assert!(q.iter().all(|&b| F8E4M3::from_bits(b).to_f32() == 0.0));
    }

    #[test]
    fn four_bit_rows() {
        // Scale 0.1: values snap to multiples of 0.1.
        let mut r = [0.7f32, -0.35, 0.13, 0.0];
        round_row_4bit(&mut r);
        assert_eq!(r[0], 0.7);
        assert!(
            (r[1] + 0.4).abs() < 1e-6 || (r[1] + 0.3).abs() < 1e-6,
            "{}",
            r[1]
        );
        assert!((r[2] - 0.1).abs() < 1e-6, "{}", r[2]);
        assert_eq!(r[3], 0.0);
        let mut z = [0f32; 3];
        round_row_4bit(&mut z);
        assert_eq!(z, [0.0; 3]);
    }

    #[test]
    fn which_tensors_are_quantized() {
        assert!(is_quantized_weight(
            "model.layers.0.self_attn.q_proj.weight",
            &[4, 4]
        ));
        assert!(is_quantized_weight(
            "model.layers.0.mlp.experts.3.down_proj.weight",
            &[4, 4]
        ));
        assert!(!is_quantized_weight(
            "model.layers.0.mlp.gate.weight",
            &[4, 4]
        ));
        assert!(!is_quantized_weight("model.norm.weight", &[4]));
        assert!(!is_quantized_weight("lm_head.weight", &[4, 4]));
    }
}
