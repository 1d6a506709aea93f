//! Wire formats: the canonical binary block encoding and the application channel's
//! messages (block relay, block fetch, peer hellos, transaction gossip).
//!
//! Every decoder is strict: sizes are bounded before anything is allocated, and trailing
//! bytes are rejected, so `encode(decode(b)) == b` for every accepted `b`.

use poc_chain::block::{Block, Header};
use poc_chain::tx::MAX_TX_BYTES;

/// Most transactions in one block.
pub const MAX_BLOCK_TXS: usize = poc_chain::block::MAX_BLOCK_TXS;
/// Most transaction bytes in one block.
pub const MAX_BLOCK_BYTES: usize = poc_chain::block::MAX_BLOCK_BYTES;
/// Most bytes of blocks in one fetch response.
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;
/// Most blocks in one fetch response.
pub const MAX_RESPONSE_BLOCKS: u32 = 512;
/// Most bytes in one application message (a full block plus framing).
pub const MAX_MESSAGE_BYTES: usize = MAX_BLOCK_BYTES + 4 * MAX_BLOCK_TXS + 1024;

const BLOCK_VERSION: u8 = 1;

/// Why bytes do not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Ran out of bytes.
    #[error("truncated at byte {0}")]
    Truncated(usize),
    /// Bytes left over.
    #[error("{0} trailing bytes")]
    Trailing(usize),
    /// A field is out of range.
    #[error("{0}")]
    Invalid(&'static str),
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.b.len() - self.at < n {
            return Err(CodecError::Truncated(self.at));
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn i64(&mut self) -> Result<i64, CodecError> {
        Ok(self.u64()? as i64)
    }
    fn h32(&mut self) -> Result<[u8; 32], CodecError> {
        Ok(self.take(32)?.try_into().expect("32 bytes"))
    }
    fn end(&self) -> Result<(), CodecError> {
        match self.b.len() - self.at {
            0 => Ok(()),
            n => Err(CodecError::Trailing(n)),
        }
    }
    fn rest(&self) -> usize {
        self.b.len() - self.at
    }
}

/// Encodes a block: version, length-prefixed chain id, height, time, the three header
/// hashes, then the transactions, each length-prefixed.
pub fn encode_block(b: &Block) -> Vec<u8> {
    let h = &b.header;
    let size: usize = b.txs.iter().map(|t| t.len() + 4).sum();
    let mut out = Vec::with_capacity(128 + h.chain_id.len() + size);
    out.push(BLOCK_VERSION);
    out.extend_from_slice(&(h.chain_id.len() as u16).to_be_bytes());
    out.extend_from_slice(h.chain_id.as_bytes());
    out.extend_from_slice(&h.height.to_be_bytes());
    out.extend_from_slice(&h.time.to_be_bytes());
    out.extend_from_slice(&h.prev_hash);
    out.extend_from_slice(&h.tx_root);
    out.extend_from_slice(&h.app_hash);
    out.extend_from_slice(&(b.txs.len() as u32).to_be_bytes());
    for t in &b.txs {
        out.extend_from_slice(&(t.len() as u32).to_be_bytes());
        out.extend_from_slice(t);
    }
    out
}

fn read_block(r: &mut Reader<'_>) -> Result<Block, CodecError> {
    if r.u8()? != BLOCK_VERSION {
        return Err(CodecError::Invalid("unknown block version"));
    }
    let n = r.u16()? as usize;
    if n == 0 || n > 64 {
        return Err(CodecError::Invalid("chain id must be 1..=64 bytes"));
    }
    let chain_id = std::str::from_utf8(r.take(n)?)
        .map_err(|_| CodecError::Invalid("chain id is not UTF-8"))?
        .to_owned();
    let height = r.i64()?;
    if height < 1 {
        return Err(CodecError::Invalid("height must be at least 1"));
    }
    let time = r.i64()?;
    let prev_hash = r.h32()?;
    let tx_root = r.h32()?;
    let app_hash = r.h32()?;
    let count = r.u32()? as usize;
    if count > MAX_BLOCK_TXS {
        return Err(CodecError::Invalid("too many transactions in the block"));
    }
    let mut txs = Vec::with_capacity(count.min(r.rest() / 4));
    let mut total = 0;
    for _ in 0..count {
        let len = r.u32()? as usize;
        if len == 0 || len > MAX_TX_BYTES {
            return Err(CodecError::Invalid("transaction size out of range"));
        }
        total += len;
        if total > MAX_BLOCK_BYTES {
            return Err(CodecError::Invalid(
                "block transactions exceed the size limit",
            ));
        }
        txs.push(r.take(len)?.to_vec());
    }
    Ok(Block {
        header: Header {
            chain_id,
            height,
            time,
            prev_hash,
            tx_root,
            app_hash,
        },
        txs,
    })
}

/// Decodes a block (strict).
pub fn decode_block(bytes: &[u8]) -> Result<Block, CodecError> {
    let mut r = Reader { b: bytes, at: 0 };
    let b = read_block(&mut r)?;
    r.end()?;
    Ok(b)
}

/// A message on the application channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wire {
    /// A proposed (or forwarded) block.
    Block(Vec<u8>),
    /// Asks for the block with this hash and up to `max - 1` of its ancestors.
    Request {
        /// Block hash.
        digest: [u8; 32],
        /// Most blocks wanted.
        max: u32,
    },
    /// Blocks, newest first, each the parent of the one before.
    Response(Vec<Vec<u8>>),
    /// Sent every second: the sender's committed height and highest view.
    Hello {
        /// Committed height.
        height: i64,
        /// Highest view seen.
        view: u64,
    },
    /// Transactions a client submitted to the sender.
    Txs(Vec<Vec<u8>>),
}

