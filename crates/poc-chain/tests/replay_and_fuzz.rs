//! Replaying a block log reproduces the app hash; random (mostly invalid) transactions
//! never panic and never break the state's invariants.

mod common;

use common::Net;
use poc_chain::ante;
use poc_chain::block::Block;
use poc_chain::keys::FreshVerifier;
use poc_chain::msgs::{MlNodeWeight, Msg, ValidationPayloadV2};
use poc_chain::state::ChainState;
use poc_chain::tx::TxMsg;
use proptest::prelude::*;

fn check_invariants(s: &ChainState) {
    for ((h, a), c) in &s.commits {
        assert_eq!(
            (c.poc_stage_start_block_height, &c.participant_address),
            (*h, a)
        );
        assert!(c.count > 0 && c.root_hash.len() == 32);
        assert!(c.commit_block_height <= s.height);
    }
    for ((h, a), d) in &s.distributions {
        let c = s
            .commits
            .get(&(*h, a.clone()))
            .expect("a distribution has a commit");
        let sum: u64 = d.weights.iter().map(|w| u64::from(w.weight)).sum();
        assert!(
            sum <= u64::from(c.count),
            "distribution sums to at most the latest count"
        );
    }
    for ((h, p, v), val) in &s.validations_v2 {
        assert_eq!(
            (
                val.poc_stage_start_block_height,
                &val.participant_address,
                &val.validator_participant_address
            ),
            (*h, p, v)
        );
    }
    assert!(s.effective_epoch.index <= s.latest_epoch.index);
    // The incrementally maintained hash equals one computed from scratch (a state that
    // went through JSON has cold hash caches).
    assert_eq!(s.app_hash, {
        let mut c: ChainState = serde_json::from_slice(&serde_json::to_vec(s).unwrap()).unwrap();
        c.app_hash = [0; 32];
        c.compute_app_hash()
    });
}

#[test]
fn replaying_the_block_log_gives_the_same_app_hash() {
    let mut net = Net::new(3, |_| {});
    let genesis = net.state.clone();
    let mut log: Vec<Block> = Vec::new();
    // Record blocks by re-building them from the live run.
    let s = net.state.effective_ctx().next_poc_start();
    while net.h() < s + 12 {
        let mut txs = vec![];
        let h = net.h() + 1;
        if h == s {
            txs = (0..3)
                .map(|i| net.sign(&net.keys[i].clone(), vec![TxMsg::Direct(net.seed(i, 1))]))
                .collect();
        } else if h == s + 1 {
            txs = (0..3)
                .map(|i| {
                    net.sign(
                        &net.keys[i].clone(),
                        vec![TxMsg::Direct(net.commit(i, s, 10 + i as u32))],
                    )
                })
                .collect();
        } else if h == s + 2 {
            txs = (0..3)
                .map(|i| {
                    net.sign(
                        &net.keys[i].clone(),
                        vec![TxMsg::Direct(net.dist(i, s, &[("n", 10 + i as u32)]))],
                    )
                })
                .collect();
        } else if h == s + 5 {
            txs = (0..3)
                .map(|i| {
                    net.sign(
                        &net.keys[i].clone(),
                        vec![TxMsg::Direct(net.votes(i, s, &[(0, 1), (1, 1), (2, 1)]))],
                    )
                })
                .collect();
        }
        let b = net.state.build_block(net.prev, net.state.time + 5, txs);
        let r = net.state.apply_block(&b).unwrap();
        assert!(r.tx_results.iter().all(|t| t.code == 0), "{r:?}");
        net.prev = b.header.hash();
        log.push(b);
    }
    assert_eq!(net.state.epoch_groups[&1].members.len(), 3);
    let mut replay = genesis.clone();
    for b in &log {
        replay.apply_block(b).unwrap();
    }
    assert_eq!(replay.app_hash, net.state.app_hash);
    assert_eq!(replay, net.state);
    // A block that does not continue the chain is refused without effect.
    let mut other = genesis;
    let before = other.clone();
    assert!(other.apply_block(&log[1]).is_err());
    let mut tampered = log[0].clone();
    tampered.header.app_hash[0] ^= 1;
    assert!(other.apply_block(&tampered).is_err());
    let mut tampered = log[0].clone();
    tampered.txs.push(vec![1, 2, 3]);
    assert!(other.apply_block(&tampered).is_err());
    assert_eq!(other, before);
}

