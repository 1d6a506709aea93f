//! The REST API's JSON shapes (gRPC-gateway conventions: int64/uint64 as strings,
//! bytes as base64, enums by name), shared by the chain node and its client.

use serde::{Deserialize, Serialize};

use crate::confirmation::ConfirmationEvent;
use crate::epoch::{Epoch, EpochStages};
use crate::msgs::MlNodeWeight;
use crate::params::Params;
use crate::records::{ActiveParticipant, PocBatch, PocValidationV1, ValidationV2};
use crate::tx::TxResult;

/// The REST prefix of the inference module's queries.
pub const PREFIX: &str = "/productscience/inference/inference";

/// `GET …/poc_v2_store_commit/{h}/{addr}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreCommitResponse {
    /// Leaves.
    pub count: u32,
    #[serde(with = "crate::json::base64_bytes")]
    pub root_hash: Vec<u8>,
    /// Whether a commit exists.
    pub found: bool,
}

/// `GET …/mlnode_weight_distribution/{h}/{addr}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistributionResponse {
    /// Per-node weights.
    pub weights: Vec<MlNodeWeight>,
    /// Whether one exists.
    pub found: bool,
}

/// One entry of `all_poc_v2_store_commits`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitWithKey {
    pub participant_address: String,
    /// Leaves.
    pub count: u32,
    #[serde(with = "crate::json::base64_bytes")]
    pub root_hash: Vec<u8>,
    /// Participant's compressed key, lowercase hex.
    pub hex_pub_key: String,
}

/// `GET …/all_poc_v2_store_commits/{h}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllCommitsResponse {
    /// Ordered by participant address.
    pub commits: Vec<CommitWithKey>,
}

/// One entry of `all_mlnode_weight_distributions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistributionEntry {
    pub participant_address: String,
    pub weights: Vec<MlNodeWeight>,
}

/// `GET …/all_mlnode_weight_distributions/{h}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllDistributionsResponse {
    /// Ordered by participant address.
    pub distributions: Vec<DistributionEntry>,
}

/// Records of one participant with its keys (v2 validations, v1 batches/validations).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParticipantRecords<T> {
    pub participant: String,
    /// Compressed key, base64.
    pub pub_key: String,
    /// Compressed key, hex.
    pub hex_pub_key: String,
    /// The records.
    pub poc_validation: Vec<T>,
}

/// `GET …/poc_v2_validations_for_stage/{h}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ValidationsV2Response {
    /// Grouped by validated participant.
    pub poc_validation: Vec<ParticipantRecords<ValidationV2>>,
}

/// V1 batches of a participant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParticipantBatches {
    pub participant: String,
    /// Key, base64.
    pub pub_key: String,
    /// Key, hex.
    pub hex_pub_key: String,
    /// Batches.
    pub poc_batch: Vec<PocBatch>,
}

/// `GET …/poc_batches_for_stage/{h}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchesResponse {
    /// Grouped by participant.
    pub poc_batch: Vec<ParticipantBatches>,
}

/// `GET …/poc_validations_for_stage/{h}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ValidationsV1Response {
    /// Grouped by validated participant.
    pub poc_validation: Vec<ParticipantRecords<PocValidationV1>>,
}

/// `GET …/count_po_c_batches_at_height/{h}` and the validations' count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountResponse {
    #[serde(with = "crate::json::u64_string")]
    pub count: u64,
}

/// `GET …/confirmation_poc_events/{epoch}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsResponse {
    /// By sequence.
    pub events: Vec<ConfirmationEvent>,
}

/// `GET …/active_confirmation_poc_event`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveEventResponse {
    /// Whether one is active.
    pub is_active: bool,
    /// The event, when active.
    pub event: Option<ConfirmationEvent>,
}

/// `GET …/epoch_info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochInfoResponse {
    /// Last executed height.
    #[serde(with = "crate::json::i64_string")]
    pub block_height: i64,
    /// Parameters.
    pub params: Params,
    /// Newest epoch.
    pub latest_epoch: Epoch,
    /// Effective epoch (an addition: which validators are active; a Gonka node's answer
    /// lacks it, see [`EpochContext::is_upcoming_at`](crate::epoch::EpochContext::is_upcoming_at)).
    #[serde(default)]
    pub effective_epoch: Epoch,
    /// Whether a confirmation event is active.
    pub is_confirmation_poc_active: bool,
    /// The active event.
    pub active_confirmation_poc_event: Option<ConfirmationEvent>,
    /// Stages of the latest epoch (an addition, `EpochStages` JSON; absent from a Gonka
    /// node's answer).
    #[serde(default)]
    pub latest_stages: EpochStages,
}

/// `GET …/params`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamsResponse {
    /// Parameters.
    pub params: Params,
}

/// A participant in the JSON of `inference.inference.Participant` as a Gonka node's
/// gateway writes it (the proto's own field names, `inferenceUrl` among them), plus
/// this chain's additions, which a Gonka node's answer lacks (they default to empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    /// The participant's address (the record's key).
    #[serde(default)]
    pub index: String,
    pub address: String,
    /// Public URL.
    #[serde(rename = "inferenceUrl", alias = "inference_url", default)]
    pub inference_url: String,
    /// `ACTIVE` / `INACTIVE`.
    #[serde(default)]
    pub status: String,
    /// Compressed key, base64 (an addition).
    #[serde(default)]
    pub pubkey: String,
    /// Compressed key, hex (an addition).
    #[serde(default)]
    pub hex_pub_key: String,
    /// Consensus key (an addition).
    #[serde(default)]
    pub validator_key: String,
    /// Latest confirmation ratio (an addition).
    #[serde(default)]
    pub confirmation_poc_ratio: String,
}

