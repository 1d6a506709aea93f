//! Flushing: group-committed log writes, then the atomic metadata replace.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

#[cfg(test)]
use super::CrashPoint;
use super::{ArtifactStore, Snapshot, io_err, sync_dir};
use crate::error::{AppendError, StoreError};
use crate::format::{META_FILE, META_TMP_FILE, Meta};

impl ArtifactStore {
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
