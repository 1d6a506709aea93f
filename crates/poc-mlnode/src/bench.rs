//! `poc mlnode bench`: the node's figures measured through its own HTTP API.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use poc_model::{PocEngine, PocParams};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{MlNodeConfig, MlNodeError};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Sequence length of the PoC forward.
    pub seq_len: usize,
    /// Nonces per batch.
    pub batch_size: usize,
    /// Seconds of continuous generation to time (after the first batch).
    pub seconds: f64,
    /// Tokens per chat completion.
    pub chat_tokens: usize,
}

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Continuous generation through the server (artifacts delivered to a local receiver).
    pub server_nonces_per_second: f64,
    /// The same forward called directly, same batch size.
    pub direct_nonces_per_second: f64,
    /// `1 - server / direct`.
    pub server_overhead: f64,
    /// From `init/generate` to the first PoC batch starting, with a chat running.
    pub phase_switch_ms: f64,
    /// Chat decode speed (one request at a time, greedy).
    pub chat_tokens_per_second: f64,
    /// Artifacts the local receiver got.
    pub delivered_artifacts: usize,
}

async fn receiver() -> (String, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&count);
    let app = axum::Router::new().route(
        "/cb/generated",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let c = Arc::clone(&c);
            async move {
                c.fetch_add(
                    v["artifacts"].as_array().map_or(0, Vec::len),
                    Ordering::Relaxed,
                );
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/cb"), count)
}

/// Runs the node in this process and measures it.
pub async fn run(mut config: MlNodeConfig, opts: BenchOptions) -> Result<BenchReport, MlNodeError> {
    config.listen = "127.0.0.1:0".parse().expect("literal address");
    config.settings.callback_interval = Duration::from_millis(500);
    config.settings.max_batch_size = config.settings.max_batch_size.max(opts.batch_size);
    let model_name = config.model.to_string_lossy().into_owned();
    let node = crate::start(config).await?;
    let base = format!("http://{}", node.addr);
    let http = reqwest::Client::new();
    let (url, delivered) = receiver().await;
    let post = |path: &str, body: Value| {
        let req = http.post(format!("{base}{path}")).json(&body);
        async move { req.send().await.ok()?.json::<Value>().await.ok() }
    };
    let status = || {
        let req = http.get(format!("{base}/api/v1/inference/pow/status"));
        async move { req.send().await.ok()?.json::<Value>().await.ok() }
    };
    let init = json!({
        "block_hash": "BENCH_BLOCK", "block_height": 1, "public_key": "bench_key", "node_id": 0, "node_count": 1,
        "batch_size": opts.batch_size, "params": { "model": model_name, "seq_len": opts.seq_len }, "url": url,
    });

    // Phase switch: a long chat is running when init/generate arrives.
    let chat_body = json!({"messages": [{"role": "user", "content": "go on"}], "max_tokens": 100_000, "temperature": 1.0, "stream": true});
    let chat = http
        .post(format!("{base}/v1/chat/completions"))
        .json(&chat_body)
        .send();
    let chat_task = tokio::spawn(async move { chat.await.ok().map(|r| r.text()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    post("/api/v1/inference/pow/init/generate", init).await;
    let mut phase_switch_ms = f64::NAN;
    let mut start = None;
    let mut last = 0u64;
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        let s = status().await.unwrap_or(Value::Null);
        let stats = &s["backends"][0]["stats"];
        if let Some(ms) = stats["phase_switch_ms"].as_f64() {
            phase_switch_ms = ms;
        }
        let processed = stats["total_processed"].as_u64().unwrap_or(0);
        // Time whole batches: from one batch boundary to the first boundary after the
        // requested duration.
        match start {
            None if processed > 0 => start = Some((Instant::now(), processed)),
            Some((t0, p0)) if processed > last && t0.elapsed().as_secs_f64() >= opts.seconds => {
                let rate = (processed - p0) as f64 / t0.elapsed().as_secs_f64();
                post("/api/v1/inference/pow/stop", json!({})).await;
                let _ = chat_task.await;
                return finish(
                    node,
                    &http,
                    &base,
                    opts,
                    rate,
                    phase_switch_ms,
                    delivered.load(Ordering::Relaxed),
                )
                .await;
            }
            _ => {}
        }
        last = processed;
        // Coarse polling: the client shares the CPU with the node it measures.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(MlNodeError::Chat(
        "the benchmark did not finish in 10 minutes".into(),
    ))
}

async fn finish(
    node: crate::RunningNode,
    http: &reqwest::Client,
    base: &str,
    opts: BenchOptions,
    server_rate: f64,
    phase_switch_ms: f64,
    delivered: usize,
) -> Result<BenchReport, MlNodeError> {
    // Chat decode speed.
    let body = json!({"messages": [{"role": "user", "content": "count"}], "max_tokens": opts.chat_tokens, "temperature": 0});
    let mut tokens = 0u64;
    let t = Instant::now();
    for _ in 0..3 {
        if let Some(v) = async {
            http.post(format!("{base}/v1/chat/completions"))
                .json(&body)
                .send()
                .await
                .ok()?
                .json::<Value>()
                .await
                .ok()
        }
        .await
        {
            tokens += v["usage"]["completion_tokens"].as_u64().unwrap_or(0);
        }
    }
    let chat_tps = tokens as f64 / t.elapsed().as_secs_f64();
    node.shutdown().await;
    Ok(BenchReport {
        server_nonces_per_second: server_rate,
        direct_nonces_per_second: f64::NAN,
        server_overhead: f64::NAN,
        phase_switch_ms,
        chat_tokens_per_second: chat_tps,
        delivered_artifacts: delivered,
    })
}

/// The direct forward rate with the same batch size (the node must be stopped first, so
/// the two runs do not share the CPU).
pub fn direct_rate(engine: &PocEngine, opts: &BenchOptions) -> f64 {
    let p = PocParams {
        block_hash: "BENCH_BLOCK".into(),
        public_key: "bench_key".into(),
        seq_len: opts.seq_len,
        k_dim: 12,
        rng: poc_core::InputRng::Standard,
    };
    let warm: Vec<i64> = (0..opts.batch_size as i64).collect();
    let _ = engine.compute(&p, &warm, opts.batch_size, |_| {});
    let mut done = 0usize;
    let t = Instant::now();
    let mut next = 1_000_000i64;
    while t.elapsed().as_secs_f64() < opts.seconds || done == 0 {
        let nonces: Vec<i64> = (next..next + opts.batch_size as i64).collect();
        next += opts.batch_size as i64;
        if engine
            .compute(&p, &nonces, opts.batch_size, |_| {})
            .is_err()
        {
            break;
        }
        done += nonces.len();
    }
    done as f64 / t.elapsed().as_secs_f64()
}
