//! PoC v2 handlers: `MsgPoCV2StoreCommit`, `MsgMLNodeWeightDistribution` and
//! `MsgSubmitPocValidationsV2` (`docs/protocol/chain-and-api.md` §2).

use super::{Bounds, EventFilter, StageWindow, WindowType};
use crate::confirmation::ConfirmationPhase;
use crate::error::{ChainResult, ErrorKind, err};
use crate::msgs::{MlNodeWeight, ValidationPayloadV2};
use crate::records::{StoreCommit, ValidationV2, WeightDistribution};
use crate::state::ChainState;

/// A commit lands in the batch window of its stage: the confirmation event triggered at
/// that height, or else the upcoming epoch's regular stage.
const STORE_COMMIT: StageWindow = StageWindow {
    window: WindowType::Batch,
    event: EventFilter::SameTrigger,
    confirmation: Bounds::Both,
    regular: Bounds::Both,
};

/// A distribution addresses the active event whatever its phase, and may land any time
/// until its validation window ends.
const DISTRIBUTION: StageWindow = StageWindow {
    window: WindowType::Validation,
    event: EventFilter::Any,
    confirmation: Bounds::EndOnly,
    regular: Bounds::EndOnly,
};

/// Votes land in the validation window (of an event in its validation phase).
const VALIDATIONS: StageWindow = StageWindow {
    window: WindowType::Validation,
    event: EventFilter::InPhase(ConfirmationPhase::Validation),
    confirmation: Bounds::Both,
    regular: Bounds::Both,
};

impl ChainState {
    /// `MsgPoCV2StoreCommit`: a participant's MMR root and leaf count for a stage; the
    /// count only grows, one commit per block.
    pub(super) fn store_commit(
        &mut self,
        h: i64,
        creator: &str,
        start: i64,
        count: u32,
        root_hash: &[u8],
    ) -> ChainResult<()> {
        self.require_v2()?;
        if count == 0 {
            return Err(err(ErrorKind::IllegalState, "count must be positive"));
        }
        if root_hash.len() != 32 {
            return Err(err(
                ErrorKind::IllegalState,
                format!("root_hash must be 32 bytes, got {}", root_hash.len()),
            ));
        }
        self.check_stage_window(start, h, STORE_COMMIT)?;
        if !crate::address::is_valid(creator) {
            return Err(err(
                ErrorKind::InvalidAddress,
                format!("invalid creator address {creator:?}"),
            ));
        }
        let key = (start, creator.to_owned());
        if let Some(existing) = self.commits.get(&key) {
            if existing.commit_block_height == h {
                return Err(err(ErrorKind::IllegalState, "only one commit per block"));
            }
            if count <= existing.count {
                return Err(err(
                    ErrorKind::IllegalState,
                    format!(
                        "count must increase (stored {}, got {count})",
                        existing.count
                    ),
                ));
            }
        }
        self.commits.insert(
            key,
            StoreCommit {
                participant_address: creator.to_owned(),
                poc_stage_start_block_height: start,
                count,
                root_hash: root_hash.to_vec(),
                commit_block_height: h,
            },
        );
        Ok(())
    }

    /// `MsgMLNodeWeightDistribution`: how a participant's committed count splits over its
    /// ML nodes; the weights must sum to the committed count.
    pub(super) fn weight_distribution(
        &mut self,
        h: i64,
        creator: &str,
        start: i64,
        weights: &[MlNodeWeight],
    ) -> ChainResult<()> {
        self.require_v2()?;
        if weights.is_empty() {
            return Err(err(ErrorKind::IllegalState, "weights must not be empty"));
        }
        self.check_stage_window(start, h, DISTRIBUTION)?;
        let key = (start, creator.to_owned());
        let commit = self
            .commits
            .get(&key)
            .ok_or_else(|| err(ErrorKind::IllegalState, "no store commit found"))?;
        let sum: u64 = weights.iter().map(|w| u64::from(w.weight)).sum();
        if sum != u64::from(commit.count) {
            return Err(err(
                ErrorKind::IllegalState,
                format!(
                    "weights sum to {sum}, the committed count is {}",
                    commit.count
                ),
            ));
        }
        self.distributions.insert(
            key,
            WeightDistribution {
                participant_address: creator.to_owned(),
                poc_stage_start_block_height: start,
                weights: weights.to_vec(),
            },
        );
        Ok(())
    }

    /// `MsgSubmitPocValidationsV2`: a validator's votes; the first vote per (participant,
    /// validator) counts, votes for invalid addresses are skipped.
    pub(super) fn validations_v2(
        &mut self,
        h: i64,
        creator: &str,
        start: i64,
        validations: &[ValidationPayloadV2],
    ) -> ChainResult<()> {
        self.require_v2()?;
        self.require_not_blocked(creator)?;
        self.check_stage_window(start, h, VALIDATIONS)?;
        for v in validations {
            if !crate::address::is_valid(&v.participant_address) {
                continue;
            }
            let key = (start, v.participant_address.clone(), creator.to_owned());
            if self.validations_v2.contains_key(&key) {
                continue;
            }
            self.validations_v2.insert(
                key,
                ValidationV2 {
                    participant_address: v.participant_address.clone(),
                    validator_participant_address: creator.to_owned(),
                    poc_stage_start_block_height: start,
                    validated_weight: v.validated_weight,
                },
            );
        }
        Ok(())
    }
}
