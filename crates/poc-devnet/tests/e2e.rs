//! End-to-end scenarios on a devnet (real chain, ML and API nodes over loopback HTTP),
//! mirroring the reference's integration tests (`docs/protocol/chain-and-api.md` §8.1). They take tens
//! of seconds each and run in CI.

use std::time::Duration;

use poc_devnet::{Devnet, DevnetOptions};

/// The scenarios share the machine's cores; running two devnets at once would starve
/// both, so they take turns.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn options(home: &std::path::Path) -> DevnetOptions {
    DevnetOptions {
        home: home.to_path_buf(),
        progress: false,
        block_time: Duration::from_millis(300),
        validation_blocks: 14,
        sample_size: 20,
        ..DevnetOptions::default()
    }
}

/// v2 mode: store commits on chain, the proof API works, the all-commits query, weights;
/// one cheater of each kind rejected, the honest accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v2_round_rejects_every_kind_of_cheater() {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut net = Devnet::start(DevnetOptions {
        participants: 5,
        cheaters: 3,
        epochs: 1,
        ..options(dir.path())
    })
    .await
    .unwrap();
    let report = net.run().await.unwrap();
    eprintln!("{}", poc_devnet::table(&report));
    assert!(
        report.ok,
        "every honest participant accepted, every cheater rejected"
    );
    let roles: Vec<&str> = report
        .participants
        .iter()
        .map(|p| p.role.as_str())
        .collect();
    assert_eq!(
        roles,
        [
            "honest",
            "honest",
            "rounded model",
            "random vectors",
            "inflated count"
        ]
    );
    for p in &report.participants {
        assert!(p.committed_count > 0, "{}: commits on chain", p.role);
        assert_eq!(
            p.distribution.values().sum::<u32>(),
            p.committed_count,
            "{}",
            p.role
        );
        if p.role == "honest" {
            assert_eq!(p.weight, i64::from(p.committed_count));
            assert!(p.votes_valid > p.votes_invalid);
        } else {
            assert_eq!(p.weight, 0);
            assert!(
                p.votes_invalid >= 4,
                "{}: every honest validator voted invalid",
                p.role
            );
        }
    }
    // The inflated count shows: about twice the honest count.
    assert!(
        report.participants[4].committed_count > report.participants[0].committed_count * 3 / 2
    );
    let stage = report.stages[0].stage;
    let all = net.client.all_commits(stage).await.unwrap();
    assert_eq!(all.commits.len(), 5);
    assert!(
        all.commits
            .iter()
            .all(|c| c.hex_pub_key.len() == 66 && c.count > 0)
    );
    // The artifact-state API of a participant agrees with its commit.
    let state: serde_json::Value = reqwest::get(format!(
        "{}/v1/poc/artifacts/state?height={stage}",
        net.public_url(0)
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert!(state["count"].as_u64().unwrap() >= u64::from(report.participants[0].committed_count));
    assert!(
        report.stages[0].votes >= 25 - 2,
        "votes of every validator on every participant"
    );
    net.shutdown().await;
}

/// Confirmation PoC in epoch 2: participants that still have their compute stay active
/// with their confirmation weight; one whose ML node went offline confirms nothing, its
/// ratio falls below alpha and it becomes inactive.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn confirmation_pass_and_fail() {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut net = Devnet::start(DevnetOptions {
        participants: 4,
        cheaters: 0,
        epochs: 2,
        epoch_length: 130,
        confirmations: 1000,
        dropouts: vec![3],
        block_time: Duration::from_millis(250),
        validation_blocks: 16,
        ..options(dir.path())
    })
    .await
    .unwrap();
    let report = net.run().await.unwrap();
    eprintln!("{}", poc_devnet::table(&report));
    let done: Vec<_> = report
        .confirmation_events
        .iter()
        .filter(|e| e.0 == 2 && e.3 == "Completed")
        .collect();
    assert!(
        !done.is_empty(),
        "a confirmation event of epoch 2 completed: {:?}",
        report.confirmation_events
    );
    let (_, _, trigger, _) = done[0];
    // The dropout's validator weight abstains: the other three still hold > 2/3.
    for p in &report.participants[..3] {
        assert_eq!(p.status, "ACTIVE", "{}", p.address);
        assert!(p.confirmation_weight > 0 && p.confirmation_weight <= p.weight);
        let commit = net.client.store_commit(*trigger, &p.address).await.unwrap();
        assert!(
            commit.found && commit.count > 0,
            "confirmation commit keyed by the trigger height"
        );
    }
    let dropout = &report.participants[3];
    assert!(
        dropout.weight > 0 && dropout.accepted,
        "it earned weight in the regular PoC"
    );
    assert_eq!(dropout.confirmation_weight, 0);
    assert_eq!(dropout.status, "INACTIVE");
    let p = net
        .client
        .participant(&dropout.address)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.participant.confirmation_poc_ratio, "0");
    let g = net.client.epoch_group(2).await.unwrap().unwrap();
    assert!(
        !g.validator_weights
            .iter()
            .any(|w| w.address == dropout.address),
        "removed from the validator set"
    );
    net.shutdown().await;
}

