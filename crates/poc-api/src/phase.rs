//! The API node's view of the chain timeline and the predicates that gate its work
//! (`docs/protocol/chain-and-api.md` §6.2, §6.4, §6.6, §6.8): pure functions of the chain's
//! `epoch_info` and the current height.

use poc_chain::api::EpochInfoResponse;
use poc_chain::confirmation::{ConfirmationEvent, ConfirmationPhase};
use poc_chain::epoch::{EpochContext, Phase};

use crate::timing::Window;

/// What the node knows about the chain at one height.
#[derive(Debug, Clone)]
pub struct ChainView {
    /// Latest block height.
    pub height: i64,
    /// Its hash (uppercase hex, as CometBFT writes it).
    pub hash: String,
    /// `epoch_info` at that height.
    pub info: EpochInfoResponse,
}

/// Which PoC a stage height belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// Regular PoC of the upcoming epoch starting at `S`.
    Regular(i64),
    /// A confirmation event keyed by its trigger height.
    Confirmation(ConfirmationEvent),
}

impl Stage {
    /// `poc_stage_start_block_height` of the stage's records.
    pub fn height(&self) -> i64 {
        match self {
            Self::Regular(s) => *s,
            Self::Confirmation(e) => e.trigger_height,
        }
    }
}

impl ChainView {
    /// Whether the latest epoch is the upcoming one (its PoC on, its weights not yet in
    /// force), derived from `latest_epoch` and the parameters as against a Gonka node,
    /// whose `epoch_info` names no effective epoch.
    pub fn upcoming(&self) -> bool {
        self.latest_ctx().is_upcoming_at(self.height)
    }

    /// The latest epoch's context.
    pub fn latest_ctx(&self) -> EpochContext {
        EpochContext::new(
            self.info.latest_epoch,
            self.info.params.epoch_params.clone(),
        )
    }

    /// The phase at the current height.
    pub fn phase(&self) -> Phase {
        self.latest_ctx().phase(self.height)
    }

    /// The active confirmation event.
    pub fn event(&self) -> Option<&ConfirmationEvent> {
        self.info.active_confirmation_poc_event.as_ref()
    }

    /// `IsMigrationMode`.
    pub fn migration_mode(&self) -> bool {
        let p = &self.info.params.poc_params;
        !p.poc_v2_enabled && p.confirmation_poc_v2_enabled
    }

    /// `ShouldUseV2`: V2 on, or migration mode while confirmation event 0 is active.
    pub fn should_use_v2(&self) -> bool {
        self.info.params.poc_params.poc_v2_enabled
            || (self.migration_mode() && self.event().is_some_and(|e| e.event_sequence == 0))
    }

    /// `IsV2EndpointsEnabled`: V2 callbacks are served at all.
    pub fn v2_endpoints_enabled(&self) -> bool {
        let p = &self.info.params.poc_params;
        p.poc_v2_enabled || p.confirmation_poc_v2_enabled
    }

    fn event_in(&self, phase: ConfirmationPhase) -> Option<&ConfirmationEvent> {
        self.event().filter(|e| e.phase == phase)
    }

    /// `ShouldAcceptGeneratedArtifacts`: regular generation (and its wind-down inside the
    /// exchange window), or a confirmation event generating inside its batch window.
    pub fn accept_generated(&self) -> bool {
        let ctx = self.latest_ctx();
        let ep = &self.info.params.epoch_params;
        match self.phase() {
            Phase::PoCGenerate => true,
            Phase::PoCGenerateWindDown => ctx.poc_exchange_window().contains(self.height),
            Phase::Inference => self
                .event_in(ConfirmationPhase::Generation)
                .is_some_and(|e| e.in_batch_window(self.height, ep)),
            _ => false,
        }
    }

    /// The stage the node's PoC work refers to (`GetCurrentPocStageHeight`).
    pub fn current_stage(&self) -> Stage {
        match self.event() {
            Some(e) if self.phase() == Phase::Inference => Stage::Confirmation(e.clone()),
            _ => Stage::Regular(self.info.latest_epoch.poc_start_block_height),
        }
    }

    /// `ShouldAcceptStoreCommit` for `stage_height`.
    pub fn accept_store_commit(&self, stage_height: i64) -> bool {
        let ep = &self.info.params.epoch_params;
        if let Some(e) = self.event()
            && e.trigger_height == stage_height
        {
            return e.in_batch_window(self.height, ep);
        }
        let ctx = self.latest_ctx();
        matches!(
            self.phase(),
            Phase::PoCGenerate | Phase::PoCGenerateWindDown
        ) && self.upcoming()
            && stage_height == ctx.start_of_poc()
            && ctx.poc_exchange_window().contains(self.height)
    }

