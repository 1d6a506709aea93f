//! # poc-core: the PoC v2 protocol core
//!
//! Everything a participant and a validator must compute **identically** to the reference
//! implementation, as pure functions: no I/O, no clocks, no threads (callers may spread
//! work over threads, e.g. with [`inputs::split_inputs`]).
//!
//! - [`seed`]: seed strings and SHA-256 → 32-bit seeds;
//! - [`rng`]: the non-standard murmur hash, uniforms, Box–Muller normals (block layout);
//! - [`inputs`]: per-nonce input embeddings (standard and stronger RNG);
//! - [`householder`]: per-layer reflection vectors and reflections (f32 and bf16);
//! - [`pick`], [`haar`], [`projection`]: from the last hidden state to the k-dim vector;
//! - [`artifact`]: the FP16 little-endian + base64 wire codec;
//! - [`nonce`]: nonce assignment across ML nodes and replicas;
//! - [`stats`], [`validation`]: the exact binomial test and the validator's verdict.
//!
//! This crate must not depend on models, storage, networking or the chain; they depend on
//! it. Section references (§) are to the protocol description, `docs/protocol/compute-v2.md`.

pub mod artifact;
pub mod haar;
pub mod householder;
pub mod inputs;
pub mod nonce;
pub mod pick;
pub mod projection;
pub mod rng;
pub mod seed;
pub mod stats;
pub mod validation;

pub use artifact::{Artifact, DecodeError, Encoding};
pub use inputs::InputRng;
pub use nonce::NonceIterator;
pub use pick::KDimError;
pub use validation::{StatTest, ValidationResult};
