//! # poc-v1: PoC v1 compute (`compute-v1.md`)
//!
//! The random pipeline reproduces numpy bit for bit ([`numpy`], [`ziggurat`]).

pub mod numpy;
pub mod ziggurat;
#[rustfmt::skip]
mod ziggurat_wi;