    /// When the weight distribution is due. The reference starts at EndOfPoCGeneration,
    /// while commits are still accepted until the exchange deadline, so its distribution
    /// can sum to an earlier commit than the last (and the participant's weight is then
    /// the smaller figure). Ours waits until no commit can land any more (after the
    /// exchange deadline; the chain accepts distributions until EndOfPoCValidation), so
    /// the distribution always sums to the final commit.
    pub fn should_distribute(&self) -> bool {
        let ctx = self.latest_ctx();
        match self.phase() {
            Phase::PoCGenerateWindDown | Phase::PoCValidate | Phase::PoCValidateWindDown => {
                self.height > ctx.poc_exchange_deadline()
                    && self.height >= ctx.end_of_poc_generation()
            }
            _ => self.event_in(ConfirmationPhase::Validation).is_some(),
        }
    }

    /// The window in which the chain accepts store commits of `stage_height`: the
    /// confirmation event's batch window, or the regular exchange window `[S + 1,
    /// PoCExchangeDeadline]`; `None` for a stage that is neither.
    pub fn commit_window(&self, stage_height: i64) -> Option<Window> {
        let ep = &self.info.params.epoch_params;
        if let Some(e) = self.event()
            && e.trigger_height == stage_height
        {
            let end = e.exchange_end(ep);
            return Some(Window {
                end,
                blocks: end - e.generation_start_height + 1,
            });
        }
        let ctx = self.latest_ctx();
        (stage_height == ctx.start_of_poc()).then(|| {
            let w = ctx.poc_exchange_window();
            Window {
                end: w.end,
                blocks: w.end - w.start + 1,
            }
        })
    }

    /// The window in which the chain accepts votes on `stage_height`: the confirmation
    /// event's validation window, or `[StartOfPoCValidation, EndOfPoCValidation]`.
    pub fn vote_window(&self, stage_height: i64) -> Option<Window> {
        let ep = &self.info.params.epoch_params;
        if let Some(e) = self.event()
            && e.trigger_height == stage_height
        {
            let (start, end) = (e.validation_start(ep), e.validation_end(ep));
            return Some(Window {
                end,
                blocks: end - start + 1,
            });
        }
        let ctx = self.latest_ctx();
        (stage_height == ctx.start_of_poc()).then(|| {
            let end = ctx.end_of_poc_validation();
            Window {
                end,
                blocks: end - ctx.start_of_poc_validation(),
            }
        })
    }

    /// `ShouldAcceptValidatedArtifacts`.
    pub fn accept_validated(&self) -> bool {
        matches!(
            self.phase(),
            Phase::PoCValidate | Phase::PoCValidateWindDown
        ) || self.event_in(ConfirmationPhase::Validation).is_some()
    }
}

