//! The on-disk format of one stage directory (pure encoding and decoding, no I/O).
//!
//! ```text
//! <stage>/artifacts.log   header, then records, append-only
//! <stage>/meta            the last flushed snapshot, replaced atomically
//! ```
//!
//! **Log header** (16 bytes): `b"POCALOG\0"`, `LE32 version (= 1)`, `LE32 0`.
//!
//! **Record**: `LE32 body_len | LE32 crc32c(body) | body`, with `body`:
//! - `0x01` *node*: `LE16 node_index | node id (UTF-8, 1..=128 bytes)` — declares the ML
//!   node id that later artifact records refer to by index (indices are 0, 1, 2, … in
//!   order of first use);
//! - `0x02` *artifact*: `LE32 nonce | LE16 node_index | vector (1..=4096 bytes)`, where
//!   node index `0xFFFF` means "no ML node" (not counted in the per-node counts).
//!
//! Leaf index = order of artifact records. Per-node counts are derived from the records,
//! so they can never disagree with the log.
//!
//! **Meta** (60 bytes): `b"POCMETA\x01"`, `LE64 flushed_count`, `LE64 flushed_bytes`
//! (log length covered by the snapshot, header included), `root[32]` (zero when the count
//! is 0), `LE32 crc32c` of the preceding 56 bytes.

use poc_mmr::Hash;
use thiserror::Error;

/// Name of the log file in a stage directory.
pub const LOG_FILE: &str = "artifacts.log";
/// Name of the metadata file in a stage directory.
pub const META_FILE: &str = "meta";
/// Temporary name the metadata is written under before the atomic rename.
pub const META_TMP_FILE: &str = "meta.tmp";

/// Log header magic.
pub const LOG_MAGIC: &[u8; 8] = b"POCALOG\0";
/// Log format version.
pub const LOG_VERSION: u32 = 1;
/// Length of the log header.
pub const LOG_HEADER_LEN: u64 = 16;
/// Meta magic (includes the meta format version).
pub const META_MAGIC: &[u8; 8] = b"POCMETA\x01";
/// Length of the meta file.
pub const META_LEN: usize = 60;

/// Record framing: `LE32 body_len | LE32 crc`.
pub const RECORD_HEADER_LEN: usize = 8;
/// Body kind of a node declaration.
pub const KIND_NODE: u8 = 0x01;
/// Body kind of an artifact.
pub const KIND_ARTIFACT: u8 = 0x02;
/// Node index meaning "no ML node".
pub const NO_NODE: u16 = u16::MAX;
/// Longest ML node id (the chain's `MaxPocNodeIdLength`).
pub const MAX_NODE_ID_LEN: usize = 128;
/// Most distinct ML node ids per stage.
pub const MAX_NODES: usize = NO_NODE as usize;
/// Longest artifact vector accepted (production vectors are 24 bytes).
pub const MAX_VECTOR_LEN: usize = 4096;
/// Longest record body.
pub const MAX_BODY_LEN: usize = 1 + 4 + 2 + MAX_VECTOR_LEN;

/// The log header bytes.
pub fn log_header() -> [u8; LOG_HEADER_LEN as usize] {
    let mut h = [0u8; LOG_HEADER_LEN as usize];
    h[..8].copy_from_slice(LOG_MAGIC);
    h[8..12].copy_from_slice(&LOG_VERSION.to_le_bytes());
    h
}

