//! # poc-chain-node: a chain node around the PoC state machine
//!
//! The node is a set of services ([`ChainServices`]: head, mempool, durable storage
//! ([`db`]), height notifications) served over the reference's REST queries plus
//! transaction submission ([`rest`]), and one driver that makes blocks: the single
//! producer of [`producer`] (one block every `block_time`, [`start`]) or a consensus
//! engine (`poc-consensus`, which calls [`serve`] and commits what it finalizes). Blocks
//! are executed by the pure state machine ([`poc_chain`]). On restart the newest state
//! snapshot is loaded and the blocks stored after it replayed, every app hash checked
//! ([`replay`]).

pub mod db;
pub mod home;
pub mod mempool;
pub mod producer;
pub mod replay;
pub mod rest;
pub mod rpc;
pub mod services;
pub mod status;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::db::DbError;
pub use crate::producer::BlockProducer;
pub use crate::replay::{ReplayReport, replay_all};
pub use crate::services::{ChainServices, Head, restore};

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
        height: i64,
        /// Computed.
        got: String,
        /// Stored.
        want: String,
    },
    /// A stored block does not apply.
    #[error("stored block {height} does not apply: {msg}")]
    BadBlock {
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
    /// CometBFT RPC listen address ([`rpc`]); `None` serves no RPC.
    pub rpc: Option<SocketAddr>,
    /// Blocks between state snapshots.
    pub snapshot_interval: i64,
    /// Header/idle and body timeouts and the connection cap of the REST server.
    pub http: poc_http::HttpLimits,
}

/// A running node: its services served over REST, and the block producer when this
/// node makes blocks alone.
pub struct RunningChain {
    /// REST address.
    pub addr: SocketAddr,
    /// CometBFT RPC address, if served.
    pub rpc_addr: Option<SocketAddr>,
    /// The node's services (for in-process callers, a consensus driver and tests).
    pub services: Arc<ChainServices>,
    /// Blocks replayed at start.
    pub replayed: i64,
    producer: Option<BlockProducer>,
    server: JoinHandle<()>,
    rpc_server: Option<JoinHandle<()>>,
    server_stop: watch::Sender<bool>,
}

impl RunningChain {
    /// Stops producing, saves a state snapshot and stops the REST server. (A consensus
    /// driver is stopped by its owner first.)
    pub async fn shutdown(mut self) {
        if let Some(p) = self.producer.take() {
            p.stop().await;
        }
        let head = self.services.head();
        if let Some(db) = self.services.close_db()
            && let Err(e) = db.save_snapshot(&head.state)
        {
            tracing::error!("saving the state snapshot at shutdown failed: {e}");
        }
        let _ = self.server_stop.send(true);
        let _ = (&mut self.server).await;
        if let Some(r) = self.rpc_server.take() {
            let _ = r.await;
        }
    }

    /// Stops abruptly (no snapshot), as a crash would; for tests.
    pub async fn kill(mut self) {
        if let Some(p) = self.producer.take() {
            p.stop().await;
        }
        self.services.close_db();
        self.server.abort();
        let _ = (&mut self.server).await;
        if let Some(r) = self.rpc_server.take() {
            r.abort();
            let _ = r.await;
        }
    }
}

/// Unix seconds now.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Opens the home, restores the head, serves REST and produces blocks alone.
pub async fn start(config: NodeConfig) -> Result<RunningChain, NodeError> {
    let mut chain = serve(config.clone()).await?;
    let producer = BlockProducer::spawn(Arc::clone(&chain.services), config)
        .map_err(|e| NodeError::Home(format!("cannot start the block producer thread: {e}")));
    match producer {
        Ok(p) => chain.producer = Some(p),
        Err(e) => {
            chain.shutdown().await;
            return Err(e);
        }
    }
    Ok(chain)
}

/// Opens the home, restores the head and serves REST, with no driver: the caller (a
/// consensus engine) makes the blocks and commits them with
/// [`ChainServices::commit_block`].
pub async fn serve(config: NodeConfig) -> Result<RunningChain, NodeError> {
    let home = home::Home::new(&config.home);
    let genesis = home.genesis()?;
    let (services, replayed) =
        tokio::task::spawn_blocking(move || ChainServices::open(&home.db_path(), &genesis))
            .await
            .expect("restore does not panic")?;
    let height = services.head().state.height;
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
    let rpc_listener = match config.rpc {
        Some(a) => {
            let l = tokio::net::TcpListener::bind(a)
                .await
                .map_err(|source| NodeError::Listen { addr: a, source })?;
            let local = l
                .local_addr()
                .map_err(|source| NodeError::Listen { addr: a, source })?;
            Some((l, local))
        }
        None => None,
    };
    let (server_stop, rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let app = rest::router(Arc::clone(&services));
    let server = poc_http::spawn(
        listener,
        app,
        config.http,
        Arc::default(),
        None,
        stopped(rx.clone()),
    );
    let rpc_addr = rpc_listener.as_ref().map(|(_, a)| *a);
    let rpc_server = rpc_listener.map(|(l, _)| {
        poc_http::spawn(
            l,
            rpc::router(Arc::clone(&services)),
            config.http,
            Arc::default(),
            None,
            stopped(rx),
        )
    });
    tracing::info!(%addr, ?rpc_addr, height, replayed, "chain node started");
    Ok(RunningChain {
        addr,
        rpc_addr,
        services,
        replayed,
        producer: None,
        server,
        rpc_server,
        server_stop,
    })
}
