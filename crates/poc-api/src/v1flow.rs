//! The PoC v1 flow of the API node (`docs/protocol/chain-and-api.md` §6.9, `docs/protocol/compute-v1.md` §9): v1
//! generation on the ML nodes, batches → `MsgSubmitPocBatch`, validation of every
//! participant's batches (a sample of its de-duplicated nonces recomputed by an own ML
//! node) → `MsgSubmitPocValidation`. Chosen when the chain does not use V2 for the stage
//! (`ShouldUseV2` false).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use poc_chain::api::BroadcastMode;
use poc_chain::msgs::Msg;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::ApiNode;
use crate::callbacks::Grant;
use crate::http::{grant_for, refused, reply};
use crate::metrics::Count;
use crate::sampling::sample_leaf_indices;
use poc_chain::keys::address_of_hex;

/// Most nonces in one `MsgSubmitPocBatch` (the chain's limit).
pub const MAX_BATCH_NONCES: usize = 10_000;

static BATCH_COUNTER: AtomicU64 = AtomicU64::new(0);

#[derive(Deserialize)]
struct GeneratedV1 {
    block_height: i64,
    #[serde(default)]
    nonces: Vec<i64>,
    #[serde(default)]
    dist: Vec<f64>,
    #[serde(default)]
    node_id: i64,
}

/// The v1 callback routes (nested under `/cb/{token}` by the callback server).
pub(crate) fn callback_routes() -> Router<Arc<ApiNode>> {
    Router::new()
        .route("/v1/poc-batches/generated", post(generated))
        .route("/v1/poc-batches/validated", post(validated))
}

/// `POST /cb/{token}/v1/poc-batches/generated`: the ML node's passing nonces →
/// `MsgSubmitPocBatch`.
pub async fn generated(
    State(st): State<Arc<ApiNode>>,
    Path(token): Path<String>,
    body: Bytes,
) -> Response {
    let (stage, node_number) = match grant_for(&st, &token, |g| match g {
        Grant::V1Generation { stage, node } => Some((*stage, *node)),
        _ => None,
    }) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some(view) = st.view() else {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "not synced with the chain yet",
        );
    };
    if view.info.params.poc_params.poc_v2_enabled {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "PoC v1 callbacks are disabled: the chain runs PoC v2",
        );
    }
    let b: GeneratedV1 = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return reply(StatusCode::BAD_REQUEST, format!("malformed v1 batch: {e}")),
    };
    if b.nonces.len() != b.dist.len()
        || b.nonces.iter().any(|n| *n < 0)
        || b.dist.iter().any(|d| !d.is_finite() || *d < 0.0)
    {
        return reply(
            StatusCode::BAD_REQUEST,
            "nonces and dist must have equal lengths, non-negative values",
        );
    }
    if b.block_height != stage || u64::try_from(b.node_id).ok() != Some(node_number) {
        return reply(
            StatusCode::BAD_REQUEST,
            format!(
                "block_height {} / node_id {} are not the stage {stage} and ML node {node_number} this callback URL was issued for",
                b.block_height, b.node_id
            ),
        );
    }
    let node_id = st
        .broker
        .by_number(node_number)
        .map(|n| n.id.clone())
        .unwrap_or_default();
    if b.nonces.is_empty() {
        return axum::Json(json!({})).into_response();
    }
    st.metrics
        .add(Count::V1NoncesReceived, b.nonces.len() as u64);
    let mut msgs = Vec::new();
    for (n, d) in b
        .nonces
        .chunks(MAX_BATCH_NONCES)
        .zip(b.dist.chunks(MAX_BATCH_NONCES))
    {
        msgs.push(Msg::SubmitPocBatch {
            creator: st.io.address.clone(),
            poc_stage_start_block_height: b.block_height,
            batch_id: format!(
                "{}-{}-{}",
                b.block_height,
                node_id,
                BATCH_COUNTER.fetch_add(1, Ordering::SeqCst)
            ),
            nonces: n.to_vec(),
            dist: d.to_vec(),
            node_id: node_id.clone(),
        });
    }
    let st2 = Arc::clone(&st);
    tokio::spawn(async move {
        match st2.io.send_exec(msgs, BroadcastMode::Sync).await {
            Ok(r) if r.result.code == 0 => st2.metrics.add(Count::V1BatchesSent, 1),
            Ok(r) => tracing::warn!(
                stage = b.block_height,
                "v1 batch rejected ({} {}): {}",
                r.result.codespace,
                r.result.code,
                r.result.raw_log
            ),
            Err(e) => tracing::warn!(stage = b.block_height, "v1 batch not sent: {e}"),
        }
    });
    axum::Json(json!({})).into_response()
}

