//! The chain state and the message handlers (`chain-and-api.md` §1.5, §2).

use std::collections::BTreeMap;

use crate::tracked::Tracked;

use serde::{Deserialize, Serialize};

use crate::confirmation::{ConfirmationEvent, ConfirmationPhase};
use crate::epoch::{Epoch, EpochContext};
use crate::error::{ChainResult, ErrorKind, err};
use crate::msgs::{MlNodeWeight, Msg};
use crate::params::Params;

/// `PoCV2StoreCommit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreCommit {
    /// Participant.
    pub participant_address: String,
    /// Stage height.
    #[serde(with = "crate::json::i64_string")]
    pub poc_stage_start_block_height: i64,
    /// Leaves committed.
    pub count: u32,
    /// MMR root.
    #[serde(with = "crate::json::base64_bytes")]
    pub root_hash: Vec<u8>,
    /// Block the commit landed in.
    #[serde(with = "crate::json::i64_string")]
    pub commit_block_height: i64,
}

/// `MLNodeWeightDistribution`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightDistribution {
    /// Participant.
    pub participant_address: String,
    /// Stage height.
    #[serde(with = "crate::json::i64_string")]
    pub poc_stage_start_block_height: i64,
    /// Per-node counts.
    pub weights: Vec<MlNodeWeight>,
}

/// `PoCValidationV2`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationV2 {
    /// Validated participant.
    pub participant_address: String,
    /// Voting validator.
    pub validator_participant_address: String,
    /// Stage height.
    #[serde(with = "crate::json::i64_string")]
    pub poc_stage_start_block_height: i64,
    /// > 0 valid, ≤ 0 invalid.
    #[serde(with = "crate::json::i64_string")]
    pub validated_weight: i64,
}

/// `PoCBatch` (v1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PocBatch {
    /// Participant.
    pub participant_address: String,
    /// Stage height.
    #[serde(with = "crate::json::i64_string")]
    pub poc_stage_start_block_height: i64,
    /// Block it landed in.
    #[serde(with = "crate::json::i64_string")]
    pub received_at_block_height: i64,
    /// Nonces.
    pub nonces: Vec<i64>,
    /// Distances.
    pub dist: Vec<f64>,
    /// Batch id.
    pub batch_id: String,
    /// ML node id.
    pub node_id: String,
}

/// `PoCValidation` (v1; only the verdict matters for weights).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PocValidationV1 {
    /// Validated participant.
    pub participant_address: String,
    /// Voting validator.
    pub validator_participant_address: String,
    /// Stage height.
    #[serde(with = "crate::json::i64_string")]
    pub poc_stage_start_block_height: i64,
    /// Block it landed in.
    #[serde(with = "crate::json::i64_string")]
    pub validated_at_block_height: i64,
    /// The verdict.
    pub fraud_detected: bool,
}

/// Participant status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParticipantStatus {
    /// Taking part.
    #[serde(rename = "ACTIVE")]
    Active,
    /// Deactivated (e.g. `failed_confirmation_poc`).
    #[serde(rename = "INACTIVE")]
    Inactive,
}

/// A registered participant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    /// Account address.
    pub address: String,
    /// Lowercase hex of the 33-byte compressed secp256k1 key.
    pub hex_pub_key: String,
    /// Public URL (inference and proof API).
    pub inference_url: String,
    /// Consensus key; weight needs it non-empty.
    pub validator_key: String,
    /// Status.
    pub status: ParticipantStatus,
    /// Why it became inactive.
    pub status_reason: String,
    /// Latest confirmation ratio (18-place decimal text), if any.
    pub confirmation_poc_ratio: String,
}

/// One ML node's share of a participant's weight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MlNodeAllocation {
    /// Node id.
    pub node_id: String,
    /// PoC weight.
    #[serde(with = "crate::json::i64_string")]
    pub poc_weight: i64,
    /// Kept serving inference during PoC (`timeslot_allocation[1]`).
    pub poc_slot: bool,
}

/// `ActiveParticipant` of an epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveParticipant {
    /// Address.
    pub index: String,
    /// Consensus key.
    pub validator_key: String,
    /// Total weight.
    #[serde(with = "crate::json::i64_string")]
    pub weight: i64,
    /// URL.
    pub inference_url: String,
    /// Seed signature for the epoch.
    pub seed: String,
    /// Per-node weights, sorted by node id.
    pub ml_nodes: Vec<MlNodeAllocation>,
}

