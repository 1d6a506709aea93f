//! `poc calibrate`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use poc_calibrate::power::{Test, Weights};
use poc_calibrate::report::Settings;
use poc_calibrate::variants::{DEFAULT_VARIANTS, Variant};
use poc_calibrate::{Config, FileVariant};

use crate::cli::parse_duration;

#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// Model directory (config.json + safetensors), in its bf16/f32 original (the FP8
    /// variant is derived from it). Not needed when every variant is a file.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Variants computed on this machine, comma-separated. Honest: `f32`, `bf16`, `f16`
    /// (compute dtype), `fp8` (the FP8 block-quantized copy), `batch=N` (N nonces per
    /// forward), `device=cuda:N` (the reference on a GPU; the `cuda` build). Cheaper or modified: `int4` (4-bit rounded weights), `perturb=EPS` (the
    /// middle layer's matrices times 1 + EPS·N(0,1)), `swap-expert` (experts 0 and 1 of
    /// the middle MoE layer exchanged), `no-reflect` (reflections skipped), `random`
    /// (random vectors of the honest scale).
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_VARIANTS)]
    pub variants: Vec<String>,
    /// An honest variant's artifacts made elsewhere (a GPU, another implementation), in
    /// the ML node's JSON, as `NAME=FILE` (repeatable). Its nonces must be the
    /// reference's.
    #[arg(long = "artifacts", value_name = "NAME=FILE")]
    pub artifacts: Vec<String>,
    /// A cheater's artifacts made elsewhere, as `NAME=FILE` (repeatable).
    #[arg(long = "cheater-artifacts", value_name = "NAME=FILE")]
    pub cheater_artifacts: Vec<String>,
    /// The variant every other is measured against.
    #[arg(long, default_value = "f32")]
    pub reference: String,
    /// Nonces 0..N computed per variant.
    #[arg(long, default_value_t = 1000)]
    pub nonces: usize,
    /// Sequence length L.
    #[arg(long, default_value_t = 64)]
    pub seq_len: usize,
    /// Artifact dimensions k.
    #[arg(long, default_value_t = 12)]
    pub k_dim: usize,
    /// Nonces per forward (the reference's batch composition).
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Compute dtype of the variants that do not set one.
    #[arg(long, default_value = "f32", value_parser = ["f32", "bf16", "f16"])]
    pub dtype: String,
    /// Block hash the inputs are seeded with.
    #[arg(long, default_value = "calibration-block")]
    pub block_hash: String,
    /// Public key the inputs are seeded with.
    #[arg(long, default_value = "calibration-key")]
    pub public_key: String,
    /// Honest percentile the threshold is set at.
    #[arg(long, default_value_t = 98.0)]
    pub percentile: f64,
    /// The chain's `p_mismatch` (the test's null hypothesis).
    #[arg(long, default_value_t = 0.1)]
    pub p_mismatch: f64,
    /// The chain's `p_value_threshold`.
    #[arg(long, default_value_t = 0.05)]
    pub p_value_threshold: f64,
    /// Validator sample sizes for the power table.
    #[arg(long, value_delimiter = ',', default_value = "50,100,200,500,1000")]
    pub sample_sizes: Vec<u64>,
    /// Cheated fractions of nonces.
    #[arg(long, value_delimiter = ',', default_value = "0.01,0.02,0.04,0.1,1")]
    pub fractions: Vec<f64>,
    /// Sample size of the vote simulation and of the phase length.
    #[arg(long, default_value_t = 200)]
    pub sample_size: u64,
    /// Validator weights of the vote: `uniform:N`, `heavy:N` (heavy-tailed, as on a live
    /// network), or a file of one weight per line (comma-separated list).
    #[arg(long, value_delimiter = ',', default_value = "uniform:377,heavy:377")]
    pub weights: Vec<String>,
    /// Monte Carlo rounds per vote probability.
    #[arg(long, default_value_t = 10_000)]
    pub trials: u32,
    /// Seed of the Monte Carlo and of the random variants.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Production rate for the phase length, e.g. `352/min` (one H200 in the reference
    /// report); default: the reference variant's measured rate on this machine.
    #[arg(long)]
    pub rate: Option<String>,
    /// Block time of the chain.
    #[arg(long, default_value = "6s", value_parser = parse_duration)]
    pub block_time: std::time::Duration,
    /// Largest generation stage (blocks) of the power-vs-stage curve; default four times
    /// the shortest stage that yields the full sample.
    #[arg(long)]
    pub max_stage: Option<u64>,
    /// Cheated fraction of the phase-length curve.
    #[arg(long, default_value_t = 0.04)]
    pub phase_fraction: f64,
    /// Output directory: report.md, report.json, plots/, artifacts/.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

