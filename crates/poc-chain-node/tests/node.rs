//! The chain node over real HTTP on loopback: transactions, queries, restart and replay.

use std::time::Duration;

use poc_chain::api::{BroadcastMode, PREFIX};
use poc_chain::genesis::{Genesis, GenesisParticipant};
use poc_chain::keys::PrivateKey;
use poc_chain::msgs::{MlNodeWeight, Msg, OPERATIONAL_PERMISSIONS, ValidationPayloadV2};
use poc_chain::tx::{self, TxMsg};
use poc_chain_client::{ChainClient, TxSigner};
use poc_chain_node::{NodeConfig, RunningChain, home};
use sha2::{Digest, Sha256};

fn key(name: &str) -> PrivateKey {
    PrivateKey::from_bytes(&Sha256::digest(name.as_bytes())).unwrap()
}

fn genesis(keys: &[PrivateKey]) -> Genesis {
    let mut params = home::local_params();
    params.epoch_params.epoch_length = 40;
    params.epoch_params.epoch_shift = 20; // first PoC at 20
    params.epoch_params.poc_stage_duration = 6;
    params.epoch_params.poc_exchange_duration = 2;
    params.epoch_params.poc_validation_delay = 1;
    params.epoch_params.poc_validation_duration = 4;
    params
        .confirmation_poc_params
        .expected_confirmations_per_epoch = 0;
    Genesis {
        chain_id: "poc-node-test".into(),
        genesis_time: 1_700_000_000,
        authority: key("authority").address(),
        params,
        consensus_validators: Vec::new(),
        participants: keys
            .iter()
            .enumerate()
            .map(|(i, k)| GenesisParticipant {
                address: k.address(),
                hex_pub_key: k.public_key_hex(),
                inference_url: format!("http://127.0.0.1:{}", 9000 + i),
                validator_key: format!("vk{i}"),
                weight: 10,
            })
            .collect(),
    }
}

async fn start(dir: &std::path::Path, snapshot_interval: i64) -> (RunningChain, ChainClient) {
    let node = poc_chain_node::start(NodeConfig {
        home: dir.to_path_buf(),
        block_time: Duration::from_millis(60),
        rest: "127.0.0.1:0".parse().unwrap(),
        rpc: Some("127.0.0.1:0".parse().unwrap()),
        snapshot_interval,
        http: Default::default(),
    })
    .await
    .unwrap();
    let client = ChainClient::new(&format!("http://{}", node.addr));
    (node, client)
}

/// Sends a request and reads its JSON answer.
async fn send_json(req: reqwest::RequestBuilder) -> serde_json::Value {
    req.send().await.unwrap().json().await.unwrap()
}