/// An epoch's group: validator weights (who votes) and the weights PoC produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochGroup {
    /// Validator weight per address.
    pub members: BTreeMap<String, i64>,
    /// Participants with their PoC weights.
    pub participants: Vec<ActiveParticipant>,
    /// Confirmation weights (only ever lowered by confirmation PoC).
    pub confirmation_weights: BTreeMap<String, i64>,
}

/// `PoCValidationSnapshot`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationSnapshot {
    /// Stage height.
    #[serde(with = "crate::json::i64_string")]
    pub poc_stage_start_height: i64,
    /// Height taken.
    #[serde(with = "crate::json::i64_string")]
    pub snapshot_height: i64,
    /// Lowercase hex app hash at that time.
    pub app_hash: String,
    /// Validator weights sorted by address.
    pub validator_weights: Vec<(String, i64)>,
    /// Unix seconds of the generation start block.
    #[serde(with = "crate::json::i64_string")]
    pub generation_start_timestamp: i64,
    /// Unix seconds of the validation start block.
    #[serde(with = "crate::json::i64_string")]
    pub exchange_end_timestamp: i64,
}

/// The block being executed, as the state machine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockContext {
    /// Height.
    pub height: i64,
    /// Unix seconds (from the header).
    pub time: i64,
    /// The block's hash (`HeaderInfo().Hash`).
    pub hash: [u8; 32],
}

/// A participant in the genesis file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisParticipant {
    /// Account address.
    pub address: String,
    /// Lowercase hex compressed public key.
    pub hex_pub_key: String,
    /// URL.
    pub inference_url: String,
    /// Consensus key.
    pub validator_key: String,
    /// Initial validator weight.
    #[serde(with = "crate::json::i64_string")]
    pub weight: i64,
}

/// Genesis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    /// Chain id.
    pub chain_id: String,
    /// Unix seconds of the genesis.
    #[serde(with = "crate::json::i64_string")]
    pub genesis_time: i64,
    /// Governance authority address (`MsgUpdateParams`).
    pub authority: String,
    /// Parameters.
    pub params: Params,
    /// Initial participants (the epoch-0 validator set).
    pub participants: Vec<GenesisParticipant>,
    /// The block-signing (consensus) validators of a replicated chain, each with equal
    /// voting power. Empty for a single-producer chain. Not part of the state machine:
    /// PoC weights stay the state's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consensus_validators: Vec<ConsensusValidator>,
}

/// One consensus validator of a replicated chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsensusValidator {
    /// A label for logs and status.
    pub name: String,
    /// Its ed25519 public key, 64 lowercase hex characters.
    pub public_key: String,
}

/// The whole state. Collections are ordered maps, so iteration (and the app hash) is
/// deterministic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainState {
    /// Chain id.
    pub chain_id: String,
    /// Last executed height (0 before the first block).
    pub height: i64,
    /// Time of the last block.
    pub time: i64,
    /// Governance authority.
    pub authority: String,
    /// Parameters.
    pub params: Params,
    /// The epoch whose validators are active.
    pub effective_epoch: Epoch,
    /// The newest epoch (the upcoming one while its PoC runs).
    pub latest_epoch: Epoch,
    /// Account public keys (hex), learned from genesis and signed transactions.
    pub accounts: BTreeMap<String, String>,
    /// Next expected transaction sequence per account.
    pub sequences: BTreeMap<String, u64>,
    /// Registered participants.
    pub participants: BTreeMap<String, Participant>,
    /// Authz grants: (granter, grantee, msg type url).
    #[serde(with = "crate::json::entries")]
    pub grants: BTreeMap<(String, String, String), ()>,
    /// Seeds: (epoch, participant) → signature.
    #[serde(with = "crate::tracked::entries")]
    pub seeds: Tracked<(u64, String), String>,
    /// Groups by epoch index.
    pub epoch_groups: Tracked<u64, EpochGroup>,
    /// `PoCV2StoreCommits[(height, participant)]`.
    #[serde(with = "crate::tracked::entries")]
    pub commits: Tracked<(i64, String), StoreCommit>,
    /// `MLNodeWeightDistributions[(height, participant)]`.
    #[serde(with = "crate::tracked::entries")]
    pub distributions: Tracked<(i64, String), WeightDistribution>,
    /// `PoCValidationsV2[(height, participant, validator)]`.
    #[serde(with = "crate::tracked::entries")]
    pub validations_v2: Tracked<(i64, String, String), ValidationV2>,
    /// `PoCBatches[(height, participant, batch_id)]`.
    #[serde(with = "crate::tracked::entries")]
    pub batches_v1: Tracked<(i64, String, String), PocBatch>,
    /// `PoCValidations[(height, participant, validator)]`.
    #[serde(with = "crate::tracked::entries")]
    pub validations_v1: Tracked<(i64, String, String), PocValidationV1>,
    /// `ConfirmationPoCEvents[(epoch, sequence)]`.
    #[serde(with = "crate::tracked::entries")]
    pub confirmation_events: Tracked<(u64, u64), ConfirmationEvent>,
    /// `ActiveConfirmationPoCEvent`.
    pub active_event: Option<ConfirmationEvent>,
    /// `PocV2EnabledEpoch` (the grace epoch).
    pub poc_v2_enabled_epoch: Option<u64>,
    /// Generation start block times by stage height.
    pub generation_start_times: Tracked<i64, i64>,
    /// `PoCValidationSnapshots`.
    pub snapshots: Tracked<i64, ValidationSnapshot>,
    /// App hash after the last block (lowercase hex). Empty in the form the app hash is
    /// taken over (it commits to the previous one through the header chain instead).
    #[serde(serialize_with = "crate::tracked::blank_in_hash_mode")]
    pub app_hash: String,
}

