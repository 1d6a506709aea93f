//! The PoC state machine end to end on hand-built chains: windows and error codes of every
//! message, the V2 gate, weights, confirmation PoC, governance and migration.

mod common;

use common::Net;
use poc_chain::ante;
use poc_chain::confirmation::ConfirmationPhase;
use poc_chain::decimal::Decimal;
use poc_chain::keys::FreshVerifier;
use poc_chain::msgs::{Msg, OPERATIONAL_PERMISSIONS};
use poc_chain::records::ParticipantStatus;
use poc_chain::tx::{self, TxMsg};

const S1: i64 = 100; // first PoC start (epoch_length 100)

#[test]
fn full_v2_round_assigns_weights_to_accepted_participants() {
    let mut net = Net::new(4, |_| {});
    // Participant 3 is voted invalid by everyone.
    let s = net.v2_round(&[1000, 500, 700, 900], |_, p| if p == 3 { -1 } else { 200 });
    assert_eq!(s, S1);
    let g = net.state.epoch_groups.get(&1).expect("group of epoch 1");
    let w: Vec<(String, i64)> = g.members.iter().map(|(a, w)| (a.clone(), *w)).collect();
    let mut expected = vec![(net.addr(0), 1000), (net.addr(1), 500), (net.addr(2), 700)];
    expected.sort();
    assert_eq!(w, expected);
    let p0 = g
        .participants
        .iter()
        .find(|p| p.index == net.addr(0))
        .unwrap();
    assert_eq!(p0.ml_nodes.len(), 1);
    assert_eq!(p0.ml_nodes[0].node_id, "n0");
    assert_eq!(p0.seed, "seed-0-1");
    assert_eq!(p0.validator_key, "vk0");
    // Not yet effective: SetNewValidators is one block later.
    assert_eq!(net.state.effective_epoch.index, 0);
    net.block(vec![]);
    assert_eq!(net.state.effective_epoch.index, 1);
    assert_eq!(net.state.current_validator_weights().len(), 3);
    // The snapshot of the stage is gone after SetNewValidators.
    assert!(!net.state.snapshots.contains_key(&S1));
}

/// The rule a client of a Gonka node (whose `epoch_info` names only the latest epoch)
/// uses to tell an upcoming epoch from an effective one agrees with the chain's own
/// effective epoch after every block of two epochs.
#[test]
fn the_upcoming_epoch_rule_matches_the_chains_effective_epoch() {
    let mut net = Net::new(2, |_| {});
    let mut seen = [false; 2];
    while net.h() < 2 * S1 + 20 {
        net.block(vec![]);
        let st = &net.state;
        let upcoming = st.latest_epoch.index > st.effective_epoch.index;
        assert_eq!(
            st.latest_ctx().is_upcoming_at(st.height),
            upcoming,
            "after block {}",
            st.height
        );
        seen[usize::from(upcoming)] = true;
    }
    assert_eq!(seen, [true, true], "both cases occur");
}

#[test]
fn weight_scale_factor_is_applied_with_legacy_dec_truncation() {
    let mut net = Net::new(3, |p| {
        p.poc_params.weight_scale_factor = Some(Decimal::new(3593, -4))
    });
    net.v2_round(&[1001, 3, 2], |_, _| 1);
    let g = net.state.epoch_groups.get(&1).unwrap();
    // trunc(1001 × 0.3593) = 359; trunc(3 × 0.3593) = 1; trunc(2 × 0.3593) = 0 → rejected.
    assert_eq!(g.members.get(&net.addr(0)), Some(&359));
    assert_eq!(g.members.get(&net.addr(1)), Some(&1));
    assert_eq!(g.members.get(&net.addr(2)), None);
}

#[test]
fn missing_distribution_seed_or_votes_drop_the_participant() {
    let mut net = Net::new(4, |_| {});
    let s = net.state.effective_ctx().next_poc_start();
    net.run_to(s - 1);
    // 0 sends its seed; 1 does not.
    net.send_many(vec![
        (0, net.seed(0, 1)),
        (2, net.seed(2, 1)),
        (3, net.seed(3, 1)),
    ]);
    net.send_many(vec![
        (0, net.commit(0, s, 10)),
        (1, net.commit(1, s, 10)),
        (2, net.commit(2, s, 10)),
        (3, net.commit(3, s, 10)),
    ]);
    // 2 never sends its distribution.
    net.send_many(vec![
        (0, net.dist(0, s, &[("a", 4), ("b", 6)])),
        (1, net.dist(1, s, &[("a", 10)])),
        (3, net.dist(3, s, &[("a", 10)])),
    ]);
    net.run_to(s + 4);
    // Nobody votes for 3.
    net.send_many(
        (0..4)
            .map(|v| (v, net.votes(v, s, &[(0, 1), (1, 1), (2, 1)])))
            .collect(),
    );
    net.run_to(s + 7);
    let g = net.state.epoch_groups.get(&1).unwrap();
    assert_eq!(
        g.members.keys().cloned().collect::<Vec<_>>(),
        vec![net.addr(0)]
    );
    let nodes: Vec<(String, i64)> = g.participants[0]
        .ml_nodes
        .iter()
        .map(|n| (n.node_id.clone(), n.poc_weight))
        .collect();
    assert_eq!(nodes, vec![("a".into(), 4), ("b".into(), 6)]);
}

