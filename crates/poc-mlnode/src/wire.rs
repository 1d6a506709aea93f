//! Request and response bodies of the ML node's PoC API (`docs/protocol/compute-v2.md` §4).

use poc_core::{Artifact, Encoding};
use serde::{Deserialize, Serialize};

fn default_k_dim() -> usize {
    poc_core::artifact::DEFAULT_K_DIM
}

fn one() -> u64 {
    1
}

/// `params`: strict, unknown keys are a 422 (`extra="forbid"` in the reference).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PocParamsBody {
    /// Served model name (checked against the node's names: 409 on mismatch).
    pub model: String,
    /// Sequence length.
    pub seq_len: usize,
    /// Artifact dimensions.
    #[serde(default = "default_k_dim")]
    pub k_dim: usize,
}

/// `POST init/generate`.
#[derive(Debug, Clone, Deserialize)]
pub struct InitGenerateBody {
    /// Block hash of the stage start.
    pub block_hash: String,
    /// Its height (only echoed in callbacks and status).
    pub block_height: i64,
    /// Participant public key.
    pub public_key: String,
    /// This ML node's number among the participant's nodes.
    pub node_id: u64,
    /// The participant's node count.
    pub node_count: u64,
    /// Replica group (0 for a single backend).
    #[serde(default)]
    pub group_id: u64,
    /// Replica groups (1 for a single backend).
    #[serde(default = "one")]
    pub n_groups: u64,
    /// Nonces per forward.
    pub batch_size: Option<usize>,
    /// Model and shape.
    pub params: PocParamsBody,
    /// Callback base URL (`{url}/generated` receives the artifacts).
    pub url: Option<String>,
    /// Stronger (concat-murmur) input generator.
    #[serde(default)]
    pub poc_stronger_rng: bool,
    /// Skip the stream's nonces below this value (an extension of this implementation:
    /// the API node resumes a restarted node after the nonces it already stored).
    #[serde(default)]
    pub nonce_start: Option<i64>,
}

/// `validation` of `POST generate`.
#[derive(Debug, Clone, Deserialize)]
pub struct ValidationBody {
    /// The artifacts received from the participant.
    pub artifacts: Vec<Artifact>,
}

/// `stat_test` of `POST generate`. `fraud_threshold` wins over its alias
/// `p_value_threshold` (the name the reference API node sends) when both are present.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StatTestBody {
    /// Distance above which a nonce mismatches.
    pub dist_threshold: Option<f64>,
    /// Honest mismatch probability.
    pub p_mismatch: Option<f64>,
    /// p-value cutoff.
    pub fraud_threshold: Option<f64>,
    /// Alias of `fraud_threshold`.
    pub p_value_threshold: Option<f64>,
}

impl StatTestBody {
    /// The thresholds, with the reference ML node's defaults for missing values.
    pub fn resolve(&self) -> poc_core::StatTest {
        let d = poc_core::StatTest::default();
        poc_core::StatTest {
            dist_threshold: self.dist_threshold.unwrap_or(d.dist_threshold),
            p_mismatch: self.p_mismatch.unwrap_or(d.p_mismatch),
            fraud_threshold: self
                .fraud_threshold
                .or(self.p_value_threshold)
                .unwrap_or(d.fraud_threshold),
        }
    }
}

/// `POST generate`.
#[derive(Debug, Clone, Deserialize)]
pub struct GenerateBody {
    /// Block hash of the stage start.
    pub block_hash: String,
    /// Its height.
    pub block_height: i64,
    /// Participant public key.
    pub public_key: String,
    /// Requesting node's number.
    pub node_id: u64,
    /// Requesting participant's node count.
    pub node_count: u64,
    /// Nonces to compute.
    pub nonces: Vec<i64>,
    /// Model and shape.
    pub params: PocParamsBody,
    /// Nonces per forward.
    pub batch_size: Option<usize>,
    /// Compute inline (`true`) or queue (`false`, the default).
    #[serde(default)]
    pub wait: bool,
    /// Callback base URL for queued requests.
    pub url: Option<String>,
    /// Artifacts to validate against.
    pub validation: Option<ValidationBody>,
    /// Thresholds of the statistical test.
    pub stat_test: Option<StatTestBody>,
    /// Stronger input generator.
    #[serde(default)]
    pub poc_stronger_rng: bool,
}

/// Computed artifacts (`/generate` without validation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactsResult {
    /// One per computed nonce (non-finite ones are left out).
    pub artifacts: Vec<Artifact>,
    /// Always FP16 little-endian.
    pub encoding: Encoding,
}

/// The `config` object of a generating node's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusConfig {
    pub block_hash: String,
    pub block_height: i64,
    pub public_key: String,
    /// Node number.
    pub node_id: u64,
    pub node_count: u64,
    /// Replica group.
    pub group_id: u64,
    /// Replica groups.
    pub n_groups: u64,
    /// Sequence length.
    pub seq_len: usize,
    /// Artifact dimensions.
    pub k_dim: usize,
}