fn named_files(list: &[String], honest: bool) -> anyhow::Result<Vec<FileVariant>> {
    list.iter()
        .map(|s| {
            let (name, path) = s
                .split_once('=')
                .with_context(|| format!("{s:?} is not NAME=FILE"))?;
            if name.is_empty() {
                bail!("{s:?}: the name before = is empty");
            }
            Ok(FileVariant {
                name: name.to_owned(),
                path: PathBuf::from(path),
                honest,
            })
        })
        .collect()
}

fn weights(spec: &str, seed: u64) -> anyhow::Result<Weights> {
    let count = |n: &str| -> anyhow::Result<usize> {
        n.parse()
            .ok()
            .filter(|&n| n > 0)
            .with_context(|| format!("{spec:?}: the count must be a positive integer"))
    };
    if let Some(n) = spec.strip_prefix("uniform:") {
        return Ok(Weights::uniform(count(n)?));
    }
    if let Some(n) = spec.strip_prefix("heavy:") {
        return Ok(Weights::heavy(count(n)?, seed));
    }
    let text = std::fs::read_to_string(spec).with_context(|| {
        format!("--weights {spec:?} is neither uniform:N, heavy:N nor a readable file")
    })?;
    let w = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            l.parse::<i64>()
                .ok()
                .filter(|w| *w >= 0)
                .with_context(|| format!("{spec}: {l:?} is not a non-negative integer weight"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if w.iter().sum::<i64>() == 0 {
        bail!("{spec}: the weights sum to zero");
    }
    Ok(Weights {
        name: spec.to_owned(),
        weights: w,
    })
}

pub fn run(a: &CalibrateArgs) -> anyhow::Result<()> {
    let variants = a
        .variants
        .iter()
        .filter(|v| !v.is_empty())
        .map(|v| Variant::parse(v))
        .collect::<Result<Vec<_>, _>>()?;
    let mut files = named_files(&a.artifacts, true)?;
    files.extend(named_files(&a.cheater_artifacts, false)?);
    if !(0.0..=100.0).contains(&a.percentile) {
        bail!("--percentile {} must be in 0..=100", a.percentile);
    }
    let test = Test {
        p_mismatch: a.p_mismatch,
        p_value_threshold: a.p_value_threshold,
    };
    if !(0.0..=1.0).contains(&test.p_mismatch) || !(0.0..=1.0).contains(&test.p_value_threshold) {
        bail!("--p-mismatch and --p-value-threshold must be probabilities in [0, 1]");
    }
    if a.fractions.iter().any(|f| !(0.0..=1.0).contains(f)) {
        bail!("--fractions must lie in [0, 1]");
    }
    if a.sample_sizes.is_empty() || a.sample_sizes.contains(&0) || a.sample_size == 0 {
        bail!("sample sizes must be positive");
    }
    let rate = a
        .rate
        .as_deref()
        .map(poc_calibrate::phase::parse_rate)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let dtype = match a.dtype.as_str() {
        "bf16" => candle_core::DType::BF16,
        "f16" => candle_core::DType::F16,
        _ => candle_core::DType::F32,
    };
    let stage_blocks = match a.max_stage {
        Some(0) => bail!("--max-stage must be positive"),
        Some(m) => {
            let step = m.div_ceil(40);
            (1..=m.div_ceil(step)).map(|i| (i * step).min(m)).collect()
        }
        None => Vec::new(),
    };
    let cfg = Config {
        model: a.model.clone(),
        variants,
        files,
        reference: a.reference.clone(),
        nonces: a.nonces,
        seq_len: a.seq_len,
        k_dim: a.k_dim,
        batch: a.batch_size,
        dtype,
        block_hash: a.block_hash.clone(),
        public_key: a.public_key.clone(),
        rate,
        block_time_s: a.block_time.as_secs_f64(),
        settings: Settings {
            percentile: a.percentile,
            test,
            sample_sizes: a.sample_sizes.clone(),
            fractions: a.fractions.clone(),
            sample_size: a.sample_size,
            trials: a.trials,
            seed: a.seed,
            weights: a
                .weights
                .iter()
                .map(|w| weights(w, a.seed))
                .collect::<anyhow::Result<_>>()?,
            production: None,
            rate_source: String::new(),
            stage_blocks,
            phase_fraction: a.phase_fraction,
        },
        out: a.out.clone(),
    };
    let t = std::time::Instant::now();
    let r = poc_calibrate::run(&cfg)?;
    let th = &r.threshold;
    eprintln!(
        "calibrated {} variants in {:.1} s: threshold {:.4} (honest p{}), honest mismatch {:.2} %",
        r.variants.len() + 1,
        t.elapsed().as_secs_f64(),
        th.value,
        th.percentile,
        th.honest_rate * 100.0
    );
    for v in r.variants.iter().filter(|v| !v.honest) {
        eprintln!(
            "  {:>14}: mismatch {:.2} %",
            v.name,
            v.mismatch_rate * 100.0
        );
    }
    println!("{}", a.out.join("report.md").display());
    Ok(())
}
