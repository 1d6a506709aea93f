//! Blocks and transactions: block queries, lookup by hash, broadcast.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use poc_chain::api::*;
use serde_json::json;

use super::{ApiError, BLOCK_MODE_TIMEOUT, R, S, bad, height, internal, not_found, ok};
use crate::ChainServices;

pub(super) fn db(s: &ChainServices) -> Result<Arc<crate::db::ChainDb>, ApiError> {
    s.db().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            14,
            "the node is shutting down".into(),
        )
    })
}

async fn block_at(s: &ChainServices, h: i64) -> Result<Response, ApiError> {
    let db_read = {
        let db = db(s)?;
        let b = db.block(h).map_err(internal)?;
        let r = db.result(h).map_err(internal)?;
        (b, r)
    };
    match db_read {
        (Some(b), Some(r)) => Ok(axum::Json(
            json!({"block_id": {"hash": hex::encode_upper(b.header.hash())}, "block": b, "result": r}),
        )
        .into_response()),
        _ => Err(not_found(format!("no block at height {h}"))),
    }
}

pub(super) async fn block(State(s): S, Path(h): Path<String>) -> Result<Response, ApiError> {
    let h = height(&h)?;
    block_at(&s, h).await
}

pub(super) async fn latest_block(State(s): S) -> Result<Response, ApiError> {
    let h = s.head().state.height;
    block_at(&s, h).await
}

async fn included(s: &ChainServices, hash: &str) -> Result<Option<TxResponse>, ApiError> {
    let db = db(s)?;
    let Some((h, i)) = db.tx_location(hash).map_err(internal)? else {
        return Ok(None);
    };
    let r = db
        .result(h)
        .map_err(internal)?
        .ok_or_else(|| internal("block result missing"))?;
    let result = r
        .tx_results
        .get(i as usize)
        .cloned()
        .ok_or_else(|| internal("tx index out of range"))?;
    Ok(Some(TxResponse { result, height: h }))
}

pub(super) async fn tx_by_hash(State(s): S, Path(hash): Path<String>) -> R<BroadcastResponse> {
    let hash = hash.to_uppercase();
    match included(&s, &hash).await? {
        Some(tx_response) => ok(BroadcastResponse { tx_response }),
        None => Err(not_found(format!("transaction {hash} is not in a block"))),
    }
}

pub(super) async fn broadcast(State(s): S, body: axum::body::Bytes) -> R<BroadcastResponse> {
    let req: BroadcastRequest = serde_json::from_slice(&body).map_err(|e| bad(format!("body must be {{\"tx_bytes\": base64, \"mode\": \"BROADCAST_MODE_SYNC\"|\"BROADCAST_MODE_BLOCK\"}}: {e}")))?;
    if s.halted.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            14,
            "block production has stopped on an error; see the node's log".into(),
        ));
    }
    let mut rx = s.height.subscribe();
    let check = {
        let mut pool = s.mempool.lock().expect("mempool lock");
        let head = s.head();
        pool.add(&head.state, req.tx_bytes)
    };
    if check.code != 0 || req.mode == BroadcastMode::Sync {
        return ok(BroadcastResponse {
            tx_response: TxResponse {
                result: check,
                height: 0,
            },
        });
    }
    let hash = check.txhash.clone();
    let wait = async {
        loop {
            if let Some(r) = included(&s, &hash).await? {
                return Ok::<_, ApiError>(Some(r));
            }
            if rx.changed().await.is_err() {
                return Ok(None);
            }
        }
    };
    match tokio::time::timeout(BLOCK_MODE_TIMEOUT, wait).await {
        Ok(Ok(Some(r))) => ok(BroadcastResponse { tx_response: r }),
        Ok(Err(e)) => Err(e),
        _ => ok(BroadcastResponse {
            tx_response: TxResponse {
                result: check,
                height: 0,
            },
        }),
    }
}
