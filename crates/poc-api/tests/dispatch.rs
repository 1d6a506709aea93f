//! V1/V2 dispatch of the API node's endpoints (`docs/protocol/chain-and-api.md` §6.2), including a
//! governance switch to V2 without a restart.

use std::time::{Duration, Instant};

use poc_api::callbacks::Grant;
use poc_api::config::{ApiConfig, ValidationConfig};
use poc_chain::api::BroadcastMode;
use poc_chain::genesis::{Genesis, GenesisParticipant};
use poc_chain::keys::PrivateKey;
use poc_chain::msgs::Msg;
use poc_chain::tx::TxMsg;
use poc_chain_client::{ChainClient, TxSigner};
use poc_chain_node::{NodeConfig, home};
use sha2::{Digest, Sha256};

fn key(name: &str) -> PrivateKey {
    PrivateKey::from_bytes(&Sha256::digest(name.as_bytes())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_chain_gates_v2_endpoints_until_governance_switches() {
    let dir = tempfile::tempdir().unwrap();
    let account = key("acc");
    let warm = key("warm");
    let authority = key("authority");
    let mut params = home::local_params();
    params.poc_params.poc_v2_enabled = false;
    params.poc_params.confirmation_poc_v2_enabled = false;
    let genesis = Genesis {
        chain_id: "dispatch".into(),
        genesis_time: 0,
        authority: authority.address(),
        params,
        consensus_validators: Vec::new(),
        participants: vec![GenesisParticipant {
            address: account.address(),
            hex_pub_key: account.public_key_hex(),
            inference_url: String::new(),
            validator_key: "v".into(),
            weight: 10,
        }],
    };
    let ch = dir.path().join("chain");
    home::init(&ch, Some(genesis), "", 0).unwrap();
    let chain = poc_chain_node::start(NodeConfig {
        home: ch,
        rpc: Some("127.0.0.1:0".parse().unwrap()),
        block_time: Duration::from_millis(100),
        rest: "127.0.0.1:0".parse().unwrap(),
        snapshot_interval: 0,
        http: Default::default(),
    })
    .await
    .unwrap();
    let chain_url = format!("http://{}", chain.addr);
    home::write_key(&dir.path().join("a.key"), &account).unwrap();
    home::write_key(&dir.path().join("w.key"), &warm).unwrap();
    let api = poc_api::start(ApiConfig {
        chain_url: chain_url.clone(),
        // The head from the CometBFT RPC, as against a Gonka node.
        chain_rpc_url: Some(format!("http://{}", chain.rpc_addr.unwrap())),
        account_key: dir.path().join("a.key"),
        operational_key: dir.path().join("w.key"),
        public_url: "http://127.0.0.1:1".into(),
        public_listen: "127.0.0.1:0".parse().unwrap(),
        ml_listen: "127.0.0.1:0".parse().unwrap(),
        callback_url: None,
        data_dir: dir.path().join("data"),
        ml_nodes: vec![],
        commit_interval_s: 0.5,
        chain_poll_s: 0.05,
        health_interval_s: 5.0,
        allow_private_targets: true,
        keep_stages: 10,
        proof_rate_per_sec: 5.0,
        proof_rate_burst: 30.0,
        trust_forwarded_headers: true,
        callback_allow: vec![],
        http: Default::default(),
        v1: Default::default(),
        validation: ValidationConfig::default(),
    })
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let public = format!("http://{}", api.public_addr);
    let ml = format!("http://{}", api.ml_addr);
    // Callback URLs as the node hands them to its ML nodes (with a token each).
    let v2_gen = api
        .shared
        .callback_url(Grant::Generation { stage: 40, node: 0 }, 1000);
    let v2_val = api.shared.callback_url(
        Grant::Validation {
            stage: 40,
            participant: account.public_key_hex(),
        },
        1000,
    );
    let v1_gen = api
        .shared
        .callback_url(Grant::V1Generation { stage: 40, node: 0 }, 1000);
    let t = Instant::now();
    while api.shared.view().is_none() {
        assert!(t.elapsed() < Duration::from_secs(10), "never synced");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(
            http.get(format!("{public}/v1/poc/artifacts/state?height=40"))
                .send()
                .await
                .unwrap()
        ),
        503
    );
    assert_eq!(
        status(
            http.post(format!("{public}/v1/poc/proofs"))
                .body("{}")
                .send()
                .await
                .unwrap()
        ),
        503
    );
    assert_eq!(
        status(
            http.post(format!("{v2_gen}/generated"))
                .body("{}")
                .send()
                .await
                .unwrap()
        ),
        503
    );
    assert_eq!(
        status(
            http.post(format!("{v2_val}/validated"))
                .body("{}")
                .send()
                .await
                .unwrap()
        ),
        503
    );
    // Without a token the callbacks do not exist; with a token this node never issued
    // they are refused.
    for path in [
        "/v2/poc-batches/generated",
        "/v2/poc-batches/validated",
        "/v1/poc-batches/generated",
    ] {
        assert_eq!(
            status(
                http.post(format!("{ml}{path}"))
                    .body("{}")
                    .send()
                    .await
                    .unwrap()
            ),
            404,
            "{path}"
        );
        assert_eq!(
            status(
                http.post(format!("{ml}/cb/0123456789abcdef0123456789abcdef{path}"))
                    .body("{}")
                    .send()
                    .await
                    .unwrap()
            ),
            403,
            "{path}"
        );
    }
    // The v1 callbacks are live in v1 mode (an empty body is malformed).
    assert_eq!(
        status(
            http.post(format!("{v1_gen}/generated"))
                .body("{}")
                .send()
                .await
                .unwrap()
        ),
        400
    );
    let health: serde_json::Value = http
        .get(format!("{public}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["address"], account.address());

    // Governance switches to V2 without restarting anything.
    let c = ChainClient::new(&chain_url);
    let mut p = c.params().await.unwrap().params;
    p.poc_params.poc_v2_enabled = true;
    let r = TxSigner::new(c.clone(), authority.clone())
        .send(
            &[TxMsg::Direct(Msg::UpdateParams {
                authority: authority.address(),
                params: Box::new(p),
            })],
            BroadcastMode::Block,
        )
        .await
        .unwrap();
    assert_eq!(r.result.code, 0);
    let t = Instant::now();
    while !api.shared.view().unwrap().should_use_v2() {
        assert!(t.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Now the proof API answers (404: no store for that stage yet), the v1 callbacks 503.
    assert_eq!(
        status(
            http.get(format!("{public}/v1/poc/artifacts/state?height=40"))
                .send()
                .await
                .unwrap()
        ),
        404
    );
    assert_eq!(
        status(
            http.post(format!("{v1_gen}/generated"))
                .body("{}")
                .send()
                .await
                .unwrap()
        ),
        503
    );
    api.shutdown().await;
    chain.shutdown().await;
}
