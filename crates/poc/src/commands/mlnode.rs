//! `poc mlnode`.

use std::net::{SocketAddr, ToSocketAddrs};

use anyhow::Context;
use poc_mlnode::{MlNodeConfig, PocSettings};
use poc_model::config::parse_dtype;

use crate::cli::MlnodeArgs;

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