#[test]
fn store_commit_windows_and_rules() {
    let mut net = Net::new(2, |_| {});
    // Before any PoC: no upcoming epoch (1128).
    net.run_to(50);
    assert_eq!(net.send(0, net.commit(0, 50, 5)).code, 1128);
    net.run_to(S1);
    // Wrong stage height (1107), count 0 / bad root (1137).
    assert_eq!(net.send(0, net.commit(0, S1 + 1, 5)).code, 1107);
    let r = net.send(
        0,
        Msg::PocV2StoreCommit {
            creator: net.addr(0),
            poc_stage_start_block_height: S1,
            count: 0,
            root_hash: vec![0; 32],
        },
    );
    assert_eq!(r.code, 1137);
    let r = net.send(
        0,
        Msg::PocV2StoreCommit {
            creator: net.addr(0),
            poc_stage_start_block_height: S1,
            count: 3,
            root_hash: vec![0; 31],
        },
    );
    assert_eq!(r.code, 1137);
    assert_eq!(net.h(), S1 + 3);
    assert_eq!(net.send(0, net.commit(0, S1, 5)).code, 0); // S+4: last block of the window
    // Only one commit per block; count must increase.
    let t1 = net.sign(
        &net.keys[1].clone(),
        vec![TxMsg::Direct(net.commit(1, S1, 5))],
    );
    let seq = net.state.sequences.get(&net.addr(1)).copied().unwrap_or(0);
    let t2 = net.sign_seq(
        &net.keys[1],
        seq + 1,
        &[TxMsg::Direct(net.commit(1, S1, 6))],
    );
    // h = S+5 is past the deadline S+4.
    let r = net.block(vec![t1, t2]).tx_results;
    assert_eq!((r[0].code, r[1].code), (1108, 1108));
    assert_eq!(net.state.commits.get(&(S1, net.addr(0))).unwrap().count, 5);
}

#[test]
fn commit_count_must_increase_and_one_per_block() {
    let mut net = Net::new(2, |_| {});
    net.run_to(S1);
    assert_eq!(net.send(0, net.commit(0, S1, 5)).code, 0);
    assert_eq!(net.send(0, net.commit(0, S1, 5)).code, 1137); // not increasing
    assert_eq!(net.send(0, net.commit(0, S1, 4)).code, 1137);
    let seq = net.state.sequences[&net.addr(0)];
    let a = net.sign_seq(&net.keys[0], seq, &[TxMsg::Direct(net.commit(0, S1, 7))]);
    let b = net.sign_seq(
        &net.keys[0],
        seq + 1,
        &[TxMsg::Direct(net.commit(0, S1, 8))],
    );
    let r = net.block(vec![a, b]).tx_results;
    assert_eq!(r[0].code, 0);
    assert_eq!(r[1].code, 1137, "{}", r[1].raw_log);
    assert!(r[1].raw_log.contains("one commit per block"));
    let c = net.state.commits.get(&(S1, net.addr(0))).unwrap();
    assert_eq!((c.count, c.commit_block_height), (7, S1 + 4));
}

#[test]
fn distribution_rules() {
    let mut net = Net::new(2, |_| {});
    net.run_to(S1);
    // No commit yet.
    assert_eq!(net.send(0, net.dist(0, S1, &[("a", 5)])).code, 1137);
    net.send(0, net.commit(0, S1, 5));
    assert_eq!(net.send(0, net.dist(0, S1, &[("a", 4)])).code, 1137); // sum mismatch
    assert_eq!(net.send(0, net.dist(0, S1, &[])).code, 1137); // empty
    assert_eq!(net.send(0, net.dist(0, S1 + 1, &[("a", 5)])).code, 1107);
    assert_eq!(net.send(0, net.dist(0, S1, &[("a", 2), ("b", 3)])).code, 0);
    // Accepted until the end of validation (no lower bound), then too late.
    net.run_to(S1 + 6);
    assert_eq!(net.send(0, net.dist(0, S1, &[("a", 5)])).code, 0); // at S+7
    // S+8: messages run before EndBlock's SetNewValidators, so the window check says late.
    assert_eq!(net.send(0, net.dist(0, S1, &[("a", 5)])).code, 1108);
    assert_eq!(net.send(0, net.dist(0, S1, &[("a", 5)])).code, 1128); // epoch 1 effective: no upcoming
    assert_eq!(net.state.distributions[&(S1, net.addr(0))].weights.len(), 1);
}