#[derive(Debug, Clone)]
enum Action {
    Garbage(Vec<u8>),
    Msg {
        signer: usize,
        as_acct: usize,
        kind: u8,
        stage_off: i64,
        n: u32,
        seq_off: u8,
    },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Action::Garbage),
        8 => (0usize..4, 0usize..4, 0u8..10, -2i64..3, 0u32..5, 0u8..4).prop_map(|(signer, as_acct, kind, stage_off, n, seq_off)| Action::Msg { signer, as_acct, kind, stage_off, n, seq_off }),
    ]
}

fn build(net: &Net, a: &Action, stage: i64) -> Vec<u8> {
    match a {
        Action::Garbage(b) => b.clone(),
        Action::Msg {
            signer,
            as_acct,
            kind,
            stage_off,
            n,
            seq_off,
        } => {
            let acct = if *as_acct == 3 {
                "gonka1notanaddress".to_string()
            } else {
                net.addr(*as_acct)
            };
            let st = stage + stage_off;
            let m = match kind {
                0 | 1 => Msg::PocV2StoreCommit {
                    creator: acct,
                    poc_stage_start_block_height: st,
                    count: *n * 3,
                    root_hash: vec![*n as u8; if *n == 4 { 31 } else { 32 }],
                },
                2 => Msg::MlNodeWeightDistribution {
                    creator: acct,
                    poc_stage_start_block_height: st,
                    weights: (0..*n)
                        .map(|i| MlNodeWeight {
                            node_id: format!("n{i}"),
                            weight: 3,
                        })
                        .collect(),
                },
                3 | 4 => Msg::SubmitPocValidationsV2 {
                    creator: acct,
                    poc_stage_start_block_height: st,
                    validations: (0..*n as usize)
                        .map(|i| ValidationPayloadV2 {
                            participant_address: if i == 3 { "x".into() } else { net.addr(i % 3) },
                            validated_weight: i as i64 - 1,
                        })
                        .collect(),
                },
                5 => Msg::SubmitSeed {
                    creator: acct,
                    epoch_index: u64::from(*n),
                    signature: "s".into(),
                },
                6 => Msg::SubmitPocBatch {
                    creator: acct,
                    poc_stage_start_block_height: st,
                    batch_id: format!("b{n}"),
                    nonces: (0..*n as i64).collect(),
                    dist: vec![0.1; *n as usize],
                    node_id: "n".into(),
                },
                7 => Msg::Grant {
                    granter: acct,
                    grantee: net.addr((*signer + 1) % 3),
                    msg_type_url: "/inference.inference.MsgPoCV2StoreCommit".into(),
                },
                8 => Msg::SubmitNewParticipant {
                    creator: acct,
                    url: "http://x".into(),
                    validator_key: "v".into(),
                },
                _ => Msg::SubmitPocValidation {
                    creator: acct,
                    participant_address: net.addr(0),
                    poc_stage_start_block_height: st,
                    fraud_detected: *n == 0,
                },
            };
            let key = &net.keys[*signer % 3];
            let seq = net
                .state
                .sequences
                .get(&key.address())
                .copied()
                .unwrap_or(0)
                + u64::from(*seq_off == 3);
            let msg = if *signer == 3 {
                TxMsg::Exec {
                    grantee: key.address(),
                    msgs: vec![m],
                }
            } else {
                TxMsg::Direct(m)
            };
            net.sign_seq(key, seq, &[msg])
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_transactions_never_panic_or_break_invariants(blocks in proptest::collection::vec(proptest::collection::vec(action(), 0..4), 40..60), v1 in any::<bool>()) {
        let mut net = Net::new(3, |p| {
            p.epoch_params.epoch_length = 30;
            p.poc_params.poc_v2_enabled = !v1;
        });
        for txs in &blocks {
            let stage = net.state.latest_epoch.poc_start_block_height.max(30);
            let bytes: Vec<Vec<u8>> = txs.iter().map(|a| build(&net, a, stage)).collect();
            for b in &bytes {
                // CheckTx never panics either.
                let _ = ante::check_tx(&net.state, b, None, &FreshVerifier);
            }
            let before = net.state.sequences.clone();
            let r = net.block(bytes);
            for t in &r.tx_results {
                prop_assert!(t.code == 0 || !t.raw_log.is_empty());
            }
            for (a, s) in &before {
                prop_assert!(net.state.sequences[a] >= *s);
            }
            check_invariants(&net.state);
        }
    }
}
