//! Bytes made by implementations we did not write. `fixtures/reference_params.hex` is a
//! `MsgUpdateParams` encoded by Google's protobuf runtime from the reference's field
//! numbers (`scripts/wire/make_params_fixture.py`, `scripts/wire/params.proto`);
//! `fixtures/reference_tx.txt` holds a Cosmos SDK transaction built and signed with
//! cosmpy's protobuf definitions and signer (`scripts/wire/make_tx_fixture.py`).

mod common;

use poc_chain::decimal::Decimal;
use poc_chain::msgs::Msg;
use poc_chain::proto::{Any, from_any, to_any};
use poc_chain::tx::{self, SignerData, TxMsg};

fn fixture() -> Vec<u8> {
    hex::decode(include_str!("fixtures/reference_params.hex").trim()).unwrap()
}

#[test]
fn a_reference_update_params_is_read_field_for_field_and_written_back_unchanged() {
    let bytes = fixture();
    let any = Any {
        type_url: "/inference.inference.MsgUpdateParams".into(),
        value: bytes.clone(),
    };
    let msg = from_any(&any).unwrap();
    let Msg::UpdateParams { authority, params } = &msg else {
        panic!("{msg:?}")
    };
    assert_eq!(authority, "gonka10dahk7mm0dahk7mm0dahk7mm0dahk7mmz9m0f7");
    let e = &params.epoch_params;
    assert_eq!(
        (e.epoch_length, e.poc_stage_duration, e.poc_validation_delay),
        (17280, 60, 2)
    );
    assert_eq!(
        (e.poc_validation_duration, e.inference_validation_cutoff),
        (20, 20)
    );
    assert_eq!(e.poc_slot_allocation, Some(Decimal::new(5, -1)));
    assert_eq!(
        (
            e.default_unit_of_compute_price,
            e.confirmation_poc_safety_window
        ),
        (100, 7)
    );
    let pp = &params.poc_params;
    assert_eq!((pp.default_difficulty, pp.validation_sample_size), (5, 200));
    assert_eq!(pp.weight_scale_factor, Some(Decimal::new(3593, -4)));
    assert_eq!(pp.model_id, "Qwen/Qwen3-235B-A22B-Instruct-2507-FP8");
    assert_eq!(pp.seq_len, 1024);
    assert!(pp.poc_v2_enabled && pp.confirmation_poc_v2_enabled && pp.poc_normalization_enabled);
    let st = pp.stat_test.as_ref().unwrap();
    assert_eq!(st.dist_threshold, Some(Decimal::new(2, -1)));
    assert_eq!(st.p_mismatch, Some(Decimal::new(1, -1)));
    assert_eq!(st.p_value_threshold, Some(Decimal::new(5, -2)));
    // Field 9, where our old layout had the access section at 5 and confirmation at 4.
    let c = &params.confirmation_poc_params;
    assert_eq!(c.expected_confirmations_per_epoch, 1);
    assert_eq!(c.alpha_threshold, Some(Decimal::new(5, -1)));
    assert_eq!(c.upgrade_protection_window, 500);
    let g = &params.genesis_guardian_params;
    assert_eq!(
        g.guardian_addresses,
        ["gonkavaloper1qqqsyqcyq5rqwzqfpg9scrgwpugpzysn0r8rpk"]
    );
    assert_eq!(
        (g.network_maturity_threshold, g.network_maturity_min_height),
        (10_000_000, 3_000_000)
    );
    let a = &params.participant_access_params;
    assert_eq!(
        a.blocked_participant_addresses,
        ["gonka1qgpqyqszqgpqyqszqgpqyqszqgpqyqsznzq9pg"]
    );
    assert!(a.use_participant_allowlist);
    assert_eq!(a.new_participant_registration_start_height, 12);
    assert_eq!(a.participant_allowlist_until_block_height, 4_000_000);
    // Sections this chain does not interpret are kept, by name.
    let carried: Vec<&str> = params.carried.0.keys().map(String::as_str).collect();
    assert_eq!(
        carried,
        [
            "collateral_params",
            "developer_access_params",
            "poc_params.model_params",
            "tokenomics_params",
            "validation_params",
        ]
    );
    // And written back, the message is the same bytes.
    assert_eq!(hex::encode(to_any(&msg).value), hex::encode(&bytes));
    // Through the JSON the chain stores and serves, too.
    let json = serde_json::to_string(&**params).unwrap();
    let back: poc_chain::params::Params = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, &**params);
}

fn tx_fixture(name: &str) -> String {
    include_str!("fixtures/reference_tx.txt")
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} missing from the fixture"))
        .to_owned()
}

/// A `TxRaw` signed by cosmpy is accepted as it is, and our signer, given the same
/// messages, account and sequence, writes the very same bytes: the same body, auth info,
/// sign doc and (RFC 6979) signature, so what we sign decodes and verifies by the Cosmos
/// rule wherever that transaction does.
#[test]
fn a_cosmos_sdk_transaction_is_accepted_and_ours_are_the_same_bytes() {
    let key = common::key("participant-0");
    let warm = common::key("warm-0");
    assert_eq!(tx_fixture("granter"), key.address(), "address derivation");
    assert_eq!(tx_fixture("grantee"), warm.address());
    let commit = Msg::PocV2StoreCommit {
        creator: key.address(),
        poc_stage_start_block_height: 983_040,
        count: 1234,
        root_hash: (0..32).collect(),
    };
    assert_eq!(
        hex::encode(to_any(&commit).value),
        tx_fixture("store_commit_msg")
    );

    let theirs = hex::decode(tx_fixture("grant_tx")).unwrap();
    let grant = |t: &str| {
        TxMsg::Direct(Msg::Grant {
            granter: key.address(),
            grantee: warm.address(),
            msg_type_url: t.into(),
        })
    };
    let ours = tx::sign(
        &key,
        &SignerData {
            chain_id: "poc-test",
            account_number: 0,
            sequence: 0,
        },
        &[
            grant("/inference.inference.MsgPoCV2StoreCommit"),
            grant("/inference.inference.MsgMLNodeWeightDistribution"),
        ],
    );
    assert_eq!(hex::encode(&ours), hex::encode(&theirs));

    let mut net = common::Net::new(2, |_| {});
    assert_eq!(net.state.account_number(&key.address()), Some(0));
    let r = net.block(vec![theirs]).tx_results.remove(0);
    assert_eq!(r.code, 0, "{r:?}");
    for t in [
        "/inference.inference.MsgPoCV2StoreCommit",
        "/inference.inference.MsgMLNodeWeightDistribution",
    ] {
        assert!(net.state.is_granted(&key.address(), &warm.address(), t));
    }
    assert_eq!(net.state.sequences[&key.address()], 1);
    assert!(net.state.account_number(&warm.address()).is_some());
}
