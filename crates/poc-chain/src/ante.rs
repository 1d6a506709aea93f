//! What a transaction must pass before its messages run: CheckTx (the mempool's gate,
//! against the last committed state) and DeliverTx (in a block), with the shared
//! authentication (chain id, key, sequence, signature, signer and grant rules) and the
//! CheckTx-only ante rules (`PocPeriodValidationDecorator`,
//! `docs/protocol/chain-and-api.md` §1.5).

use crate::error::{ChainResult, ErrorKind, err};
use crate::handlers::{Bounds, EventFilter, StageWindow, WindowType};
use crate::keys::SignatureVerifier;
use crate::msgs::Msg;
use crate::state::{BlockContext, ChainState};
use crate::tx::{self, Tx, TxMsg, TxResult};

impl ChainState {
    /// `CheckPoCMessageTooLate` (the CheckTx-only ante rule): the stage height may not
    /// be in the future nor an already effective stage, and the message may not come
    /// after its window's end (in the active confirmation event, or else the upcoming
    /// epoch's regular stage).
    pub fn check_poc_message_too_late(
        &self,
        h: i64,
        start: i64,
        window: WindowType,
    ) -> ChainResult<()> {
        if start > h {
            return Err(err(
                ErrorKind::PocWrongStartBlockHeight,
                format!("stage height {start} is in the future"),
            ));
        }
        if self.active_event.is_none() && start <= self.effective_ctx().start_of_poc() {
            return Err(err(
                ErrorKind::UpcomingEpochNotFound,
                "PoC stage already finished",
            ));
        }
        self.check_stage_window(
            start,
            h,
            StageWindow {
                window,
                event: EventFilter::Any,
                confirmation: Bounds::EndOnly,
                regular: Bounds::EndOnly,
            },
        )
    }

    /// The ante checks of CheckTx (`PocPeriodValidationDecorator`): run before a
    /// transaction enters the mempool, never during block execution.
    pub fn ante_check(&self, h: i64, msg: &Msg) -> ChainResult<()> {
        let v2 = self.params.poc_params.poc_v2_enabled;
        match msg {
            Msg::SubmitPocBatch {
                poc_stage_start_block_height: s,
                ..
            } => {
                if v2 {
                    return Err(err(ErrorKind::Deprecated, "PoC v1 batches are deprecated"));
                }
                self.check_poc_message_too_late(h, *s, WindowType::Batch)
            }
            Msg::SubmitPocValidation {
                poc_stage_start_block_height: s,
                ..
            } => {
                if v2 {
                    return Err(err(
                        ErrorKind::Deprecated,
                        "PoC v1 validations are deprecated",
                    ));
                }
                self.check_poc_message_too_late(h, *s, WindowType::Validation)
            }
            Msg::SubmitPocValidationsV2 {
                poc_stage_start_block_height: s,
                ..
            } => {
                self.require_v2()?;
                self.check_poc_message_too_late(h, *s, WindowType::Validation)
            }
            Msg::PocV2StoreCommit {
                poc_stage_start_block_height: s,
                ..
            } => {
                self.require_v2()?;
                self.check_poc_message_too_late(h, *s, WindowType::Batch)
            }
            Msg::MlNodeWeightDistribution {
                poc_stage_start_block_height: s,
                ..
            } => {
                self.require_v2()?;
                self.check_poc_message_too_late(h, *s, WindowType::Validation)
            }
            _ => Ok(()),
        }
    }
}