/// Which window `CheckPoCMessageTooLate` checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowType {
    /// Batches and commits.
    Batch,
    /// Validations and distributions.
    Validation,
}

fn valid_address(a: &str) -> bool {
    crate::address::is_valid(a)
}

impl ChainState {
    /// The state at genesis.
    pub fn from_genesis(g: &Genesis) -> Self {
        let mut s = Self {
            chain_id: g.chain_id.clone(),
            height: 0,
            time: g.genesis_time,
            authority: g.authority.clone(),
            params: g.params.clone(),
            effective_epoch: Epoch {
                index: 0,
                poc_start_block_height: 0,
            },
            latest_epoch: Epoch {
                index: 0,
                poc_start_block_height: 0,
            },
            accounts: BTreeMap::new(),
            sequences: BTreeMap::new(),
            participants: BTreeMap::new(),
            grants: BTreeMap::new(),
            seeds: Tracked::default(),
            epoch_groups: Tracked::default(),
            commits: Tracked::default(),
            distributions: Tracked::default(),
            validations_v2: Tracked::default(),
            batches_v1: Tracked::default(),
            validations_v1: Tracked::default(),
            confirmation_events: Tracked::default(),
            active_event: None,
            poc_v2_enabled_epoch: None,
            generation_start_times: Tracked::default(),
            snapshots: Tracked::default(),
            app_hash: String::new(),
        };
        if g.params.poc_params.poc_v2_enabled {
            s.poc_v2_enabled_epoch = Some(0);
        }
        let mut group = EpochGroup::default();
        for p in &g.participants {
            s.accounts.insert(p.address.clone(), p.hex_pub_key.clone());
            s.participants.insert(
                p.address.clone(),
                Participant {
                    address: p.address.clone(),
                    hex_pub_key: p.hex_pub_key.clone(),
                    inference_url: p.inference_url.clone(),
                    validator_key: p.validator_key.clone(),
                    status: ParticipantStatus::Active,
                    status_reason: String::new(),
                    confirmation_poc_ratio: String::new(),
                },
            );
            group.members.insert(p.address.clone(), p.weight);
            group
                .confirmation_weights
                .insert(p.address.clone(), p.weight);
            group.participants.push(ActiveParticipant {
                index: p.address.clone(),
                validator_key: p.validator_key.clone(),
                weight: p.weight,
                inference_url: p.inference_url.clone(),
                seed: String::new(),
                ml_nodes: vec![],
            });
        }
        s.epoch_groups.insert(0, group);
        s
    }

    /// Context of the effective epoch.
    pub fn effective_ctx(&self) -> EpochContext {
        EpochContext::new(self.effective_epoch, self.params.epoch_params.clone())
    }

    /// The upcoming epoch (created at its PoC start, effective at its SetNewValidators).
    pub fn upcoming(&self) -> Option<Epoch> {
        (self.latest_epoch.index > self.effective_epoch.index).then_some(self.latest_epoch)
    }

    /// Context of the upcoming epoch.
    pub fn upcoming_ctx(&self) -> Option<EpochContext> {
        self.upcoming()
            .map(|e| EpochContext::new(e, self.params.epoch_params.clone()))
    }

