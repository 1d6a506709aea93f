//! The defects an adversarial campaign found, each reproduced against real components
//! (a chain node, ML nodes on the tiny checkpoint, API nodes on their default settings,
//! all over loopback HTTP): forged verdicts, vectors that validation would reject, held
//! half-open connections, an ML node restarted in the middle of a stage. (Votes landing
//! on default timings is the devnet scenario `two_participants_on_api_defaults_...`; a
//! kill -9 after acknowledged artifacts is the `poc` command-line test `api_crash`.)

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use candle_core::DType;
use poc_api::callbacks::Grant;
use poc_api::config::{ApiConfig, MlNodeEntry};
use poc_api::{RunningApi, start};
use poc_chain::decimal::Decimal;
use poc_chain::epoch::Phase;
use poc_chain::keys::PrivateKey;
use poc_chain::params::Params;
use poc_chain_client::ChainClient;
use poc_chain_node::{RunningChain, home};
use poc_mlnode::settings::PocSettings;
use poc_mlnode::{MlNodeConfig, RunningNode};
use poc_model::presets::{Preset, write_preset};
use serde_json::{Value, json};

use common::{chainless_api, free_addr, key};

/// Chain parameters: the first PoC at height 10, `stage` generation blocks, then a
/// 12-block validation window.
fn params(stage: i64) -> Params {
    let mut p = home::local_params();
    let ep = &mut p.epoch_params;
    ep.epoch_length = stage + 60;
    ep.epoch_shift = ep.epoch_length - 10;
    ep.poc_stage_duration = stage;
    ep.poc_exchange_duration = 2;
    ep.poc_validation_delay = 2;
    ep.poc_validation_duration = 12;
    let pp = &mut p.poc_params;
    pp.model_id = "tiny".into();
    pp.seq_len = 16;
    pp.validation_sample_size = 20;
    pp.stat_test = Some(poc_chain::params::StatTestParams {
        dist_threshold: Some(Decimal::new(5, -2)),
        p_mismatch: Some(Decimal::new(1, -2)),
        p_value_threshold: Some(Decimal::new(5, -2)),
    });
    p.confirmation_poc_params.expected_confirmations_per_epoch = 0;
    p
}

const S: i64 = 10;

struct Net {
    dir: tempfile::TempDir,
    chain: Option<RunningChain>,
    client: ChainClient,
    model: std::path::PathBuf,
    ml: Vec<Option<RunningNode>>,
    ml_addrs: Vec<SocketAddr>,
    apis: Vec<RunningApi>,
    accounts: Vec<PrivateKey>,
}

async fn ml_node(model: &std::path::Path, listen: SocketAddr) -> RunningNode {
    poc_mlnode::start(MlNodeConfig {
        model: model.to_path_buf(),
        served_model_names: vec!["tiny".into()],
        listen,
        dtype: Some(DType::F32),
        devices: vec![],
        fp8: None,
        settings: PocSettings {
            callback_interval: Duration::from_millis(300),
            ..PocSettings::default()
        },
        body_limit: 16 << 20,
        http: Default::default(),
    })
    .await
    .unwrap()
}

/// `n` participants, each with an ML node (real, or with `real_ml` false one that never
/// answers) and an API node on its default settings.
async fn net(n: usize, params: Params, block_time: Duration, real_ml: bool) -> Net {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    write_preset(Preset::TinyDense, &model).unwrap();
    let accounts: Vec<PrivateKey> = (0..n).map(|i| key(&format!("acc-{i}"))).collect();
    let chain = common::chain(dir.path(), "hardening", params, &accounts, block_time).await;
    let chain_url = format!("http://{}", chain.addr);
    let mut ml = Vec::new();
    let mut ml_addrs = Vec::new();
    for _ in 0..n {
        if real_ml {
            let node = ml_node(&model, "127.0.0.1:0".parse().unwrap()).await;
            ml_addrs.push(node.addr);
            ml.push(Some(node));
        } else {
            ml_addrs.push(free_addr());
            ml.push(None);
        }
    }
    let mut apis = Vec::new();
    for i in 0..n {
        let kd = dir.path().join(format!("keys-{i}"));
        std::fs::create_dir_all(&kd).unwrap();
        home::write_key(&kd.join("account.key"), &accounts[i]).unwrap();
        home::write_key(&kd.join("warm.key"), &key(&format!("warm-{i}"))).unwrap();
        let cfg = ApiConfig {
            ml_nodes: vec![MlNodeEntry {
                id: format!("ml-{i}"),
                url: format!("http://{}", ml_addrs[i]),
            }],
            allow_private_targets: true,
            ..ApiConfig::new(
                chain_url.clone(),
                kd.join("account.key"),
                kd.join("warm.key"),
                free_addr(),
                "127.0.0.1:0".parse().unwrap(),
                dir.path().join(format!("data-{i}")),
            )
        };
        apis.push(start(cfg).await.unwrap());
    }
    Net {
        dir,
        client: ChainClient::new(&chain_url),
        chain: Some(chain),
        model,
        ml,
        ml_addrs,
        apis,
        accounts,
    }
}

