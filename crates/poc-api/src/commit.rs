//! The commit worker (`docs/protocol/chain-and-api.md` §6.6): commits the flushed
//! `(count, root)` of the stage's store while its commit window is open, reports
//! artifacts that arrived too late, then sends the weight distribution when due.

use std::sync::Arc;
use std::time::{Duration, Instant};

use poc_chain::api::{BroadcastMode, TxResponse};
use poc_chain::error::ErrorKind;
use poc_chain::msgs::{MlNodeWeight, Msg};

use crate::Shared;
use crate::config::secs;
use crate::phase::scale_distribution;
use crate::timing::{Attempt, Window, commit_due};

/// Commit worker memory.
#[derive(Debug, Default)]
pub(crate) struct CommitState {
    stage: i64,
    last_committed: u64,
    last_attempt: Option<Attempt>,
    /// Whether the end of the stage's commit window was already checked.
    window_closed: bool,
    distribution_attempt: Option<Instant>,
    distributed: bool,
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

impl Shared {
    /// One commit-worker tick (§6.6): while the stage's commit window is open and new
    /// artifacts were stored, flush and commit the flushed `(count, root)` when due
    /// (timed from the chain, [`timing::commit_due`]); once the window has closed, report
    /// artifacts that arrived too late; then the weight distribution when due.
    pub async fn commit_tick(self: &Arc<Self>) {
        let Some(v) = self.view() else { return };
        if !v.should_use_v2() {
            return;
        }
        let stage = v.current_stage().height();
        let mut cs = self.commit.lock().await;
        if cs.stage != stage {
            *cs = CommitState {
                stage,
                ..CommitState::default()
            };
        }
        let Ok(store) = self.stores.get(stage as u64) else {
            return;
        };
        let window = v.commit_window(stage);
        if let Some(w) = window
            && v.accept_store_commit(stage)
        {
            let now = Instant::now();
            let grown = store.count() > cs.last_committed;
            let interval = secs(self.cfg.commit_interval_s);
            if commit_due(
                grown,
                cs.last_attempt,
                now,
                v.height,
                w,
                interval,
                self.block_time(),
            ) {
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
                if let (Some(root), true) = (snap.root, snap.count > cs.last_committed) {
                    cs.last_attempt = Some(Attempt {
                        at: now,
                        height: v.height,
                    });
                    let deadline = now + w.time_left(v.height, self.block_time());
                    self.send_commit(&mut cs, stage, snap.count, root, w, deadline)
                        .await;
                }
            }
        } else if window.is_some_and(|w| !w.open_at(v.height)) && !cs.window_closed {
            cs.window_closed = true;
            let late = store.count().saturating_sub(cs.last_committed);
            if late > 0 {
                self.metrics.add("poc_artifacts_uncommitted_total", late);
                let what = if cs.last_committed > 0 {
                    "artifacts arrived after the last store commit of the stage"
                } else {
                    "the stage's commit window closed with no store commit"
                };
                tracing::error!(
                    stage,
                    committed = cs.last_committed,
                    late,
                    "{what}: {late} artifacts will not count"
                );
            }
        }
        if v.should_distribute()
            && !cs.distributed
            && cs
                .distribution_attempt
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(30))
        {
            cs.distribution_attempt = Some(Instant::now());
            if let Err(e) = self.distribute(stage, &store).await {
                tracing::warn!(stage, "weight distribution: {e}");
            } else {
                cs.distributed = true;
            }
        }
    }

    /// Sends one store commit and waits for its block (the chain takes one commit per
    /// participant per block, and only an included commit counts).
    async fn send_commit(
        &self,
        cs: &mut CommitState,
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
            self.metrics.add("poc_commits_missed_window_total", 1);
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
                cs.last_committed = count;
                self.metrics.add("poc_commits_sent_total", 1);
                tracing::info!(stage, count, height = r.height, "store commit included");
            }
            Ok(r) if window_closed(&r) => {
                self.metrics.add("poc_commits_missed_window_total", 1);
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
                self.metrics.add("poc_commits_rejected_total", 1);
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

    async fn distribute(
        &self,
        stage: i64,
        store: &Arc<poc_store::ArtifactStore>,
    ) -> Result<(), String> {
        let c = &self.io.client;
        if c.distribution(stage, &self.io.address)
            .await
            .map_err(|e| e.to_string())?
            .found
        {
            return Ok(());
        }
        let commit = c
            .store_commit(stage, &self.io.address)
            .await
            .map_err(|e| e.to_string())?;
        if !commit.found || commit.count == 0 {
            return Err("no store commit on chain".into());
        }
        let s2 = Arc::clone(store);
        let counts =
            tokio::task::spawn_blocking(move || s2.flush().map(|_| s2.flushed_node_counts()))
                .await
                .expect("flush does not panic")
                .map_err(|e| e.to_string())?;
        let weights = scale_distribution(&counts, commit.count);
        if weights.is_empty() {
            return Err("no per-node counts in the store".into());
        }
        let msg = Msg::MlNodeWeightDistribution {
            creator: self.io.address.clone(),
            poc_stage_start_block_height: stage,
            weights: weights
                .into_iter()
                .map(|(node_id, weight)| MlNodeWeight { node_id, weight })
                .collect(),
        };
        let r = self
            .io
            .send_exec(vec![msg], BroadcastMode::Block)
            .await
            .map_err(|e| e.to_string())?;
        if r.result.code != 0 {
            return Err(format!(
                "rejected ({} {}): {}",
                r.result.codespace, r.result.code, r.result.raw_log
            ));
        }
        self.metrics.add("poc_distributions_sent_total", 1);
        tracing::info!(stage, count = commit.count, "weight distribution sent");
        Ok(())
    }
}
