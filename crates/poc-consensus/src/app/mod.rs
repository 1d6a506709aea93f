//! The application side of consensus: proposes blocks from the mempool, verifies blocks
//! by executing them with the unchanged PoC state machine, relays and fetches blocks, and
//! commits finalized blocks in height order.
//!
//! Consensus (simplex) only orders 32-byte digests; a digest is the block's header hash,
//! which commits to the transactions (tx root), the parent (prev hash) and the parent's
//! app hash. So the finalized digest *is* the block hash the PoC logic sees.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use commonware_actor::Feedback;
use commonware_consensus::simplex::Plan;
use commonware_consensus::simplex::scheme::ed25519::Scheme;
use commonware_consensus::simplex::types::{Activity, Context};
use commonware_consensus::{Automaton, CertifiableAutomaton, Relay, Reporter, Viewable};
use commonware_cryptography::{ed25519, sha256};
use commonware_p2p::{Receiver, Recipients, Sender};
use commonware_runtime::{Clock, Metrics, Spawner};
use commonware_utils::channel::{mpsc, oneshot};
use poc_chain::block::{Block, BlockResult};
use poc_chain::keys::SignatureMemo;
use poc_chain::state::ChainState;
use poc_chain_node::status::{ConsensusStatus, PeerStatus};
use poc_chain_node::{ChainServices, Head};

use crate::codec::{self, MAX_BLOCK_BYTES, MAX_BLOCK_TXS, MAX_RESPONSE_BLOCKS, Wire};

mod ingress;
mod sync;
#[cfg(test)]
mod tests;
mod tree;

pub use ingress::{Mailbox, Message};
use sync::{Ask, Peer};
use tree::{Exec, Executed, Origin};

/// The digest consensus orders.
pub type Digest = sha256::Digest;
/// A validator identity.
pub type PublicKey = ed25519::PublicKey;
/// The context consensus hands the application.
pub type Ctx = Context<Digest, PublicKey>;

/// The genesis payload: the all-zero hash, which is also block 1's `prev_hash`.
pub const GENESIS: Digest = sha256::Digest([0; 32]);

/// How far a block's time may run ahead of the verifier's clock (or its parent's time).
pub const MAX_CLOCK_DRIFT_SECS: i64 = 10;
/// A verifier more than this many blocks behind a proposal waits for finalized blocks
/// instead of executing the whole gap speculatively.
const MAX_SPECULATIVE_GAP: i64 = 64;
/// Most unfinalized blocks held in memory.
const MAX_BLOCKS: usize = 100_000;
/// Most bytes of unverified blocks held in memory (relayed or fetched for a
/// verification). Own proposals and blocks on the path to a finalized block (authentic:
/// they hash-link to a quorum certificate) are not limited by it.
const MAX_BLOCK_MEMORY: usize = 512 * 1024 * 1024;
/// Most blocks one peer's relays may keep in memory, and their bytes.
const MAX_RELAYED_PER_PEER: usize = 256;
const MAX_RELAYED_BYTES_PER_PEER: usize = 64 * 1024 * 1024;
const TICK: Duration = Duration::from_millis(20);
const HELLO_EVERY: Duration = Duration::from_secs(1);
const REFETCH_AFTER: Duration = Duration::from_millis(500);
const PEER_FRESH: Duration = Duration::from_secs(5);
const GIVE_UP: Duration = Duration::from_secs(60);

/// How a validator behaves (anything but [`Behavior::Honest`] exists for fault tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// Follows the protocol.
    Honest,
    /// As leader, proposes blocks whose header carries a wrong app hash.
    InvalidBlocks,
}

/// Application settings.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// This validator.
    pub me: PublicKey,
    /// Size of the validator set.
    pub validators: usize,
    /// Least time between a parent block and its child.
    pub block_time: Duration,
    /// Blocks between state snapshots.
    pub snapshot_interval: i64,
    /// Honest or a test fault.
    pub behavior: Behavior,
}

