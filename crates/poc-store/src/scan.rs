//! Reading a log back: framing, checksums, record semantics and leaf hashes.
//! Shared by recovery on open and by the `verify` (fsck) report.

use std::fs::File;
use std::io::Read;
use std::ops::Range;
use std::path::Path;

use poc_mmr::{Hash, MAX_LEAF_COUNT, hash_leaf, leaf_position};
use rayon::prelude::*;

use crate::error::StoreError;
use crate::format::{
    FormatError, LOG_HEADER_LEN, NO_NODE, Record, artifact_record_len, check_log_header,
    decode_record,
};
use crate::nonce_set::NonceSet;

/// Bytes read per chunk while scanning.
const CHUNK: usize = 8 << 20;

/// Packs a record offset and framed length into one word (offsets below 2^48).
pub(crate) fn pack_location(offset: u64, len: usize) -> u64 {
    (offset << 16) | len as u64
}

/// Unpacks [`pack_location`].
pub(crate) fn unpack_location(loc: u64) -> (u64, usize) {
    (loc >> 16, (loc & 0xffff) as usize)
}

/// The first problem found in a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    /// Offset of the record where reading stopped.
    pub offset: u64,
    /// What is wrong there.
    pub reason: String,
    /// Whether it is only an incomplete record at the very end (a torn write).
    pub torn: bool,
}

/// Everything recovered from the valid prefix of a log.
#[derive(Debug, Default)]
pub(crate) struct Scanned {
    /// The MMR node array with every leaf hash at its position (internal nodes not yet
    /// computed; see `store::build_mmr`).
    pub nodes: Vec<Hash>,
    /// Number of artifacts (leaves).
    pub leaves: u64,
    pub locations: Vec<u64>,
    pub nonces: NonceSet,
    pub node_ids: Vec<String>,
    /// Per node index, over all valid artifacts.
    pub node_counts: Vec<u64>,
    /// Per node index, over artifacts inside the flushed prefix.
    pub flushed_node_counts: Vec<u64>,
    /// Artifacts inside the flushed prefix.
    pub flushed_leaves: u64,
    /// End of the last valid record.
    pub end: u64,
    /// Why reading stopped before `scanned_len`, if it did.
    pub problem: Option<Problem>,
}

struct Pending {
    nonce: i32,
    vector: Range<usize>,
}

