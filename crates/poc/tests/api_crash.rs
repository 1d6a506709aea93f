//! `poc api` killed with SIGKILL right after acknowledging artifacts: every artifact it
//! answered 200 for is in its store afterwards. The chain is a real `poc chain start`
//! process; the ML node is played by the test (it takes the callback URL from
//! `init/generate` and posts batches as fast as they are acknowledged).

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{free_port, json_out, poc, spawn};
use serde_json::{Value, json};

/// A twelve-value FP16 vector, finite, different per nonce.
fn vector(nonce: i64) -> String {
    let v: Vec<u8> = (0..12u16)
        .flat_map(|j| (0x3C00u16 + ((nonce as u16).wrapping_mul(7) + j) % 0x400).to_le_bytes())
        .collect();
    STANDARD.encode(v)
}

#[test]
fn acknowledged_artifacts_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let p = |x: &str| dir.path().join(x).display().to_string();
    // A chain whose first PoC starts at height 10 and generates for 300 blocks.
    json_out(&poc(&[
        "chain",
        "init",
        "--home",
        &p("keys-home"),
        "--participants",
        "1",
    ]));
    let mut genesis: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("keys-home/genesis.json")).unwrap())
            .unwrap();
    let ep = &mut genesis["params"]["epoch_params"];
    ep["epoch_length"] = json!("400");
    ep["epoch_shift"] = json!("390");
    ep["poc_stage_duration"] = json!("300");
    std::fs::write(dir.path().join("genesis.json"), genesis.to_string()).unwrap();
    json_out(&poc(&[
        "chain",
        "init",
        "--home",
        &p("chain"),
        "--genesis",
        &p("genesis.json"),
    ]));
    let chain_port = free_port();
    let _chain = spawn(&[
        "chain",
        "start",
        "--home",
        &p("chain"),
        "--block-time",
        "200ms",
        "--rest",
        &format!("127.0.0.1:{chain_port}"),
        "--rpc",
        "off",
    ]);
    json_out(&poc(&["keys", "new", "--out", &p("operational.key")]));

    let rt = tokio::runtime::Runtime::new().unwrap();
    // The ML node: remembers the callback URL it is given.
    let url: Arc<Mutex<Option<String>>> = Arc::default();
    let ml_port = {
        let url = Arc::clone(&url);
        let app = axum::Router::new()
            .route(
                "/api/v1/inference/pow/status",
                get(|| async { Json(json!({"status": "IDLE"})) }),
            )
            .route(
                "/api/v1/inference/pow/init/generate",
                post(move |Json(b): Json<Value>| async move {
                    *url.lock().unwrap() = b["url"].as_str().map(str::to_owned);
                    Json(json!({"status": "OK"}))
                }),
            )
            .route(
                "/api/v1/inference/pow/stop",
                post(|| async { Json(json!({"status": "OK"})) }),
            );
        rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = l.local_addr().unwrap().port();
            tokio::spawn(async move { axum::serve(l, app).await });
            port
        })
    };
    let (public, ml) = (free_port(), free_port());
    let api_args: Vec<String> = [
        "api",
        "--chain-url",
        &format!("http://127.0.0.1:{chain_port}"),
        "--account-key",
        &p("keys-home/keys/participant-0.key"),
        "--operational-key",
        &p("operational.key"),
        "--public-url",
        &format!("http://127.0.0.1:{public}"),
        "--public-listen",
        &format!("127.0.0.1:{public}"),
        "--ml-listen",
        &format!("127.0.0.1:{ml}"),
        "--data-dir",
        &p("api-data"),
        "--ml-node",
        &format!("ml-0=http://127.0.0.1:{ml_port}"),
        "--allow-private-targets",
        "true",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let api_args: Vec<&str> = api_args.iter().map(String::as_str).collect();
    let mut api = spawn(&api_args);
    let t = Instant::now();
    let base = loop {
        if let Some(u) = url.lock().unwrap().clone() {
            break u;
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "generation never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(base.contains("/cb/"), "a tokened callback URL: {base}");

    // Post batches; kill the node right after the 30th acknowledgement.
    let acked: BTreeSet<i64> = rt.block_on(async {
        let http = reqwest::Client::new();
        let mut acked = BTreeSet::new();
        let mut batches = 0;
        let mut next = 0i64;
        while batches < 30 {
            let nonces: Vec<i64> = (next..next + 200).collect();
            next += 200;
            let body = json!({
                "block_height": 10, "node_id": 0, "public_key": "", "block_hash": "",
                "artifacts": nonces.iter().map(|n| json!({"nonce": n, "vector_b64": vector(*n)})).collect::<Vec<_>>(),
                "encoding": {"dtype": "f16", "k_dim": 12, "endian": "le"},
            });
            let r = http
                .post(format!("{base}/generated"))
                .json(&body)
                .send()
                .await
                .unwrap();
            if r.status().is_success() {
                acked.extend(nonces);
                batches += 1;
            } else {
                // Only "not yet" answers are expected before the stage is current.
                assert_eq!(r.status().as_u16(), 503, "{}", r.text().await.unwrap());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        acked
    });
    api.0.kill().unwrap();
    api.0.wait().unwrap();

    let stage_dir = dir.path().join("api-data").join("10");
    {
        let store = poc_store::ArtifactStore::open(&stage_dir).unwrap();
        let stored: BTreeSet<i64> = (0..store.count())
            .map(|l| i64::from(store.artifact(l).unwrap().nonce))
            .collect();
        let lost: Vec<&i64> = acked.difference(&stored).collect();
        assert!(
            lost.is_empty(),
            "{} of {} acknowledged artifacts lost (first {:?})",
            lost.len(),
            acked.len(),
            lost.first()
        );
        assert_eq!(acked.len(), 6000);
    }

    // Restarted, the node takes the ML node's batches on the URL the ML node already has
    // (an ML node that kept generating through the crash goes on posting there).
    *url.lock().unwrap() = None;
    let _api = spawn(&api_args);
    rt.block_on(async {
        let http = reqwest::Client::new();
        let body = json!({
            "block_height": 10, "node_id": 0,
            "artifacts": (6000..6100).map(|n| json!({"nonce": n, "vector_b64": vector(n)})).collect::<Vec<_>>(),
        });
        let t = Instant::now();
        loop {
            let r = http
                .post(format!("{base}/generated"))
                .json(&body)
                .send()
                .await;
            if r.as_ref().is_ok_and(|r| r.status().is_success()) {
                break;
            }
            // Not listening yet, not synced yet (503) or the stage's tokens not issued yet
            // (403) while it starts.
            assert!(
                t.elapsed() < Duration::from_secs(90),
                "the restarted node never took the old URL: {:?}",
                r.map(|r| r.status())
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let t = Instant::now();
    while url.lock().unwrap().is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "generation restarted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        url.lock().unwrap().as_deref(),
        Some(base.as_str()),
        "the restarted node hands the ML node the same URL"
    );
}
