//! # poc-devnet: the whole system on one machine
//!
//! Starts a chain node, and per participant an ML node and an API node, all talking real
//! HTTP on loopback ports chosen automatically; some participants cheat ([`cheats`]).
//! Runs the requested regular PoC rounds (and optional confirmation PoCs), watches the
//! chain, and reports per participant what it committed, the votes it received and the
//! weight it got.

pub mod cheats;
mod launch;
mod options;
mod progress;
mod report;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use poc_api::RunningApi;
use poc_chain::api::EpochInfoResponse;
use poc_chain::epoch::{EpochContext, Phase};
use poc_chain::keys::PrivateKey;
use poc_chain_client::ChainClient;
use poc_mlnode::RunningNode;

pub use cheats::Cheat;
pub use launch::ensure_models;
pub use options::{DevnetOptions, Mode, V1_R_TARGET, default_home, devnet_params};
pub use report::{ParticipantReport, Report, StageReport, ValidatorReport, table};

use launch::ChainNodes;
use progress::Progress;

/// Devnet errors.
#[derive(Debug, thiserror::Error)]
pub enum DevnetError {
    /// Bad options.
    #[error("{0}")]
    Options(String),
    /// A component failed.
    #[error("{0}")]
    Component(String),
}

fn comp(what: &str) -> impl Fn(String) -> DevnetError + '_ {
    move |e| DevnetError::Component(format!("{what}: {e}"))
}

/// A stage being watched: its report, when it was first seen, when validation began, and
/// each participant's artifact counter at the start.
type Watch = (StageReport, Instant, Option<Instant>, BTreeMap<usize, u64>);

/// Nonces and artifacts a participant's API node received (v1 and v2).
fn received(m: &Member) -> u64 {
    let metrics = &m.api.shared.metrics;
    metrics.get("poc_artifacts_received_total") + metrics.get("poc_v1_nonces_received_total")
}

struct Member {
    index: usize,
    cheat: Option<Cheat>,
    account: PrivateKey,
    ml: Option<RunningNode>,
    api: RunningApi,
    proxy: Option<tokio::task::JoinHandle<()>>,
}

/// A running devnet.
pub struct Devnet {
    pub options: DevnetOptions,
    /// Chain REST client.
    pub client: ChainClient,
    chain: Option<ChainNodes>,
    members: Vec<Member>,
    run_dir: PathBuf,
    authority: PrivateKey,
    switched_at: Option<u64>,
}

impl Devnet {
    /// The chain's REST URL.
    pub fn chain_url(&self) -> &str {
        self.client.base()
    }

    /// Account addresses, by participant.
    pub fn addresses(&self) -> Vec<String> {
        self.members.iter().map(|m| m.account.address()).collect()
    }

    /// A participant's public (proof API) URL.
    pub fn public_url(&self, i: usize) -> String {
        format!("http://{}", self.members[i].api.public_addr)
    }