/// v1 mode: batches on chain, no store commits; every cheater (inflating its v1 batches
/// with fabricated nonces) rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v1_round_batches_on_chain_and_cheaters_rejected() {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut net = Devnet::start(DevnetOptions {
        participants: 4,
        cheaters: 1,
        epochs: 1,
        mode: poc_devnet::Mode::V1,
        ..options(dir.path())
    })
    .await
    .unwrap();
    let report = net.run().await.unwrap();
    eprintln!("{}", poc_devnet::table(&report));
    assert!(report.ok);
    let stage = report.stages[0].stage;
    assert!(net.client.count_batches(stage).await.unwrap() > 0);
    assert!(net.client.count_validations(stage).await.unwrap() >= 12);
    for a in net.addresses() {
        assert!(
            !net.client.store_commit(stage, &a).await.unwrap().found,
            "no store commits in v1"
        );
    }
    // The cheater claimed about twice the honest count (compared with the honest mean:
    // one participant's count alone varies by ±25 % with scheduling) and was voted
    // fraudulent.
    let cheater = &report.participants[3];
    let honest_mean = report.participants[..3]
        .iter()
        .map(|p| p.committed_count)
        .sum::<u32>()
        / 3;
    assert!(
        cheater.committed_count > honest_mean * 3 / 2,
        "{} against an honest mean of {honest_mean}",
        cheater.committed_count
    );
    // Its fabricated nonces carry the distances of real ones, and a few of those pass
    // `r_target` when recomputed, so one validator's 40-nonce sample can now and then
    // look honest; the weighted vote must still reject it.
    assert!(!cheater.accepted, "the inflating cheater was accepted");
    assert!(
        cheater.votes_invalid > cheater.votes_valid,
        "{} invalid against {} valid votes",
        cheater.votes_invalid,
        cheater.votes_valid
    );
    net.shutdown().await;
}

/// Migration: a v1 regular PoC, then a governance switch to v2 without a restart, then a
/// v2 regular PoC with store commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migration_v1_to_v2_via_governance_without_restart() {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut net = Devnet::start(DevnetOptions {
        participants: 4,
        cheaters: 1,
        epochs: 2,
        mode: poc_devnet::Mode::Migration,
        ..options(dir.path())
    })
    .await
    .unwrap();
    let report = net.run().await.unwrap();
    eprintln!("{}", poc_devnet::table(&report));
    assert!(report.ok);
    assert_eq!(report.switched_to_v2_in_epoch, Some(1));
    let (v1_stage, v2_stage) = (report.stages[0].stage, report.stages[1].stage);
    assert!(net.client.count_batches(v1_stage).await.unwrap() > 0);
    let a = &net.addresses()[0];
    assert!(!net.client.store_commit(v1_stage, a).await.unwrap().found);
    assert!(
        net.client.store_commit(v2_stage, a).await.unwrap().found,
        "v2 commits after the switch"
    );
    assert_eq!(net.client.count_batches(v2_stage).await.unwrap(), 0);
    assert!(
        net.client
            .params()
            .await
            .unwrap()
            .params
            .poc_params
            .poc_v2_enabled
    );
    net.shutdown().await;
}

