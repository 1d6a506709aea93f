//! The memory planner: before anything is loaded, whether a model fits on `N` devices of a
//! given size and which contiguous layer range each device holds (`docs/model.md`,
//! "Several devices"). A pure function of the configuration and the request.
//!
//! Weights are counted exactly from the tensor shapes (FP8 matrices padded to whole blocks
//! plus their f32 scales when FP8 stays resident, else elements × the compute dtype's
//! size). Activations are an upper estimate for one batch of `batch × seq_len` tokens
//! going through a layer, plus the next batch waiting at the device's input, plus the
//! dequantization scratch of the largest FP8 matrix. The embedding table lives on the
//! first device, the final norm and the LM head on the last. Layers are split to minimise
//! the fullest device.

use std::ops::Range;

use candle_core::DType;
use serde::Serialize;

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::fp8::Fp8Path;
use crate::quantize::is_quantized_weight;
use crate::tensors::{layer_of, tensor_specs};

/// Bytes per GiB.
pub const GIB: u64 = 1 << 30;

/// What to plan for.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanRequest {
    /// Number of devices (pipeline stages).
    pub devices: usize,
    /// Usable memory of each device in bytes.
    pub device_memory: u64,
    /// Nonces per batch.
    pub batch: usize,
    /// Sequence length.
    pub seq_len: usize,
    /// Compute dtype.
    pub dtype: DType,
    /// How FP8 weights are kept.
    pub fp8: Fp8Path,
    /// Bytes kept free on every device for the runtime (context, BLAS workspaces,
    /// allocator slack).
    pub reserve: u64,
}

impl PlanRequest {
    /// A request with the defaults: batch 32 × 1024 tokens, bf16, FP8 resident (W8A16),
    /// 2 GiB reserved per device.
    pub fn new(devices: usize, device_memory: u64) -> Self {
        Self {
            devices,
            device_memory,
            batch: 32,
            seq_len: 1024,
            dtype: DType::BF16,
            fp8: Fp8Path::W8A16,
            reserve: 2 * GIB,
        }
    }
}

/// One device's share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DevicePlan {
    /// Device index (stage).
    pub device: usize,
    /// Decoder layers `[start, end)`.
    pub layers: [usize; 2],
    /// Weight bytes resident.
    pub weight_bytes: u64,
    /// Estimated activation and scratch bytes at the planned batch.
    pub activation_bytes: u64,
    /// Weights + activations + reserve.
    pub total_bytes: u64,
    /// Device memory left (negative: over by that much).
    pub free_bytes: i64,
}

impl DevicePlan {
    /// The layer range.
    pub fn range(&self) -> Range<usize> {
        self.layers[0]..self.layers[1]
    }
}

/// The plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Whether every device's total fits its memory.
    pub fits: bool,
    /// Number of devices.
    pub devices: usize,
    /// Memory of each device.
    pub device_memory_bytes: u64,
    /// Weight bytes of the whole model as it would be resident.
    pub total_weight_bytes: u64,
    /// Reserve per device.
    pub reserve_bytes: u64,
    /// Batch the activations were estimated for.
    pub batch: usize,
    /// Sequence length the activations were estimated for.
    pub seq_len: usize,
    /// Compute dtype.
    pub dtype: String,
    /// How FP8 weights are kept.
    pub fp8_path: String,
    /// Per device, in pipeline order.
    pub per_device: Vec<DevicePlan>,
    /// Why it does not fit (when it does not).
    pub reason: Option<String>,
}

/// Resident bytes of each decoder layer and of the tensors outside the layers (embedding,
/// then final norm + LM head).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightBytes {
    /// Per decoder layer.
    pub layers: Vec<u64>,
    /// The embedding table (first device).
    pub embedding: u64,
    /// Final norm and LM head (last device).
    pub head: u64,
    /// The largest FP8 matrix dequantized to f32 plus its compute-dtype copy (the W8A16
    /// scratch); 0 when nothing stays FP8.
    pub scratch: u64,
}

