//! The ML node over real HTTP on loopback, with a tiny checkpoint: every PoC route and
//! status code of the reference tests, callbacks, chat gating and streaming.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use candle_core::{DType, Device};
use poc_core::InputRng;
use poc_core::artifact::{decode_vector_f32, encode_f16, encode_vector};
use poc_mlnode::{ChatPolicy, MlNodeConfig, PocSettings, RunningNode};
use poc_model::presets::{Preset, write_preset};
use poc_model::{Checkpoint, PocEngine, PocParams, Qwen3Model};
use serde_json::{Value, json};

const SEQ: usize = 16;

struct Node {
    node: Option<RunningNode>,
    base: String,
    model: String,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Node {
    async fn start(settings: PocSettings) -> Self {
        Self::start_on(settings, vec![]).await
    }

    /// A node whose layers are split over `devices` (empty: the default device).
    async fn start_on(settings: PocSettings, devices: Vec<Device>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        write_preset(Preset::TinyDense, dir.path()).unwrap();
        let node = poc_mlnode::start(MlNodeConfig {
            model: dir.path().to_owned(),
            served_model_names: vec!["tiny".into()],
            listen: "127.0.0.1:0".parse().unwrap(),
            dtype: Some(DType::F32),
            devices,
            fp8: None,
            settings,
            body_limit: 1 << 20,
            http: Default::default(),
        })
        .await
        .unwrap();
        Self {
            base: format!("http://{}", node.addr),
            node: Some(node),
            model: "tiny".into(),
            dir,
            http: reqwest::Client::new(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post_raw(&self, path: &str, body: &'static str) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    fn init_body(&self, url: Option<&str>, node_id: u64, node_count: u64) -> Value {
        json!({
            "block_hash": "TEST_BLOCK", "block_height": 7, "public_key": "test_pub_keys",
            "node_id": node_id, "node_count": node_count, "batch_size": 4,
            "params": { "model": self.model, "seq_len": SEQ }, "url": url,
        })
    }

    fn generate_body(&self, nonces: &[i64], wait: bool) -> Value {
        json!({
            "block_hash": "TEST_BLOCK", "block_height": 7, "public_key": "test_pub_keys",
            "node_id": 0, "node_count": 1, "nonces": nonces, "batch_size": 4, "wait": wait,
            "params": { "model": self.model, "seq_len": SEQ },
        })
    }

    /// The same computation done directly with the engine, in the same batches.
    fn direct(&self, nonces: &[i64], batch: usize) -> Vec<(i64, String)> {
        let ck = Checkpoint::open(self.dir.path()).unwrap();
        let engine = PocEngine::new(Arc::new(
            Qwen3Model::load(&ck, DType::F32, &Device::Cpu).unwrap(),
        ));
        let p = PocParams {
            block_hash: "TEST_BLOCK".into(),
            public_key: "test_pub_keys".into(),
            seq_len: SEQ,
            k_dim: 12,
            rng: InputRng::Standard,
        };
        engine
            .compute(&p, nonces, batch, |_| {})
            .unwrap()
            .into_iter()
            .map(|v| (v.nonce, encode_f16(&v.vector.unwrap())))
            .collect()
    }

    async fn stop(mut self) {
        self.node.take().unwrap().shutdown().await;
    }
}

/// A local API node stand-in that records every callback.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Receiver {
    /// Artifacts received so far (all callbacks).
    fn count(&self) -> usize {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, v)| v["artifacts"].as_array().unwrap().len())
            .sum()
    }

    /// Every received `(nonce, vector_b64)`, sorted by nonce.
    fn artifacts(&self) -> Vec<(i64, String)> {
        let mut all: Vec<(i64, String)> = self
            .got
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(_, v)| pairs(&v["artifacts"]))
            .collect();
        all.sort();
        all
    }
}