async fn wait_height(c: &ChainClient, h: i64) {
    for _ in 0..400 {
        if c.status().await.unwrap().height >= h {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("height {h} not reached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v2_round_through_rest_and_signed_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<PrivateKey> = (0..2).map(|i| key(&format!("p{i}"))).collect();
    home::init(dir.path(), Some(genesis(&keys)), "", 0).unwrap();
    let (node, c) = start(dir.path(), 10).await;
    let st = c.status().await.unwrap();
    assert_eq!(st.chain_id, "poc-node-test");

    // An operational key acts for participant 0 after a grant.
    let warm = key("warm0");
    let cold = TxSigner::new(c.clone(), keys[0].clone());
    let grants: Vec<TxMsg> = OPERATIONAL_PERMISSIONS
        .iter()
        .map(|t| {
            TxMsg::Direct(Msg::Grant {
                granter: keys[0].address(),
                grantee: warm.address(),
                msg_type_url: t.to_string(),
            })
        })
        .collect();
    let r = cold.send(&grants, BroadcastMode::Block).await.unwrap();
    assert_eq!(r.result.code, 0, "{r:?}");
    assert!(r.height > 0);
    let g = c
        .grantees(
            &keys[0].address(),
            "/inference.inference.MsgPoCV2StoreCommit",
        )
        .await
        .unwrap();
    assert_eq!(g.grantees.len(), 1);
    assert_eq!(g.grantees[0].address, warm.address());
    // The same through the SDK's own queries: grants, the transaction, its block.
    let q: serde_json::Value = c
        .get(&format!(
            "/cosmos/authz/v1beta1/grants?granter={}&grantee={}&msg_type_url=/inference.inference.MsgPoCV2StoreCommit",
            keys[0].address(),
            warm.address()
        ))
        .await
        .unwrap();
    assert_eq!(
        q["grants"][0]["authorization"],
        serde_json::json!({"@type": "/cosmos.authz.v1beta1.GenericAuthorization", "msg": "/inference.inference.MsgPoCV2StoreCommit"})
    );
    let by: serde_json::Value = c
        .get(&format!(
            "/cosmos/authz/v1beta1/grants/grantee/{}",
            warm.address()
        ))
        .await
        .unwrap();
    assert_eq!(
        by["grants"].as_array().unwrap().len(),
        OPERATIONAL_PERMISSIONS.len()
    );
    assert_eq!(by["grants"][0]["granter"], keys[0].address());
    let t: serde_json::Value = c
        .get(&format!("/cosmos/tx/v1beta1/txs/{}", r.result.txhash))
        .await
        .unwrap();
    assert_eq!(t["tx_response"]["height"], r.height.to_string());
    let blk: serde_json::Value = c
        .get(&format!(
            "/cosmos/base/tendermint/v1beta1/blocks/{}",
            r.height
        ))
        .await
        .unwrap();
    assert_eq!(blk["block"]["header"]["height"], r.height.to_string());
    assert!(
        blk["block"]["header"]["time"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    let txs = blk["block"]["data"]["txs"].as_array().unwrap();
    let ours = txs.iter().any(|x| {
        use base64::Engine;
        let b = base64::engine::general_purpose::STANDARD
            .decode(x.as_str().unwrap())
            .unwrap();
        tx::tx_hash(&b) == r.result.txhash
    });
    assert!(ours, "the block carries the transaction");
    let latest: serde_json::Value = c
        .get("/cosmos/base/tendermint/v1beta1/blocks/latest")
        .await
        .unwrap();
    assert!(
        latest["block_id"]["hash"]
            .as_str()
            .is_some_and(|h| h.len() == 44)
    );
    // The CometBFT RPC: GET and JSON-RPC POST, hashes uppercase hex.
    let rpc = format!("http://{}", node.rpc_addr.unwrap());
    let http = reqwest::Client::new();
    let get = |path: String| send_json(http.get(path));
    let st = get(format!("{rpc}/status")).await;
    assert_eq!(st["result"]["node_info"]["network"], "poc-node-test");
    let b = get(format!("{rpc}/block?height={}", r.height)).await;
    let rest_block = c.block(r.height).await.unwrap().unwrap();
    assert_eq!(
        b["result"]["block_id"]["hash"],
        rest_block["block_id"]["hash"]
    );
    assert_eq!(
        b["result"]["block"]["header"]["height"],
        r.height.to_string()
    );
    let quoted = get(format!("{rpc}/block?height=\"{}\"", r.height)).await;
    assert_eq!(quoted["result"]["block_id"], b["result"]["block_id"]);
    let post_rpc = |body: serde_json::Value| send_json(http.post(&rpc).json(&body));
    let post = post_rpc(serde_json::json!({"jsonrpc": "2.0", "id": 7, "method": "block", "params": {"height": r.height.to_string()}})).await;
    assert_eq!(post["id"], 7);
    assert_eq!(post["result"]["block_id"], b["result"]["block_id"]);
    let too_high = get(format!("{rpc}/block?height=999999")).await;
    assert_eq!(too_high["error"]["code"], -32603);
    let info = get(format!("{rpc}/abci_info")).await;
    assert!(info["result"]["response"]["last_block_height"].is_string());
    let unknown =
        post_rpc(serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "validators"})).await;
    assert_eq!(unknown["error"]["code"], -32601);
    // The head as the API node reads it: the RPC's status, or without an RPC URL the
    // gateway's latest block; either hash is the block's as the gateway gives it.
    let by_rpc = c.clone().with_rpc(&rpc);
    for head in [by_rpc.head().await.unwrap(), c.head().await.unwrap()] {
        assert!(head.height >= r.height, "{head:?}");
        assert_eq!(c.block_hash(head.height).await.unwrap(), Some(head.hash));
    }
    assert_eq!(c.chain_id().await.unwrap(), "poc-node-test");

    let warm_signer = TxSigner::new(c.clone(), warm.clone());
    let p1 = TxSigner::new(c.clone(), keys[1].clone());
    let exec = |m: Msg| TxMsg::Exec {
        grantee: warm.address(),
        msgs: vec![m],
    };
    // Seeds just before the PoC start (S = 20), then commits in [21, 28].
    wait_height(&c, 17).await;
    let s = 20;
    let seed = |i: usize| Msg::SubmitSeed {
        creator: keys[i].address(),
        epoch_index: 1,
        signature: format!("seed{i}"),
    };
    assert_eq!(
        warm_signer
            .send(&[exec(seed(0))], BroadcastMode::Sync)
            .await
            .unwrap()
            .result
            .code,
        0
    );
    assert_eq!(
        p1.send(&[TxMsg::Direct(seed(1))], BroadcastMode::Sync)
            .await
            .unwrap()
            .result
            .code,
        0
    );
    wait_height(&c, s).await;
    let commit = |i: usize, n: u32| Msg::PocV2StoreCommit {
        creator: keys[i].address(),
        poc_stage_start_block_height: s,
        count: n,
        root_hash: vec![i as u8 + 1; 32],
    };
    let dist = |i: usize, n: u32| Msg::MlNodeWeightDistribution {
        creator: keys[i].address(),
        poc_stage_start_block_height: s,
        weights: vec![MlNodeWeight {
            node_id: "node-a".into(),
            weight: n,
        }],
    };
    let r0 = warm_signer
        .send(
            &[exec(commit(0, 40)), exec(dist(0, 40))],
            BroadcastMode::Block,
        )
        .await
        .unwrap();
    let r1 = p1
        .send(
            &[TxMsg::Direct(commit(1, 30)), TxMsg::Direct(dist(1, 30))],
            BroadcastMode::Block,
        )
        .await
        .unwrap();
    assert_eq!((r0.result.code, r1.result.code), (0, 0), "{r0:?} {r1:?}");

    let sc = c.store_commit(s, &keys[0].address()).await.unwrap();
    assert!(sc.found);
    assert_eq!(sc.count, 40);
    assert_eq!(sc.root_hash, vec![1u8; 32]);
    assert!(
        !c.store_commit(s, &key("nobody").address())
            .await
            .unwrap()
            .found
    );
    let all = c.all_commits(s).await.unwrap();
    assert_eq!(all.commits.len(), 2);
    assert!(all.commits.iter().all(|e| e.hex_pub_key.len() == 66));
    let bytes = |a: &str| poc_chain::address::decode(a).unwrap();
    assert!(
        bytes(&all.commits[0].participant_address) < bytes(&all.commits[1].participant_address),
        "commits in address-byte order"
    );
    let ds = c.all_distributions(s).await.unwrap().distributions;
    assert!(
        bytes(&ds[0].participant_address) < bytes(&ds[1].participant_address),
        "distributions in address-byte order"
    );
    assert_eq!(
        c.distribution(s, &keys[1].address()).await.unwrap().weights[0].weight,
        30
    );
    assert_eq!(c.all_distributions(s).await.unwrap().distributions.len(), 2);

    // Votes in the validation window [S+8, S+11] (validation starts at S+6+1).
    wait_height(&c, s + 7).await;
    let votes = |v: usize| Msg::SubmitPocValidationsV2 {
        creator: keys[v].address(),
        poc_stage_start_block_height: s,
        validations: (0..2)
            .map(|p| ValidationPayloadV2 {
                participant_address: keys[p].address(),
                validated_weight: 200,
            })
            .collect(),
    };
    let a = warm_signer
        .send(&[exec(votes(0))], BroadcastMode::Sync)
        .await
        .unwrap();
    let b = p1
        .send(&[TxMsg::Direct(votes(1))], BroadcastMode::Block)
        .await
        .unwrap();
    assert_eq!((a.result.code, b.result.code), (0, 0), "{a:?} {b:?}");
    let v = c.validations_v2(s).await.unwrap();
    assert_eq!(v.poc_validation.len(), 2);
    assert_eq!(v.poc_validation[0].poc_validation.len(), 2);
    let snap = c.snapshot(s).await.unwrap();
    assert!(snap.found);
    assert_eq!(snap.snapshot.unwrap().validator_weights.len(), 2);

    // Weights after EndOfPoCValidation (S+11), effective at S+12.
    wait_height(&c, s + 12).await;
    let g = c.epoch_group(1).await.unwrap().expect("epoch 1 group");
    let w: Vec<i64> = g.validator_weights.iter().map(|v| v.weight).collect();
    let mut expected = [(keys[0].address(), 40), (keys[1].address(), 30)];
    expected.sort();
    assert_eq!(w, expected.iter().map(|e| e.1).collect::<Vec<_>>());
    let info = c.epoch_info().await.unwrap();
    assert_eq!(info.effective_epoch.index, 1);
    assert_eq!(info.latest_epoch.poc_start_block_height, s);
    assert!(info.params.poc_params.poc_v2_enabled);

    // Participants with keys and URLs.
    let ps = c.participants().await.unwrap();
    assert_eq!(ps.participant.len(), 2);
    assert_eq!(ps.pagination.map(|p| p.total), Some(2));
    // The module's `Participant` under its proto field names, as a Gonka node writes it.
    let raw: serde_json::Value = c
        .get(&format!("{PREFIX}/participant/{}", keys[0].address()))
        .await
        .unwrap();
    assert_eq!(raw["participant"]["index"], keys[0].address().as_str());
    assert!(raw["participant"]["inferenceUrl"].is_string(), "{raw}");
    let p0 = c.participant(&keys[0].address()).await.unwrap().unwrap();
    assert_eq!(p0.participant.hex_pub_key, keys[0].public_key_hex());
    assert!(c.participant(&key("x").address()).await.unwrap().is_none());

    // Rejections: bad address → 400, bad tx → code, wrong chain → code.
    let e = c.store_commit(s, "gonka1bad").await.unwrap_err();
    assert_eq!(e.status(), Some(400));
    let r = c
        .broadcast(b"garbage".to_vec(), BroadcastMode::Sync)
        .await
        .unwrap();
    assert_eq!(r.result.code, 2);
    let acc = c.account(&keys[0].address()).await.unwrap().unwrap();
    assert_eq!(
        acc.account_number, 0,
        "genesis accounts are numbered in order"
    );
    let other = tx::SignerData {
        chain_id: "other",
        account_number: acc.account_number,
        sequence: acc.sequence,
    };
    let r = c
        .broadcast(
            tx::sign(&keys[0], &other, &[TxMsg::Direct(seed(0))]),
            BroadcastMode::Sync,
        )
        .await
        .unwrap();
    // Signed for another chain: the signature does not verify here.
    assert_eq!((r.result.code, r.result.codespace.as_str()), (4, "sdk"));
    assert!(
        r.result.raw_log.contains("chain-id"),
        "{}",
        r.result.raw_log
    );
    assert!(
        c.account(&key("nobody").address()).await.unwrap().is_none(),
        "no account without genesis or a grant"
    );
    // Looking a transaction up by hash.
    let found = c.tx(&b.result.txhash).await.unwrap().unwrap();
    assert_eq!(found.height, b.height);
    assert!(c.tx("00").await.unwrap().is_none());
    let blk = c.block(b.height).await.unwrap().unwrap();
    assert_eq!(blk["block"]["header"]["height"], b.height.to_string());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_restart_loses_no_committed_block_and_replays_to_the_same_hash() {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<PrivateKey> = (0..2).map(|i| key(&format!("p{i}"))).collect();
    home::init(dir.path(), Some(genesis(&keys)), "", 0).unwrap();
    let (node, c) = start(dir.path(), 7).await;
    let signer = TxSigner::new(c.clone(), keys[0].clone());
    let mut included = Vec::new();
    for i in 0..5 {
        let r = signer
            .send(
                &[TxMsg::Direct(Msg::SubmitNewParticipant {
                    creator: keys[0].address(),
                    url: format!("http://host-{i}"),
                    validator_key: "vk".into(),
                })],
                BroadcastMode::Block,
            )
            .await
            .unwrap();
        assert_eq!(r.result.code, 0);
        included.push(r);
    }
    wait_height(&c, 25).await;
    let before = c.status().await.unwrap();
    node.kill().await;

    // Restart: the head is at least where it was, and every block answered before is
    // there with the same hash.
    let (node, c) = start(dir.path(), 7).await;
    assert!(
        node.replayed > 0,
        "blocks after the last snapshot are replayed"
    );
    let after = c.status().await.unwrap();
    assert!(after.height >= before.height);
    let b = c.block(before.height).await.unwrap().unwrap();
    assert_eq!(b["block_id"]["hash"], before.hash);
    assert_eq!(
        c.block_hash(before.height).await.unwrap().as_deref(),
        Some(before.hash.as_str()),
        "the gateway's base64 hash, written as CometBFT writes it"
    );
    assert_eq!(c.block_hash(before.height + 10_000).await.unwrap(), None);
    // Block hashes are written as CometBFT writes them (the PoC seed is this string).
    assert!(
        before.hash.len() == 64
            && before
                .hash
                .chars()
                .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c)),
        "{}",
        before.hash
    );
    for r in &included {
        assert_eq!(
            c.tx(&r.result.txhash).await.unwrap().unwrap().height,
            r.height
        );
    }
    assert_eq!(
        c.participant(&keys[0].address())
            .await
            .unwrap()
            .unwrap()
            .participant
            .inference_url,
        "http://host-4"
    );
    // The sequence survived too: a fresh signer reads it and goes through.
    let signer = TxSigner::new(c.clone(), keys[0].clone());
    assert_eq!(
        c.account(&keys[0].address())
            .await
            .unwrap()
            .unwrap()
            .sequence,
        5
    );
    let r = signer
        .send(
            &[TxMsg::Direct(Msg::SubmitNewParticipant {
                creator: keys[0].address(),
                url: "http://again".into(),
                validator_key: "vk".into(),
            })],
            BroadcastMode::Block,
        )
        .await
        .unwrap();
    assert_eq!(r.result.code, 0, "{r:?}");
    let last = c.status().await.unwrap();
    node.shutdown().await;

    // A full replay from genesis reproduces every stored app hash.
    let report = poc_chain_node::replay_all(&home::Home::new(dir.path()), |_, _| {}).unwrap();
    assert!(report.blocks >= last.height);
    assert!(report.txs >= 6);
    // And a graceful restart resumes from the shutdown snapshot without replaying.
    let (node, c) = start(dir.path(), 0).await;
    assert_eq!(node.replayed, 0);
    assert!(c.status().await.unwrap().height >= last.height);
    node.shutdown().await;
}

#[test]
fn init_writes_a_valid_default_home_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let r = home::init(dir.path(), None, "poc-local", 3).unwrap();
    assert_eq!(r.genesis.participants.len(), 3);
    assert_eq!(r.keys.len(), 4);
    let h = home::Home::new(dir.path());
    let g = h.genesis().unwrap();
    assert_eq!(g, r.genesis);
    let auth = home::read_key(&h.keys_dir().join("authority.key")).unwrap();
    assert_eq!(auth.address(), g.authority);
    let p0 = home::read_key(&h.keys_dir().join("participant-0.key")).unwrap();
    assert_eq!(p0.address(), g.participants[0].address);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(h.keys_dir().join("authority.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let e = home::init(dir.path(), None, "poc-local", 0).unwrap_err();
    assert!(e.to_string().contains("already exists"));
    // A broken genesis is refused with the field named.
    let dir2 = tempfile::tempdir().unwrap();
    let mut bad = g.clone();
    bad.participants[0].hex_pub_key = auth.public_key_hex();
    let e = home::init(dir2.path(), Some(bad), "", 0).unwrap_err();
    assert!(e.to_string().contains("participants[0].hex_pub_key"), "{e}");
}
