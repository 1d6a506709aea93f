//! The ML node's PoC v1 API over HTTP: generation with callbacks, validation with the
//! fraud test, status, stop, and v1/v2 exclusion.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use candle_core::{DType, Device};
use poc_mlnode::{MlNodeConfig, PocSettings};
use poc_model::presets::{Preset, write_preset};
use poc_v1::compute::V1Round;
use poc_v1::params::V1Params;
use serde_json::{Value, json};

type Inbox = Arc<Mutex<Vec<(String, Value)>>>;

async fn receiver() -> (String, Inbox) {
    let inbox: Inbox = Arc::default();
    let (a, b) = (Arc::clone(&inbox), Arc::clone(&inbox));
    let app = Router::new()
        .route(
            "/v1/poc-batches/generated",
            post(move |axum::Json(v): axum::Json<Value>| async move {
                a.lock().unwrap().push(("generated".into(), v));
                ""
            }),
        )
        .route(
            "/v1/poc-batches/validated",
            post(move |axum::Json(v): axum::Json<Value>| async move {
                b.lock().unwrap().push(("validated".into(), v));
                ""
            }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (format!("http://{addr}/v1/poc-batches"), inbox)
}

async fn wait_for(inbox: &Inbox, kind: &str, n: usize) -> Vec<Value> {
    let t = Instant::now();
    loop {
        let got: Vec<Value> = inbox
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, v)| v.clone())
            .collect();
        if got.len() >= n {
            return got;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "no {kind} callback");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_generation_validation_and_exclusion() {
    let dir = tempfile::tempdir().unwrap();
    write_preset(Preset::TinyDense, dir.path()).unwrap();
    let node = poc_mlnode::start(MlNodeConfig {
        model: dir.path().to_owned(),
        served_model_names: vec!["tiny".into()],
        listen: "127.0.0.1:0".parse().unwrap(),
        dtype: Some(DType::F32),
        devices: vec![],
        fp8: None,
        settings: PocSettings {
            callback_interval: Duration::from_millis(200),
            ..PocSettings::default()
        },
        body_limit: 1 << 20,
        http: Default::default(),
    })
    .await
    .unwrap();
    let base = format!("http://{}", node.addr);
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        let (http, url) = (http.clone(), format!("{base}{path}"));
        async move {
            let r = http.post(url).json(&body).send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let get = |path: &str| {
        let (http, url) = (http.clone(), format!("{base}{path}"));
        async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let (url, inbox) = receiver().await;
    let r_target = 1.415;
    let init = json!({
        "node_id": 0, "node_count": 1, "block_hash": "v1-block", "block_height": 40, "public_key": "v1-pk",
        "batch_size": 100, "r_target": r_target, "fraud_threshold": 1e-7,
        "params": serde_json::to_value(V1Params::tiny()).unwrap(), "url": url,
    });
    assert_eq!(
        get("/api/v1/pow/status").await["status"],
        "IDLE",
        "v2 backend status while v1 is not loaded"
    );
    let mut bad = init.clone();
    bad["node_id"] = json!(-1);
    assert_eq!(post("/api/v1/pow/init/generate", bad).await.0, 400);
    let (code, body) = post("/api/v1/pow/init/generate", init.clone()).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["pow_status"]["status"], "GENERATING");
    assert_eq!(
        get("/api/v1/pow/status").await,
        json!({"status": "GENERATING", "is_model_initialized": true})
    );
    // Idempotent while generating with the same body.
    assert_eq!(post("/api/v1/pow/init/generate", init.clone()).await.0, 200);

    let batches = wait_for(&inbox, "generated", 2).await;
    let round = V1Round::build(&V1Params::tiny(), "v1-block", &Device::Cpu).unwrap();
    let mut seen = Vec::new();
    for b in &batches {
        assert_eq!(
            (
                b["block_hash"].as_str(),
                b["public_key"].as_str(),
                b["block_height"].as_i64(),
                b["node_id"].as_i64()
            ),
            (Some("v1-block"), Some("v1-pk"), Some(40), Some(0))
        );
        let nonces: Vec<i64> = b["nonces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect();
        let dist: Vec<f64> = b["dist"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(
            round.distances("v1-pk", &nonces).unwrap(),
            dist,
            "reported distances are the model's"
        );
        assert!(dist.iter().all(|d| *d < r_target));
        seen.extend(nonces);
    }
    // Only passing nonces are reported: the first ones that fail are missing.
    let max = *seen.iter().max().unwrap();
    let all: Vec<i64> = (0..=max).collect();
    let d = round.distances("v1-pk", &all).unwrap();
    let passing: Vec<i64> = all
        .iter()
        .zip(&d)
        .filter(|(_, d)| **d < r_target)
        .map(|(n, _)| *n)
        .collect();
    assert!(passing.len() < all.len(), "some nonces fail r_target");
    assert!(seen.iter().all(|n| passing.contains(n)));

    // Validation: an honest batch and one claiming failing nonces as proofs.
    let (code, body) = post("/api/v1/pow/init/validate", init.clone()).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(get("/api/v1/pow/status").await["status"], "VALIDATING");
    let honest: Vec<i64> = passing.iter().take(10).copied().collect();
    let honest_d = round.distances("v1-pk", &honest).unwrap();
    let failing: Vec<i64> = all
        .iter()
        .zip(&d)
        .filter(|(_, d)| **d >= r_target)
        .map(|(n, _)| *n)
        .take(6)
        .collect();
    assert!(failing.len() >= 5);
    let pb = |nonces: &[i64], dist: Vec<f64>| json!({"public_key": "v1-pk", "block_hash": "v1-block", "block_height": 40, "nonces": nonces, "dist": dist, "node_id": 0});
    assert_eq!(
        post("/api/v1/pow/validate", pb(&honest, honest_d.clone()))
            .await
            .0,
        200
    );
    assert_eq!(
        post(
            "/api/v1/pow/validate",
            pb(&failing, vec![1.0; failing.len()])
        )
        .await
        .0,
        200
    );
    let mut wrong_block = pb(&honest, honest_d);
    wrong_block["block_hash"] = json!("other");
    assert_eq!(post("/api/v1/pow/validate", wrong_block).await.0, 400);
    let v = wait_for(&inbox, "validated", 2).await;
    let honest_v = v
        .iter()
        .find(|x| x["nonces"].as_array().unwrap().len() == 10)
        .unwrap();
    assert_eq!(
        (
            honest_v["n_invalid"].as_u64(),
            honest_v["fraud_detected"].as_bool()
        ),
        (Some(0), Some(false))
    );
    assert_eq!(honest_v["probability_honest"], 1.0);
    let fake = v
        .iter()
        .find(|x| x["nonces"].as_array().unwrap().len() == failing.len())
        .unwrap();
    assert_eq!(fake["n_invalid"].as_u64(), Some(failing.len() as u64));
    assert_eq!(fake["fraud_detected"], true);
    assert_eq!(fake["received_dist"][0], 1.0);

    // Stop, then v2 takes the node over and v1 is released.
    let (code, body) = post("/api/v1/pow/stop", json!({})).await;
    assert_eq!((code, body["status"].as_str()), (200, Some("OK")));
    assert_eq!(get("/api/v1/pow/status").await["status"], "IDLE");
    let v2 = json!({"block_hash": "h", "block_height": 1, "public_key": "k", "node_id": 0, "node_count": 1, "params": {"model": "tiny", "seq_len": 16}});
    let (code, body) = post("/api/v1/inference/pow/init/generate", v2).await;
    assert_eq!(code, 200, "{body}");
    let s = get("/api/v1/pow/status").await;
    assert_eq!(s["status"], "GENERATING");
    assert!(
        s.get("is_model_initialized").is_none(),
        "the v2 backend status, not v1's"
    );
    post("/api/v1/inference/pow/stop", json!({})).await;
    node.shutdown().await;
}