    /// Runs until `epochs` regular PoCs have set weights (and the last epoch is effective),
    /// and, with confirmations on, until a confirmation event of the last epoch completed.
    pub async fn run(&mut self) -> Result<Report, DevnetError> {
        let started = Instant::now();
        let o = self.options.clone();
        let n = self.members.len();
        let ui = Progress::new(o.progress, &self.members);
        let mut stages: Vec<StageReport> = Vec::new();
        let mut current: Option<Watch> = None;
        let per_epoch = o.epoch_length as f64 * o.block_time.as_secs_f64();
        let limit = Duration::from_secs_f64(per_epoch * (o.epochs as f64 + 2.5) + 60.0);
        let mut dropped = false;
        loop {
            if started.elapsed() > limit {
                return Err(DevnetError::Component(format!(
                    "the devnet did not finish in {limit:?}"
                )));
            }
            let info: EpochInfoResponse = match self.client.epoch_info().await {
                Ok(i) => i,
                Err(e) => return Err(DevnetError::Component(format!("chain node: {e}"))),
            };
            let h = info.block_height;
            let ctx = EpochContext::new(info.latest_epoch, info.params.epoch_params.clone());
            let phase = ctx.phase(h);
            let upcoming = info.latest_epoch.index > info.effective_epoch.index;
            // Stage bookkeeping.
            if upcoming
                && current
                    .as_ref()
                    .is_none_or(|c| c.0.stage != ctx.start_of_poc())
            {
                if let Some((s, ..)) = current.take() {
                    stages.push(s);
                }
                let base: BTreeMap<usize, u64> = self
                    .members
                    .iter()
                    .map(|m| (m.index, received(m)))
                    .collect();
                current = Some((
                    StageReport {
                        epoch: info.latest_epoch.index,
                        stage: ctx.start_of_poc(),
                        phase_switch_latency_s: BTreeMap::new(),
                        nonces_per_sec: BTreeMap::new(),
                        validation_duration_s: 0.0,
                        votes: 0,
                    },
                    Instant::now(),
                    None,
                    base,
                ));
            }
            if let Some((s, t0, tv, base)) = current.as_mut() {
                for m in &self.members {
                    let got = received(m).saturating_sub(base.get(&m.index).copied().unwrap_or(0));
                    if got > 0 && !s.phase_switch_latency_s.contains_key(&m.index) {
                        s.phase_switch_latency_s
                            .insert(m.index, t0.elapsed().as_secs_f64());
                    }
                    if matches!(phase, Phase::PoCGenerate | Phase::PoCGenerateWindDown) {
                        s.nonces_per_sec
                            .insert(m.index, got as f64 / t0.elapsed().as_secs_f64().max(1e-3));
                    }
                }
                if matches!(phase, Phase::PoCValidate | Phase::PoCValidateWindDown) {
                    let start = *tv.get_or_insert_with(Instant::now);
                    let votes = self.votes_at(s.stage).await;
                    if votes > s.votes {
                        s.votes = votes;
                        s.validation_duration_s = start.elapsed().as_secs_f64();
                    }
                }
            }
            // Dropouts lose their ML node once the last regular PoC's weights are effective
            // (so they fail that epoch's confirmation PoC).
            if !dropped && !o.dropouts.is_empty() && info.effective_epoch.index >= o.epochs {
                dropped = true;
                for m in self
                    .members
                    .iter_mut()
                    .filter(|m| o.dropouts.contains(&m.index))
                {
                    if let Some(ml) = m.ml.take() {
                        ml.shutdown().await;
                    }
                }
            }
            // Migration: governance switches to V2 once half of the epochs ran on V1.
            let switch_now = if o.switch_during_confirmation {
                info.effective_epoch.index >= o.epochs
                    && info
                        .active_confirmation_poc_event
                        .as_ref()
                        .is_some_and(|e| {
                            e.epoch_index == o.epochs
                                && e.phase == poc_chain::confirmation::ConfirmationPhase::Validation
                        })
            } else {
                info.effective_epoch.index >= o.epochs.div_ceil(2) && !upcoming
            };
            if o.mode == Mode::Migration && self.switched_at.is_none() && switch_now {
                self.switch_to_v2(&info).await?;
            }
            ui.update(h, &info, phase, &self.members, &self.client)
                .await;
            let regular_done = info.effective_epoch.index >= o.epochs && !upcoming;
            let conf_done = o.confirmations == 0 || {
                let evs = self
                    .client
                    .confirmation_events(o.epochs)
                    .await
                    .map(|e| e.events)
                    .unwrap_or_default();
                let want = if o.switch_during_confirmation { 2 } else { 1 };
                evs.iter()
                    .filter(|e| e.phase == poc_chain::confirmation::ConfirmationPhase::Completed)
                    .count()
                    >= want
            };
            if regular_done && conf_done {
                break;
            }
            tokio::time::sleep(o.block_time / 2).await;
        }
        if let Some((s, ..)) = current.take() {
            stages.push(s);
        }
        ui.finish();
        let report = self.report(stages, started.elapsed(), n).await?;
        Ok(report)
    }

    /// Governance `MsgUpdateParams` turning `poc_v2_enabled` on (no restart).
    async fn switch_to_v2(&mut self, info: &EpochInfoResponse) -> Result<(), DevnetError> {
        let mut params = info.params.clone();
        params.poc_params.poc_v2_enabled = true;
        let signer = poc_chain_client::TxSigner::new(self.client.clone(), self.authority.clone());
        let msg = poc_chain::msgs::Msg::UpdateParams {
            authority: self.authority.address(),
            params: Box::new(params),
        };
        let r = signer
            .send(
                &[poc_chain::tx::TxMsg::Direct(msg)],
                poc_chain::api::BroadcastMode::Block,
            )
            .await
            .map_err(|e| DevnetError::Component(format!("governance: {e}")))?;
        if r.result.code != 0 {
            return Err(DevnetError::Component(format!(
                "governance switch rejected: {}",
                r.result.raw_log
            )));
        }
        self.switched_at = Some(info.effective_epoch.index);
        Ok(())
    }

    /// The epoch in which governance switched to V2 (the grace epoch), in migration mode.
    pub fn switched_at(&self) -> Option<u64> {
        self.switched_at
    }

    /// Stops everything cleanly and removes the run directory unless `keep`.
    pub async fn shutdown(mut self) {
        for m in self.members.drain(..) {
            m.api.shutdown().await;
            if let Some(ml) = m.ml {
                ml.shutdown().await;
            }
            if let Some(p) = m.proxy {
                p.abort();
            }
        }
        if let Some(c) = self.chain.take() {
            c.shutdown().await;
        }
        if !self.options.keep {
            let _ = std::fs::remove_dir_all(&self.run_dir);
        }
    }
}
