//! Random weights generated on demand for any configuration, never read from disk: what
//! lets a real-width model (e.g. layers of Qwen3-235B-A22B-FP8, 2.5 GB each) be benchmarked
//! on a GPU without writing or shipping a checkpoint (`docs/model.md`, "Synthetic weights").
//!
//! Every tensor is a pure function of `(seed, name)`, generated in parallel with a counter
//! hash, so [`SyntheticWeights::raw`] (what `poc model init` writes for the FP8 preset) and
//! the tensors handed to the model are the same bytes on every machine. Linear weights are
//! uniform with variance `1/fan_in`; with an FP8 configuration they are FP8 e4m3 codes
//! (uniform over ±448) with one f32 multiplier per block that varies by ±25 % between blocks.

use candle_core::{DType, Device, Tensor};
use half::{bf16, f16};
use poc_core::seed::seed_from_string;
use rayon::prelude::*;

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::fp8::E4M3_MAX;
use crate::fp8::Fp8Weight;
use crate::quantize::is_quantized_weight;
use crate::tensors::{Init, RawTensor, init_values, tensor_specs};
use crate::weights::WeightSource;

/// SplitMix64 finaliser: a well-mixed 64-bit hash of a counter.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Uniform in [-1, 1) from the high 24 bits.
fn unit(h: u64) -> f32 {
    (h >> 40) as f32 * (2.0 / (1u64 << 24) as f32) - 1.0
}

/// Weights of `config`, generated from `seed`.
#[derive(Debug, Clone)]
pub struct SyntheticWeights {
    config: ModelConfig,
    seed: String,
    specs: Vec<(String, Vec<usize>, Init)>,
    /// Non-FP8 tensors drawn like [`crate::presets::write_preset`] draws them (normal
    /// values seeded by preset and name) instead of the counter hash.
    pub(crate) preset_values: bool,
}

impl SyntheticWeights {
    /// Generator for `config` (its `fp8` setting decides whether linear weights are FP8).
    pub fn new(config: ModelConfig, seed: &str) -> Self {
        let specs = tensor_specs(&config);
        Self {
            config,
            seed: seed.to_owned(),
            specs,
            preset_values: false,
        }
    }

    /// Every stored tensor's name and shape (FP8 scale tensors included), sorted by name.
    pub fn names(&self) -> Vec<(String, Vec<usize>)> {
        let mut v = Vec::with_capacity(self.specs.len() * 2);
        for (name, shape, _) in &self.specs {
            v.push((name.clone(), shape.clone()));
            if let Some(block) = self.block_of(name, shape) {
                v.push((
                    format!("{name}_scale_inv"),
                    vec![shape[0].div_ceil(block[0]), shape[1].div_ceil(block[1])],
                ));
            }
        }
        v.sort();
        v
    }

    fn spec(&self, name: &str) -> Result<&(String, Vec<usize>, Init)> {
        self.specs
            .binary_search_by(|s| s.0.as_str().cmp(name))
            .map(|i| &self.specs[i])
            .map_err(|_| ModelError::MissingTensor {
                name: name.to_owned(),
            })
    }

    fn block_of(&self, name: &str, shape: &[usize]) -> Option<[usize; 2]> {
        self.config
            .fp8
            .filter(|_| is_quantized_weight(name, shape))
            .map(|q| q.block)
    }

    fn stream(&self, name: &str) -> u64 {
        let s = seed_from_string(&format!("poc-synthetic/{}/{name}", self.seed)) as u64;
        mix(s ^ 0x5eed_0000_0000)
    }

    /// Values of a non-FP8 tensor in f32.
    fn values(&self, name: &str, numel: usize, init: Init) -> Vec<f32> {
        if self.preset_values {
            return init_values(&self.seed, name, numel, init);
        }
        let base = self.stream(name);
        let (scale, shift) = match init {
            // Uniform on ±a has variance a²/3.
            Init::Linear(fan_in) => ((3.0 / fan_in as f64).sqrt() as f32, 0.0),
            Init::Norm => (0.1 * 3f32.sqrt(), 1.0),
            Init::Embedding => (0.02 * 3f32.sqrt(), 0.0),
        };
        let mut v = vec![0f32; numel];
        v.par_chunks_mut(1 << 16).enumerate().for_each(|(c, out)| {
            for (i, x) in out.iter_mut().enumerate() {
                let k = (c << 16) + i;
                *x = unit(mix(base ^ k as u64)) * scale + shift;
            }
        });
        v
    }

