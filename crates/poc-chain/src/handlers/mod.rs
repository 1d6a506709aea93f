//! The message handlers: [`ChainState::deliver`] runs one message of a block by the
//! authoritative rules of its module (`docs/protocol/chain-and-api.md` §2). Every PoC
//! handler places the message's stage in time with one rule, [`StageWindow`].
//!
//! - [`poc_v2`]: store commits, weight distributions, V2 validation votes;
//! - [`poc_v1`]: v1 batches and validations;
//! - [`participants`]: registration and epoch seeds;
//! - [`authz`]: grants and revocations;
//! - [`gov`]: parameter updates.

mod authz;
mod gov;
mod participants;
mod poc_v1;
mod poc_v2;

use crate::confirmation::ConfirmationPhase;
use crate::epoch::Window;
use crate::error::{ChainResult, ErrorKind, err};
use crate::msgs::Msg;
use crate::records::{PocBatch, PocValidationV1};
use crate::state::{BlockContext, ChainState};

/// The two exchange windows of a PoC stage (regular or confirmation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowType {
    /// Where batches and store commits land (generation and exchange).
    Batch,
    /// Where validations and weight distributions land.
    Validation,
}

/// Which active confirmation event, if any, a message addresses; without one the message
/// addresses the upcoming epoch's regular stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventFilter {
    /// The active event when its trigger height is the message's stage height.
    SameTrigger,
    /// The active event when it is in this phase.
    InPhase(ConfirmationPhase),
    /// The active event, whatever its phase.
    Any,
}

/// Whether a window bounds the block height from both sides or only from above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bounds {
    /// `start ≤ h ≤ end`.
    Both,
    /// `h ≤ end`.
    EndOnly,
}

/// Where in time a PoC message may land: which window, which confirmation event it
/// addresses, and the bounds checked in the event's and in the regular stage's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StageWindow {
    pub window: WindowType,
    pub event: EventFilter,
    pub confirmation: Bounds,
    pub regular: Bounds,
}

impl ChainState {
    /// Checks that a message for stage `start` may land at height `h` by `rule`: the stage
    /// must be the addressed confirmation event's trigger height (1107) or the upcoming
    /// epoch's PoC start (1128 when there is none, 1107 when it differs), and `h` must be
    /// inside the window (1108).
    pub(crate) fn check_stage_window(
        &self,
        start: i64,
        h: i64,
        rule: StageWindow,
    ) -> ChainResult<()> {
        let ep = &self.params.epoch_params;
        let event = self.active_event.as_ref().filter(|e| match rule.event {
            EventFilter::SameTrigger => e.trigger_height == start,
            EventFilter::InPhase(p) => e.phase == p,
            EventFilter::Any => true,
        });
        let (window, bounds, stage): (Window, Bounds, &str) = match event {
            Some(ev) => {
                if start != ev.trigger_height {
                    return Err(err(
                        ErrorKind::PocWrongStartBlockHeight,
                        format!(
                            "expected the confirmation trigger height {}",
                            ev.trigger_height
                        ),
                    ));
                }
                let w = match rule.window {
                    WindowType::Batch => ev.batch_window(ep),
                    WindowType::Validation => ev.validation_window(ep),
                };
                (w, rule.confirmation, "confirmation")
            }
            None => {
                let u = self
                    .upcoming_ctx()
                    .ok_or_else(|| err(ErrorKind::UpcomingEpochNotFound, "no upcoming epoch"))?;
                if start != u.start_of_poc() {
                    return Err(err(
                        ErrorKind::PocWrongStartBlockHeight,
                        format!("expected stage height {}", u.start_of_poc()),
                    ));
                }
                let w = match rule.window {
                    WindowType::Batch => u.poc_exchange_window(),
                    WindowType::Validation => u.validation_exchange_window(),
                };
                (w, rule.regular, "stage")
            }
        };
        let inside = match bounds {
            Bounds::Both => window.contains(h),
            Bounds::EndOnly => h <= window.end,
        };
        if inside {
            return Ok(());
        }
        let kind = match rule.window {
            WindowType::Batch => "batch",
            WindowType::Validation => "validation",
        };
        Err(err(
            ErrorKind::PocTooLate,
            match bounds {
                Bounds::Both => format!(
                    "height {h} is outside the {stage} {kind} window [{}, {}]",
                    window.start, window.end
                ),
                Bounds::EndOnly => {
                    format!("the {stage} {kind} window ended at {}", window.end)
                }
            },
        ))
    }

    /// Whether the V2 messages are accepted now, as an error when not.
    pub(crate) fn require_v2(&self) -> ChainResult<()> {
        if self.v2_gate() {
            Ok(())
        } else {
            Err(err(
                ErrorKind::NotSupported,
                "V2 disabled when poc_v2_enabled=false",
            ))
        }
    }

    /// Fails when `addr` is on the governance block list.
    pub(crate) fn require_not_blocked(&self, addr: &str) -> ChainResult<()> {
        let blocked = self
            .params
            .participant_access_params
            .blocked_participant_addresses
            .iter()
            .any(|a| a == addr);
        if blocked {
            Err(err(
                ErrorKind::ParticipantBlocked,
                format!("{addr} is blocked"),
            ))
        } else {
            Ok(())
        }
    }

    /// Executes one message of a block (the authoritative handler rules). Fails without
    /// changing anything.
    pub fn deliver(&mut self, ctx: &BlockContext, msg: &Msg) -> ChainResult<()> {
        let h = ctx.height;
        match msg {
            Msg::PocV2StoreCommit {
                creator,
                poc_stage_start_block_height,
                count,
                root_hash,
            } => self.store_commit(h, creator, *poc_stage_start_block_height, *count, root_hash),
            Msg::MlNodeWeightDistribution {
                creator,
                poc_stage_start_block_height,
                weights,
            } => self.weight_distribution(h, creator, *poc_stage_start_block_height, weights),
            Msg::SubmitPocValidationsV2 {
                creator,
                poc_stage_start_block_height,
                validations,
            } => self.validations_v2(h, creator, *poc_stage_start_block_height, validations),
            Msg::SubmitPocBatch {
                creator,
                poc_stage_start_block_height,
                batch_id,
                nonces,
                dist,
                node_id,
            } => self.poc_batch(PocBatch {
                participant_address: creator.clone(),
                poc_stage_start_block_height: *poc_stage_start_block_height,
                received_at_block_height: h,
                nonces: nonces.clone(),
                dist: dist.clone(),
                batch_id: batch_id.clone(),
                node_id: node_id.clone(),
            }),
            Msg::SubmitPocValidation {
                creator,
                participant_address,
                poc_stage_start_block_height,
                fraud_detected,
            } => self.poc_validation_v1(PocValidationV1 {
                participant_address: participant_address.clone(),
                validator_participant_address: creator.clone(),
                poc_stage_start_block_height: *poc_stage_start_block_height,
                validated_at_block_height: h,
                fraud_detected: *fraud_detected,
            }),
            Msg::SubmitNewParticipant {
                creator,
                url,
                validator_key,
            } => self.new_participant(creator, url, validator_key),
            Msg::SubmitSeed {
                creator,
                epoch_index,
                signature,
            } => self.seed(creator, *epoch_index, signature),
            Msg::Grant {
                granter,
                grantee,
                msg_type_url,
            } => self.grant(granter, grantee, msg_type_url),
            Msg::Revoke {
                granter,
                grantee,
                msg_type_url,
            } => self.revoke(granter, grantee, msg_type_url),
            Msg::UpdateParams { authority, params } => self.update_params(authority, params),
        }
    }
}
