//! `GET /metrics`: the chain's gauges in Prometheus text format.

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::S;

/// Prometheus text: chain height and mempool, consensus progress on a replicated node,
/// then the consensus engine's own metrics.
pub(super) async fn metrics(State(s): S) -> Response {
    use std::fmt::Write;
    let head = s.head();
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, v: f64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    };
    gauge(
        "poc_chain_height",
        "Last committed block height.",
        head.state.height as f64,
    );
    gauge(
        "poc_chain_mempool_size",
        "Transactions waiting.",
        s.mempool.lock().expect("mempool lock").len() as f64,
    );
    if let Some(c) = s.consensus.read().expect("consensus lock").clone() {
        gauge(
            "poc_consensus_view",
            "Highest consensus view seen.",
            c.view as f64,
        );
        gauge(
            "poc_consensus_finalized_view",
            "View of the last finalized block.",
            c.finalized_view as f64,
        );
        gauge(
            "poc_consensus_finalized_blocks",
            "Blocks finalized since start.",
            c.finalized_blocks as f64,
        );
        gauge(
            "poc_consensus_finalization_latency_seconds",
            "First sight of the last block to its finalization.",
            c.last_finalization_latency_ms / 1000.0,
        );
        gauge(
            "poc_consensus_mean_finalization_latency_seconds",
            "Mean first-sight-to-finalization time since start.",
            c.mean_finalization_latency_ms / 1000.0,
        );
        gauge(
            "poc_consensus_peers",
            "Peers heard from recently.",
            c.peers.len() as f64,
        );
        gauge(
            "poc_consensus_synced",
            "1 when within one block of the peers.",
            f64::from(u8::from(c.synced)),
        );
        gauge(
            "poc_consensus_validating",
            "1 when this node signs votes.",
            f64::from(u8::from(c.validating)),
        );
    }
    out.push_str(&s.engine_metrics.read().expect("metrics lock"));
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
        .into_response()
}
