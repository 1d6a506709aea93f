//! EndBlock: what the chain does after a block's transactions, in the reference's order
//! (`docs/protocol/chain-and-api.md` §1.4, §1.6, §5.6): confirmation PoC events, the
//! new weights at the end of PoC validation, the switch of validators, the start of the
//! next PoC stage and the validation snapshot. Each step reports an [`EndBlockEvent`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::confirmation::{self, ConfirmationEvent, ConfirmationPhase};
use crate::decimal::{Dec, dec_one};
use crate::epoch::Epoch;
use crate::params::PocMode;
use crate::records::{ActiveParticipant, EpochGroup, ParticipantStatus, ValidationSnapshot};
use crate::state::{BlockContext, ChainState};
use crate::weights::allocate_poc_slots;

/// `pocDeviationCoeff` of the confirmation ratio.
pub const POC_DEVIATION_COEFF: &str = "0.909";

/// What an EndBlock did (for logs and block results; not part of consensus).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EndBlockEvent {
    /// A confirmation PoC event was triggered.
    ConfirmationTriggered {
        /// Effective epoch.
        epoch: u64,
        /// The event's sequence in its epoch.
        sequence: u64,
        /// Trigger height.
        height: i64,
    },
    /// A confirmation event completed with these weights.
    ConfirmationWeights {
        epoch: u64,
        /// The event's sequence.
        sequence: u64,
        /// Counted by the v2 rules.
        v2: bool,
        /// Computed only (migration or grace epoch): no weight changed.
        dry_run: bool,
        /// Confirmed weight per participant.
        weights: Vec<(String, i64)>,
    },
    /// A participant's confirmation ratio fell below the threshold.
    FailedConfirmation {
        /// The participant, now inactive.
        participant: String,
        /// Its ratio (18-place decimal).
        ratio: String,
    },
    /// The weights of an epoch were set at the end of its PoC validation.
    WeightsSet {
        epoch: u64,
        /// Counted by the v2 rules.
        v2: bool,
        /// Weight per participant.
        weights: Vec<(String, i64)>,
    },
    /// Nobody earned weight; the previous validators stay.
    ValidatorsCarriedOver { epoch: u64 },
    /// An epoch became effective (its validators took over).
    EpochEffective { epoch: u64 },
    /// The PoC stage of a new epoch started.
    PocStarted {
        /// The new epoch.
        epoch: u64,
        /// Its stage height.
        height: i64,
    },
    /// Validation of a stage started (the snapshot was taken).
    ValidationStarted {
        /// Stage height.
        stage: i64,
        height: i64,
    },
}

fn list(weights: &[(String, i64)]) -> String {
    weights
        .iter()
        .map(|(a, w)| format!("{a}={w}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn version(v2: bool) -> &'static str {
    if v2 { "v2" } else { "v1" }
}

impl fmt::Display for EndBlockEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ConfirmationTriggered {
                epoch,
                sequence,
                height,
            } => write!(
                f,
                "confirmation PoC {epoch}/{sequence} triggered at {height}"
            ),
            Self::ConfirmationWeights {
                epoch,
                sequence,
                v2,
                dry_run,
                weights,
            } => write!(
                f,
                "confirmation PoC {epoch}/{sequence} ({}{}): {}",
                version(*v2),
                if *dry_run { ", dry run" } else { "" },
                list(weights)
            ),
            Self::FailedConfirmation { participant, ratio } => write!(
                f,
                "{participant} failed confirmation PoC (ratio {ratio}) and is inactive"
            ),
            Self::WeightsSet { epoch, v2, weights } => write!(
                f,
                "weights for epoch {epoch} ({}): {}",
                version(*v2),
                list(weights)
            ),
            Self::ValidatorsCarriedOver { epoch } => write!(
                f,
                "epoch {epoch}: no participant earned weight; validators carried over"
            ),
            Self::EpochEffective { epoch } => write!(f, "epoch {epoch} is now effective"),
            Self::PocStarted { epoch, height } => {
                write!(f, "PoC for epoch {epoch} starts at {height}")
            }
            Self::ValidationStarted { stage, height } => {
                write!(f, "validation of stage {stage} starts at {height}")
            }
        }
    }
}

