//! # poc-v1: PoC v1 compute (`docs/protocol/compute-v1.md`)
//!
//! The random pipeline reproduces numpy bit for bit ([`numpy`], [`ziggurat`]).

pub mod compute;
pub mod model;
pub mod numpy;
pub mod params;
pub mod weights;
pub mod ziggurat;
#[rustfmt::skip]
mod ziggurat_wi;
