//! # poc-consensus: the PoC chain replicated over a BFT consensus engine
//!
//! The pure state machine ([`poc_chain`]) runs unchanged behind commonware's simplex
//! consensus (`commonware-consensus`, pinned to one exact version with the rest of the
//! commonware crates). Each validator:
//!
//! - proposes, when it leads a view, a block of mempool transactions that pass CheckTx
//!   against the parent's state ([`app`]);
//! - votes for a proposal only after executing it on the parent's state (height, chain id,
//!   parent app hash, tx root, time), so a block with a wrong header never gets a quorum;
//! - commits every finalized block, and the ancestors finalized with it, in height order
//!   through the same storage path as the single-producer node, so every validator reaches
//!   the same app hash;
//! - relays blocks, fetches missing ones from peers (catch-up after a restart or a
//!   partition) and gossips client transactions ([`codec::Wire`]).
//!
//! The block hash the PoC logic sees (seeds, confirmation trigger) is the finalized
//! block's header hash, which is exactly the digest consensus finalized.
//!
//! Consensus voting power: every genesis `consensus_validators` key has one equal vote;
//! a block finalizes with `n - f` votes where `f = (n - 1) / 3`. The PoC-derived validator
//! weights stay the state machine's own (they decide PoC validation and rewards, not block
//! signing). See `docs/consensus.md`.

pub mod app;
pub mod codec;
pub mod keys;
pub mod net;
pub mod node;
#[cfg(any(test, feature = "test-support"))]
pub mod traffic;
pub mod validator;

/// The commonware release every `commonware-*` crate is pinned to.
pub const ENGINE_VERSION: &str = "2026.10.0";

pub use app::{Behavior, Digest, GENESIS, PublicKey};
pub use validator::{ValidatorConfig, ValidatorHandles};