/// Resident weight bytes of `cfg` loaded in `dtype` with FP8 weights kept as `fp8`.
pub fn weight_bytes(cfg: &ModelConfig, dtype: DType, fp8: Fp8Path) -> WeightBytes {
    let e = dtype.size_in_bytes() as u64;
    let mut out = WeightBytes {
        layers: vec![0; cfg.num_hidden_layers],
        embedding: 0,
        head: 0,
        scratch: 0,
    };
    let resident_fp8 = cfg.fp8.is_some() && fp8 != Fp8Path::Dequantize;
    let mut largest_fp8 = 0u64;
    for (name, shape, _) in tensor_specs(cfg) {
        let n: u64 = shape.iter().map(|&d| d as u64).product();
        let bytes = match (resident_fp8, cfg.fp8) {
            (true, Some(q)) if is_quantized_weight(&name, &shape) => {
                let [br, bc] = q.block;
                let (sr, sc) = (shape[0].div_ceil(br) as u64, shape[1].div_ceil(bc) as u64);
                largest_fp8 = largest_fp8.max(n);
                sr * br as u64 * sc * bc as u64 + sr * sc * 4
            }
            _ => n * e,
        };
        match layer_of(&name) {
            Some(l) => out.layers[l] += bytes,
            None if name == "model.embed_tokens.weight" => out.embedding += bytes,
            None => out.head += bytes,
        }
    }
    if cfg.tie_word_embeddings {
        // The LM head is the embedding table: the last device holds its own copy.
        out.head += (cfg.vocab_size * cfg.hidden_size) as u64 * e;
    }
    // Gate and up projections are dequantized together (twice the expert's rows).
    out.scratch = if resident_fp8 {
        let gate_up = cfg
            .moe
            .as_ref()
            .map(|m| 2 * m.moe_intermediate_size * cfg.hidden_size)
            .unwrap_or(0)
            .max(2 * cfg.intermediate_size * cfg.hidden_size) as u64;
        largest_fp8.max(gate_up) * (4 + e)
    } else {
        0
    };
    out
}

/// Estimated activation bytes of one layer at `tokens` tokens (the largest layer kind).
pub fn activation_bytes(cfg: &ModelConfig, dtype: DType, batch: usize, seq_len: usize) -> u64 {
    let e = dtype.size_in_bytes() as u64;
    let t = (batch * seq_len) as u64;
    let h = cfg.hidden_size as u64;
    let hd = cfg.head_dim as u64;
    let (nh, nkv) = (
        cfg.num_attention_heads as u64,
        cfg.num_key_value_heads as u64,
    );
    // hidden, residual, their sum and the normed copy.
    let stream = 4 * t * h * e;
    // q, k, v (projection and head-major copies, f32 copies for the scores), attention
    // output (two layouts), and one sequence's f32 score block.
    let attention = t * (nh + 2 * nkv) * hd * (2 * e + 4)
        + 2 * t * nh * hd * e
        + nh * (seq_len as u64).pow(2) * 4 * 2;
    let ffn = match &cfg.moe {
        Some(m) => {
            let (k, i, ex) = (
                m.experts_per_token as u64,
                m.moe_intermediate_size as u64,
                m.num_experts as u64,
            );
            // router probabilities and top-k temporaries, every routed row's input and
            // weighted output (kept until the combine), one expert's intermediates.
            t * ex * 4 * 3 + 2 * t * k * h * e + t * k * h * e + t * 3 * i * e
        }
        None => 3 * t * cfg.intermediate_size as u64 * e,
    };
    stream + attention.max(ffn)
}

/// Multiply-add FLOPs (2 per multiply-add) of the PoC forward per token through every
/// decoder layer at sequence length `seq_len`: the projections, the router, the `k`
/// active experts (or the dense MLP) and causal attention (on average `(L + 1) / 2` keys
/// per query). The LM head is not part of the PoC forward.
pub fn flops_per_token(cfg: &ModelConfig, seq_len: usize) -> f64 {
    let h = cfg.hidden_size as f64;
    let (nh, nkv, hd) = (
        cfg.num_attention_heads as f64,
        cfg.num_key_value_heads as f64,
        cfg.head_dim as f64,
    );
    let proj = 2.0 * h * hd * (2.0 * nh + 2.0 * nkv);
    let attn = 4.0 * nh * hd * (seq_len as f64 + 1.0) / 2.0;
    (0..cfg.num_hidden_layers)
        .map(|i| {
            let ffn = match &cfg.moe {
                Some(m) if cfg.is_moe_layer(i) => {
                    2.0 * h * m.num_experts as f64
                        + 2.0
                            * m.experts_per_token as f64
                            * 3.0
                            * m.moe_intermediate_size as f64
                            * h
                }
                _ => 2.0 * 3.0 * cfg.intermediate_size as f64 * h,
            };
            proj + attn + ffn
        })
        .sum()
}

