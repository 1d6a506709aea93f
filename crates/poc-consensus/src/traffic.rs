//! Synthetic PoC v2 traffic for benchmarks and load tests: what `n` participants send
//! block by block over many epochs (seeds before each PoC, a store commit per block while
//! generating, the weight distribution in the exchange window, then every participant's
//! votes on every other). Messages are chosen by the state's phase and the ante checks,
//! then signed with each participant's next sequence.

use std::collections::BTreeMap;

use poc_chain::genesis::{Genesis, GenesisParticipant};
use poc_chain::keys::PrivateKey;
use poc_chain::msgs::{MlNodeWeight, Msg, ValidationPayloadV2};
use poc_chain::state::ChainState;
use poc_chain::tx::{self, TxMsg};

/// Participants and what each has sent so far.
pub struct Traffic {
    keys: Vec<PrivateKey>,
    sequences: Vec<u64>,
    /// Last committed count per (participant, stage).
    counts: BTreeMap<(usize, i64), u32>,
    sent: BTreeMap<(usize, i64, u8), ()>,
}

/// Deterministic participant keys (`traffic-0`, `traffic-1`, …).
pub fn participant_keys(n: usize) -> Vec<PrivateKey> {
    (0..n)
        .map(|i| {
            let mut seed = [0u8; 32];
            let tag = format!("traffic-{i}");
            for (j, b) in tag.bytes().enumerate() {
                seed[j % 32] ^= b;
            }
            seed[31] ^= 1;
            PrivateKey::from_bytes(&seed).expect("valid scalar")
        })
        .collect()
}

/// Genesis participants of weight 10 for these keys.
pub fn genesis_participants(keys: &[PrivateKey]) -> Vec<GenesisParticipant> {
    keys.iter()
        .enumerate()
        .map(|(i, k)| GenesisParticipant {
            address: k.address(),
            hex_pub_key: k.public_key_hex(),
            inference_url: format!("http://p{i}.example:8080"),
            validator_key: format!("vk{i}"),
            weight: 10,
        })
        .collect()
}

impl Traffic {
    /// Traffic of the genesis participants with these keys.
    pub fn new(keys: Vec<PrivateKey>) -> Self {
        let n = keys.len();
        Self {
            keys,
            sequences: vec![0; n],
            counts: BTreeMap::new(),
            sent: BTreeMap::new(),
        }
    }

    /// The signed transactions for the block after `state` (`state.height + 1`).
    pub fn next_block(&mut self, state: &ChainState, g: &Genesis) -> Vec<Vec<u8>> {
        let h = state.height + 1;
        let mut out = Vec::new();
        let Some(ctx) = state.upcoming_ctx().or_else(|| Some(state.effective_ctx())) else {
            return out;
        };
        let stage = ctx.start_of_poc();
        let next_epoch = state.latest_epoch.index + 1;
        let addrs: Vec<String> = self.keys.iter().map(|k| k.address()).collect();
        for i in 0..self.keys.len() {
            let me = addrs[i].clone();
            let count = |j: usize| self.counts.get(&(j, stage)).copied().unwrap_or(0);
            let commit_count = count(i) + 100;
            let candidates = [
                (
                    0u8,
                    Msg::SubmitSeed {
                        creator: me.clone(),
                        epoch_index: next_epoch,
                        signature: format!("seed-{i}-{next_epoch}"),
                    },
                ),
                (
                    1,
                    Msg::PocV2StoreCommit {
                        creator: me.clone(),
                        poc_stage_start_block_height: stage,
                        count: commit_count,
                        root_hash: vec![i as u8; 32],
                    },
                ),
                (
                    2,
                    Msg::MlNodeWeightDistribution {
                        creator: me.clone(),
                        poc_stage_start_block_height: stage,
                        weights: vec![MlNodeWeight {
                            node_id: "ml-0".into(),
                            weight: count(i),
                        }],
                    },
                ),
                (
                    3,
                    Msg::SubmitPocValidationsV2 {
                        creator: me.clone(),
                        poc_stage_start_block_height: stage,
                        validations: addrs
                            .iter()
                            .enumerate()
                            .filter(|(j, _)| *j != i)
                            .map(|(j, a)| ValidationPayloadV2 {
                                participant_address: a.clone(),
                                validated_weight: i64::from(count(j)),
                            })
                            .collect(),
                    },
                ),
            ];
            for (kind, m) in candidates {
                // One seed, distribution and vote batch per stage; commits every block.
                let key = (i, if kind == 0 { next_epoch as i64 } else { stage }, kind);
                if kind != 1 && self.sent.contains_key(&key) {
                    continue;
                }
                if kind == 2 && count(i) == 0 {
                    continue;
                }
                if state.ante_check(h, &m).is_err() || !in_window(state, h, kind, stage) {
                    continue;
                }
                if kind == 1 {
                    self.counts.insert((i, stage), commit_count);
                }
                self.sent.insert(key, ());
                let signer = tx::SignerData {
                    chain_id: &g.chain_id,
                    account_number: state.account_number(&me).unwrap_or(0),
                    sequence: self.sequences[i],
                };
                let t = tx::sign(&self.keys[i], &signer, &[TxMsg::Direct(m)]);
                self.sequences[i] += 1;
                out.push(t);
                break;
            }
        }
        out
    }
}

/// The handler windows (the ante checks only cover the "too late" side).
fn in_window(state: &ChainState, h: i64, kind: u8, stage: i64) -> bool {
    let Some(ctx) = state.upcoming_ctx() else {
        return kind == 0;
    };
    match kind {
        0 => h < stage,
        1 => h > stage && h <= ctx.poc_exchange_deadline(),
        2 => h > ctx.end_of_poc_generation() && h <= ctx.poc_exchange_deadline(),
        _ => h >= ctx.start_of_poc_validation() && h <= ctx.end_of_poc_validation(),
    }
}

/// A genesis for traffic runs: the local network's parameters (40-block epochs) and
/// these participants.
pub fn genesis(keys: &[PrivateKey]) -> Genesis {
    Genesis {
        chain_id: "poc-traffic".into(),
        genesis_time: 1_700_000_000,
        authority: keys[0].address(),
        params: poc_chain_node::home::local_params(),
        consensus_validators: Vec::new(),
        participants: genesis_participants(keys),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_is_accepted_by_the_state_machine() {
        let keys = participant_keys(6);
        let g = genesis(&keys);
        let mut s = ChainState::genesis_state(&g);
        let mut t = Traffic::new(keys);
        let mut prev = [0u8; 32];
        let (mut ok, mut failed) = (0, BTreeMap::<String, usize>::new());
        for _ in 0..200 {
            let txs = t.next_block(&s, &g);
            let b = s.build_block(prev, s.time + 1, txs);
            let r = s.apply_block(&b).unwrap();
            prev = b.header.hash();
            for x in r.tx_results {
                if x.code == 0 {
                    ok += 1;
                } else {
                    *failed.entry(x.raw_log).or_default() += 1;
                }
            }
        }
        assert!(failed.is_empty(), "{ok} ok, failures: {failed:?}");
        assert!(ok > 200, "{ok}");
        assert!(!s.validations_v2.is_empty() && !s.commits.is_empty());
    }
}
