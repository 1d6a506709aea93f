//! Block execution: transactions, then EndBlock (`chain-and-api.md` §1.4, §1.6, §5.6), then
//! the app hash. A pure function of `(state, block)`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::confirmation::{self, ConfirmationEvent, ConfirmationPhase};
use crate::decimal::{Dec, dec_one};
use crate::epoch::Epoch;
use crate::params::PocMode;
use crate::state::{BlockContext, ChainState, EpochGroup, ParticipantStatus, ValidationSnapshot};
use crate::tx::{self, TxResult};
use crate::weights::allocate_poc_slots;

/// `pocDeviationCoeff` of the confirmation ratio.
pub const POC_DEVIATION_COEFF: &str = "0.909";

/// A block header. The app hash is the state's after the *previous* block (as in
/// Tendermint), so the hash is known before execution and is what the PoC logic sees as
/// `HeaderInfo().Hash` (confirmation trigger, seed hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Chain id.
    pub chain_id: String,
    /// Height (first block: 1).
    #[serde(with = "crate::json::i64_string")]
    pub height: i64,
    /// Unix seconds.
    #[serde(with = "crate::json::i64_string")]
    pub time: i64,
    /// Hash of the previous block (zeros for the first).
    #[serde(with = "hex32")]
    pub prev_hash: [u8; 32],
    /// Root of the transactions ([`tx_root`]).
    #[serde(with = "hex32")]
    pub tx_root: [u8; 32],
    /// App hash after the previous block.
    #[serde(with = "hex32")]
    pub app_hash: [u8; 32],
}

impl Header {
    /// The canonical encoding hashed into the block hash: a version tag, then the
    /// length-prefixed chain id, big-endian height and time, and the three hashes.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(160);
        b.extend_from_slice(b"poc-chain/header/v1");
        b.extend_from_slice(&(self.chain_id.len() as u32).to_be_bytes());
        b.extend_from_slice(self.chain_id.as_bytes());
        b.extend_from_slice(&self.height.to_be_bytes());
        b.extend_from_slice(&self.time.to_be_bytes());
        b.extend_from_slice(&self.prev_hash);
        b.extend_from_slice(&self.tx_root);
        b.extend_from_slice(&self.app_hash);
        b
    }

    /// SHA-256 of the canonical header.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.canonical_bytes()).into()
    }
}

/// Root of a block's transactions: SHA-256 over the count and each transaction's SHA-256.
pub fn tx_root(txs: &[Vec<u8>]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((txs.len() as u64).to_be_bytes());
    for t in txs {
        h.update(Sha256::digest(t));
    }
    h.finalize().into()
}

/// A block: header and raw signed transactions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// Header.
    pub header: Header,
    /// Encoded transactions.
    #[serde(with = "b64_list")]
    pub txs: Vec<Vec<u8>>,
}

/// What executing a block produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockResult {
    /// One result per transaction.
    pub tx_results: Vec<TxResult>,
    /// Human-readable EndBlock events (not part of consensus).
    pub events: Vec<String>,
    /// App hash after the block.
    pub app_hash: String,
}

/// Why a block cannot be applied at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// Header does not continue the chain.
    #[error("block {got} does not follow height {have}")]
    Height {
        /// State height.
        have: i64,
        /// Block height.
        got: i64,
    },
    /// Wrong chain.
    #[error("block is for chain {0:?}")]
    ChainId(String),
    /// Header's app hash is not the state's.
    #[error("header app hash does not match the state")]
    AppHash,
    /// Tx root mismatch.
    #[error("tx root does not match the transactions")]
    TxRoot,
    /// Time went backwards.
    #[error("block time {got} is before the previous block's {have}")]
    Time {
        /// Previous.
        have: i64,
        /// This.
        got: i64,
    },
}