/// Plans `cfg` over `req.devices` devices.
pub fn plan(cfg: &ModelConfig, req: &PlanRequest) -> Result<Plan> {
    let n = req.devices;
    let layers = cfg.num_hidden_layers;
    if n == 0 {
        return Err(ModelError::Request("at least one device is needed".into()));
    }
    if n > layers {
        return Err(ModelError::Request(format!(
            "{n} devices for {layers} layers: each device needs at least one layer"
        )));
    }
    if req.batch == 0 || req.seq_len == 0 {
        return Err(ModelError::Request(
            "the batch and the sequence length must be positive".into(),
        ));
    }
    let w = weight_bytes(cfg, req.dtype, req.fp8);
    let act = activation_bytes(cfg, req.dtype, req.batch, req.seq_len);
    let t = (req.batch * req.seq_len) as u64;
    let e = req.dtype.size_in_bytes() as u64;
    // The next batch waiting at every stage's input (hidden + residual), and on the first
    // device the f32 inputs being generated.
    let queued = 2 * t * cfg.hidden_size as u64 * e;
    let inputs = t * cfg.hidden_size as u64 * 4;
    // Activations and scratch of device d, and the weights it holds besides its layers.
    let activation = |d: usize| act + queued + w.scratch + if d == 0 { inputs } else { 0 };
    let extra_weights =
        |d: usize| (if d == 0 { w.embedding } else { 0 }) + if d + 1 == n { w.head } else { 0 };
    let fixed = |d: usize| activation(d) + extra_weights(d);
    // prefix[i] = bytes of layers 0..i.
    let mut prefix = vec![0u64; layers + 1];
    for (i, b) in w.layers.iter().enumerate() {
        prefix[i + 1] = prefix[i] + b;
    }
    let load = |d: usize, a: usize, b: usize| prefix[b] - prefix[a] + fixed(d);
    // best[d][i]: the smallest possible fullest device when devices 0..d hold layers 0..i.
    let inf = u64::MAX;
    let mut best = vec![vec![inf; layers + 1]; n + 1];
    let mut cut = vec![vec![0usize; layers + 1]; n + 1];
    best[0][0] = 0;
    for d in 1..=n {
        for i in d..=layers - (n - d) {
            for j in (d - 1)..i {
                if best[d - 1][j] == inf {
                    continue;
                }
                let m = best[d - 1][j].max(load(d - 1, j, i));
                if m < best[d][i] {
                    best[d][i] = m;
                    cut[d][i] = j;
                }
            }
        }
    }
    let mut ranges = vec![0..0; n];
    let mut end = layers;
    for d in (1..=n).rev() {
        let start = cut[d][end];
        ranges[d - 1] = start..end;
        end = start;
    }
    let per_device: Vec<DevicePlan> = ranges
        .iter()
        .enumerate()
        .map(|(d, r)| {
            let weight = prefix[r.end] - prefix[r.start] + extra_weights(d);
            let activation = activation(d);
            let total = weight + activation + req.reserve;
            DevicePlan {
                device: d,
                layers: [r.start, r.end],
                weight_bytes: weight,
                activation_bytes: activation,
                total_bytes: total,
                free_bytes: req.device_memory as i64 - total as i64,
            }
        })
        .collect();
    let over: Vec<String> = per_device
        .iter()
        .filter(|p| p.free_bytes < 0)
        .map(|p| {
            format!(
                "device {} needs {:.1} GiB of {:.1} GiB",
                p.device,
                p.total_bytes as f64 / GIB as f64,
                req.device_memory as f64 / GIB as f64
            )
        })
        .collect();
    Ok(Plan {
        fits: over.is_empty(),
        devices: n,
        device_memory_bytes: req.device_memory,
        total_weight_bytes: prefix[layers] + w.embedding + w.head,
        reserve_bytes: req.reserve,
        batch: req.batch,
        seq_len: req.seq_len,
        dtype: crate::config::dtype_name(req.dtype).to_owned(),
        fp8_path: req.fp8.name().to_owned(),
        per_device,
        reason: (!over.is_empty()).then(|| over.join("; ")),
    })
}

