//! `poc devnet`.

use std::process::ExitCode;

use anyhow::Context;
use poc_devnet::{Devnet, DevnetOptions, Mode};

use crate::cli::parse_duration;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct DevnetArgs {
    /// Participants in total.
    #[arg(long, default_value_t = 4)]
    pub participants: usize,
    /// How many of them cheat, one kind each, round-robin: (a) the 4-bit-rounded model,
    /// (b) random vectors for 40 % of its nonces, (c) an inflated count (every vector
    /// also reported under a fabricated nonce).
    #[arg(long, default_value_t = 1)]
    pub cheaters: usize,
    /// Regular PoC rounds to run.
    #[arg(long, default_value_t = 2)]
    pub epochs: u64,
    /// `v2`; `v1` (PoC v1 on the tiny v1 model); `migration` (v1 with v2 tracking, then a
    /// governance switch to v2 halfway, without restarts).
    #[arg(long, default_value = "v2", value_parser = ["v2", "v1", "migration"])]
    pub mode: String,
    /// `tiny-moe` (embedded, generated and cached under the home) or a checkpoint directory.
    #[arg(long, default_value = "tiny-moe")]
    pub model: String,
    /// PoC sequence length.
    #[arg(long, default_value_t = 32)]
    pub seq_len: i64,
    /// Write the JSON report here (the table's data plus timings).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Home directory: `models/` (cached) and `run/` (this run's chain, stores, keys).
    #[arg(long, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Keep `run/` afterwards (otherwise it is deleted).
    #[arg(long)]
    pub keep: bool,
    /// Chain block time (`500ms`, `1s`).
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub block_time: std::time::Duration,
    /// Blocks per epoch.
    #[arg(long, default_value_t = 40)]
    pub epoch_length: i64,
    /// Expected confirmation PoCs per epoch (0: none; needs epochs of about 100 blocks).
    #[arg(long, default_value_t = 0)]
    pub confirmations: u64,
    /// Run the chain as N replicated validators (commonware simplex BFT over loopback
    /// p2p) instead of one block producer; API nodes spread over them.
    #[arg(long, default_value_t = 0)]
    pub validators: usize,
    /// No live progress view.
    #[arg(long)]
    pub quiet: bool,
}

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
