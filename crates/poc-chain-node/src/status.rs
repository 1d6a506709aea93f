//! What a replicated node reports about its consensus on `/status` and `/metrics`
//! (absent on a single-producer node). Node operation, not chain data: the chain's own
//! query types are in `poc_chain::api`.

use poc_chain::api::StatusResponse;
use serde::{Deserialize, Serialize};

/// `GET /status`: the chain head, plus consensus on a replicated node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The chain head and mempool.
    #[serde(flatten)]
    pub chain: StatusResponse,
    /// Consensus, on a replicated node (absent on a single-producer node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consensus: Option<ConsensusStatus>,
}

/// What a replicated node's consensus is doing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConsensusStatus {
    /// Engine and version.
    pub engine: String,
    /// This node's ed25519 public key (hex).
    pub public_key: String,
    /// Whether this node signs votes (its key is in the validator set).
    pub validating: bool,
    /// Size of the validator set.
    pub validators: usize,
    /// Whether this node is within one block of the highest height its peers report.
    pub synced: bool,
    /// Highest view (round) this node has seen.
    pub view: u64,
    /// View of the last finalized block.
    pub finalized_view: u64,
    /// Blocks finalized since the node started.
    pub finalized_blocks: u64,
    /// Time from this node first seeing a block to its finalization, last block, ms.
    pub last_finalization_latency_ms: f64,
    /// Mean of the same over the node's run, ms.
    pub mean_finalization_latency_ms: f64,
    /// Peers heard from in the last few seconds.
    pub peers: Vec<PeerStatus>,
}

/// A peer as this node last heard from it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Its ed25519 public key (hex).
    pub public_key: String,
    /// The height it reported.
    #[serde(with = "poc_chain::json::i64_string")]
    pub height: i64,
    /// Milliseconds since its last message.
    pub last_seen_ms: u64,
}