/// The application actor.
pub struct App<E> {
    context: E,
    cfg: AppConfig,
    services: Arc<ChainServices>,
    head: Arc<Head>,
    rx: mpsc::UnboundedReceiver<Message>,
    blocks: HashMap<[u8; 32], Arc<Block>>,
    executed: HashMap<[u8; 32], Executed>,
    invalid: HashSet<[u8; 32]>,
    seen_at: HashMap<[u8; 32], SystemTime>,
    verifies: Vec<(Ctx, Digest, oneshot::Sender<bool>)>,
    proposals: Vec<(Ctx, oneshot::Sender<Digest>)>,
    target: Option<(u64, [u8; 32])>,
    /// Blocks being fetched.
    asked: HashMap<[u8; 32], Ask>,
    /// Who relayed each block held because of a relay.
    relayed: HashMap<[u8; 32], PublicKey>,
    /// Per peer: blocks and bytes held because of its relays.
    per_peer: HashMap<PublicKey, (usize, usize)>,
    peers: HashMap<PublicKey, Peer>,
    status: ConsensusStatus,
    latency_sum_ms: f64,
    halted: bool,
    /// When the committed head block was first seen here (paces the next proposal).
    head_seen: SystemTime,
    /// Bytes of transactions in `blocks`.
    blocks_bytes: usize,
    /// The node's signature memo, shared with its mempool: a block's transactions that
    /// were gossiped here first are not verified again when the block executes.
    signatures: Arc<SignatureMemo>,
}

/// What a block costs in memory, roughly: its transactions plus a header.
fn block_bytes(b: &Block) -> usize {
    b.txs.iter().map(|t| t.len() + 24).sum::<usize>() + 256
}

fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn hex_key(k: &PublicKey) -> String {
    hex::encode(k.as_ref())
}

impl<E: Clock + Spawner + Metrics> App<E> {
    /// Creates the actor and the mailbox consensus talks to. Unfinalized blocks remembered
    /// in the database (proposed or verified before a restart) are loaded back.
    pub fn new(context: E, cfg: AppConfig, services: Arc<ChainServices>) -> (Self, Mailbox) {
        let (tx, rx) = mpsc::unbounded_channel();
        let head = services.head();
        let mut blocks = HashMap::new();
        if let Some(db) = services.db() {
            match db.pending_blocks() {
                Ok(list) => {
                    for (hash, height, bytes) in list {
                        if height <= head.state.height {
                            continue;
                        }
                        if let Ok(b) = codec::decode_block(&bytes)
                            && b.header.hash() == hash
                        {
                            blocks.insert(hash, Arc::new(b));
                        }
                    }
                }
                Err(e) => tracing::warn!("cannot read unfinalized blocks: {e}"),
            }
        }
        let signatures = {
            let mut pool = services.mempool.lock().expect("mempool lock");
            pool.enable_gossip();
            pool.signatures()
        };
        let status = ConsensusStatus {
            engine: format!("commonware-consensus simplex {}", crate::ENGINE_VERSION),
            public_key: hex_key(&cfg.me),
            validating: true,
            validators: cfg.validators,
            ..ConsensusStatus::default()
        };
        let blocks_bytes = blocks.values().map(|b: &Arc<Block>| block_bytes(b)).sum();
        (
            Self {
                context,
                cfg,
                services,
                head,
                rx,
                blocks,
                signatures,
                executed: HashMap::new(),
                invalid: HashSet::new(),
                seen_at: HashMap::new(),
                verifies: Vec::new(),
                proposals: Vec::new(),
                target: None,
                asked: HashMap::new(),
                relayed: HashMap::new(),
                per_peer: HashMap::new(),
                peers: HashMap::new(),
                status,
                latency_sum_ms: 0.0,
                halted: false,
                head_seen: UNIX_EPOCH,
                blocks_bytes,
            },
            Mailbox { tx },
        )
    }

    /// Runs until the runtime stops.
    pub async fn run(
        mut self,
        mut sender: impl Sender<PublicKey = PublicKey>,
        mut receiver: impl Receiver<PublicKey = PublicKey>,
    ) {
        let mut next_tick = self.context.current() + TICK;
        let mut next_hello = self.context.current();
        let mut stopped = self.context.stopped();
        loop {
            commonware_macros::select! {
                _ = &mut stopped => {
                    tracing::debug!("consensus application stopping");
                    break;
                },
                m = self.rx.recv() => {
                    let Some(m) = m else { break };
                    self.handle(m, &mut sender);
                },
                r = receiver.recv() => {
                    match r {
                        Ok((from, bytes)) => self.on_wire(from, bytes.as_ref(), &mut sender),
                        Err(e) => {
                            tracing::debug!("application channel closed: {e}");
                            break;
                        }
                    }
                },
                _ = self.context.sleep_until(next_tick) => {
                    let now = self.context.current();
                    next_tick = now + TICK;
                    self.tick(&mut sender);
                    if now >= next_hello {
                        next_hello = now + HELLO_EVERY;
                        self.hello(&mut sender);
                    }
                },
            }
        }
    }

