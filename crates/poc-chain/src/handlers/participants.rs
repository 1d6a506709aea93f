//! Participant handlers: `MsgSubmitNewParticipant` and `MsgSubmitSeed`.

use crate::error::{ChainResult, ErrorKind, err};
use crate::records::{Participant, ParticipantStatus};
use crate::state::ChainState;

impl ChainState {
    /// `MsgSubmitNewParticipant`: registers the signer, or updates its URL and consensus
    /// key; the public key comes from the signer's account.
    pub(super) fn new_participant(
        &mut self,
        creator: &str,
        url: &str,
        validator_key: &str,
    ) -> ChainResult<()> {
        if !crate::address::is_valid(creator) {
            return Err(err(
                ErrorKind::InvalidAddress,
                format!("invalid creator address {creator:?}"),
            ));
        }
        let hex = self.accounts.get(creator).cloned().unwrap_or_default();
        let entry = self
            .participants
            .entry(creator.to_owned())
            .or_insert_with(|| Participant {
                address: creator.to_owned(),
                hex_pub_key: hex.clone(),
                inference_url: String::new(),
                validator_key: String::new(),
                status: ParticipantStatus::Active,
                status_reason: String::new(),
                confirmation_poc_ratio: String::new(),
            });
        entry.inference_url = url.to_owned();
        entry.validator_key = validator_key.to_owned();
        if entry.hex_pub_key.is_empty() {
            entry.hex_pub_key = hex;
        }
        Ok(())
    }

    /// `MsgSubmitSeed`: a registered participant's seed for the next or an earlier epoch.
    pub(super) fn seed(
        &mut self,
        creator: &str,
        epoch_index: u64,
        signature: &str,
    ) -> ChainResult<()> {
        if !self.participants.contains_key(creator) {
            return Err(err(
                ErrorKind::IllegalState,
                format!("{creator} is not a registered participant"),
            ));
        }
        if epoch_index == 0 || epoch_index > self.latest_epoch.index + 1 {
            return Err(err(
                ErrorKind::InvalidRequest,
                format!("no seed can be set for epoch {epoch_index}"),
            ));
        }
        self.seeds
            .insert((epoch_index, creator.to_owned()), signature.to_owned());
        Ok(())
    }
}