    /// Context of the latest epoch (what phase trackers follow).
    pub fn latest_ctx(&self) -> EpochContext {
        EpochContext::new(self.latest_epoch, self.params.epoch_params.clone())
    }

    /// The V2 gate: `poc_v2_enabled`, or migration tracking (confirmation V2 enabled and the
    /// active event has sequence 0).
    pub fn v2_gate(&self) -> bool {
        let p = &self.params.poc_params;
        p.poc_v2_enabled
            || (p.confirmation_poc_v2_enabled
                && self
                    .active_event
                    .as_ref()
                    .is_some_and(|e| e.event_sequence == 0))
    }

    /// `CheckPoCMessageTooLate` (the CheckTx-only ante rule).
    pub fn check_poc_message_too_late(
        &self,
        h: i64,
        start: i64,
        window: WindowType,
    ) -> ChainResult<()> {
        if start > h {
            return Err(err(
                ErrorKind::PocWrongStartBlockHeight,
                format!("stage height {start} is in the future"),
            ));
        }
        let ep = &self.params.epoch_params;
        if let Some(ev) = &self.active_event {
            if start != ev.trigger_height {
                return Err(err(
                    ErrorKind::PocWrongStartBlockHeight,
                    format!(
                        "expected the confirmation trigger height {}",
                        ev.trigger_height
                    ),
                ));
            }
            let limit = match window {
                WindowType::Batch => ev.exchange_end(ep),
                WindowType::Validation => ev.validation_end(ep),
            };
            return if h > limit {
                Err(err(
                    ErrorKind::PocTooLate,
                    format!("the window ended at {limit}"),
                ))
            } else {
                Ok(())
            };
        }
        if start <= self.effective_ctx().start_of_poc() {
            return Err(err(
                ErrorKind::UpcomingEpochNotFound,
                "PoC stage already finished",
            ));
        }
        let Some(u) = self.upcoming_ctx() else {
            return Err(err(
                ErrorKind::UpcomingEpochNotFound,
                "PoC stage already finished",
            ));
        };
        if start != u.start_of_poc() {
            return Err(err(
                ErrorKind::PocWrongStartBlockHeight,
                format!("expected stage height {}", u.start_of_poc()),
            ));
        }
        let limit = match window {
            WindowType::Batch => u.poc_exchange_deadline(),
            WindowType::Validation => u.end_of_poc_validation(),
        };
        if h > limit {
            Err(err(
                ErrorKind::PocTooLate,
                format!("the window ended at {limit}"),
            ))
        } else {
            Ok(())
        }
    }

    /// The ante checks of CheckTx (`PocPeriodValidationDecorator`): run before a
    /// transaction enters the mempool, never during block execution.
    pub fn ante_check(&self, h: i64, msg: &Msg) -> ChainResult<()> {
        let v2 = self.params.poc_params.poc_v2_enabled;
        let gate = || {
            if self.v2_gate() {
                Ok(())
            } else {
                Err(err(
                    ErrorKind::NotSupported,
                    "V2 disabled when poc_v2_enabled=false",
                ))
            }
        };
        match msg {
            Msg::SubmitPocBatch {
                poc_stage_start_block_height: s,
                ..
            } => {
                if v2 {
                    return Err(err(ErrorKind::Deprecated, "PoC v1 batches are deprecated"));
                }
                self.check_poc_message_too_late(h, *s, WindowType::Batch)
            }
            Msg::SubmitPocValidation {
                poc_stage_start_block_height: s,
                ..
            } => {
                if v2 {
                    return Err(err(
                        ErrorKind::Deprecated,
                        "PoC v1 validations are deprecated",
                    ));
                }
                self.check_poc_message_too_late(h, *s, WindowType::Validation)
            }
            Msg::SubmitPocValidationsV2 {
                poc_stage_start_block_height: s,
                ..
            } => {
                gate()?;
                self.check_poc_message_too_late(h, *s, WindowType::Validation)
            }
            Msg::PocV2StoreCommit {
                poc_stage_start_block_height: s,
                ..
            } => {
                gate()?;
                self.check_poc_message_too_late(h, *s, WindowType::Batch)
            }
            Msg::MlNodeWeightDistribution {
                poc_stage_start_block_height: s,
                ..
            } => {
                gate()?;
                self.check_poc_message_too_late(h, *s, WindowType::Validation)
            }
            _ => Ok(()),
        }
    }

