//! # poc-store: the durable artifact store
//!
//! One directory per PoC stage holds a checksummed, append-only log of artifacts and a
//! small metadata file naming the last flushed snapshot `(count, root)`. The MMR itself
//! (`poc-mmr`) is rebuilt from the log on open. Guarantees:
//!
//! - only flushed state is ever reported, and a reported snapshot is never lost: records
//!   are written and fsynced before the metadata is replaced atomically
//!   (write-new, fsync, rename, fsync directory);
//! - after a crash, reopening cuts off a torn or damaged tail written after the last
//!   flush, verifies every checksum and the recorded root, and refuses (naming the byte
//!   offset) a store whose flushed part is damaged;
//! - proofs against every earlier flushed count stay valid;
//! - readers (roots, proofs, artifact reads) never wait for disk writes or fsyncs.
//!
//! [`StageStores`] manages one store per stage height with retention. The on-disk format
//! is described in [`format`] and `docs/artifact-store.md`. Unix only (positional I/O).

pub mod error;
mod flusher;
pub mod format;
mod managed;
mod nonce_set;
mod scan;
mod store;
mod verify;

#[cfg(test)]
mod crash_tests;

pub use error::{AppendError, StoreError};
pub use flusher::Flusher;
pub use managed::StageStores;
pub use store::{ArtifactStore, LeafProof, RecoveryInfo, Snapshot, StoredArtifact};
pub use verify::{VerifyReport, verify_store};
