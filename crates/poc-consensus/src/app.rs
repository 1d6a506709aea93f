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
use poc_chain::api::{ConsensusStatus, PeerStatus};
use poc_chain::block::{Block, BlockResult};
use poc_chain::keys::SignatureMemo;
use poc_chain::state::ChainState;
use poc_chain_node::{Head, Shared, commit_block};

use crate::codec::{self, MAX_BLOCK_BYTES, MAX_BLOCK_TXS, MAX_RESPONSE_BLOCKS, Wire};

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

/// Requests from consensus to the application.
pub enum Message {
    /// Build a block.
    Propose {
        /// Round and parent.
        context: Ctx,
        /// Where the digest goes.
        response: oneshot::Sender<Digest>,
    },
    /// Check a block.
    Verify {
        /// Round and parent.
        context: Ctx,
        /// The block's digest.
        payload: Digest,
        /// The verdict.
        response: oneshot::Sender<bool>,
    },
    /// Send a block to peers.
    Broadcast {
        /// The block's digest.
        payload: Digest,
        /// To whom.
        recipients: Recipients<PublicKey>,
    },
    /// A block was finalized (its ancestors with it).
    Finalized {
        /// Its view.
        view: u64,
        /// Its digest.
        payload: Digest,
    },
    /// Some view made progress.
    View(u64),
}

/// The handle consensus holds: [`Automaton`], [`Relay`] and [`Reporter`] in one.
#[derive(Clone)]
pub struct Mailbox {
    tx: mpsc::UnboundedSender<Message>,
}

impl Mailbox {
    fn send(&self, m: Message) -> Feedback {
        if self.tx.send(m).is_ok() {
            Feedback::Ok
        } else {
            Feedback::Closed
        }
    }
}

impl Automaton for Mailbox {
    type Context = Ctx;
    type Digest = Digest;

    async fn propose(&mut self, context: Ctx) -> oneshot::Receiver<Digest> {
        let (response, rx) = oneshot::channel();
        self.send(Message::Propose { context, response });
        rx
    }

    async fn verify(&mut self, context: Ctx, payload: Digest) -> oneshot::Receiver<bool> {
        let (response, rx) = oneshot::channel();
        self.send(Message::Verify {
            context,
            payload,
            response,
        });
        rx
    }
}

impl CertifiableAutomaton for Mailbox {}

impl Relay for Mailbox {
    type Digest = Digest;
    type PublicKey = PublicKey;
    type Plan = Plan<PublicKey>;

    fn broadcast(&mut self, payload: Digest, plan: Plan<PublicKey>) -> Feedback {
        let recipients = match plan {
            Plan::Forward { recipients, .. } => recipients,
            _ => Recipients::All,
        };
        self.send(Message::Broadcast {
            payload,
            recipients,
        })
    }
}

impl Reporter for Mailbox {
    type Activity = Activity<Scheme, Digest>;

    fn report(&mut self, activity: Self::Activity) -> Feedback {
        match activity {
            Activity::Finalization(f) => self.send(Message::Finalized {
                view: f.view().get(),
                payload: f.proposal.payload,
            }),
            Activity::Notarization(n) => self.send(Message::View(n.view().get())),
            Activity::Nullification(n) => self.send(Message::View(n.view().get())),
            _ => Feedback::Ok,
        }
    }
}

/// A block executed on top of its parent.
struct Executed {
    state: ChainState,
    result: BlockResult,
}

enum Exec {
    Ready,
    Missing([u8; 32]),
    Invalid,
}

struct Peer {
    height: i64,
    last: SystemTime,
}

/// A block being fetched.
#[derive(Clone, Copy)]
struct Ask {
    first: SystemTime,
    last: SystemTime,
    /// On the hash chain of a finalized block: what comes back is authentic.
    finalized: bool,
}

/// Why a block is being taken in.
#[derive(Clone)]
enum Origin {
    /// Built here.
    Own,
    /// A peer relayed it unasked.
    Relay(PublicKey),
    /// Fetched; `true` when it hash-links to a finalized block.
    Fetched(bool),
}

