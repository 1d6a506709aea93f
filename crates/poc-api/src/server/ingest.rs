//! The ML callback routes: generated artifacts into the stage store, validation verdicts into votes.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use poc_store::AppendError;
use serde::Deserialize;
use serde_json::json;

use crate::ApiNode;
use crate::callbacks::Grant;
use crate::http::{grant_for, refused, reply};
use crate::phase::ChainView;
use crate::proofs::{VECTOR_BYTES, check_vector};
use poc_chain::keys::address_of_hex;

use super::S;
use crate::metrics::Count;

/// The chain view when the v2 callbacks are served and `accepting` holds now; otherwise
/// the 503 to answer (`what` names the data refused).
#[allow(clippy::result_large_err)]
fn v2_callback_view(
    st: &ApiNode,
    accepting: fn(&ChainView) -> bool,
    what: &str,
) -> Result<ChainView, Response> {
    let Some(view) = st.view() else {
        return Err(reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "not synced with the chain yet",
        ));
    };
    if !view.v2_endpoints_enabled() {
        return Err(reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "PoC v2 endpoints are disabled on the chain",
        ));
    }
    if !accepting(&view) {
        return Err(reply(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not accepting {what} at height {} (phase {})",
                view.height,
                view.phase().as_str()
            ),
        ));
    }
    Ok(view)
}

#[derive(Deserialize)]
struct GeneratedBody {
    block_height: i64,
    node_id: u64,
    #[serde(default)]
    artifacts: Vec<ArtifactIn>,
    #[serde(default)]
    encoding: Option<EncodingIn>,
}

#[derive(Deserialize)]
struct ArtifactIn {
    nonce: i64,
    vector_b64: String,
}

#[derive(Deserialize)]
struct EncodingIn {
    dtype: String,
    k_dim: usize,
    endian: String,
}

/// Checks a batch exactly as validators will check what it becomes (24-byte vectors of
/// twelve finite FP16 values, nonces that fit the store's int32 and are not negative):
/// every item decoded, or the first bad one named.
fn check_batch(b: &GeneratedBody) -> Result<Vec<(i32, Vec<u8>)>, String> {
    if let Some(e) = &b.encoding
        && (e.dtype != "f16" || e.k_dim != VECTOR_BYTES / 2 || e.endian != "le")
    {
        return Err(format!(
            "encoding {{dtype {:?}, k_dim {}, endian {:?}}} is not {{f16, {}, le}}",
            e.dtype,
            e.k_dim,
            e.endian,
            VECTOR_BYTES / 2
        ));
    }
    let mut items = Vec::with_capacity(b.artifacts.len());
    for (i, a) in b.artifacts.iter().enumerate() {
        let nonce = i32::try_from(a.nonce)
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| {
                format!(
                    "artifacts[{i}]: nonce {} is outside 0..=2147483647",
                    a.nonce
                )
            })?;
        let v = STANDARD.decode(&a.vector_b64).map_err(|e| {
            format!("artifacts[{i}] (nonce {nonce}): vector_b64 is not base64: {e}")
        })?;
        check_vector(&v).map_err(|why| format!("artifacts[{i}] (nonce {nonce}): vector {why}"))?;
        items.push((nonce, v));
    }
    Ok(items)
}

