//! Sending this validator's votes: queued per stage, sent in batches while their window is open.

use std::sync::Arc;
use std::time::Instant;

use poc_chain::api::BroadcastMode;

use crate::ApiNode;
use crate::commit::window_closed;
use crate::metrics::Count;
use crate::timing::{VoteBatch, Window};

impl ApiNode {
    /// Queues a vote on `participant` for `stage` (whose votes the chain accepts inside
    /// `window`) and sends what is due, in the background (a verdict callback is answered
    /// without waiting for the chain).
    pub fn vote(self: &Arc<Self>, stage: i64, window: Window, participant: String, weight: i64) {
        self.votes.lock().expect("votes lock").push(
            stage,
            window,
            participant,
            weight,
            Instant::now(),
        );
        let st = Arc::clone(self);
        tokio::spawn(async move { st.flush_votes(false).await });
    }

    /// Sends the pending votes when due (or all of them with `force`): one
    /// `MsgSubmitPocValidationsV2` per stage, each in its own transaction, retried once
    /// while the window is open. Votes whose window has closed are dropped and logged.
    pub async fn flush_votes(&self, force: bool) {
        let height = self.view().map_or(0, |v| v.height);
        let bt = self.block_time();
        let flush = {
            let mut q = self.votes.lock().expect("votes lock");
            if !force && !q.due(Instant::now(), height, bt) {
                return;
            }
            q.take(height, &self.io.address)
        };
        for (stage, n) in flush.expired {
            self.metrics.add(Count::VotesMissedWindow, n as u64);
            tracing::error!(
                stage,
                votes = n,
                height,
                "votes missed the validation window and were dropped: they will not count"
            );
        }
        for batch in flush.send {
            self.send_votes(batch).await;
        }
    }

    async fn send_votes(&self, batch: VoteBatch) {
        let VoteBatch {
            stage,
            votes: n,
            window,
            msg,
        } = batch;
        for attempt in 1..=2 {
            let height = self.view().map_or(0, |v| v.height);
            let deadline = Instant::now() + window.time_left(height, self.block_time());
            let why = match self
                .io
                .send_exec_before(vec![msg.clone()], BroadcastMode::Sync, Some(deadline))
                .await
            {
                Ok(r) if r.result.code == 0 => {
                    self.metrics.add(Count::VotesSent, n as u64);
                    tracing::info!(stage, votes = n, txhash = %r.result.txhash, "votes submitted");
                    return;
                }
                Ok(r) if window_closed(&r) => {
                    self.metrics.add(Count::VotesMissedWindow, n as u64);
                    tracing::error!(
                        stage,
                        votes = n,
                        window_end = window.end,
                        "votes missed the validation window ({} {}): {}",
                        r.result.codespace,
                        r.result.code,
                        r.result.raw_log
                    );
                    return;
                }
                Ok(r) => format!(
                    "rejected ({} {}): {}",
                    r.result.codespace, r.result.code, r.result.raw_log
                ),
                Err(e) => format!("not sent: {e}"),
            };
            let height = self.view().map_or(0, |v| v.height);
            if attempt == 1 && window.open_at(height) {
                tracing::warn!(stage, votes = n, "votes {why}; retrying once");
                continue;
            }
            self.metrics.add(Count::VotesRejected, n as u64);
            tracing::error!(stage, votes = n, "votes {why}; they will not count");
        }
    }
}
