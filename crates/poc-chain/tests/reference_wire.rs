//! Bytes made by an implementation we did not write: `fixtures/reference_params.hex` is a
//! `MsgUpdateParams` encoded by Google's protobuf runtime from the reference's field
//! numbers (`scripts/wire/make_params_fixture.py`, `scripts/wire/params.proto`).

use poc_chain::decimal::Decimal;
use poc_chain::msgs::Msg;
use poc_chain::proto::{Any, from_any, to_any};

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