impl Net {
    async fn shutdown(mut self) {
        for a in self.apis.drain(..) {
            a.shutdown().await;
        }
        for m in self.ml.drain(..).flatten() {
            m.shutdown().await;
        }
        if let Some(c) = self.chain.take() {
            c.shutdown().await;
        }
    }

    /// Waits until API node `i` sees a view satisfying `f`.
    async fn wait_view(
        &self,
        i: usize,
        what: &str,
        limit: Duration,
        f: impl Fn(&poc_api::phase::ChainView) -> bool,
    ) {
        let t = Instant::now();
        loop {
            if self.apis[i].shared.view().is_some_and(|v| f(&v)) {
                return;
            }
            assert!(t.elapsed() < limit, "{what}: not reached in {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stored(&self, i: usize, stage: i64) -> u64 {
        self.apis[i]
            .shared
            .stores
            .get(stage as u64)
            .map_or(0, |s| s.count())
    }
}

async fn post(url: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A forged verdict, posted without a token, with a token never issued, or with a token
/// issued for something else, is refused and changes nothing: the honest vote on chain
/// is the one the validator's ML node computed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_verdicts_are_refused_and_the_real_vote_stands() {
    let net = net(2, params(8), Duration::from_millis(250), true).await;
    let victim = net.accounts[1].public_key_hex();
    net.wait_view(0, "validation", Duration::from_secs(60), |v| {
        v.phase() == Phase::PoCValidate
    })
    .await;
    let api = &net.apis[0];
    let ml = format!("http://{}", api.ml_addr);
    let forged =
        json!({"block_height": S, "public_key": victim, "n_total": 0, "fraud_detected": true});
    // The campaign's request: no token at all.
    let (status, _) = post(&format!("{ml}/v2/poc-batches/validated"), &forged).await;
    assert_eq!(status, 404);
    // A guessed token.
    let (status, body) = post(
        &format!("{ml}/cb/00112233445566778899aabbccddeeff/v2/poc-batches/validated"),
        &forged,
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        body["error"].as_str().unwrap().contains("unknown"),
        "{body}"
    );
    // A generation URL (what an ML node knows) cannot carry a verdict.
    let gen_url = api
        .shared
        .callback_url(Grant::Generation { stage: S, node: 0 }, 1000);
    assert_eq!(post(&format!("{gen_url}/validated"), &forged).await.0, 403);
    // A validation URL issued for the other participant cannot carry a verdict on this one.
    let other = api.shared.callback_url(
        Grant::Validation {
            stage: S,
            participant: net.accounts[0].public_key_hex(),
        },
        1000,
    );
    assert_eq!(post(&format!("{other}/validated"), &forged).await.0, 403);
    assert!(api.shared.metrics.get("poc_callbacks_refused_total") >= 3);

    // After the stage, every vote on chain is the real one.
    let end = S + 8 + 2 + 12;
    let t = Instant::now();
    while net.client.status().await.unwrap().height <= end + 1 {
        assert!(t.elapsed() < Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let v = net.client.validations_v2(S).await.unwrap();
    assert_eq!(v.poc_validation.len(), 2);
    for rec in &v.poc_validation {
        assert_eq!(rec.poc_validation.len(), 2, "{}", rec.participant);
        for vote in &rec.poc_validation {
            assert_eq!(
                vote.validated_weight, 20,
                "{} on {}: the recomputed verdict (n_total = sample size)",
                vote.validator_participant_address, rec.participant
            );
        }
    }
    net.shutdown().await;
}

/// Vectors the validators would reject (wrong length, NaN, infinite, too long), nonces
/// out of range, a wrong encoding, another node's id: the batch is refused whole with a
/// 400 naming the item, and nothing of it is stored. A good batch is stored, and
/// answered only once durable; resending it stores nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_batches_are_refused_whole() {
    let net = net(1, params(400), Duration::from_millis(100), false).await;
    net.wait_view(0, "generation", Duration::from_secs(30), |v| {
        v.accept_generated() && v.current_stage().height() == S
    })
    .await;
    let api = &net.apis[0];
    let url = format!(
        "{}/generated",
        api.shared
            .callback_url(Grant::Generation { stage: S, node: 0 }, 1000)
    );
    let good = |nonce: i64| {
        let v: Vec<u8> = (0..12u16)
            .flat_map(|j| (0x3C00u16 + j + nonce as u16).to_le_bytes())
            .collect();
        json!({"nonce": nonce, "vector_b64": STANDARD.encode(v)})
    };
    let with = |bad: Value| {
        json!({"block_height": S, "node_id": 0, "public_key": "x", "block_hash": "y",
               "artifacts": [good(0), good(1), bad],
               "encoding": {"dtype": "f16", "k_dim": 12, "endian": "le"}})
    };
    let bytes = |b: Vec<u8>| json!({"nonce": 2, "vector_b64": STANDARD.encode(b)});
    let mut nan = vec![0u8; 24];
    nan[4..6].copy_from_slice(&0x7E00u16.to_le_bytes());
    let mut inf = vec![0u8; 24];
    inf[22..24].copy_from_slice(&0xFC00u16.to_le_bytes());
    let cases: Vec<(Value, &str)> = vec![
        (with(bytes(vec![1])), "1 bytes"),
        (with(bytes(vec![0; 23])), "23 bytes"),
        (with(bytes(nan)), "NaN"),
        (with(bytes(inf)), "NaN or infinite"),
        (with(bytes(vec![0; 5000])), "5000 bytes"),
        (
            with(json!({"nonce": -1, "vector_b64": STANDARD.encode([0u8; 24])})),
            "nonce -1",
        ),
        (
            with(json!({"nonce": 1i64 << 31, "vector_b64": STANDARD.encode([0u8; 24])})),
            "nonce 2147483648",
        ),
        (with(json!({"nonce": 2, "vector_b64": "@@@"})), "base64"),
    ];
    for (body, why) in &cases {
        let (status, resp) = post(&url, body).await;
        let msg = resp["error"].as_str().unwrap_or_default().to_owned();
        assert_eq!(status, 400, "{why}: {msg}");
        assert!(
            msg.contains("artifacts[2]") && msg.contains(why),
            "{why}: {msg}"
        );
        assert!(msg.contains("nothing stored"), "{msg}");
        assert_eq!(net.stored(0, S), 0, "{why}: nothing of the batch stored");
    }
    let mut wrong_encoding = with(good(2));
    wrong_encoding["encoding"]["k_dim"] = json!(8);
    assert_eq!(post(&url, &wrong_encoding).await.0, 400);
    let mut wrong_node = with(good(2));
    wrong_node["node_id"] = json!(1);
    assert_eq!(post(&url, &wrong_node).await.0, 400);
    let mut wrong_stage = with(good(2));
    wrong_stage["block_height"] = json!(S + 1);
    assert_eq!(post(&url, &wrong_stage).await.0, 400);
    assert_eq!(net.stored(0, S), 0);
    assert_eq!(
        api.shared.metrics.get("poc_artifact_batches_refused_total"),
        cases.len() as u64 + 1
    );

    // A good batch: 200, stored, durable (a fresh open of the stage's files sees it).
    let batch = with(good(2));
    let (status, _) = post(&url, &batch).await;
    assert_eq!(status, 200);
    assert_eq!(net.stored(0, S), 3);
    let copy = net.dir.path().join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    let stage_dir = net.dir.path().join("data-0").join(S.to_string());
    for f in std::fs::read_dir(&stage_dir).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), copy.join(f.file_name())).unwrap();
    }
    assert_eq!(poc_store::ArtifactStore::open(&copy).unwrap().count(), 3);
    // Resent (a lost acknowledgement): accepted, nothing stored twice.
    assert_eq!(post(&url, &batch).await.0, 200);
    assert_eq!(net.stored(0, S), 3);
    assert_eq!(api.shared.metrics.get("poc_artifacts_duplicate_total"), 3);
    net.shutdown().await;
}