#[test]
fn validations_v2_skip_duplicates_and_bad_entries() {
    let mut net = Net::new(3, |_| {});
    net.run_to(S1 + 3);
    // Too early: before the validation exchange window [S+5, S+7].
    assert_eq!(net.send(0, net.votes(0, S1, &[(1, 1)])).code, 1108);
    net.run_to(S1 + 4);
    let mut m = net.votes(0, S1, &[(1, 5), (2, -1), (1, -7)]);
    if let Msg::SubmitPocValidationsV2 { validations, .. } = &mut m {
        validations.insert(
            0,
            poc_chain::msgs::ValidationPayloadV2 {
                participant_address: "gonka1bad".into(),
                validated_weight: 1,
            },
        );
    }
    assert_eq!(net.send(0, m).code, 0);
    assert_eq!(net.state.validations_v2.len(), 2);
    assert_eq!(
        net.state.validations_v2[&(S1, net.addr(1), net.addr(0))].validated_weight,
        5,
        "first vote kept"
    );
    // A second message cannot flip the vote.
    assert_eq!(net.send(0, net.votes(0, S1, &[(1, -1)])).code, 0);
    assert_eq!(
        net.state.validations_v2[&(S1, net.addr(1), net.addr(0))].validated_weight,
        5
    );
    assert_eq!(net.send(0, net.votes(0, S1 + 1, &[(1, -1)])).code, 1107);
    net.run_to(S1 + 7);
    assert_eq!(net.send(0, net.votes(0, S1, &[(2, 1)])).code, 1108);
    assert_eq!(net.send(0, net.votes(0, S1, &[(2, 1)])).code, 1128);
}

#[test]
fn blocked_validators_are_rejected() {
    let blocked = common::key("participant-0").address();
    let mut net = Net::new(2, |p| {
        p.participant_access_params.blocked_participant_addresses = vec![blocked]
    });
    net.run_to(S1 + 5);
    assert_eq!(net.send(0, net.votes(0, S1, &[(1, 1)])).code, 1155);
    assert_eq!(net.send(1, net.votes(1, S1, &[(0, 1)])).code, 0);
}

#[test]
fn v2_gate_in_the_three_modes() {
    // Full V1: V2 messages are not supported, V1 ones work.
    let mut net = Net::new(2, |p| p.poc_params.poc_v2_enabled = false);
    net.run_to(S1);
    assert_eq!(net.send(0, net.commit(0, S1, 5)).code, 1163);
    assert_eq!(net.send(0, net.dist(0, S1, &[("a", 5)])).code, 1163);
    assert_eq!(net.send(0, net.votes(0, S1, &[(1, 1)])).code, 1163);
    let batch = Msg::SubmitPocBatch {
        creator: net.addr(0),
        poc_stage_start_block_height: S1,
        batch_id: "b1".into(),
        nonces: vec![1, 2, 3],
        dist: vec![0.1, 0.2, 0.3],
        node_id: "n0".into(),
    };
    assert_eq!(net.send(0, batch.clone()).code, 0);
    assert!(!net.state.v2_gate());
    // Full V2: V1 messages are deprecated.
    let mut net2 = Net::new(2, |_| {});
    net2.run_to(S1);
    let mut b2 = batch.clone();
    if let Msg::SubmitPocBatch { creator, .. } = &mut b2 {
        *creator = net2.addr(0);
    }
    assert_eq!(net2.send(0, b2).code, 1161);
    assert!(net2.state.v2_gate());
    // Migration: gate open only while confirmation event 0 is active.
    let mut net3 = Net::new(2, |p| {
        p.poc_params.poc_v2_enabled = false;
        p.poc_params.confirmation_poc_v2_enabled = true;
    });
    assert!(!net3.state.v2_gate());
    net3.state.active_event = Some(poc_chain::confirmation::ConfirmationEvent {
        epoch_index: 2,
        event_sequence: 0,
        trigger_height: 10,
        generation_start_height: 11,
        phase: ConfirmationPhase::Generation,
        poc_seed_block_hash: String::new(),
    });
    assert!(net3.state.v2_gate());
    net3.state.active_event.as_mut().unwrap().event_sequence = 1;
    assert!(!net3.state.v2_gate());
}

#[test]
fn ante_rules_reject_in_checktx_only() {
    let mut net = Net::new(2, |_| {});
    net.run_to(S1 + 10);
    let t = net.sign(
        &net.keys[0].clone(),
        vec![TxMsg::Direct(net.commit(0, S1, 5))],
    );
    let (r, ok) = ante::check_tx(&net.state, &t, None, &FreshVerifier);
    assert!(ok.is_none());
    assert_eq!(r.code, 1128, "{r:?}");
    // Future stage height: "too early".
    let t = net.sign(
        &net.keys[0].clone(),
        vec![TxMsg::Direct(net.commit(0, S1 + 500, 5))],
    );
    assert_eq!(
        ante::check_tx(&net.state, &t, None, &FreshVerifier).0.code,
        1107
    );
}

