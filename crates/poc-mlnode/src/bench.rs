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

/// The served model's context length, from `/v1/models`.
async fn model_context(http: &reqwest::Client, base: &str) -> u64 {
    let models: Value = match http.get(format!("{base}/v1/models")).send().await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    models["data"][0]["max_model_len"].as_u64().unwrap_or(4096)
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
    let context = model_context(&http, &base).await;
    let chat_body = json!({"messages": [{"role": "user", "content": "go on"}], "max_tokens": context / 2, "temperature": 1.0, "stream": true});
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
    Err(MlNodeError::Bench(
        "continuous generation did not deliver in 10 minutes".into(),
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

/// What the chat-load benchmark measures.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Sequence length of the PoC forward.
    pub seq_len: usize,
    /// Nonces per batch (the `init/generate` batch size).
    pub batch_size: usize,
    /// Concurrent chat counts to measure, e.g. 0, 1, 4, 16.
    pub chats: Vec<usize>,
    /// Seconds of each timed window.
    pub seconds: f64,
    /// Tokens per chat completion (each chat client sends one after another).
    pub chat_tokens: usize,
}

/// One window of the chat-load benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct LoadRow {
    /// The node's policy.
    pub policy: &'static str,
    /// Concurrent streaming chat clients.
    pub chats: usize,
    /// Whether continuous PoC generation ran.
    pub poc: bool,
    /// PoC nonces per second.
    pub nonces_per_second: f64,
    /// Chat tokens per second (all chats).
    pub chat_tokens_per_second: f64,
    /// Mean time to first token, ms.
    pub ttft_ms: f64,
    /// Mean inter-token latency, ms.
    pub itl_ms: f64,
    /// 90th percentile inter-token latency (upper bound of its histogram bucket), ms.
    pub itl_p90_ms: f64,
    /// Share of the window's steps that held PoC and chat rows together.
    pub mixed_step_share: f64,
}

/// The node's `/metrics` as `sample name (with labels) -> value` (retried: a pooled
/// connection may have been closed by the server's idle timeout).
async fn scrape(
    http: &reqwest::Client,
    base: &str,
) -> Result<std::collections::HashMap<String, f64>, MlNodeError> {
    let mut last = String::new();
    for _ in 0..5 {
        let text = match http.get(format!("{base}/metrics")).send().await {
            Ok(r) => r.text().await,
            Err(e) => Err(e),
        };
        match text {
            Ok(text) => {
                return Ok(text
                    .lines()
                    .filter(|l| !l.starts_with('#'))
                    .filter_map(|l| {
                        let (k, v) = l.rsplit_once(' ')?;
                        Some((k.to_owned(), v.parse().ok()?))
                    })
                    .collect());
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(MlNodeError::Bench(format!(
        "cannot read {base}/metrics: {last}"
    )))
}

/// Streaming chat clients, each sending one completion after another until `stop`.
fn chat_clients(
    http: &reqwest::Client,
    base: &str,
    n: usize,
    tokens: usize,
    stop: &Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|i| {
            let (http, base, stop) = (http.clone(), base.to_owned(), Arc::clone(stop));
            tokio::spawn(async move {
                let body = json!({"messages": [{"role": "user", "content": format!("client {i}: tell me more")}],
                                  "max_tokens": tokens, "temperature": 0, "stream": true});
                while !stop.load(Ordering::Relaxed) {
                    let sent = http
                        .post(format!("{base}/v1/chat/completions"))
                        .json(&body)
                        .send()
                        .await;
                    match sent {
                        Ok(r) => {
                            let _ = r.text().await;
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            })
        })
        .collect()
}

/// The figures of one window from the metrics before and after it.
fn window_row(
    policy: &'static str,
    chats: usize,
    poc: bool,
    a: &std::collections::HashMap<String, f64>,
    b: &std::collections::HashMap<String, f64>,
    secs: f64,
) -> LoadRow {
    let d = |k: &str| b.get(k).copied().unwrap_or(0.0) - a.get(k).copied().unwrap_or(0.0);
    let mean_ms = |h: &str| {
        let n = d(&format!("{h}_count"));
        if n > 0.0 {
            d(&format!("{h}_sum")) / n * 1e3
        } else {
            f64::NAN
        }
    };
    let itl_n = d("chat_inter_token_seconds_count");
    // The window's count per bucket, by the bucket's bound (however the bound is written).
    let bound = |k: &str| {
        k.strip_prefix("chat_inter_token_seconds_bucket{le=\"")?
            .strip_suffix("\"}")?
            .parse::<f64>()
            .ok()
    };
    let mut buckets: Vec<(f64, f64)> = b
        .keys()
        .filter_map(|k| Some((bound(k).filter(|le| le.is_finite())?, d(k))))
        .collect();
    buckets.sort_by(|x, y| x.0.total_cmp(&y.0));
    let itl_p90_ms = buckets
        .iter()
        .find(|(_, n)| *n >= 0.9 * itl_n)
        .filter(|_| itl_n > 0.0)
        .map_or(f64::NAN, |(le, _)| le * 1e3);
    let steps = d("poc_steps_total");
    LoadRow {
        policy,
        chats,
        poc,
        nonces_per_second: d("poc_nonces_total") / secs,
        chat_tokens_per_second: d("chat_tokens_total") / secs,
        ttft_ms: mean_ms("chat_time_to_first_token_seconds"),
        itl_ms: mean_ms("chat_inter_token_seconds"),
        itl_p90_ms,
        mixed_step_share: if steps > 0.0 {
            d("poc_mixed_steps_total") / steps
        } else {
            0.0
        },
    }
}

/// The chat-load benchmark of one policy (`config.settings.chat_policy`): for every chat
/// count, a window with continuous PoC generation and (for counts above 0) one without.
pub async fn load(
    mut config: MlNodeConfig,
    opts: LoadOptions,
) -> Result<Vec<LoadRow>, MlNodeError> {
    config.listen = "127.0.0.1:0".parse().expect("literal address");
    config.settings.callback_interval = Duration::from_millis(500);
    config.settings.max_batch_size = config.settings.max_batch_size.max(opts.batch_size);
    config.settings.chat_max_queue = config
        .settings
        .chat_max_queue
        .max(opts.chats.iter().copied().max().unwrap_or(0) + 1);
    let policy = config.settings.chat_policy.name();
    let model_name = config.model.to_string_lossy().into_owned();
    let node = crate::start(config).await?;
    let base = format!("http://{}", node.addr);
    let http = reqwest::Client::new();
    let (url, _) = receiver().await;
    let init = json!({
        "block_hash": "BENCH_BLOCK", "block_height": 1, "public_key": "bench_key", "node_id": 0, "node_count": 1,
        "batch_size": opts.batch_size, "params": { "model": model_name, "seq_len": opts.seq_len }, "url": url,
    });
    let warm = Duration::from_secs_f64((opts.seconds / 4.0).clamp(0.2, 2.0));
    let mut rows = Vec::new();
    for &chats in &opts.chats {
        for poc in [true, false] {
            if !poc && chats == 0 {
                continue;
            }
            if poc {
                let _ = http
                    .post(format!("{base}/api/v1/inference/pow/init/generate"))
                    .json(&init)
                    .send()
                    .await;
                // Wait for this generation's first batch.
                let started = Instant::now();
                loop {
                    let s: Value = match http
                        .get(format!("{base}/api/v1/inference/pow/status"))
                        .send()
                        .await
                    {
                        Ok(r) => r.json().await.unwrap_or(Value::Null),
                        Err(_) => Value::Null,
                    };
                    if s["backends"][0]["stats"]["total_processed"]
                        .as_u64()
                        .unwrap_or(0)
                        > 0
                    {
                        break;
                    }
                    if started.elapsed() > Duration::from_secs(600) {
                        return Err(MlNodeError::Bench(
                            "continuous generation did not deliver in 10 minutes".into(),
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let clients = chat_clients(&http, &base, chats, opts.chat_tokens, &stop);
            tokio::time::sleep(warm).await;
            let a = scrape(&http, &base).await?;
            let t = Instant::now();
            tokio::time::sleep(Duration::from_secs_f64(opts.seconds)).await;
            let b = scrape(&http, &base).await?;
            let secs = t.elapsed().as_secs_f64();
            stop.store(true, Ordering::Relaxed);
            for c in clients {
                let _ = c.await;
            }
            if poc {
                let _ = http
                    .post(format!("{base}/api/v1/inference/pow/stop"))
                    .json(&json!({}))
                    .send()
                    .await;
            }
            let row = window_row(policy, chats, poc, &a, &b, secs);
            tracing::info!(
                "{policy}: {chats} chats, PoC {}: {:.2} nonces/s, {:.1} chat tokens/s, TTFT {:.1} ms, ITL {:.1} ms",
                if poc { "on" } else { "off" },
                row.nonces_per_second,
                row.chat_tokens_per_second,
                row.ttft_ms,
                row.itl_ms
            );
            rows.push(row);
        }
    }
    node.shutdown().await;
    Ok(rows)
}
