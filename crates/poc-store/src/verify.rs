//! `fsck` for a store directory: re-read everything, check, report.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use poc_mmr::Hash;

use crate::error::StoreError;
use crate::format::{LOG_FILE, LOG_HEADER_LEN, META_FILE, Meta};
use crate::scan::scan;
use crate::store::build_mmr;

/// The result of [`verify_store`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The store directory.
    pub dir: PathBuf,
    /// Length of the log file.
    pub log_bytes: u64,
    /// The metadata, if it could be read.
    pub meta: Option<Meta>,
    /// Artifact records that passed every check.
    pub artifacts: u64,
    /// End of the last valid record.
    pub valid_bytes: u64,
    /// Root rebuilt from the log at the flushed count.
    pub rebuilt_root: Option<Hash>,
    /// Valid artifacts after the last flush (kept by the next open, not yet reported).
    pub unflushed_artifacts: u64,
    /// A torn or damaged tail after the last flush that the next open cuts off.
    pub tail: Option<String>,
    /// Per-node counts in the flushed snapshot.
    pub flushed_node_counts: BTreeMap<String, u64>,
    /// Everything that makes the store unsound (empty = sound).
    pub problems: Vec<String>,
}

impl VerifyReport {
    /// Whether the store is sound (a torn unflushed tail is not a problem).
    pub fn is_sound(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Re-reads every record of the store in `dir`, checks checksums and record rules,
/// rebuilds the tree and compares the root with the metadata. Changes nothing on disk.
/// `Err` only when the directory or log cannot be read at all.
pub fn verify_store(dir: impl AsRef<Path>) -> Result<VerifyReport, StoreError> {
    let dir = dir.as_ref();
    let log_path = dir.join(LOG_FILE);
    if !log_path.exists() {
        return Err(StoreError::NotFound(dir.to_owned()));
    }
    let file = File::open(&log_path)
        .map_err(|e| StoreError::io(format!("cannot open {}", log_path.display()), e))?;
    let log_bytes = file
        .metadata()
        .map_err(|e| StoreError::io(format!("cannot stat {}", log_path.display()), e))?
        .len();
    let mut report = VerifyReport {
        dir: dir.to_owned(),
        log_bytes,
        meta: None,
        artifacts: 0,
        valid_bytes: 0,
        rebuilt_root: None,
        unflushed_artifacts: 0,
        tail: None,
        flushed_node_counts: BTreeMap::new(),
        problems: Vec::new(),
    };
    let meta_path = dir.join(META_FILE);
    let meta = match std::fs::read(&meta_path) {
        Ok(b) => match Meta::decode(&b) {
            Ok(m) => Some(m),
            Err(e) => {
                report
                    .problems
                    .push(format!("{}: {e}", meta_path.display()));
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(Meta::empty()),
        Err(e) => {
            return Err(StoreError::io(
                format!("cannot read {}", meta_path.display()),
                e,
            ));
        }
    };
    report.meta = meta;
    let flushed_bytes = meta.map_or(LOG_HEADER_LEN, |m| m.flushed_bytes);
    let scanned = match scan(&file, &log_path, log_bytes, flushed_bytes) {
        Ok(s) => s,
        Err(StoreError::Format { error, .. }) => {
            report
                .problems
                .push(format!("{}: {error}", log_path.display()));
            return Ok(report);
        }
        Err(e) => return Err(e),
    };
    report.artifacts = scanned.leaves;
    report.valid_bytes = scanned.end;
    if log_bytes < flushed_bytes {
        report.problems.push(format!(
            "the log ends at byte {log_bytes} but the last flush covered {flushed_bytes} bytes: flushed data is missing"
        ));
    }
    if let Some(p) = &scanned.problem {
        if p.offset < flushed_bytes {
            report.problems.push(format!(
                "corrupt record at byte offset {} (inside the flushed data): {}",
                p.offset, p.reason
            ));
        } else {
            report.tail = Some(format!(
                "{} bytes from offset {} after the last flush would be cut off at the next open: {}",
                log_bytes - p.offset,
                p.offset,
                p.reason
            ));
        }
    }
    let Some(meta) = meta else {
        return Ok(report);
    };
    report.flushed_node_counts = scanned
        .node_ids
        .iter()
        .zip(&scanned.flushed_node_counts)
        .filter(|(_, c)| **c > 0)
        .map(|(id, c)| (id.clone(), *c))
        .collect();
    if scanned.flushed_leaves != meta.flushed_count {
        report.problems.push(format!(
            "the metadata records {} flushed artifacts but the log holds {} before byte {}",
            meta.flushed_count, scanned.flushed_leaves, meta.flushed_bytes
        ));
        return Ok(report);
    }
    report.unflushed_artifacts = report.artifacts - meta.flushed_count;
    let mmr = build_mmr(scanned.nodes, scanned.leaves);
    report.rebuilt_root = mmr.root_at(meta.flushed_count).ok().flatten();
    if report.rebuilt_root != meta.root {
        report.problems.push(format!(
            "the root rebuilt at the flushed count {} differs from the recorded root",
            meta.flushed_count
        ));
    }
    Ok(report)
}
