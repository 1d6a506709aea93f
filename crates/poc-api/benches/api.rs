//! API node hot paths over real HTTP on loopback, with a real chain node: artifact
//! ingestion, 200-leaf proof requests, and validating N participants (fetch + strict
//! verification of 200 samples each; the ML recompute is not included).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use poc_api::callbacks::Grant;
use poc_api::config::{ApiConfig, MlNodeEntry, ValidationConfig};
use poc_api::proofs::ProofRequest;
use poc_api::sampling::sample_leaf_indices;
use poc_api::validator::{ProofFetcher, WorkItem};
use poc_chain::genesis::{Genesis, GenesisParticipant};
use poc_chain::keys::PrivateKey;
use poc_chain_node::{NodeConfig, home};
use sha2::{Digest, Sha256};

const STORE: i64 = 100_000;

fn key(name: &str) -> PrivateKey {
    PrivateKey::from_bytes(&Sha256::digest(name.as_bytes())).unwrap()
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

fn vector(i: i64) -> String {
    let v: Vec<u8> = (0..12u16)
        .flat_map(|k| (0x3C00u16 + (i as u16 & 0x1FF) + k).to_le_bytes())
        .collect();
    STANDARD.encode(v)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prover = key("prover");
    let validator = key("validator");
    let warm = key("prover-warm");
    let vwarm = key("validator-warm");
    let mut params = home::local_params();
    params.epoch_params.epoch_length = 1_000_000;
    params.epoch_params.epoch_shift = 1_000_000 - 3; // PoC starts at 3 and generates for long
    params.epoch_params.poc_stage_duration = 500_000;
    let genesis = Genesis {
        chain_id: "bench".into(),
        genesis_time: 0,
        authority: key("auth").address(),
        params,
        consensus_validators: Vec::new(),
        participants: [&prover, &validator]
            .iter()
            .map(|k| GenesisParticipant {
                address: k.address(),
                hex_pub_key: k.public_key_hex(),
                inference_url: String::new(),
                validator_key: "v".into(),
                weight: 10,
            })
            .collect(),
    };
    let ch = dir.path().join("chain");
    home::init(&ch, Some(genesis), "", 0).unwrap();
    let (chain, api, vapi) = rt.block_on(async {
        let chain = poc_chain_node::start(NodeConfig {
            home: ch,
            rpc: None,
            block_time: Duration::from_millis(200),
            rest: "127.0.0.1:0".parse().unwrap(),
            snapshot_interval: 0,
            http: Default::default(),
        })
        .await
        .unwrap();
        let mk = |name: &str, acc: &PrivateKey, w: &PrivateKey| {
            home::write_key(&dir.path().join(format!("{name}-a.key")), acc).unwrap();
            home::write_key(&dir.path().join(format!("{name}-w.key")), w).unwrap();
            ApiConfig {
                chain_url: format!("http://{}", chain.addr),
                chain_rpc_url: None,
                account_key: dir.path().join(format!("{name}-a.key")),
                operational_key: dir.path().join(format!("{name}-w.key")),
                public_url: "http://127.0.0.1:1".into(),
                public_listen: "127.0.0.1:0".parse().unwrap(),
                ml_listen: "127.0.0.1:0".parse().unwrap(),
                callback_url: None,
                data_dir: dir.path().join(format!("{name}-data")),
                ml_nodes: vec![MlNodeEntry {
                    id: "n0".into(),
                    url: "http://127.0.0.1:1".into(),
                }],
                commit_interval_s: 3600.0,
                chain_poll_s: 0.1,
                health_interval_s: 3600.0,
                allow_private_targets: true,
                keep_stages: 10,
                proof_rate_per_sec: 1e9,
                proof_rate_burst: 1e9,
                trust_forwarded_headers: true,
                callback_allow: vec![],
                http: Default::default(),
                v1: Default::default(),
                validation: ValidationConfig::default(),
            }
        };
        let api = poc_api::start(mk("prover", &prover, &warm)).await.unwrap();
        let vapi = poc_api::start(mk("validator", &validator, &vwarm))
            .await
            .unwrap();
        // Wait for the generation phase and the validator's grants.
        let t = Instant::now();
        while !api.shared.view().is_some_and(|v| v.accept_generated())
            || vapi.shared.view().is_none()
        {
            assert!(t.elapsed() < Duration::from_secs(30));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        (chain, api, vapi)
    });
    let stage = api.shared.view().unwrap().current_stage().height();
    let http = reqwest::Client::new();
    let ingest = format!(
        "{}/generated",
        api.shared
            .callback_url(Grant::Generation { stage, node: 0 }, i64::MAX)
    );
    let next = Arc::new(AtomicI64::new(0));
    let batch = |n: i64| {
        let start = next.fetch_add(n, Ordering::SeqCst);
        let artifacts: Vec<serde_json::Value> = (start..start + n)
            .map(|i| serde_json::json!({"nonce": i, "vector_b64": vector(i)}))
            .collect();
        serde_json::to_vec(&serde_json::json!({"block_hash": "00", "block_height": stage, "public_key": prover.public_key_hex(), "node_id": 0, "artifacts": artifacts, "encoding": {"dtype": "f16", "k_dim": 12, "endian": "le"}})).unwrap()
    };
    // Fill the store to STORE artifacts (also timed, as a plain number).
    let t = Instant::now();
    rt.block_on(async {
        while next.load(Ordering::SeqCst) < STORE {
            let r = http
                .post(&ingest)
                .header("content-type", "application/json")
                .body(batch(5000))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        }
    });
    eprintln!(
        "filled {STORE} artifacts through HTTP in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let mut g = c.benchmark_group("api::ingest");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("POST generated, 1000 artifacts", |b| {
        b.iter(|| {
            rt.block_on(async {
                http.post(&ingest)
                    .header("content-type", "application/json")
                    .body(batch(1000))
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
    });
    // Eight ML nodes' worth of concurrent batches: their fsyncs are shared.
    g.throughput(Throughput::Elements(8000));
    g.bench_function("POST generated, 8 concurrent x 1000 artifacts", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut set = tokio::task::JoinSet::new();
                for _ in 0..8 {
                    let (http, url, body) = (http.clone(), ingest.clone(), batch(1000));
                    set.spawn(async move {
                        http.post(&url)
                            .header("content-type", "application/json")
                            .body(body)
                            .send()
                            .await
                            .unwrap()
                            .status()
                    });
                }
                while let Some(r) = set.join_next().await {
                    assert!(r.unwrap().is_success());
                }
            })
        })
    });
    g.finish();
    // Flush, then serve proofs of the flushed snapshot.
    let store = api.shared.stores.get(stage as u64).unwrap();
    store.flush().unwrap();
    let snap = store.flushed();
    let (count, root) = (snap.count as u32, snap.root.unwrap());
    let proofs_url = format!("http://{}/v1/poc/proofs", api.public_addr);
    let indices = sample_leaf_indices(&validator.public_key_hex(), "ab", stage, count, 200);
    let mut g = c.benchmark_group("api::proofs");
    g.throughput(Throughput::Elements(1));
    g.bench_function("200-leaf proof request (serve)", |b| {
        b.iter(|| {
            let req = ProofRequest::signed(
                &vwarm,
                &validator.address(),
                stage,
                &root,
                count,
                indices.clone(),
                now_ns(),
            );
            rt.block_on(async {
                http.post(&proofs_url)
                    .json(&req)
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap()
                    .len()
            })
        })
    });
    g.finish();
    let fetcher = ProofFetcher {
        http: http.clone(),
        key: vwarm.clone(),
        validator: validator.address(),
        allow_private: true,
        timeout: Duration::from_secs(20),
        max_bytes: 4 << 20,
    };
    let signers = vec![(warm.address(), warm.public_key())];
    let item = WorkItem {
        address: prover.address(),
        url: format!("http://{}", api.public_addr),
        hex_pub_key: prover.public_key_hex(),
        count,
        root,
    };
    let mut g = c.benchmark_group("api::validate");
    g.sample_size(10);
    for n in [10usize, 100] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(
            format!("fetch+verify 200 samples x {n} participants, 10 workers"),
            |b| {
                b.iter(|| {
                    rt.block_on(async {
                        let sem = Arc::new(tokio::sync::Semaphore::new(10));
                        let mut set = tokio::task::JoinSet::new();
                        for p in 0..n {
                            let (f, item, signers, sem) = (
                                fetcher.clone(),
                                item.clone(),
                                signers.clone(),
                                Arc::clone(&sem),
                            );
                            let idx = sample_leaf_indices(
                                &validator.public_key_hex(),
                                &format!("{p}"),
                                stage,
                                count,
                                200,
                            );
                            set.spawn(async move {
                                let _p = sem.acquire().await.unwrap();
                                f.fetch(&item, stage, &idx, &signers).await.unwrap().len()
                            });
                        }
                        let mut total = 0;
                        while let Some(r) = set.join_next().await {
                            total += r.unwrap();
                        }
                        assert_eq!(total, 200 * n);
                    })
                })
            },
        );
    }
    g.finish();
    rt.block_on(async {
        api.shutdown().await;
        vapi.shutdown().await;
        chain.shutdown().await;
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
