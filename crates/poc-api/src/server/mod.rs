//! The two HTTP servers: public (proof API, artifact state, health, metrics) and the ML
//! callback server (generated artifacts, validation verdicts).

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::json;

use crate::ApiNode;
use crate::http::reply;
use crate::metrics::GaugeValue;

mod ingest;
mod proofs;

pub use proofs::ProofLimiter;

pub(crate) type S = State<Arc<ApiNode>>;

/// Largest proof request body.
pub const MAX_PROOF_REQUEST_BYTES: usize = 256 * 1024;
/// Largest callback body.
pub const MAX_CALLBACK_BYTES: usize = 64 * 1024 * 1024;

/// The public router.
pub fn public_router(st: Arc<ApiNode>) -> Router {
    Router::new()
        .route(
            "/v1/poc/proofs",
            post(proofs::proofs).layer(DefaultBodyLimit::max(MAX_PROOF_REQUEST_BYTES)),
        )
        .route("/v1/poc/artifacts/state", get(artifacts_state))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(st)
}

/// The ML callback router: every route sits under `/cb/{token}/` (a token this node
/// issued, `crate::callbacks`). Source addresses are checked when a connection is
/// accepted (`start`).
pub fn callback_router(st: Arc<ApiNode>) -> Router {
    let routes = Router::new()
        .route("/v2/poc-batches/generated", post(ingest::generated))
        .route("/v2/poc-batches/validated", post(ingest::validated))
        .merge(crate::v1flow::callback_routes());
    Router::new()
        .nest("/cb/{token}", routes)
        .layer(DefaultBodyLimit::max(MAX_CALLBACK_BYTES))
        .with_state(st)
}

#[derive(Deserialize)]
struct StateQuery {
    height: Option<String>,
}

async fn artifacts_state(State(st): S, Query(q): Query<StateQuery>) -> Response {
    if !st.view().is_some_and(|v| v.should_use_v2()) {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "proof API requires V2 mode",
        );
    }
    let Some(h) = q
        .height
        .as_deref()
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|h| *h > 0)
    else {
        return reply(StatusCode::BAD_REQUEST, "height must be a positive integer");
    };
    match st.stores.get(h as u64) {
        Ok(store) => {
            let snap = store.flushed();
            axum::Json(json!({
                "poc_stage_start_block_height": h,
                "count": snap.count,
                "root_hash": snap.root.map(|r| STANDARD.encode(r)).unwrap_or_default(),
            }))
            .into_response()
        }
        Err(_) => reply(
            StatusCode::NOT_FOUND,
            format!("store not found for height {h} (may be pruned or not yet created)"),
        ),
    }
}

async fn health(State(st): S) -> Response {
    let v = st.view();
    axum::Json(json!({
        "status": if v.is_some() { "ok" } else { "syncing" },
        "address": st.io.address,
        "height": v.as_ref().map(|v| v.height),
        "phase": v.as_ref().map(|v| v.phase().as_str()),
        "block_time_ms": st.block_time().as_millis() as u64,
        "pending_votes": st.pending_votes(),
        "ml_nodes": st.broker.nodes().iter().map(|n| json!({"id": n.id, "url": n.url, "health": n.health()})).collect::<Vec<_>>(),
    }))
    .into_response()
}

async fn metrics(State(st): S) -> Response {
    let gauge = |name, help, value: usize| GaugeValue {
        name,
        help,
        value: value as f64,
    };
    let gauges = [
        gauge(
            "poc_votes_pending",
            "Votes waiting to be sent",
            st.pending_votes(),
        ),
        GaugeValue {
            name: "poc_block_time_seconds",
            help: "Block time observed on the chain",
            value: st.block_time().as_secs_f64(),
        },
        gauge(
            "poc_http_public_connections",
            "Open connections to the public server",
            st.public_stats.open_connections(),
        ),
        gauge(
            "poc_http_callback_connections",
            "Open connections to the ML callback server",
            st.callback_stats.open_connections(),
        ),
    ];
    poc_http::metrics::response(&st.metrics.registry(&gauges), "")
}