/// Migration with confirmation PoC: event 0 of the epoch is tracked in V2 (store commits
/// keyed by its trigger height, dry run); governance switches to V2 while it validates, so
/// that epoch is the grace epoch; a second event completes in it too, and a participant
/// whose ML node went offline is not punished by either.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migration_tracks_event_zero_and_the_grace_epoch_skips_punishment() {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut net = Devnet::start(DevnetOptions {
        participants: 4,
        cheaters: 0,
        epochs: 2,
        mode: poc_devnet::Mode::Migration,
        epoch_length: 160,
        confirmations: 1000,
        dropouts: vec![3],
        switch_during_confirmation: true,
        block_time: Duration::from_millis(200),
        validation_blocks: 16,
        ..options(dir.path())
    })
    .await
    .unwrap();
    let report = net.run().await.unwrap();
    eprintln!("{}", poc_devnet::table(&report));
    assert_eq!(
        report.switched_to_v2_in_epoch,
        Some(2),
        "the switch happened in epoch 2: its grace epoch"
    );
    let events = net.client.confirmation_events(2).await.unwrap().events;
    assert!(events.len() >= 2, "{events:?}");
    let e0 = &events[0];
    assert_eq!(e0.event_sequence, 0);
    // Event 0 was tracked in V2 (commits keyed by its trigger height) while the regular
    // PoC ran v1 (batches, no commits).
    let a = &net.addresses()[0];
    assert!(
        net.client
            .store_commit(e0.trigger_height, a)
            .await
            .unwrap()
            .found
    );
    let regular = report.stages.last().unwrap().stage;
    assert!(net.client.count_batches(regular).await.unwrap() > 0);
    assert!(!net.client.store_commit(regular, a).await.unwrap().found);
    // Nobody was punished in the grace epoch, not even the participant that went offline.
    for p in &report.participants {
        assert_eq!(p.status, "ACTIVE", "{}", p.role);
        assert_eq!(
            p.confirmation_weight, p.weight,
            "{}: confirmation weight untouched",
            p.role
        );
    }
    net.shutdown().await;
}

/// The same PoC round on a replicated chain: four validators under BFT consensus, the
/// API nodes spread over them; every validator ends on the same blocks and app hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v2_round_on_a_four_validator_chain() {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut net = Devnet::start(DevnetOptions {
        participants: 4,
        cheaters: 1,
        epochs: 1,
        validators: 4,
        ..options(dir.path())
    })
    .await
    .unwrap();
    let report = net.run().await.unwrap();
    eprintln!("{}", poc_devnet::table(&report));
    assert!(report.ok, "participants as expected and validators agree");
    assert_eq!(report.chain_validators.len(), 4);
    let v = &report.chain_validators;
    assert!(
        v.iter()
            .all(|x| x.height > 0 && !x.app_hash_at_common.is_empty())
    );
    assert!(
        v.iter()
            .all(|x| x.app_hash_at_common == v[0].app_hash_at_common)
    );
    assert!(
        v.iter()
            .all(|x| x.block_hash_at_common == v[0].block_hash_at_common)
    );
    let honest: Vec<_> = report
        .participants
        .iter()
        .filter(|p| p.role == "honest")
        .collect();
    assert_eq!(honest.len(), 3);
    assert!(honest.iter().all(|p| p.weight > 0));
    net.shutdown().await;
}

/// Reads one counter from a participant's API node `/metrics`.
async fn api_counter(net: &Devnet, i: usize, name: &str) -> u64 {
    let text = reqwest::get(format!("{}/metrics", net.public_url(i)))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// Two participants on the API node's default timings, 6-block stages and 6-block
/// validation windows at 500 ms blocks (the default local genesis' shape): every commit
/// lands inside its exchange window and every vote inside its validation window (with
/// fixed intervals of 5 s between commits and 30 s before votes, neither would).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_participants_on_api_defaults_land_every_commit_and_vote() {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut net = Devnet::start(DevnetOptions {
        participants: 2,
        cheaters: 0,
        epochs: 2,
        block_time: Duration::from_millis(500),
        stage_blocks: 6,
        validation_blocks: 6,
        ..options(dir.path())
    })
    .await
    .unwrap();
    let report = net.run().await.unwrap();
    eprintln!("{}", poc_devnet::table(&report));
    assert!(report.ok, "both participants accepted");
    assert_eq!(report.stages.len(), 2);
    for s in &report.stages {
        assert_eq!(
            s.votes, 4,
            "stage {}: both validators on both participants",
            s.stage
        );
    }
    for p in &report.participants {
        assert!(p.committed_count > 0 && p.accepted && p.weight > 0, "{p:?}");
        assert_eq!((p.votes_valid, p.votes_invalid), (2, 0), "{p:?}");
    }
    for i in 0..2 {
        assert_eq!(
            api_counter(&net, i, "poc_votes_missed_window_total").await,
            0
        );
        assert_eq!(api_counter(&net, i, "poc_votes_rejected_total").await, 0);
        assert_eq!(
            api_counter(&net, i, "poc_commits_missed_window_total").await,
            0
        );
        assert_eq!(api_counter(&net, i, "poc_commits_rejected_total").await, 0);
        assert!(api_counter(&net, i, "poc_votes_sent_total").await >= 4);
    }
    net.shutdown().await;
}