#[derive(Deserialize)]
struct ValidatedV1 {
    block_height: i64,
    public_key: String,
    #[serde(default)]
    fraud_detected: bool,
}

/// `POST /cb/{token}/v1/poc-batches/validated`: the verdict on a participant this node
/// asked about → `MsgSubmitPocValidation` (arrays emptied, as the reference does; only
/// `fraud_detected` counts).
pub async fn validated(
    State(st): State<Arc<ApiNode>>,
    Path(token): Path<String>,
    body: Bytes,
) -> Response {
    let stage = match grant_for(&st, &token, |g| match g {
        Grant::V1Validation { stage, .. } => Some(*stage),
        _ => None,
    }) {
        Ok(x) => x,
        Err(r) => return r,
    };
    if st
        .view()
        .is_some_and(|v| v.info.params.poc_params.poc_v2_enabled)
    {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "PoC v1 callbacks are disabled: the chain runs PoC v2",
        );
    }
    let b: ValidatedV1 = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return reply(
                StatusCode::BAD_REQUEST,
                format!("malformed v1 verdict: {e}"),
            );
        }
    };
    let Some(participant) = address_of_hex(&b.public_key) else {
        return reply(
            StatusCode::BAD_REQUEST,
            "public_key must be a hex compressed secp256k1 key",
        );
    };
    if b.block_height != stage {
        return reply(
            StatusCode::BAD_REQUEST,
            format!(
                "block_height {} is not the stage {stage} this callback URL was issued for",
                b.block_height
            ),
        );
    }
    if let Err(e) = st.tokens.answer_v1(stage, &b.public_key) {
        return refused(&st, e);
    }
    tracing::info!(stage = b.block_height, %participant, fraud = b.fraud_detected, "v1 verdict from the ML node");
    let msg = Msg::SubmitPocValidation {
        creator: st.io.address.clone(),
        participant_address: participant,
        poc_stage_start_block_height: b.block_height,
        fraud_detected: b.fraud_detected,
    };
    let st2 = Arc::clone(&st);
    tokio::spawn(async move {
        match st2.io.send_exec(vec![msg], BroadcastMode::Sync).await {
            Ok(r) if r.result.code == 0 => st2.metrics.add(Count::V1ValidationsSent, 1),
            Ok(r) => tracing::warn!(
                "v1 validation rejected ({} {}): {}",
                r.result.codespace,
                r.result.code,
                r.result.raw_log
            ),
            Err(e) => tracing::warn!("v1 validation not sent: {e}"),
        }
    });
    axum::Json(json!({})).into_response()
}

impl ApiNode {
    /// The v1 `init` body for a stage; callbacks go to `url`.
    pub(crate) fn v1_init(
        &self,
        block_hash: &str,
        stage: i64,
        node_number: u64,
        url: String,
    ) -> Value {
        json!({
            "node_id": node_number,
            "node_count": self.broker.node_count(),
            "block_hash": block_hash,
            "block_height": stage,
            "public_key": self.io.account_hex,
            "batch_size": 100,
            "r_target": self.cfg.v1.r_target,
            "fraud_threshold": self.cfg.v1.fraud_threshold,
            "params": self.cfg.v1.model_params(),
            "url": url,
        })
    }

