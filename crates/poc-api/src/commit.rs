//! The commit worker (`docs/protocol/chain-and-api.md` §6.6): carries out
//! [`plan_commits`]: flushes the stage's store and commits its `(count, root)` while the
//! commit window is open, reports artifacts that arrived too late, and sends the weight
//! distribution.

use std::sync::Arc;
use std::time::{Duration, Instant};

use poc_chain::api::{BroadcastMode, TxResponse};
use poc_chain::error::ErrorKind;
use poc_chain::msgs::{MlNodeWeight, Msg};
use poc_chain_client::ClientError;
use tokio::sync::watch;

use crate::ApiNode;
use crate::config::secs;
use crate::metrics::Count;
use crate::phase::scale_distribution;
use crate::plan::{CommitAction, CommitClock, CommitMemo, plan_commits};
use crate::timing::{Attempt, Window};

/// Why a weight distribution was not sent (it is tried again later).
#[derive(Debug, thiserror::Error)]
enum DistributeError {
    /// A chain query or the broadcast failed.
    #[error(transparent)]
    Chain(#[from] ClientError),
    /// The chain has no store commit of this participant for the stage.
    #[error("no store commit on chain")]
    NoCommit,
    /// The store has no per-node counts (no artifacts came from a known ML node).
    #[error("no per-node counts in the store")]
    NoNodeCounts,
    /// The store could not be flushed.
    #[error("the store cannot be flushed: {0}")]
    Store(#[from] poc_store::StoreError),
    /// The chain refused the transaction.
    #[error("rejected ({codespace} {code}): {log}")]
    Rejected {
        /// Error codespace.
        codespace: String,
        /// Error code.
        code: u32,
        /// The chain's log.
        log: String,
    },
}

/// Whether a rejected transaction's code says its window has closed.
pub(crate) fn window_closed(r: &TxResponse) -> bool {
    r.result.codespace == ErrorKind::PocTooLate.codespace()
        && [
            ErrorKind::PocTooLate.code(),
            ErrorKind::UpcomingEpochNotFound.code(),
        ]
        .contains(&r.result.code)
}

impl ApiNode {
    /// One commit-worker tick (§6.6): carries out what [`plan_commits`] decides from
    /// the chain view, the store's count and the clock.
    pub async fn commit_tick(self: &Arc<Self>, memo: &mut CommitMemo) {
        let Some(v) = self.view() else { return };
        let store = v
            .should_use_v2()
            .then(|| self.stores.get(v.current_stage().height() as u64).ok())
            .flatten();
        let clock = CommitClock {
            now: Instant::now(),
            interval: secs(self.cfg.commit_interval_s),
            block_time: self.block_time(),
        };
        let actions = plan_commits(memo, &v, store.as_ref().map(|s| s.count()), clock);
        let Some(store) = store else { return };
        for action in actions {
            match action {
                CommitAction::Commit { stage, window } => {
                    let s2 = Arc::clone(&store);
                    let snap = match tokio::task::spawn_blocking(move || s2.flush()).await {
                        Ok(Ok(snap)) => snap,
                        Ok(Err(e)) => {
                            tracing::error!(stage, "flush failed: {e}");
                            return;
                        }
                        Err(e) => {
                            tracing::error!(stage, "flush task failed: {e}");
                            return;
                        }
                    };
                    if let (Some(root), true) = (snap.root, snap.count > memo.last_committed) {
                        memo.last_attempt = Some(Attempt {
                            at: clock.now,
                            height: v.height,
                        });
                        let deadline = clock.now + window.time_left(v.height, clock.block_time);
                        self.send_commit(memo, stage, snap.count, root, window, deadline)
                            .await;
                    }
                }
                CommitAction::ReportLate {
                    stage,
                    committed,
                    late,
                } => {
                    self.metrics.add(Count::ArtifactsUncommitted, late);
                    let what = if committed > 0 {
                        "artifacts arrived after the last store commit of the stage"
                    } else {
                        "the stage's commit window closed with no store commit"
                    };
                    tracing::error!(
                        stage,
                        committed,
                        late,
                        "{what}: {late} artifacts will not count"
                    );
                }
                CommitAction::Distribute { stage } => match self.distribute(stage, &store).await {
                    Ok(()) => memo.distributed = true,
                    Err(e) => tracing::warn!(stage, "weight distribution: {e}"),
                },
            }
        }
    }

    /// Sends one store commit and waits for its block (the chain takes one commit per
    /// participant per block, and only an included commit counts).
    async fn send_commit(
        &self,
        memo: &mut CommitMemo,
        stage: i64,
        count: u64,
        root: poc_mmr::Hash,
        window: Window,
        deadline: Instant,
    ) {
        let count32 = u32::try_from(count).unwrap_or(u32::MAX);
        let msg = Msg::PocV2StoreCommit {
            creator: self.io.address.clone(),
            poc_stage_start_block_height: stage,
            count: count32,
            root_hash: root.to_vec(),
        };
        // A commit admitted just before the window closes may never be included (the
        // mempool drops it when the window ends), and the chain node would then hold the
        // block-mode answer for its whole timeout, stalling the distribution and the votes
        // behind it. Wait at most a few blocks past the window.
        let wait = deadline + 3 * self.block_time();
        let sent = tokio::time::timeout_at(
            wait.into(),
            self.io
                .send_exec_before(vec![msg], BroadcastMode::Block, Some(deadline)),
        )
        .await;
        let Ok(sent) = sent else {
            self.metrics.add(Count::CommitsMissedWindow, 1);
            // Its sequence may or may not have been used: read it again next time.
            self.io.operational.reset().await;
            tracing::error!(
                stage,
                count,
                window_end = window.end,
                "store commit not included before its window closed"
            );
            return;
        };
        match sent {
            Ok(r) if r.result.code == 0 => {
                memo.last_committed = count;
                self.metrics.add(Count::CommitsSent, 1);
                tracing::info!(stage, count, height = r.height, "store commit included");
            }
            Ok(r) if window_closed(&r) => {
                self.metrics.add(Count::CommitsMissedWindow, 1);
                tracing::error!(
                    stage,
                    count,
                    window_end = window.end,
                    "store commit missed the exchange window ({} {}): {}",
                    r.result.codespace,
                    r.result.code,
                    r.result.raw_log
                );
            }
            Ok(r) => {
                self.metrics.add(Count::CommitsRejected, 1);
                tracing::warn!(
                    stage,
                    count,
                    "store commit rejected ({} {}): {}",
                    r.result.codespace,
                    r.result.code,
                    r.result.raw_log
                )
            }
            Err(e) => tracing::warn!(stage, count, "store commit not sent: {e}"),
        }
    }

    /// Sends the weight distribution of `stage` (nothing if the chain has it already):
    /// the store's per-node counts scaled to the committed count.
    async fn distribute(
        &self,
        stage: i64,
        store: &Arc<poc_store::ArtifactStore>,
    ) -> Result<(), DistributeError> {
        let c = &self.io.client;
        if c.distribution(stage, &self.io.address).await?.found {
            return Ok(());
        }
        let commit = c.store_commit(stage, &self.io.address).await?;
        if !commit.found || commit.count == 0 {
            return Err(DistributeError::NoCommit);
        }
        let s2 = Arc::clone(store);
        let counts =
            tokio::task::spawn_blocking(move || s2.flush().map(|_| s2.flushed_node_counts()))
                .await
                .expect("flush does not panic")?;
        let weights = scale_distribution(&counts, commit.count);
        if weights.is_empty() {
            return Err(DistributeError::NoNodeCounts);
        }
        let msg = Msg::MlNodeWeightDistribution {
            creator: self.io.address.clone(),
            poc_stage_start_block_height: stage,
            weights: weights
                .into_iter()
                .map(|(node_id, weight)| MlNodeWeight { node_id, weight })
                .collect(),
        };
        let r = self.io.send_exec(vec![msg], BroadcastMode::Block).await?;
        if r.result.code != 0 {
            return Err(DistributeError::Rejected {
                codespace: r.result.codespace,
                code: r.result.code,
                log: r.result.raw_log,
            });
        }
        self.metrics.add(Count::DistributionsSent, 1);
        tracing::info!(stage, count = commit.count, "weight distribution sent");
        Ok(())
    }
}

/// The commit worker: every 200 ms a commit tick, then the votes that are due (whether
/// to send is decided from the chain's timing, [`crate::timing`]). It owns what it
/// remembers of the stage; ends when `stop` changes.
pub(crate) async fn worker(node: Arc<ApiNode>, mut stop: watch::Receiver<bool>) {
    let mut memo = CommitMemo::default();
    let mut iv = tokio::time::interval(Duration::from_millis(200));
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = iv.tick() => {
                node.commit_tick(&mut memo).await;
                node.flush_votes(false).await;
            }
        }
    }
}