/// Scales per-node counts to the committed count (§6.6): if they already sum to it, as
/// is; else each `floor(c · committed/local)` in node-id order, then +1 round-robin from
/// the first node until the sum is exact. Empty input gives an empty result.
pub fn scale_distribution(
    local: &std::collections::BTreeMap<String, u64>,
    committed: u32,
) -> Vec<(String, u32)> {
    let total: u64 = local.values().sum();
    if local.is_empty() || total == 0 {
        return Vec::new();
    }
    if total == u64::from(committed) {
        return local.iter().map(|(k, v)| (k.clone(), *v as u32)).collect();
    }
    let ratio = f64::from(committed) / total as f64;
    let mut out: Vec<(String, u32)> = local
        .iter()
        .map(|(k, v)| (k.clone(), ((*v as f64) * ratio) as u32))
        .collect();
    let mut sum: u64 = out.iter().map(|(_, v)| u64::from(*v)).sum();
    // Float rounding can overshoot by a hair: take back from the largest first.
    while sum > u64::from(committed) {
        let i = (0..out.len()).max_by_key(|i| out[*i].1).expect("non-empty");
        out[i].1 -= 1;
        sum -= 1;
    }
    let mut i = 0;
    let n = out.len();
    while sum < u64::from(committed) {
        out[i % n].1 += 1;
        sum += 1;
        i += 1;
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use poc_chain::epoch::{Epoch, EpochParams};
    use poc_chain::params::Params;

    /// A chain view at height `h` of a stage starting at `latest` (epoch 2; `effective`
    /// the effective epoch): stage 10 blocks, exchange 2, validation delay 2 and 10 blocks.
    pub(crate) fn view(
        h: i64,
        latest: i64,
        effective: u64,
        event: Option<ConfirmationEvent>,
        v2: bool,
        conf_v2: bool,
    ) -> ChainView {
        let mut params = Params {
            epoch_params: EpochParams {
                epoch_length: 100,
                poc_stage_duration: 10,
                poc_exchange_duration: 2,
                poc_validation_delay: 2,
                poc_validation_duration: 10,
                ..EpochParams::default()
            },
            ..Params::default()
        };
        params.poc_params.poc_v2_enabled = v2;
        params.poc_params.confirmation_poc_v2_enabled = conf_v2;
        let latest_epoch = Epoch {
            index: 2,
            poc_start_block_height: latest,
        };
        let ctx = EpochContext::new(latest_epoch, params.epoch_params.clone());
        ChainView {
            height: h,
            hash: String::new(),
            info: EpochInfoResponse {
                block_height: h,
                params,
                latest_epoch,
                effective_epoch: Epoch {
                    index: effective,
                    poc_start_block_height: 100,
                },
                is_confirmation_poc_active: event.is_some(),
                active_confirmation_poc_event: event,
                latest_stages: ctx.stages(),
            },
        }
    }

    #[test]
    fn regular_predicates_follow_the_timeline() {
        // S = 200: generation [200, 208), wind-down [208, 212), exchange window [201, 212],
        // validation [212, 220), wind-down [220, 222), end 222.
        let at = |h| view(h, 200, 1, None, true, false);
        assert!(at(200).accept_generated() && at(207).accept_generated());
        assert!(
            at(211).accept_generated()
                && at(212).phase() == Phase::PoCValidate
                && !at(212).accept_generated()
        );
        assert!(!at(200).accept_store_commit(200), "the window opens at S+1");
        assert!(at(201).accept_store_commit(200) && at(211).accept_store_commit(200));
        assert!(!at(205).accept_store_commit(199));
        // After the exchange deadline (212), when no commit can land any more.
        assert!(!at(209).should_distribute() && !at(212).should_distribute());
        assert!(at(213).should_distribute() && at(221).should_distribute());
        assert!(
            at(212).accept_validated() && at(221).accept_validated() && !at(222).accept_validated()
        );
        assert_eq!(at(205).current_stage(), Stage::Regular(200));
        assert_eq!(
            at(205).commit_window(200),
            Some(Window {
                end: 212,
                blocks: 12
            })
        );
        assert_eq!(
            at(213).vote_window(200),
            Some(Window {
                end: 222,
                blocks: 10
            })
        );
        assert_eq!(at(205).commit_window(199), None);
        // The latest epoch is upcoming from its start to block SetNewValidators, whatever
        // the (optional) effective epoch of the answer says.
        let snv = at(200).latest_ctx().set_new_validators();
        assert!(snv > 222 && at(200).upcoming() && at(snv - 1).upcoming());
        assert!(!at(snv).upcoming() && !view(snv, 200, 2, None, true, false).upcoming());
    }

    #[test]
    fn confirmation_and_mode_predicates() {
        let ev = |phase, seq| ConfirmationEvent {
            epoch_index: 2,
            event_sequence: seq,
            trigger_height: 250,
            generation_start_height: 251,
            phase,
            poc_seed_block_hash: "ab".into(),
        };
        let v = view(
            252,
            200,
            2,
            Some(ev(ConfirmationPhase::Generation, 0)),
            false,
            true,
        );
        assert!(v.should_use_v2() && v.migration_mode() && v.v2_endpoints_enabled());
        assert!(v.accept_generated() && v.accept_store_commit(250) && !v.accept_store_commit(200));
        // G = 251, generation ends 260, exchange 262, validation [264, 273].
        assert_eq!(
            v.commit_window(250),
            Some(Window {
                end: 262,
                blocks: 12
            })
        );
        assert_eq!(
            v.vote_window(250),
            Some(Window {
                end: 273,
                blocks: 10
            })
        );
        assert_eq!(v.current_stage().height(), 250);
        let v = view(
            252,
            200,
            2,
            Some(ev(ConfirmationPhase::Generation, 1)),
            false,
            true,
        );
        assert!(!v.should_use_v2(), "migration runs V1 for later events");
        let v = view(
            265,
            200,
            2,
            Some(ev(ConfirmationPhase::Validation, 0)),
            true,
            false,
        );
        assert!(v.accept_validated() && v.should_distribute() && !v.accept_generated());
        let v1 = view(252, 200, 2, None, false, false);
        assert!(!v1.should_use_v2() && !v1.v2_endpoints_enabled());
    }

    #[test]
    fn distribution_scaling_is_exact() {
        let m = |v: &[(&str, u64)]| {
            v.iter()
                .map(|(k, c)| (k.to_string(), *c))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        assert_eq!(
            scale_distribution(&m(&[("a", 3), ("b", 7)]), 10),
            vec![("a".into(), 3), ("b".into(), 7)]
        );
        let s = scale_distribution(&m(&[("a", 5), ("b", 5), ("c", 5)]), 10);
        assert_eq!(s.iter().map(|x| x.1).sum::<u32>(), 10);
        assert_eq!(s, vec![("a".into(), 4), ("b".into(), 3), ("c".into(), 3)]);
        for committed in [1u32, 7, 999, 1_000_003] {
            let s = scale_distribution(&m(&[("x", 123_457), ("y", 1), ("z", 98_765)]), committed);
            assert_eq!(
                s.iter().map(|x| u64::from(x.1)).sum::<u64>(),
                u64::from(committed)
            );
        }
        assert!(scale_distribution(&m(&[]), 5).is_empty());
    }
}