    fn handle(&mut self, m: Message, sender: &mut impl Sender<PublicKey = PublicKey>) {
        match m {
            Message::Propose { context, response } => {
                self.status.view = self.status.view.max(context.view().get());
                self.proposals.push((context, response));
                self.process(sender);
            }
            Message::Verify {
                context,
                payload,
                response,
            } => {
                self.status.view = self.status.view.max(context.view().get());
                self.verifies.push((context, payload, response));
                self.process(sender);
            }
            Message::Broadcast {
                payload,
                recipients,
            } => {
                if let Some(b) = self.blocks.get(&payload.0) {
                    let msg = Wire::Block(codec::encode_block(b)).encode();
                    let _ = sender.send(recipients, msg, true);
                }
            }
            Message::Finalized { view, payload } => {
                tracing::debug!(node = %self.status.public_key[..8], view, block = %hex::encode(&payload.0[..4]), "finalized");
                self.status.view = self.status.view.max(view);
                if self.target.is_none_or(|(v, _)| view > v) {
                    self.target = Some((view, payload.0));
                }
                self.finalize(sender);
                self.process(sender);
            }
            Message::View(v) => self.status.view = self.status.view.max(v),
        }
    }

    /// Works through waiting proposals and verifications.
    fn process(&mut self, sender: &mut impl Sender<PublicKey = PublicKey>) {
        if self.halted {
            return;
        }
        let now = self.context.current();
        let verifies = std::mem::take(&mut self.verifies);
        for (ctx, payload, response) in verifies {
            if response.is_closed() {
                continue;
            }
            match self.check(&ctx, payload.0, now) {
                Some(v) => {
                    if v {
                        self.persist(&payload.0);
                    }
                    let _ = response.send(v);
                }
                None => self.verifies.push((ctx, payload, response)),
            }
        }
        let proposals = std::mem::take(&mut self.proposals);
        for (ctx, response) in proposals {
            if response.is_closed() {
                continue;
            }
            match self.build(&ctx, now, sender) {
                Some(Some(d)) => {
                    let _ = response.send(sha256::Digest(d));
                }
                Some(None) => drop(response),
                None => self.proposals.push((ctx, response)),
            }
        }
    }

    /// `Some(verdict)` once known; `None` while something is missing.
    fn check(&mut self, ctx: &Ctx, d: [u8; 32], now: SystemTime) -> Option<bool> {
        if self.invalid.contains(&d) {
            return Some(false);
        }
        if d == GENESIS.0 {
            return Some(false);
        }
        if let Some(db) = self.services.db()
            && let Ok(Some(h)) = db.height_of(&d)
        {
            // Already finalized here (a replay after a restart): valid only on its own
            // parent, never as a new child of some other block.
            let prev = db.block(h).ok().flatten().map(|b| b.header.prev_hash);
            return Some(prev == Some(ctx.parent.1.0));
        }
        let Some(b) = self.blocks.get(&d).cloned() else {
            self.pending_fetch(d);
            return None;
        };
        if b.header.prev_hash != ctx.parent.1.0 {
            tracing::warn!(
                height = b.header.height,
                "block does not extend the parent consensus named"
            );
            return Some(false);
        }
        if b.header.height - self.head.state.height > MAX_SPECULATIVE_GAP {
            return None;
        }
        match self.exec(d) {
            Exec::Ready => {}
            Exec::Invalid => return Some(false),
            Exec::Missing(m) => {
                self.pending_fetch(m);
                return None;
            }
        }
        if b.header.time > unix_secs(now) + MAX_CLOCK_DRIFT_SECS {
            // In the future for us: wait until our clock catches up.
            return None;
        }
        Some(true)
    }

