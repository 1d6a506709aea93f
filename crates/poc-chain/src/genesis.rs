//! The genesis file and the state it starts the chain from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::epoch::Epoch;
use crate::error::InvalidParams;
use crate::params::Params;
use crate::records::{ActiveParticipant, EpochGroup, Participant, ParticipantStatus};
use crate::state::ChainState;
use crate::tracked::Tracked;

/// A participant in the genesis file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisParticipant {
    /// Account address.
    pub address: String,
    /// Lowercase hex compressed public key.
    pub hex_pub_key: String,
    pub inference_url: String,
    /// Consensus key.
    pub validator_key: String,
    /// Initial validator weight.
    #[serde(with = "crate::json::i64_string")]
    pub weight: i64,
}

/// Genesis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    pub chain_id: String,
    /// Unix seconds of the genesis.
    #[serde(with = "crate::json::i64_string")]
    pub genesis_time: i64,
    /// Governance authority address (`MsgUpdateParams`).
    pub authority: String,
    /// Parameters.
    pub params: Params,
    /// Initial participants (the epoch-0 validator set).
    pub participants: Vec<GenesisParticipant>,
    /// The block-signing (consensus) validators of a replicated chain, each with equal
    /// voting power. Empty for a single-producer chain. Not part of the state machine:
    /// PoC weights stay the state's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consensus_validators: Vec<ConsensusValidator>,
}

/// One consensus validator of a replicated chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsensusValidator {
    /// A label for logs and status.
    pub name: String,
    /// Its ed25519 public key, 64 lowercase hex characters.
    pub public_key: String,
}

impl Genesis {
    /// Checks everything a chain needs from its genesis, with a message naming the field.
    pub fn validate(&self) -> Result<(), InvalidParams> {
        if self.chain_id.trim().is_empty() || self.chain_id.len() > 64 {
            return Err(InvalidParams("chain_id must be 1..=64 characters".into()));
        }
        if !crate::address::is_valid(&self.authority) {
            return Err(InvalidParams(format!(
                "authority {:?} is not a gonka1… address",
                self.authority
            )));
        }
        self.params.validate().map_err(|e| format!("params: {e}"))?;
        let mut keys = std::collections::BTreeSet::new();
        for (i, v) in self.consensus_validators.iter().enumerate() {
            let ok = v.public_key.len() == 64
                && v.public_key
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !ok {
                return Err(InvalidParams(format!(
                    "consensus_validators[{i}].public_key must be 64 lowercase hex characters (an ed25519 key)"
                )));
            }
            if !keys.insert(&v.public_key) {
                return Err(InvalidParams(format!(
                    "consensus_validators[{i}].public_key is listed twice"
                )));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, p) in self.participants.iter().enumerate() {
            if !crate::address::is_valid(&p.address) {
                return Err(InvalidParams(format!(
                    "participants[{i}].address {:?} is not a gonka1… address",
                    p.address
                )));
            }
            if !seen.insert(&p.address) {
                return Err(InvalidParams(format!(
                    "participants[{i}].address {} is listed twice",
                    p.address
                )));
            }
            let key = hex::decode(&p.hex_pub_key)
                .map_err(|_| format!("participants[{i}].hex_pub_key is not hex"))?;
            if !crate::keys::valid_pubkey(&key) || crate::address::from_pubkey(&key) != p.address {
                return Err(InvalidParams(format!(
                    "participants[{i}].hex_pub_key is not the compressed key of {}",
                    p.address
                )));
            }
            if p.weight < 0 {
                return Err(InvalidParams(format!(
                    "participants[{i}].weight must not be negative"
                )));
            }
        }
        Ok(())
    }
}

impl ChainState {
    /// The state at genesis.
    pub fn from_genesis(g: &Genesis) -> Self {
        let mut s = Self {
            chain_id: g.chain_id.clone(),
            height: 0,
            time: g.genesis_time,
            authority: g.authority.clone(),
            params: g.params.clone(),
            effective_epoch: Epoch {
                index: 0,
                poc_start_block_height: 0,
            },
            latest_epoch: Epoch {
                index: 0,
                poc_start_block_height: 0,
            },
            accounts: BTreeMap::new(),
            account_numbers: BTreeMap::new(),
            sequences: BTreeMap::new(),
            participants: BTreeMap::new(),
            grants: BTreeMap::new(),
            seeds: Tracked::default(),
            epoch_groups: Tracked::default(),
            commits: Tracked::default(),
            distributions: Tracked::default(),
            validations_v2: Tracked::default(),
            batches_v1: Tracked::default(),
            validations_v1: Tracked::default(),
            confirmation_events: Tracked::default(),
            active_event: None,
            poc_v2_enabled_epoch: None,
            generation_start_times: Tracked::default(),
            snapshots: Tracked::default(),
            app_hash: [0; 32],
        };
        if g.params.poc_params.poc_v2_enabled {
            s.poc_v2_enabled_epoch = Some(0);
        }
        let mut group = EpochGroup::default();
        for p in &g.participants {
            s.ensure_account(&p.address);
            s.accounts.insert(p.address.clone(), p.hex_pub_key.clone());
            s.participants.insert(
                p.address.clone(),
                Participant {
                    address: p.address.clone(),
                    hex_pub_key: p.hex_pub_key.clone(),
                    inference_url: p.inference_url.clone(),
                    validator_key: p.validator_key.clone(),
                    status: ParticipantStatus::Active,
                    status_reason: String::new(),
                    confirmation_poc_ratio: String::new(),
                },
            );
            group.members.insert(p.address.clone(), p.weight);
            group
                .confirmation_weights
                .insert(p.address.clone(), p.weight);
            group.participants.push(ActiveParticipant {
                index: p.address.clone(),
                validator_key: p.validator_key.clone(),
                weight: p.weight,
                inference_url: p.inference_url.clone(),
                seed: String::new(),
                ml_nodes: vec![],
            });
        }
        // The governance authority signs parameter updates: it has the next account.
        s.ensure_account(&g.authority.clone());
        s.epoch_groups.insert(0, group);
        s
    }

    /// The state at genesis with its app hash computed (the app hash block 1's header
    /// carries).
    pub fn genesis_state(g: &Genesis) -> Self {
        let mut s = Self::from_genesis(g);
        s.app_hash = s.compute_app_hash();
        s
    }
}
