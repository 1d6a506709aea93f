//! One stage's durable artifact store.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use memmap2::Mmap;
use poc_mmr::{
    Hash, MAX_LEAF_COUNT, Mmr, fill_internal, hash_leaf, hash_node, mountains, node_count,
};

use crate::error::{AppendError, StoreError};
use crate::format::{
    FormatError, LOG_FILE, MAX_NODE_ID_LEN, MAX_NODES, MAX_VECTOR_LEN, META_FILE, META_TMP_FILE,
    Meta, NO_NODE, Record, artifact_record_len, decode_record, encode_artifact, encode_node,
    log_header,
};
use crate::nonce_set::NonceSet;
use crate::scan::{pack_location, scan, unpack_location};

/// `(count, root)` of a snapshot; the root is `None` for an empty snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Number of leaves.
    pub count: u64,
    /// MMR root over them.
    pub root: Option<Hash>,
}

/// An artifact read back from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredArtifact {
    /// Leaf index (order of appends).
    pub leaf_index: u64,
    /// The nonce.
    pub nonce: i32,
    /// The vector bytes as received.
    pub vector: Vec<u8>,
    /// The ML node that produced it, if known.
    pub node_id: Option<String>,
}

/// An artifact with its inclusion proof against one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafProof {
    /// Leaf index.
    pub leaf_index: u64,
    /// The nonce.
    pub nonce: i32,
    /// The vector bytes.
    pub vector: Vec<u8>,
    /// Siblings up to the peak, then the other peaks left to right.
    pub proof: Vec<Hash>,
}

/// What recovery found when the store was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryInfo {
    /// Bytes of a torn or damaged tail (after the last flush) that were cut off.
    pub truncated_bytes: u64,
    /// Complete artifacts found after the last flush; they are kept and become part of
    /// the next flush.
    pub unflushed_artifacts: u64,
}

/// Where a flush stops when a test simulates a crash.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CrashPoint {
    /// After writing the records, before the data fsync.
    Write,
    /// After the data fsync, before the metadata is written.
    DataSync,
    /// After writing (part of) the temporary metadata file, before its fsync.
    MetaWrite,
    /// After the rename, before the directory fsync.
    Rename,
}

/// Where a record's bytes are read from.
enum Source {
    /// Not yet in the file: a copy of the buffered bytes.
    Memory(Vec<u8>),
    /// In the log file.
    File { offset: u64, len: usize },
}

struct State {
    mmr: Mmr,
    /// Packed `(offset, framed length)` of every artifact record.
    locations: Vec<u64>,
    nonces: NonceSet,
    node_ids: Vec<String>,
    node_index: HashMap<String, u16>,
    node_counts: Vec<u64>,
    /// Encoded records not yet handed to the file; they start at `pending_start`.
    pending: Vec<u8>,
    pending_start: u64,
    /// Records a flush is writing right now (readable from here until written).
    in_flight: Option<(u64, Arc<Vec<u8>>)>,
    /// Log bytes known to be on stable storage (written and fsynced).
    synced_bytes: u64,
    /// The last flushed (reported) snapshot and its per-node counts.
    flushed: Meta,
    flushed_node_counts: Vec<u64>,
    failed: Option<String>,
}

impl State {
    fn check_writable(&self) -> Result<(), AppendError> {
        match &self.failed {
            Some(reason) => Err(AppendError::Failed(reason.clone())),
            None => Ok(()),
        }
    }

    fn counts_map(&self, counts: &[u64]) -> BTreeMap<String, u64> {
        self.node_ids
            .iter()
            .zip(counts)
            .filter(|(_, c)| **c > 0)
            .map(|(id, c)| (id.clone(), *c))
            .collect()
    }
}

/// A durable, crash-safe, append-only store of one PoC stage's artifacts.
///
/// Appends go to memory (and into the MMR at once); [`flush`](Self::flush) writes them to
/// the log, fsyncs it, then atomically replaces the metadata. Only flushed state is ever
/// reported as a [`Snapshot`]; proofs and roots are served for any flushed count, and
/// stay valid for every earlier count. Readers take a shared lock for microseconds and do
/// their file reads without it, so appends and proofs proceed together. All methods take
/// `&self`; share the store with an `Arc`.
pub struct ArtifactStore {
    dir: PathBuf,
    log_path: PathBuf,
    file: File,
    read_only: bool,
    state: RwLock<State>,
    /// Read-only memory map of the log up to the last write (records are read from it
    /// without a system call); replaced after every flush.
    map: RwLock<Option<Arc<Mmap>>>,
    flush_lock: Mutex<()>,
    /// Data fsyncs done (diagnostics: shows group commit at work).
    data_syncs: std::sync::atomic::AtomicU64,
    recovery: RecoveryInfo,
    #[cfg(test)]
    pub(crate) crash_at: Mutex<Option<(CrashPoint, usize)>>,
}

