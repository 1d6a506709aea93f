//! Talking to the chain: the operational key's transactions through `MsgExec` with retry
//! on transient failures, the account key's setup (registration, grants, seeds), and the
//! vote batcher that merges verdicts into one `MsgSubmitPocValidationsV2` per stage.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use poc_chain::api::{BroadcastMode, TxResponse};
use poc_chain::msgs::{Msg, OPERATIONAL_PERMISSIONS, ValidationPayloadV2};
use poc_chain::tx::{PrivateKey, TxMsg};
use poc_chain_client::{ChainClient, ClientError, TxSigner};
use tokio::sync::Mutex;

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
        let exec = [TxMsg::Exec {
            grantee: self.operational.address(),
            msgs,
        }];
        let mut delay = Duration::from_secs(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.operational.send(&exec, mode).await {
                Err(e) if e.is_transient() && attempt < 5 => {
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
    pub async fn ensure_setup(&self, public_url: &str) -> Result<(), String> {
        let registered = self
            .client
            .participant(&self.address)
            .await
            .map_err(|e| e.to_string())?;
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
            let g = self
                .client
                .grantees(&self.address, t)
                .await
                .map_err(|e| e.to_string())?;
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
        let r = self
            .account
            .send(&msgs, BroadcastMode::Block)
            .await
            .map_err(|e| e.to_string())?;
        if r.result.code != 0 {
            return Err(format!(
                "registration/grants rejected ({} {}): {}",
                r.result.codespace, r.result.code, r.result.raw_log
            ));
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

/// Pending votes, merged per stage height.
#[derive(Debug, Default)]
struct Pending {
    by_height: BTreeMap<i64, Vec<ValidationPayloadV2>>,
    count: usize,
    first: Option<Instant>,
}

/// Batches verdicts: flush when `flush_size` are pending or `flush_timeout` after the
/// first; one `MsgSubmitPocValidationsV2` per stage height, all in one transaction.
pub struct VoteBatcher {
    pending: Mutex<Pending>,
    flush_size: usize,
    flush_timeout: Duration,
}

impl VoteBatcher {
    /// A batcher.
    pub fn new(flush_size: usize, flush_timeout: Duration) -> Self {
        Self {
            pending: Mutex::new(Pending::default()),
            flush_size,
            flush_timeout,
        }
    }

    /// Queues a vote; returns whether a flush is due.
    pub async fn push(&self, height: i64, participant: String, weight: i64) -> bool {
        let mut p = self.pending.lock().await;
        p.by_height
            .entry(height)
            .or_default()
            .push(ValidationPayloadV2 {
                participant_address: participant,
                validated_weight: weight,
            });
        p.count += 1;
        p.first.get_or_insert_with(Instant::now);
        p.count >= self.flush_size
    }

    /// Whether the oldest pending vote waited long enough.
    pub async fn due(&self) -> bool {
        let p = self.pending.lock().await;
        p.count > 0
            && (p.count >= self.flush_size
                || p.first.is_some_and(|f| f.elapsed() >= self.flush_timeout))
    }

    /// Takes everything pending as messages for `creator`.
    pub async fn take(&self, creator: &str) -> Vec<Msg> {
        let mut p = self.pending.lock().await;
        let by = std::mem::take(&mut p.by_height);
        p.count = 0;
        p.first = None;
        by.into_iter()
            .map(|(h, validations)| Msg::SubmitPocValidationsV2 {
                creator: creator.to_owned(),
                poc_stage_start_block_height: h,
                validations,
            })
            .collect()
    }

    /// Votes waiting.
    pub async fn len(&self) -> usize {
        self.pending.lock().await.count
    }

    /// Whether nothing waits.
    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn votes_merge_per_height() {
        let b = VoteBatcher::new(3, Duration::from_secs(3600));
        assert!(!b.push(10, "a".into(), 200).await);
        assert!(!b.push(20, "b".into(), -1).await);
        assert!(!b.due().await);
        assert!(b.push(10, "c".into(), 200).await);
        assert!(b.due().await);
        let msgs = b.take("v").await;
        assert_eq!(msgs.len(), 2);
        match &msgs[0] {
            Msg::SubmitPocValidationsV2 {
                poc_stage_start_block_height,
                validations,
                creator,
            } => {
                assert_eq!(
                    (
                        *poc_stage_start_block_height,
                        validations.len(),
                        creator.as_str()
                    ),
                    (10, 2, "v")
                );
            }
            m => panic!("{m:?}"),
        }
        assert!(b.is_empty().await);
        let t = VoteBatcher::new(100, Duration::from_millis(1));
        t.push(1, "a".into(), 1).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(t.due().await);
    }
}