fn put_list(out: &mut Vec<u8>, items: &[Vec<u8>]) {
    out.extend_from_slice(&(items.len() as u32).to_be_bytes());
    for i in items {
        out.extend_from_slice(&(i.len() as u32).to_be_bytes());
        out.extend_from_slice(i);
    }
}

fn read_list(
    r: &mut Reader<'_>,
    max_items: usize,
    max_item: usize,
) -> Result<Vec<Vec<u8>>, CodecError> {
    let n = r.u32()? as usize;
    if n > max_items {
        return Err(CodecError::Invalid("too many items"));
    }
    let mut out = Vec::with_capacity(n.min(r.rest() / 4));
    for _ in 0..n {
        let len = r.u32()? as usize;
        if len > max_item {
            return Err(CodecError::Invalid("item too large"));
        }
        out.push(r.take(len)?.to_vec());
    }
    Ok(out)
}

impl Wire {
    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Wire::Block(b) => {
                out.push(0);
                out.extend_from_slice(b);
            }
            Wire::Request { digest, max } => {
                out.push(1);
                out.extend_from_slice(digest);
                out.extend_from_slice(&max.to_be_bytes());
            }
            Wire::Response(blocks) => {
                out.push(2);
                put_list(&mut out, blocks);
            }
            Wire::Hello { height, view } => {
                out.push(3);
                out.extend_from_slice(&height.to_be_bytes());
                out.extend_from_slice(&view.to_be_bytes());
            }
            Wire::Txs(txs) => {
                out.push(4);
                put_list(&mut out, txs);
            }
        }
        out
    }

    /// Decodes a message (strict; blocks inside are decoded later, by whoever needs them).
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(CodecError::Invalid("message too large"));
        }
        let mut r = Reader { b: bytes, at: 0 };
        let w = match r.u8()? {
            0 => {
                let rest = r.take(r.rest())?;
                Wire::Block(rest.to_vec())
            }
            1 => Wire::Request {
                digest: r.h32()?,
                max: r.u32()?,
            },
            2 => Wire::Response(read_list(
                &mut r,
                MAX_RESPONSE_BLOCKS as usize,
                MAX_MESSAGE_BYTES,
            )?),
            3 => Wire::Hello {
                height: r.i64()?,
                view: r.u64()?,
            },
            4 => Wire::Txs(read_list(&mut r, MAX_BLOCK_TXS, MAX_TX_BYTES)?),
            _ => return Err(CodecError::Invalid("unknown message type")),
        };
        r.end()?;
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn block(txs: Vec<Vec<u8>>) -> Block {
        Block {
            header: Header {
                chain_id: "poc-test".into(),
                height: 7,
                time: 1_700_000_000,
                prev_hash: [1; 32],
                tx_root: poc_chain::block::tx_root(&txs),
                app_hash: [2; 32],
            },
            txs,
        }
    }

    #[test]
    fn block_round_trips_and_rejects_trailing_bytes() {
        let b = block(vec![vec![1, 2, 3], vec![4; 100]]);
        let bytes = encode_block(&b);
        assert_eq!(decode_block(&bytes).unwrap(), b);
        let mut more = bytes.clone();
        more.push(0);
        assert_eq!(decode_block(&more), Err(CodecError::Trailing(1)));
        assert!(matches!(
            decode_block(&bytes[..bytes.len() - 1]),
            Err(CodecError::Truncated(_))
        ));
    }

    #[test]
    fn oversized_counts_are_refused_before_allocating() {
        let mut bytes = encode_block(&block(vec![]));
        let n = bytes.len();
        bytes[n - 4..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            decode_block(&bytes),
            Err(CodecError::Invalid("too many transactions in the block"))
        );
        let mut w = vec![2u8];
        w.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(Wire::decode(&w).is_err());
    }

    #[test]
    fn every_message_round_trips() {
        for w in [
            Wire::Block(encode_block(&block(vec![vec![9]]))),
            Wire::Request {
                digest: [3; 32],
                max: 64,
            },
            Wire::Response(vec![vec![1, 2], vec![]]),
            Wire::Hello {
                height: 12,
                view: 40,
            },
            Wire::Txs(vec![vec![5; 10]]),
        ] {
            assert_eq!(Wire::decode(&w.encode()).unwrap(), w);
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Wire::decode(&bytes);
            if let Ok(b) = decode_block(&bytes) {
                prop_assert_eq!(encode_block(&b), bytes);
            }
        }
    }
}
