//! Blocks: the header, the transaction root, the block rules (size limits) and block
//! execution: transactions, then EndBlock ([`crate::end_block`],
//! `docs/protocol/chain-and-api.md` §1.4), then the app hash. A pure function of
//! `(state, block)`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ante;
use crate::end_block::EndBlockEvent;
use crate::keys::{FreshVerifier, SignatureVerifier};
use crate::state::{BlockContext, ChainState};
use crate::tx::TxResult;

/// Most transactions one block may carry.
pub const MAX_BLOCK_TXS: usize = 2000;
/// Most transaction bytes one block may carry.
pub const MAX_BLOCK_BYTES: usize = 8 * 1024 * 1024;

/// A block header. The app hash is the state's after the *previous* block (as in
/// Tendermint), so the hash is known before execution and is what the PoC logic sees as
/// `HeaderInfo().Hash` (confirmation trigger, seed hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub chain_id: String,
    /// Height (first block: 1).
    #[serde(with = "crate::json::i64_string")]
    pub height: i64,
    /// Unix seconds.
    #[serde(with = "crate::json::i64_string")]
    pub time: i64,
    /// Hash of the previous block (zeros for the first).
    #[serde(with = "crate::json::hex32")]
    pub prev_hash: [u8; 32],
    /// Root of the transactions ([`tx_root`]).
    #[serde(with = "crate::json::hex32")]
    pub tx_root: [u8; 32],
    /// App hash after the previous block.
    #[serde(with = "crate::json::hex32")]
    pub app_hash: [u8; 32],
}

impl Header {
    /// The canonical encoding hashed into the block hash: a version tag, then the
    /// length-prefixed chain id, big-endian height and time, and the three hashes.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(160);
        b.extend_from_slice(b"poc-chain/header/v1");
        b.extend_from_slice(&(self.chain_id.len() as u32).to_be_bytes());
        b.extend_from_slice(self.chain_id.as_bytes());
        b.extend_from_slice(&self.height.to_be_bytes());
        b.extend_from_slice(&self.time.to_be_bytes());
        b.extend_from_slice(&self.prev_hash);
        b.extend_from_slice(&self.tx_root);
        b.extend_from_slice(&self.app_hash);
        b
    }

    /// SHA-256 of the canonical header.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.canonical_bytes()).into()
    }
}

/// Root of a block's transactions: SHA-256 over the count and each transaction's SHA-256.
pub fn tx_root(txs: &[Vec<u8>]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((txs.len() as u64).to_be_bytes());
    for t in txs {
        h.update(Sha256::digest(t));
    }
    h.finalize().into()
}

/// A block: header and raw signed transactions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub header: Header,
    /// Encoded transactions.
    #[serde(with = "b64_list")]
    pub txs: Vec<Vec<u8>>,
}

/// What executing a block produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockResult {
    /// One result per transaction.
    pub tx_results: Vec<TxResult>,
    /// What EndBlock did (not part of consensus). Results stored before the events were
    /// typed carry them as text; those read back as no events (they are only ever
    /// logged when the block commits).
    #[serde(deserialize_with = "typed_events")]
    pub events: Vec<EndBlockEvent>,
    /// App hash after the block.
    #[serde(with = "crate::json::hex32")]
    pub app_hash: [u8; 32],
}

/// Why a block cannot be applied at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// Header does not continue the chain.
    #[error("block {got} does not follow height {have}")]
    Height {
        /// State height.
        have: i64,
        /// Block height.
        got: i64,
    },
    /// Wrong chain.
    #[error("block is for chain {0:?}")]
    ChainId(String),
    /// Header's app hash is not the state's.
    #[error("header app hash does not match the state")]
    AppHash,
    /// Tx root mismatch.
    #[error("tx root does not match the transactions")]
    TxRoot,
    /// More transactions than [`MAX_BLOCK_TXS`].
    #[error("block carries {0} transactions, at most {MAX_BLOCK_TXS} are allowed")]
    TooManyTxs(usize),
    /// More transaction bytes than [`MAX_BLOCK_BYTES`].
    #[error("block carries {0} transaction bytes, at most {MAX_BLOCK_BYTES} are allowed")]
    TooLarge(usize),
    /// Time went backwards.
    #[error("block time {got} is before the previous block's {have}")]
    Time {
        /// Previous.
        have: i64,
        /// This.
        got: i64,
    },
}