#[test]
fn transactions_are_authenticated_and_bad_ones_change_nothing() {
    use cosmos_sdk_proto::cosmos::tx::v1beta1::{TxBody, TxRaw};
    use cosmos_sdk_proto::prost::Message;
    let mut net = Net::new(2, |_| {});
    net.run_to(S1);
    let k0 = net.keys[0].clone();
    let seed = net.seed(0, 1);
    let good = || TxMsg::Direct(seed.clone());
    let number = net.state.account_number(&k0.address()).unwrap();
    let at = |chain_id: &'static str, account_number: u64, sequence: u64| tx::SignerData {
        chain_id,
        account_number,
        sequence,
    };
    let body = |messages, timeout_height| TxBody {
        messages,
        timeout_height,
        ..TxBody::default()
    };
    let seed_any = || {
        let a = poc_chain::proto::to_any(&seed);
        cosmos_sdk_proto::Any {
            type_url: a.type_url,
            value: a.value,
        }
    };
    let mut tampered = tx::sign(&k0, &at("poc-test", number, 0), &[good()]);
    let mut raw = TxRaw::decode(tampered.as_slice()).unwrap();
    raw.signatures[0][10] ^= 1;
    tampered = raw.encode_to_vec();
    let mut two_sigs =
        TxRaw::decode(tx::sign(&k0, &at("poc-test", number, 0), &[good()]).as_slice()).unwrap();
    two_sigs.signatures.push(vec![0; 64]);
    let oversized = body(
        vec![cosmos_sdk_proto::Any {
            type_url: "/inference.inference.MsgSubmitSeed".into(),
            value: vec![0; tx::MAX_TX_BYTES],
        }],
        0,
    );
    let cases: Vec<(Vec<u8>, u32, &str)> = vec![
        (
            tx::sign(&k0, &at("other-chain", number, 0), &[good()]),
            4,
            "wrong chain id",
        ),
        (
            tx::sign(&k0, &at("poc-test", number + 1, 0), &[good()]),
            4,
            "wrong account number",
        ),
        (
            tx::sign(&k0, &at("poc-test", number, 7), &[good()]),
            32,
            "sequence ahead",
        ),
        (
            tx::sign(&net.keys[1], &at("poc-test", 1, 0), &[good()]),
            4,
            "signed by another key",
        ),
        (tampered, 4, "bad signature"),
        (two_sigs.encode_to_vec(), 4, "two signatures"),
        (
            tx::sign(&common::key("nobody"), &at("poc-test", 0, 0), &[good()]),
            9,
            "a key without an account",
        ),
        (
            tx::sign_body(
                &k0,
                &at("poc-test", number, 0),
                &body(
                    vec![cosmos_sdk_proto::Any {
                        type_url: "/cosmos.bank.v1beta1.MsgSend".into(),
                        value: vec![],
                    }],
                    0,
                ),
            ),
            2,
            "unknown type URL",
        ),
        (
            tx::sign_body(&k0, &at("poc-test", number, 0), &body(vec![seed_any()], 3)),
            30,
            "timeout height passed",
        ),
        (
            tx::sign_body(&k0, &at("poc-test", number, 0), &oversized),
            21,
            "oversized",
        ),
        (b"\x0a\xff\xff garbage".to_vec(), 2, "garbage bytes"),
        (Vec::new(), 2, "empty"),
    ];
    for (bytes, code, what) in cases {
        let before = net.state.clone();
        let r = net.block(vec![bytes]).tx_results.remove(0);
        assert_eq!(r.code, code, "{what}: {r:?}");
        assert_eq!(r.codespace, "sdk", "{what}");
        assert!(!r.raw_log.is_empty());
        assert_eq!(net.state.seeds, before.seeds, "{what}");
        assert_eq!(net.state.sequences, before.sequences, "{what}");
        assert_eq!(net.state.account_numbers, before.account_numbers, "{what}");
    }
    // Finally a good one works, with sequence 0 still unused, and a timeout height
    // still ahead is fine.
    let ok = tx::sign_body(
        &k0,
        &at("poc-test", number, 0),
        &body(vec![seed_any()], net.h() as u64 + 5),
    );
    let r = net.block(vec![ok.clone()]).tx_results.remove(0);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(net.state.sequences[&net.addr(0)], 1);
    // Replaying the same bytes fails on the sequence.
    assert_eq!(net.block(vec![ok]).tx_results[0].code, 32);
}

