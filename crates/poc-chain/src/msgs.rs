//! The messages the state machine executes. Names and fields follow the reference's
//! protobuf package `inference.inference` (the wire encoding lives with the transaction
//! layer); `creator` is always the participant's account address.

use serde::{Deserialize, Serialize};

use crate::params::Params;

/// `MLNodeWeight{node_id=1, weight=2}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MlNodeWeight {
    /// ML node id (self-reported).
    pub node_id: String,
    /// Artifacts attributed to it.
    pub weight: u32,
}

/// `PoCValidationPayloadV2{participant_address=1, validated_weight=2}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationPayloadV2 {
    /// Validated participant.
    pub participant_address: String,
    /// > 0: valid vote; ≤ 0: invalid vote.
    #[serde(with = "crate::json::i64_string")]
    pub validated_weight: i64,
}

/// A message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "@type")]
pub enum Msg {
    /// `MsgSubmitPocBatch` (v1).
    #[serde(rename = "/inference.inference.MsgSubmitPocBatch")]
    SubmitPocBatch {
        /// Participant.
        creator: String,
        /// Stage height.
        #[serde(with = "crate::json::i64_string")]
        poc_stage_start_block_height: i64,
        batch_id: String,
        nonces: Vec<i64>,
        /// Distances.
        dist: Vec<f64>,
        /// ML node id.
        node_id: String,
    },
    /// `MsgSubmitPocValidation` (v1).
    #[serde(rename = "/inference.inference.MsgSubmitPocValidation")]
    SubmitPocValidation {
        /// Validator.
        creator: String,
        /// Validated participant.
        participant_address: String,
        /// Stage height.
        #[serde(with = "crate::json::i64_string")]
        poc_stage_start_block_height: i64,
        /// The verdict.
        fraud_detected: bool,
    },
    /// `MsgPoCV2StoreCommit`.
    #[serde(rename = "/inference.inference.MsgPoCV2StoreCommit")]
    PocV2StoreCommit {
        /// Participant.
        creator: String,
        /// Stage height.
        #[serde(with = "crate::json::i64_string")]
        poc_stage_start_block_height: i64,
        /// Leaves in the committed snapshot.
        count: u32,
        /// MMR root (32 bytes).
        #[serde(with = "crate::json::base64_bytes")]
        root_hash: Vec<u8>,
    },
    /// `MsgMLNodeWeightDistribution`.
    #[serde(rename = "/inference.inference.MsgMLNodeWeightDistribution")]
    MlNodeWeightDistribution {
        /// Participant.
        creator: String,
        /// Stage height.
        #[serde(with = "crate::json::i64_string")]
        poc_stage_start_block_height: i64,
        /// Per-node counts.
        weights: Vec<MlNodeWeight>,
    },
    /// `MsgSubmitPocValidationsV2`.
    #[serde(rename = "/inference.inference.MsgSubmitPocValidationsV2")]
    SubmitPocValidationsV2 {
        /// Validator.
        creator: String,
        /// Stage height.
        #[serde(with = "crate::json::i64_string")]
        poc_stage_start_block_height: i64,
        /// Verdicts.
        validations: Vec<ValidationPayloadV2>,
    },
    /// `MsgSubmitNewParticipant`: registers the signer as a participant.
    #[serde(rename = "/inference.inference.MsgSubmitNewParticipant")]
    SubmitNewParticipant {
        /// Participant account.
        creator: String,
        /// Public inference / proof API URL.
        url: String,
        /// Consensus key (base64); must be non-empty to receive weight.
        validator_key: String,
    },
    /// `MsgSubmitSeed`: the participant's random seed for an epoch.
    #[serde(rename = "/inference.inference.MsgSubmitSeed")]
    SubmitSeed {
        /// Participant.
        creator: String,
        /// Epoch the seed is for.
        #[serde(with = "crate::json::u64_string")]
        epoch_index: u64,
        /// Seed signature (opaque).
        signature: String,
    },
    /// `cosmos.authz.v1beta1.MsgGrant` with a generic authorization for one message type.
    #[serde(rename = "/cosmos.authz.v1beta1.MsgGrant")]
    Grant {
        /// Account granting.
        granter: String,
        /// Key receiving the grant.
        grantee: String,
        /// Message type URL allowed.
        msg_type_url: String,
    },
    /// `cosmos.authz.v1beta1.MsgRevoke`.
    #[serde(rename = "/cosmos.authz.v1beta1.MsgRevoke")]
    Revoke {
        /// Account that granted.
        granter: String,
        grantee: String,
        /// Message type URL.
        msg_type_url: String,
    },
    /// `MsgUpdateParams` (governance).
    #[serde(rename = "/inference.inference.MsgUpdateParams")]
    UpdateParams {
        /// Must be the genesis authority.
        authority: String,
        /// The complete new parameters.
        params: Box<Params>,
    },
}

impl Msg {
    /// The type URL.
    pub fn type_url(&self) -> &'static str {
        match self {
            Self::SubmitPocBatch { .. } => "/inference.inference.MsgSubmitPocBatch",
            Self::SubmitPocValidation { .. } => "/inference.inference.MsgSubmitPocValidation",
            Self::PocV2StoreCommit { .. } => "/inference.inference.MsgPoCV2StoreCommit",
            Self::MlNodeWeightDistribution { .. } => {
                "/inference.inference.MsgMLNodeWeightDistribution"
            }
            Self::SubmitPocValidationsV2 { .. } => "/inference.inference.MsgSubmitPocValidationsV2",
            Self::SubmitNewParticipant { .. } => "/inference.inference.MsgSubmitNewParticipant",
            Self::SubmitSeed { .. } => "/inference.inference.MsgSubmitSeed",
            Self::Grant { .. } => "/cosmos.authz.v1beta1.MsgGrant",
            Self::Revoke { .. } => "/cosmos.authz.v1beta1.MsgRevoke",
            Self::UpdateParams { .. } => "/inference.inference.MsgUpdateParams",
        }
    }

    /// The address the message acts for (`creator`, `granter` or `authority`).
    pub fn signer(&self) -> &str {
        match self {
            Self::SubmitPocBatch { creator, .. }
            | Self::SubmitPocValidation { creator, .. }
            | Self::PocV2StoreCommit { creator, .. }
            | Self::MlNodeWeightDistribution { creator, .. }
            | Self::SubmitPocValidationsV2 { creator, .. }
            | Self::SubmitNewParticipant { creator, .. }
            | Self::SubmitSeed { creator, .. } => creator,
            Self::Grant { granter, .. } | Self::Revoke { granter, .. } => granter,
            Self::UpdateParams { authority, .. } => authority,
        }
    }
}

/// The message types an operational key may be granted (`InferenceOperationKeyPerms`,
/// the PoC subset plus seeds).
pub const OPERATIONAL_PERMISSIONS: [&str; 6] = [
    "/inference.inference.MsgSubmitPocBatch",
    "/inference.inference.MsgSubmitPocValidation",
    "/inference.inference.MsgSubmitPocValidationsV2",
    "/inference.inference.MsgPoCV2StoreCommit",
    "/inference.inference.MsgMLNodeWeightDistribution",
    "/inference.inference.MsgSubmitSeed",
];
