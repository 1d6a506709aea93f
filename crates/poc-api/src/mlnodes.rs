//! The ML node broker: health, generation start/stop and validation requests over the
//! ML node's PoC API (`docs/protocol/chain-and-api.md` §6.3). A failing node is marked and retried; it
//! never blocks the others.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::MlNodeEntry;

/// How long a status or health request may take (a hung node must not hold up the
/// others or the stage).
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a command (`init/generate`, `stop`, a validation request) may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// What the broker knows about a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum NodeHealth {
    /// Not checked yet.
    Unknown,
    /// Answered its last check.
    Healthy,
    /// Failed its last check or command.
    Failed(String),
}

/// One managed ML node.
#[derive(Debug)]
pub struct MlNode {
    /// Configured id.
    pub id: String,
    /// Base URL.
    pub url: String,
    /// Node number (index in the configuration) used for nonce partitioning.
    pub number: u64,
    health: Mutex<(NodeHealth, Option<Instant>)>,
}

impl MlNode {
    /// Current health.
    pub fn health(&self) -> NodeHealth {
        self.health.lock().expect("health lock").0.clone()
    }

    fn set(&self, h: NodeHealth) {
        *self.health.lock().expect("health lock") = (h, Some(Instant::now()));
    }

    /// Whether it may receive work (healthy or not yet known).
    pub fn usable(&self) -> bool {
        !matches!(self.health(), NodeHealth::Failed(_))
    }
}

/// `init/generate` parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerateRequest {
    /// Seed block hash.
    pub block_hash: String,
    /// Stage height.
    pub block_height: i64,
    /// Participant's hex public key.
    pub public_key: String,
    /// `poc_params.model_id`.
    pub model: String,
    /// `poc_params.seq_len`.
    pub seq_len: i64,
    /// Callback base (`…/cb/{token}/v2/poc-batches`), one per node.
    pub url: String,
}

/// The statistical test sent with a validation (under both threshold names).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatTestRequest {
    /// L2 mismatch threshold.
    pub dist_threshold: f64,
    /// Honest mismatch probability.
    pub p_mismatch: f64,
    /// p-value cutoff.
    pub p_value_threshold: f64,
}

/// An ML node that did not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MlNodeCallError {
    /// No answer (connection, timeout, body).
    #[error("{url}: {why}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// The transport error and its causes.
        why: String,
    },
    /// An answer other than 2xx.
    #[error("{url} answered {status}: {body}")]
    Refused {
        /// The URL called.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the body (300 characters at most).
        body: String,
    },
}

/// The broker.
#[derive(Debug)]
pub struct Broker {
    nodes: Vec<MlNode>,
    http: reqwest::Client,
}

fn err_text(e: reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(x) = src {
        s = format!("{s}: {x}");
        src = x.source();
    }
    s
}