    fn blocked(&self, addr: &str) -> bool {
        self.params
            .access_params
            .blocked_participant_addresses
            .iter()
            .any(|a| a == addr)
    }

    /// Whether `grantee` may send `type_url` for `granter`.
    pub fn is_granted(&self, granter: &str, grantee: &str, type_url: &str) -> bool {
        self.grants
            .contains_key(&(granter.to_owned(), grantee.to_owned(), type_url.to_owned()))
    }

    /// Executes one message of a block (the authoritative handler rules). Fails without
    /// changing anything.
    pub fn deliver(&mut self, ctx: &BlockContext, msg: &Msg) -> ChainResult<()> {
        let h = ctx.height;
        let ep = self.params.epoch_params.clone();
        match msg {
            Msg::PocV2StoreCommit {
                creator,
                poc_stage_start_block_height: start,
                count,
                root_hash,
            } => {
                if !self.v2_gate() {
                    return Err(err(
                        ErrorKind::NotSupported,
                        "V2 disabled when poc_v2_enabled=false",
                    ));
                }
                if *count == 0 {
                    return Err(err(ErrorKind::IllegalState, "count must be positive"));
                }
                if root_hash.len() != 32 {
                    return Err(err(
                        ErrorKind::IllegalState,
                        format!("root_hash must be 32 bytes, got {}", root_hash.len()),
                    ));
                }
                match self
                    .active_event
                    .as_ref()
                    .filter(|e| e.trigger_height == *start)
                {
                    Some(ev) => {
                        if !ev.in_batch_window(h, &ep) {
                            return Err(err(
                                ErrorKind::PocTooLate,
                                "outside the confirmation batch window",
                            ));
                        }
                    }
                    None => self.check_regular(*start, h, WindowType::Batch, true)?,
                }
                if !valid_address(creator) {
                    return Err(err(
                        ErrorKind::InvalidAddress,
                        format!("invalid creator address {creator:?}"),
                    ));
                }
                let key = (*start, creator.clone());
                if let Some(existing) = self.commits.get(&key) {
                    if existing.commit_block_height == h {
                        return Err(err(ErrorKind::IllegalState, "only one commit per block"));
                    }
                    if *count <= existing.count {
                        return Err(err(
                            ErrorKind::IllegalState,
                            format!(
                                "count must increase (stored {}, got {count})",
                                existing.count
                            ),
                        ));
                    }
                }
                self.commits.insert(
                    key,
                    StoreCommit {
                        participant_address: creator.clone(),
                        poc_stage_start_block_height: *start,
                        count: *count,
                        root_hash: root_hash.clone(),
                        commit_block_height: h,
                    },
                );
                Ok(())
            }
            Msg::MlNodeWeightDistribution {
                creator,
                poc_stage_start_block_height: start,
                weights,
            } => {
                if !self.v2_gate() {
                    return Err(err(
                        ErrorKind::NotSupported,
                        "V2 disabled when poc_v2_enabled=false",
                    ));
                }
                if weights.is_empty() {
                    return Err(err(ErrorKind::IllegalState, "weights must not be empty"));
                }
                match &self.active_event {
                    Some(ev) => {
                        if *start != ev.trigger_height {
                            return Err(err(
                                ErrorKind::PocWrongStartBlockHeight,
                                format!(
                                    "expected the confirmation trigger height {}",
                                    ev.trigger_height
                                ),
                            ));
                        }
                        if h > ev.validation_end(&ep) {
                            return Err(err(
                                ErrorKind::PocTooLate,
                                "after the confirmation validation end",
                            ));
                        }
                    }
                    None => {
                        let u = self.upcoming_ctx().ok_or_else(|| {
                            err(ErrorKind::UpcomingEpochNotFound, "no upcoming epoch")
                        })?;
                        if *start != u.start_of_poc() {
                            return Err(err(
                                ErrorKind::PocWrongStartBlockHeight,
                                format!("expected stage height {}", u.start_of_poc()),
                            ));
                        }
                        if h > u.end_of_poc_validation() {
                            return Err(err(
                                ErrorKind::PocTooLate,
                                "after the end of PoC validation",
                            ));
                        }
                    }
                }
                let key = (*start, creator.clone());
                let commit = self
                    .commits
                    .get(&key)
                    .ok_or_else(|| err(ErrorKind::IllegalState, "no store commit found"))?;
                let sum: u64 = weights.iter().map(|w| u64::from(w.weight)).sum();
                if sum != u64::from(commit.count) {
                    return Err(err(
                        ErrorKind::IllegalState,
                        format!(
                            "weights sum to {sum}, the committed count is {}",
                            commit.count
                        ),
                    ));
                }
                self.distributions.insert(
                    key,
                    WeightDistribution {
                        participant_address: creator.clone(),
                        poc_stage_start_block_height: *start,
                        weights: weights.clone(),
                    },
                );
                Ok(())
            }
            Msg::SubmitPocValidationsV2 {
                creator,
                poc_stage_start_block_height: start,
                validations,
            } => {
                if !self.v2_gate() {
                    return Err(err(
                        ErrorKind::NotSupported,
                        "V2 disabled when poc_v2_enabled=false",
                    ));
                }
                if self.blocked(creator) {
                    return Err(err(
                        ErrorKind::ParticipantBlocked,
                        format!("{creator} is blocked"),
                    ));
                }
                match self
                    .active_event
                    .as_ref()
                    .filter(|e| e.phase == ConfirmationPhase::Validation)
                {
                    Some(ev) => {
                        if *start != ev.trigger_height {
                            return Err(err(
                                ErrorKind::PocWrongStartBlockHeight,
                                format!(
                                    "expected the confirmation trigger height {}",
                                    ev.trigger_height
                                ),
                            ));
                        }
                        if !ev.in_validation_window(h, &ep) {
                            return Err(err(
                                ErrorKind::PocTooLate,
                                "outside the confirmation validation window",
                            ));
                        }
                    }
                    None => self.check_regular(*start, h, WindowType::Validation, true)?,
                }
                for v in validations {
                    if !valid_address(&v.participant_address) {
                        continue;
                    }
                    let key = (*start, v.participant_address.clone(), creator.clone());
                    if self.validations_v2.contains_key(&key) {
                        continue;
                    }
                    self.validations_v2.insert(
                        key,
                        ValidationV2 {
                            participant_address: v.participant_address.clone(),
                            validator_participant_address: creator.clone(),
                            poc_stage_start_block_height: *start,
                            validated_weight: v.validated_weight,
                        },
                    );
                }
                Ok(())
            }
            Msg::SubmitPocBatch {
                creator,
                poc_stage_start_block_height: start,
                batch_id,
                nonces,
                dist,
                node_id,
            } => {
                validate_batch_basic(creator, *start, batch_id, nonces, dist, node_id)?;
                if self.params.poc_params.poc_v2_enabled {
                    return Err(err(ErrorKind::Deprecated, "PoC v1 batches are deprecated"));
                }
                if self.blocked(creator) {
                    return Err(err(
                        ErrorKind::ParticipantBlocked,
                        format!("{creator} is blocked"),
                    ));
                }
                if node_id.is_empty() {
                    return Err(err(ErrorKind::PocNodeIdEmpty, "node_id is empty"));
                }
                let stored_start = match self
                    .active_event
                    .as_ref()
                    .filter(|e| e.phase == ConfirmationPhase::Generation)
                {
                    Some(ev) => {
                        if *start != ev.trigger_height {
                            return Err(err(
                                ErrorKind::PocWrongStartBlockHeight,
                                format!(
                                    "expected the confirmation trigger height {}",
                                    ev.trigger_height
                                ),
                            ));
                        }
                        if !ev.in_batch_window(h, &ep) {
                            return Err(err(
                                ErrorKind::PocTooLate,
                                "outside the confirmation batch window",
                            ));
                        }
                        ev.trigger_height
                    }
                    None => {
                        self.check_regular(*start, h, WindowType::Batch, false)?;
                        *start
                    }
                };
                self.batches_v1.insert(
                    (stored_start, creator.clone(), batch_id.clone()),
                    PocBatch {
                        participant_address: creator.clone(),
                        poc_stage_start_block_height: stored_start,
                        received_at_block_height: h,
                        nonces: nonces.clone(),
                        dist: dist.clone(),
                        batch_id: batch_id.clone(),
                        node_id: node_id.clone(),
                    },
                );
                Ok(())
            }
            Msg::SubmitPocValidation {
                creator,
                participant_address,
                poc_stage_start_block_height: start,
                fraud_detected,
            } => {
                if !valid_address(creator) || !valid_address(participant_address) {
                    return Err(err(
                        ErrorKind::InvalidRequest,
                        "invalid creator or participant address",
                    ));
                }
                if *start <= 0 {
                    return Err(err(
                        ErrorKind::InvalidRequest,
                        "stage height must be positive",
                    ));
                }
                if self.params.poc_params.poc_v2_enabled {
                    return Err(err(
                        ErrorKind::Deprecated,
                        "PoC v1 validations are deprecated",
                    ));
                }
                if self.blocked(creator) {
                    return Err(err(
                        ErrorKind::ParticipantBlocked,
                        format!("{creator} is blocked"),
                    ));
                }
                let stored_start = match self
                    .active_event
                    .as_ref()
                    .filter(|e| e.phase == ConfirmationPhase::Validation)
                {
                    Some(ev) => {
                        if *start != ev.trigger_height {
                            return Err(err(
                                ErrorKind::PocWrongStartBlockHeight,
                                format!(
                                    "expected the confirmation trigger height {}",
                                    ev.trigger_height
                                ),
                            ));
                        }
                        if !ev.in_validation_window(h, &ep) {
                            return Err(err(
                                ErrorKind::PocTooLate,
                                "outside the confirmation validation window",
                            ));
                        }
                        ev.trigger_height
                    }
                    None => {
                        self.check_regular(*start, h, WindowType::Validation, true)?;
                        *start
                    }
                };
                let key = (stored_start, participant_address.clone(), creator.clone());
                if self.validations_v1.contains_key(&key) {
                    return Err(err(
                        ErrorKind::PocValidationAlreadyExists,
                        "this validator already voted",
                    ));
                }
                self.validations_v1.insert(
                    key,
                    PocValidationV1 {
                        participant_address: participant_address.clone(),
                        validator_participant_address: creator.clone(),
                        poc_stage_start_block_height: stored_start,
                        validated_at_block_height: h,
                        fraud_detected: *fraud_detected,
                    },
                );
                Ok(())
            }
            Msg::SubmitNewParticipant {
                creator,
                url,
                validator_key,
            } => {
                if !valid_address(creator) {
                    return Err(err(
                        ErrorKind::InvalidAddress,
                        format!("invalid creator address {creator:?}"),
                    ));
                }
                let hex = self.accounts.get(creator).cloned().unwrap_or_default();
                let entry =
                    self.participants
                        .entry(creator.clone())
                        .or_insert_with(|| Participant {
                            address: creator.clone(),
                            hex_pub_key: hex.clone(),
                            inference_url: String::new(),
                            validator_key: String::new(),
                            status: ParticipantStatus::Active,
                            status_reason: String::new(),
                            confirmation_poc_ratio: String::new(),
                        });
                entry.inference_url = url.clone();
                entry.validator_key = validator_key.clone();
                if entry.hex_pub_key.is_empty() {
                    entry.hex_pub_key = hex;
                }
                Ok(())
            }
            Msg::SubmitSeed {
                creator,
                epoch_index,
                signature,
            } => {
                if !self.participants.contains_key(creator) {
                    return Err(err(
                        ErrorKind::IllegalState,
                        format!("{creator} is not a registered participant"),
                    ));
                }
                if *epoch_index == 0 || *epoch_index > self.latest_epoch.index + 1 {
                    return Err(err(
                        ErrorKind::InvalidRequest,
                        format!("no seed can be set for epoch {epoch_index}"),
                    ));
                }
                self.seeds
                    .insert((*epoch_index, creator.clone()), signature.clone());
                Ok(())
            }
            Msg::Grant {
                granter,
                grantee,
                msg_type_url,
            } => {
                if !valid_address(granter) || !valid_address(grantee) || granter == grantee {
                    return Err(err(
                        ErrorKind::InvalidRequest,
                        "granter and grantee must be two valid addresses",
                    ));
                }
                self.grants
                    .insert((granter.clone(), grantee.clone(), msg_type_url.clone()), ());
                Ok(())
            }
            Msg::Revoke {
                granter,
                grantee,
                msg_type_url,
            } => {
                if self
                    .grants
                    .remove(&(granter.clone(), grantee.clone(), msg_type_url.clone()))
                    .is_none()
                {
                    return Err(err(ErrorKind::InvalidRequest, "no such grant"));
                }
                Ok(())
            }
            Msg::UpdateParams { authority, params } => {
                if *authority != self.authority {
                    return Err(err(
                        ErrorKind::InvalidSigner,
                        format!("expected the authority {}", self.authority),
                    ));
                }
                params
                    .validate()
                    .map_err(|e| err(ErrorKind::InvalidRequest, e))?;
                let was = self.params.poc_params.poc_v2_enabled;
                if !was && params.poc_params.poc_v2_enabled && self.poc_v2_enabled_epoch.is_none() {
                    self.poc_v2_enabled_epoch = Some(self.effective_epoch.index);
                }
                self.params = (**params).clone();
                Ok(())
            }
        }
    }