impl ChainState {
    /// The app hash bytes of the current state.
    pub fn app_hash_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        if let Ok(v) = hex::decode(&self.app_hash)
            && v.len() == 32
        {
            out.copy_from_slice(&v);
        }
        out
    }

    /// The canonical state commitment: SHA-256 of the state's canonical JSON (ordered
    /// maps, fixed field order) with the app-hash field itself left empty and each PoC
    /// collection replaced by its two-level list hash ([`crate::tracked`]).
    pub fn compute_app_hash(&self) -> String {
        let mut h = Sha256::new();
        let mut w = HashWriter(&mut h);
        // The state's own app hash is left out (hash mode serialises it empty), and the
        // PoC collections enter through their incrementally maintained hashes
        // (`crate::tracked`), so hashing costs what the block changed, not the state size.
        crate::tracked::with_hash_mode(|| serde_json::to_writer(&mut w, self))
            .expect("state serialises");
        hex::encode(h.finalize())
    }

    /// Validates and executes a block; the state is unchanged on `Err`.
    pub fn apply_block(&mut self, block: &Block) -> Result<BlockResult, BlockError> {
        let hd = &block.header;
        if hd.height != self.height + 1 {
            return Err(BlockError::Height {
                have: self.height,
                got: hd.height,
            });
        }
        if hd.chain_id != self.chain_id {
            return Err(BlockError::ChainId(hd.chain_id.clone()));
        }
        if hd.app_hash != self.app_hash_bytes() {
            return Err(BlockError::AppHash);
        }
        if hd.tx_root != tx_root(&block.txs) {
            return Err(BlockError::TxRoot);
        }
        if hd.time < self.time {
            return Err(BlockError::Time {
                have: self.time,
                got: hd.time,
            });
        }
        let ctx = BlockContext {
            height: hd.height,
            time: hd.time,
            hash: hd.hash(),
        };
        let tx_results = block
            .txs
            .iter()
            .map(|t| tx::deliver_tx(self, &ctx, t))
            .collect();
        let events = self.end_block(&ctx);
        self.height = ctx.height;
        self.time = ctx.time;
        self.app_hash = String::new();
        self.app_hash = self.compute_app_hash();
        Ok(BlockResult {
            tx_results,
            events,
            app_hash: self.app_hash.clone(),
        })
    }

    /// EndBlock in the reference's order (§1.4).
    pub fn end_block(&mut self, ctx: &BlockContext) -> Vec<String> {
        let mut log = Vec::new();
        self.handle_confirmation(ctx, &mut log);
        let h = ctx.height;
        let latest = self.latest_ctx();
        if latest.is_end_of_poc_validation(h) {
            self.on_end_of_poc_validation(&mut log);
        }
        if self.latest_ctx().is_set_new_validators(h)
            && self.latest_epoch.index > self.effective_epoch.index
        {
            self.effective_epoch = self.latest_epoch;
            self.snapshots
                .remove(&self.latest_epoch.poc_start_block_height);
            log.push(format!(
                "epoch {} is now effective",
                self.effective_epoch.index
            ));
        }
        if self.latest_epoch.index == self.effective_epoch.index
            && self.effective_ctx().is_start_of_next_poc(h)
        {
            self.latest_epoch = Epoch {
                index: self.latest_epoch.index + 1,
                poc_start_block_height: h,
            };
            self.generation_start_times.insert(h, ctx.time);
            log.push(format!(
                "PoC for epoch {} starts at {h}",
                self.latest_epoch.index
            ));
        }
        if self.latest_epoch.index > self.effective_epoch.index
            && self.latest_ctx().is_start_of_poc_validation(h)
        {
            let s = self.latest_epoch.poc_start_block_height;
            self.capture_snapshot(ctx, s);
            log.push(format!("validation of stage {s} starts at {h}"));
        }
        log
    }

    fn capture_snapshot(&mut self, ctx: &BlockContext, stage: i64) {
        let snap = ValidationSnapshot {
            poc_stage_start_height: stage,
            snapshot_height: ctx.height,
            app_hash: self.app_hash.clone(),
            validator_weights: self.current_validator_weights().into_iter().collect(),
            generation_start_timestamp: self
                .generation_start_times
                .get(&stage)
                .copied()
                .unwrap_or(0),
            exchange_end_timestamp: ctx.time,
        };
        self.snapshots.insert(stage, snap);
    }

    fn on_end_of_poc_validation(&mut self, log: &mut Vec<String>) {
        let u = self.latest_epoch;
        if u.index <= self.effective_epoch.index {
            return;
        }
        let s = u.poc_start_block_height;
        let mut new = if self.params.poc_params.poc_v2_enabled {
            self.compute_new_weights_v2(u.index, s)
        } else {
            self.compute_new_weights_v1(u.index, s, true)
        };
        let fraction = self
            .params
            .epoch_params
            .poc_slot_allocation
            .map(|d| d.to_dec())
            .unwrap_or_else(|| Dec::from_u64(0));
        allocate_poc_slots(&mut new, &fraction);
        let mut group = EpochGroup::default();
        for p in &new {
            group.members.insert(p.index.clone(), p.weight);
            let non_preserved: i64 = p
                .ml_nodes
                .iter()
                .filter(|n| !n.poc_slot)
                .map(|n| n.poc_weight)
                .sum();
            group
                .confirmation_weights
                .insert(p.index.clone(), non_preserved);
            if let Some(part) = self.participants.get_mut(&p.index) {
                part.status = ParticipantStatus::Active;
                part.status_reason.clear();
            }
        }
        log.push(format!(
            "weights for epoch {} ({}): {}",
            u.index,
            if self.params.poc_params.poc_v2_enabled {
                "v2"
            } else {
                "v1"
            },
            new.iter()
                .map(|p| format!("{}={}", p.index, p.weight))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        group.participants = new;
        if group.members.is_empty() {
            // Nobody earned weight: keep the previous validators so the chain stays live
            // (the reference's CometBFT chain would halt with an empty validator set).
            group.members = self.current_validator_weights();
            log.push(format!(
                "epoch {}: no participant earned weight; validators carried over",
                u.index
            ));
        }
        self.epoch_groups.insert(u.index, group);
    }

    fn handle_confirmation(&mut self, ctx: &BlockContext, log: &mut Vec<String>) {
        let h = ctx.height;
        let ep = self.params.epoch_params.clone();
        if let Some(mut ev) = self.active_event.clone() {
            if ev.phase == ConfirmationPhase::GracePeriod && h >= ev.generation_start_height {
                ev.phase = ConfirmationPhase::Generation;
                ev.poc_seed_block_hash = hex::encode(ctx.hash);
                self.generation_start_times
                    .insert(ev.trigger_height, ctx.time);
            }
            if ev.phase == ConfirmationPhase::Generation && h >= ev.validation_start(&ep) {
                ev.phase = ConfirmationPhase::Validation;
                self.capture_snapshot(ctx, ev.trigger_height);
            }
            if ev.phase == ConfirmationPhase::Validation && h > ev.validation_end(&ep) {
                ev.phase = ConfirmationPhase::Completed;
                self.update_confirmation_weights(&ev, log);
            }
            self.confirmation_events
                .insert((ev.epoch_index, ev.event_sequence), ev.clone());
            if ev.phase == ConfirmationPhase::Completed
                && h >= ev.validation_end(&ep) + 1 + ep.set_new_validators_delay
            {
                self.snapshots.remove(&ev.trigger_height);
                self.active_event = None;
            } else {
                self.active_event = Some(ev);
            }
        }
        let n = self
            .params
            .confirmation_poc_params
            .expected_confirmations_per_epoch;
        if self.active_event.is_none()
            && confirmation::should_trigger(&self.effective_ctx(), h, &ctx.hash, n)
        {
            let epoch = self.effective_epoch.index;
            let seq = self
                .confirmation_events
                .range((epoch, 0)..=(epoch, u64::MAX))
                .count() as u64;
            let ev = ConfirmationEvent {
                epoch_index: epoch,
                event_sequence: seq,
                trigger_height: h,
                generation_start_height: ConfirmationEvent::generation_start(h, &ep),
                phase: ConfirmationPhase::GracePeriod,
                poc_seed_block_hash: String::new(),
            };
            log.push(format!("confirmation PoC {epoch}/{seq} triggered at {h}"));
            self.confirmation_events.insert((epoch, seq), ev.clone());
            self.active_event = Some(ev);
        }
    }

    /// `updateConfirmationWeights` (§5.6).
    fn update_confirmation_weights(&mut self, ev: &ConfirmationEvent, log: &mut Vec<String>) {
        let (v2, dry) = match PocMode::of(&self.params.poc_params) {
            PocMode::FullV1 => (false, false),
            PocMode::Migration => (ev.event_sequence == 0, ev.event_sequence == 0),
            PocMode::FullV2 => (true, self.poc_v2_enabled_epoch == Some(ev.epoch_index)),
        };
        let computed: std::collections::BTreeMap<String, i64> = if v2 {
            self.confirmation_weights_v2(ev.epoch_index, ev.trigger_height)
        } else {
            self.compute_new_weights_v1(ev.epoch_index, ev.trigger_height, false)
                .into_iter()
                .map(|p| (p.index, p.weight))
                .collect()
        };
        log.push(format!(
            "confirmation PoC {}/{} ({}{}): {}",
            ev.epoch_index,
            ev.event_sequence,
            if v2 { "v2" } else { "v1" },
            if dry { ", dry run" } else { "" },
            computed
                .iter()
                .map(|(a, w)| format!("{a}={w}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        if dry {
            return;
        }
        let Some(mut group) = self.epoch_groups.get(&ev.epoch_index).cloned() else {
            return;
        };
        let alpha = self
            .params
            .confirmation_poc_params
            .alpha_threshold
            .map(|d| d.to_dec())
            .unwrap_or_else(|| Dec::from_u64(0));
        let coeff = Dec::parse(POC_DEVIATION_COEFF).expect("constant");
        for p in &group.participants {
            let non_preserved: i64 = p
                .ml_nodes
                .iter()
                .filter(|n| !n.poc_slot)
                .map(|n| n.poc_weight)
                .sum();
            let cw = group
                .confirmation_weights
                .entry(p.index.clone())
                .or_insert(0);
            match computed.get(&p.index) {
                Some(c) => *cw = (*cw).min(*c),
                None => {
                    if non_preserved > 0 && *cw > 0 {
                        *cw = 0;
                    }
                }
            }
            let ratio = if non_preserved == 0 {
                dec_one()
            } else {
                Dec::from_i128(i128::from(*cw))
                    .div(&Dec::from_i128(i128::from(non_preserved)))
                    .and_then(|r| r.div(&coeff))
                    .map(|r| r.min(dec_one()))
                    .unwrap_or_else(dec_one)
            };
            if let Some(part) = self.participants.get_mut(&p.index) {
                part.confirmation_poc_ratio = ratio.to_plain_string();
                if alpha > Dec::from_u64(0) && ratio < alpha {
                    part.status = ParticipantStatus::Inactive;
                    part.status_reason = "failed_confirmation_poc".into();
                    group.members.remove(&p.index);
                    log.push(format!(
                        "{} failed confirmation PoC (ratio {}) and is inactive",
                        p.index, part.confirmation_poc_ratio
                    ));
                }
            }
        }
        self.epoch_groups.insert(ev.epoch_index, group);
    }
}

struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let v = hex::decode(&s).map_err(serde::de::Error::custom)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom("expected 32 bytes of hex"))
    }
}

mod b64_list {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|t| STANDARD.encode(t)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        Vec::<String>::deserialize(d)?
            .into_iter()
            .map(|s| STANDARD.decode(s).map_err(serde::de::Error::custom))
            .collect()
    }
}

impl ChainState {
    /// The next block on top of this state: height + 1, the given time (never before the
    /// last block's), the previous block's hash and these transactions.
    pub fn build_block(&self, prev_hash: [u8; 32], time: i64, txs: Vec<Vec<u8>>) -> Block {
        Block {
            header: Header {
                chain_id: self.chain_id.clone(),
                height: self.height + 1,
                time: time.max(self.time),
                prev_hash,
                tx_root: tx_root(&txs),
                app_hash: self.app_hash_bytes(),
            },
            txs,
        }
    }
}

impl ChainState {
    /// The state at genesis with its app hash computed (the app hash block 1's header
    /// carries).
    pub fn genesis_state(g: &crate::state::Genesis) -> Self {
        let mut s = Self::from_genesis(g);
        s.app_hash = s.compute_app_hash();
        s
    }
}
