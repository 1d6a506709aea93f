//! `GET /metrics`: the chain's gauges, read from the head, the mempool and the consensus
//! status at each scrape, then the consensus engine's own metrics.

use axum::extract::State;
use axum::response::Response;
use poc_http::metrics::prometheus_client::metrics::gauge::Gauge;
use poc_http::metrics::prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use super::S;

/// Registers a gauge holding `v` now.
fn int(r: &mut Registry, name: &str, help: &str, v: i64) {
    let g: Gauge = Gauge::default();
    g.set(v);
    r.register(name, help, g);
}

/// Registers a floating-point gauge holding `v` now.
fn float(r: &mut Registry, name: &str, help: &str, v: f64) {
    let g: Gauge<f64, AtomicU64> = Gauge::default();
    g.set(v);
    r.register(name, help, g);
}

/// OpenMetrics text: chain height and mempool, consensus progress on a replicated node,
/// then the consensus engine's own metrics.
pub(super) async fn metrics(State(s): S) -> Response {
    let head = s.head();
    let mut r = Registry::default();
    int(
        &mut r,
        "poc_chain_height",
        "Last committed block height",
        head.state.height,
    );
    let pool = s.mempool.lock().expect("mempool lock").len();
    int(
        &mut r,
        "poc_chain_mempool_size",
        "Transactions waiting",
        pool as i64,
    );
    if let Some(c) = s.consensus.read().expect("consensus lock").clone() {
        int(
            &mut r,
            "poc_consensus_view",
            "Highest consensus view seen",
            c.view as i64,
        );
        int(
            &mut r,
            "poc_consensus_finalized_view",
            "View of the last finalized block",
            c.finalized_view as i64,
        );
        int(
            &mut r,
            "poc_consensus_finalized_blocks",
            "Blocks finalized since start",
            c.finalized_blocks as i64,
        );
        float(
            &mut r,
            "poc_consensus_finalization_latency_seconds",
            "First sight of the last block to its finalization",
            c.last_finalization_latency_ms / 1000.0,
        );
        float(
            &mut r,
            "poc_consensus_mean_finalization_latency_seconds",
            "Mean first-sight-to-finalization time since start",
            c.mean_finalization_latency_ms / 1000.0,
        );
        int(
            &mut r,
            "poc_consensus_peers",
            "Peers heard from recently",
            c.peers.len() as i64,
        );
        int(
            &mut r,
            "poc_consensus_synced",
            "1 when within one block of the peers",
            i64::from(c.synced),
        );
        int(
            &mut r,
            "poc_consensus_validating",
            "1 when this node signs votes",
            i64::from(c.validating),
        );
    }
    let engine = s.engine_metrics.read().expect("metrics lock").clone();
    poc_http::metrics::response(&r, &engine)
}
