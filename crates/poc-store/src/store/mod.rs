//! One stage's durable artifact store.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use memmap2::Mmap;
use poc_mmr::{Hash, MAX_LEAF_COUNT, Mmr, hash_leaf};

use crate::error::{AppendError, StoreError};
use crate::format::{
    FormatError, MAX_NODE_ID_LEN, MAX_NODES, MAX_VECTOR_LEN, META_FILE, Meta, NO_NODE, Record,
    artifact_record_len, decode_record, encode_artifact, encode_node,
};
use crate::nonce_set::NonceSet;
use crate::scan::{pack_location, unpack_location};

mod flush;
mod open;

pub(crate) use open::build_mmr;

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

impl ArtifactStore {
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
}
