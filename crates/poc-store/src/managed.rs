//! One store per PoC stage, with retention of the newest stages.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::StoreError;
use crate::store::{ArtifactStore, Snapshot};

/// Stores of many stages under one base directory (`<base>/<stage height>/`).
///
/// [`get_or_create`](Self::get_or_create) is what artifact ingestion uses; it also
/// removes the oldest stage directories beyond the newest `keep`.
/// [`get`](Self::get) (proofs, commits) opens an existing stage from disk after a restart.
#[derive(Debug)]
pub struct StageStores {
    base: PathBuf,
    keep: usize,
    open: Mutex<BTreeMap<u64, Arc<ArtifactStore>>>,
}

impl StageStores {
    /// The default number of stages kept.
    pub const DEFAULT_KEEP: usize = 10;

    /// Manages stages under `base` (created if missing), keeping the newest `keep` (≥ 1).
    pub fn new(base: impl AsRef<Path>, keep: usize) -> Result<Self, StoreError> {
        let base = base.as_ref().to_owned();
        std::fs::create_dir_all(&base)
            .map_err(|e| StoreError::io(format!("cannot create {}", base.display()), e))?;
        Ok(Self {
            base,
            keep: keep.max(1),
            open: Mutex::new(BTreeMap::new()),
        })
    }

    /// The base directory.
    pub fn base(&self) -> &Path {
        &self.base
    }

    fn dir_of(&self, height: u64) -> PathBuf {
        self.base.join(height.to_string())
    }

    /// Stage heights present on disk (directories with decimal names), ascending.
    pub fn heights_on_disk(&self) -> Result<Vec<u64>, StoreError> {
        let entries = std::fs::read_dir(&self.base)
            .map_err(|e| StoreError::io(format!("cannot list {}", self.base.display()), e))?;
        let mut heights: Vec<u64> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
            .collect();
        heights.sort_unstable();
        Ok(heights)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<ArtifactStore>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The store of `height`, opened or created. Refuses a stage older than the newest
    /// `keep` stages (it would be deleted right away).
    pub fn get_or_create(&self, height: u64) -> Result<Arc<ArtifactStore>, StoreError> {
        let mut open = self.lock();
        if let Some(s) = open.get(&height) {
            return Ok(Arc::clone(s));
        }
        let on_disk = self.heights_on_disk()?;
        if !on_disk.contains(&height)
            && on_disk.iter().filter(|&&h| h > height).count() >= self.keep
        {
            return Err(StoreError::Retired {
                height,
                keep: self.keep,
            });
        }
        let store = Arc::new(ArtifactStore::open_or_create(self.dir_of(height))?);
        open.insert(height, Arc::clone(&store));
        drop(open);
        self.prune()?;
        Ok(store)
    }

    /// The store of an existing stage, opened from disk if needed
    /// ([`StoreError::NotFound`] if the stage has no directory).
    pub fn get(&self, height: u64) -> Result<Arc<ArtifactStore>, StoreError> {
        let mut open = self.lock();
        if let Some(s) = open.get(&height) {
            return Ok(Arc::clone(s));
        }
        let store = Arc::new(ArtifactStore::open(self.dir_of(height))?);
        open.insert(height, Arc::clone(&store));
        Ok(store)
    }

    /// Deletes every stage directory except the newest `keep`; returns the removed heights.
    /// Stores still held elsewhere keep working on their open files until dropped.
    pub fn prune(&self) -> Result<Vec<u64>, StoreError> {
        let mut open = self.lock();
        let heights = self.heights_on_disk()?;
        let cut = heights.len().saturating_sub(self.keep);
        let removed = heights[..cut].to_vec();
        for h in &removed {
            open.remove(h);
            let dir = self.dir_of(*h);
            std::fs::remove_dir_all(&dir)
                .map_err(|e| StoreError::io(format!("cannot remove {}", dir.display()), e))?;
        }
        Ok(removed)
    }

    /// Flushes every open store; returns each stage's result.
    pub fn flush_all(&self) -> Vec<(u64, Result<Snapshot, StoreError>)> {
        let stores: Vec<(u64, Arc<ArtifactStore>)> = self
            .lock()
            .iter()
            .map(|(h, s)| (*h, Arc::clone(s)))
            .collect();
        stores.into_iter().map(|(h, s)| (h, s.flush())).collect()
    }
}
