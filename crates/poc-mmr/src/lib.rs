//! # poc-mmr: the artifact Merkle Mountain Range
//!
//! Participants keep their PoC artifacts off-chain in an append-only Merkle Mountain
//! Range and commit only `(root, count)` on chain; validators check sampled artifacts with
//! inclusion proofs against that snapshot. This crate is the pure, byte-exact MMR of the
//! reference (`docs/protocol/chain-and-api.md` §6.5): leaf and node hashing, the post-order layout, roots
//! at every historical count, proofs (single and batched) and a strict verifier.
//!
//! No I/O, no clocks, no threads: durability lives in `poc-store`, which wraps this crate.

pub mod hash;
pub mod mmr;
pub mod verify;

pub use hash::{Hash, hash_leaf, hash_node};
pub use mmr::{
    MAX_LEAF_COUNT, Mmr, MmrError, Mountain, bag_peaks, fill_internal, fill_perfect, leaf_position,
    mountains, node_count,
};
pub use verify::{VerifyError, hash_from_bytes, verify_artifact, verify_proof};