#[test]
fn operational_key_acts_through_msg_exec_after_a_grant() {
    let mut net = Net::new(2, |_| {});
    let warm = common::key("warm-0");
    let exec = |net: &Net| TxMsg::Exec {
        grantee: warm.address(),
        msgs: vec![net.commit(0, S1, 9)],
    };
    net.run_to(S1);
    // Before any grant the key has no account, so nothing it signs is accepted.
    assert_eq!(net.send_with(&warm, exec(&net)).code, 9, "no grant yet");
    assert_eq!(
        net.send_with(&warm, TxMsg::Direct(net.commit(0, S1, 9)))
            .code,
        9
    );
    let grants: Vec<Msg> = OPERATIONAL_PERMISSIONS
        .iter()
        .map(|t| Msg::Grant {
            granter: net.addr(0),
            grantee: warm.address(),
            msg_type_url: t.to_string(),
        })
        .collect();
    let t = net.sign(
        &net.keys[0].clone(),
        grants.into_iter().map(TxMsg::Direct).collect(),
    );
    assert_eq!(net.block(vec![t]).tx_results[0].code, 0);
    assert!(net.state.is_granted(
        &net.addr(0),
        &warm.address(),
        "/inference.inference.MsgPoCV2StoreCommit"
    ));
    assert!(
        net.state.account_number(&warm.address()).is_some(),
        "the grant opened its account"
    );
    assert_eq!(net.send_with(&warm, exec(&net)).code, 0);
    assert_eq!(net.state.commits[&(S1, net.addr(0))].count, 9);
    // Not granted for participant 1.
    let other = TxMsg::Exec {
        grantee: warm.address(),
        msgs: vec![net.commit(1, S1, 9)],
    };
    assert_eq!(net.send_with(&warm, other).code, 4);
    // Revoke.
    let r = net.send(
        0,
        Msg::Revoke {
            granter: net.addr(0),
            grantee: warm.address(),
            msg_type_url: "/inference.inference.MsgPoCV2StoreCommit".into(),
        },
    );
    assert_eq!(r.code, 0);
    assert_eq!(net.send_with(&warm, exec(&net)).code, 4);
}

#[test]
fn multi_message_transactions_are_atomic() {
    let mut net = Net::new(2, |_| {});
    net.run_to(S1);
    let t = net.sign(
        &net.keys[0].clone(),
        vec![
            TxMsg::Direct(net.commit(0, S1, 5)),
            TxMsg::Direct(net.dist(0, S1, &[("a", 4)])),
        ],
    );
    let r = net.block(vec![t]).tx_results.remove(0);
    assert_eq!(r.code, 1137);
    assert!(net.state.commits.is_empty(), "the commit was rolled back");
    assert_eq!(
        net.state.sequences[&net.addr(0)],
        1,
        "the sequence is still used"
    );
}

#[test]
fn governance_update_params_and_grace_epoch() {
    let mut net = Net::new(2, |p| p.poc_params.poc_v2_enabled = false);
    let mut params = net.state.params.clone();
    params.poc_params.poc_v2_enabled = true;
    let upd = |a: String, p: &poc_chain::params::Params| Msg::UpdateParams {
        authority: a,
        params: Box::new(p.clone()),
    };
    // Only the authority.
    assert_eq!(net.send(0, upd(net.addr(0), &params)).code, 1101);
    let auth = net.authority.clone();
    let mut bad = params.clone();
    bad.epoch_params.epoch_length = 0;
    assert_eq!(
        net.send_with(&auth, TxMsg::Direct(upd(auth.address(), &bad)))
            .code,
        18
    );
    assert_eq!(
        net.send_with(&auth, TxMsg::Direct(upd(auth.address(), &params)))
            .code,
        0
    );
    assert!(net.state.params.poc_params.poc_v2_enabled);
    assert_eq!(net.state.poc_v2_enabled_epoch, Some(0));
    // Recorded once only.
    params.poc_params.poc_v2_enabled = false;
    net.send_with(&auth, TxMsg::Direct(upd(auth.address(), &params)));
    params.poc_params.poc_v2_enabled = true;
    net.send_with(&auth, TxMsg::Direct(upd(auth.address(), &params)));
    assert_eq!(net.state.poc_v2_enabled_epoch, Some(0));
}

