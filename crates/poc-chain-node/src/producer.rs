//! The single-producer driver: one block every `block_time` from the mempool, executed
//! with the pure state machine and made durable before it becomes visible.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use poc_chain::block::{MAX_BLOCK_BYTES, MAX_BLOCK_TXS};

use crate::db::DbError;
use crate::services::ChainServices;
use crate::{NodeConfig, now_secs};

/// A running block producer (its own thread).
#[derive(Debug)]
pub struct BlockProducer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BlockProducer {
    /// Starts producing blocks on `services`.
    pub fn spawn(services: Arc<ChainServices>, cfg: NodeConfig) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("block-producer".into())
            .spawn(move || produce(services, flag, cfg))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops after the block in progress (if any) is committed.
    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

/// The block producer: one block per tick, durable before it becomes visible.
fn produce(services: Arc<ChainServices>, stop: Arc<AtomicBool>, cfg: NodeConfig) {
    let mut next = Instant::now() + cfg.block_time;
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(50)));
            continue;
        }
        next += cfg.block_time;
        if next < Instant::now() {
            next = Instant::now() + cfg.block_time;
        }
        let head = services.head();
        let (txs, signatures) = {
            let mut pool = services.mempool.lock().expect("mempool lock");
            (pool.take(MAX_BLOCK_TXS, MAX_BLOCK_BYTES), pool.signatures())
        };
        let mut state = head.state.clone();
        let block = state.build_block(head.hash, now_secs(), txs);
        let result = match state.apply_block_with(&block, &*signatures) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("own block does not apply ({e}); block production stops");
                services.halted.store(true, Ordering::SeqCst);
                return;
            }
        };
        let h = state.height;
        if let Err(e) = services.commit_block(&block, &result, state, cfg.snapshot_interval) {
            if !matches!(e, DbError::Closed) {
                tracing::error!("cannot store block {h} ({e}); block production stops");
                services.halted.store(true, Ordering::SeqCst);
            }
            return;
        }
    }
}
