//! Restoring the head at start and replaying the whole chain: every stored block
//! re-executed with its app hash checked against the stored result.

use std::time::{Duration, Instant};

use poc_chain::block::Block;
use poc_chain::state::ChainState;

use crate::NodeError;
use crate::db::ChainDb;
use crate::home;

/// Re-executes stored block `h` on `state` and checks the app hash against the stored
/// result; returns the block.
pub(crate) fn replay_block(
    db: &ChainDb,
    state: &mut ChainState,
    h: i64,
) -> Result<Block, NodeError> {
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
    Ok(block)
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
        txs += replay_block(&db, &mut state, h)?.txs.len();
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
