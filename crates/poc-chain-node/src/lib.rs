//! # poc-chain-node: a single-producer chain node around the PoC state machine
//!
//! Produces a block every `block_time` from the mempool, executes it with the pure state
//! machine ([`poc_chain`]), stores it durably ([`db`]), and serves the reference's REST
//! queries plus transaction submission ([`rest`]). On restart it loads the newest state
//! snapshot and replays the blocks stored after it, checking every app hash.

pub mod db;
pub mod home;
pub mod mempool;
pub mod rest;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use poc_chain::block::Block;
use poc_chain::block::{MAX_BLOCK_BYTES, MAX_BLOCK_TXS};
use poc_chain::genesis::Genesis;
use poc_chain::state::ChainState;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::db::{ChainDb, DbError};
use crate::mempool::Mempool;

/// Node errors.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Storage.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Home directory problems.
    #[error("{0}")]
    Home(String),
    /// Replay does not reproduce a stored block.
    #[error(
        "replaying block {height} gives app hash {got}, the log says {want}: the database or the binary differs from the one that wrote it"
    )]
    Divergence {
        /// Height.
        height: i64,
        /// Computed.
        got: String,
        /// Stored.
        want: String,
    },
    /// A stored block does not apply.
    #[error("stored block {height} does not apply: {msg}")]
    BadBlock {
        /// Height.
        height: i64,
        /// Why.
        msg: String,
    },
    /// Cannot listen.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
}

/// How to run a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Home directory (genesis, database).
    pub home: PathBuf,
    /// Time between blocks.
    pub block_time: Duration,
    /// REST listen address.
    pub rest: SocketAddr,
    /// Blocks between state snapshots.
    pub snapshot_interval: i64,
    /// Header/idle and body timeouts and the connection cap of the REST server.
    pub http: poc_http::HttpLimits,
}

/// The committed chain head.
pub struct Head {
    /// State after the last block.
    pub state: ChainState,
    /// Hash of the last block (zeros at genesis).
    pub hash: [u8; 32],
}

/// What the REST handlers and the producer share.
pub struct Shared {
    /// The committed head.
    pub head: RwLock<Arc<Head>>,
    /// Pending transactions.
    pub mempool: Mutex<Mempool>,
    /// Storage (`None` once the node stopped: the database is closed when the last
    /// in-flight request lets go of it).
    pub db: RwLock<Option<Arc<ChainDb>>>,
    /// Height notifications.
    pub height: watch::Sender<i64>,
    /// Set when block production stopped on an error.
    pub halted: AtomicBool,
    /// Consensus status, on a replicated node.
    pub consensus: RwLock<Option<poc_chain::api::ConsensusStatus>>,
    /// Extra Prometheus text served on `/metrics` (the consensus engine's own metrics).
    pub engine_metrics: RwLock<String>,
}

impl Shared {
    /// The database, while the node runs.
    pub fn db(&self) -> Option<Arc<ChainDb>> {
        self.db.read().expect("db lock").clone()
    }

    /// Closes the database (the last in-flight user lets go of it).
    pub fn close_db(&self) -> Option<Arc<ChainDb>> {
        self.db.write().expect("db lock").take()
    }

    /// The current head.
    pub fn head(&self) -> Arc<Head> {
        Arc::clone(&self.head.read().expect("head lock"))
    }
}

/// Restores the head from storage: the newest snapshot, then every later block replayed
/// with its app hash checked against the stored result. Returns the head and how many
/// blocks were replayed.
pub fn restore(db: &ChainDb, genesis: &Genesis) -> Result<(Head, i64), NodeError> {
    let mut state = match db.snapshot()? {
        Some(s) => s,
        None => ChainState::genesis_state(genesis),
    };
    let last = db.last_height()?;
    let mut hash = match db.block(state.height)? {
        Some(b) => b.header.hash(),
        None => [0; 32],
    };
    let mut replayed = 0;
    for h in state.height + 1..=last {
        let block = db.block(h)?.ok_or_else(|| NodeError::BadBlock {
            height: h,
            msg: "missing from the log".into(),
        })?;
        let want = db.result(h)?.map(|r| r.app_hash).unwrap_or_default();
        let r = state.apply_block(&block).map_err(|x| NodeError::BadBlock {
            height: h,
            msg: x.to_string(),
        })?;
        if r.app_hash != want {
            return Err(NodeError::Divergence {
                height: h,
                got: hex::encode(r.app_hash),
                want: hex::encode(want),
            });
        }
        hash = block.header.hash();
        replayed += 1;
    }
    Ok((Head { state, hash }, replayed))
}

