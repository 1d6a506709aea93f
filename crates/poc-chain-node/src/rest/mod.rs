//! REST: the reference's query paths under `/productscience/inference/inference/…`
//! (gRPC-gateway JSON), transaction submission, status and blocks.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use poc_chain::address;
use poc_chain::api::*;
use poc_chain::state::ChainState;
use serde::Serialize;

use crate::ChainServices;

mod blocks;
mod chain;
mod cosmos;
mod metrics;
mod poc;

type S = State<Arc<ChainServices>>;

/// How long `BROADCAST_MODE_BLOCK` waits for inclusion.
pub const BLOCK_MODE_TIMEOUT: Duration = Duration::from_secs(30);

struct ApiError(StatusCode, i32, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            axum::Json(ErrorBody {
                code: self.1,
                message: self.2,
            }),
        )
            .into_response()
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, 3, msg.into())
}

fn not_found(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, 5, msg.into())
}

fn internal(msg: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, 13, msg.to_string())
}

type R<T> = Result<axum::Json<T>, ApiError>;

fn ok<T: Serialize>(v: T) -> R<T> {
    Ok(axum::Json(v))
}

fn height(s: &str) -> Result<i64, ApiError> {
    s.parse::<i64>()
        .map_err(|_| bad(format!("{s:?} is not a block height (int64)")))
}

fn addr(s: &str) -> Result<String, ApiError> {
    if address::is_valid(s) {
        Ok(s.to_owned())
    } else {
        Err(bad(format!("{s:?} is not a valid gonka1… address")))
    }
}

fn keys(st: &ChainState, a: &str) -> (String, String) {
    let hex = st
        .accounts
        .get(a)
        .or_else(|| st.participants.get(a).map(|p| &p.hex_pub_key))
        .cloned()
        .unwrap_or_default();
    let b64 = hex::decode(&hex)
        .map(|b| STANDARD.encode(b))
        .unwrap_or_default();
    (b64, hex)
}

/// The router.
pub fn router(services: Arc<ChainServices>) -> Router {
    let p = |s: &str| format!("{PREFIX}{s}");
    Router::new()
        .route(
            &p("/poc_v2_store_commit/{h}/{addr}"),
            get(poc::store_commit),
        )
        .route(
            &p("/mlnode_weight_distribution/{h}/{addr}"),
            get(poc::distribution),
        )
        .route(&p("/all_poc_v2_store_commits/{h}"), get(poc::all_commits))
        .route(
            &p("/all_mlnode_weight_distributions/{h}"),
            get(poc::all_distributions),
        )
        .route(
            &p("/poc_v2_validations_for_stage/{h}"),
            get(poc::validations_v2),
        )
        .route(&p("/confirmation_poc_events/{epoch}"), get(poc::events))
        .route(&p("/active_confirmation_poc_event"), get(poc::active_event))
        .route(&p("/poc_validation_snapshot/{h}"), get(poc::snapshot))
        .route(&p("/epoch_info"), get(chain::epoch_info))
        .route(&p("/params"), get(chain::params))
        .route(&p("/poc_batches_for_stage/{h}"), get(poc::batches))
        .route(
            &p("/poc_validations_for_stage/{h}"),
            get(poc::validations_v1),
        )
        .route(
            &p("/count_po_c_batches_at_height/{h}"),
            get(poc::count_batches),
        )
        .route(
            &p("/count_po_c_validations_at_height/{h}"),
            get(poc::count_validations),
        )
        .route(&p("/participant/{addr}"), get(chain::participant))
        .route(&p("/participant"), get(chain::participants))
        .route(
            &p("/grantees_by_message_type/{granter}/{*type_url}"),
            get(chain::grantees),
        )
        .route(&p("/epoch_group/{epoch}"), get(chain::epoch_group))
        .route("/cosmos/auth/v1beta1/accounts/{addr}", get(chain::account))
        .route("/status", get(chain::status))
        .route("/metrics", get(metrics::metrics))
        .route("/blocks/latest", get(blocks::latest_block))
        .route("/blocks/{h}", get(blocks::block))
        .route("/txs", post(blocks::broadcast))
        .route("/cosmos/tx/v1beta1/txs", post(blocks::broadcast))
        .route("/txs/{hash}", get(blocks::tx_by_hash))
        .route("/cosmos/tx/v1beta1/txs/{hash}", get(blocks::tx_by_hash))
        .route("/cosmos/authz/v1beta1/grants", get(cosmos::grants_query))
        .route(
            "/cosmos/authz/v1beta1/grants/{side}/{addr}",
            get(cosmos::grants_by),
        )
        .route(
            "/cosmos/base/tendermint/v1beta1/blocks/latest",
            get(cosmos::latest_block),
        )
        .route(
            "/cosmos/base/tendermint/v1beta1/blocks/{h}",
            get(cosmos::block),
        )
        .route(
            "/cosmos/base/tendermint/v1beta1/node_info",
            get(cosmos::node_info),
        )
        .layer(DefaultBodyLimit::max(poc_chain::tx::MAX_TX_BYTES * 2))
        .with_state(services)
}
