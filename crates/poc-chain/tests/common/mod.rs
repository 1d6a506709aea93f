//! A tiny in-process chain for tests: keys, genesis, blocks.
#![allow(dead_code)]

use poc_chain::block::BlockResult;
use poc_chain::decimal::Decimal;
use poc_chain::epoch::EpochParams;
use poc_chain::genesis::{Genesis, GenesisParticipant};
use poc_chain::keys::PrivateKey;
use poc_chain::msgs::{MlNodeWeight, Msg, ValidationPayloadV2};
use poc_chain::params::Params;
use poc_chain::state::ChainState;
use poc_chain::tx::{self, TxMsg, TxResult};
use sha2::{Digest, Sha256};

pub fn key(name: &str) -> PrivateKey {
    PrivateKey::from_bytes(&Sha256::digest(name.as_bytes())).unwrap()
}

pub fn small_epochs() -> EpochParams {
    EpochParams {
        epoch_length: 100,
        poc_stage_duration: 3,
        poc_exchange_duration: 1,
        poc_validation_delay: 1,
        poc_validation_duration: 3,
        set_new_validators_delay: 1,
        inference_validation_cutoff: 0,
        poc_slot_allocation: Some(Decimal::new(0, 0)),
        ..EpochParams::default()
    }
}

pub struct Net {
    pub state: ChainState,
    pub prev: [u8; 32],
    pub keys: Vec<PrivateKey>,
    pub authority: PrivateKey,
    pub last: Option<BlockResult>,
}

impl Net {
    /// `n` genesis participants with weight 10 each.
    pub fn new(n: usize, f: impl FnOnce(&mut Params)) -> Self {
        let keys: Vec<PrivateKey> = (0..n).map(|i| key(&format!("participant-{i}"))).collect();
        let authority = key("authority");
        let mut params = Params {
            epoch_params: small_epochs(),
            ..Params::default()
        };
        params.poc_params.poc_v2_enabled = true;
        f(&mut params);
        let g = Genesis {
            chain_id: "poc-test".into(),
            genesis_time: 1_700_000_000,
            authority: authority.address(),
            params,
            consensus_validators: Vec::new(),
            participants: keys
                .iter()
                .enumerate()
                .map(|(i, k)| GenesisParticipant {
                    address: k.address(),
                    hex_pub_key: k.public_key_hex(),
                    inference_url: format!("http://p{i}.example:8080"),
                    validator_key: format!("vk{i}"),
                    weight: 10,
                })
                .collect(),
        };
        let mut state = ChainState::from_genesis(&g);
        state.app_hash = state.compute_app_hash();
        Net {
            state,
            prev: [0; 32],
            keys,
            authority,
            last: None,
        }
    }

    pub fn addr(&self, i: usize) -> String {
        self.keys[i].address()
    }

    pub fn h(&self) -> i64 {
        self.state.height
    }

    /// Signs `msgs` with `key` at its next sequence.
    pub fn sign(&self, key: &PrivateKey, msgs: Vec<TxMsg>) -> Vec<u8> {
        let seq = self
            .state
            .sequences
            .get(&key.address())
            .copied()
            .unwrap_or(0);
        self.sign_seq(key, seq, &msgs)
    }

    /// Signs `msgs` with `key` at sequence `seq`, for this chain and the key's account.
    pub fn sign_seq(&self, key: &PrivateKey, seq: u64, msgs: &[TxMsg]) -> Vec<u8> {
        tx::sign(key, &self.signer(key, seq), msgs)
    }