#[test]
fn v1_round_counts_unique_nonces_and_majority_votes() {
    let mut net = Net::new(3, |p| {
        p.poc_params.poc_v2_enabled = false;
        p.poc_params.weight_scale_factor = Some(Decimal::new(5, -1));
    });
    net.run_to(S1 - 1);
    net.send_many((0..3).map(|i| (i, net.seed(i, 1))).collect());
    let batch = |net: &Net, i: usize, id: &str, nonces: Vec<i64>| {
        (
            i,
            Msg::SubmitPocBatch {
                creator: net.addr(i),
                poc_stage_start_block_height: S1,
                batch_id: id.into(),
                dist: vec![0.5; nonces.len()],
                nonces,
                node_id: "n0".into(),
            },
        )
    };
    let r = net.send_many(vec![
        batch(&net, 0, "a", (0..10).collect()),
        batch(&net, 0, "b", (5..15).collect()), // 5 new
        batch(&net, 1, "a", (0..7).collect()),
        batch(&net, 2, "a", (0..9).collect()),
    ]);
    assert!(r.iter().all(|r| r.code == 0), "{r:?}");
    net.run_to(S1 + 4);
    let val = |net: &Net, v: usize, p: usize, fraud: bool| {
        (
            v,
            Msg::SubmitPocValidation {
                creator: net.addr(v),
                participant_address: net.addr(p),
                poc_stage_start_block_height: S1,
                fraud_detected: fraud,
            },
        )
    };
    let mut msgs = vec![];
    for v in 0..3 {
        for p in 0..3 {
            msgs.push(val(&net, v, p, p == 2 && v != 2));
        }
    }
    let r = net.send_many(msgs);
    assert!(r.iter().all(|r| r.code == 0), "{r:?}");
    // A second vote by the same validator is an error in V1 (1160).
    let (v, m) = val(&net, 0, 1, true);
    assert_eq!(net.send(v, m).code, 1160);
    net.run_to(S1 + 7);
    let g = net.state.epoch_groups.get(&1).unwrap();
    // 0: trunc(10×0.5)+trunc(5×0.5) = 5+2 = 7; 1: trunc(3.5) = 3; 2: rejected (2 of 3 say fraud).
    assert_eq!(g.members.get(&net.addr(0)), Some(&7));
    assert_eq!(g.members.get(&net.addr(1)), Some(&3));
    assert_eq!(g.members.get(&net.addr(2)), None);
}

/// Runs regular V2 PoCs until epoch 2 is effective and returns the net with every
/// participant at weight `counts[i]`.
fn net_in_epoch_2(counts: &[u32], f: impl FnOnce(&mut poc_chain::params::Params)) -> Net {
    let mut net = Net::new(counts.len(), |p| {
        p.confirmation_poc_params.expected_confirmations_per_epoch = 1000;
        p.confirmation_poc_params.alpha_threshold = Some(Decimal::new(5, -1));
        f(p);
    });
    net.v2_round(counts, |_, _| 1);
    net.block(vec![]);
    net.v2_round(counts, |_, _| 1);
    net.block(vec![]);
    assert_eq!(net.state.effective_epoch.index, 2);
    net
}

/// Runs a confirmation event: each participant commits `confirm[i]` and everyone votes
/// valid. Returns the trigger height.
fn run_confirmation(net: &mut Net, confirm: &[u32]) -> i64 {
    // The trigger fires in the first block of the window (N = 1000 ≫ L), possibly
    // already during the caller's last block.
    let ev = loop {
        if let Some(ev) = net.state.active_event.clone() {
            break ev;
        }
        net.block(vec![]);
        assert!(net.h() < 400, "no confirmation event triggered");
    };
    assert_eq!(ev.epoch_index, 2);
    let ep = net.state.params.epoch_params.clone();
    let t = ev.trigger_height;
    assert_eq!(ev.generation_start_height, t + 1);
    if net.h() < ev.generation_start_height {
        assert_eq!(ev.phase, ConfirmationPhase::GracePeriod);
        net.run_to(ev.generation_start_height);
    }
    assert_eq!(net.h(), ev.generation_start_height);
    let ev = net.state.active_event.clone().unwrap();
    assert_eq!(ev.phase, ConfirmationPhase::Generation);
    // The seed hash is the hash of the block that moved the event to GENERATION.
    assert_eq!(ev.poc_seed_block_hash, hex::encode(net.prev));
    let n = confirm.len();
    let r = net.send_many(
        (0..n)
            .filter(|i| confirm[*i] > 0)
            .map(|i| (i, net.commit(i, t, confirm[i])))
            .collect(),
    );
    assert!(r.iter().all(|r| r.code == 0), "{r:?}");
    let r = net.send_many(
        (0..n)
            .filter(|i| confirm[*i] > 0)
            .map(|i| (i, net.dist(i, t, &[("n0", confirm[i])])))
            .collect(),
    );
    assert!(r.iter().all(|r| r.code == 0), "{r:?}");
    // The event enters VALIDATION in the EndBlock of ValidationStart, so votes land from
    // the next block on.
    net.run_to(ev.validation_start(&ep));
    let r = net.send_many(
        (0..n)
            .map(|v| {
                (
                    v,
                    net.votes(
                        v,
                        t,
                        &(0..n)
                            .filter(|p| confirm[*p] > 0)
                            .map(|p| (p, 1))
                            .collect::<Vec<_>>(),
                    ),
                )
            })
            .collect(),
    );
    assert!(r.iter().all(|r| r.code == 0), "{r:?}");
    assert_eq!(
        net.state.active_event.as_ref().unwrap().phase,
        ConfirmationPhase::Validation
    );
    net.run_to(ev.validation_end(&ep) + 1);
    assert_eq!(
        net.state.active_event.as_ref().unwrap().phase,
        ConfirmationPhase::Completed
    );
    net.run_to(ev.validation_end(&ep) + 1 + ep.set_new_validators_delay);
    // The event is cleared; with N ≫ L the next one may trigger in the same block.
    assert!(
        net.state
            .active_event
            .as_ref()
            .is_none_or(|e| e.event_sequence == ev.event_sequence + 1)
    );
    assert_eq!(
        net.state.confirmation_events[&(2, ev.event_sequence)].phase,
        ConfirmationPhase::Completed
    );
    t
}

