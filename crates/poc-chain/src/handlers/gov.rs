//! The governance handler: `MsgUpdateParams`, the switch between PoC v1 and v2 among
//! them (`docs/protocol/chain-and-api.md` §4).

use crate::error::{ChainResult, ErrorKind, err};
use crate::params::Params;
use crate::state::ChainState;

impl ChainState {
    /// `MsgUpdateParams`: the authority replaces the parameters. Switching
    /// `poc_v2_enabled` on for the first time records the grace epoch (the effective one).
    pub(super) fn update_params(&mut self, authority: &str, params: &Params) -> ChainResult<()> {
        if authority != self.authority {
            return Err(err(
                ErrorKind::InvalidSigner,
                format!("expected the authority {}", self.authority),
            ));
        }
        params
            .validate()
            .map_err(|e| err(ErrorKind::InvalidRequest, e.0))?;
        let was = self.params.poc_params.poc_v2_enabled;
        if !was && params.poc_params.poc_v2_enabled && self.poc_v2_enabled_epoch.is_none() {
            self.poc_v2_enabled_epoch = Some(self.effective_epoch.index);
        }
        self.params = params.clone();
        Ok(())
    }
}