    /// FP8 codes and block multipliers of a quantized linear weight. Each code is
    /// `e4m3(u · 448)` for `u` uniform on [-1, 1) in steps of 2^-15 (the hash's top 16
    /// bits), read from a table of the 65,536 possible codes.
    fn fp8_parts(&self, name: &str, shape: &[usize], block: [usize; 2]) -> (Vec<u8>, Vec<f32>) {
        static CODES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let codes = CODES.get_or_init(|| {
            (0..1u32 << 16)
                .map(|t| {
                    let u = t as f32 / 32_768.0 - 1.0;
                    float8::F8E4M3::from_f32(u * E4M3_MAX).to_bits()
                })
                .collect()
        });
        let (rows, cols) = (shape[0], shape[1]);
        let base = self.stream(name);
        let mut q = vec![0u8; rows * cols];
        q.par_chunks_mut(1 << 16).enumerate().for_each(|(c, out)| {
            for (i, b) in out.iter_mut().enumerate() {
                let k = (c << 16) + i;
                *b = codes[(mix(base ^ k as u64) >> 48) as usize];
            }
        });
        // |w| ≤ a with a² / 3 = 1 / fan_in, i.e. a multiplier a / 448 per block (±25 %).
        let a = (3.0 / cols as f64).sqrt() as f32;
        let (sr, sc) = (rows.div_ceil(block[0]), cols.div_ceil(block[1]));
        let sbase = mix(base ^ 0x5ca1e);
        let scales = (0..sr * sc)
            .map(|i| a / E4M3_MAX * (1.0 + 0.25 * unit(mix(sbase ^ i as u64))))
            .collect();
        (q, scales)
    }

    /// The stored form of one weight (and its scales if FP8), as a checkpoint would hold
    /// it: FP8 linear weights with `*_scale_inv` f32 multipliers, everything else in the
    /// configuration's dtype.
    pub fn raw(&self, name: &str) -> Result<Vec<RawTensor>> {
        let (name, shape, init) = self.spec(name)?.clone();
        if let Some(block) = self.block_of(&name, &shape) {
            let (q, s) = self.fp8_parts(&name, &shape, block);
            let sshape = vec![shape[0].div_ceil(block[0]), shape[1].div_ceil(block[1])];
            return Ok(vec![
                (name.clone(), safetensors::Dtype::F8_E4M3, shape, q),
                (
                    format!("{name}_scale_inv"),
                    safetensors::Dtype::F32,
                    sshape,
                    s.iter().flat_map(|v| v.to_le_bytes()).collect(),
                ),
            ]);
        }
        let v = self.values(&name, shape.iter().product(), init);
        let (dt, bytes) = match self.config.dtype {
            DType::F32 => (
                safetensors::Dtype::F32,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            DType::F16 => (
                safetensors::Dtype::F16,
                v.iter()
                    .flat_map(|x| f16::from_f32(*x).to_le_bytes())
                    .collect(),
            ),
            _ => (
                safetensors::Dtype::BF16,
                v.iter()
                    .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
                    .collect(),
            ),
        };
        Ok(vec![(name, dt, shape, bytes)])
    }

    fn check_shape(&self, name: &str, shape: &[usize]) -> Result<()> {
        let (_, want, _) = self.spec(name)?;
        if want != shape {
            return Err(ModelError::WrongShape {
                name: name.to_owned(),
                got: want.clone(),
                expected: shape.to_vec(),
            });
        }
        Ok(())
    }
}

impl WeightSource for SyntheticWeights {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn contains(&self, name: &str) -> bool {
        self.spec(name).is_ok()
    }

    fn tensor(&self, name: &str, shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        self.check_shape(name, shape)?;
        if let Some(w) = self.fp8(name, shape, &Device::Cpu)? {
            return Ok(w.dequantize()?.to_dtype(dtype)?.to_device(device)?);
        }
        let (_, _, init) = self.spec(name)?;
        let v = self.values(name, shape.iter().product(), *init);
        // Round through the stored dtype first, as a checkpoint in that dtype would.
        Ok(Tensor::from_vec(v, shape, &Device::Cpu)?
            .to_dtype(self.config.dtype)?
            .to_dtype(dtype)?
            .to_device(device)?)
    }

    fn fp8(&self, name: &str, shape: &[usize], device: &Device) -> Result<Option<Fp8Weight>> {
        self.check_shape(name, shape)?;
        let Some(block) = self.block_of(name, shape) else {
            return Ok(None);
        };
        let (q, s) = self.fp8_parts(name, shape, block);
        Fp8Weight::from_parts(&q, &s, [shape[0], shape[1]], block, device).map(Some)
    }
}
