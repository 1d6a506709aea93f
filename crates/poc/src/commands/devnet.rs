//! `poc devnet`.

use std::process::ExitCode;

use anyhow::Context;
use poc_devnet::{Devnet, DevnetOptions, Mode};

use crate::cli::DevnetArgs;

pub fn run(a: &DevnetArgs) -> anyhow::Result<ExitCode> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let o = DevnetOptions {
        participants: a.participants,
        cheaters: a.cheaters,
        epochs: a.epochs,
        mode: match a.mode.as_str() {
            "v1" => Mode::V1,
            "migration" => Mode::Migration,
            _ => Mode::V2,
        },
        model: (a.model != "tiny-moe").then(|| a.model.clone().into()),
        seq_len: a.seq_len,
        home: a.home.clone().unwrap_or_else(poc_devnet::default_home),
        keep: a.keep,
        block_time: a.block_time,
        epoch_length: a.epoch_length,
        confirmations: a.confirmations,
        validators: a.validators,
        progress: !a.quiet,
        ..DevnetOptions::default()
    };
    if o.epoch_length < 30 {
        anyhow::bail!("--epoch-length must be at least 30 blocks (PoC needs about 30)");
    }
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let report = rt.block_on(async move {
        let chain = if o.validators > 0 { format!("{} chain validators", o.validators) } else { "chain node".to_owned() };
        eprintln!("starting: {chain}, {} ML nodes, {} API nodes (home {})", o.participants, o.participants, o.home.display());
        let mut net = Devnet::start(o).await?;
        eprintln!("chain REST at {}", net.chain_url());
        let r = tokio::select! {
            r = net.run() => r,
            _ = super::mlnode::shutdown_signal() => Err(poc_devnet::DevnetError::Component("interrupted".into())),
        };
        net.shutdown().await;
        anyhow::Ok(r?)
    })?;
    print!("{}", poc_devnet::table(&report));
    if let Some(p) = &a.report {
        std::fs::write(p, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
