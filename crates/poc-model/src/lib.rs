//! # poc-model: the served model and the PoC v2 forward
//!
//! Qwen3 and Qwen3-MoE implemented on candle (CPU by default, CUDA with the `cuda`
//! feature), loaded from Hugging Face checkpoints (bf16/f16/f32 or block-wise FP8), with:
//!
//! - the PoC forward ([`poc::PocEngine`]): inputs from `poc-core` as input embeddings,
//!   a Householder reflection of every layer's output, the last hidden state projected to
//!   a k-dim FP16 artifact (`compute-v2.md` §2);
//! - ordinary generation on the same weights ([`generate`]), untouched by the PoC
//!   transforms;
//! - deterministic random-weight checkpoints for tests, devnets and benchmarks
//!   ([`presets`]) and an FP8 block quantizer ([`quantize`]).
//!
//! This crate knows nothing of HTTP, the chain or storage.

pub mod config;
pub mod error;
pub mod generate;
pub mod model;
pub mod poc;
pub mod presets;
pub mod quantize;
pub mod weights;

pub use config::{Architecture, ModelConfig};
pub use error::{ModelError, Result};
pub use model::{KvCache, Qwen3Model};
pub use poc::{NonceVector, PocEngine, PocParams};
pub use weights::Checkpoint;

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
