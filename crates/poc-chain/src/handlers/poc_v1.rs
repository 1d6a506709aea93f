//! PoC v1 handlers: `MsgSubmitPocBatch` and `MsgSubmitPocValidation`
//! (`docs/protocol/chain-and-api.md` §2, `docs/protocol/compute-v1.md` §9). Both are
//! deprecated once `poc_v2_enabled` is set.

use super::{Bounds, EventFilter, StageWindow, WindowType};
use crate::confirmation::ConfirmationPhase;
use crate::error::{ChainResult, ErrorKind, err};
use crate::records::{PocBatch, PocValidationV1};
use crate::state::ChainState;

/// Batches land in the batch window of an event in its generation phase; in a regular
/// stage only the window's end bounds them.
const BATCH: StageWindow = StageWindow {
    window: WindowType::Batch,
    event: EventFilter::InPhase(ConfirmationPhase::Generation),
    confirmation: Bounds::Both,
    regular: Bounds::EndOnly,
};

/// Validations land in the validation window (of an event in its validation phase).
const VALIDATION: StageWindow = StageWindow {
    window: WindowType::Validation,
    event: EventFilter::InPhase(ConfirmationPhase::Validation),
    confirmation: Bounds::Both,
    regular: Bounds::Both,
};

impl ChainState {
    /// `MsgSubmitPocBatch`: stores a batch of nonces and distances, keyed by stage,
    /// participant and batch id (a repeated id replaces the batch).
    pub(super) fn poc_batch(&mut self, batch: PocBatch) -> ChainResult<()> {
        validate_batch_basic(&batch)?;
        if self.params.poc_params.poc_v2_enabled {
            return Err(err(ErrorKind::Deprecated, "PoC v1 batches are deprecated"));
        }
        self.require_not_blocked(&batch.participant_address)?;
        if batch.node_id.is_empty() {
            return Err(err(ErrorKind::PocNodeIdEmpty, "node_id is empty"));
        }
        self.check_stage_window(
            batch.poc_stage_start_block_height,
            batch.received_at_block_height,
            BATCH,
        )?;
        self.batches_v1.insert(
            (
                batch.poc_stage_start_block_height,
                batch.participant_address.clone(),
                batch.batch_id.clone(),
            ),
            batch,
        );
        Ok(())
    }

    /// `MsgSubmitPocValidation`: one validator's verdict on one participant, once.
    pub(super) fn poc_validation_v1(&mut self, v: PocValidationV1) -> ChainResult<()> {
        if !crate::address::is_valid(&v.validator_participant_address)
            || !crate::address::is_valid(&v.participant_address)
        {
            return Err(err(
                ErrorKind::InvalidRequest,
                "invalid creator or participant address",
            ));
        }
        let start = v.poc_stage_start_block_height;
        if start <= 0 {
            return Err(err(
                ErrorKind::InvalidRequest,
                "stage height must be positive",
            ));
        }
        if self.params.poc_params.poc_v2_enabled {
            return Err(err(
                ErrorKind::Deprecated,
                "PoC v1 validations are deprecated",
            ));
        }
        self.require_not_blocked(&v.validator_participant_address)?;
        self.check_stage_window(start, v.validated_at_block_height, VALIDATION)?;
        let key = (
            start,
            v.participant_address.clone(),
            v.validator_participant_address.clone(),
        );
        if self.validations_v1.contains_key(&key) {
            return Err(err(
                ErrorKind::PocValidationAlreadyExists,
                "this validator already voted",
            ));
        }
        self.validations_v1.insert(key, v);
        Ok(())
    }
}

/// `MsgSubmitPocBatch.ValidateBasic`: the stateless checks.
fn validate_batch_basic(b: &PocBatch) -> ChainResult<()> {
    let bad = |m: &str| Err(err(ErrorKind::InvalidRequest, m));
    if !crate::address::is_valid(&b.participant_address) {
        return bad("invalid creator address");
    }
    if b.poc_stage_start_block_height <= 0 {
        return bad("stage height must be positive");
    }
    if b.batch_id.trim().is_empty() || b.batch_id.len() > 128 {
        return bad("batch_id must be 1..=128 characters");
    }
    if b.node_id.len() > 128 {
        return bad("node_id must be at most 128 characters");
    }
    let (nonces, dist) = (&b.nonces, &b.dist);
    if nonces.is_empty() || nonces.len() > 10_000 || nonces.iter().any(|n| *n < 0) {
        return bad("nonces must be 1..=10000 non-negative values");
    }
    if dist.is_empty() || dist.len() > 10_000 || dist.iter().any(|d| !d.is_finite() || *d < 0.0) {
        return bad("dist must be 1..=10000 finite non-negative values");
    }
    if nonces.len() != dist.len() {
        return bad("nonces and dist differ in length");
    }
    Ok(())
}
