//! `poc mlnode`.

use std::net::{SocketAddr, ToSocketAddrs};

use anyhow::Context;
use poc_mlnode::{MlNodeConfig, PocSettings};
use poc_model::config::parse_dtype;

use crate::cli::{DeviceArgs, HttpArgs};
use clap::Args;
use std::path::PathBuf;

/// `poc mlnode`.
///
/// Loads the model once and serves, on the same weights: the ML node's PoC v2 API under
/// `/api/v1/inference/pow/` (init/generate, generate, generate/{id}, status, stop; the
/// backend layer under `/api/v1/pow/`), OpenAI-style `/v1/chat/completions` and
/// `/v1/models`, `/health` and Prometheus `/metrics`. While continuous PoC generation
/// runs, chat answers 503. The reference's environment variables apply:
/// POC_BATCH_SIZE_DEFAULT, POC_CALLBACK_INTERVAL_SEC, POC_CALLBACK_MAX_ARTIFACTS,
/// POC_CALLBACK_MAX_RETRIES, POC_GENERATE_RESULT_TTL_SEC, POC_MAX_QUEUED_NONCES,
/// POC_GENERATE_CHUNK_TIMEOUT_SEC. Stops gracefully on Ctrl-C / SIGTERM, delivering
/// generated artifacts first.
#[derive(Debug, Args)]
pub struct MlnodeArgs {
    /// Model directory (config.json, safetensors, tokenizer.json for chat).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Another name requests may use for the model (repeatable).
    #[arg(long = "served-model-name", value_name = "NAME")]
    pub served_model_names: Vec<String>,
    /// Listen host.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Listen port (0 = any free port).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Compute dtype; `auto` is the checkpoint's dtype.
    #[arg(long, default_value = "auto", value_parser = ["auto", "bf16", "f16", "f32"])]
    pub dtype: String,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// How chat and continuous PoC generation share the model. `mixed` (the default):
    /// every step is one forward over PoC sequences and chat rows together, within
    /// `--max-batch-tokens`, PoC taking at most `--poc-share` of it while chat waits.
    /// `chat-priority`: chat is served during PoC and PoC batches wait while any chat is
    /// pending or running (the reference's gm/poc-layers node). `poc-priority`: chat gets
    /// 503 and running chats are aborted while PoC generates (the reference's vLLM node).
    /// Also `POC_CHAT_POLICY`.
    #[arg(long, value_parser = ["mixed", "chat-priority", "poc-priority"])]
    pub poc_chat_policy: Option<String>,
    /// Most tokens (rows) of one engine step: PoC rows count seq_len per nonce, chat rows
    /// one per decode token or prompt token (prompts are fed in chunks). Bounds the
    /// latency of a step. Also `POC_MAX_BATCH_TOKENS` [default: 8192].
    #[arg(long)]
    pub max_batch_tokens: Option<usize>,
    /// The fraction of the step budget PoC rows may take while chat waits (`mixed`);
    /// chat gets at least the rest. Also `POC_SHARE` [default: 0.8].
    #[arg(long)]
    pub poc_share: Option<f64>,
    /// Largest batch_size a request may use.
    #[arg(long, default_value_t = 32)]
    pub max_batch_size: usize,
    /// Longest seq_len a request may use.
    #[arg(long, default_value_t = 4096)]
    pub max_seq_len: usize,
    /// Instead of serving, measure the node through its own HTTP API on a free loopback
    /// port and print JSON: PoC nonces/s through the server vs. the direct forward,
    /// phase-switch latency with a chat running, chat tokens/s.
    #[arg(long)]
    pub bench: bool,
    /// Benchmark: sequence length.
    #[arg(long, default_value_t = 256, requires = "bench")]
    pub bench_seq_len: usize,
    /// Benchmark: nonces per batch.
    #[arg(long, default_value_t = 8, requires = "bench")]
    pub bench_batch_size: usize,
    /// Benchmark: seconds of timed continuous generation (and of each chat-load window).
    #[arg(long, default_value_t = 10.0, requires = "bench")]
    pub bench_seconds: f64,
    /// Benchmark, chat load: concurrent streaming chat clients per window; each count is
    /// measured with PoC generating and (above 0) without. Empty: skip the chat load.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0,1,4,16",
        requires = "bench"
    )]
    pub bench_chats: Vec<usize>,
    /// Benchmark, chat load: the policies to measure side by side.
    #[arg(long, value_delimiter = ',', default_value = "mixed,chat-priority", requires = "bench",
          value_parser = ["mixed", "chat-priority", "poc-priority"])]
    pub bench_policies: Vec<String>,
    /// Benchmark, chat load: tokens per chat completion.
    #[arg(long, default_value_t = 64, requires = "bench")]
    pub bench_chat_tokens: usize,
    /// Limits of the HTTP server.
    #[command(flatten)]
    pub http: HttpArgs,
}

