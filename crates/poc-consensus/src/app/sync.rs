//! Block sync with peers: asking for missing blocks, answering requests, taking in
//! relayed and fetched blocks within per-peer quotas, and the periodic hello.

use super::*;

pub(super) struct Peer {
    pub(super) height: i64,
    pub(super) last: SystemTime,
}

/// A block being fetched.
#[derive(Clone, Copy)]
pub(super) struct Ask {
    pub(super) first: SystemTime,
    pub(super) last: SystemTime,
    /// On the hash chain of a finalized block: what comes back is authentic.
    pub(super) finalized: bool,
}

impl<E: Clock + Spawner + Metrics> App<E> {
    pub(super) fn request(
        &mut self,
        digest: [u8; 32],
        finalized: bool,
        sender: &mut impl Sender<PublicKey = PublicKey>,
    ) {
        let now = self.context.current();
        let prev = self.asked.get(&digest).copied();
        if let Some(a) = prev {
            self.asked.get_mut(&digest).expect("present").finalized |= finalized;
            if now.duration_since(a.last).unwrap_or_default() < REFETCH_AFTER {
                return;
            }
        }
        self.asked.insert(
            digest,
            Ask {
                first: prev.map(|a| a.first).unwrap_or(now),
                last: now,
                finalized: finalized || prev.is_some_and(|a| a.finalized),
            },
        );
        // Ask the freshest peer that is ahead of us; rotate on retries by skipping the
        // last one asked only when there is another.
        let mut best: Vec<(&PublicKey, &Peer)> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.height > self.head.state.height
                    && now.duration_since(p.last).unwrap_or_default() < PEER_FRESH
            })
            .collect();
        best.sort_by_key(|(k, p)| (std::cmp::Reverse(p.height), (*k).clone()));
        let recipients = match best.len() {
            0 => Recipients::All,
            n => {
                let i = (unix_secs(now) as usize + digest[0] as usize) % n;
                Recipients::One(best[i].0.clone())
            }
        };
        let msg = Wire::Request {
            digest,
            max: MAX_RESPONSE_BLOCKS,
        }
        .encode();
        let sent = sender.send(recipients, msg, false);
        tracing::debug!(node = %self.status.public_key[..8], block = %hex::encode(&digest[..4]), peers = sent.len(), "fetching a block");
    }

    /// Marks a block to fetch on the next tick (for a verification: not known to be
    /// final, so what comes back is limited).
    pub(super) fn pending_fetch(&mut self, m: [u8; 32]) {
        let now = self.context.current();
        self.asked.entry(m).or_insert(Ask {
            first: now,
            last: UNIX_EPOCH,
            finalized: false,
        });
    }

    pub(super) fn on_wire(
        &mut self,
        from: PublicKey,
        bytes: &[u8],
        sender: &mut impl Sender<PublicKey = PublicKey>,
    ) {
        let msg = match Wire::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(peer = %hex_key(&from), "undecodable message: {e}");
                return;
            }
        };
        match msg {
            Wire::Block(b) => {
                let Ok(block) = codec::decode_block(&b) else {
                    return;
                };
                // Only blocks this node could verify soon; one far ahead is fetched when
                // it is finalized.
                let h = block.header.height;
                if h <= self.head.state.height
                    || h > self.head.state.height + 2 * MAX_SPECULATIVE_GAP
                {
                    return;
                }
                // Unasked relays must extend a block this node holds.
                let parent_height = if block.header.prev_hash == self.head.hash {
                    Some(self.head.state.height)
                } else {
                    self.blocks
                        .get(&block.header.prev_hash)
                        .map(|p| p.header.height)
                };
                if parent_height != Some(h - 1) {
                    if self.asked.contains_key(&block.header.hash()) {
                        self.remember(block, Origin::Fetched(false));
                        self.process(sender);
                    }
                    return;
                }
                self.remember(block, Origin::Relay(from));
                self.process(sender);
            }
            Wire::Request { digest, max } => {
                let blocks = self.serve(digest, max.min(MAX_RESPONSE_BLOCKS));
                tracing::debug!(node = %self.status.public_key[..8], block = %hex::encode(&digest[..4]), blocks = blocks.len(), "serving blocks");
                if !blocks.is_empty() {
                    let _ = sender.send(
                        Recipients::One(from),
                        Wire::Response(blocks).encode(),
                        false,
                    );
                }
            }
            Wire::Response(list) => {
                tracing::debug!(node = %self.status.public_key[..8], blocks = list.len(), "fetched blocks");
                self.accept_response(list);
                self.finalize(sender);
                self.process(sender);
            }
            Wire::Hello { height, view } => {
                let now = self.context.current();
                self.status.view = self.status.view.max(view);
                self.peers.insert(from, Peer { height, last: now });
            }
            Wire::Txs(txs) => {
                let head = self.services.head();
                let mut pool = self.services.mempool.lock().expect("mempool lock");
                for t in txs {
                    let _ = pool.add_from_peer(&head.state, t);
                }
            }
        }
    }

    /// Keeps the blocks of a fetch response that form a hash chain from a block we asked
    /// for; the rest is ignored.
    pub(super) fn accept_response(&mut self, list: Vec<Vec<u8>>) {
        let mut want: Option<([u8; 32], bool)> = None;
        for bytes in list {
            let Ok(b) = codec::decode_block(&bytes) else {
                return;
            };
            let d = b.header.hash();
            let finalized = match want {
                None => match self.asked.get(&d) {
                    Some(a) => a.finalized,
                    None => return,
                },
                Some((w, f)) if w == d => f,
                Some(_) => return,
            };
            let h = b.header.height;
            // Blocks not known to be final are only taken near the head.
            if h <= self.head.state.height
                || (!finalized && h > self.head.state.height + 2 * MAX_SPECULATIVE_GAP)
            {
                return;
            }
            self.asked.remove(&d);
            want = Some((b.header.prev_hash, finalized));
            if self.remember(b, Origin::Fetched(finalized)).is_none() {
                return;
            }
        }
    }

    /// Up to `max` blocks from `digest` back through its ancestors: unfinalized ones from
    /// memory, finalized ones from the database.
    pub(super) fn serve(&self, digest: [u8; 32], max: u32) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut bytes = 0;
        // Adds a block unless the response is full; false once it is.
        let mut push = |b: &Block| {
            if out.len() >= max as usize {
                return false;
            }
            let e = codec::encode_block(b);
            if !out.is_empty() && bytes + e.len() > codec::MAX_RESPONSE_BYTES {
                return false;
            }
            bytes += e.len();
            out.push(e);
            true
        };
        let mut cur = digest;
        while let Some(b) = self.blocks.get(&cur) {
            if !push(b) {
                return out;
            }
            cur = b.header.prev_hash;
        }
        if let Some(db) = self.services.db()
            && let Ok(Some(mut h)) = db.height_of(&cur)
        {
            while h >= 1 {
                let Ok(Some(b)) = db.block(h) else { break };
                if !push(&b) {
                    break;
                }
                h -= 1;
            }
        }
        out
    }

    pub(super) fn tick(&mut self, sender: &mut impl Sender<PublicKey = PublicKey>) {
        // Blocks we still miss: ask again (rate-limited per block); give up on one nobody
        // served for a minute (an abandoned fork).
        let now = self.context.current();
        self.asked
            .retain(|_, a| now.duration_since(a.first).unwrap_or_default() < GIVE_UP);
        let missing: Vec<([u8; 32], bool)> = self
            .asked
            .iter()
            .filter(|(d, _)| !self.blocks.contains_key(*d))
            .map(|(d, a)| (*d, a.finalized))
            .collect();
        for (d, finalized) in missing {
            self.request(d, finalized, sender);
        }
        self.finalize(sender);
        self.process(sender);
        let fresh = self
            .services
            .mempool
            .lock()
            .expect("mempool lock")
            .take_fresh();
        let mut batch = Vec::new();
        let mut size = 0;
        for t in fresh {
            size += t.len() + 4;
            batch.push(t);
            if size > 1024 * 1024 || batch.len() >= MAX_BLOCK_TXS {
                let _ = sender.send(
                    Recipients::All,
                    Wire::Txs(std::mem::take(&mut batch)).encode(),
                    false,
                );
                size = 0;
            }
        }
        if !batch.is_empty() {
            let _ = sender.send(Recipients::All, Wire::Txs(batch).encode(), false);
        }
    }

    pub(super) fn hello(&mut self, sender: &mut impl Sender<PublicKey = PublicKey>) {
        let height = self.head.state.height;
        let _ = sender.send(
            Recipients::All,
            Wire::Hello {
                height,
                view: self.status.view,
            }
            .encode(),
            false,
        );
        self.publish();
        *self.services.engine_metrics.write().expect("metrics lock") = self.context.encode();
    }
}