#[test]
fn confirmation_pass_keeps_weights() {
    let mut net = net_in_epoch_2(&[100, 100, 100], |_| {});
    run_confirmation(&mut net, &[100, 120, 100]);
    let g = &net.state.epoch_groups[&2];
    assert!(
        g.confirmation_weights.values().all(|w| *w == 100),
        "{:?}",
        g.confirmation_weights
    );
    assert_eq!(g.members.len(), 3);
    for i in 0..3 {
        assert_eq!(
            net.state.participants[&net.addr(i)].confirmation_poc_ratio,
            "1"
        );
        assert_eq!(
            net.state.participants[&net.addr(i)].status,
            ParticipantStatus::Active
        );
    }
}

#[test]
fn confirmation_fail_caps_weight_and_deactivates_below_alpha() {
    let mut net = net_in_epoch_2(&[100, 100, 100, 100], |_| {});
    // 1 confirms 80 of 100 (capped, ratio 0.88 > alpha 0.5); 2 confirms 30 (ratio 0.33 <
    // alpha → inactive); 3 commits nothing (0).
    run_confirmation(&mut net, &[100, 80, 30, 0]);
    let g = &net.state.epoch_groups[&2];
    assert_eq!(g.confirmation_weights[&net.addr(0)], 100);
    assert_eq!(g.confirmation_weights[&net.addr(1)], 80);
    assert_eq!(g.confirmation_weights[&net.addr(2)], 30);
    assert_eq!(g.confirmation_weights[&net.addr(3)], 0);
    let p1 = &net.state.participants[&net.addr(1)];
    // (80/100)/0.909 = 0.8 / 0.909 → 16 places.
    assert_eq!(p1.confirmation_poc_ratio, "0.8800880088008801");
    assert_eq!(p1.status, ParticipantStatus::Active);
    for i in [2, 3] {
        let p = &net.state.participants[&net.addr(i)];
        assert_eq!(p.status, ParticipantStatus::Inactive, "{i}");
        assert_eq!(p.status_reason, "failed_confirmation_poc");
        assert!(!g.members.contains_key(&net.addr(i)));
    }
}

#[test]
fn grace_epoch_makes_confirmation_a_dry_run() {
    // V2 switched on by governance during epoch 2 → epoch 2 is the grace epoch.
    let mut net = net_in_epoch_2(&[100, 100], |_| {});
    let auth = net.authority.clone();
    let mut params = net.state.params.clone();
    params.poc_params.poc_v2_enabled = false;
    net.send_with(
        &auth,
        TxMsg::Direct(Msg::UpdateParams {
            authority: auth.address(),
            params: Box::new(params.clone()),
        }),
    );
    net.state.poc_v2_enabled_epoch = None; // as if V2 had never been on
    params.poc_params.poc_v2_enabled = true;
    net.send_with(
        &auth,
        TxMsg::Direct(Msg::UpdateParams {
            authority: auth.address(),
            params: Box::new(params),
        }),
    );
    assert_eq!(net.state.poc_v2_enabled_epoch, Some(2));
    run_confirmation(&mut net, &[100, 10]);
    let g = &net.state.epoch_groups[&2];
    assert_eq!(
        g.confirmation_weights[&net.addr(1)],
        100,
        "no punishment in the grace epoch"
    );
    assert_eq!(
        net.state.participants[&net.addr(1)].status,
        ParticipantStatus::Active
    );
}

#[test]
fn migration_tracks_event_zero_with_v2_in_dry_run() {
    // Regular PoC in V1 is not needed for this check: start in V2 to get weights, then
    // switch to migration mode (v2 off, confirmation v2 on).
    let mut net = net_in_epoch_2(&[100, 100], |_| {});
    let auth = net.authority.clone();
    let mut params = net.state.params.clone();
    params.poc_params.poc_v2_enabled = false;
    params.poc_params.confirmation_poc_v2_enabled = true;
    net.send_with(
        &auth,
        TxMsg::Direct(Msg::UpdateParams {
            authority: auth.address(),
            params: Box::new(params),
        }),
    );
    let t = run_confirmation(&mut net, &[100, 10]);
    // Recorded: the event and the V2 commits keyed by its trigger height; weights untouched.
    assert_eq!(net.state.confirmation_events[&(2, 0)].trigger_height, t);
    assert_eq!(net.state.commits[&(t, net.addr(1))].count, 10);
    assert_eq!(
        net.state.epoch_groups[&2].confirmation_weights[&net.addr(1)],
        100
    );
}

