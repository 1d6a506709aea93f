//! Opening a stage store: creating it, recovering from a crash, rebuilding the MMR.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use memmap2::Mmap;
use poc_mmr::{Hash, Mmr, fill_internal, hash_node, mountains, node_count};

use super::{ArtifactStore, RecoveryInfo, State, io_err, read_meta, sync_dir};
use crate::error::StoreError;
use crate::format::{LOG_FILE, Meta, log_header};
use crate::scan::scan;

/// Completes a node array whose leaves are in place (from the scan): every mountain, and
/// the halves of large subtrees, are hashed in parallel.
pub(crate) fn build_mmr(mut nodes: Vec<Hash>, leaves: u64) -> Mmr {
    const GRAIN: usize = 1 << 15;
    fn par_fill(out: &mut [Hash]) {
        if out.len() <= GRAIN {
            fill_internal(out);
            return;
        }
        let sub = out.len() / 2;
        let (left, rest) = out.split_at_mut(sub);
        let (right, top) = rest.split_at_mut(sub);
        rayon::join(|| par_fill(left), || par_fill(right));
        top[0] = hash_node(&left[sub - 1], &right[sub - 1]);
    }
    nodes.resize(node_count(leaves) as usize, [0u8; 32]);
    let mut rest: &mut [Hash] = &mut nodes;
    let mut parts = Vec::new();
    for m in mountains(leaves) {
        let (part, tail) = std::mem::take(&mut rest).split_at_mut(2 * m.leaves() as usize - 1);
        rest = tail;
        parts.push(part);
    }
    rayon::scope(|s| {
        for part in parts {
            s.spawn(move |_| par_fill(part));
        }
    });
    Mmr::from_nodes(nodes, leaves).expect("node array sized for the leaves")
}

impl ArtifactStore {
    /// Opens the store in `dir`, creating the directory and an empty store if needed.
    /// Recovers from a crash: a torn tail after the last flush is cut off; damage inside
    /// the flushed part is refused with [`StoreError::Corrupt`].
    pub fn open_or_create(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref();
        if !dir.join(LOG_FILE).exists() {
            Self::create(dir)?;
        }
        Self::open_with(dir, false)
    }

    /// Opens an existing store for appending ([`StoreError::NotFound`] if there is none).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(dir.as_ref(), false)
    }

    /// Opens an existing store without modifying anything on disk, up to its last flush
    /// (what a concurrently running writer has reported). Appends and flushes fail.
    pub fn open_read_only(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(dir.as_ref(), true)
    }

    /// Creates an empty log without ever replacing an existing one: the header is written
    /// and synced under a private name, then hard-linked into place (which fails if a log
    /// appeared meanwhile, e.g. created by a concurrent process).
    fn create(dir: &Path) -> Result<(), StoreError> {
        std::fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        let tmp = dir.join(format!("{LOG_FILE}.new.{}", std::process::id()));
        let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
        std::io::Write::write_all(&mut f, &log_header()).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("sync", &tmp))?;
        let log = dir.join(LOG_FILE);
        let linked = std::fs::hard_link(&tmp, &log);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("create", &log)(e)),
        }
        sync_dir(dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        Ok(())
    }

    fn open_with(dir: &Path, read_only: bool) -> Result<Self, StoreError> {
        let log_path = dir.join(LOG_FILE);
        if !log_path.exists() {
            return Err(StoreError::NotFound(dir.to_owned()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(&log_path)
            .map_err(io_err("open", &log_path))?;
        if !read_only {
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(StoreError::Locked(dir.to_owned()));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io_err("lock", &log_path)(e)),
            }
        }
        let meta = read_meta(dir)?.unwrap_or_else(Meta::empty);
        let file_len = file.metadata().map_err(io_err("stat", &log_path))?.len();
        if file_len < meta.flushed_bytes {
            return Err(StoreError::Truncated {
                path: log_path,
                len: file_len,
                flushed: meta.flushed_bytes,
            });
        }
        let limit = if read_only {
            meta.flushed_bytes
        } else {
            file_len
        };
        let scanned = scan(&file, &log_path, limit, meta.flushed_bytes)?;
        let mut recovery = RecoveryInfo::default();
        if let Some(p) = &scanned.problem {
            if p.offset < meta.flushed_bytes {
                return Err(StoreError::Corrupt {
                    path: log_path,
                    offset: p.offset,
                    reason: p.reason.clone(),
                });
            }
            // A torn or damaged tail that was never reported: cut it off.
            recovery.truncated_bytes = file_len - scanned.end;
            file.set_len(scanned.end)
                .map_err(io_err("truncate", &log_path))?;
            file.sync_all().map_err(io_err("sync", &log_path))?;
        }
        if scanned.flushed_leaves != meta.flushed_count {
            return Err(StoreError::CountMismatch {
                path: dir.to_owned(),
                flushed: meta.flushed_count,
                found: scanned.flushed_leaves,
                bytes: meta.flushed_bytes,
            });
        }
        let mmr = build_mmr(scanned.nodes, scanned.leaves);
        if mmr.root_at(meta.flushed_count)? != meta.root {
            return Err(StoreError::RootMismatch {
                path: dir.to_owned(),
                count: meta.flushed_count,
            });
        }
        recovery.unflushed_artifacts = mmr.leaves() - meta.flushed_count;
        let node_index = scanned
            .node_ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i as u16))
            .collect();
        let state = State {
            mmr,
            locations: scanned.locations,
            nonces: scanned.nonces,
            node_ids: scanned.node_ids,
            node_index,
            node_counts: scanned.node_counts,
            pending: Vec::new(),
            pending_start: scanned.end,
            in_flight: None,
            // Only the flushed part is known to be on stable storage; a recovered tail
            // may still sit in the page cache of a crashed process.
            synced_bytes: meta.flushed_bytes,
            flushed: meta,
            flushed_node_counts: scanned.flushed_node_counts,
            failed: None,
        };
        let store = Self {
            dir: dir.to_owned(),
            log_path,
            file,
            read_only,
            state: RwLock::new(state),
            map: RwLock::new(None),
            flush_lock: Mutex::new(()),
            data_syncs: std::sync::atomic::AtomicU64::new(0),
            recovery,
            #[cfg(test)]
            crash_at: Mutex::new(None),
        };
        store.remap();
        Ok(store)
    }

    /// Maps the log as it is now. Failure only costs speed: reads fall back to `pread`.
    pub(super) fn remap(&self) {
        // SAFETY: the log is only ever appended to while the store is open (this process
        // holds the exclusive lock for writing; truncation happens only before mapping,
        // during recovery), so the mapped bytes never change or disappear under the map.
        let map = unsafe { Mmap::map(&self.file) }.ok().map(Arc::new);
        *self.map.write().unwrap_or_else(|e| e.into_inner()) = map;
    }
}
