//! The chain tracker: follows the chain block by block and starts what the planner
//! ([`crate::plan`]) decides: the epoch seed, generation and validation, v2 or v1.

use std::sync::Arc;
use std::time::{Duration, Instant};

use poc_chain::api::BroadcastMode;
use poc_chain::msgs::Msg;
use tokio::sync::watch;

use crate::ApiNode;
use crate::config::secs;
use crate::mlnodes::GenerateRequest;
use crate::phase::ChainView;
use crate::plan::{self, Action, SeedHash, Trigger, Triggers};
use crate::validator::{self, StageJob};

impl ApiNode {
    /// Plans the steps due at this view and starts them; a step that cannot start is
    /// forgotten in `triggers`, so the next view starts it again.
    async fn on_view(self: &Arc<Self>, v: &ChainView, triggers: &mut Triggers) {
        for a in plan::plan(v, triggers) {
            if let Err(trigger) = self.start(v, a).await {
                triggers.reset(trigger);
            }
        }
    }

    async fn seed_hash(&self, seed: &SeedHash) -> Option<String> {
        match seed {
            SeedHash::BlockAt(h) => self.block_hash(*h).await,
            SeedHash::Known(hash) => Some(hash.clone()),
        }
    }

    /// Carries out one planned step. Slow steps (generation and validation, which talk to
    /// the ML nodes) run on their own tasks: they must not hold up the tracker.
    async fn start(self: &Arc<Self>, v: &ChainView, action: Action) -> Result<(), Trigger> {
        let pp = &v.info.params.poc_params;
        match action {
            Action::SubmitSeed { epoch } => {
                let seed = Msg::SubmitSeed {
                    creator: self.io.address.clone(),
                    epoch_index: epoch,
                    signature: self.io.seed_for(epoch),
                };
                match self.io.send_exec(vec![seed], BroadcastMode::Sync).await {
                    Ok(r) if r.result.code == 0 => tracing::info!(epoch, "seed submitted"),
                    Ok(r) => tracing::warn!(epoch, "seed rejected: {}", r.result.raw_log),
                    Err(e) => {
                        tracing::warn!(epoch, "seed not sent: {e}");
                        return Err(Trigger::Seed);
                    }
                }
            }
            Action::Generate {
                trigger,
                stage,
                seed,
                expires,
            } => {
                let Some(hash) = self.seed_hash(&seed).await else {
                    return Err(trigger);
                };
                let spec = GenerateRequest {
                    block_hash: hash,
                    block_height: stage,
                    public_key: self.io.account_hex.clone(),
                    model: pp.model_id.clone(),
                    seq_len: pp.seq_len,
                    url: String::new(),
                };
                // The plan lasts as long as the stage takes commits.
                if let Some(end) = expires {
                    let st = Arc::clone(self);
                    tokio::spawn(async move { st.start_generation(spec, end).await });
                }
            }
            Action::Validate {
                trigger,
                stage,
                seed,
                sampling_at,
                window,
            } => {
                let seed = self.seed_hash(&seed).await;
                let sampling = self.block_hash(sampling_at).await;
                match (seed, sampling, window) {
                    (Some(seed_hash), Some(sampling_hash), Some(window)) => {
                        let job = StageJob {
                            stage,
                            seed_hash,
                            sampling_hash,
                            window,
                        };
                        tokio::spawn(validator::validate_stage(Arc::clone(self), job));
                    }
                    _ => return Err(trigger),
                }
            }
            Action::GenerateV1 {
                trigger,
                stage,
                seed,
                expires,
            } => match self.seed_hash(&seed).await {
                Some(hash) => self.v1_start_generation(&hash, stage, expires).await,
                None => return Err(trigger),
            },
            Action::ValidateV1 {
                trigger,
                stage,
                seed,
                sampling_at,
                deadline,
            } => {
                let seed = self.seed_hash(&seed).await;
                let sampling = self.block_hash(sampling_at).await;
                match (seed, sampling) {
                    (Some(seed), Some(sampling)) => {
                        tokio::spawn(
                            Arc::clone(self).v1_validate_stage(stage, seed, sampling, deadline),
                        );
                    }
                    _ => return Err(trigger),
                }
            }
        }
        Ok(())
    }
}

/// Follows the chain: registration first, then a new view on every new height.
pub(crate) async fn tracker(st: Arc<ApiNode>, mut stop: watch::Receiver<bool>) {
    let poll = secs(st.cfg.chain_poll_s);
    loop {
        match st.io.ensure_setup(&st.cfg.public_url).await {
            Ok(()) => break,
            Err(e) => tracing::warn!("chain setup (registration, grants) failed: {e}; retrying"),
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
    st.broker.check_health().await;
    let mut last = -1;
    let mut triggers = Triggers::default();
    loop {
        if let Ok(s) = st.io.client.head().await
            && s.height != last
            && let Ok(info) = st.io.client.epoch_info().await
        {
            last = s.height;
            st.clock
                .lock()
                .expect("clock lock")
                .observe(info.block_height, Instant::now());
            let v = ChainView {
                height: info.block_height,
                hash: s.hash,
                info,
            };
            *st.view.write().expect("view lock") = Some(v.clone());
            st.tokens.prune(v.height);
            st.on_view(&v, &mut triggers).await;
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(poll) => {}
        }
    }
}
