//! Chain hot paths: executing blocks of signed PoC transactions, the app hash, and
//! signature checks.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use poc_chain::block::Block;
use poc_chain::epoch::EpochParams;
use poc_chain::genesis::{Genesis, GenesisParticipant};
use poc_chain::keys::PrivateKey;
use poc_chain::msgs::{Msg, ValidationPayloadV2};
use poc_chain::params::Params;
use poc_chain::state::ChainState;
use poc_chain::tx::{self, TxMsg};
use sha2::{Digest, Sha256};
use std::hint::black_box;

const N: usize = 200;

fn setup() -> (ChainState, Vec<PrivateKey>) {
    let keys: Vec<PrivateKey> = (0..N)
        .map(|i| PrivateKey::from_bytes(&Sha256::digest(format!("k{i}"))).unwrap())
        .collect();
    let mut params = Params {
        epoch_params: EpochParams {
            epoch_length: 100,
            poc_stage_duration: 20,
            ..EpochParams::default()
        },
        ..Params::default()
    };
    params.poc_params.poc_v2_enabled = true;
    let g = Genesis {
        chain_id: "bench".into(),
        genesis_time: 0,
        authority: keys[0].address(),
        params,
        consensus_validators: Vec::new(),
        participants: keys
            .iter()
            .map(|k| GenesisParticipant {
                address: k.address(),
                hex_pub_key: k.public_key_hex(),
                inference_url: "http://x".into(),
                validator_key: "v".into(),
                weight: 10,
            })
            .collect(),
    };
    let mut s = ChainState::genesis_state(&g);
    let mut prev = [0; 32];
    while s.height < 100 {
        let b = s.build_block(prev, s.time + 1, vec![]);
        s.apply_block(&b).unwrap();
        prev = b.header.hash();
    }
    (s, keys)
}

fn blocks(c: &mut Criterion) {
    let (state, keys) = setup();
    let commits: Vec<Vec<u8>> = keys
        .iter()
        .map(|k| {
            let m = Msg::PocV2StoreCommit {
                creator: k.address(),
                poc_stage_start_block_height: 100,
                count: 1000,
                root_hash: vec![7; 32],
            };
            let signer = tx::SignerData {
                chain_id: "bench",
                account_number: state.account_number(&k.address()).unwrap(),
                sequence: 0,
            };
            tx::sign(k, &signer, &[TxMsg::Direct(m)])
        })
        .collect();
    let block: Block = state.build_block([1; 32], state.time + 1, commits.clone());
    let mut g = c.benchmark_group("chain::block");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("200 store commits", |b| {
        b.iter_batched(
            // Cold: `apply_block` verifies every signature afresh.
            || state.clone(),
            |mut s| black_box(s.apply_block(&block).unwrap()),
            BatchSize::LargeInput,
        )
    });
    let votes: Vec<Vec<u8>> = keys
        .iter()
        .map(|k| {
            let m = Msg::SubmitPocValidationsV2 {
                creator: k.address(),
                poc_stage_start_block_height: 100,
                validations: keys
                    .iter()
                    .take(50)
                    .map(|p| ValidationPayloadV2 {
                        participant_address: p.address(),
                        validated_weight: 200,
                    })
                    .collect(),
            };
            let signer = tx::SignerData {
                chain_id: "bench",
                account_number: state.account_number(&k.address()).unwrap(),
                sequence: 1,
            };
            tx::sign(k, &signer, &[TxMsg::Direct(m)])
        })
        .collect();
    // Votes need the validation window: move a copy of the state there.
    let mut at_val = state.clone();
    let mut prev = [2; 32];
    let b0 = at_val.build_block(prev, at_val.time + 1, commits);
    at_val.apply_block(&b0).unwrap();
    prev = b0.header.hash();
    let start_val = at_val.upcoming_ctx().unwrap().start_of_poc_validation();
    while at_val.height < start_val {
        let b = at_val.build_block(prev, at_val.time + 1, vec![]);
        at_val.apply_block(&b).unwrap();
        prev = b.header.hash();
    }
    let vblock = at_val.build_block(prev, at_val.time + 1, votes);
    g.throughput(Throughput::Elements((N * 50) as u64));
    g.bench_function("200 validators x 50 votes", |b| {
        b.iter_batched(
            || at_val.clone(),
            |mut s| black_box(s.apply_block(&vblock).unwrap()),
            BatchSize::LargeInput,
        )
    });
    g.finish();
    let mut g = c.benchmark_group("chain::app_hash");
    let mut s = at_val.clone();
    let r = s.apply_block(&vblock).unwrap();
    assert!(r.tx_results.iter().all(|t| t.code == 0));
    g.bench_function(
        format!(
            "{} commits + {} votes",
            s.commits.len(),
            s.validations_v2.len()
        ),
        |b| b.iter(|| black_box(s.compute_app_hash())),
    );
    g.finish();
}

fn signatures(c: &mut Criterion) {
    let k = PrivateKey::from_bytes(&Sha256::digest(b"k")).unwrap();
    let d: [u8; 32] = Sha256::digest(b"m").into();
    let sig = k.sign_digest(&d);
    let pk = k.public_key();
    let mut g = c.benchmark_group("chain::secp256k1");
    g.bench_function("sign", |b| {
        b.iter(|| black_box(k.sign_digest(black_box(&d))))
    });
    g.bench_function("verify", |b| {
        b.iter(|| black_box(poc_chain::keys::verify_digest(&pk, &d, &sig)))
    });
    g.finish();
}

criterion_group!(benches, blocks, signatures);
criterion_main!(benches);