/// Reads `path` (open as `file`) up to `limit` bytes. `flushed_bytes` is where the last
/// reported snapshot ends: a record may not cross it.
pub(crate) fn scan(
    file: &File,
    path: &Path,
    limit: u64,
    flushed_bytes: u64,
) -> Result<Scanned, StoreError> {
    let mut reader = file
        .try_clone()
        .map_err(|e| StoreError::io(format!("cannot read {}", path.display()), e))?;
    let read_err = |e| StoreError::io(format!("cannot read {}", path.display()), e);
    let mut header = [0u8; LOG_HEADER_LEN as usize];
    reader.read_exact(&mut header).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            StoreError::Format {
                path: path.to_owned(),
                error: FormatError::NotALog,
            }
        } else {
            read_err(e)
        }
    })?;
    check_log_header(&header).map_err(|error| StoreError::Format {
        path: path.to_owned(),
        error,
    })?;

    let mut s = Scanned {
        end: LOG_HEADER_LEN,
        ..Scanned::default()
    };
    // Sized for production records (24-byte vectors); other sizes only change how much
    // is reserved up front.
    let estimate = (limit.saturating_sub(LOG_HEADER_LEN) / artifact_record_len(24) as u64) as usize;
    s.nonces.reserve(estimate);
    s.locations.reserve(estimate);
    s.nodes.reserve(2 * estimate);
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK.min(limit as usize) + 8192);
    let mut buf_offset = LOG_HEADER_LEN; // file offset of buf[0]
    let mut remaining = limit.saturating_sub(LOG_HEADER_LEN);
    let mut batch: Vec<Pending> = Vec::new();
    loop {
        // Refill: keep the unparsed tail, read the next chunk after it.
        let want = (CHUNK as u64).min(remaining) as usize;
        let old = buf.len();
        buf.resize(old + want, 0);
        reader.read_exact(&mut buf[old..]).map_err(read_err)?;
        remaining -= want as u64;
        let at_eof = remaining == 0;

        let mut pos = 0usize;
        let mut stop: Option<Problem> = None;
        while pos < buf.len() {
            let offset = buf_offset + pos as u64;
            let (record, len) = match decode_record(&buf[pos..]) {
                Ok(r) => r,
                Err(FormatError::Incomplete { .. }) if !at_eof => break,
                Err(e) => {
                    stop = Some(Problem {
                        offset,
                        torn: matches!(e, FormatError::Incomplete { .. }),
                        reason: e.to_string(),
                    });
                    break;
                }
            };
            let end = offset + len as u64;
            if offset < flushed_bytes && end > flushed_bytes {
                stop = Some(Problem {
                    offset,
                    torn: false,
                    reason: format!(
                        "record crosses the end of the flushed data at byte {flushed_bytes}"
                    ),
                });
                break;
            }
            if let Err(reason) = apply(&mut s, record, end <= flushed_bytes, pos + len, &mut batch)
            {
                stop = Some(Problem {
                    offset,
                    torn: false,
                    reason,
                });
                break;
            }
            if let Record::Artifact { .. } = record {
                s.locations.push(pack_location(offset, len));
            }
            pos += len;
            s.end = end;
        }
        // Hash this chunk's leaves in parallel.
        let hashes: Vec<Hash> = batch
            .par_iter()
            .map(|p| hash_leaf(p.nonce, &buf[p.vector.clone()]))
            .collect();
        for h in hashes {
            let pos = leaf_position(s.leaves) as usize;
            s.nodes.resize(pos + 1, [0u8; 32]);
            s.nodes[pos] = h;
            s.leaves += 1;
        }
        batch.clear();
        if let Some(p) = stop {
            s.problem = Some(p);
            break;
        }
        if at_eof {
            break;
        }
        buf.drain(..pos);
        buf_offset += pos as u64;
    }
    Ok(s)
}

/// Applies one decoded record to the scan state; `Err` is a semantic problem.
fn apply(
    s: &mut Scanned,
    record: Record<'_>,
    flushed: bool,
    record_end_in_buf: usize,
    batch: &mut Vec<Pending>,
) -> Result<(), String> {
    match record {
        Record::Node { index, id } => {
            if index as usize != s.node_ids.len() {
                return Err(format!(
                    "node record declares index {index}, expected {}",
                    s.node_ids.len()
                ));
            }
            if s.node_ids.iter().any(|n| n == id) {
                return Err(format!("ML node id {id:?} is declared twice"));
            }
            s.node_ids.push(id.to_owned());
            s.node_counts.push(0);
            s.flushed_node_counts.push(0);
        }
        Record::Artifact {
            nonce,
            node,
            vector,
        } => {
            if node != NO_NODE && node as usize >= s.node_ids.len() {
                return Err(format!("artifact refers to undeclared node index {node}"));
            }
            if s.locations.len() as u64 >= MAX_LEAF_COUNT {
                return Err(format!("more than {MAX_LEAF_COUNT} artifacts"));
            }
            if !s.nonces.insert(nonce) {
                return Err(format!("duplicate nonce {nonce}"));
            }
            if node != NO_NODE {
                s.node_counts[node as usize] += 1;
                if flushed {
                    s.flushed_node_counts[node as usize] += 1;
                }
            }
            if flushed {
                s.flushed_leaves += 1;
            }
            batch.push(Pending {
                nonce,
                vector: record_end_in_buf - vector.len()..record_end_in_buf,
            });
        }
    }
    Ok(())
}