/// A full replay from genesis.
#[derive(Debug, Clone)]
pub struct ReplayReport {
    /// Blocks replayed.
    pub blocks: i64,
    /// Transactions in them.
    pub txs: usize,
    /// Time taken.
    pub elapsed: Duration,
    /// Final app hash.
    pub app_hash: [u8; 32],
}

/// Replays every stored block from genesis, checking each app hash; `progress` is called
/// with the height every few blocks.
pub fn replay_all(
    home: &home::Home,
    mut progress: impl FnMut(i64, i64),
) -> Result<ReplayReport, NodeError> {
    let genesis = home.genesis()?;
    let db = ChainDb::open(&home.db_path(), &genesis)?;
    let last = db.last_height()?;
    let mut state = ChainState::genesis_state(&genesis);
    let started = Instant::now();
    let mut txs = 0;
    for h in 1..=last {
        let block: Block = db.block(h)?.ok_or_else(|| NodeError::BadBlock {
            height: h,
            msg: "missing from the log".into(),
        })?;
        txs += block.txs.len();
        let want = db.result(h)?.map(|r| r.app_hash).unwrap_or_default();
        let r = state.apply_block(&block).map_err(|x| NodeError::BadBlock {
            height: h,
            msg: x.to_string(),
        })?;
        if r.app_hash != want {
            return Err(NodeError::Divergence {
                height: h,
                got: hex::encode(r.app_hash),
                want: hex::encode(want),
            });
        }
        if h % 100 == 0 || h == last {
            progress(h, last);
        }
    }
    Ok(ReplayReport {
        blocks: last,
        txs,
        elapsed: started.elapsed(),
        app_hash: state.app_hash,
    })
}

/// A running node.
pub struct RunningChain {
    /// REST address.
    pub addr: SocketAddr,
    /// Shared state (for in-process callers and tests).
    pub shared: Arc<Shared>,
    /// Blocks replayed at start.
    pub replayed: i64,
    stop: Arc<AtomicBool>,
    producer: Option<std::thread::JoinHandle<()>>,
    server: JoinHandle<()>,
    server_stop: watch::Sender<bool>,
}

impl RunningChain {
    /// Stops producing, saves a state snapshot and stops the REST server.
    pub async fn shutdown(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(p) = self.producer.take() {
            let _ = tokio::task::spawn_blocking(move || p.join()).await;
        }
        let head = self.shared.head();
        if let Some(db) = self.shared.close_db()
            && let Err(e) = db.save_snapshot(&head.state)
        {
            tracing::error!("saving the state snapshot at shutdown failed: {e}");
        }
        let _ = self.server_stop.send(true);
        let _ = (&mut self.server).await;
    }

    /// Stops abruptly (no snapshot), as a crash would; for tests.
    pub async fn kill(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(p) = self.producer.take() {
            let _ = tokio::task::spawn_blocking(move || p.join()).await;
        }
        self.shared.close_db();
        self.server.abort();
        let _ = (&mut self.server).await;
    }
}

/// Unix seconds now.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Opens the database, restores the head (see [`restore`]) and wraps both for a block
/// producer or a consensus engine. Returns how many blocks were replayed.
pub fn open_shared(
    db_path: &std::path::Path,
    genesis: &Genesis,
) -> Result<(Arc<Shared>, i64), NodeError> {
    let db = ChainDb::open(db_path, genesis)?;
    let (head, replayed) = restore(&db, genesis)?;
    let (height_tx, _) = watch::channel(head.state.height);
    let shared = Arc::new(Shared {
        head: RwLock::new(Arc::new(head)),
        mempool: Mutex::new(Mempool::default()),
        db: RwLock::new(Some(Arc::new(db))),
        height: height_tx,
        halted: AtomicBool::new(false),
        consensus: RwLock::new(None),
        engine_metrics: RwLock::new(String::new()),
    });
    Ok((shared, replayed))
}

