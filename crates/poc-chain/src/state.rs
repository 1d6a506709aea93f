//! The chain state: every collection the state machine keeps, and the read-only views
//! of it the handlers share (`docs/protocol/chain-and-api.md` §1). The records it stores
//! are in [`crate::records`], the message handlers in [`crate::handlers`], EndBlock in
//! [`crate::end_block`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::confirmation::ConfirmationEvent;
use crate::epoch::{Epoch, EpochContext};
use crate::params::Params;
use crate::records::{
    EpochGroup, Participant, PocBatch, PocValidationV1, StoreCommit, ValidationSnapshot,
    ValidationV2, WeightDistribution,
};
use crate::tracked::{HashWriter, Tracked};

/// The block being executed, as the state machine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockContext {
    pub height: i64,
    /// Unix seconds (from the header).
    pub time: i64,
    /// The block's hash (`HeaderInfo().Hash`).
    pub hash: [u8; 32],
}

/// The whole state. Collections are ordered maps, so iteration (and the app hash) is
/// deterministic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainState {
    pub chain_id: String,
    /// Last executed height (0 before the first block).
    pub height: i64,
    /// Time of the last block.
    pub time: i64,
    /// Governance authority.
    pub authority: String,
    /// Parameters.
    pub params: Params,
    /// The epoch whose validators are active.
    pub effective_epoch: Epoch,
    /// The newest epoch (the upcoming one while its PoC runs).
    pub latest_epoch: Epoch,
    /// Account public keys (hex), learned from genesis and signed transactions.
    pub accounts: BTreeMap<String, String>,
    /// Account numbers (`x/auth`): an account exists once it has one. Given in genesis
    /// order, then to each new grantee of a grant, never reused.
    #[serde(default)]
    pub account_numbers: BTreeMap<String, u64>,
    /// Next expected transaction sequence per account.
    pub sequences: BTreeMap<String, u64>,
    /// Registered participants.
    pub participants: BTreeMap<String, Participant>,
    /// Authz grants: (granter, grantee, msg type url).
    #[serde(with = "crate::json::entries")]
    pub grants: BTreeMap<(String, String, String), ()>,
    /// Seeds: (epoch, participant) → signature.
    #[serde(with = "crate::tracked::entries")]
    pub seeds: Tracked<(u64, String), String>,
    /// Groups by epoch index.
    pub epoch_groups: Tracked<u64, EpochGroup>,
    /// `PoCV2StoreCommits[(height, participant)]`.
    #[serde(with = "crate::tracked::entries")]
    pub commits: Tracked<(i64, String), StoreCommit>,
    /// `MLNodeWeightDistributions[(height, participant)]`.
    #[serde(with = "crate::tracked::entries")]
    pub distributions: Tracked<(i64, String), WeightDistribution>,
    /// `PoCValidationsV2[(height, participant, validator)]`.
    #[serde(with = "crate::tracked::entries")]
    pub validations_v2: Tracked<(i64, String, String), ValidationV2>,
    /// `PoCBatches[(height, participant, batch_id)]`.
    #[serde(with = "crate::tracked::entries")]
    pub batches_v1: Tracked<(i64, String, String), PocBatch>,
    /// `PoCValidations[(height, participant, validator)]`.
    #[serde(with = "crate::tracked::entries")]
    pub validations_v1: Tracked<(i64, String, String), PocValidationV1>,
    /// `ConfirmationPoCEvents[(epoch, sequence)]`.
    #[serde(with = "crate::tracked::entries")]
    pub confirmation_events: Tracked<(u64, u64), ConfirmationEvent>,
    /// `ActiveConfirmationPoCEvent`.
    pub active_event: Option<ConfirmationEvent>,
    /// `PocV2EnabledEpoch` (the grace epoch).
    pub poc_v2_enabled_epoch: Option<u64>,
    /// Generation start block times by stage height.
    pub generation_start_times: Tracked<i64, i64>,
    /// `PoCValidationSnapshots`.
    pub snapshots: Tracked<i64, ValidationSnapshot>,
    /// App hash after the last block. Left out of the form the app hash is taken over
    /// (it commits to the previous one through the header chain instead).
    #[serde(with = "crate::json::hex32")]
    pub app_hash: [u8; 32],
}

impl ChainState {
    /// Context of the effective epoch.
    pub fn effective_ctx(&self) -> EpochContext {
        EpochContext::new(self.effective_epoch, self.params.epoch_params.clone())
    }

    /// The upcoming epoch (created at its PoC start, effective at its SetNewValidators).
    pub fn upcoming(&self) -> Option<Epoch> {
        (self.latest_epoch.index > self.effective_epoch.index).then_some(self.latest_epoch)
    }

    /// Context of the upcoming epoch.
    pub fn upcoming_ctx(&self) -> Option<EpochContext> {
        self.upcoming()
            .map(|e| EpochContext::new(e, self.params.epoch_params.clone()))
    }