/// The application actor.
pub struct App<E> {
    context: E,
    cfg: AppConfig,
    shared: Arc<Shared>,
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
    pub fn new(context: E, cfg: AppConfig, shared: Arc<Shared>) -> (Self, Mailbox) {
        let (tx, rx) = mpsc::unbounded_channel();
        let head = shared.head();
        let mut blocks = HashMap::new();
        if let Some(db) = shared.db() {
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
            let mut pool = shared.mempool.lock().expect("mempool lock");
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
                shared,
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

    /// The state after `digest`, if executed (or the committed head).
    fn state_of(&self, digest: &[u8; 32]) -> Option<&ChainState> {
        if *digest == self.head.hash {
            Some(&self.head.state)
        } else {
            self.executed.get(digest).map(|e| &e.state)
        }
    }

    /// Executes `digest` and any unexecuted ancestors down to a known state.
    fn exec(&mut self, digest: [u8; 32]) -> Exec {
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
    fn remember(&mut self, block: Block, origin: Origin) -> Option<[u8; 32]> {
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

    fn persist(&self, d: &[u8; 32]) {
        if let (Some(db), Some(b)) = (self.shared.db(), self.blocks.get(d))
            && let Err(e) = db.put_pending(d, b.header.height, &codec::encode_block(b))
        {
            tracing::warn!("cannot store an unfinalized block: {e}");
        }
    }

    fn request(
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
        if let Some(db) = self.shared.db()
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

    /// Marks a block to fetch on the next tick (for a verification: not known to be
    /// final, so what comes back is limited).
    fn pending_fetch(&mut self, m: [u8; 32]) {
        let now = self.context.current();
        self.asked.entry(m).or_insert(Ask {
            first: now,
            last: UNIX_EPOCH,
            finalized: false,
        });
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
        let txs = self.shared.mempool.lock().expect("mempool lock").select(
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
                || s.shared
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
            if let Err(e) = commit_block(
                &self.shared,
                &block,
                &ex.result,
                ex.state,
                self.cfg.snapshot_interval,
            ) {
                tracing::error!("cannot store finalized block {}: {e}", block.header.height);
                self.halt();
                return;
            }
            self.head = self.shared.head();
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
        self.shared
            .halted
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn prune(&mut self) {
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

    fn on_wire(
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
                let head = self.shared.head();
                let mut pool = self.shared.mempool.lock().expect("mempool lock");
                for t in txs {
                    let _ = pool.add_from_peer(&head.state, t);
                }
            }
        }
    }

    /// Keeps the blocks of a fetch response that form a hash chain from a block we asked
    /// for; the rest is ignored.
    fn accept_response(&mut self, list: Vec<Vec<u8>>) {
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
    fn serve(&self, digest: [u8; 32], max: u32) -> Vec<Vec<u8>> {
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
        if let Some(db) = self.shared.db()
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

    fn tick(&mut self, sender: &mut impl Sender<PublicKey = PublicKey>) {
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
            .shared
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

    fn hello(&mut self, sender: &mut impl Sender<PublicKey = PublicKey>) {
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
        *self.shared.engine_metrics.write().expect("metrics lock") = self.context.encode();
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
        *self.shared.consensus.write().expect("consensus lock") = Some(self.status.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use commonware_consensus::types::{Epoch, Round, View};
    use commonware_cryptography::Signer;
    use commonware_runtime::{Runner, deterministic};

    fn app(
        ctx: deterministic::Context,
        dir: &std::path::Path,
    ) -> (App<deterministic::Context>, Arc<Shared>) {
        let keys = crate::traffic::participant_keys(2);
        let mut g = crate::traffic::genesis(&keys);
        // Not after the simulated clock: blocks may not run ahead of the verifier's clock.
        g.genesis_time = 0;
        let (shared, _) = poc_chain_node::open_shared(&dir.join("db.redb"), &g).unwrap();
        let me = ed25519::PrivateKey::from_seed(1).public_key();
        let cfg = AppConfig {
            me,
            validators: 1,
            block_time: Duration::ZERO,
            snapshot_interval: 0,
            behavior: Behavior::Honest,
        };
        let (a, _mailbox) = App::new(ctx, cfg, Arc::clone(&shared));
        (a, shared)
    }

    fn ctx(parent: [u8; 32]) -> Ctx {
        Context {
            round: Round::new(Epoch::zero(), View::new(5)),
            leader: ed25519::PrivateKey::from_seed(1).public_key(),
            parent: (View::new(4), sha256::Digest(parent)),
        }
    }

    #[test]
    fn a_forged_body_is_never_stored_under_an_honest_header() {
        deterministic::Runner::default().start(|context| async move {
            let dir = tempfile::tempdir().unwrap();
            let (mut a, shared) = app(context, dir.path());
            let peer = ed25519::PrivateKey::from_seed(9).public_key();
            let head = shared.head();
            let good = head.state.build_block(head.hash, head.state.time, vec![]);
            let mut forged = good.clone();
            forged.txs.push(vec![1, 2, 3]);
            assert_eq!(forged.header.hash(), good.header.hash());
            assert!(a.remember(forged, Origin::Relay(peer.clone())).is_none());
            let mut foreign = good.clone();
            foreign.header.chain_id = "other".into();
            assert!(a.remember(foreign, Origin::Relay(peer.clone())).is_none());
            let d = a.remember(good, Origin::Relay(peer)).unwrap();
            // The honest body verifies.
            let now = a.context.current();
            assert_eq!(a.check(&ctx(head.hash), d, now), Some(true));
        });
    }

    #[test]
    fn a_finalized_block_is_valid_only_on_its_own_parent() {
        deterministic::Runner::default().start(|context| async move {
            let dir = tempfile::tempdir().unwrap();
            let (mut a, shared) = app(context, dir.path());
            let head = shared.head();
            let b1 = head.state.build_block(head.hash, head.state.time, vec![]);
            let mut s = head.state.clone();
            let r = s.apply_block(&b1).unwrap();
            commit_block(&shared, &b1, &r, s, 0).unwrap();
            let d1 = b1.header.hash();
            let now = a.context.current();
            // Replayed on its own parent (after a restart): valid.
            assert_eq!(a.check(&ctx(b1.header.prev_hash), d1, now), Some(true));
            // Proposed again on top of itself (or anything else): refused.
            assert_eq!(a.check(&ctx(d1), d1, now), Some(false));
            // The genesis digest is never a block.
            assert_eq!(a.check(&ctx(d1), GENESIS.0, now), Some(false));
        });
    }
}
