//! What a devnet reports: per participant, per stage, per validator, and the table.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::options::Mode;
use crate::{ChainNodes, Devnet, DevnetError};

/// One participant's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct ParticipantReport {
    pub index: usize,
    /// Account address.
    pub address: String,
    /// `honest` or the cheat.
    pub role: String,
    /// Committed count in the last regular PoC.
    pub committed_count: u32,
    /// Its weight distribution.
    pub distribution: BTreeMap<String, u32>,
    /// Valid votes received in the last regular PoC.
    pub votes_valid: usize,
    /// Invalid votes received.
    pub votes_invalid: usize,
    /// Whether it earned weight.
    pub accepted: bool,
    /// Resulting weight.
    pub weight: i64,
    /// Confirmation weight in the last epoch.
    pub confirmation_weight: i64,
    /// `ACTIVE` / `INACTIVE`.
    pub status: String,
    /// Whether the outcome is the expected one (honest accepted, cheater rejected).
    pub as_expected: bool,
}

/// Timings of one regular PoC.
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    /// Epoch the PoC was for.
    pub epoch: u64,
    /// Stage height S.
    pub stage: i64,
    /// Per participant: seconds from block S being seen to its first stored artifact.
    pub phase_switch_latency_s: BTreeMap<usize, f64>,
    /// Per participant: artifacts stored per second of generation.
    pub nonces_per_sec: BTreeMap<usize, f64>,
    /// Seconds from the validation start to the last vote on chain.
    pub validation_duration_s: f64,
    /// Votes on chain.
    pub votes: usize,
}

/// Everything the run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Options in short.
    pub mode: Mode,
    pub participants: Vec<ParticipantReport>,
    /// Regular PoCs.
    pub stages: Vec<StageReport>,
    /// Confirmation events seen (epoch, sequence, trigger height, phase).
    pub confirmation_events: Vec<(u64, u64, i64, String)>,
    /// Migration mode: the epoch in which governance switched to V2 (the grace epoch).
    pub switched_to_v2_in_epoch: Option<u64>,
    /// Wall time.
    pub wall_s: f64,
    /// Replicated chain: each validator's height and its app hash at the lowest height
    /// they all reached (empty for the single-producer chain).
    pub chain_validators: Vec<ValidatorReport>,
    /// Every participant as expected (and, replicated, every validator agrees).
    pub ok: bool,
}

/// One chain validator at the end of a replicated run.
#[derive(Debug, Clone, Serialize)]
pub struct ValidatorReport {
    /// Its REST URL.
    pub url: String,
    /// Its committed height.
    pub height: i64,
    /// Its block hash at the common height.
    pub block_hash_at_common: String,
    /// Its app hash at the common height.
    pub app_hash_at_common: String,
}

impl Devnet {
    /// Votes on chain for a stage (v2 and v1).
    pub(crate) async fn votes_at(&self, stage: i64) -> usize {
        let v2: usize = self
            .client
            .validations_v2(stage)
            .await
            .map(|v| {
                v.poc_validation
                    .iter()
                    .map(|p| p.poc_validation.len())
                    .sum()
            })
            .unwrap_or(0);
        let v1: usize = self
            .client
            .validations_v1(stage)
            .await
            .map(|v| {
                v.poc_validation
                    .iter()
                    .map(|p| p.poc_validation.len())
                    .sum()
            })
            .unwrap_or(0);
        v1 + v2
    }

    /// Each validator's height and hashes at the lowest height all of them reached.
    pub(crate) fn validator_reports(&self) -> Vec<ValidatorReport> {
        let Some(ChainNodes::Replicated(nodes)) = &self.chain else {
            return Vec::new();
        };
        let common = nodes
            .iter()
            .map(|n| n.chain.services.head().state.height)
            .min()
            .unwrap_or(0);
        nodes
            .iter()
            .map(|n| {
                let db = n.chain.services.db();
                let block = db.as_ref().and_then(|d| d.block(common).ok().flatten());
                let result = db.as_ref().and_then(|d| d.result(common).ok().flatten());
                ValidatorReport {
                    url: format!("http://{}", n.chain.addr),
                    height: n.chain.services.head().state.height,
                    block_hash_at_common: block
                        .map(|b| hex::encode(b.header.hash()))
                        .unwrap_or_default(),
                    app_hash_at_common: result.map(|r| hex::encode(r.app_hash)).unwrap_or_default(),
                }
            })
            .collect()
    }