impl std::fmt::Debug for ArtifactStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactStore")
            .field("dir", &self.dir)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

fn io_err(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let context = format!("cannot {what} {}", path.display());
    move |e| StoreError::io(context, e)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync directory", dir))
}

fn read_meta(dir: &Path) -> Result<Option<Meta>, StoreError> {
    let path = dir.join(META_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => Meta::decode(&bytes)
            .map(Some)
            .map_err(|error| StoreError::Format { path, error }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", &path)(e)),
    }
}

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
    fn remap(&self) {
        // SAFETY: the log is only ever appended to while the store is open (this process
        // holds the exclusive lock for writing; truncation happens only before mapping,
        // during recovery), so the mapped bytes never change or disappear under the map.
        let map = unsafe { Mmap::map(&self.file) }.ok().map(Arc::new);
        *self.map.write().unwrap_or_else(|e| e.into_inner()) = map;
    }

    /// How many times the log was fsynced since the store was opened (by [`sync`] and
    /// [`flush`]; concurrent syncs share one).
    ///
    /// [`sync`]: Self::sync
    /// [`flush`]: Self::flush
    pub fn data_syncs(&self) -> u64 {
        self.data_syncs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The stage directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What recovery did when the store was opened.
    pub fn recovery(&self) -> RecoveryInfo {
        self.recovery
    }

    /// Whether the store was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn check_append(vector: &[u8], node_id: Option<&str>) -> Result<(), AppendError> {
        if vector.is_empty() {
            return Err(AppendError::EmptyVector);
        }
        if vector.len() > MAX_VECTOR_LEN {
            return Err(AppendError::VectorTooLong {
                len: vector.len(),
                max: MAX_VECTOR_LEN,
            });
        }
        if let Some(id) = node_id
            && id.len() > MAX_NODE_ID_LEN
        {
            return Err(AppendError::NodeIdTooLong {
                len: id.len(),
                max: MAX_NODE_ID_LEN,
            });
        }
        Ok(())
    }

    /// The index of an ML node id, declared (with a node record) on first use.
    fn resolve_node(s: &mut State, node_id: Option<&str>) -> Result<u16, AppendError> {
        let Some(id) = node_id.filter(|id| !id.is_empty()) else {
            return Ok(NO_NODE);
        };
        if let Some(&i) = s.node_index.get(id) {
            return Ok(i);
        }
        if s.node_ids.len() >= MAX_NODES {
            return Err(AppendError::TooManyNodes(MAX_NODES));
        }
        let i = s.node_ids.len() as u16;
        encode_node(&mut s.pending, i, id);
        s.node_ids.push(id.to_owned());
        s.node_index.insert(id.to_owned(), i);
        s.node_counts.push(0);
        s.flushed_node_counts.push(0);
        Ok(i)
    }

    fn append_locked(
        s: &mut State,
        nonce: i32,
        vector: &[u8],
        node: u16,
        leaf_hash: Hash,
    ) -> Result<u64, AppendError> {
        if s.mmr.leaves() >= MAX_LEAF_COUNT {
            return Err(AppendError::CapacityExceeded(s.mmr.leaves()));
        }
        if !s.nonces.insert(nonce) {
            return Err(AppendError::DuplicateNonce(nonce));
        }
        let offset = s.pending_start + s.pending.len() as u64;
        encode_artifact(&mut s.pending, nonce, node, vector);
        s.locations
            .push(pack_location(offset, artifact_record_len(vector.len())));
        if node != NO_NODE {
            s.node_counts[node as usize] += 1;
        }
        Ok(s.mmr.push(leaf_hash))
    }

    /// Appends one artifact (kept in memory until the next flush) and returns its leaf
    /// index. `node_id` is the ML node that produced it (`None` or empty: not counted).
    pub fn append(
        &self,
        nonce: i32,
        vector: &[u8],
        node_id: Option<&str>,
    ) -> Result<u64, AppendError> {
        if self.read_only {
            return Err(AppendError::ReadOnly);
        }
        Self::check_append(vector, node_id)?;
        let leaf_hash = hash_leaf(nonce, vector);
        let mut s = self.write();
        s.check_writable()?;
        let node = Self::resolve_node(&mut s, node_id)?;
        Self::append_locked(&mut s, nonce, vector, node, leaf_hash)
    }

    /// Appends many artifacts of one ML node under a single lock (leaf hashes are computed
    /// before taking it). Returns one result per item: a
    /// rejected item (e.g. a duplicate nonce) does not stop the others.
    pub fn append_batch(
        &self,
        items: &[(i32, &[u8])],
        node_id: Option<&str>,
    ) -> Vec<Result<u64, AppendError>> {
        if self.read_only {
            return items.iter().map(|_| Err(AppendError::ReadOnly)).collect();
        }
        let prepared: Vec<Result<Hash, AppendError>> = items
            .iter()
            .map(|(nonce, v)| Self::check_append(v, node_id).map(|()| hash_leaf(*nonce, v)))
            .collect();
        let mut s = self.write();
        if let Err(e) = s.check_writable() {
            return items.iter().map(|_| Err(e.clone())).collect();
        }
        let node = match Self::resolve_node(&mut s, node_id) {
            Ok(n) => n,
            Err(e) => return items.iter().map(|_| Err(e.clone())).collect(),
        };
        items
            .iter()
            .zip(prepared)
            .map(|((nonce, v), h)| Self::append_locked(&mut s, *nonce, v, node, h?))
            .collect()
    }

    /// Number of artifacts appended (flushed or not).
    pub fn count(&self) -> u64 {
        self.read().mmr.leaves()
    }

    /// Root over every appended artifact, flushed or not (never report this one).
    pub fn current_root(&self) -> Option<Hash> {
        self.read().mmr.root()
    }

    /// The last flushed snapshot: the only `(count, root)` that may be reported.
    pub fn flushed(&self) -> Snapshot {
        let s = self.read();
        Snapshot {
            count: s.flushed.flushed_count,
            root: s.flushed.root,
        }
    }

    /// Artifacts per ML node id in the flushed snapshot (ids with no artifacts omitted).
    pub fn flushed_node_counts(&self) -> BTreeMap<String, u64> {
        let s = self.read();
        s.counts_map(&s.flushed_node_counts)
    }

    /// Artifacts per ML node id over everything appended.
    pub fn node_counts(&self) -> BTreeMap<String, u64> {
        let s = self.read();
        s.counts_map(&s.node_counts)
    }

    /// The root at any flushed count (`None` for 0).
    pub fn root_at(&self, count: u64) -> Result<Option<Hash>, StoreError> {
        let s = self.read();
        if count > s.flushed.flushed_count {
            return Err(StoreError::CountNotFlushed {
                count,
                flushed: s.flushed.flushed_count,
            });
        }
        Ok(s.mmr.root_at(count)?)
    }

    /// Where one record's bytes are now: copied from memory if not yet in the file.
    fn record_source(s: &State, loc: u64) -> Source {
        let (offset, len) = unpack_location(loc);
        if offset >= s.pending_start {
            let at = (offset - s.pending_start) as usize;
            return Source::Memory(s.pending[at..at + len].to_vec());
        }
        if let Some((start, buf)) = &s.in_flight
            && offset >= *start
        {
            let at = (offset - start) as usize;
            return Source::Memory(buf[at..at + len].to_vec());
        }
        Source::File { offset, len }
    }

    /// Decodes artifact records (without holding the state lock): from memory, from the
    /// memory map, or with `pread` for bytes written after the last remap.
    fn read_records(
        &self,
        items: Vec<(u64, Source)>,
    ) -> Result<Vec<(i32, Vec<u8>, u16)>, StoreError> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut scratch = Vec::new();
        items
            .into_iter()
            .map(|(leaf, source)| {
                let (bytes, offset): (&[u8], u64) = match &source {
                    Source::Memory(b) => (b, 0),
                    Source::File { offset, len } => {
                        let (start, end) = (*offset as usize, *offset as usize + len);
                        match map.as_deref().filter(|m| m.len() >= end) {
                            Some(m) => (&m[start..end], *offset),
                            None => {
                                scratch.resize(*len, 0);
                                self.file
                                    .read_exact_at(&mut scratch, *offset)
                                    .map_err(io_err("read", &self.log_path))?;
                                (&scratch, *offset)
                            }
                        }
                    }
                };
                let damaged = |error| StoreError::DamagedRecord {
                    path: self.log_path.clone(),
                    leaf,
                    offset,
                    error,
                };
                match decode_record(bytes).map_err(damaged)?.0 {
                    Record::Artifact {
                        nonce,
                        node,
                        vector,
                    } => Ok((nonce, vector.to_vec(), node)),
                    Record::Node { .. } => {
                        Err(damaged(FormatError::Body("expected an artifact record")))
                    }
                }
            })
            .collect()
    }

    /// Reads the artifact at `leaf` (any appended leaf).
    pub fn artifact(&self, leaf: u64) -> Result<StoredArtifact, StoreError> {
        let source = {
            let s = self.read();
            let count = s.mmr.leaves();
            let loc = *s
                .locations
                .get(leaf as usize)
                .ok_or(StoreError::LeafOutOfRange { leaf, count })?;
            Self::record_source(&s, loc)
        };
        let (nonce, vector, node) = self.read_records(vec![(leaf, source)])?.remove(0);
        Ok(StoredArtifact {
            leaf_index: leaf,
            nonce,
            vector,
            node_id: self.read().node_ids.get(node as usize).cloned(),
        })
    }

    /// The artifact at `leaf` with its proof against the flushed snapshot of `count`.
    pub fn proof(&self, leaf: u64, count: u64) -> Result<LeafProof, StoreError> {
        let (source, proof) = {
            let s = self.read();
            Self::check_snapshot(&s, &[leaf], count)?;
            let proof = s.mmr.proof(leaf, count)?;
            (Self::record_source(&s, s.locations[leaf as usize]), proof)
        };
        let (nonce, vector, _) = self.read_records(vec![(leaf, source)])?.remove(0);
        Ok(LeafProof {
            leaf_index: leaf,
            nonce,
            vector,
            proof,
        })
    }

    fn check_snapshot(s: &State, leaves: &[u64], count: u64) -> Result<(), StoreError> {
        if count > s.flushed.flushed_count {
            return Err(StoreError::CountNotFlushed {
                count,
                flushed: s.flushed.flushed_count,
            });
        }
        match leaves.iter().find(|&&l| l >= count) {
            Some(&leaf) => Err(StoreError::LeafOutOfRange { leaf, count }),
            None => Ok(()),
        }
    }

    /// Artifacts with proofs for many leaves of one flushed snapshot, in request order
    /// (duplicates are served). Takes the shared lock once, and reads the records after
    /// releasing it.
    pub fn proofs(&self, leaves: &[u64], count: u64) -> Result<Vec<LeafProof>, StoreError> {
        let (sources, proofs) = {
            let s = self.read();
            Self::check_snapshot(&s, leaves, count)?;
            let proofs = s.mmr.proofs(leaves, count)?;
            let sources: Vec<(u64, Source)> = leaves
                .iter()
                .map(|&leaf| (leaf, Self::record_source(&s, s.locations[leaf as usize])))
                .collect();
            (sources, proofs)
        };
        let records = self.read_records(sources)?;
        Ok(leaves
            .iter()
            .zip(records)
            .zip(proofs)
            .map(|((&leaf, (nonce, vector, _)), proof)| LeafProof {
                leaf_index: leaf,
                nonce,
                vector,
                proof,
            })
            .collect())
    }

    #[cfg(test)]
    fn crash_here(&self, point: CrashPoint) -> Option<usize> {
        let c = *self.crash_at.lock().unwrap();
        c.filter(|(p, _)| *p == point).map(|(_, n)| n)
    }

    fn fail(&self, reason: String) -> StoreError {
        self.write().failed = Some(reason.clone());
        StoreError::Append(AppendError::Failed(reason))
    }

    /// Hands the buffered records to the file and fsyncs it; the caller holds the flush
    /// lock. Returns the end offset and the leaf count and per-node counts it covers.
    fn write_pending(&self) -> Result<(u64, u64, Vec<u64>), StoreError> {
        let (start, buf, count, node_counts) = {
            let mut s = self.write();
            s.check_writable()?;
            let buf = Arc::new(std::mem::take(&mut s.pending));
            let start = s.pending_start;
            s.pending_start += buf.len() as u64;
            if !buf.is_empty() {
                s.in_flight = Some((start, Arc::clone(&buf)));
            }
            (start, buf, s.mmr.leaves(), s.node_counts.clone())
        };
        let end = start + buf.len() as u64;
        if self.read().synced_bytes >= end {
            return Ok((end, count, node_counts));
        }

        #[cfg(test)]
        if let Some(keep) = self.crash_here(CrashPoint::Write) {
            let _ = self.file.write_all_at(&buf[..keep.min(buf.len())], start);
            return Err(self.fail("simulated crash".into()));
        }
        if let Err(e) = self.file.write_all_at(&buf, start) {
            return Err(self.fail(format!("writing {}: {e}", self.log_path.display())));
        }
        self.write().in_flight = None;
        if let Err(e) = self.file.sync_data() {
            return Err(self.fail(format!("syncing {}: {e}", self.log_path.display())));
        }
        self.data_syncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.write().synced_bytes = end;
        Ok((end, count, node_counts))
    }

    /// Makes every artifact appended so far durable: written to the log and fsynced,
    /// without recording a new snapshot (the reported `(count, root)` does not change).
    /// A crash after this returns loses none of them: reopening finds them as unflushed
    /// artifacts that join the next flush. Concurrent callers share fsyncs (group
    /// commit): one whose records a sync already in progress covers returns when that
    /// sync is done, without another.
    pub fn sync(&self) -> Result<(), StoreError> {
        if self.read_only {
            return Err(AppendError::ReadOnly.into());
        }
        let target = {
            let s = self.read();
            s.check_writable()?;
            s.pending_start + s.pending.len() as u64
        };
        let _one_writer_at_a_time = self.flush_lock.lock().unwrap_or_else(|e| e.into_inner());
        if self.read().synced_bytes >= target {
            return Ok(());
        }
        self.write_pending().map(|_| ())
    }

    /// Writes everything appended so far, fsyncs it, then atomically records the new
    /// snapshot; returns it. Any I/O failure stops further writes (reopen to recover) so
    /// that a half-written flush can never be followed by more data.
    pub fn flush(&self) -> Result<Snapshot, StoreError> {
        if self.read_only {
            return Err(AppendError::ReadOnly.into());
        }
        let _one_flush_at_a_time = self.flush_lock.lock().unwrap_or_else(|e| e.into_inner());
        {
            let s = self.read();
            s.check_writable()?;
            if s.pending.is_empty() && s.mmr.leaves() == s.flushed.flushed_count {
                return Ok(Snapshot {
                    count: s.flushed.flushed_count,
                    root: s.flushed.root,
                });
            }
        }
        let (end, count, node_counts) = self.write_pending()?;
        #[cfg(test)]
        if self.crash_here(CrashPoint::DataSync).is_some() {
            return Err(self.fail("simulated crash".into()));
        }

        let root = self.read().mmr.root_at(count)?;
        let meta = Meta {
            flushed_count: count,
            flushed_bytes: end,
            root,
        };
        if let Err(e) = self.write_meta(&meta) {
            return Err(self.fail(e.to_string()));
        }
        self.remap();
        let mut s = self.write();
        s.flushed = meta;
        s.flushed_node_counts = node_counts;
        Ok(Snapshot { count, root })
    }

    /// Replaces the meta file atomically: write a temporary file, fsync, rename, fsync dir.
    fn write_meta(&self, meta: &Meta) -> Result<(), StoreError> {
        let tmp = self.dir.join(META_TMP_FILE);
        let bytes = meta.encode();
        let f = File::create(&tmp).map_err(io_err("create", &tmp))?;
        #[cfg(test)]
        if let Some(keep) = self.crash_here(CrashPoint::MetaWrite) {
            let _ = f.write_all_at(&bytes[..keep.min(bytes.len())], 0);
            return Err(StoreError::io(
                "simulated crash",
                std::io::Error::other("crash"),
            ));
        }
        f.write_all_at(&bytes, 0).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("sync", &tmp))?;
        let path = self.dir.join(META_FILE);
        std::fs::rename(&tmp, &path).map_err(io_err("rename", &tmp))?;
        #[cfg(test)]
        if self.crash_here(CrashPoint::Rename).is_some() {
            return Err(StoreError::io(
                "simulated crash",
                std::io::Error::other("crash"),
            ));
        }
        sync_dir(&self.dir)
    }
}