    /// What `key` signs at sequence `seq` on this chain (account 0 if it has none).
    pub fn signer(&self, key: &PrivateKey, seq: u64) -> tx::SignerData<'_> {
        tx::SignerData {
            chain_id: &self.state.chain_id,
            account_number: self.state.account_number(&key.address()).unwrap_or(0),
            sequence: seq,
        }
    }

    /// Executes one block with these transactions.
    pub fn block(&mut self, txs: Vec<Vec<u8>>) -> BlockResult {
        let b = self.state.build_block(self.prev, self.state.time + 5, txs);
        let r = self.state.apply_block(&b).expect("block applies");
        self.prev = b.header.hash();
        self.last = Some(r.clone());
        r
    }

    /// Empty blocks until the state is at height `h`.
    pub fn run_to(&mut self, h: i64) {
        assert!(self.h() <= h, "already at {} > {h}", self.h());
        while self.h() < h {
            self.block(vec![]);
        }
    }

    /// One message by participant `i`, alone in the next block.
    pub fn send(&mut self, i: usize, m: Msg) -> TxResult {
        let k = self.keys[i].clone();
        self.send_with(&k, TxMsg::Direct(m))
    }

    pub fn send_with(&mut self, k: &PrivateKey, m: TxMsg) -> TxResult {
        let t = self.sign(k, vec![m]);
        self.block(vec![t]).tx_results.remove(0)
    }

    /// Several messages (one transaction each) in the next block.
    pub fn send_many(&mut self, msgs: Vec<(usize, Msg)>) -> Vec<TxResult> {
        let mut txs = Vec::new();
        let mut seqs = std::collections::BTreeMap::new();
        for (i, m) in msgs {
            let k = &self.keys[i];
            let seq = seqs
                .entry(i)
                .or_insert_with(|| self.state.sequences.get(&k.address()).copied().unwrap_or(0));
            txs.push(self.sign_seq(k, *seq, &[TxMsg::Direct(m)]));
            *seq += 1;
        }
        self.block(txs).tx_results
    }

    pub fn commit(&self, i: usize, stage: i64, count: u32) -> Msg {
        Msg::PocV2StoreCommit {
            creator: self.addr(i),
            poc_stage_start_block_height: stage,
            count,
            root_hash: vec![i as u8; 32],
        }
    }

    pub fn dist(&self, i: usize, stage: i64, weights: &[(&str, u32)]) -> Msg {
        Msg::MlNodeWeightDistribution {
            creator: self.addr(i),
            poc_stage_start_block_height: stage,
            weights: weights
                .iter()
                .map(|(n, w)| MlNodeWeight {
                    node_id: n.to_string(),
                    weight: *w,
                })
                .collect(),
        }
    }

    pub fn votes(&self, i: usize, stage: i64, votes: &[(usize, i64)]) -> Msg {
        Msg::SubmitPocValidationsV2 {
            creator: self.addr(i),
            poc_stage_start_block_height: stage,
            validations: votes
                .iter()
                .map(|(p, w)| ValidationPayloadV2 {
                    participant_address: self.addr(*p),
                    validated_weight: *w,
                })
                .collect(),
        }
    }

    pub fn seed(&self, i: usize, epoch: u64) -> Msg {
        Msg::SubmitSeed {
            creator: self.addr(i),
            epoch_index: epoch,
            signature: format!("seed-{i}-{epoch}"),
        }
    }

    /// Runs a complete V2 regular PoC for the upcoming epoch that starts at the next
    /// PoC start: everyone commits `counts[i]` (one node "n0"), votes `vote(validator,
    /// participant)`, then runs to the end of PoC validation + 1 (weights computed).
    pub fn v2_round(&mut self, counts: &[u32], vote: impl Fn(usize, usize) -> i64) -> i64 {
        let s = self.state.effective_ctx().next_poc_start();
        self.run_to(s - 1);
        let n = self.keys.len();
        let epoch = self.state.latest_epoch.index + 1;
        self.send_many((0..n).map(|i| (i, self.seed(i, epoch))).collect());
        assert_eq!(self.h(), s);
        let commits = (0..n)
            .filter(|i| counts[*i] > 0)
            .map(|i| (i, self.commit(i, s, counts[i])))
            .collect();
        for r in self.send_many(commits) {
            assert_eq!(r.code, 0, "{r:?}");
        }
        let dists = (0..n)
            .filter(|i| counts[*i] > 0)
            .map(|i| (i, self.dist(i, s, &[("n0", counts[i])])))
            .collect();
        for r in self.send_many(dists) {
            assert_eq!(r.code, 0, "{r:?}");
        }
        let u = self.state.upcoming_ctx().unwrap();
        self.run_to(u.start_of_poc_validation());
        let votes = (0..n)
            .map(|v| {
                (
                    v,
                    self.votes(
                        v,
                        s,
                        &(0..n)
                            .filter(|p| counts[*p] > 0)
                            .map(|p| (p, vote(v, p)))
                            .collect::<Vec<_>>(),
                    ),
                )
            })
            .collect();
        for r in self.send_many(votes) {
            assert_eq!(r.code, 0, "{r:?}");
        }
        self.run_to(u.end_of_poc_validation());
        s
    }
}
