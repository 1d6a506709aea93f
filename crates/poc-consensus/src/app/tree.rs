//! The block tree: blocks known here by digest, each executed on top of its parent
//! (verification by execution), bounded in memory, persisted while unfinalized, pruned
//! below the committed head.

use super::*;

/// A block executed on top of its parent.
pub(super) struct Executed {
    pub(super) state: ChainState,
    pub(super) result: BlockResult,
}

pub(super) enum Exec {
    Ready,
    Missing([u8; 32]),
    Invalid,
}

/// Why a block is being taken in.
#[derive(Clone)]
pub(super) enum Origin {
    /// Built here.
    Own,
    /// A peer relayed it unasked.
    Relay(PublicKey),
    /// Fetched; `true` when it hash-links to a finalized block.
    Fetched(bool),
}

impl<E: Clock + Spawner + Metrics> App<E> {
    /// The state after `digest`, if executed (or the committed head).
    pub(super) fn state_of(&self, digest: &[u8; 32]) -> Option<&ChainState> {
        if *digest == self.head.hash {
            Some(&self.head.state)
        } else {
            self.executed.get(digest).map(|e| &e.state)
        }
    }

    /// Executes `digest` and any unexecuted ancestors down to a known state.
    pub(super) fn exec(&mut self, digest: [u8; 32]) -> Exec {
        let mut chain = Vec::new();
        let mut cur = digest;
        while self.state_of(&cur).is_none() {
            if self.invalid.contains(&cur) {
                return Exec::Invalid;
            }
            let Some(b) = self.blocks.get(&cur) else {
                return Exec::Missing(cur);
            };
            if b.header.height <= self.head.state.height {
                // Below the committed head and not on its chain.
                return Exec::Invalid;
            }
            chain.push(cur);
            cur = b.header.prev_hash;
        }
        for d in chain.into_iter().rev() {
            let block = Arc::clone(&self.blocks[&d]);
            let parent = self
                .state_of(&block.header.prev_hash)
                .expect("parent executed just before");
            let mut state = parent.clone();
            match state.apply_block_with(&block, &*self.signatures) {
                Ok(result) => {
                    self.executed.insert(d, Executed { state, result });
                }
                Err(e) => {
                    tracing::warn!(
                        height = block.header.height,
                        hash = %hex::encode(d),
                        "block rejected: {e}"
                    );
                    self.invalid.insert(d);
                    return Exec::Invalid;
                }
            }
        }
        Exec::Ready
    }

    /// Holds a block if it is well-formed and within its origin's limits; `None` when it
    /// is not held. The body must match the header (chain id, tx root), so a forged body
    /// can never be stored under an honest block's hash.
    pub(super) fn remember(&mut self, block: Block, origin: Origin) -> Option<[u8; 32]> {
        let d = block.header.hash();
        if self.blocks.contains_key(&d) {
            return Some(d);
        }
        if block.header.chain_id != self.head.state.chain_id
            || poc_chain::block::tx_root(&block.txs) != block.header.tx_root
        {
            return None;
        }
        let size = block_bytes(&block);
        let limited = matches!(origin, Origin::Relay(_) | Origin::Fetched(false));
        if limited
            && (self.blocks.len() >= MAX_BLOCKS || self.blocks_bytes + size > MAX_BLOCK_MEMORY)
        {
            tracing::warn!("unverified block memory is full; a block is dropped");
            return None;
        }
        if let Origin::Relay(peer) = &origin {
            let (n, bytes) = self.per_peer.get(peer).copied().unwrap_or((0, 0));
            if n >= MAX_RELAYED_PER_PEER || bytes + size > MAX_RELAYED_BYTES_PER_PEER {
                tracing::debug!(peer = %hex_key(peer), "relay quota full; a block is dropped");
                return None;
            }
            self.per_peer.insert(peer.clone(), (n + 1, bytes + size));
            self.relayed.insert(d, peer.clone());
        }
        self.blocks_bytes += size;
        self.seen_at.insert(d, self.context.current());
        self.blocks.insert(d, Arc::new(block));
        Some(d)
    }

    pub(super) fn persist(&self, d: &[u8; 32]) {
        if let (Some(db), Some(b)) = (self.services.db(), self.blocks.get(d))
            && let Err(e) = db.put_pending(d, b.header.height, &codec::encode_block(b))
        {
            tracing::warn!("cannot store an unfinalized block: {e}");
        }
    }

    pub(super) fn prune(&mut self) {
        let h = self.head.state.height;
        let dead: Vec<[u8; 32]> = self
            .blocks
            .iter()
            .filter(|(_, b)| b.header.height <= h)
            .map(|(d, _)| *d)
            .collect();
        for d in dead {
            if let Some(b) = self.blocks.remove(&d) {
                let size = block_bytes(&b);
                self.blocks_bytes -= size;
                if let Some(peer) = self.relayed.remove(&d)
                    && let Some(q) = self.per_peer.get_mut(&peer)
                {
                    q.0 -= 1;
                    q.1 -= size;
                }
            }
            self.executed.remove(&d);
            self.seen_at.remove(&d);
            self.asked.remove(&d);
        }
        let blocks = &self.blocks;
        self.invalid.retain(|d| blocks.contains_key(d));
        self.asked.retain(|d, _| !blocks.contains_key(d));
    }
}