impl ChainState {
    /// Validates and executes a block, verifying every signature afresh; the state is
    /// unchanged on `Err`.
    pub fn apply_block(&mut self, block: &Block) -> Result<BlockResult, BlockError> {
        self.apply_block_with(block, &FreshVerifier)
    }

    /// [`ChainState::apply_block`] with the node's signature verifier (a memo of what its
    /// mempool already checked).
    pub fn apply_block_with(
        &mut self,
        block: &Block,
        verifier: &dyn SignatureVerifier,
    ) -> Result<BlockResult, BlockError> {
        let hd = &block.header;
        if hd.height != self.height + 1 {
            return Err(BlockError::Height {
                have: self.height,
                got: hd.height,
            });
        }
        if hd.chain_id != self.chain_id {
            return Err(BlockError::ChainId(hd.chain_id.clone()));
        }
        if hd.app_hash != self.app_hash {
            return Err(BlockError::AppHash);
        }
        if block.txs.len() > MAX_BLOCK_TXS {
            return Err(BlockError::TooManyTxs(block.txs.len()));
        }
        let bytes: usize = block.txs.iter().map(Vec::len).sum();
        if bytes > MAX_BLOCK_BYTES {
            return Err(BlockError::TooLarge(bytes));
        }
        if hd.tx_root != tx_root(&block.txs) {
            return Err(BlockError::TxRoot);
        }
        if hd.time < self.time {
            return Err(BlockError::Time {
                have: self.time,
                got: hd.time,
            });
        }
        let ctx = BlockContext {
            height: hd.height,
            time: hd.time,
            hash: hd.hash(),
        };
        let tx_results = block
            .txs
            .iter()
            .map(|t| ante::deliver_tx(self, &ctx, t, verifier))
            .collect();
        let events = self.end_block(&ctx);
        self.height = ctx.height;
        self.time = ctx.time;
        self.app_hash = self.compute_app_hash();
        Ok(BlockResult {
            tx_results,
            events,
            app_hash: self.app_hash,
        })
    }
}

/// Reads the typed events of a stored result, skipping the text lines of older results.
fn typed_events<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<EndBlockEvent>, D::Error> {
    let raw = Vec::<serde_json::Value>::deserialize(d)?;
    raw.into_iter()
        .filter(|v| !v.is_string())
        .map(serde_json::from_value)
        .collect::<Result<_, _>>()
        .map_err(serde::de::Error::custom)
}

mod b64_list {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|t| STANDARD.encode(t)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        Vec::<String>::deserialize(d)?
            .into_iter()
            .map(|s| STANDARD.decode(s).map_err(serde::de::Error::custom))
            .collect()
    }
}

impl ChainState {
    /// The next block on top of this state: height + 1, the given time (never before the
    /// last block's), the previous block's hash and these transactions.
    pub fn build_block(&self, prev_hash: [u8; 32], time: i64, txs: Vec<Vec<u8>>) -> Block {
        Block {
            header: Header {
                chain_id: self.chain_id.clone(),
                height: self.height + 1,
                time: time.max(self.time),
                prev_hash,
                tx_root: tx_root(&txs),
                app_hash: self.app_hash,
            },
            txs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_results_read_back_with_typed_or_old_text_events() {
        let typed = BlockResult {
            tx_results: vec![],
            events: vec![EndBlockEvent::EpochEffective { epoch: 3 }],
            app_hash: [7; 32],
        };
        let json = serde_json::to_string(&typed).unwrap();
        assert_eq!(serde_json::from_str::<BlockResult>(&json).unwrap(), typed);
        let old = format!(
            r#"{{"tx_results":[],"events":["epoch 3 is now effective"],"app_hash":"{}"}}"#,
            hex::encode([7u8; 32])
        );
        let back: BlockResult = serde_json::from_str(&old).unwrap();
        assert_eq!(back.app_hash, [7; 32]);
        assert!(back.events.is_empty());
        let bad = r#"{"tx_results":[],"events":[{"type":"no_such_event"}],"app_hash":"00"}"#;
        assert!(serde_json::from_str::<BlockResult>(bad).is_err());
    }
}
