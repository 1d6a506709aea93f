//! The mempool: transactions that passed CheckTx, in arrival order, with per-account
//! sequence tracking so a sender can queue several transactions for one block.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use poc_chain::ante;
use poc_chain::error::{ErrorKind, err};
use poc_chain::keys::SignatureMemo;
use poc_chain::state::ChainState;
use poc_chain::tx::{self, TxResult};

/// Most transactions waiting.
pub const MAX_TXS: usize = 20_000;
/// Most bytes waiting.
pub const MAX_BYTES: usize = 64 * 1024 * 1024;

/// Pending transactions.
#[derive(Debug, Default)]
pub struct Mempool {
    txs: VecDeque<(String, Vec<u8>)>,
    hashes: HashSet<String>,
    next_seq: HashMap<String, u64>,
    bytes: usize,
    /// Accepted from a client and not yet handed to the gossip (replicated mode only).
    fresh: Vec<Vec<u8>>,
    gossip: bool,
    /// Signatures this node already verified: CheckTx, every recheck and the block's
    /// DeliverTx share it, so each transaction's signature is verified once.
    signatures: Arc<SignatureMemo>,
}

impl Mempool {
    /// The signature memo the node's checks share (pass it to
    /// [`ChainState::apply_block_with`]).
    pub fn signatures(&self) -> Arc<SignatureMemo> {
        Arc::clone(&self.signatures)
    }

    /// Transactions waiting.
    pub fn len(&self) -> usize {
        self.txs.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }

    /// Starts remembering client transactions for [`Mempool::take_fresh`] (a replicated
    /// node gossips them to its peers).
    pub fn enable_gossip(&mut self) {
        self.gossip = true;
    }

    /// Client transactions accepted since the last call.
    pub fn take_fresh(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.fresh)
    }

    /// CheckTx for a transaction a client sent; on success it is queued (and, on a
    /// replicated node, gossiped).
    pub fn add(&mut self, state: &ChainState, bytes: Vec<u8>) -> TxResult {
        let copy = self.gossip.then(|| bytes.clone());
        let r = self.add_from_peer(state, bytes);
        if r.code == 0
            && let Some(b) = copy
            && self.fresh.len() < MAX_TXS
        {
            self.fresh.push(b);
        }
        r
    }

    /// Up to `max_txs` / `max_bytes` of the pending transactions, oldest first, that pass
    /// CheckTx one after the other against `state` (the state a new block builds on).
    /// Nothing is removed: finalized blocks clear the pool through [`Mempool::recheck`].
    pub fn select(&self, state: &ChainState, max_txs: usize, max_bytes: usize) -> Vec<Vec<u8>> {
        let mut next: HashMap<String, u64> = HashMap::new();
        let mut out = Vec::new();
        let mut size = 0;
        for (_, b) in &self.txs {
            if out.len() >= max_txs {
                break;
            }
            if size + b.len() > max_bytes {
                continue;
            }
            let signer = tx::decode(b).map(|t| t.signer()).ok();
            let expected = signer.as_ref().and_then(|s| next.get(s).copied());
            if let (_, Some((signer, seq))) = ante::check_tx(state, b, expected, &*self.signatures)
            {
                next.insert(signer, seq + 1);
                size += b.len();
                out.push(b.clone());
            }
        }
        out
    }

    /// CheckTx against `state` plus what is already pending; on success the transaction
    /// is queued (not gossiped again).
    pub fn add_from_peer(&mut self, state: &ChainState, bytes: Vec<u8>) -> TxResult {
        let hash = tx::tx_hash(&bytes);
        let reject = |e: poc_chain::error::ChainError| TxResult {
            txhash: hash.clone(),
            code: e.kind.code(),
            codespace: e.kind.codespace().into(),
            raw_log: e.message,
        };
        if self.hashes.contains(&hash) {
            return reject(err(
                ErrorKind::InvalidRequest,
                "transaction already in the mempool",
            ));
        }
        if self.txs.len() >= MAX_TXS || self.bytes + bytes.len() > MAX_BYTES {
            return reject(err(
                ErrorKind::InvalidRequest,
                "mempool is full; retry after the next block",
            ));
        }
        let signer = tx::decode(&bytes).map(|t| t.signer()).ok();
        let expected = signer.as_ref().and_then(|s| self.next_seq.get(s).copied());
        let (result, ok) = ante::check_tx(state, &bytes, expected, &*self.signatures);
        if let Some((signer, seq)) = ok {
            self.next_seq.insert(signer, seq + 1);
            self.bytes += bytes.len();
            self.hashes.insert(hash.clone());
            self.txs.push_back((hash, bytes));
        }
        result
    }

    /// Takes transactions for a block, oldest first.
    pub fn take(&mut self, max_txs: usize, max_bytes: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut size = 0;
        while let Some((_, b)) = self.txs.front() {
            if out.len() >= max_txs || (size + b.len() > max_bytes && !out.is_empty()) {
                break;
            }
            let (h, b) = self.txs.pop_front().expect("front exists");
            self.hashes.remove(&h);
            self.bytes -= b.len();
            size += b.len();
            out.push(b);
        }
        out
    }

    /// ReCheckTx after a block: drops what no longer passes against the new state.
    pub fn recheck(&mut self, state: &ChainState) {
        let old = std::mem::take(&mut self.txs);
        self.hashes.clear();
        self.next_seq.clear();
        self.bytes = 0;
        for (_, b) in old {
            let r = self.add_from_peer(state, b);
            if r.code != 0 {
                tracing::debug!(txhash = %r.txhash, code = r.code, "dropped from the mempool on recheck: {}", r.raw_log);
            }
        }
    }
}
