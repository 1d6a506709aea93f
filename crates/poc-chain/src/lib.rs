//! # poc-chain: the PoC chain state machine
//!
//! The chain is the source of truth of PoC: it accepts store commits, weight distributions
//! and votes inside the right windows and turns them into weights. This crate is the
//! state machine as pure, deterministic code (`chain-and-api.md` §1–§5, §9): no I/O, no
//! wall clock (block time comes in the block header), so block execution is a function of
//! `(state, block)` that a single block producer or a replicated BFT engine can drive.

pub mod address;
pub mod api;
pub mod block;
pub mod confirmation;
pub mod decimal;
pub mod epoch;
pub mod error;
pub mod json;
pub mod msgs;
pub mod params;
pub mod proto;
pub mod slots;
pub mod state;
pub mod tracked;
pub mod tx;
pub mod weights;
