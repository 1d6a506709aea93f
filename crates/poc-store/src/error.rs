//! Errors of the artifact store.

use std::path::PathBuf;

use poc_mmr::MmrError;
use thiserror::Error;

use crate::format::FormatError;

/// Why an artifact cannot be appended. Nothing is changed when an append fails.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AppendError {
    /// The nonce is already in this stage's store.
    #[error("nonce {0} is already stored")]
    DuplicateNonce(i32),
    /// The store holds the maximum number of leaves (2^30 − 1).
    #[error("the store is full ({0} artifacts, the maximum)")]
    CapacityExceeded(u64),
    /// An empty vector.
    #[error("artifact vector is empty")]
    EmptyVector,
    /// A vector longer than the store accepts.
    #[error("artifact vector is {len} bytes; at most {max} are accepted")]
    VectorTooLong {
        /// Vector length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An ML node id longer than the chain accepts.
    #[error("ML node id is {len} bytes; at most {max} are accepted")]
    NodeIdTooLong {
        /// Id length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Too many distinct ML node ids in one stage.
    #[error("too many distinct ML node ids in one stage (at most {0})")]
    TooManyNodes(usize),
    /// The store was opened read-only.
    #[error("the store is open read-only")]
    ReadOnly,
    /// An earlier flush failed; the store refuses writes until it is reopened.
    #[error("the store stopped accepting writes after an I/O failure ({0}); reopen it to recover")]
    Failed(String),
}

/// Errors of opening, flushing and reading a store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// An operating-system error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// No store at that path.
    #[error("no artifact store at {0}")]
    NotFound(PathBuf),
    /// Another process has the store open for writing.
    #[error("artifact store {0} is in use by another process")]
    Locked(PathBuf),
    /// The log header or the metadata cannot be read.
    #[error("{path}: {error}")]
    Format {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong.
        error: FormatError,
    },
    /// A record inside the flushed part of the log is damaged or invalid. Nothing is
    /// repaired automatically: flushed data was reported and may have been committed.
    #[error(
        "{path} is corrupt at byte offset {offset}: {reason}. The flushed part of the log must be restored from a backup; `poc store verify` prints a full report"
    )]
    Corrupt {
        /// The log file.
        path: PathBuf,
        /// Offset of the first bad record.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The log is shorter than what the metadata says was flushed.
    #[error(
        "{path} ends at byte {len} but {flushed} bytes were flushed and reported: flushed data is missing"
    )]
    Truncated {
        /// The log file.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// Bytes covered by the last flush.
        flushed: u64,
    },
    /// The rebuilt tree does not give the root recorded at the last flush.
    #[error(
        "{path}: the root rebuilt from the log at count {count} differs from the recorded root"
    )]
    RootMismatch {
        /// The store directory.
        path: PathBuf,
        /// Flushed count.
        count: u64,
    },
    /// The metadata claims more leaves than the log holds.
    #[error(
        "{path}: metadata records {flushed} flushed artifacts but the log holds {found} before byte {bytes}"
    )]
    CountMismatch {
        /// The store directory.
        path: PathBuf,
        /// Count in the metadata.
        flushed: u64,
        /// Artifacts found.
        found: u64,
        /// Flushed byte length.
        bytes: u64,
    },
    /// A stage older than the retained ones.
    #[error(
        "stage {height} is older than the {keep} newest stages kept; its artifacts are no longer stored"
    )]
    Retired {
        /// The requested stage height.
        height: u64,
        /// Stages kept.
        keep: usize,
    },
    /// A snapshot count beyond the flushed state.
    #[error("count {count} exceeds the {flushed} flushed artifacts")]
    CountNotFlushed {
        /// Requested count.
        count: u64,
        /// Flushed count.
        flushed: u64,
    },
    /// A leaf index beyond the snapshot or the store.
    #[error("leaf index {leaf} is not below {count}")]
    LeafOutOfRange {
        /// Requested leaf.
        leaf: u64,
        /// The bound.
        count: u64,
    },
    /// A stored record no longer matches its checksum when read back.
    #[error("{path}: record of leaf {leaf} at byte offset {offset} is damaged: {error}")]
    DamagedRecord {
        /// The log.
        path: PathBuf,
        /// Leaf index.
        leaf: u64,
        /// Record offset.
        offset: u64,
        /// What is wrong.
        error: FormatError,
    },
    /// The store is read-only or failed (see [`AppendError`]).
    #[error(transparent)]
    Append(#[from] AppendError),
    /// A tree query failed.
    #[error(transparent)]
    Mmr(#[from] MmrError),
}

impl StoreError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