/// `GET …/participant/{addr}` (`QueryGetParticipantResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantResponse {
    /// The participant.
    pub participant: ParticipantInfo,
}

/// `GET …/participant` (`QueryAllParticipantResponse`; one page holds them all).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantsResponse {
    /// Sorted by address.
    pub participant: Vec<ParticipantInfo>,
    /// Always the last page here.
    #[serde(default)]
    pub pagination: Option<PageResponse>,
    /// The height the list was read at.
    #[serde(with = "crate::json::i64_string", default)]
    pub block_height: i64,
}

/// `cosmos.base.query.v1beta1.PageResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageResponse {
    /// Key of the next page, base64; `None` on the last.
    pub next_key: Option<String>,
    #[serde(with = "crate::json::u64_string", default)]
    pub total: u64,
}

/// A grantee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grantee {
    pub address: String,
    /// Compressed key, base64 (empty if it never signed a transaction).
    pub pub_key: String,
}

/// `GET …/grantees_by_message_type/{granter}/{type_url}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GranteesResponse {
    pub grantees: Vec<Grantee>,
}

/// `GET …/epoch_group/{epoch}`: validator weights and PoC results of an epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochGroupResponse {
    #[serde(with = "crate::json::u64_string")]
    pub epoch_index: u64,
    pub validator_weights: Vec<ValidatorWeight>,
    /// Participants and their per-node weights.
    pub active_participants: Vec<ActiveParticipant>,
    pub confirmation_weights: Vec<ValidatorWeight>,
}

/// `{address, weight}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorWeight {
    pub address: String,
    #[serde(with = "crate::json::i64_string")]
    pub weight: i64,
}

/// `GET …/poc_validation_snapshot/{h}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotResponse {
    /// The snapshot.
    pub snapshot: Option<SnapshotJson>,
    /// Whether it exists.
    pub found: bool,
}

/// `PoCValidationSnapshot` JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotJson {
    #[serde(with = "crate::json::i64_string")]
    pub poc_stage_start_height: i64,
    /// Taken at.
    #[serde(with = "crate::json::i64_string")]
    pub snapshot_height: i64,
    /// App hash, hex.
    #[serde(with = "crate::json::hex32")]
    pub app_hash: [u8; 32],
    /// Sorted by address.
    pub validator_weights: Vec<ValidatorWeight>,
    /// Unix seconds.
    #[serde(with = "crate::json::i64_string")]
    pub generation_start_timestamp: i64,
    /// Unix seconds.
    #[serde(with = "crate::json::i64_string")]
    pub exchange_end_timestamp: i64,
}

/// `GET /cosmos/auth/v1beta1/accounts/{address}`, as the SDK's gRPC gateway answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountResponse {
    pub account: BaseAccount,
}

/// Type URL of `cosmos.auth.v1beta1.BaseAccount`.
pub const BASE_ACCOUNT: &str = "/cosmos.auth.v1beta1.BaseAccount";

/// `cosmos.auth.v1beta1.BaseAccount` in its JSON form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseAccount {
    /// [`BASE_ACCOUNT`].
    #[serde(rename = "@type")]
    pub type_url: String,
    pub address: String,
    /// `None` until the chain has seen the key (genesis or a signed transaction).
    pub pub_key: Option<PubKeyJson>,
    /// The number every signature of this account commits to.
    #[serde(with = "crate::json::u64_string")]
    pub account_number: u64,
    /// Next sequence.
    #[serde(with = "crate::json::u64_string")]
    pub sequence: u64,
}

/// A public key in the SDK's JSON (`{"@type": "/cosmos.crypto.secp256k1.PubKey", "key": base64}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PubKeyJson {
    #[serde(rename = "@type")]
    pub type_url: String,
    /// Compressed key, base64.
    pub key: String,
}

/// `GET /status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusResponse {
    pub chain_id: String,
    /// Latest block height.
    #[serde(with = "crate::json::i64_string")]
    pub height: i64,
    /// Its hash, uppercase hex (as CometBFT writes block hashes).
    pub hash: String,
    /// Its time, unix seconds.
    #[serde(with = "crate::json::i64_string")]
    pub time: i64,
    /// App hash after it, hex.
    #[serde(with = "crate::json::hex32")]
    pub app_hash: [u8; 32],
    /// Transactions waiting.
    pub mempool_size: usize,
}

/// How `POST /txs` waits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BroadcastMode {
    /// Answer after CheckTx.
    #[default]
    #[serde(rename = "BROADCAST_MODE_SYNC")]
    Sync,
    /// Answer after the block that includes it (or a timeout).
    #[serde(rename = "BROADCAST_MODE_BLOCK")]
    Block,
}

/// `POST /txs` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BroadcastRequest {
    /// The signed transaction.
    #[serde(with = "crate::json::base64_bytes")]
    pub tx_bytes: Vec<u8>,
    /// Wait mode.
    #[serde(default)]
    pub mode: BroadcastMode,
}

/// A transaction's outcome with where it landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxResponse {
    /// Result (CheckTx in sync mode or when rejected; DeliverTx once included).
    #[serde(flatten)]
    pub result: TxResult,
    /// Block height once included (0 before).
    #[serde(with = "crate::json::i64_string")]
    pub height: i64,
}

/// `POST /txs` answer and `GET /txs/{hash}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BroadcastResponse {
    /// The outcome.
    pub tx_response: TxResponse,
}

/// An error body (gateway style).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// gRPC status code (3 invalid argument, 5 not found, …).
    pub code: i32,
    /// What went wrong.
    pub message: String,
}
