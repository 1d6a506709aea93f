//! Talking to the chain: the operational key's transactions through `MsgExec` with retry
//! on transient failures, and the account key's setup (registration, grants, seeds).
//! When votes and commits are sent is decided in [`crate::timing`].

use std::time::{Duration, Instant};

use poc_chain::api::{BroadcastMode, TxResponse};
use poc_chain::keys::PrivateKey;
use poc_chain::msgs::{Msg, OPERATIONAL_PERMISSIONS};
use poc_chain::tx::TxMsg;
use poc_chain_client::{ChainClient, ClientError, TxSigner};

/// Registration or the operational key's grants did not go through (retried later).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A chain query or the broadcast failed.
    #[error(transparent)]
    Chain(#[from] ClientError),
    /// The chain refused the transaction.
    #[error("registration/grants rejected ({codespace} {code}): {log}")]
    Rejected {
        /// Error codespace.
        codespace: String,
        /// Error code.
        code: u32,
        /// The chain's log.
        log: String,
    },
}

/// The node's two keys on the chain.
pub struct ChainIo {
    /// Queries.
    pub client: ChainClient,
    /// Account (cold) key signer.
    pub account: TxSigner,
    /// Operational (warm) key signer.
    pub operational: TxSigner,
    /// Account address.
    pub address: String,
    /// Account key, hex.
    pub account_hex: String,
    account_key: PrivateKey,
}

impl ChainIo {
    /// Both signers on one node.
    pub fn new(client: ChainClient, account: PrivateKey, operational: PrivateKey) -> Self {
        Self {
            address: account.address(),
            account_hex: account.public_key_hex(),
            account: TxSigner::new(client.clone(), account.clone()),
            operational: TxSigner::new(client.clone(), operational),
            client,
            account_key: account,
        }
    }

    /// Sends messages acting for the account through the operational key (`MsgExec`),
    /// retrying transient failures (network, 5xx) with backoff 1, 2, 4, 8 s. `mode` block
    /// waits for inclusion.
    pub async fn send_exec(
        &self,
        msgs: Vec<Msg>,
        mode: BroadcastMode,
    ) -> Result<TxResponse, ClientError> {
        self.send_exec_before(msgs, mode, None).await
    }

    /// [`send_exec`](Self::send_exec), but no retry starts after `deadline` (a message
    /// whose window will have closed by then is not worth sending again).
    pub async fn send_exec_before(
        &self,
        msgs: Vec<Msg>,
        mode: BroadcastMode,
        deadline: Option<Instant>,
    ) -> Result<TxResponse, ClientError> {
        let exec = [TxMsg::Exec {
            grantee: self.operational.address(),
            msgs,
        }];
        let mut delay = Duration::from_secs(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.operational.send(&exec, mode).await {
                Err(e)
                    if e.is_transient()
                        && attempt < 5
                        && deadline.is_none_or(|d| Instant::now() + delay < d) =>
                {
                    tracing::warn!("transaction failed ({e}); retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                other => return other,
            }
        }
    }

    /// Registers the participant (public URL) and grants the operational key the PoC
    /// message types, when the chain does not have them yet. Idempotent.
    pub async fn ensure_setup(&self, public_url: &str) -> Result<(), SetupError> {
        let registered = self.client.participant(&self.address).await?;
        let mut msgs = Vec::new();
        if registered.as_ref().is_none_or(|p| {
            p.participant.inference_url != public_url || p.participant.validator_key.is_empty()
        }) {
            msgs.push(TxMsg::Direct(Msg::SubmitNewParticipant {
                creator: self.address.clone(),
                url: public_url.to_owned(),
                validator_key: self.account_hex.clone(),
            }));
        }
        let warm = self.operational.address();
        for t in OPERATIONAL_PERMISSIONS {
            let g = self.client.grantees(&self.address, t).await?;
            if !g.grantees.iter().any(|x| x.address == warm) {
                msgs.push(TxMsg::Direct(Msg::Grant {
                    granter: self.address.clone(),
                    grantee: warm.clone(),
                    msg_type_url: t.to_string(),
                }));
            }
        }
        if msgs.is_empty() {
            return Ok(());
        }
        let r = self.account.send(&msgs, BroadcastMode::Block).await?;
        if r.result.code != 0 {
            return Err(SetupError::Rejected {
                codespace: r.result.codespace,
                code: r.result.code,
                log: r.result.raw_log,
            });
        }
        tracing::info!(address = %self.address, "registered with the chain and granted {warm} the PoC messages");
        Ok(())
    }

    /// The seed for an epoch: the account key's signature over the epoch index
    /// (deterministic, so a restart resubmits the same seed).
    pub fn seed_for(&self, epoch: u64) -> String {
        let d: [u8; 32] = sha2::Digest::finalize(sha2::Digest::chain_update(
            <sha2::Sha256 as sha2::Digest>::new(),
            format!("poc-seed:{epoch}").as_bytes(),
        ))
        .into();
        hex::encode(self.account_key.sign_digest(&d))
    }
}