    /// The regular-PoC window rule shared by the handlers: an upcoming epoch must exist
    /// (1128), `start` must be its S (1107), and `h` must be in the PoC exchange window
    /// (batch) or the validation exchange window (validation) (1108). `lower_bound` adds
    /// the window's start, as every handler but the distribution's does.
    fn check_regular(
        &self,
        start: i64,
        h: i64,
        window: WindowType,
        lower_bound: bool,
    ) -> ChainResult<()> {
        let u = self
            .upcoming_ctx()
            .ok_or_else(|| err(ErrorKind::UpcomingEpochNotFound, "no upcoming epoch"))?;
        if start != u.start_of_poc() {
            return Err(err(
                ErrorKind::PocWrongStartBlockHeight,
                format!("expected stage height {}", u.start_of_poc()),
            ));
        }
        let w = match window {
            WindowType::Batch => u.poc_exchange_window(),
            WindowType::Validation => u.validation_exchange_window(),
        };
        let ok = if lower_bound {
            w.contains(h)
        } else {
            h <= w.end
        };
        if ok {
            Ok(())
        } else {
            Err(err(
                ErrorKind::PocTooLate,
                format!("height {h} is outside [{}, {}]", w.start, w.end),
            ))
        }
    }
}

/// `MsgSubmitPocBatch.ValidateBasic`.
fn validate_batch_basic(
    creator: &str,
    start: i64,
    batch_id: &str,
    nonces: &[i64],
    dist: &[f64],
    node_id: &str,
) -> ChainResult<()> {
    let bad = |m: &str| Err(err(ErrorKind::InvalidRequest, m));
    if !valid_address(creator) {
        return bad("invalid creator address");
    }
    if start <= 0 {
        return bad("stage height must be positive");
    }
    if batch_id.trim().is_empty() || batch_id.len() > 128 {
        return bad("batch_id must be 1..=128 characters");
    }
    if node_id.len() > 128 {
        return bad("node_id must be at most 128 characters");
    }
    if nonces.is_empty() || nonces.len() > 10_000 || nonces.iter().any(|n| *n < 0) {
        return bad("nonces must be 1..=10000 non-negative values");
    }
    if dist.is_empty() || dist.len() > 10_000 || dist.iter().any(|d| !d.is_finite() || *d < 0.0) {
        return bad("dist must be 1..=10000 finite non-negative values");
    }
    if nonces.len() != dist.len() {
        return bad("nonces and dist differ in length");
    }
    Ok(())
}