    /// `Some(Some(digest))` when built, `Some(None)` to decline, `None` to wait.
    fn build(
        &mut self,
        ctx: &Ctx,
        now: SystemTime,
        sender: &mut impl Sender<PublicKey = PublicKey>,
    ) -> Option<Option<[u8; 32]>> {
        let parent = ctx.parent.1.0;
        if let Some(p) = self.blocks.get(&parent)
            && p.header.height - self.head.state.height > MAX_SPECULATIVE_GAP
        {
            // Far behind: wait for finalized blocks rather than executing the gap.
            return None;
        }
        match self.exec(parent) {
            Exec::Ready => {}
            Exec::Invalid => return Some(None),
            Exec::Missing(m) => {
                self.request(m, false, sender);
                return None;
            }
        }
        let since = if parent == self.head.hash {
            self.head_seen
        } else {
            self.seen_at.get(&parent).copied().unwrap_or(UNIX_EPOCH)
        };
        if now < since + self.cfg.block_time {
            return None;
        }
        let state = self.state_of(&parent).expect("executed");
        let txs = self.services.mempool.lock().expect("mempool lock").select(
            state,
            MAX_BLOCK_TXS,
            MAX_BLOCK_BYTES,
        );
        let mut block = state.build_block(parent, unix_secs(now), txs);
        if self.cfg.behavior == Behavior::InvalidBlocks {
            block.header.app_hash[0] ^= 0xff;
        }
        let n = block.txs.len();
        let height = block.header.height;
        let Some(d) = self.remember(block, Origin::Own) else {
            return Some(None);
        };
        if self.cfg.behavior == Behavior::Honest {
            if !matches!(self.exec(d), Exec::Ready) {
                tracing::error!(height, "own block does not apply; declining to propose");
                return Some(None);
            }
            self.persist(&d);
        }
        tracing::debug!(height, txs = n, view = ctx.view().get(), "proposed");
        Some(Some(d))
    }

    /// Commits the newest finalized block and every ancestor not yet committed.
    fn finalize(&mut self, sender: &mut impl Sender<PublicKey = PublicKey>) {
        if self.halted {
            return;
        }
        let Some((view, target)) = self.target else {
            return;
        };
        let finalized_here = |s: &Self| {
            target == s.head.hash
                || s.services
                    .db()
                    .and_then(|db| db.height_of(&target).ok().flatten())
                    .is_some()
        };
        if finalized_here(self) {
            self.target = None;
            self.status.finalized_view = self.status.finalized_view.max(view);
            return;
        }
        let mut chain = Vec::new();
        let mut cur = target;
        while cur != self.head.hash {
            let Some(b) = self.blocks.get(&cur) else {
                self.request(cur, true, sender);
                return;
            };
            if b.header.height <= self.head.state.height {
                tracing::error!(
                    height = b.header.height,
                    "a finalized block conflicts with the committed chain; the node stops committing"
                );
                self.halt();
                return;
            }
            chain.push(cur);
            cur = b.header.prev_hash;
        }
        for d in chain.into_iter().rev() {
            match self.exec(d) {
                Exec::Ready => {}
                Exec::Missing(m) => {
                    self.request(m, true, sender);
                    return;
                }
                Exec::Invalid => {
                    tracing::error!(
                        "a finalized block does not apply here: this node's state diverged from the network's; it stops committing"
                    );
                    self.halt();
                    return;
                }
            }
            let block = Arc::clone(&self.blocks[&d]);
            let ex = self.executed.remove(&d).expect("just executed");
            if let Err(e) =
                self.services
                    .commit_block(&block, &ex.result, ex.state, self.cfg.snapshot_interval)
            {
                tracing::error!("cannot store finalized block {}: {e}", block.header.height);
                self.halt();
                return;
            }
            self.head = self.services.head();
            let now = self.context.current();
            self.head_seen = self.seen_at.get(&d).copied().unwrap_or(now);
            if let Some(t) = self.seen_at.get(&d) {
                let ms = now.duration_since(*t).unwrap_or_default().as_secs_f64() * 1000.0;
                self.status.last_finalization_latency_ms = ms;
                self.latency_sum_ms += ms;
            }
            self.status.finalized_blocks += 1;
            self.status.mean_finalization_latency_ms =
                self.latency_sum_ms / self.status.finalized_blocks as f64;
        }
        self.status.finalized_view = self.status.finalized_view.max(view);
        self.target = None;
        self.prune();
        self.publish();
    }

    fn halt(&mut self) {
        self.halted = true;
        self.target = None;
        self.services
            .halted
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Updates the status `/status` and `/metrics` show.
    fn publish(&mut self) {
        let height = self.head.state.height;
        let now = self.context.current();
        let mut peers: Vec<PeerStatus> = self
            .peers
            .iter()
            .filter_map(|(k, p)| {
                let age = now.duration_since(p.last).unwrap_or_default();
                (age < PEER_FRESH).then(|| PeerStatus {
                    public_key: hex_key(k),
                    height: p.height,
                    last_seen_ms: age.as_millis() as u64,
                })
            })
            .collect();
        peers.sort_by(|a, b| a.public_key.cmp(&b.public_key));
        let best = peers.iter().map(|p| p.height).max().unwrap_or(height);
        self.status.synced = !self.halted && height + 1 >= best;
        self.status.peers = peers;
        *self.services.consensus.write().expect("consensus lock") = Some(self.status.clone());
    }
}
