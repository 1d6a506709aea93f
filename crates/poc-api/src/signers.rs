//! Who may sign for a validator: the participant's own key and its grantees for
//! `MsgSubmitPocValidationsV2` (`docs/protocol/chain-and-api.md` §6), read from the chain
//! and cached for [`SIGNERS_TTL`]. The participant is looked up in the module's
//! `participant/{addr}`, its key in the SDK's `x/auth` account, its grantees in
//! `grantees_by_message_type`, all of which a Gonka node serves. Used by the proof server (to check a request's
//! signature) and by the validator (to check a response's).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use poc_chain_client::{ChainClient, ClientError};

/// How long a validator's signer set is cached.
pub const SIGNERS_TTL: Duration = Duration::from_secs(120);

/// Keys allowed to sign for an account: `(address, compressed key)`.
pub type SignerSet = Vec<(String, Vec<u8>)>;

/// Why a signer set could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    /// The chain did not answer the query.
    #[error("cannot query the chain: {0}")]
    Chain(#[from] ClientError),
    /// The address is not a registered participant.
    #[error("{0} is not a registered participant")]
    NotParticipant(String),
    /// The participant's account has no usable public key on the chain.
    #[error("the account of {0} has no secp256k1 public key on the chain")]
    NoKey(String),
}

/// The signer sets read so far, by account address.
#[derive(Debug, Default)]
pub struct SignerCache {
    sets: Mutex<HashMap<String, (Instant, SignerSet)>>,
}

impl SignerCache {
    /// The keys allowed to sign for `account`, from the cache while fresh.
    pub async fn get(&self, chain: &ChainClient, account: &str) -> Result<SignerSet, SignerError> {
        if let Some((at, set)) = self.sets.lock().expect("signers lock").get(account)
            && at.elapsed() < SIGNERS_TTL
        {
            return Ok(set.clone());
        }
        chain
            .participant(account)
            .await?
            .ok_or_else(|| SignerError::NotParticipant(account.to_owned()))?;
        let key = chain
            .account(account)
            .await?
            .and_then(|a| a.pub_key)
            .and_then(|k| STANDARD.decode(k.key).ok())
            .filter(|k| k.len() == 33)
            .ok_or_else(|| SignerError::NoKey(account.to_owned()))?;
        let mut set = vec![(account.to_owned(), key)];
        let g = chain
            .grantees(account, "/inference.inference.MsgSubmitPocValidationsV2")
            .await?;
        for x in g.grantees {
            if let Ok(k) = STANDARD.decode(&x.pub_key)
                && !k.is_empty()
            {
                set.push((x.address, k));
            }
        }
        let mut sets = self.sets.lock().expect("signers lock");
        if sets.len() > 100_000 {
            sets.retain(|_, (at, _)| at.elapsed() < SIGNERS_TTL);
        }
        sets.insert(account.to_owned(), (Instant::now(), set.clone()));
        Ok(set)
    }
}
