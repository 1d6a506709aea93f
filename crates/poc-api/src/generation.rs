//! Keeping the ML nodes generating while a stage accepts artifacts; a node that restarted resumes after its highest stored nonce.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::ApiNode;
use crate::callbacks::Grant;
use crate::metrics::Count;
use crate::mlnodes::GenerateRequest;

/// The PoC v2 generation the ML nodes should be running: what to send to a node that
/// is not generating (restarted, or back after a failure) while the stage accepts
/// artifacts.
#[derive(Debug, Clone)]
struct GenerationPlan {
    /// The `init/generate` body (its `url` is set per node).
    spec: GenerateRequest,
    /// Last height at which the stage accepts artifacts.
    expires: i64,
}

/// The generation plan and where each node got to.
#[derive(Debug, Default)]
pub(crate) struct Keeper {
    plan: Mutex<Option<GenerationPlan>>,
    /// One pass of [`ApiNode::keep_generating`] at a time (validation takes it to stop
    /// the nodes).
    pub(crate) one_pass: tokio::sync::Mutex<()>,
    /// Highest nonce stored per `(stage, ML node number)`: where a restarted node resumes.
    progress: Mutex<HashMap<(i64, u64), i32>>,
}

impl ApiNode {
    /// Records the highest nonce stored from an ML node in a stage.
    pub(crate) fn note_progress(&self, stage: i64, node: u64, max_nonce: i32) {
        let mut p = self.generation.progress.lock().expect("progress lock");
        let e = p.entry((stage, node)).or_insert(max_nonce);
        *e = (*e).max(max_nonce);
    }

    /// Sets the generation the ML nodes should run and starts it where it is not running.
    pub(crate) async fn start_generation(self: &Arc<Self>, spec: GenerateRequest, expires: i64) {
        let stage = spec.block_height;
        *self.generation.plan.lock().expect("generation lock") =
            Some(GenerationPlan { spec, expires });
        let n = self
            .keep_generating_now(self.generation.one_pass.lock().await)
            .await;
        tracing::info!(stage, nodes = n, "PoC generation started");
    }

    /// Forgets the generation plan (validation begins: the ML nodes are stopped).
    pub(crate) fn end_generation(&self) {
        *self.generation.plan.lock().expect("generation lock") = None;
    }

    /// Makes every reachable ML node run the current generation plan, while its stage
    /// still accepts artifacts: a node that restarted, or came back after a failure, or
    /// was down when the stage began, is started again and resumes after the highest
    /// nonce stored from it. Returns how many nodes generate.
    pub async fn keep_generating(&self) -> usize {
        match self.generation.one_pass.try_lock() {
            Ok(one) => self.keep_generating_now(one).await,
            // A pass is running already.
            Err(_) => 0,
        }
    }

    async fn keep_generating_now(&self, _one: tokio::sync::MutexGuard<'_, ()>) -> usize {
        let Some(plan) = self
            .generation
            .plan
            .lock()
            .expect("generation lock")
            .clone()
        else {
            return 0;
        };
        let stage = plan.spec.block_height;
        let Some(v) = self.view() else { return 0 };
        if v.height > plan.expires {
            self.end_generation();
            return 0;
        }
        if !(v.accept_generated() && v.current_stage().height() == stage) {
            return 0;
        }
        let starts = self.broker.nodes().iter().map(|n| {
            let mut spec = plan.spec.clone();
            spec.url = self.callback_url(
                Grant::Generation {
                    stage,
                    node: n.number,
                },
                plan.expires,
            );
            let resume = self
                .generation
                .progress
                .lock()
                .expect("progress lock")
                .get(&(stage, n.number))
                .map(|m| i64::from(*m) + 1);
            let was_usable = n.usable();
            async move {
                match self.broker.start_one(n, &spec, resume).await {
                    Ok(started) => {
                        if started {
                            self.metrics.add(Count::GenerationStarts, 1);
                            tracing::info!(node = %n.id, stage, resume_from = ?resume, "PoC generation started on the ML node");
                        }
                        true
                    }
                    Err(e) => {
                        if was_usable {
                            tracing::warn!(node = %n.id, stage, "cannot start PoC generation: {e}");
                        }
                        false
                    }
                }
            }
        });
        futures_util::future::join_all(starts)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count()
    }
}
