//! The chain's durable storage (redb, ACID): the genesis, every block with its result, a
//! transaction index, and periodic state snapshots. A block and its result are written in
//! one transaction, so a crash never loses a committed block or leaves half of one.

use std::path::Path;

use poc_chain::block::{Block, BlockResult};
use poc_chain::genesis::Genesis;
use poc_chain::state::ChainState;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
const RESULTS: TableDefinition<u64, &[u8]> = TableDefinition::new("results");
const TXS: TableDefinition<&str, (u64, u32)> = TableDefinition::new("tx_index");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Finalized block hash -> height.
const HASHES: TableDefinition<&[u8; 32], u64> = TableDefinition::new("block_hashes");
/// Blocks seen by consensus but not yet finalized: hash -> (height, encoded block).
const PENDING: TableDefinition<&[u8; 32], (u64, &[u8])> = TableDefinition::new("pending_blocks");

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database failed.
    #[error("chain database: {0}")]
    Redb(#[from] redb::Error),
    /// Stored bytes do not parse.
    #[error("chain database holds unreadable {what}: {msg}")]
    Corrupt {
        /// Which record.
        what: String,
        /// Parser message.
        msg: String,
    },
    /// Initialised with another genesis.
    #[error(
        "the database was initialised with a different genesis (chain {stored:?}); use a fresh --home"
    )]
    GenesisMismatch {
        /// Chain id stored.
        stored: String,
    },
    /// The node is stopping and the database was closed.
    #[error("the chain database is closed because the node is stopping")]
    Closed,
}

fn e<E: Into<redb::Error>>(x: E) -> DbError {
    DbError::Redb(x.into())
}

fn corrupt(what: impl Into<String>, err: impl std::fmt::Display) -> DbError {
    DbError::Corrupt {
        what: what.into(),
        msg: err.to_string(),
    }
}

/// An unfinalized block remembered by consensus: `(hash, height, encoded block)`.
pub type PendingBlock = ([u8; 32], i64, Vec<u8>);

/// The open database.
pub struct ChainDb {
    db: Database,
}

impl ChainDb {
    /// Opens (or creates) the database and checks it belongs to `genesis`.
    pub fn open(path: &Path, genesis: &Genesis) -> Result<Self, DbError> {
        let db = Database::create(path).map_err(e)?;
        let me = Self { db };
        let bytes = serde_json::to_vec(genesis).expect("genesis serialises");
        match me.meta("genesis")? {
            Some(stored) => {
                if stored != bytes {
                    let g: Genesis =
                        serde_json::from_slice(&stored).map_err(|x| corrupt("genesis", x))?;
                    return Err(DbError::GenesisMismatch { stored: g.chain_id });
                }
            }
            None => {
                let w = me.db.begin_write().map_err(e)?;
                {
                    let mut t = w.open_table(META).map_err(e)?;
                    t.insert("genesis", bytes.as_slice()).map_err(e)?;
                    // Create the other tables so readers never miss them.
                    w.open_table(BLOCKS).map_err(e)?;
                    w.open_table(RESULTS).map_err(e)?;
                    w.open_table(TXS).map_err(e)?;
                    w.open_table(HASHES).map_err(e)?;
                    w.open_table(PENDING).map_err(e)?;
                }
                w.commit().map_err(e)?;
            }
        }
        Ok(me)
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, DbError> {
        let r = self.db.begin_read().map_err(e)?;
        let t = match r.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(x) => return Err(e(x)),
        };
        Ok(t.get(key).map_err(e)?.map(|v| v.value().to_vec()))
    }

    /// Height of the newest stored block (0 if none).
    pub fn last_height(&self) -> Result<i64, DbError> {
        let r = self.db.begin_read().map_err(e)?;
        let t = r.open_table(BLOCKS).map_err(e)?;
        Ok(t.last()
            .map_err(e)?
            .map(|(k, _)| k.value() as i64)
            .unwrap_or(0))
    }

    /// A stored block.
    pub fn block(&self, h: i64) -> Result<Option<Block>, DbError> {
        if h <= 0 {
            return Ok(None);
        }
        let r = self.db.begin_read().map_err(e)?;
        let t = r.open_table(BLOCKS).map_err(e)?;
        match t.get(h as u64).map_err(e)? {
            Some(v) => Ok(Some(
                serde_json::from_slice(v.value()).map_err(|x| corrupt(format!("block {h}"), x))?,
            )),
            None => Ok(None),
        }
    }