/// Half-sent requests held per port (each costs the test process two descriptors).
const HELD: usize = 150;

/// Holds half-sent requests open on both of the API node's ports; the node keeps
/// answering, then closes every one of them after its header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn held_half_open_connections_are_closed_while_health_answers() {
    let dir = tempfile::tempdir().unwrap();
    let api = chainless_api(dir.path(), |c| ApiConfig {
        http: poc_http::HttpLimits {
            header_timeout_s: 2.0,
            ..Default::default()
        },
        ..c
    })
    .await;
    let (public, ml) = (api.public_addr, api.ml_addr);
    let held = tokio::task::spawn_blocking(move || {
        let mut v = Vec::new();
        for addr in [public, ml] {
            for _ in 0..HELD {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(b"POST /v1/poc/proofs HTTP/1.1\r\nHost: x\r\nContent-Le")
                    .unwrap();
                v.push(s);
            }
        }
        v
    })
    .await
    .unwrap();
    let t = Instant::now();
    while api.shared.public_stats.open_connections() < HELD
        || api.shared.callback_stats.open_connections() < HELD
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "connections accepted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let http = reqwest::Client::new();
    let health: Value = http
        .get(format!("http://{public}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "syncing");
    let r = http
        .post(format!("http://{ml}/cb/nope/v2/poc-batches/generated"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        403,
        "the callback listener answers too"
    );
    assert!(
        api.shared.public_stats.open_connections() >= HELD,
        "still held"
    );
    let closed = tokio::task::spawn_blocking(move || {
        held.into_iter()
            .map(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let mut b = [0u8; 64];
                match s.read(&mut b) {
                    Ok(n) => n == 0,
                    Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
                }
            })
            .filter(|c| *c)
            .count()
    })
    .await
    .unwrap();
    assert_eq!(
        closed,
        2 * HELD,
        "the server closed every half-sent request"
    );
    api.shutdown().await;
}

/// An ML node killed in the middle of a stage and started again is put back to work in
/// the same stage, resuming after the nonces it already delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ml_node_restarted_mid_stage_generates_again() {
    let mut net = net(1, params(400), Duration::from_millis(100), true).await;
    let t = Instant::now();
    while net.stored(0, S) < 16 {
        assert!(t.elapsed() < Duration::from_secs(60), "first artifacts");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let node = net.ml[0].take().unwrap();
    node.shutdown().await;
    let before = net.stored(0, S);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        net.stored(0, S),
        before,
        "nothing arrives while the node is down"
    );
    net.ml[0] = Some(ml_node(&net.model.clone(), net.ml_addrs[0]).await);
    let t = Instant::now();
    while net.stored(0, S) < before + 16 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the restarted node delivers again ({} stored)",
            net.stored(0, S)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v = net.apis[0].shared.view().unwrap();
    assert!(
        v.accept_generated() && v.current_stage().height() == S,
        "same stage"
    );
    let m = &net.apis[0].shared.metrics;
    assert!(m.get("poc_generation_starts_total") >= 2);
    assert_eq!(
        m.get("poc_artifacts_duplicate_total"),
        0,
        "resumed after the last stored nonce, nothing recomputed"
    );
    net.shutdown().await;
}

/// Connections to the callback server from an address outside `callback_allow` are
/// closed before anything is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_from_outside_the_allow_list_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let api = chainless_api(dir.path(), |c| ApiConfig {
        callback_allow: vec!["10.9.9.0/24".into()],
        ..c
    })
    .await;
    let url = api
        .shared
        .callback_url(Grant::Generation { stage: 5, node: 0 }, 100);
    let r = reqwest::Client::new()
        .post(format!("{url}/generated"))
        .json(&json!({}))
        .send()
        .await;
    assert!(r.is_err(), "no answer to a refused address: {r:?}");
    assert!(api.shared.callback_stats.refused_connections() >= 1);
    assert_eq!(api.shared.callback_stats.accepted_connections(), 0);
    assert!(api.shared.metrics.get("poc_callbacks_refused_total") >= 1);
    // The public port is not filtered.
    let health = reqwest::get(format!("http://{}/health", api.public_addr))
        .await
        .unwrap();
    assert!(health.status().is_success());
    api.shutdown().await;
}
