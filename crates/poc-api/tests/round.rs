//! A full PoC v2 round on loopback with real components: a chain node, four ML nodes on
//! the tiny checkpoint (one of them running the 4-bit-rounded copy: a cheater), four API
//! nodes. Then a catalogue of hostile proof requests against one API node.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use candle_core::DType;
use poc_api::config::{ApiConfig, MlNodeEntry, ValidationConfig};
use poc_api::proofs::{
    ProofRequest, ProofResponse, response_digest, verify_payload, verify_response,
};
use poc_api::{RunningApi, start};
use poc_chain::decimal::Decimal;
use poc_chain::keys::PrivateKey;
use poc_chain_client::ChainClient;
use poc_chain_node::{RunningChain, home};
use poc_mlnode::settings::PocSettings;
use poc_mlnode::{MlNodeConfig, RunningNode};
use poc_model::presets::{Preset, write_preset};

const N: usize = 4;
const CHEATER: usize = 3;

use common::key;

struct Env {
    _dir: tempfile::TempDir,
    chain: Option<RunningChain>,
    client: ChainClient,
    ml: Vec<RunningNode>,
    apis: Vec<RunningApi>,
    accounts: Vec<PrivateKey>,
    warm: Vec<PrivateKey>,
}

async fn setup() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    write_preset(Preset::TinyDense, &model).unwrap();
    let rounded = dir.path().join("model-rounded");
    poc_model::quantize::round_4bit(&model, &rounded).unwrap();
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    ] {
        if model.join(f).exists() && !rounded.join(f).exists() {
            std::fs::copy(model.join(f), rounded.join(f)).unwrap();
        }
    }
    let accounts: Vec<PrivateKey> = (0..N).map(|i| key(&format!("account-{i}"))).collect();
    let warm: Vec<PrivateKey> = (0..N).map(|i| key(&format!("warm-{i}"))).collect();
    let mut params = home::local_params();
    let ep = &mut params.epoch_params;
    ep.epoch_length = 60;
    ep.epoch_shift = 44; // first PoC at 16
    ep.poc_stage_duration = 8;
    ep.poc_exchange_duration = 2;
    ep.poc_validation_delay = 2;
    ep.poc_validation_duration = 12;
    let pp = &mut params.poc_params;
    pp.model_id = "tiny".into();
    pp.seq_len = 16;
    pp.validation_sample_size = 20;
    pp.stat_test = Some(poc_chain::params::StatTestParams {
        dist_threshold: Some(Decimal::new(5, -2)),
        p_mismatch: Some(Decimal::new(1, -2)),
        p_value_threshold: Some(Decimal::new(5, -2)),
    });
    params
        .confirmation_poc_params
        .expected_confirmations_per_epoch = 0;
    let chain = common::chain(
        dir.path(),
        "poc-api-test",
        params,
        &accounts,
        Duration::from_millis(250),
    )
    .await;
    let chain_url = format!("http://{}", chain.addr);
    let mut ml = Vec::new();
    for i in 0..N {
        let settings = PocSettings {
            callback_interval: Duration::from_millis(300),
            ..PocSettings::default()
        };
        let node = poc_mlnode::start(MlNodeConfig {
            model: if i == CHEATER {
                rounded.clone()
            } else {
                model.clone()
            },
            served_model_names: vec!["tiny".into()],
            listen: "127.0.0.1:0".parse().unwrap(),
            dtype: Some(DType::F32),
            devices: vec![],
            fp8: None,
            settings,
            body_limit: 16 << 20,
            http: Default::default(),
        })
        .await
        .unwrap();
        ml.push(node);
    }
    let mut apis = Vec::new();
    for i in 0..N {
        let kd = dir.path().join(format!("keys-{i}"));
        std::fs::create_dir_all(&kd).unwrap();
        home::write_key(&kd.join("account.key"), &accounts[i]).unwrap();
        home::write_key(&kd.join("warm.key"), &warm[i]).unwrap();
        let public: SocketAddr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let cfg = ApiConfig {
            chain_url: chain_url.clone(),
            // The SDK gateway's latest block (the devnet reads the RPC).
            chain_rpc_url: None,
            account_key: kd.join("account.key"),
            operational_key: kd.join("warm.key"),
            public_url: format!("http://{public}"),
            public_listen: public,
            ml_listen: "127.0.0.1:0".parse().unwrap(),
            callback_url: None,
            data_dir: dir.path().join(format!("data-{i}")),
            ml_nodes: vec![MlNodeEntry {
                id: format!("ml-{i}"),
                url: format!("http://{}", ml[i].addr),
            }],
            commit_interval_s: 0.5,
            chain_poll_s: 0.1,
            health_interval_s: 2.0,
            allow_private_targets: true,
            keep_stages: 10,
            proof_rate_per_sec: 5.0,
            proof_rate_burst: 30.0,
            trust_forwarded_headers: true,
            callback_allow: vec![],
            http: Default::default(),
            v1: Default::default(),
            validation: ValidationConfig {
                request_timeout_s: 5.0,
                max_retries: 5,
                retry_backoff_s: 0.3,
                node_retries: 3,
                node_retry_delay_s: 0.2,
                flush_size: 10,
                flush_timeout_s: 0.5,
                ..ValidationConfig::default()
            },
        };
        apis.push(start(cfg).await.unwrap());
    }
    Env {
        _dir: dir,
        client: ChainClient::new(&chain_url),
        chain: Some(chain),
        ml,
        apis,
        accounts,
        warm,
    }
}