    /// Context of the latest epoch (what phase trackers follow).
    pub fn latest_ctx(&self) -> EpochContext {
        EpochContext::new(self.latest_epoch, self.params.epoch_params.clone())
    }

    /// The V2 gate: `poc_v2_enabled`, or migration tracking (confirmation V2 enabled and the
    /// active event has sequence 0).
    pub fn v2_gate(&self) -> bool {
        let p = &self.params.poc_params;
        p.poc_v2_enabled
            || (p.confirmation_poc_v2_enabled
                && self
                    .active_event
                    .as_ref()
                    .is_some_and(|e| e.event_sequence == 0))
    }

    /// The account number of `addr`, if it has an account.
    pub fn account_number(&self, addr: &str) -> Option<u64> {
        self.account_numbers.get(addr).copied()
    }

    /// Opens an account for `addr` unless it has one: the next account number.
    pub fn ensure_account(&mut self, addr: &str) -> u64 {
        let next = self.account_numbers.len() as u64;
        *self.account_numbers.entry(addr.to_owned()).or_insert(next)
    }

    /// Whether `grantee` may send `type_url` for `granter`.
    pub fn is_granted(&self, granter: &str, grantee: &str, type_url: &str) -> bool {
        self.grants
            .contains_key(&(granter.to_owned(), grantee.to_owned(), type_url.to_owned()))
    }

    /// The canonical state commitment: SHA-256 of the state's canonical JSON (ordered
    /// maps, fixed field order) with the app-hash field itself left empty and each PoC
    /// collection replaced by its two-level list hash ([`crate::tracked`]), so hashing
    /// costs what the last block changed, not the state's size. `&mut` because the
    /// collections bring their cached hashes up to date.
    pub fn compute_app_hash(&mut self) -> [u8; 32] {
        // Destructured so a new field cannot be left out of the commitment unnoticed.
        let ChainState {
            chain_id,
            height,
            time,
            authority,
            params,
            effective_epoch,
            latest_epoch,
            accounts,
            account_numbers,
            sequences,
            participants,
            grants,
            seeds,
            epoch_groups,
            commits,
            distributions,
            validations_v2,
            batches_v1,
            validations_v1,
            confirmation_events,
            active_event,
            poc_v2_enabled_epoch,
            generation_start_times,
            snapshots,
            app_hash: _,
        } = self;
        let view = Commitment {
            chain_id,
            height: *height,
            time: *time,
            authority,
            params,
            effective_epoch,
            latest_epoch,
            accounts,
            account_numbers,
            sequences,
            participants,
            grants: Entries(grants),
            seeds: hex::encode(seeds.hash()),
            epoch_groups: hex::encode(epoch_groups.hash()),
            commits: hex::encode(commits.hash()),
            distributions: hex::encode(distributions.hash()),
            validations_v2: hex::encode(validations_v2.hash()),
            batches_v1: hex::encode(batches_v1.hash()),
            validations_v1: hex::encode(validations_v1.hash()),
            confirmation_events: hex::encode(confirmation_events.hash()),
            active_event,
            poc_v2_enabled_epoch: *poc_v2_enabled_epoch,
            generation_start_times: hex::encode(generation_start_times.hash()),
            snapshots: hex::encode(snapshots.hash()),
            app_hash: "",
        };
        let mut h = Sha256::new();
        serde_json::to_writer(HashWriter(&mut h), &view).expect("state serialises");
        h.finalize().into()
    }
}

/// The form of [`ChainState`] the app hash is taken over: the same fields in the same
/// order, each tracked collection as the hex of its hash, the app hash empty.
#[derive(Serialize)]
struct Commitment<'a> {
    chain_id: &'a str,
    height: i64,
    time: i64,
    authority: &'a str,
    params: &'a Params,
    effective_epoch: &'a Epoch,
    latest_epoch: &'a Epoch,
    accounts: &'a BTreeMap<String, String>,
    account_numbers: &'a BTreeMap<String, u64>,
    sequences: &'a BTreeMap<String, u64>,
    participants: &'a BTreeMap<String, Participant>,
    grants: Entries<'a, (String, String, String), ()>,
    seeds: String,
    epoch_groups: String,
    commits: String,
    distributions: String,
    validations_v2: String,
    batches_v1: String,
    validations_v1: String,
    confirmation_events: String,
    active_event: &'a Option<ConfirmationEvent>,
    poc_v2_enabled_epoch: Option<u64>,
    generation_start_times: String,
    snapshots: String,
    app_hash: &'static str,
}

/// A map serialised as `[[k, v], …]` ([`crate::json::entries`]).
struct Entries<'a, K, V>(&'a BTreeMap<K, V>);

impl<K: Serialize, V: Serialize> Serialize for Entries<'_, K, V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::json::entries::serialize(self.0, s)
    }
}