    /// The final report: what each participant committed, the votes it got and its weight.
    pub(crate) async fn report(
        &self,
        stages: Vec<StageReport>,
        wall: Duration,
        n: usize,
    ) -> Result<Report, DevnetError> {
        let c = &self.client;
        let e =
            |x: poc_chain_client::ClientError| DevnetError::Component(format!("chain query: {x}"));
        let info = c.epoch_info().await.map_err(e)?;
        let stage = info.latest_epoch.poc_start_block_height;
        let group = c.epoch_group(info.effective_epoch.index).await.map_err(e)?;
        let v2 = info.params.poc_params.poc_v2_enabled;
        let votes = c.validations_v2(stage).await.map_err(e)?;
        let votes_v1 = c.validations_v1(stage).await.map_err(e)?;
        let batches = c.batches(stage).await.map_err(e)?;
        let mut participants = Vec::new();
        for m in &self.members {
            let addr = m.account.address();
            let (count, distribution, valid, invalid) = if v2 {
                let commit = c.store_commit(stage, &addr).await.map_err(e)?;
                let dist = c.distribution(stage, &addr).await.map_err(e)?;
                let rec = votes.poc_validation.iter().find(|r| r.participant == addr);
                let (valid, invalid) = rec
                    .map(|r| {
                        (
                            r.poc_validation
                                .iter()
                                .filter(|v| v.validated_weight > 0)
                                .count(),
                            r.poc_validation
                                .iter()
                                .filter(|v| v.validated_weight <= 0)
                                .count(),
                        )
                    })
                    .unwrap_or((0, 0));
                let d: BTreeMap<String, u32> = dist
                    .weights
                    .iter()
                    .map(|w| (w.node_id.clone(), w.weight))
                    .collect();
                (commit.count, d, valid, invalid)
            } else {
                // v1: unique nonces over the participant's batches, split by ML node.
                let mut seen = std::collections::BTreeSet::new();
                let mut by_node: BTreeMap<String, u32> = BTreeMap::new();
                for b in batches
                    .poc_batch
                    .iter()
                    .filter(|p| p.participant == addr)
                    .flat_map(|p| &p.poc_batch)
                {
                    for n in &b.nonces {
                        if seen.insert(*n) {
                            *by_node.entry(b.node_id.clone()).or_default() += 1;
                        }
                    }
                }
                let rec = votes_v1
                    .poc_validation
                    .iter()
                    .find(|r| r.participant == addr);
                let (valid, invalid) = rec
                    .map(|r| {
                        (
                            r.poc_validation
                                .iter()
                                .filter(|v| !v.fraud_detected)
                                .count(),
                            r.poc_validation.iter().filter(|v| v.fraud_detected).count(),
                        )
                    })
                    .unwrap_or((0, 0));
                (seen.len() as u32, by_node, valid, invalid)
            };
            // The PoC result (a participant deactivated by confirmation PoC keeps it here
            // but leaves the validator set).
            let weight = group
                .as_ref()
                .and_then(|g| g.active_participants.iter().find(|p| p.index == addr))
                .map(|p| p.weight)
                .unwrap_or(0);
            let cw = group
                .as_ref()
                .and_then(|g| g.confirmation_weights.iter().find(|w| w.address == addr))
                .map(|w| w.weight)
                .unwrap_or(0);
            let status = c
                .participant(&addr)
                .await
                .map_err(e)?
                .map(|p| p.participant.status)
                .unwrap_or_default();
            let accepted = weight > 0;
            let expect_accepted = m.cheat.is_none() && !self.options.dropouts.contains(&m.index);
            participants.push(ParticipantReport {
                index: m.index,
                address: addr,
                role: m.cheat.map(|c| c.name().to_owned()).unwrap_or_else(|| {
                    if self.options.dropouts.contains(&m.index) {
                        "honest, goes offline".into()
                    } else {
                        "honest".into()
                    }
                }),
                committed_count: count,
                distribution,
                votes_valid: valid,
                votes_invalid: invalid,
                accepted,
                weight,
                confirmation_weight: cw,
                status,
                as_expected: accepted == expect_accepted
                    || (self.options.dropouts.contains(&m.index)),
            });
        }
        let mut confirmation_events = Vec::new();
        for ep in 1..=info.effective_epoch.index {
            for ev in c.confirmation_events(ep).await.map_err(e)?.events {
                confirmation_events.push((
                    ev.epoch_index,
                    ev.event_sequence,
                    ev.trigger_height,
                    format!("{:?}", ev.phase),
                ));
            }
        }
        let chain_validators = self.validator_reports();
        let chain_agrees = chain_validators.windows(2).all(|w| {
            w[0].app_hash_at_common == w[1].app_hash_at_common
                && w[0].block_hash_at_common == w[1].block_hash_at_common
        });
        let ok =
            participants.iter().all(|p| p.as_expected) && participants.len() == n && chain_agrees;
        Ok(Report {
            mode: self.options.mode,
            participants,
            stages,
            confirmation_events,
            switched_to_v2_in_epoch: self.switched_at,
            wall_s: wall.as_secs_f64(),
            chain_validators,
            ok,
        })
    }
}