/// Checks a log header.
pub fn check_log_header(bytes: &[u8]) -> Result<(), FormatError> {
    if bytes.len() < LOG_HEADER_LEN as usize || &bytes[..8] != LOG_MAGIC {
        return Err(FormatError::NotALog);
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    if version != LOG_VERSION {
        return Err(FormatError::Version(version));
    }
    Ok(())
}

/// Appends a framed record with `body` to `out`.
fn push_record(out: &mut Vec<u8>, body: &[&[u8]]) {
    let len: usize = body.iter().map(|b| b.len()).sum();
    let start = out.len();
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    for part in body {
        out.extend_from_slice(part);
    }
    let crc = crc32c::crc32c(&out[start + RECORD_HEADER_LEN..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Appends a node-declaration record.
pub fn encode_node(out: &mut Vec<u8>, index: u16, id: &str) {
    push_record(out, &[&[KIND_NODE], &index.to_le_bytes(), id.as_bytes()]);
}

/// Appends an artifact record.
pub fn encode_artifact(out: &mut Vec<u8>, nonce: i32, node: u16, vector: &[u8]) {
    push_record(
        out,
        &[
            &[KIND_ARTIFACT],
            &nonce.to_le_bytes(),
            &node.to_le_bytes(),
            vector,
        ],
    );
}

/// Length of the framed artifact record of a vector.
pub fn artifact_record_len(vector_len: usize) -> usize {
    RECORD_HEADER_LEN + 1 + 4 + 2 + vector_len
}

/// A decoded record body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    /// A node declaration.
    Node {
        /// Index artifact records use.
        index: u16,
        /// The ML node id.
        id: &'a str,
    },
    /// An artifact.
    Artifact {
        /// The nonce.
        nonce: i32,
        /// Node index or [`NO_NODE`].
        node: u16,
        /// Vector bytes.
        vector: &'a [u8],
    },
}

/// Why bytes are not a valid record or file.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FormatError {
    /// Fewer bytes than the record needs (a torn write at the end of the log).
    #[error("incomplete record ({have} of {need} bytes)")]
    Incomplete {
        /// Bytes present.
        have: usize,
        /// Bytes the record needs.
        need: usize,
    },
    /// A length field no writer produces.
    #[error("record body length {0} is out of range")]
    BadLength(u32),
    /// The checksum does not match.
    #[error("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// Stored CRC32C.
        stored: u32,
        /// CRC32C of the bytes read.
        computed: u32,
    },
    /// A body that does not decode.
    #[error("malformed record body: {0}")]
    Body(&'static str),
    /// The file does not start with the log magic.
    #[error("not an artifact log (bad magic)")]
    NotALog,
    /// A log version this build does not know.
    #[error("artifact log version {0} is not supported (this build reads version 1)")]
    Version(u32),
    /// The meta file is damaged.
    #[error("metadata file is damaged: {0}")]
    Meta(&'static str),
}

/// Decodes the record at the start of `bytes`; returns it with its framed length.
pub fn decode_record(bytes: &[u8]) -> Result<(Record<'_>, usize), FormatError> {
    if bytes.len() < RECORD_HEADER_LEN {
        return Err(FormatError::Incomplete {
            have: bytes.len(),
            need: RECORD_HEADER_LEN,
        });
    }
    let len = u32::from_le_bytes(bytes[..4].try_into().unwrap());
    if len == 0 || len as usize > MAX_BODY_LEN {
        return Err(FormatError::BadLength(len));
    }
    let total = RECORD_HEADER_LEN + len as usize;
    if bytes.len() < total {
        return Err(FormatError::Incomplete {
            have: bytes.len(),
            need: total,
        });
    }
    let stored = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
    let body = &bytes[RECORD_HEADER_LEN..total];
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(FormatError::Checksum { stored, computed });
    }
    Ok((decode_body(body)?, total))
}

fn decode_body(body: &[u8]) -> Result<Record<'_>, FormatError> {
    match body[0] {
        KIND_NODE => {
            if body.len() < 4 || body.len() > 3 + MAX_NODE_ID_LEN {
                return Err(FormatError::Body("node id length out of range"));
            }
            let index = u16::from_le_bytes([body[1], body[2]]);
            let id = std::str::from_utf8(&body[3..])
                .map_err(|_| FormatError::Body("node id is not UTF-8"))?;
            if index == NO_NODE {
                return Err(FormatError::Body("node index 0xFFFF is reserved"));
            }
            Ok(Record::Node { index, id })
        }
        KIND_ARTIFACT => {
            if body.len() < 8 {
                return Err(FormatError::Body("artifact record without a vector"));
            }
            Ok(Record::Artifact {
                nonce: i32::from_le_bytes(body[1..5].try_into().unwrap()),
                node: u16::from_le_bytes([body[5], body[6]]),
                vector: &body[7..],
            })
        }
        _ => Err(FormatError::Body("unknown record kind")),
    }
}

/// The last flushed snapshot, as stored in the meta file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Leaves covered by the snapshot.
    pub flushed_count: u64,
    /// Log bytes covered (header included).
    pub flushed_bytes: u64,
    /// Root at `flushed_count` (`None` when 0).
    pub root: Option<Hash>,
}

impl Meta {
    /// The state of a new, empty store.
    pub fn empty() -> Self {
        Self {
            flushed_count: 0,
            flushed_bytes: LOG_HEADER_LEN,
            root: None,
        }
    }