    /// Starts v1 generation on every usable node (callback tokens valid through
    /// `expires`).
    pub(crate) async fn v1_start_generation(&self, block_hash: &str, stage: i64, expires: i64) {
        let mut ok = 0;
        for n in self.broker.nodes().iter().filter(|n| n.usable()) {
            let url = self.callback_url(
                Grant::V1Generation {
                    stage,
                    node: n.number,
                },
                expires,
            );
            match self
                .broker
                .post_json(
                    n,
                    "/api/v1/pow/init/generate",
                    &self.v1_init(block_hash, stage, n.number, url),
                )
                .await
            {
                Ok(_) => ok += 1,
                Err(e) => tracing::warn!(node = %n.id, stage, "cannot start v1 generation: {e}"),
            }
        }
        tracing::info!(stage, nodes = ok, "PoC v1 generation started");
    }

    /// Validates every participant's v1 batches of a stage.
    pub(crate) async fn v1_validate_stage(
        self: Arc<Self>,
        stage: i64,
        block_hash: String,
        sampling_hash: String,
        expires: i64,
    ) {
        let Some(view) = self.view() else { return };
        let n = match view.info.params.poc_params.validation_sample_size {
            x if x <= 0 => 200,
            x => x as u32,
        };
        let nodes: Vec<u64> = self
            .broker
            .nodes()
            .iter()
            .filter(|n| n.usable())
            .map(|n| n.number)
            .collect();
        if nodes.is_empty() {
            tracing::error!(stage, "no usable ML node for v1 validation");
            return;
        }
        // Switch the nodes to validation of this round.
        for num in &nodes {
            let node = self.broker.by_number(*num).expect("known");
            let url = self.callback_url(Grant::V1Validation { stage, node: *num }, expires);
            if let Err(e) = self
                .broker
                .post_json(
                    node,
                    "/api/v1/pow/init/validate",
                    &self.v1_init(&block_hash, stage, *num, url),
                )
                .await
            {
                tracing::warn!(node = %node.id, stage, "cannot switch to v1 validation: {e}");
            }
        }
        let batches = match self.io.client.batches(stage).await {
            Ok(b) => b.poc_batch,
            Err(e) => {
                tracing::error!(stage, "cannot list v1 batches: {e}");
                return;
            }
        };
        for (k, p) in batches.iter().enumerate() {
            // De-duplicate the participant's nonces across its batches.
            let mut seen = BTreeSet::new();
            let mut all: Vec<(i64, f64)> = Vec::new();
            for b in &p.poc_batch {
                for (nonce, d) in b.nonces.iter().zip(&b.dist) {
                    if seen.insert(*nonce) {
                        all.push((*nonce, *d));
                    }
                }
            }
            if all.is_empty() || p.hex_pub_key.is_empty() {
                continue;
            }
            let idx = sample_leaf_indices(
                &self.io.account_hex,
                &sampling_hash,
                stage,
                all.len().min(u32::MAX as usize) as u32,
                n,
            );
            let sample: Vec<(i64, f64)> = idx.iter().map(|i| all[*i as usize]).collect();
            let node = self
                .broker
                .by_number(nodes[k % nodes.len()])
                .expect("known");
            let body = json!({
                "public_key": p.hex_pub_key, "block_hash": block_hash, "block_height": stage,
                "nonces": sample.iter().map(|x| x.0).collect::<Vec<_>>(), "dist": sample.iter().map(|x| x.1).collect::<Vec<_>>(),
                "node_id": node.number,
            });
            self.tokens.expect_v1(stage, &p.hex_pub_key, expires);
            match self
                .broker
                .post_json(node, "/api/v1/pow/validate", &body)
                .await
            {
                Ok(_) => {
                    tracing::info!(stage, participant = %p.participant, samples = sample.len(), "v1 batch sent for recomputation")
                }
                Err(e) => {
                    // No verdict is coming: stop expecting one.
                    let _ = self.tokens.answer_v1(stage, &p.hex_pub_key);
                    tracing::warn!(stage, participant = %p.participant, "v1 validation request failed: {e}")
                }
            }
        }
    }
}