impl ChainState {
    /// EndBlock in the reference's order (`docs/protocol/chain-and-api.md` §1.4).
    pub fn end_block(&mut self, ctx: &BlockContext) -> Vec<EndBlockEvent> {
        let mut log = Vec::new();
        self.handle_confirmation(ctx, &mut log);
        let h = ctx.height;
        let latest = self.latest_ctx();
        if latest.is_end_of_poc_validation(h) {
            self.on_end_of_poc_validation(&mut log);
        }
        if self.latest_ctx().is_set_new_validators(h)
            && self.latest_epoch.index > self.effective_epoch.index
        {
            self.effective_epoch = self.latest_epoch;
            self.snapshots
                .remove(&self.latest_epoch.poc_start_block_height);
            log.push(EndBlockEvent::EpochEffective {
                epoch: self.effective_epoch.index,
            });
        }
        if self.latest_epoch.index == self.effective_epoch.index
            && self.effective_ctx().is_start_of_next_poc(h)
        {
            self.latest_epoch = Epoch {
                index: self.latest_epoch.index + 1,
                poc_start_block_height: h,
            };
            self.generation_start_times.insert(h, ctx.time);
            log.push(EndBlockEvent::PocStarted {
                epoch: self.latest_epoch.index,
                height: h,
            });
        }
        if self.latest_epoch.index > self.effective_epoch.index
            && self.latest_ctx().is_start_of_poc_validation(h)
        {
            let s = self.latest_epoch.poc_start_block_height;
            self.capture_snapshot(ctx, s);
            log.push(EndBlockEvent::ValidationStarted {
                stage: s,
                height: h,
            });
        }
        log
    }

    fn capture_snapshot(&mut self, ctx: &BlockContext, stage: i64) {
        let snap = ValidationSnapshot {
            poc_stage_start_height: stage,
            snapshot_height: ctx.height,
            app_hash: self.app_hash,
            validator_weights: self.current_validator_weights().into_iter().collect(),
            generation_start_timestamp: self
                .generation_start_times
                .get(&stage)
                .copied()
                .unwrap_or(0),
            exchange_end_timestamp: ctx.time,
        };
        self.snapshots.insert(stage, snap);
    }

    fn on_end_of_poc_validation(&mut self, log: &mut Vec<EndBlockEvent>) {
        let u = self.latest_epoch;
        if u.index <= self.effective_epoch.index {
            return;
        }
        let s = u.poc_start_block_height;
        let mut new = if self.params.poc_params.poc_v2_enabled {
            self.compute_new_weights_v2(u.index, s)
        } else {
            self.compute_new_weights_v1(u.index, s, true)
        };
        let fraction = self
            .params
            .epoch_params
            .poc_slot_allocation
            .map_or_else(|| Dec::from_u64(0), |d| d.to_dec());
        allocate_poc_slots(&mut new, &fraction);
        let mut group = EpochGroup::default();
        for p in &new {
            group.members.insert(p.index.clone(), p.weight);
            let non_preserved = non_preserved_weight(p);
            group
                .confirmation_weights
                .insert(p.index.clone(), non_preserved);
            if let Some(part) = self.participants.get_mut(&p.index) {
                part.status = ParticipantStatus::Active;
                part.status_reason.clear();
            }
        }
        log.push(EndBlockEvent::WeightsSet {
            epoch: u.index,
            v2: self.params.poc_params.poc_v2_enabled,
            weights: new.iter().map(|p| (p.index.clone(), p.weight)).collect(),
        });
        group.participants = new;
        if group.members.is_empty() {
            // Nobody earned weight: keep the previous validators so the chain stays live
            // (the reference's CometBFT chain would halt with an empty validator set).
            group.members = self.current_validator_weights();
            log.push(EndBlockEvent::ValidatorsCarriedOver { epoch: u.index });
        }
        self.epoch_groups.insert(u.index, group);
    }

