//! The records the chain stores: PoC commits, distributions, votes and batches,
//! participants, epoch groups and validation snapshots (see
//! `docs/protocol/chain-and-api.md` §2 and §5 for their reference names).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::msgs::MlNodeWeight;

/// `PoCV2StoreCommit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreCommit {
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
    pub participant_address: String,
    /// Stage height.
    #[serde(with = "crate::json::i64_string")]
    pub poc_stage_start_block_height: i64,
    /// Block it landed in.
    #[serde(with = "crate::json::i64_string")]
    pub received_at_block_height: i64,
    pub nonces: Vec<i64>,
    /// Distances.
    pub dist: Vec<f64>,
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
    pub status: ParticipantStatus,
    /// Why it became inactive.
    pub status_reason: String,
    /// Latest confirmation ratio (18-place decimal text), if any.
    pub confirmation_poc_ratio: String,
}

/// One ML node's share of a participant's weight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MlNodeAllocation {
    pub node_id: String,
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
    /// The app hash at that time (the previous block's), which seeds slot assignment.
    #[serde(with = "crate::json::hex32")]
    pub app_hash: [u8; 32],
    /// Validator weights sorted by address.
    pub validator_weights: Vec<(String, i64)>,
    /// Unix seconds of the generation start block.
    #[serde(with = "crate::json::i64_string")]
    pub generation_start_timestamp: i64,
    /// Unix seconds of the validation start block.
    #[serde(with = "crate::json::i64_string")]
    pub exchange_end_timestamp: i64,
}