pub fn run(args: &MlnodeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let listen: SocketAddr = (args.host.as_str(), args.port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {}:{}", args.host, args.port))?
        .next()
        .context("no address to listen on")?;
    let settings = PocSettings {
        max_batch_size: args.max_batch_size.max(1),
        max_seq_len: args.max_seq_len.max(1),
        ..PocSettings::default()
    }
    .with_env(|k| std::env::var(k).ok())?;
    let settings = PocSettings {
        chat_policy: match &args.poc_chat_policy {
            Some(p) => poc_mlnode::ChatPolicy::from_name(p).context("unknown chat policy")?,
            None => settings.chat_policy,
        },
        max_batch_tokens: args
            .max_batch_tokens
            .unwrap_or(settings.max_batch_tokens)
            .max(1),
        poc_share: match args.poc_share {
            Some(f) if !(0.0..=1.0).contains(&f) => {
                anyhow::bail!("--poc-share {f} must be a fraction between 0 and 1 (e.g. 0.8)")
            }
            Some(f) => f,
            None => settings.poc_share,
        },
        ..settings
    };
    let config = MlNodeConfig {
        model: args.model.clone(),
        served_model_names: args.served_model_names.clone(),
        listen,
        dtype: match args.dtype.as_str() {
            "auto" => None,
            d => parse_dtype(d),
        },
        devices: poc_model::parse_devices(&args.device.devices)?,
        fp8: args.device.fp8(),
        settings,
        body_limit: 64 << 20,
        http: args.http.apply(poc_http::HttpLimits::default())?,
    };
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    if args.bench {
        return bench(&rt, config, args);
    }
    rt.block_on(async move {
        let node = poc_mlnode::start(config)
            .await
            .with_context(|| format!("cannot start the ML node for {}", args.model.display()))?;
        tracing::info!(
            "ML node listening on http://{} (model loaded in {:.2} s)",
            node.addr,
            node.load_time.as_secs_f64()
        );
        shutdown_signal().await;
        tracing::info!("shutting down: stopping PoC generation and delivering its artifacts");
        node.shutdown().await;
        anyhow::Ok(())
    })
}

/// The chat-load rows as a Markdown table, with PoC's share of its solo rate and the
/// chats' inter-token latency beside the same chats without PoC.
fn load_table(rows: &[poc_mlnode::bench::LoadRow]) -> String {
    let mut out = String::from(
        "| policy | chats | PoC | nonces/s | of solo | chat tok/s | TTFT ms | ITL ms | ITL p90 ms | ITL vs chat alone |\n|---|---:|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let solo = rows
            .iter()
            .find(|s| s.policy == r.policy && s.poc && s.chats == 0)
            .map_or(f64::NAN, |s| s.nonces_per_second);
        let alone = rows
            .iter()
            .find(|s| s.policy == r.policy && !s.poc && s.chats == r.chats)
            .map_or(f64::NAN, |s| s.itl_ms);
        let of_solo = if r.poc {
            format!("{:.0} %", 100.0 * r.nonces_per_second / solo)
        } else {
            "-".into()
        };
        let vs = if r.poc && r.chats > 0 {
            format!("{:.2}x", r.itl_ms / alone)
        } else {
            "-".into()
        };
        let ms = |x: f64| {
            if x.is_finite() {
                format!("{x:.1}")
            } else {
                "-".into()
            }
        };
        out.push_str(&format!(
            "| {} | {} | {} | {:.2} | {of_solo} | {:.1} | {} | {} | {} | {vs} |\n",
            r.policy,
            r.chats,
            if r.poc { "on" } else { "off" },
            r.nonces_per_second,
            r.chat_tokens_per_second,
            ms(r.ttft_ms),
            ms(r.itl_ms),
            ms(r.itl_p90_ms),
        ));
    }
    out
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn bench(
    rt: &tokio::runtime::Runtime,
    config: MlNodeConfig,
    args: &MlnodeArgs,
) -> anyhow::Result<()> {
    use poc_mlnode::bench::{BenchOptions, LoadOptions, direct_rate, load, run};
    let opts = BenchOptions {
        seq_len: args.bench_seq_len,
        batch_size: args.bench_batch_size.max(1),
        seconds: args.bench_seconds.max(0.5),
        chat_tokens: 64,
    };
    let dtype = config.dtype;
    let dir = config.model.clone();
    let mut report = rt.block_on(run(config.clone(), opts.clone()))?;
    {
        let ck = poc_model::Checkpoint::open(&dir)?;
        let mut load = poc_model::LoadOptions::new(
            dtype.unwrap_or(ck.config().dtype),
            &poc_model::default_device(),
        );
        load.devices = poc_model::parse_devices(&args.device.devices)?;
        load.fp8 = args.device.fp8();
        let model = poc_model::Qwen3Model::load_with(&ck, &load)?;
        let engine = poc_model::PocEngine::new(std::sync::Arc::new(model));
        report.direct_nonces_per_second = direct_rate(&engine, &opts);
        report.server_overhead =
            1.0 - report.server_nonces_per_second / report.direct_nonces_per_second;
    }
    let mut rows = Vec::new();
    let chats: Vec<usize> = args.bench_chats.clone();
    if !chats.is_empty() {
        for name in &args.bench_policies {
            let mut c = config.clone();
            c.settings.chat_policy =
                poc_mlnode::ChatPolicy::from_name(name).context("unknown chat policy")?;
            let opts = LoadOptions {
                seq_len: args.bench_seq_len,
                batch_size: args.bench_batch_size.max(1),
                chats: chats.clone(),
                seconds: args.bench_seconds.max(0.5),
                chat_tokens: args.bench_chat_tokens.max(1),
            };
            rows.extend(rt.block_on(load(c, opts))?);
        }
        eprintln!("{}", load_table(&rows));
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "model": dir,
            "seq_len": opts.seq_len,
            "batch_size": opts.batch_size,
            "max_batch_tokens": config.settings.max_batch_tokens,
            "poc_share": config.settings.poc_share,
            "report": report,
            "load": rows,
        }))?
    );
    Ok(())
}
