//! Authz handlers: `MsgGrant` and `MsgRevoke` with a generic authorization for one
//! message type (what lets an operational key act for a participant).

use crate::error::{ChainResult, ErrorKind, err};
use crate::state::ChainState;

impl ChainState {
    /// `MsgGrant`: `grantee` may send `type_url` for `granter`.
    pub(super) fn grant(
        &mut self,
        granter: &str,
        grantee: &str,
        type_url: &str,
    ) -> ChainResult<()> {
        if !crate::address::is_valid(granter)
            || !crate::address::is_valid(grantee)
            || granter == grantee
        {
            return Err(err(
                ErrorKind::InvalidRequest,
                "granter and grantee must be two valid addresses",
            ));
        }
        self.grants.insert(
            (granter.to_owned(), grantee.to_owned(), type_url.to_owned()),
            (),
        );
        // A grantee signs `MsgExec`s, so it needs an account; on the reference chain the
        // transfer that funds it opens one (this chain has no bank module).
        self.ensure_account(grantee);
        Ok(())
    }

    /// `MsgRevoke`: removes a grant; there must be one.
    pub(super) fn revoke(
        &mut self,
        granter: &str,
        grantee: &str,
        type_url: &str,
    ) -> ChainResult<()> {
        let key = (granter.to_owned(), grantee.to_owned(), type_url.to_owned());
        if self.grants.remove(&key).is_none() {
            return Err(err(ErrorKind::InvalidRequest, "no such grant"));
        }
        Ok(())
    }
}
