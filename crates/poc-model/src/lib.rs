//! # poc-model: the served model and the PoC v2 forward
//!
//! Qwen3 and Qwen3-MoE implemented on candle (CPU by default, CUDA with the `cuda`
//! feature), loaded from Hugging Face checkpoints (bf16/f16/f32 or block-wise FP8), with:
//!
//! - the PoC forward ([`poc::PocEngine`]): inputs from `poc-core` as input embeddings,
//!   a Householder reflection of every layer's output, the last hidden state projected to
//!   a k-dim FP16 artifact (`docs/protocol/compute-v2.md` §2);
//! - ordinary generation on the same weights ([`generate`]), untouched by the PoC
//!   transforms;
//! - deterministic random-weight checkpoints for tests, devnets and benchmarks
//!   ([`presets`]) and an FP8 block quantizer ([`quantize`]).
//!
//! This crate knows nothing of HTTP, the chain or storage.

pub mod bf16_gemm;
pub mod config;
pub mod error;
pub mod fp8;
pub mod generate;
#[cfg(feature = "cuda")]
mod kernels;
pub mod model;
pub mod plan;
pub mod poc;
pub mod presets;
pub mod quantize;
pub mod routing;
pub mod synthetic;
mod tensors;
pub mod weights;

pub use config::{Architecture, ModelConfig};
pub use error::{ModelError, Result};
pub use fp8::Fp8Path;
pub use model::{ChatRows, KvCache, LoadOptions, MixedOutput, PocRows, Qwen3Model};
pub use poc::{NonceVector, PocEngine, PocParams};
pub use synthetic::SyntheticWeights;
pub use weights::{Checkpoint, WeightSource};

pub use candle_core;

/// Parses a device list: `cpu`, `cuda` (= `cuda:0`) or `cuda:N`, comma-separated in the
/// command line; several devices form a layer pipeline in that order. An empty list is
/// [`default_device`].
pub fn parse_devices<S: AsRef<str>>(names: &[S]) -> Result<Vec<candle_core::Device>> {
    if names.is_empty() {
        return Ok(vec![default_device()]);
    }
    names
        .iter()
        .map(|n| {
            let n = n.as_ref().trim();
            if n == "cpu" {
                return Ok(candle_core::Device::Cpu);
            }
            let ordinal = match n {
                "cuda" => Some(0),
                _ => n
                    .strip_prefix("cuda:")
                    .and_then(|i| i.parse::<usize>().ok()),
            }
            .ok_or_else(|| {
                ModelError::Request(format!(
                    "unknown device {n:?}: use cpu, cuda or cuda:N (e.g. cuda:0,cuda:1)"
                ))
            })?;
            cuda_device(ordinal)
        })
        .collect()
}

#[cfg(feature = "cuda")]
fn cuda_device(ordinal: usize) -> Result<candle_core::Device> {
    candle_core::Device::new_cuda(ordinal)
        .map_err(|e| ModelError::Request(format!("cannot open GPU cuda:{ordinal}: {e}")))
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(ordinal: usize) -> Result<candle_core::Device> {
    Err(ModelError::Request(format!(
        "cuda:{ordinal} requested, but this build has no CUDA support (build it with scripts/build-cuda.sh)"
    )))
}

/// The device the model runs on: in a `cuda` build the first GPU (the CPU if none is
/// usable), otherwise the CPU. The environment variable `POC_DEVICE=cpu` forces the CPU,
/// `POC_DEVICE=cuda:N` picks GPU `N`.
pub fn default_device() -> candle_core::Device {
    let choice = std::env::var("POC_DEVICE").unwrap_or_default();
    if choice == "cpu" {
        return candle_core::Device::Cpu;
    }
    #[cfg(feature = "cuda")]
    {
        let ordinal = choice
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if let Ok(d) = candle_core::Device::new_cuda(ordinal) {
            return d;
        }
    }
    candle_core::Device::Cpu
}