#[test]
fn confirmation_trigger_is_a_function_of_the_block_hash() {
    // Two chains with identical inputs trigger at identical heights; the events carry
    // the same seed hash.
    let mut a = net_in_epoch_2(&[100, 100], |p| {
        p.confirmation_poc_params.expected_confirmations_per_epoch = 3
    });
    let mut b = net_in_epoch_2(&[100, 100], |p| {
        p.confirmation_poc_params.expected_confirmations_per_epoch = 3
    });
    for _ in 0..60 {
        a.block(vec![]);
        b.block(vec![]);
    }
    assert_eq!(a.state.confirmation_events, b.state.confirmation_events);
    assert_eq!(a.state.app_hash, b.state.app_hash);
}

#[test]
fn handler_level_checks_below_the_transaction_layer() {
    use poc_chain::confirmation::ConfirmationEvent;
    use poc_chain::state::BlockContext;
    // V2: an invalid creator is rejected by the handler (1164) once the window passes.
    let mut net = Net::new(2, |_| {});
    net.run_to(S1);
    let ctx = BlockContext {
        height: S1 + 1,
        time: 0,
        hash: [0; 32],
    };
    let bad = Msg::PocV2StoreCommit {
        creator: "gonka1invalid".into(),
        poc_stage_start_block_height: S1,
        count: 1,
        root_hash: vec![0; 32],
    };
    assert_eq!(net.state.deliver(&ctx, &bad).unwrap_err().kind.code(), 1164);
    // V1 confirmation batches are keyed by the trigger height, only in GENERATION.
    let mut net = Net::new(2, |p| p.poc_params.poc_v2_enabled = false);
    net.run_to(20);
    let ep = net.state.params.epoch_params.clone();
    let mut ev = ConfirmationEvent {
        epoch_index: 2,
        event_sequence: 1,
        trigger_height: 10,
        generation_start_height: 11,
        phase: ConfirmationPhase::Generation,
        poc_seed_block_hash: String::new(),
    };
    net.state.active_event = Some(ev.clone());
    let a0 = net.addr(0);
    let batch = |start: i64, id: &str| Msg::SubmitPocBatch {
        creator: a0.clone(),
        poc_stage_start_block_height: start,
        batch_id: id.into(),
        nonces: vec![1],
        dist: vec![0.5],
        node_id: "n".into(),
    };
    let at = |h: i64| BlockContext {
        height: h,
        time: 0,
        hash: [0; 32],
    };
    net.state.deliver(&at(12), &batch(10, "a")).unwrap();
    assert_eq!(
        net.state.batches_v1[&(10, net.addr(0), "a".into())].received_at_block_height,
        12
    );
    assert_eq!(
        net.state
            .deliver(&at(12), &batch(11, "b"))
            .unwrap_err()
            .kind
            .code(),
        1107
    );
    assert_eq!(
        net.state
            .deliver(&at(ev.exchange_end(&ep) + 1), &batch(10, "c"))
            .unwrap_err()
            .kind
            .code(),
        1108
    );
    // Empty node id (1145) and blocked creators (1155).
    let mut m = batch(10, "d");
    if let Msg::SubmitPocBatch { node_id, .. } = &mut m {
        node_id.clear();
    }
    assert_eq!(
        net.state.deliver(&at(12), &m).unwrap_err().kind.code(),
        1145
    );
    net.state
        .params
        .participant_access_params
        .blocked_participant_addresses = vec![net.addr(0)];
    assert_eq!(
        net.state
            .deliver(&at(12), &batch(10, "e"))
            .unwrap_err()
            .kind
            .code(),
        1155
    );
    net.state
        .params
        .participant_access_params
        .blocked_participant_addresses
        .clear();
    // V1 validations in the confirmation VALIDATION window.
    ev.phase = ConfirmationPhase::Validation;
    net.state.active_event = Some(ev.clone());
    let val = Msg::SubmitPocValidation {
        creator: net.addr(1),
        participant_address: net.addr(0),
        poc_stage_start_block_height: 10,
        fraud_detected: false,
    };
    assert_eq!(
        net.state
            .deliver(&at(ev.validation_start(&ep) - 1), &val)
            .unwrap_err()
            .kind
            .code(),
        1108
    );
    net.state
        .deliver(&at(ev.validation_start(&ep)), &val)
        .unwrap();
    assert_eq!(
        net.state
            .deliver(&at(ev.validation_start(&ep)), &val)
            .unwrap_err()
            .kind
            .code(),
        1160
    );
    // A malformed batch fails ValidateBasic.
    let mut m = batch(10, "f");
    if let Msg::SubmitPocBatch { dist, .. } = &mut m {
        dist[0] = f64::NAN;
    }
    assert_eq!(net.state.deliver(&at(12), &m).unwrap_err().kind.code(), 18);
}