async fn wait_height(c: &ChainClient, h: i64, limit: Duration) {
    let t = Instant::now();
    while c.status().await.unwrap().height < h {
        assert!(t.elapsed() < limit, "height {h} not reached in {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_round_with_a_cheater_then_hostile_proof_requests() {
    let env = setup().await;
    let c = &env.client;
    let s = 16;
    // Registration and grants happen on start.
    wait_height(c, 10, Duration::from_secs(30)).await;
    for (i, a) in env.accounts.iter().enumerate() {
        let p = c.participant(&a.address()).await.unwrap().unwrap();
        assert_eq!(
            p.participant.inference_url,
            env.apis[i].shared.cfg.public_url
        );
        let g = c
            .grantees(&a.address(), "/inference.inference.MsgPoCV2StoreCommit")
            .await
            .unwrap();
        assert_eq!(g.grantees[0].address, env.warm[i].address());
    }
    // End of PoC validation = S + 8 + 2 + 12 = 38; weights then, effective at 39.
    wait_height(c, 40, Duration::from_secs(60)).await;

    for (i, a) in env.accounts.iter().enumerate() {
        let commit = c.store_commit(s, &a.address()).await.unwrap();
        assert!(
            commit.found && commit.count > 0,
            "participant {i} committed"
        );
        let d = c.distribution(s, &a.address()).await.unwrap();
        assert!(d.found, "participant {i} distributed");
        assert_eq!(d.weights.len(), 1);
        assert_eq!(d.weights[0].node_id, format!("ml-{i}"));
        assert_eq!(
            d.weights[0].weight, commit.count,
            "the distribution sums to the last commit"
        );
        let m = &env.apis[i].shared.metrics;
        assert!(
            m.get("poc_commits_sent_total") >= 2,
            "participant {i}: commits with growing counts"
        );
        assert!(m.get("poc_artifacts_received_total") >= u64::from(commit.count));
    }
    // Votes: every participant validated every participant (itself included).
    let v = c.validations_v2(s).await.unwrap();
    assert_eq!(v.poc_validation.len(), N);
    for rec in &v.poc_validation {
        assert_eq!(rec.poc_validation.len(), N, "{}", rec.participant);
        let target = env
            .accounts
            .iter()
            .position(|a| a.address() == rec.participant)
            .unwrap();
        for vote in &rec.poc_validation {
            let voter = env
                .accounts
                .iter()
                .position(|a| a.address() == vote.validator_participant_address)
                .unwrap();
            // Honest validators recompute with the real model: the cheater's vectors fail
            // and honest ones pass; the cheater's own node disagrees with everyone else.
            let expect_valid = (target == CHEATER) == (voter == CHEATER);
            assert_eq!(
                vote.validated_weight > 0,
                expect_valid,
                "vote of {voter} on {target}: {}",
                vote.validated_weight
            );
            if expect_valid {
                assert_eq!(vote.validated_weight, 20, "n_total = the sample size");
            }
        }
    }
    let g = c
        .epoch_group(1)
        .await
        .unwrap()
        .expect("weights for epoch 1");
    let weighted: Vec<&str> = g
        .validator_weights
        .iter()
        .map(|w| w.address.as_str())
        .collect();
    for (i, a) in env.accounts.iter().enumerate() {
        assert_eq!(
            weighted.contains(&a.address().as_str()),
            i != CHEATER,
            "participant {i}"
        );
    }
    for p in &g.active_participants {
        let d = c.distribution(s, &p.index).await.unwrap();
        assert_eq!(
            p.weight,
            i64::from(d.weights[0].weight),
            "weight = distributed count (scale 1)"
        );
    }

    // Artifact state and the proof API of participant 1, asked by participant 0's warm key.
    let target = &env.apis[1];
    let base = format!("http://{}", target.public_addr);
    let http = reqwest::Client::new();
    let state: serde_json::Value = http
        .get(format!("{base}/v1/poc/artifacts/state?height={s}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let count = state["count"].as_u64().unwrap() as u32;
    let root: [u8; 32] = STANDARD
        .decode(state["root_hash"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    assert!(
        count
            >= c.store_commit(s, &env.accounts[1].address())
                .await
                .unwrap()
                .count
    );
    assert_eq!(
        http.get(format!("{base}/v1/poc/artifacts/state?height=abc"))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        http.get(format!("{base}/v1/poc/artifacts/state?height=999"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let validator = env.accounts[0].address();
    let post = |body: Vec<u8>| {
        let http = http.clone();
        let url = format!("{base}/v1/poc/proofs");
        async move {
            match http
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
            {
                Ok(r) => {
                    let status = r.status().as_u16();
                    (status, r.text().await.unwrap_or_default())
                }
                // The server may answer 413 and close before the client finished sending.
                Err(e) => (0, e.to_string()),
            }
        }
    };
    let good = ProofRequest::signed(
        &env.warm[0],
        &validator,
        s,
        &root,
        count,
        vec![0, count - 1, 3],
        now_ns(),
    );
    let (status, text) = post(serde_json::to_vec(&good).unwrap()).await;
    assert_eq!(status, 200, "{text}");
    let resp: ProofResponse = serde_json::from_str(&text).unwrap();
    let signer = resp.signer_address.clone().unwrap();
    assert_eq!(signer, env.warm[1].address());
    let sample = verify_response(&resp, s, &root, count, &[0, count - 1, 3], |a| {
        (a == signer).then(|| env.warm[1].public_key())
    })
    .unwrap();
    assert_eq!(sample.len(), 3);
    let d = response_digest(
        s,
        &root,
        count,
        &resp.proofs,
        resp.timestamp.unwrap(),
        &signer,
    );
    assert!(verify_payload(
        &env.warm[1].public_key(),
        &d,
        resp.signature.as_ref().unwrap()
    ));

    let cases: Vec<(&str, Vec<u8>, u16)> = {
        let mut v = Vec::new();
        let mut r = good.clone();
        r.signature = STANDARD.encode([7u8; 64]);
        v.push(("bad signature", serde_json::to_vec(&r).unwrap(), 401));
        let stranger = key("stranger");
        let r = ProofRequest::signed(&stranger, &validator, s, &root, count, vec![0], now_ns());
        v.push(("unknown signer", serde_json::to_vec(&r).unwrap(), 401));
        let r = ProofRequest::signed(
            &stranger,
            &stranger.address(),
            s,
            &root,
            count,
            vec![0],
            now_ns(),
        );
        v.push((
            "unregistered validator",
            serde_json::to_vec(&r).unwrap(),
            401,
        ));
        let r = ProofRequest::signed(
            &env.warm[0],
            &validator,
            s,
            &root,
            count,
            vec![0],
            now_ns() - 600_000_000_000,
        );
        v.push((
            "replayed old timestamp",
            serde_json::to_vec(&r).unwrap(),
            400,
        ));
        let r = ProofRequest::signed(
            &env.warm[0],
            &validator,
            s,
            &root,
            count,
            (0..501).collect(),
            now_ns(),
        );
        v.push(("501 indices", serde_json::to_vec(&r).unwrap(), 400));
        let r = ProofRequest::signed(
            &env.warm[0],
            &validator,
            s,
            &root,
            count + 1000,
            vec![0],
            now_ns(),
        );
        v.push((
            "count beyond the store",
            serde_json::to_vec(&r).unwrap(),
            400,
        ));
        let r = ProofRequest::signed(
            &env.warm[0],
            &validator,
            s,
            &[9u8; 32],
            count,
            vec![0],
            now_ns(),
        );
        v.push(("wrong root", serde_json::to_vec(&r).unwrap(), 400));
        let r = ProofRequest::signed(
            &env.warm[0],
            &validator,
            s,
            &root,
            count,
            vec![count],
            now_ns(),
        );
        v.push(("index out of range", serde_json::to_vec(&r).unwrap(), 400));
        let r = ProofRequest::signed(
            &env.warm[0],
            &validator,
            999,
            &root,
            count,
            vec![0],
            now_ns(),
        );
        v.push(("unknown stage", serde_json::to_vec(&r).unwrap(), 404));
        v.push(("garbage JSON", b"{not json".to_vec(), 400));
        v.push(("huge body", vec![b' '; 300 * 1024], 413));
        v
    };
    for (what, body, want) in cases {
        let (status, text) = post(body).await;
        if what == "huge body" && status == 0 {
            continue; // refused before the body was read: the connection was closed on it
        }
        assert_eq!(status, want, "{what}: {text}");
        assert!(!text.contains("\"proofs\""), "{what}: nothing served");
    }
    // Rate limit: a burst beyond 30 from one address is refused with 429.
    let mut limited = 0;
    for _ in 0..40 {
        if post(b"{}".to_vec()).await.0 == 429 {
            limited += 1;
        }
    }
    assert!(limited > 0);
    // Behind a proxy the client is the first X-Forwarded-For address (then X-Real-IP):
    // another validator there has its own bucket; the limited one stays limited.
    let via_proxy = |forwarded: &'static str, real: Option<&'static str>| {
        let http = http.clone();
        let url = format!("{base}/v1/poc/proofs");
        async move {
            let mut r = http
                .post(url)
                .header("content-type", "application/json")
                .header("x-forwarded-for", forwarded);
            if let Some(ip) = real {
                r = r.header("x-real-ip", ip);
            }
            r.body("{}").send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(via_proxy("203.0.113.7, 127.0.0.1", None).await, 400);
    assert_eq!(via_proxy("not an address", Some("198.51.100.4")).await, 400);
    let mut proxied_limited = 0;
    for _ in 0..40 {
        if via_proxy("203.0.113.9", None).await == 429 {
            proxied_limited += 1;
        }
    }
    assert!(
        proxied_limited > 0,
        "one proxied client is limited on its own"
    );
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("poc_proof_requests_rejected_total"));

    let Env {
        apis, ml, chain, ..
    } = env;
    for a in apis {
        a.shutdown().await;
    }
    for m in ml {
        m.shutdown().await;
    }
    chain.unwrap().shutdown().await;
}
