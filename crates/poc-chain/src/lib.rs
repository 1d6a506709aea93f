//! # poc-chain: the PoC chain state machine
//!
//! The chain is the source of truth of PoC: it accepts store commits, weight distributions
//! and votes inside the right windows and turns them into weights. This crate is the
//! state machine as pure, deterministic code (`docs/protocol/chain-and-api.md` §1–§5,
//! §9): no I/O, no wall clock (block time comes in the block header), no process-wide
//! state, so block execution is a function of `(state, block)` that a single block
//! producer or a replicated BFT engine can drive.
//!
//! Where to read: [`block`] (a block's rules and execution) → [`ante`] (what a
//! transaction must pass) → [`handlers`] (what each message does) → [`end_block`] (what
//! happens after the transactions) → [`weights`] (votes into weights). The state is
//! [`state::ChainState`] with its [`records`]; [`genesis`] starts it; [`tx`] and
//! [`keys`] are the signed envelope.

pub mod address;
pub mod ante;
pub mod api;
pub mod block;
pub mod confirmation;
pub mod decimal;
pub mod end_block;
pub mod epoch;
pub mod error;
pub mod genesis;
pub mod handlers;
pub mod json;
pub mod keys;
pub mod msgs;
pub mod params;
pub mod proto;
pub mod records;
pub mod slots;
pub mod state;
pub mod tracked;
pub mod tx;
pub mod weights;