/// The stateful checks shared by CheckTx and DeliverTx, in the order of the SDK's ante
/// handler: timeout height, the signer's account, sequence, signature (over the sign doc
/// with this chain's id and the account's number), then who may act for whom.
/// `expected_sequence` is the account's next sequence (the mempool passes its own view);
/// `height` is the block the transaction would be in.
pub fn authenticate(
    state: &ChainState,
    tx: &Tx,
    expected_sequence: u64,
    height: i64,
    verifier: &dyn SignatureVerifier,
) -> ChainResult<String> {
    if tx.timeout_height != 0 && height > 0 && height as u64 > tx.timeout_height {
        return Err(err(
            ErrorKind::TxTimeoutHeight,
            format!(
                "block height: {height}, timeout height: {}: tx timeout height",
                tx.timeout_height
            ),
        ));
    }
    let signer = tx.signer();
    let Some(account_number) = state.account_number(&signer) else {
        return Err(err(
            ErrorKind::UnknownAddress,
            format!(
                "account {signer} not found: an account exists once it is in genesis or \
                 has been granted a message type"
            ),
        ));
    };
    if tx.sequence != expected_sequence {
        return Err(err(
            ErrorKind::WrongSequence,
            format!(
                "account sequence mismatch: expected {expected_sequence}, got {}",
                tx.sequence
            ),
        ));
    }
    if !verifier.verify(
        &tx.pub_key,
        &tx.sign_digest(&state.chain_id, account_number),
        &tx.signature,
    ) {
        return Err(err(
            ErrorKind::Unauthorized,
            format!(
                "signature verification failed; please verify account number \
                 ({account_number}), sequence ({}) and chain-id ({})",
                tx.sequence, state.chain_id
            ),
        ));
    }
    for m in &tx.msgs {
        match m {
            TxMsg::Direct(m) => {
                if m.signer() != signer {
                    return Err(err(
                        ErrorKind::Unauthorized,
                        format!(
                            "{} must be signed by {}, not {signer}",
                            m.type_url(),
                            m.signer()
                        ),
                    ));
                }
            }
            TxMsg::Exec { grantee, msgs } => {
                if *grantee != signer {
                    return Err(err(
                        ErrorKind::Unauthorized,
                        format!("MsgExec grantee {grantee} is not the signer {signer}"),
                    ));
                }
                for inner in msgs {
                    if inner.signer() != signer
                        && !state.is_granted(inner.signer(), &signer, inner.type_url())
                    {
                        return Err(err(
                            ErrorKind::Unauthorized,
                            format!(
                                "{} has not granted {signer} {}",
                                inner.signer(),
                                inner.type_url()
                            ),
                        ));
                    }
                }
            }
        }
    }
    Ok(signer)
}

/// CheckTx: decoding, authentication and the ante rules (`docs/protocol/chain-and-api.md` §1.5), against `state` (the
/// last committed block) and the mempool's expected sequence. Never changes state.
pub fn check_tx(
    state: &ChainState,
    bytes: &[u8],
    expected_sequence: Option<u64>,
    verifier: &dyn SignatureVerifier,
) -> (TxResult, Option<(String, u64)>) {
    let r = (|| {
        let tx = tx::decode(bytes)?;
        let seq = expected_sequence
            .unwrap_or_else(|| state.sequences.get(&tx.signer()).copied().unwrap_or(0));
        let next = state.height + 1;
        let signer = authenticate(state, &tx, seq, next, verifier)?;
        for m in tx.inner() {
            state.ante_check(next, m)?;
        }
        Ok((signer, tx.sequence))
    })();
    match r {
        Ok(v) => (TxResult::new(bytes, Ok(())), Some(v)),
        Err(e) => (TxResult::new(bytes, Err(e)), None),
    }
}

/// DeliverTx: authenticates, bumps the sequence, then runs the messages all-or-nothing.
pub fn deliver_tx(
    state: &mut ChainState,
    ctx: &BlockContext,
    bytes: &[u8],
    verifier: &dyn SignatureVerifier,
) -> TxResult {
    let tx = match tx::decode(bytes) {
        Ok(t) => t,
        Err(e) => return TxResult::new(bytes, Err(e)),
    };
    let seq = state.sequences.get(&tx.signer()).copied().unwrap_or(0);
    let signer = match authenticate(state, &tx, seq, ctx.height, verifier) {
        Ok(s) => s,
        Err(e) => return TxResult::new(bytes, Err(e)),
    };
    state.sequences.insert(signer.clone(), seq + 1);
    state
        .accounts
        .entry(signer)
        .or_insert_with(|| hex::encode(&tx.pub_key));
    let msgs: Vec<&Msg> = tx.inner().collect();
    let r = if msgs.len() == 1 {
        state.deliver(ctx, msgs[0])
    } else {
        let backup = state.clone();
        let r = msgs.iter().try_for_each(|m| state.deliver(ctx, m));
        if r.is_err() {
            *state = backup;
        }
        r
    };
    TxResult::new(bytes, r)
}