impl Broker {
    /// Nodes from the configuration, numbered in order.
    pub fn new(entries: &[MlNodeEntry]) -> Self {
        Self {
            nodes: entries
                .iter()
                .enumerate()
                .map(|(i, e)| MlNode {
                    id: e.id.clone(),
                    url: e.url.trim_end_matches('/').to_owned(),
                    number: i as u64,
                    health: Mutex::new((NodeHealth::Unknown, None)),
                })
                .collect(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                // Below the servers' idle timeout, so a pooled connection is never
                // reused just as the server closes it.
                .pool_idle_timeout(Duration::from_secs(5))
                .build()
                .expect("HTTP client builds"),
        }
    }

    /// All nodes.
    pub fn nodes(&self) -> &[MlNode] {
        &self.nodes
    }

    /// The node with a number.
    pub fn by_number(&self, n: u64) -> Option<&MlNode> {
        self.nodes.iter().find(|x| x.number == n)
    }

    /// `max node number + 1`.
    pub fn node_count(&self) -> u64 {
        self.nodes.len() as u64
    }

    async fn call(
        &self,
        node: &MlNode,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, MlNodeCallError> {
        let timeout = if method == reqwest::Method::GET {
            STATUS_TIMEOUT
        } else {
            COMMAND_TIMEOUT
        };
        let url = format!("{}{path}", node.url);
        let mut req = self.http.request(method, &url).timeout(timeout);
        if let Some(b) = body {
            req = req.json(b);
        }
        let unreachable = |e| MlNodeCallError::Unreachable {
            url: url.clone(),
            why: err_text(e),
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        let text = resp.text().await.map_err(unreachable)?;
        if !status.is_success() {
            return Err(MlNodeCallError::Refused {
                url,
                status: status.as_u16(),
                body: text.chars().take(300).collect(),
            });
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// POSTs JSON to a node path.
    pub async fn post_json(
        &self,
        node: &MlNode,
        path: &str,
        body: &Value,
    ) -> Result<Value, MlNodeCallError> {
        self.call(node, reqwest::Method::POST, path, Some(body))
            .await
    }

    /// Checks every node (`GET …/pow/status`) and records the result.
    pub async fn check_health(&self) {
        for n in &self.nodes {
            match self
                .call(
                    n,
                    reqwest::Method::GET,
                    "/api/v1/inference/pow/status",
                    None,
                )
                .await
            {
                Ok(_) => n.set(NodeHealth::Healthy),
                Err(e) => {
                    if n.usable() {
                        tracing::warn!(node = %n.id, "ML node failed its health check: {e}");
                    }
                    n.set(NodeHealth::Failed(e.to_string()));
                }
            }
        }
    }

    /// Starts generation of `spec` on one node unless it already generates that stage
    /// (idempotent). `nonce_start` asks it to skip nonces below that value (a restarted
    /// node continues where it left off; an ML node that does not know the field starts
    /// from its first nonce and the store drops the duplicates). A node generating
    /// another stage is stopped first. Returns whether a new generation was started.
    pub async fn start_one(
        &self,
        n: &MlNode,
        spec: &GenerateRequest,
        nonce_start: Option<i64>,
    ) -> Result<bool, MlNodeCallError> {
        let status = self
            .call(
                n,
                reqwest::Method::GET,
                "/api/v1/inference/pow/status",
                None,
            )
            .await;
        let status = match status {
            Ok(s) => s,
            Err(e) => {
                n.set(NodeHealth::Failed(e.to_string()));
                return Err(e);
            }
        };
        n.set(NodeHealth::Healthy);
        if status["status"] == "GENERATING" {
            let height = status["config"]["block_height"]
                .as_i64()
                .or_else(|| status["backends"][0]["config"]["block_height"].as_i64());
            if height.is_none_or(|h| h == spec.block_height) {
                return Ok(false);
            }
            tracing::info!(node = %n.id, from = ?height, to = spec.block_height, "ML node generates another stage; restarting it");
            self.call(
                n,
                reqwest::Method::POST,
                "/api/v1/inference/pow/stop",
                Some(&json!({})),
            )
            .await?;
        }
        let mut body = json!({
            "block_hash": spec.block_hash,
            "block_height": spec.block_height,
            "public_key": spec.public_key,
            "node_id": n.number,
            "node_count": self.node_count(),
            "params": {"model": spec.model, "seq_len": spec.seq_len},
            "url": spec.url,
        });
        if let Some(start) = nonce_start.filter(|s| *s > 0) {
            body["nonce_start"] = json!(start);
        }
        let r = self
            .call(
                n,
                reqwest::Method::POST,
                "/api/v1/inference/pow/init/generate",
                Some(&body),
            )
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(e) => {
                n.set(NodeHealth::Failed(e.to_string()));
                Err(e)
            }
        }
    }

    /// Stops generation on every node (errors logged).
    pub async fn stop_all(&self) {
        for n in &self.nodes {
            if let Err(e) = self
                .call(
                    n,
                    reqwest::Method::POST,
                    "/api/v1/inference/pow/stop",
                    Some(&json!({})),
                )
                .await
            {
                tracing::debug!(node = %n.id, "stop: {e}");
            }
        }
    }

    /// Sends a validation (`generate` with `validation` and `stat_test`) to one node;
    /// the verdict arrives on the `validated` callback.
    #[allow(clippy::too_many_arguments)]
    pub async fn validate(
        &self,
        n: &MlNode,
        seed_hash: &str,
        height: i64,
        participant_hex: &str,
        sample: &[(i32, String)],
        model: &str,
        seq_len: i64,
        stat: StatTestRequest,
        node_count: u64,
        callback: &str,
    ) -> Result<(), MlNodeCallError> {
        let body = json!({
            "block_hash": seed_hash,
            "block_height": height,
            "public_key": participant_hex,
            "node_id": n.number,
            "node_count": node_count,
            "nonces": sample.iter().map(|(nonce, _)| *nonce).collect::<Vec<_>>(),
            "params": {"model": model, "seq_len": seq_len},
            "url": callback,
            "validation": {"artifacts": sample.iter().map(|(nonce, v)| json!({"nonce": nonce, "vector_b64": v})).collect::<Vec<_>>()},
            "stat_test": {
                "dist_threshold": stat.dist_threshold,
                "p_mismatch": stat.p_mismatch,
                "p_value_threshold": stat.p_value_threshold,
                "fraud_threshold": stat.p_value_threshold,
            },
        });
        self.call(
            n,
            reqwest::Method::POST,
            "/api/v1/inference/pow/generate",
            Some(&body),
        )
        .await
        .map(|_| ())
    }
}