/// `(nonce, vector_b64)` of an `artifacts` list, in its order.
fn pairs(artifacts: &Value) -> Vec<(i64, String)> {
    artifacts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["nonce"].as_i64().unwrap(),
                a["vector_b64"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn receiver() -> Receiver {
    let got: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let g1 = Arc::clone(&got);
    let g2 = Arc::clone(&got);
    let app = axum::Router::new()
        .route(
            "/cb/generated",
            post(move |axum::Json(v): axum::Json<Value>| {
                let g = Arc::clone(&g1);
                async move { g.lock().unwrap().push(("generated".into(), v)) }
            }),
        )
        .route(
            "/cb/validated",
            post(move |axum::Json(v): axum::Json<Value>| {
                let g = Arc::clone(&g2);
                async move { g.lock().unwrap().push(("validated".into(), v)) }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver {
        url: format!("http://{addr}/cb"),
        got,
    }
}

fn fast() -> PocSettings {
    PocSettings {
        callback_interval: Duration::from_millis(100),
        ..PocSettings::default()
    }
}

/// The reference vLLM node's behaviour: chat refused and aborted while PoC generates.
fn poc_priority() -> PocSettings {
    PocSettings {
        chat_policy: ChatPolicy::PocPriority,
        ..fast()
    }
}

async fn wait_for(mut cond: impl FnMut() -> bool) {
    for _ in 0..600 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition not reached in 12 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_generate_status_stop_and_callbacks() {
    let node = Node::start(poc_priority()).await;
    let rx = receiver().await;
    let (code, v) = node.get("/api/v1/inference/pow/status").await;
    assert_eq!((code, v["status"].as_str()), (200, Some("IDLE")));

    let (code, v) = node
        .post(
            "/api/v1/inference/pow/init/generate",
            node.init_body(Some(&rx.url), 0, 1),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["status"], "OK");
    assert_eq!(v["backends"], 1);
    assert_eq!(v["n_groups"], 1);
    // Already generating.
    let (code, v) = node
        .post(
            "/api/v1/inference/pow/init/generate",
            node.init_body(Some(&rx.url), 0, 1),
        )
        .await;
    assert_eq!(
        (code, v["detail"].as_str()),
        (409, Some("Already generating"))
    );
    let (_, v) = node.get("/api/v1/inference/pow/status").await;
    assert_eq!(v["status"], "GENERATING");
    assert_eq!(v["backends"][0]["config"]["block_hash"], "TEST_BLOCK");
    assert_eq!(v["backends"][0]["config"]["seq_len"], SEQ);
    // Artifacts arrive at the receiver in the reference's payload shape.
    wait_for(|| rx.count() >= 12).await;
    // Chat is refused while PoC runs (poc-priority).
    let (code, v) = node
        .post(
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
        )
        .await;
    assert_eq!(code, 503);
    assert_eq!(
        v["error"]["message"],
        "Service unavailable: POC generation in progress"
    );
    let (code, v) = node.post("/api/v1/inference/pow/stop", json!({})).await;
    assert_eq!(code, 200);
    assert_eq!(v["results"][0]["status"], "stopped");
    let (_, v) = node.get("/api/v1/inference/pow/status").await;
    assert_eq!(v["status"], "IDLE");

    let got = rx.got.lock().unwrap().clone();
    let first = &got[0].1;
    assert_eq!(got[0].0, "generated");
    for key in [
        "public_key",
        "block_hash",
        "block_height",
        "node_id",
        "artifacts",
        "encoding",
    ] {
        assert!(first.get(key).is_some(), "{key} missing in {first}");
    }
    assert_eq!(
        first["encoding"],
        json!({"dtype": "f16", "k_dim": 12, "endian": "le"})
    );
    assert!(first.get("request_id").is_none());
    // Every nonce 0, 1, 2, ... exactly once, identical to a direct computation in the same batches.
    let delivered = rx.artifacts();
    let n = delivered.len() as i64;
    assert!(
        n >= 12 && n % 4 == 0,
        "{n} artifacts: stop must deliver whole batches"
    );
    assert_eq!(
        delivered.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
        (0..n).collect::<Vec<_>>()
    );
    assert_eq!(delivered, node.direct(&(0..n).collect::<Vec<_>>(), 4));
    // Chat works again after stop.
    let (code, v) = node.post("/v1/chat/completions", json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "temperature": 0})).await;
    assert_eq!(code, 200, "{v}");
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() <= 3);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_stage_pipeline_generates_the_artifacts_of_one_stage() {
    let node = Node::start_on(fast(), vec![Device::Cpu, Device::Cpu]).await;
    let rx = receiver().await;
    let (code, v) = node
        .post(
            "/api/v1/inference/pow/init/generate",
            node.init_body(Some(&rx.url), 0, 1),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    // Two stages take 4 x 2 batches of 4 at a time.
    wait_for(|| rx.count() >= 32).await;
    let (code, _) = node.post("/api/v1/inference/pow/stop", json!({})).await;
    assert_eq!(code, 200);
    let delivered = rx.artifacts();
    let n = delivered.len() as i64;
    assert!(
        n >= 32 && n % 32 == 0,
        "{n} artifacts in whole pipeline rounds"
    );
    assert_eq!(delivered, node.direct(&(0..n).collect::<Vec<_>>(), 4));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_flushes_and_streams_of_two_nodes_are_disjoint() {
    // A long interval: only stop's flush can deliver.
    let node = Node::start(PocSettings {
        callback_interval: Duration::from_secs(3600),
        ..PocSettings::default()
    })
    .await;
    let rx = receiver().await;
    let mut seen = std::collections::HashSet::new();
    for node_id in [0u64, 1] {
        rx.got.lock().unwrap().clear();
        let (code, _) = node
            .post(
                "/api/v1/inference/pow/init/generate",
                node.init_body(Some(&rx.url), node_id, 2),
            )
            .await;
        assert_eq!(code, 200);
        loop {
            let (_, v) = node.get("/api/v1/inference/pow/status").await;
            if v["backends"][0]["stats"]["total_processed"]
                .as_u64()
                .unwrap_or(0)
                >= 8
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            rx.got.lock().unwrap().is_empty(),
            "nothing is delivered before the interval"
        );
        node.post("/api/v1/inference/pow/stop", json!({})).await;
        let got = rx.got.lock().unwrap().clone();
        let nonces: Vec<i64> = got
            .iter()
            .flat_map(|(_, v)| v["artifacts"].as_array().unwrap().clone())
            .map(|a| a["nonce"].as_i64().unwrap())
            .collect();
        assert!(nonces.len() >= 8, "stop flushed {} artifacts", nonces.len());
        for n in nonces {
            assert_eq!(
                n % 2,
                node_id as i64,
                "node {node_id} of 2 produced nonce {n}"
            );
            assert!(seen.insert(n));
        }
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_inline_queued_validation_and_errors() {
    let node = Node::start(PocSettings {
        max_queued_nonces: 6,
        ..fast()
    })
    .await;
    let rx = receiver().await;
    let p = "/api/v1/inference/pow/generate";
    // wait=true: completed with artifacts, identical to a direct computation.
    let (code, v) = node.post(p, node.generate_body(&[3, 1, 2], true)).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["status"], "completed");
    let direct = node.direct(&[3, 1, 2], 4);
    assert_eq!(pairs(&v["artifacts"]), direct);

    // Validation with one corrupted vector: one mismatch, fraud at the default thresholds.
    let mut artifacts: Vec<Value> = direct
        .iter()
        .map(|(n, b)| json!({"nonce": n, "vector_b64": b}))
        .collect();
    let mut bad = decode_vector_f32(direct[1].1.as_str(), Some(12)).unwrap();
    bad.reverse();
    artifacts[1]["vector_b64"] = json!(encode_vector(&bad));
    let mut body = node.generate_body(&[3, 1, 2], true);
    body["validation"] = json!({ "artifacts": artifacts });
    let (code, v) = node.post(p, body.clone()).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["n_total"], 3);
    assert_eq!(v["n_mismatch"], 1);
    assert_eq!(v["mismatch_nonces"], json!([1]));
    assert_eq!(v["fraud_detected"], true);
    // The chain's looser thresholds (under the API node's name for the cutoff): no fraud.
    body["stat_test"] =
        json!({"dist_threshold": 0.4, "p_mismatch": 0.5, "p_value_threshold": 0.05});
    let (_, v) = node.post(p, body.clone()).await;
    assert_eq!(v["fraud_detected"], false, "{v}");
    // Nonce set differs from validation set -> 400.
    let mut body2 = body.clone();
    body2["nonces"] = json!([3, 1]);
    let (code, v) = node.post(p, body2).await;
    assert_eq!(
        (code, v["detail"].as_str()),
        (
            400,
            Some("validation.artifacts nonces must match nonces field")
        )
    );

    // wait=false: queued, then completed by request id, and delivered to the callback.
    let mut q = node.generate_body(&[5, 6], false);
    q["url"] = json!(rx.url);
    q["validation"] = json!({ "artifacts": node.direct(&[5, 6], 4).iter().map(|(n, b)| json!({"nonce": n, "vector_b64": b})).collect::<Vec<_>>() });
    let (code, v) = node.post(p, q).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["status"], "queued");
    assert_eq!(v["queued_count"], 2);
    let id = v["request_id"].as_str().unwrap().to_owned();
    assert!(id.contains(':'), "{id}");
    let mut result = Value::Null;
    for _ in 0..500 {
        let (_, r) = node.get(&format!("{p}/{id}")).await;
        if r["status"] == "completed" {
            result = r;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(result["n_mismatch"], 0, "{result}");
    assert_eq!(result["fraud_detected"], false);
    wait_for(|| rx.got.lock().unwrap().iter().any(|(k, _)| k == "validated")).await;
    let cb = rx
        .got
        .lock()
        .unwrap()
        .iter()
        .find(|(k, _)| k == "validated")
        .unwrap()
        .1
        .clone();
    assert_eq!(cb["request_id"], json!(id));
    assert_eq!(cb["n_total"], 2);
    for key in [
        "block_hash",
        "block_height",
        "public_key",
        "node_id",
        "n_mismatch",
        "mismatch_nonces",
        "p_value",
        "fraud_detected",
    ] {
        assert!(cb.get(key).is_some(), "{key} missing in {cb}");
    }
    // Queue cap: 6 nonces at most.
    node.post(
        "/api/v1/inference/pow/init/generate",
        node.init_body(None, 0, 1),
    )
    .await;
    let (code, _) = node.post(p, node.generate_body(&[1, 2, 3, 4], false)).await;
    assert_eq!(code, 200);
    let (code, v) = node.post(p, node.generate_body(&[5, 6, 7], false)).await;
    assert_eq!(code, 429);
    assert_eq!(v["detail"], "Queue full: 4 nonces queued, limit is 6");
    node.post("/api/v1/inference/pow/stop", json!({})).await;

    // Unknown and malformed ids.
    let (code, v) = node.get(&format!("{p}/1:abc")).await;
    assert_eq!(
        (code, v["detail"].as_str()),
        (404, Some("Request 1:abc not found"))
    );
    let (code, _) = node.get(&format!("{p}/nocolon")).await;
    assert_eq!(code, 400);
    // Params: unknown model 409, extra key 422, bad JSON 422, k_dim out of range 422.
    let mut b = node.generate_body(&[1], true);
    b["params"]["model"] = json!("other-model");
    let (code, v) = node.post(p, b).await;
    assert_eq!(code, 409);
    assert_eq!(v["detail"]["error"], "params mismatch");
    assert_eq!(v["detail"]["deployed"]["model"][1], "tiny");
    let mut b = node.generate_body(&[1], true);
    b["params"]["batch"] = json!(1);
    let (code, v) = node.post(p, b).await;
    assert_eq!(code, 422);
    assert_eq!(v["detail"][0]["loc"], json!(["body", "params", "batch"]));
    let (code, v) = node.post_raw(p, "{\"nonces\": [").await;
    assert_eq!(
        (code, v["detail"][0]["type"].as_str()),
        (422, Some("json_invalid"))
    );
    let (code, v) = node.post_raw(p, "{\"block_hash\": \"b\"}").await;
    assert_eq!(code, 422);
    assert!(
        v["detail"][0]["msg"]
            .as_str()
            .unwrap()
            .contains("missing field"),
        "{v}"
    );
    let mut b = node.generate_body(&[1], true);
    b["params"]["k_dim"] = json!(0);
    let (code, v) = node.post(p, b).await;
    assert_eq!(code, 422);
    assert_eq!(v["detail"][0]["loc"], json!(["body", "params", "k_dim"]));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_layer_shapes_and_a_dead_callback_receiver() {
    let node = Node::start(fast()).await;
    // Nothing listens on this port: deliveries fail, generation goes on.
    let (code, v) = node
        .post(
            "/api/v1/pow/init/generate",
            node.init_body(Some("http://127.0.0.1:9/cb"), 0, 1),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        v,
        json!({"status": "OK", "pow_status": {"status": "GENERATING"}})
    );
    let mut processed = 0;
    for _ in 0..500 {
        let (_, v) = node.get("/api/v1/pow/status").await;
        processed = v["stats"]["total_processed"].as_u64().unwrap_or(0);
        if processed >= 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(processed >= 40, "generation stalled at {processed}");
    let (_, m) = (
        200,
        node.http
            .get(format!("{}/metrics", node.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    assert!(m.contains("poc_generating 1"), "{m}");
    assert!(m.contains("poc_phase_switch_seconds"), "{m}");
    let (code, v) = node.post("/api/v1/pow/stop", json!({})).await;
    assert_eq!(code, 200);
    assert_eq!(
        v,
        json!({"status": "OK", "pow_status": {"status": "STOPPED"}})
    );
    let (_, v) = node.get("/api/v1/pow/status").await;
    assert_eq!(v, json!({"status": "IDLE", "config": null, "stats": null}));
    let (code, v) = node.get("/health").await;
    assert_eq!((code, v["status"].as_str()), (200, Some("ok")));
    node.stop().await;
}

/// Streams one greedy chat completion and returns its text and finish reason.
async fn stream_chat(node: &Node, prompt: &str, max_tokens: u32) -> (String, String) {
    let text = node
        .http
        .post(format!("{}/v1/chat/completions", node.base))
        .json(
            &json!({"model": "tiny", "messages": [{"role": "user", "content": prompt}],
                      "max_tokens": max_tokens, "temperature": 0, "stream": true}),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{text}");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let content = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    let finish = chunks.last().unwrap()["choices"][0]["finish_reason"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    (content, finish)
}

/// A counter or gauge of the node's `/metrics` (the first sample of that name).
async fn metric(node: &Node, name: &str) -> f64 {
    let text = node
        .http
        .get(format!("{}/metrics", node.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} is not exported:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

async fn processed(node: &Node) -> u64 {
    let (_, v) = node.get("/api/v1/inference/pow/status").await;
    v["backends"][0]["stats"]["total_processed"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chats_are_served_during_poc_and_poc_keeps_advancing() {
    let prompts = ["one", "two two", "three three three", "four"];
    for policy in [ChatPolicy::Mixed, ChatPolicy::ChatPriority] {
        let node = Node::start(PocSettings {
            chat_policy: policy,
            ..fast()
        })
        .await;
        let rx = receiver().await;
        // The same chats with nothing else running: the reference text.
        let mut alone = Vec::new();
        for p in prompts {
            alone.push(stream_chat(&node, p, 24).await);
        }
        // A seeded, sampled chat cut by a stop string taken from its own text.
        let sampled = |stop: Option<String>| {
            let mut b = json!({"messages": [{"role": "user", "content": "sample me"}],
                               "max_tokens": 24, "temperature": 0.8, "seed": 5});
            if let Some(s) = stop {
                b["stop"] = json!(s);
            }
            b
        };
        let content = |v: &Value| {
            v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        let (_, full) = node.post("/v1/chat/completions", sampled(None)).await;
        let full = content(&full);
        let stop: String = full
            .chars()
            .skip(full.chars().count() / 2)
            .take(2)
            .collect();
        let (_, cut_alone) = node
            .post("/v1/chat/completions", sampled(Some(stop.clone())))
            .await;
        assert!(
            content(&cut_alone).len() < full.len(),
            "the stop string cut the text"
        );
        let (code, v) = node
            .post(
                "/api/v1/inference/pow/init/generate",
                node.init_body(Some(&rx.url), 0, 1),
            )
            .await;
        assert_eq!(code, 200, "{v}");
        wait_for(|| rx.count() >= 4).await;
        let (code, cut) = node.post("/v1/chat/completions", sampled(Some(stop))).await;
        assert_eq!(code, 200, "{cut}");
        assert_eq!(
            content(&cut),
            content(&cut_alone),
            "{policy:?}: seeded text with stop"
        );
        // Four concurrent streaming chats during generation: all complete (no 503, no
        // abort), with the text they give alone.
        let before = processed(&node).await;
        let (a, b, c, d) = tokio::join!(
            stream_chat(&node, prompts[0], 24),
            stream_chat(&node, prompts[1], 24),
            stream_chat(&node, prompts[2], 24),
            stream_chat(&node, prompts[3], 24)
        );
        let during = processed(&node).await - before;
        assert_eq!(vec![a, b, c, d], alone, "{policy:?}");
        match policy {
            ChatPolicy::Mixed => {
                // PoC advanced while the chats streamed, in the same forwards.
                assert!(during > 0, "no PoC progress during the chats");
                assert!(metric(&node, "poc_mixed_steps_total").await > 0.0);
                let (_, v) = node.get("/api/v1/inference/pow/status").await;
                assert_eq!(v["scheduler"]["policy"], "mixed", "{v}");
                assert!(v["scheduler"]["last_step_rows"]["poc"].as_u64().unwrap() > 0);
            }
            _ => {
                // PoC waited for the chats (counted), then kept going.
                assert!(metric(&node, "poc_batches_deferred_total").await > 0.0);
            }
        }
        let before = rx.count();
        wait_for(|| rx.count() >= before + 8).await;
        let (code, _) = node.post("/api/v1/inference/pow/stop", json!({})).await;
        assert_eq!(code, 200);
        let got = rx.artifacts();
        let n = got.len() as i64;
        assert_eq!(
            got,
            node.direct(&(0..n).collect::<Vec<_>>(), 4),
            "{policy:?}"
        );
        assert!(metric(&node, "chat_tokens_total").await >= 4.0 * 24.0);
        // Validation goes through the same scheduler: a /generate beside a streaming chat
        // gives the vectors of a direct computation.
        let chat = {
            let req = node
                .http
                .post(format!("{}/v1/chat/completions", node.base))
                .json(&json!({"messages": [{"role": "user", "content": "long"}],
                              "max_tokens": 300, "temperature": 0, "stream": true}))
                .send();
            tokio::spawn(async move { req.await.unwrap().text().await.unwrap() })
        };
        let nonces: Vec<i64> = (100..108).collect();
        let (code, v) = node
            .post(
                "/api/v1/inference/pow/generate",
                node.generate_body(&nonces, true),
            )
            .await;
        assert_eq!(code, 200, "{v}");
        let mut got = pairs(&v["artifacts"]);
        got.sort();
        assert_eq!(
            got,
            node.direct(&nonces, 4),
            "{policy:?}: /generate beside chat"
        );
        assert!(chat.await.unwrap().contains("[DONE]"));
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_poc_on_and_off_under_chat_load_loses_nothing() {
    let node = Arc::new(Node::start(fast()).await);
    let prompts: Vec<String> = (0..6).map(|i| format!("chat number {i}")).collect();
    let mut alone = Vec::new();
    for p in &prompts {
        alone.push(stream_chat(&node, p, 300).await);
    }
    // Six streaming chats, started one after another, while PoC is switched on and off.
    let mut chats = Vec::new();
    for p in prompts.clone() {
        let node = Arc::clone(&node);
        chats.push(tokio::spawn(
            async move { stream_chat(&node, &p, 300).await },
        ));
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    for round in 0..3 {
        let rx = receiver().await;
        let (code, v) = node
            .post(
                "/api/v1/inference/pow/init/generate",
                node.init_body(Some(&rx.url), 0, 1),
            )
            .await;
        assert_eq!(code, 200, "round {round}: {v}");
        wait_for(|| rx.count() >= 4).await;
        // Under load: the chats are still streaming when PoC is switched off.
        assert!(
            metric(&node, "chat_active_sessions").await > 0.0,
            "round {round}: the chats ended before PoC was switched off"
        );
        let (code, _) = node.post("/api/v1/inference/pow/stop", json!({})).await;
        assert_eq!(code, 200);
        // Every artifact of the round arrived, each nonce once, as computed directly.
        let got = rx.artifacts();
        let n = got.len() as i64;
        assert_eq!(
            got,
            node.direct(&(0..n).collect::<Vec<_>>(), 4),
            "round {round}"
        );
    }
    let mut texts = Vec::new();
    for c in chats {
        texts.push(c.await.unwrap());
    }
    assert_eq!(texts, alone, "every chat completed with its own text");
    match Arc::try_unwrap(node) {
        Ok(node) => node.stop().await,
        Err(_) => panic!("the chats still hold the node"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_step_budget_feeds_prompts_in_chunks_and_keeps_the_text() {
    // 8 tokens per step: a PoC sequence (16 rows) runs alone past the budget, and chat
    // keeps its reserve of one row per step, so prompts go in one token at a time.
    let node = Node::start(PocSettings {
        max_batch_tokens: 8,
        ..fast()
    })
    .await;
    let rx = receiver().await;
    let alone = stream_chat(&node, "a prompt of several tokens", 16).await;
    let (code, v) = node
        .post(
            "/api/v1/inference/pow/init/generate",
            node.init_body(Some(&rx.url), 0, 1),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    wait_for(|| rx.count() >= 2).await;
    let (during, steps) = tokio::join!(
        stream_chat(&node, "a prompt of several tokens", 16),
        async {
            // Watch the steps while the chat runs: PoC keeps one sequence per step and
            // the chat never gets more than its reserve.
            let mut seen = Vec::new();
            for _ in 0..20 {
                let (_, v) = node.get("/api/v1/inference/pow/status").await;
                seen.push(v["scheduler"]["last_step_rows"].clone());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        }
    );
    assert_eq!(during, alone);
    for rows in &steps {
        let poc = rows["poc"].as_u64().unwrap();
        let chat = rows["chat_prefill"].as_u64().unwrap() + rows["chat_decode"].as_u64().unwrap();
        assert!(poc <= SEQ as u64, "{rows}");
        assert!(chat <= 1 || poc == 0, "{rows}");
    }
    node.post("/api/v1/inference/pow/stop", json!({})).await;
    let got = rx.artifacts();
    let n = got.len() as i64;
    assert_eq!(got, node.direct(&(0..n).collect::<Vec<_>>(), 4));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chats_beyond_the_queue_limit_get_429() {
    let settings = PocSettings {
        chat_max_queue: 1,
        ..fast()
    };
    let node = Node::start(settings).await;
    let long = json!({"model": "tiny", "messages": [{"role": "user", "content": "go"}],
                      "max_tokens": 400, "temperature": 0, "stream": true});
    // A long streaming chat holds the only place; a second one is refused at once.
    let first = node
        .http
        .post(format!("{}/v1/chat/completions", node.base))
        .json(&long)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status().as_u16(), 200);
    let (code, v) = node.post("/v1/chat/completions", long.clone()).await;
    assert_eq!(code, 429, "{v}");
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("retry later"),
        "{v}"
    );
    // The first ran its whole length (greedy, so always the same: it held the place for
    // all 400 tokens); once it is done, chat is taken again.
    let text = first.text().await.unwrap();
    assert!(text.contains("\"finish_reason\":\"length\""), "{text}");
    let (code, v) = node
        .post(
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_completions_plain_and_streaming() {
    let node = Node::start(fast()).await;
    let (code, v) = node.get("/v1/models").await;
    assert_eq!(code, 200);
    assert_eq!(v["data"][1]["id"], "tiny");
    let body = json!({"model": "tiny", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 6, "temperature": 0.7, "seed": 3});
    let (code, a) = node.post("/v1/chat/completions", body.clone()).await;
    assert_eq!(code, 200, "{a}");
    assert_eq!(a["object"], "chat.completion");
    assert_eq!(a["choices"][0]["message"]["role"], "assistant");
    let (_, b) = node.post("/v1/chat/completions", body.clone()).await;
    assert_eq!(
        a["choices"][0]["message"]["content"], b["choices"][0]["message"]["content"],
        "a seed reproduces"
    );
    // Streaming: role chunk, content chunks, a finish chunk, [DONE]; same text as plain.
    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    let text = node
        .http
        .post(format!("{}/v1/chat/completions", node.base))
        .json(&sbody)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(*events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks.last().unwrap()["choices"][0]["finish_reason"].is_string());
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        streamed,
        a["choices"][0]["message"]["content"].as_str().unwrap()
    );
    // A completion that cannot fit the context: 400 with the numbers.
    let (code, v) = node
        .post(
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5000}),
        )
        .await;
    assert_eq!(code, 400, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("maximum context length is 4096 tokens"),
        "{msg}"
    );
    let (code, v) = node
        .post(
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}),
        )
        .await;
    assert_eq!(code, 400, "{v}");
    // Unknown model.
    let (code, _) = node
        .post(
            "/v1/chat/completions",
            json!({"model": "nope", "messages": []}),
        )
        .await;
    assert_eq!(code, 404);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poc_preempts_a_running_chat_within_milliseconds() {
    let node = Node::start(poc_priority()).await;
    let mut body = json!({"messages": [{"role": "user", "content": "tell me everything"}], "max_tokens": 3000, "temperature": 0.9, "seed": 1});
    body["stream"] = json!(true);
    let resp = node
        .http
        .post(format!("{}/v1/chat/completions", node.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let reader = tokio::spawn(async move { resp.text().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (code, _) = node
        .post(
            "/api/v1/inference/pow/init/generate",
            node.init_body(None, 0, 1),
        )
        .await;
    assert_eq!(code, 200);
    // The chat ends with finish_reason "abort" and PoC takes over.
    let text = tokio::time::timeout(Duration::from_secs(15), reader)
        .await
        .unwrap()
        .unwrap();
    assert!(
        text.contains("\"finish_reason\":\"abort\""),
        "{}",
        &text[text.len().saturating_sub(300)..]
    );
    let mut switch = None;
    for _ in 0..500 {
        let (_, v) = node.get("/api/v1/inference/pow/status").await;
        if let Some(ms) = v["backends"][0]["stats"]["phase_switch_ms"].as_f64() {
            switch = Some(ms);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ms = switch.expect("a first batch started");
    eprintln!("phase switch with chat running: {ms:.2} ms");
    assert!(ms < 5_000.0, "{ms} ms");
    node.post("/api/v1/inference/pow/stop", json!({})).await;
    node.stop().await;
}