    /// A stored block result.
    pub fn result(&self, h: i64) -> Result<Option<BlockResult>, DbError> {
        if h <= 0 {
            return Ok(None);
        }
        let r = self.db.begin_read().map_err(e)?;
        let t = r.open_table(RESULTS).map_err(e)?;
        match t.get(h as u64).map_err(e)? {
            Some(v) => Ok(Some(
                serde_json::from_slice(v.value()).map_err(|x| corrupt(format!("result {h}"), x))?,
            )),
            None => Ok(None),
        }
    }

    /// Where a transaction landed: `(height, index)`.
    pub fn tx_location(&self, hash: &str) -> Result<Option<(i64, u32)>, DbError> {
        let r = self.db.begin_read().map_err(e)?;
        let t = r.open_table(TXS).map_err(e)?;
        Ok(t.get(hash).map_err(e)?.map(|v| {
            let (h, i) = v.value();
            (h as i64, i)
        }))
    }

    /// Durably appends a block with its result (and, when given, a state snapshot) in one
    /// transaction.
    pub fn append(
        &self,
        block: &Block,
        result: &BlockResult,
        snapshot: Option<&ChainState>,
    ) -> Result<(), DbError> {
        let h = block.header.height as u64;
        let b = serde_json::to_vec(block).expect("block serialises");
        let r = serde_json::to_vec(result).expect("result serialises");
        let w = self.db.begin_write().map_err(e)?;
        {
            w.open_table(BLOCKS)
                .map_err(e)?
                .insert(h, b.as_slice())
                .map_err(e)?;
            w.open_table(RESULTS)
                .map_err(e)?
                .insert(h, r.as_slice())
                .map_err(e)?;
            let mut txs = w.open_table(TXS).map_err(e)?;
            for (i, t) in result.tx_results.iter().enumerate() {
                txs.insert(t.txhash.as_str(), (h, i as u32)).map_err(e)?;
            }
            w.open_table(HASHES)
                .map_err(e)?
                .insert(&block.header.hash(), h)
                .map_err(e)?;
            let mut pending = w.open_table(PENDING).map_err(e)?;
            let stale: Vec<[u8; 32]> = pending
                .iter()
                .map_err(e)?
                .filter_map(|x| x.ok())
                .filter(|(_, v)| v.value().0 <= h)
                .map(|(k, _)| *k.value())
                .collect();
            for k in &stale {
                pending.remove(k).map_err(e)?;
            }
            if let Some(s) = snapshot {
                let bytes = serde_json::to_vec(s).expect("state serialises");
                w.open_table(META)
                    .map_err(e)?
                    .insert("state", bytes.as_slice())
                    .map_err(e)?;
            }
        }
        w.commit().map_err(e)?;
        Ok(())
    }

    /// The height of a finalized block, by hash.
    pub fn height_of(&self, hash: &[u8; 32]) -> Result<Option<i64>, DbError> {
        let r = self.db.begin_read().map_err(e)?;
        let t = match r.open_table(HASHES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(x) => return Err(e(x)),
        };
        Ok(t.get(hash).map_err(e)?.map(|v| v.value() as i64))
    }

    /// Durably remembers a block consensus may still finalize (proposed or verified
    /// here), so a restart does not depend on peers to recover it.
    pub fn put_pending(&self, hash: &[u8; 32], height: i64, bytes: &[u8]) -> Result<(), DbError> {
        let w = self.db.begin_write().map_err(e)?;
        w.open_table(PENDING)
            .map_err(e)?
            .insert(hash, (height as u64, bytes))
            .map_err(e)?;
        w.commit().map_err(e)?;
        Ok(())
    }

    /// Every remembered unfinalized block.
    pub fn pending_blocks(&self) -> Result<Vec<PendingBlock>, DbError> {
        let r = self.db.begin_read().map_err(e)?;
        let t = match r.open_table(PENDING) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(x) => return Err(e(x)),
        };
        let mut out = Vec::new();
        for x in t.iter().map_err(e)? {
            let (k, v) = x.map_err(e)?;
            let (h, b) = v.value();
            out.push((*k.value(), h as i64, b.to_vec()));
        }
        Ok(out)
    }

    /// Stores a state snapshot on its own (e.g. at shutdown).
    pub fn save_snapshot(&self, s: &ChainState) -> Result<(), DbError> {
        let bytes = serde_json::to_vec(s).expect("state serialises");
        let w = self.db.begin_write().map_err(e)?;
        w.open_table(META)
            .map_err(e)?
            .insert("state", bytes.as_slice())
            .map_err(e)?;
        w.commit().map_err(e)?;
        Ok(())
    }

    /// The newest snapshot, if any.
    pub fn snapshot(&self) -> Result<Option<ChainState>, DbError> {
        match self.meta("state")? {
            Some(b) => Ok(Some(
                serde_json::from_slice(&b).map_err(|x| corrupt("state snapshot", x))?,
            )),
            None => Ok(None),
        }
    }
}