/// Makes an executed block durable and then visible: appends it (with a snapshot every
/// `snapshot_interval` blocks), logs its events, swaps the head and rechecks the mempool
/// against the new state. `state` is the state after the block.
pub fn commit_block(
    shared: &Shared,
    block: &Block,
    result: &poc_chain::block::BlockResult,
    state: ChainState,
    snapshot_interval: i64,
) -> Result<(), DbError> {
    let h = state.height;
    let snapshot = (snapshot_interval > 0 && h % snapshot_interval == 0).then_some(&state);
    let Some(db) = shared.db() else {
        return Err(DbError::Closed);
    };
    db.append(block, result, snapshot)?;
    for ev in &result.events {
        tracing::info!(height = h, "{ev}");
    }
    let failed = result.tx_results.iter().filter(|r| r.code != 0).count();
    tracing::debug!(height = h, txs = block.txs.len(), failed, "block committed");
    let hash = block.header.hash();
    let new_head = Arc::new(Head { state, hash });
    {
        // Under the mempool lock, so submissions see either the old head with the old
        // pool or the new head with the rechecked pool.
        let mut pool = shared.mempool.lock().expect("mempool lock");
        *shared.head.write().expect("head lock") = Arc::clone(&new_head);
        pool.recheck(&new_head.state);
    }
    shared.height.send_replace(h);
    Ok(())
}

/// Who produces blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Producer {
    /// This node alone, one block every `block_time`.
    Local,
    /// Something outside (a consensus engine) calls [`commit_block`].
    External,
}

/// Opens the home, restores the head and starts producing blocks and serving REST.
pub async fn start(config: NodeConfig) -> Result<RunningChain, NodeError> {
    start_with(config, Producer::Local).await
}

/// Opens the home, restores the head and serves REST; with [`Producer::Local`] it also
/// produces blocks.
pub async fn start_with(config: NodeConfig, producer: Producer) -> Result<RunningChain, NodeError> {
    let home = home::Home::new(&config.home);
    let genesis = home.genesis()?;
    let (shared, replayed) =
        tokio::task::spawn_blocking(move || open_shared(&home.db_path(), &genesis))
            .await
            .expect("restore does not panic")?;
    let height = shared.head().state.height;
    let listener = tokio::net::TcpListener::bind(config.rest)
        .await
        .map_err(|source| NodeError::Listen {
            addr: config.rest,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| NodeError::Listen {
        addr: config.rest,
        source,
    })?;
    let stop = Arc::new(AtomicBool::new(false));
    let producer = (producer == Producer::Local).then(|| {
        let shared = Arc::clone(&shared);
        let stop = Arc::clone(&stop);
        let cfg = config.clone();
        std::thread::Builder::new()
            .name("block-producer".into())
            .spawn(move || produce(shared, stop, cfg))
            .expect("thread spawns")
    });
    let (server_stop, mut rx) = watch::channel(false);
    let app = rest::router(Arc::clone(&shared));
    let server = poc_http::spawn(
        listener,
        app,
        config.http,
        Arc::default(),
        None,
        async move {
            let _ = rx.wait_for(|v| *v).await;
        },
    );
    tracing::info!(%addr, height, replayed, "chain node started");
    Ok(RunningChain {
        addr,
        shared,
        replayed,
        stop,
        producer,
        server,
        server_stop,
    })
}

/// The block producer: one block per tick, durable before it becomes visible.
fn produce(shared: Arc<Shared>, stop: Arc<AtomicBool>, cfg: NodeConfig) {
    let mut next = Instant::now() + cfg.block_time;
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(50)));
            continue;
        }
        next += cfg.block_time;
        if next < Instant::now() {
            next = Instant::now() + cfg.block_time;
        }
        let head = shared.head();
        let (txs, signatures) = {
            let mut pool = shared.mempool.lock().expect("mempool lock");
            (pool.take(MAX_BLOCK_TXS, MAX_BLOCK_BYTES), pool.signatures())
        };
        let mut state = head.state.clone();
        let block = state.build_block(head.hash, now_secs(), txs);
        let result = match state.apply_block_with(&block, &*signatures) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("own block does not apply ({e}); block production stops");
                shared.halted.store(true, Ordering::SeqCst);
                return;
            }
        };
        let h = state.height;
        if let Err(e) = commit_block(&shared, &block, &result, state, cfg.snapshot_interval) {
            if !matches!(e, DbError::Closed) {
                tracing::error!("cannot store block {h} ({e}); block production stops");
                shared.halted.store(true, Ordering::SeqCst);
            }
            return;
        }
    }
}
