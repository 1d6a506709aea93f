//! The node's services: the committed head, the mempool, the database and the height
//! notifications, with the one way a block becomes part of the chain
//! ([`ChainServices::commit_block`]). They know nothing of who makes blocks.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};

use poc_chain::block::{Block, BlockResult};
use poc_chain::genesis::Genesis;
use poc_chain::state::ChainState;
use tokio::sync::watch;

use crate::NodeError;
use crate::db::{ChainDb, DbError};
use crate::mempool::Mempool;
use crate::replay::replay_block;
use crate::status::ConsensusStatus;

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
        hash = replay_block(db, &mut state, h)?.header.hash();
        replayed += 1;
    }
    Ok((Head { state, hash }, replayed))
}

/// The committed chain head.
pub struct Head {
    /// State after the last block.
    pub state: ChainState,
    /// Hash of the last block (zeros at genesis).
    pub hash: [u8; 32],
}

/// The node's services, shared by REST and by whichever driver makes blocks (the
/// single producer of [`crate::producer`], or a consensus engine): the head, the
/// mempool, the database and the notifications.
pub struct ChainServices {
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
    pub consensus: RwLock<Option<ConsensusStatus>>,
    /// Extra Prometheus text served on `/metrics` (the consensus engine's own metrics).
    pub engine_metrics: RwLock<String>,
}

impl ChainServices {
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

    /// Opens the database, restores the head (see [`restore`]) and wraps both for a
    /// driver. Returns how many blocks were replayed.
    pub fn open(db_path: &Path, genesis: &Genesis) -> Result<(Arc<Self>, i64), NodeError> {
        let db = ChainDb::open(db_path, genesis)?;
        let (head, replayed) = restore(&db, genesis)?;
        let (height_tx, _) = watch::channel(head.state.height);
        let services = Arc::new(ChainServices {
            head: RwLock::new(Arc::new(head)),
            mempool: Mutex::new(Mempool::default()),
            db: RwLock::new(Some(Arc::new(db))),
            height: height_tx,
            halted: AtomicBool::new(false),
            consensus: RwLock::new(None),
            engine_metrics: RwLock::new(String::new()),
        });
        Ok((services, replayed))
    }

    /// Makes an executed block durable and then visible: appends it (with a snapshot every
    /// `snapshot_interval` blocks), logs its events, swaps the head and rechecks the mempool
    /// against the new state. `state` is the state after the block.
    pub fn commit_block(
        &self,
        block: &Block,
        result: &BlockResult,
        state: ChainState,
        snapshot_interval: i64,
    ) -> Result<(), DbError> {
        let h = state.height;
        let snapshot = (snapshot_interval > 0 && h % snapshot_interval == 0).then_some(&state);
        let Some(db) = self.db() else {
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
            let mut pool = self.mempool.lock().expect("mempool lock");
            *self.head.write().expect("head lock") = Arc::clone(&new_head);
            pool.recheck(&new_head.state);
        }
        self.height.send_replace(h);
        Ok(())
    }
}