    /// The 60 meta bytes.
    pub fn encode(&self) -> [u8; META_LEN] {
        let mut b = [0u8; META_LEN];
        b[..8].copy_from_slice(META_MAGIC);
        b[8..16].copy_from_slice(&self.flushed_count.to_le_bytes());
        b[16..24].copy_from_slice(&self.flushed_bytes.to_le_bytes());
        if let Some(root) = self.root {
            b[24..56].copy_from_slice(&root);
        }
        let crc = crc32c::crc32c(&b[..56]);
        b[56..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses and checks meta bytes.
    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        if b.len() != META_LEN {
            return Err(FormatError::Meta("wrong length"));
        }
        if &b[..8] != META_MAGIC {
            return Err(FormatError::Meta("bad magic or unsupported version"));
        }
        let stored = u32::from_le_bytes(b[56..60].try_into().unwrap());
        if stored != crc32c::crc32c(&b[..56]) {
            return Err(FormatError::Meta("checksum mismatch"));
        }
        let flushed_count = u64::from_le_bytes(b[8..16].try_into().unwrap());
        let flushed_bytes = u64::from_le_bytes(b[16..24].try_into().unwrap());
        let root: Hash = b[24..56].try_into().unwrap();
        if flushed_bytes < LOG_HEADER_LEN {
            return Err(FormatError::Meta(
                "flushed byte count below the header length",
            ));
        }
        Ok(Self {
            flushed_count,
            flushed_bytes,
            root: (flushed_count > 0).then_some(root),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let mut buf = Vec::new();
        encode_node(&mut buf, 0, "node-a");
        encode_artifact(&mut buf, -5, 0, &[1, 2, 3]);
        encode_artifact(&mut buf, 7, NO_NODE, &[9; 24]);
        let (r, n1) = decode_record(&buf).unwrap();
        assert_eq!(
            r,
            Record::Node {
                index: 0,
                id: "node-a"
            }
        );
        let (r, n2) = decode_record(&buf[n1..]).unwrap();
        assert_eq!(
            r,
            Record::Artifact {
                nonce: -5,
                node: 0,
                vector: &[1, 2, 3]
            }
        );
        assert_eq!(n2, artifact_record_len(3));
        let (r, n3) = decode_record(&buf[n1 + n2..]).unwrap();
        assert_eq!(
            r,
            Record::Artifact {
                nonce: 7,
                node: NO_NODE,
                vector: &[9; 24]
            }
        );
        assert_eq!(n1 + n2 + n3, buf.len());
    }

    #[test]
    fn damaged_records_are_rejected() {
        let mut buf = Vec::new();
        encode_artifact(&mut buf, 1, 0, &[1, 2, 3]);
        for cut in 0..buf.len() {
            assert!(matches!(
                decode_record(&buf[..cut]),
                Err(FormatError::Incomplete { .. })
            ));
        }
        for i in RECORD_HEADER_LEN..buf.len() {
            let mut b = buf.clone();
            b[i] ^= 0x10;
            assert!(
                matches!(decode_record(&b), Err(FormatError::Checksum { .. })),
                "byte {i}"
            );
        }
        let mut b = buf.clone();
        b[..4].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(decode_record(&b), Err(FormatError::BadLength(0)));
        assert!(matches!(
            decode_record(&[0u8; 64]),
            Err(FormatError::BadLength(0))
        ));
    }

    #[test]
    fn meta_round_trips_and_detects_damage() {
        let m = Meta {
            flushed_count: 3,
            flushed_bytes: 200,
            root: Some([7; 32]),
        };
        let b = m.encode();
        assert_eq!(Meta::decode(&b).unwrap(), m);
        assert_eq!(
            Meta::decode(&Meta::empty().encode()).unwrap(),
            Meta::empty()
        );
        for i in 0..META_LEN {
            let mut c = b;
            c[i] ^= 1;
            assert!(Meta::decode(&c).is_err(), "byte {i}");
        }
        assert!(Meta::decode(&b[..59]).is_err());
    }

    #[test]
    fn header() {
        check_log_header(&log_header()).unwrap();
        assert_eq!(
            check_log_header(b"garbage garbage!"),
            Err(FormatError::NotALog)
        );
        let mut h = log_header();
        h[8] = 2;
        assert_eq!(check_log_header(&h), Err(FormatError::Version(2)));
    }
}