impl Genesis {
    /// Checks everything a chain needs from its genesis, with a message naming the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.chain_id.trim().is_empty() || self.chain_id.len() > 64 {
            return Err("chain_id must be 1..=64 characters".into());
        }
        if !valid_address(&self.authority) {
            return Err(format!(
                "authority {:?} is not a gonka1… address",
                self.authority
            ));
        }
        self.params.validate().map_err(|e| format!("params: {e}"))?;
        let mut keys = std::collections::BTreeSet::new();
        for (i, v) in self.consensus_validators.iter().enumerate() {
            let ok = v.public_key.len() == 64
                && v.public_key
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !ok {
                return Err(format!(
                    "consensus_validators[{i}].public_key must be 64 lowercase hex characters (an ed25519 key)"
                ));
            }
            if !keys.insert(&v.public_key) {
                return Err(format!(
                    "consensus_validators[{i}].public_key is listed twice"
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, p) in self.participants.iter().enumerate() {
            if !valid_address(&p.address) {
                return Err(format!(
                    "participants[{i}].address {:?} is not a gonka1… address",
                    p.address
                ));
            }
            if !seen.insert(&p.address) {
                return Err(format!(
                    "participants[{i}].address {} is listed twice",
                    p.address
                ));
            }
            let key = hex::decode(&p.hex_pub_key)
                .map_err(|_| format!("participants[{i}].hex_pub_key is not hex"))?;
            if !crate::tx::valid_pubkey(&key) || crate::address::from_pubkey(&key) != p.address {
                return Err(format!(
                    "participants[{i}].hex_pub_key is not the compressed key of {}",
                    p.address
                ));
            }
            if p.weight < 0 {
                return Err(format!("participants[{i}].weight must not be negative"));
            }
        }
        Ok(())
    }
}