/// Parses a memory size: a number with an optional unit `B`, `KB`/`MB`/`GB`/`TB`
/// (powers of 1000) or `KiB`/`MiB`/`GiB`/`TiB` (powers of 1024), e.g. `141GiB`, `80GB`.
pub fn parse_bytes(text: &str) -> Result<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| {
        ModelError::Request(format!(
            "{text:?} is not a memory size (e.g. 141GiB, 80GB, 4096MiB)"
        ))
    })?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024f64.powi(2),
        "gib" => 1024f64.powi(3),
        "tib" => 1024f64.powi(4),
        other => {
            return Err(ModelError::Request(format!(
                "unknown memory unit {other:?} in {text:?} (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
            )));
        }
    };
    Ok((value * mult) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presets::Preset;

    #[test]
    fn the_production_model_fits_on_two_h200s_but_not_one() {
        let cfg = Preset::Qwen3_235bA22bFp8.config(None).unwrap();
        let w = weight_bytes(&cfg, DType::BF16, Fp8Path::W8A16);
        let total = w.layers.iter().sum::<u64>() + w.embedding + w.head;
        // 235 B parameters, ~1 byte each resident: between 230 and 245 GB.
        assert!(
            (230e9..245e9).contains(&(total as f64)),
            "{total} resident bytes"
        );
        let two = plan(&cfg, &PlanRequest::new(2, parse_bytes("141GiB").unwrap())).unwrap();
        assert!(two.fits, "{two:?}");
        assert_eq!(two.per_device[0].layers[0], 0);
        assert_eq!(two.per_device[0].layers[1], two.per_device[1].layers[0]);
        assert_eq!(two.per_device[1].layers[1], 94);
        let (a, b) = (two.per_device[0].total_bytes, two.per_device[1].total_bytes);
        assert!(a.abs_diff(b) < 3 * GIB, "balanced: {a} vs {b}");
        let one = plan(&cfg, &PlanRequest::new(1, parse_bytes("141GiB").unwrap())).unwrap();
        assert!(!one.fits);
        assert!(one.reason.unwrap().contains("device 0 needs"));
        // Dequantized at load it needs twice the memory: not on two H200s.
        let mut req = PlanRequest::new(2, parse_bytes("141GiB").unwrap());
        req.fp8 = Fp8Path::Dequantize;
        assert!(!plan(&cfg, &req).unwrap().fits);
        req.devices = 4;
        assert!(plan(&cfg, &req).unwrap().fits);
    }

    #[test]
    fn layers_split_contiguously_and_evenly() {
        let cfg = Preset::TinyMoe.config(None).unwrap();
        // A small batch: the weights decide (the first device also holds the embedding).
        let small = |n| PlanRequest {
            batch: 1,
            seq_len: 8,
            ..PlanRequest::new(n, 8 * GIB)
        };
        let p = plan(&cfg, &small(2)).unwrap();
        assert!(p.fits, "{p:?}");
        assert_eq!(
            p.per_device.iter().map(|d| d.range()).collect::<Vec<_>>(),
            vec![0..2, 2..4]
        );
        let p = plan(&cfg, &small(4)).unwrap();
        assert!(p.per_device.iter().all(|d| d.layers[1] - d.layers[0] == 1));
        assert!(plan(&cfg, &PlanRequest::new(5, GIB)).is_err());
        assert!(plan(&cfg, &PlanRequest::new(0, GIB)).is_err());
        let p = plan(&cfg, &PlanRequest::new(1, 1 << 20)).unwrap();
        assert!(!p.fits);
        assert!(p.per_device[0].free_bytes < 0);
    }

    #[test]
    fn fp8_weights_count_one_byte_plus_scales() {
        let cfg = Preset::Qwen3_235bA22bFp8.config(Some(1)).unwrap();
        let resident = weight_bytes(&cfg, DType::BF16, Fp8Path::W8A16);
        let widened = weight_bytes(&cfg, DType::BF16, Fp8Path::Dequantize);
        // q, k, v, o + 128 experts x (gate, up, down), router, norms.
        let linear: u64 = 4096 * (8192 + 512 + 512) + 8192 * 4096 + 128 * 3 * 1536 * 4096;
        let scales: u64 = (64 * 32 + 4 * 32 * 2 + 32 * 64 + 128 * 3 * 12 * 32) * 4;
        let other: u64 = (128 * 4096 + 2 * 4096 + 2 * 128) * 2;
        assert_eq!(resident.layers[0], linear + scales + other);
        assert_eq!(widened.layers[0], linear * 2 + other);
        assert!(resident.scratch > 0);
        assert_eq!(widened.scratch, 0);
    }

    #[test]
    fn flops_of_one_real_layer() {
        let cfg = Preset::Qwen3_235bA22bFp8.config(Some(1)).unwrap();
        // 71.3 M projection + 0.5 M router + 151 M active expert weights, 2 FLOPs each,
        // plus attention over 512.5 keys on average.
        let want = 2.0
            * (4096.0 * 128.0 * (2.0 * 64.0 + 8.0) + 4096.0 * 128.0 + 8.0 * 3.0 * 1536.0 * 4096.0)
            + 4.0 * 64.0 * 128.0 * 512.5;
        assert_eq!(flops_per_token(&cfg, 1024), want);
        let four = Preset::Qwen3_235bA22bFp8.config(Some(4)).unwrap();
        assert_eq!(flops_per_token(&four, 1024), 4.0 * want);
    }

    #[test]
    fn memory_sizes_parse() {
        assert_eq!(parse_bytes("141GiB").unwrap(), 141 << 30);
        assert_eq!(parse_bytes("80GB").unwrap(), 80_000_000_000);
        assert_eq!(parse_bytes("1.5 KiB").unwrap(), 1536);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("3 parsecs").is_err());
    }
}