    fn handle_confirmation(&mut self, ctx: &BlockContext, log: &mut Vec<EndBlockEvent>) {
        let h = ctx.height;
        let ep = self.params.epoch_params.clone();
        if let Some(mut ev) = self.active_event.clone() {
            if ev.phase == ConfirmationPhase::GracePeriod && h >= ev.generation_start_height {
                ev.phase = ConfirmationPhase::Generation;
                ev.poc_seed_block_hash = hex::encode(ctx.hash);
                self.generation_start_times
                    .insert(ev.trigger_height, ctx.time);
            }
            if ev.phase == ConfirmationPhase::Generation && h >= ev.validation_start(&ep) {
                ev.phase = ConfirmationPhase::Validation;
                self.capture_snapshot(ctx, ev.trigger_height);
            }
            if ev.phase == ConfirmationPhase::Validation && h > ev.validation_end(&ep) {
                ev.phase = ConfirmationPhase::Completed;
                self.update_confirmation_weights(&ev, log);
            }
            self.confirmation_events
                .insert((ev.epoch_index, ev.event_sequence), ev.clone());
            if ev.phase == ConfirmationPhase::Completed
                && h >= ev.validation_end(&ep) + 1 + ep.set_new_validators_delay
            {
                self.snapshots.remove(&ev.trigger_height);
                self.active_event = None;
            } else {
                self.active_event = Some(ev);
            }
        }
        let n = self
            .params
            .confirmation_poc_params
            .expected_confirmations_per_epoch;
        if self.active_event.is_none()
            && confirmation::should_trigger(&self.effective_ctx(), h, &ctx.hash, n)
        {
            let epoch = self.effective_epoch.index;
            let seq = self
                .confirmation_events
                .range((epoch, 0)..=(epoch, u64::MAX))
                .count() as u64;
            let ev = ConfirmationEvent {
                epoch_index: epoch,
                event_sequence: seq,
                trigger_height: h,
                generation_start_height: ConfirmationEvent::generation_start(h, &ep),
                phase: ConfirmationPhase::GracePeriod,
                poc_seed_block_hash: String::new(),
            };
            log.push(EndBlockEvent::ConfirmationTriggered {
                epoch,
                sequence: seq,
                height: h,
            });
            self.confirmation_events.insert((epoch, seq), ev.clone());
            self.active_event = Some(ev);
        }
    }

    /// `updateConfirmationWeights` (`docs/protocol/chain-and-api.md` §5.6).
    fn update_confirmation_weights(
        &mut self,
        ev: &ConfirmationEvent,
        log: &mut Vec<EndBlockEvent>,
    ) {
        let (v2, dry) = match PocMode::of(&self.params.poc_params) {
            PocMode::FullV1 => (false, false),
            PocMode::Migration => (ev.event_sequence == 0, ev.event_sequence == 0),
            PocMode::FullV2 => (true, self.poc_v2_enabled_epoch == Some(ev.epoch_index)),
        };
        let computed: std::collections::BTreeMap<String, i64> = if v2 {
            self.confirmation_weights_v2(ev.epoch_index, ev.trigger_height)
        } else {
            self.compute_new_weights_v1(ev.epoch_index, ev.trigger_height, false)
                .into_iter()
                .map(|p| (p.index, p.weight))
                .collect()
        };
        log.push(EndBlockEvent::ConfirmationWeights {
            epoch: ev.epoch_index,
            sequence: ev.event_sequence,
            v2,
            dry_run: dry,
            weights: computed.iter().map(|(a, w)| (a.clone(), *w)).collect(),
        });
        if dry {
            return;
        }
        let Some(mut group) = self.epoch_groups.get(&ev.epoch_index).cloned() else {
            return;
        };
        let alpha = self
            .params
            .confirmation_poc_params
            .alpha_threshold
            .map_or_else(|| Dec::from_u64(0), |d| d.to_dec());
        let coeff = Dec::parse(POC_DEVIATION_COEFF).expect("constant");
        for p in &group.participants {
            let non_preserved = non_preserved_weight(p);
            let cw = group
                .confirmation_weights
                .entry(p.index.clone())
                .or_insert(0);
            match computed.get(&p.index) {
                Some(c) => *cw = (*cw).min(*c),
                None => {
                    if non_preserved > 0 && *cw > 0 {
                        *cw = 0;
                    }
                }
            }
            let ratio = if non_preserved == 0 {
                dec_one()
            } else {
                Dec::from_i128(i128::from(*cw))
                    .div(&Dec::from_i128(i128::from(non_preserved)))
                    .and_then(|r| r.div(&coeff))
                    .map(|r| r.min(dec_one()))
                    .unwrap_or_else(dec_one)
            };
            if let Some(part) = self.participants.get_mut(&p.index) {
                part.confirmation_poc_ratio = ratio.to_plain_string();
                if alpha > Dec::from_u64(0) && ratio < alpha {
                    part.status = ParticipantStatus::Inactive;
                    part.status_reason = "failed_confirmation_poc".into();
                    group.members.remove(&p.index);
                    log.push(EndBlockEvent::FailedConfirmation {
                        participant: p.index.clone(),
                        ratio: part.confirmation_poc_ratio.clone(),
                    });
                }
            }
        }
        self.epoch_groups.insert(ev.epoch_index, group);
    }
}

/// The weight of a participant's ML nodes that did not keep serving inference during PoC
/// (the part confirmation PoC re-measures).
fn non_preserved_weight(p: &ActiveParticipant) -> i64 {
    p.ml_nodes
        .iter()
        .filter(|n| !n.poc_slot)
        .map(|n| n.poc_weight)
        .sum()
}
