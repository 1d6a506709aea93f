use super::*;

fn w(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|(a, b)| (a.to_string(), *b)).collect()
}

fn votes(pairs: &[(&str, i64)]) -> Vec<(String, i64)> {
    pairs.iter().map(|(a, b)| (a.to_string(), *b)).collect()
}

const NO_GUARDIANS: VoteRules = VoteRules {
    guardians: None,
    slots: None,
};

#[test]
fn two_thirds_of_all_weight_with_abstentions_counting_against() {
    let weights = w(&[("a", 10), ("b", 10), ("c", 10)]);
    // 20 of 30: not > floor(30·2/3) = 20 → undecided → no guardians → reject.
    assert!(!poc_validated(
        "p",
        &weights,
        &votes(&[("a", 200), ("b", 200)]),
        &NO_GUARDIANS
    ));
    assert!(poc_validated(
        "p",
        &weights,
        &votes(&[("a", 200), ("b", 200), ("c", 1)]),
        &NO_GUARDIANS
    ));
    // An abstaining heavy validator blocks acceptance.
    let weights = w(&[("a", 10), ("b", 10), ("c", 100)]);
    assert!(!poc_validated(
        "p",
        &weights,
        &votes(&[("a", 1), ("b", 1)]),
        &NO_GUARDIANS
    ));
    // Invalid votes (≤ 0) with > 2/3.
    let weights = w(&[("a", 1), ("b", 10)]);
    assert!(!poc_validated(
        "p",
        &weights,
        &votes(&[("b", -1), ("a", 5)]),
        &NO_GUARDIANS
    ));
    assert!(poc_validated(
        "p",
        &weights,
        &votes(&[("b", 5)]),
        &NO_GUARDIANS
    ));
    assert!(!poc_validated(
        "p",
        &weights,
        &votes(&[("b", 0)]),
        &NO_GUARDIANS
    ));
    // Empty weight map: bootstrap acceptance.
    assert!(poc_validated("p", &BTreeMap::new(), &[], &NO_GUARDIANS));
}

#[test]
fn guardian_tie_break() {
    let weights = w(&[("a", 10), ("b", 10), ("g", 10)]);
    let rules = VoteRules {
        guardians: Some(vec!["g".into()]),
        slots: None,
    };
    // Split 10 valid / 10 invalid: undecided, guardian valid → accept.
    assert!(poc_validated(
        "p",
        &weights,
        &votes(&[("a", 1), ("b", -1), ("g", 1)]),
        &rules
    ));
    // Guardian invalid → reject.
    assert!(!poc_validated(
        "p",
        &weights,
        &votes(&[("a", 1), ("g", -1)]),
        &rules
    ));
    // No guardian vote → reject.
    assert!(!poc_validated("p", &weights, &votes(&[("a", 1)]), &rules));
    // Two guardians split → reject.
    let weights = w(&[("a", 10), ("g", 10), ("h", 10), ("x", 30)]);
    let rules = VoteRules {
        guardians: Some(vec!["g".into(), "h".into()]),
        slots: None,
    };
    assert!(!poc_validated(
        "p",
        &weights,
        &votes(&[("a", 1), ("g", 1), ("h", -1)]),
        &rules
    ));
    assert!(poc_validated(
        "p",
        &weights,
        &votes(&[("a", 1), ("g", 1), ("h", 1)]),
        &rules
    ));
    // Empty guardian list behaves like disabled.
    let rules = VoteRules {
        guardians: Some(vec![]),
        slots: None,
    };
    assert!(!poc_validated(
        "p",
        &w(&[("a", 1), ("b", 1)]),
        &votes(&[("a", 1)]),
        &rules
    ));
}

#[test]
fn slot_votes_count_per_slot() {
    let snap = vec![("a".to_string(), 1), ("b".to_string(), 1)];
    let rules = VoteRules {
        guardians: None,
        slots: Some(("00ff".into(), snap.clone(), 6)),
    };
    let weights = w(&[("a", 1), ("b", 1)]);
    let assigned = slots::assign("00ff", "p", &snap, 6);
    let a_slots = assigned.iter().filter(|v| *v == "a").count() as i64;
    // Only "a" votes valid: accepted iff a holds more than floor(6·2/3)=4 slots.
    assert_eq!(
        poc_validated("p", &weights, &votes(&[("a", 1)]), &rules),
        a_slots > 4
    );
    assert!(poc_validated(
        "p",
        &weights,
        &votes(&[("a", 1), ("b", 1)]),
        &rules
    ));
    assert!(!poc_validated(
        "p",
        &weights,
        &votes(&[("a", -1), ("b", -1)]),
        &rules
    ));
}

#[test]
fn v1_simple_majority() {
    let weights = w(&[("a", 10), ("b", 10), ("c", 1)]);
    assert!(poc_validated_v1(
        &weights,
        &[("a".into(), false), ("c".into(), false)]
    ));
    assert!(!poc_validated_v1(
        &weights,
        &[("a".into(), false), ("b".into(), true)]
    ));
    assert!(!poc_validated_v1(&weights, &[("a".into(), false)]));
}

#[test]
fn time_factor_uses_shopspring_division_then_18_places() {
    let p = EpochParams {
        poc_stage_duration: 5,
        poc_exchange_duration: 2,
        ..EpochParams::default()
    };
    let snap = |g, e| ValidationSnapshot {
        poc_stage_start_height: 1,
        snapshot_height: 1,
        app_hash: [0; 32],
        validator_weights: vec![],
        generation_start_timestamp: g,
        exchange_end_timestamp: e,
    };
    // 7 × 5.41 / 30 = 1.262333… → 16 places 1.2623333333333333.
    assert_eq!(
        time_factor(&snap(100, 130), &p).to_fixed_string(),
        "1.262333333333333300"
    );
    assert_eq!(time_factor(&snap(0, 130), &p), LegacyDec::one());
    assert_eq!(time_factor(&snap(130, 130), &p), LegacyDec::one());
    assert_eq!(
        time_factor(&snap(100, 100 + 3787), &p).to_fixed_string(),
        "0.010000000000000000"
    );
}

#[test]
fn poc_slot_allocation_never_takes_every_node() {
    let mk = |ids: &[(&str, i64)]| ActiveParticipant {
        index: "p".into(),
        validator_key: "k".into(),
        weight: 0,
        inference_url: String::new(),
        seed: String::new(),
        ml_nodes: ids
            .iter()
            .map(|(i, w)| MlNodeAllocation {
                node_id: i.to_string(),
                poc_weight: *w,
                poc_slot: false,
            })
            .collect(),
    };
    let mut ps = vec![mk(&[("n1", 5)]), mk(&[("a", 1), ("b", 9), ("c", 5)])];
    allocate_poc_slots(&mut ps, &Dec::parse("0.5").unwrap());
    assert!(!ps[0].ml_nodes[0].poc_slot);
    let slots: Vec<bool> = ps[1].ml_nodes.iter().map(|n| n.poc_slot).collect();
    assert_eq!(slots, vec![false, true, false]); // floor(1.5) = 1: the heaviest, "b"
    allocate_poc_slots(&mut ps, &Dec::parse("1").unwrap());
    assert_eq!(ps[1].ml_nodes.iter().filter(|n| n.poc_slot).count(), 2);
}