/// The table printed at the end.
pub fn table(r: &Report) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "{:<3} {:<22} {:<46} {:>9} {:<24} {:>6} {:>8} {:>8} {:>8} {:<9}\n",
        "#",
        "role",
        "address",
        "committed",
        "distribution",
        "valid",
        "invalid",
        "accepted",
        "weight",
        "status"
    ));
    for p in &r.participants {
        let dist = p
            .distribution
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect::<Vec<_>>()
            .join(",");
        s.push_str(&format!(
            "{:<3} {:<22} {:<46} {:>9} {:<24} {:>6} {:>8} {:>8} {:>8} {:<9}{}\n",
            p.index,
            p.role,
            p.address,
            p.committed_count,
            dist,
            p.votes_valid,
            p.votes_invalid,
            if p.accepted { "yes" } else { "no" },
            p.weight,
            p.status,
            if p.as_expected {
                ""
            } else {
                "  <-- unexpected"
            }
        ));
    }
    for (i, v) in r.chain_validators.iter().enumerate() {
        s.push_str(&format!(
            "validator-{i} {} height {}, app hash at the common height {}\n",
            v.url,
            v.height,
            &v.app_hash_at_common[..v.app_hash_at_common.len().min(16)],
        ));
    }
    for st in &r.stages {
        let lat: Vec<String> = st
            .phase_switch_latency_s
            .iter()
            .map(|(i, l)| format!("p{i} {l:.2}s"))
            .collect();
        let rate: Vec<String> = st
            .nonces_per_sec
            .iter()
            .map(|(i, v)| format!("p{i} {v:.0}"))
            .collect();
        s.push_str(&format!(
            "epoch {} (stage {}): first artifact after [{}]; nonces/s [{}]; {} votes in {:.1} s\n",
            st.epoch,
            st.stage,
            lat.join(", "),
            rate.join(", "),
            st.votes,
            st.validation_duration_s
        ));
    }
    if let Some(e) = r.switched_to_v2_in_epoch {
        s.push_str(&format!(
            "governance switched to PoC v2 in epoch {e} (its grace epoch), without a restart\n"
        ));
    }
    for (e, q, t, ph) in &r.confirmation_events {
        s.push_str(&format!("confirmation PoC {e}/{q} at height {t}: {ph}\n"));
    }
    s.push_str(&format!(
        "{} in {:.0} s\n",
        if r.ok {
            "OK: every honest participant accepted, every cheater rejected"
        } else {
            "FAILED: see the rows marked unexpected"
        },
        r.wall_s
    ));
    s
}