/// `POST /cb/{token}/v2/poc-batches/generated`: validates the whole batch, stores it and
/// answers 200 only once it is on stable storage (so an acknowledged artifact survives a
/// crash; the ML node resends what was not acknowledged and the store drops duplicates).
pub(super) async fn generated(State(st): S, Path(token): Path<String>, body: Bytes) -> Response {
    let (stage, node_number) = match grant_for(&st, &token, |g| match g {
        Grant::Generation { stage, node } => Some((*stage, *node)),
        _ => None,
    }) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let view = match v2_callback_view(&st, ChainView::accept_generated, "artifacts") {
        Ok(v) => v,
        Err(r) => return r,
    };
    let b: GeneratedBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return reply(
                StatusCode::BAD_REQUEST,
                format!("malformed artifact batch: {e}"),
            );
        }
    };
    let current = view.current_stage().height();
    if b.block_height != stage || stage != current {
        return reply(
            StatusCode::BAD_REQUEST,
            format!(
                "block_height {} is not the stage this callback URL was issued for ({stage}) or not the current stage ({current})",
                b.block_height
            ),
        );
    }
    if b.node_id != node_number {
        return reply(
            StatusCode::BAD_REQUEST,
            format!(
                "node_id {} is not the ML node this callback URL was issued to ({node_number})",
                b.node_id
            ),
        );
    }
    let Some(node) = st.broker.by_number(b.node_id) else {
        return reply(
            StatusCode::BAD_REQUEST,
            format!("unknown node_id {}", b.node_id),
        );
    };
    let items = match check_batch(&b) {
        Ok(items) => items,
        Err(e) => {
            st.metrics.add(Count::ArtifactBatchesRefused, 1);
            tracing::warn!(stage, node = %node.id, "artifact batch refused: {e}");
            return reply(
                StatusCode::BAD_REQUEST,
                format!("batch refused, nothing stored: {e}"),
            );
        }
    };
    // Where this node's stream got to (only nonces of its stream: node_id mod node_count).
    let node_count = st.broker.node_count().max(1);
    let max_nonce = items
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| *n as u64 % node_count == node_number)
        .max();
    let st2 = Arc::clone(&st);
    let node_id = node.id.clone();
    let res = tokio::task::spawn_blocking(move || -> Result<(u64, u64), String> {
        let store = st2
            .stores
            .get_or_create(stage as u64)
            .map_err(|e| e.to_string())?;
        let refs: Vec<(i32, &[u8])> = items.iter().map(|(n, v)| (*n, v.as_slice())).collect();
        let (mut added, mut dup) = (0, 0);
        let mut failure = None;
        for r in store.append_batch(&refs, Some(&node_id)) {
            match r {
                Ok(_) => added += 1,
                Err(AppendError::DuplicateNonce { .. }) => dup += 1,
                Err(e) => failure = Some(e.to_string()),
            }
        }
        // Make what was appended durable before answering, even when part failed.
        store.sync().map_err(|e| e.to_string())?;
        match failure {
            Some(e) => Err(e),
            None => Ok((added, dup)),
        }
    })
    .await
    .unwrap_or_else(|e| Err(format!("ingestion task failed: {e}")));
    match res {
        Ok((added, dup)) => {
            st.metrics.add(Count::ArtifactsReceived, added);
            st.metrics.add(Count::ArtifactsDuplicate, dup);
            if let Some(m) = max_nonce {
                st.note_progress(stage, node_number, m);
            }
            axum::Json(json!({})).into_response()
        }
        Err(e) => {
            tracing::error!(stage, "cannot store artifacts: {e}");
            reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot store artifacts: {e}"),
            )
        }
    }
}

#[derive(Deserialize)]
struct ValidatedBody {
    block_height: i64,
    public_key: String,
    #[serde(default)]
    n_total: i64,
    #[serde(default)]
    fraud_detected: bool,
}

/// `POST /cb/{token}/v2/poc-batches/validated`: the verdict of a validation this node
/// requested (the token names the stage and participant) becomes a vote, once.
pub(super) async fn validated(State(st): S, Path(token): Path<String>, body: Bytes) -> Response {
    // Which verdict the token is for is checked with the body, below.
    if let Err(r) = grant_for(&st, &token, |_| Some(())) {
        return r;
    }
    let view = match v2_callback_view(&st, ChainView::accept_validated, "verdicts") {
        Ok(v) => v,
        Err(r) => return r,
    };
    let b: ValidatedBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return reply(StatusCode::BAD_REQUEST, format!("malformed verdict: {e}")),
    };
    let Some(participant) = address_of_hex(&b.public_key) else {
        return reply(
            StatusCode::BAD_REQUEST,
            "public_key must be a hex compressed secp256k1 key",
        );
    };
    let Some(window) = view.vote_window(b.block_height) else {
        return reply(
            StatusCode::BAD_REQUEST,
            format!("stage {} takes no votes now", b.block_height),
        );
    };
    match st
        .tokens
        .answer_validation(&token, b.block_height, &b.public_key)
    {
        Ok(true) => {}
        Ok(false) => {
            return axum::Json(json!({"duplicate": true})).into_response();
        }
        Err(e) => return refused(&st, e),
    }
    let weight = if b.fraud_detected || b.n_total <= 0 {
        -1
    } else {
        b.n_total
    };
    tracing::info!(stage = b.block_height, %participant, weight, "verdict from the ML node");
    st.vote(b.block_height, window, participant, weight);
    axum::Json(json!({})).into_response()
}
