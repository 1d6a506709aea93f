//! `poc artifacts ...`

use std::collections::HashSet;
use std::path::Path;
use std::process::ExitCode;

use poc_core::StatTest;
use poc_core::artifact::decode_vector_f32;
use poc_core::projection::artifact_from_hidden;
use poc_core::validation::compare_artifacts;
use serde::Deserialize;

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use candle_core::DType;
use indicatif::{ProgressBar, ProgressStyle};
use poc_core::artifact::encode_f16;
use poc_core::{Artifact, Encoding, InputRng};
use poc_model::config::parse_dtype;
use poc_model::plan::flops_per_token;
use poc_model::presets::Preset;
use poc_model::{
    Checkpoint, Fp8Path, LoadOptions, PocEngine, PocParams, Qwen3Model, SyntheticWeights,
    WeightSource, parse_devices,
};
use serde_json::json;

use crate::cli::{ModelArgs, NonceSelection, SeedArgs};
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum ArtifactsCommand {
    /// Compute PoC artifacts with a model, as an ML node does.
    ///
    /// Prints the ML node's shape on stdout: `{"artifacts": [{"nonce", "vector_b64"}],
    /// "encoding": {...}}`, with a progress bar on stderr for long runs. Nonces whose hidden
    /// state is not finite are left out (with a warning).
    Compute(ComputeArgs),
    /// Measure the PoC forward: nonces/s and tokens/s.
    Bench(BenchArgs),
    /// Validate received artifacts against recomputed ones, as a validator's ML node does.
    ///
    /// Both files hold the ML node's response shape,
    /// `{"artifacts": [{"nonce": n, "vector_b64": "..."}, ...]}` (other top-level keys such
    /// as `encoding` or `status` are allowed). Nonces are matched by value. A received
    /// nonce mismatches when its vector is malformed (bad base64, wrong length, NaN/Inf) or
    /// its L2 distance to the recomputed vector is strictly greater than
    /// `--dist-threshold`. `n_total` is the number of received artifacts. The verdict is
    /// printed as JSON on stdout:
    /// `{n_total, n_mismatch, mismatch_nonces, p_value, fraud_detected}`.
    ///
    /// Exit status: 0 when the comparison ran (whatever the verdict, unless
    /// `--fail-on-fraud`), 1 with `--fail-on-fraud` when fraud was detected, 2 when an
    /// input file or option is invalid.
    Compare(CompareArgs),
    /// Turn last-token hidden states into artifacts (normalise, pick, Haar, FP16, base64).
    ///
    /// This is the model-independent tail of the PoC pipeline (spec §2.6–§2.10). Feed it
    /// hidden states dumped from any implementation (after the final norm, last position,
    /// as f32) to check that both produce the same artifacts. The input file is
    /// `{"hidden_states": [{"nonce": n, "values": [h_0, ..., h_{H-1}]}, ...]}`; the output
    /// on stdout is the ML node's shape, `{"artifacts": [...], "encoding": {...}}`.
    Project(ProjectArgs),
}

#[derive(Debug, Args)]
pub struct ProjectArgs {
    #[command(flatten)]
    pub seeds: SeedArgs,
    /// JSON file with the hidden states (see the command's help).
    #[arg(long, value_name = "FILE")]
    pub hidden: PathBuf,
    /// Number of dimensions per artifact.
    #[arg(long, default_value_t = 12)]
    pub k_dim: usize,
}

#[derive(Debug, Args)]
pub struct ComputeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub seeds: SeedArgs,
    #[command(flatten)]
    pub nonces: NonceSelection,
    /// Sequence length L.
    #[arg(long)]
    pub seq_len: usize,
    /// Artifact dimensions k.
    #[arg(long, default_value_t = 12)]
    pub k_dim: usize,
    /// Nonces per forward.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Use the stronger (concat-murmur) input generator.
    #[arg(long)]
    pub stronger_rng: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Sequence length L.
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    /// Nonces per forward; a comma-separated list measures each on the same loaded model
    /// (e.g. `8,16,32`).
    #[arg(long, value_delimiter = ',', default_value = "8")]
    pub batch_size: Vec<usize>,
    /// Nonces to compute in each timed run (after one warm-up batch).
    #[arg(long, default_value_t = 32)]
    pub nonces: usize,
    /// Peak dense TFLOPS of one device at the compute precision, for the share-of-peak
    /// figure (default: known for H100/H200, else not reported).
    #[arg(long, value_name = "TFLOPS")]
    pub peak_tflops: Option<f64>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Artifacts recomputed by the validator (trusted side).
    #[arg(long, value_name = "FILE")]
    pub computed: PathBuf,
    /// Artifacts received from the participant being validated.
    #[arg(long, value_name = "FILE")]
    pub received: PathBuf,
    /// A nonce mismatches when the L2 distance is strictly greater than this.
    #[arg(long, default_value_t = 0.02, value_name = "DIST")]
    pub dist_threshold: f64,
    /// Probability that an honest nonce mismatches (null hypothesis of the binomial test).
    #[arg(long, default_value_t = 0.001, value_name = "P")]
    pub p_mismatch: f64,
    /// Fraud is detected when the one-sided binomial p-value is strictly below this.
    #[arg(
        long,
        default_value_t = 0.01,
        value_name = "P",
        alias = "p-value-threshold"
    )]
    pub fraud_threshold: f64,
    /// Exit with status 1 when fraud is detected.
    #[arg(long)]
    pub fail_on_fraud: bool,
}

/// Largest artifact file accepted (a million artifacts is about 60 MB of JSON).
const MAX_FILE_BYTES: u64 = 1 << 30;

/// The ML node's artifact response shape; other keys are ignored.
#[derive(Debug, Deserialize)]
struct ArtifactFile {
    artifacts: Vec<Artifact>,
    #[serde(default)]
    encoding: Option<Encoding>,
}

/// Reads a JSON input file of at most [`MAX_FILE_BYTES`].
fn read_json_text(path: &Path, what: &str) -> anyhow::Result<String> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read {what} file {}", path.display()))?;
    if meta.len() > MAX_FILE_BYTES {
        bail!(
            "{what} file {} is {} bytes; the limit is {MAX_FILE_BYTES}",
            path.display(),
            meta.len()
        );
    }
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {what} file {}", path.display()))
}

fn read_artifact_file(path: &Path) -> anyhow::Result<ArtifactFile> {
    let text = read_json_text(path, "artifact")?;
    let file: ArtifactFile = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not an artifact file: expected JSON like \
             {{\"artifacts\": [{{\"nonce\": 0, \"vector_b64\": \"...\"}}]}}",
            path.display()
        )
    })?;
    if let Some(enc) = &file.encoding
        && !enc.is_f16_le()
    {
        bail!(
            "{}: unsupported encoding {{dtype: {:?}, endian: {:?}}}; only f16 little-endian exists",
            path.display(),
            enc.dtype,
            enc.endian
        );
    }
    Ok(file)
}

/// Decodes the validator's own vectors; any defect there is an input error, not a mismatch.
fn decode_computed(path: &Path, file: &ArtifactFile) -> anyhow::Result<Vec<(i64, Vec<f32>)>> {
    let expected_k = file.encoding.as_ref().map(|e| e.k_dim);
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(file.artifacts.len());
    let mut k_dim = expected_k;
    for a in &file.artifacts {
        if !seen.insert(a.nonce) {
            bail!(
                "{}: nonce {} appears more than once",
                path.display(),
                a.nonce
            );
        }
        let v = decode_vector_f32(&a.vector_b64, k_dim)
            .with_context(|| format!("{}: artifact for nonce {}", path.display(), a.nonce))?;
        k_dim.get_or_insert(v.len());
        out.push((a.nonce, v));
    }
    Ok(out)
}

pub fn compare(args: &CompareArgs) -> anyhow::Result<ExitCode> {
    let stat = StatTest {
        dist_threshold: args.dist_threshold,
        p_mismatch: args.p_mismatch,
        fraud_threshold: args.fraud_threshold,
    };
    stat.validate()
        .context("invalid statistical test options")?;
    let computed_file = read_artifact_file(&args.computed)?;
    let computed = decode_computed(&args.computed, &computed_file)?;
    let received = read_artifact_file(&args.received)?;
    let mut seen = HashSet::new();
    if let Some(dup) = received.artifacts.iter().find(|a| !seen.insert(a.nonce)) {
        bail!(
            "{}: nonce {} appears more than once",
            args.received.display(),
            dup.nonce
        );
    }
    let result = compare_artifacts(&computed, &received.artifacts, &stat)?;
    println!("{}", serde_json::to_string(&result)?);
    Ok(if args.fail_on_fraud && result.fraud_detected {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// One nonce's last-token hidden state.
#[derive(Debug, Deserialize)]
struct HiddenState {
    nonce: i64,
    values: Vec<f32>,
}

#[derive(Debug, Deserialize)]
struct HiddenStateFile {
    hidden_states: Vec<HiddenState>,
}

pub fn project(args: &ProjectArgs) -> anyhow::Result<()> {
    let text = read_json_text(&args.hidden, "hidden-state")?;
    let file: HiddenStateFile = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a hidden-state file: expected JSON like \
             {{\"hidden_states\": [{{\"nonce\": 0, \"values\": [0.1, ...]}}]}}",
            args.hidden.display()
        )
    })?;
    let hidden_size = file.hidden_states.first().map(|h| h.values.len());
    let mut seen = HashSet::new();
    let mut artifacts = Vec::with_capacity(file.hidden_states.len());
    for h in &file.hidden_states {
        if !seen.insert(h.nonce) {
            bail!(
                "{}: nonce {} appears more than once",
                args.hidden.display(),
                h.nonce
            );
        }
        if Some(h.values.len()) != hidden_size {
            bail!(
                "{}: nonce {} has {} values but the first hidden state has {}; all must have the model's hidden size",
                args.hidden.display(),
                h.nonce,
                h.values.len(),
                hidden_size.unwrap_or(0)
            );
        }
        let a = artifact_from_hidden(
            &args.seeds.block_hash,
            &args.seeds.public_key,
            h.nonce,
            &h.values,
            args.k_dim,
        )
        .with_context(|| format!("nonce {}", h.nonce))?;
        artifacts.push(a);
    }
    let out = serde_json::json!({
        "artifacts": artifacts,
        "encoding": Encoding::f16_le(args.k_dim),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// Loads the model of `args`: a checkpoint directory or a preset generated in memory, on
/// the requested devices.
fn load(args: &ModelArgs) -> anyhow::Result<Arc<Qwen3Model>> {
    let source: Box<dyn WeightSource> = match (&args.model, &args.preset) {
        (Some(dir), _) => Box::new(
            Checkpoint::open(dir)
                .with_context(|| format!("cannot open the checkpoint {}", dir.display()))?,
        ),
        (None, Some(p)) => Box::new(SyntheticWeights::preset(
            Preset::from_name(p).context("unknown preset")?,
            args.layers,
        )?),
        (None, None) => bail!("give --model DIR or --preset NAME"),
    };
    let dtype = match args.dtype.as_str() {
        "auto" => source.config().dtype,
        other => parse_dtype(other).context("unknown dtype")?,
    };
    let devices = parse_devices(&args.device.devices)?;
    let mut opts = LoadOptions::new(dtype, &devices[0]);
    opts.devices = devices;
    opts.fp8 = args.device.fp8();
    let t = Instant::now();
    let model = Qwen3Model::load_with(source.as_ref(), &opts)
        .with_context(|| format!("cannot load {}", args.label()))?;
    eprintln!(
        "loaded {} ({}, {:?}, fp8 {}, {}) in {:.2} s",
        args.label(),
        source.config().architecture.hf_name(),
        dtype,
        model.fp8_path(),
        model
            .stages()
            .iter()
            .map(|(d, r)| format!("{d:?} layers {}..{}", r.start, r.end))
            .collect::<Vec<_>>()
            .join(", "),
        t.elapsed().as_secs_f64()
    );
    Ok(Arc::new(model))
}

fn nonce_list(sel: &NonceSelection) -> anyhow::Result<Vec<i64>> {
    if let Some(range) = &sel.nonce_range {
        let (a, b) = range
            .split_once("..")
            .with_context(|| format!("--nonce-range {range:?} is not of the form START..END"))?;
        let start: i64 = a
            .trim()
            .parse()
            .with_context(|| format!("bad range start {a:?}"))?;
        let end: i64 = b
            .trim()
            .parse()
            .with_context(|| format!("bad range end {b:?}"))?;
        if end < start {
            bail!("--nonce-range {range}: END is below START");
        }
        if end - start > 100_000_000 {
            bail!("--nonce-range {range} is too large (at most 10^8 nonces)");
        }
        return Ok((start..end).collect());
    }
    let mut seen = HashSet::new();
    if let Some(d) = sel.nonces.iter().find(|n| !seen.insert(**n)) {
        bail!("nonce {d} is listed twice");
    }
    Ok(sel.nonces.clone())
}

pub fn compute(args: &ComputeArgs) -> anyhow::Result<()> {
    let nonces = nonce_list(&args.nonces)?;
    let model = load(&args.model)?;
    let engine = PocEngine::new(model);
    let params = PocParams {
        block_hash: args.seeds.block_hash.clone(),
        public_key: args.seeds.public_key.clone(),
        seq_len: args.seq_len,
        k_dim: args.k_dim,
        rng: InputRng::from_stronger_flag(args.stronger_rng),
    };
    engine.check(&params)?;
    let bar = ProgressBar::new(nonces.len() as u64);
    if nonces.len() > args.batch_size {
        bar.set_style(ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} nonces ({per_sec}, eta {eta})",
        )?);
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let results = engine.compute(&params, &nonces, args.batch_size, |done| {
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();
    let mut artifacts = Vec::with_capacity(results.len());
    for r in results {
        match r.vector {
            Some(v) => artifacts.push(Artifact {
                nonce: r.nonce,
                vector_b64: encode_f16(&v),
            }),
            None => eprintln!(
                "warning: nonce {} gave a non-finite hidden state and is left out",
                r.nonce
            ),
        }
    }
    println!(
        "{}",
        serde_json::to_string(
            &json!({ "artifacts": artifacts, "encoding": Encoding::f16_le(args.k_dim) })
        )?
    );
    Ok(())
}

pub fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    if args.nonces == 0 || args.batch_size.is_empty() || args.batch_size.contains(&0) {
        bail!("--nonces and --batch-size must be positive");
    }
    let model = load(&args.model)?;
    let engine = PocEngine::new(Arc::clone(&model));
    let mut reports = Vec::with_capacity(args.batch_size.len());
    for &batch in &args.batch_size {
        let report = bench_one(args, &model, &engine, batch)?;
        if !args.json {
            print_bench(args, &model, &report);
        }
        reports.push(report);
    }
    if args.json {
        let out = if reports.len() == 1 {
            reports.pop().expect("one report")
        } else {
            serde_json::Value::Array(reports)
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}

/// One timed run at `batch` nonces per forward.
fn bench_one(
    args: &BenchArgs,
    model: &Qwen3Model,
    engine: &PocEngine,
    batch: usize,
) -> anyhow::Result<serde_json::Value> {
    let dtype: DType = model.dtype();
    let params = PocParams {
        block_hash: "BENCH_BLOCK".into(),
        public_key: "bench_key".into(),
        seq_len: args.seq_len,
        k_dim: 12,
        rng: InputRng::Standard,
    };
    let warm: Vec<i64> = (0..batch as i64).collect();
    engine.compute(&params, &warm, batch, |_| {})?;
    let nonces: Vec<i64> = (1_000..1_000 + args.nonces as i64).collect();
    let start = Instant::now();
    let _ = engine.inputs(&params, &nonces[..batch.min(nonces.len())]);
    let input_seconds = start.elapsed().as_secs_f64();
    let start = Instant::now();
    engine.compute(&params, &nonces, batch, |_| {})?;
    let t = start.elapsed().as_secs_f64();
    let nps = args.nonces as f64 / t;
    let cfg = model.config();
    let layers = cfg.num_hidden_layers;
    let tps = nps * args.seq_len as f64;
    let flops = flops_per_token(cfg, args.seq_len);
    let tflops = tps * flops / 1e12;
    let on_gpu = !model.device().is_cpu();
    let fp8_gemm = model.fp8_path() == Fp8Path::W8A8 && cfg.fp8.is_some();
    let peak = args
        .peak_tflops
        .or_else(|| on_gpu.then(|| gpu_peak_tflops(fp8_gemm)).flatten())
        .map(|p| p * model.stage_count() as f64);
    Ok(json!({
        "model": args.model.label(),
        "dtype": format!("{dtype:?}"),
        "fp8_path": model.fp8_path().name(),
        "devices": model.stages().iter().map(|(d, r)| json!({"device": format!("{d:?}"), "layers": [r.start, r.end]})).collect::<Vec<_>>(),
        "layers": layers,
        "seq_len": args.seq_len,
        "batch_size": batch,
        "nonces": args.nonces,
        "seconds": t,
        "nonces_per_second": nps,
        "nonces_per_minute": nps * 60.0,
        "tokens_per_second": tps,
        "layer_tokens_per_second": tps * layers as f64,
        "flops_per_token": flops,
        "tflops": tflops,
        "peak_tflops": peak,
        "peak_share": peak.map(|p| tflops / p),
        "input_generation_seconds_per_batch": input_seconds,
        "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    }))
}

fn print_bench(args: &BenchArgs, model: &Qwen3Model, r: &serde_json::Value) {
    let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
    println!(
        "{}: {} layers, {:?}, fp8 {}, L = {}, B = {}",
        args.model.label(),
        model.config().num_hidden_layers,
        model.dtype(),
        model.fp8_path(),
        args.seq_len,
        r["batch_size"]
    );
    println!(
        "  {:.2} nonces/s ({:.1} nonces/min), {:.0} tokens/s, {:.0} layer-tokens/s, {:.2} TFLOPS{}",
        f("nonces_per_second"),
        f("nonces_per_minute"),
        f("tokens_per_second"),
        f("layer_tokens_per_second"),
        f("tflops"),
        r["peak_tflops"]
            .as_f64()
            .map(|p| format!(" ({:.1} % of {p:.0} peak)", 100.0 * f("tflops") / p))
            .unwrap_or_default()
    );
}

/// Dense peak TFLOPS of the first GPU (bf16, or FP8 for FP8 products), for the GPUs whose
/// figures are known; the name comes from `nvidia-smi`.
fn gpu_peak_tflops(fp8: bool) -> Option<f64> {
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader"])
        .output()
        .ok()?;
    let name = String::from_utf8_lossy(&out.stdout).to_ascii_uppercase();
    let bf16 = if name.contains("H100") || name.contains("H200") {
        if name.contains("PCIE") { 756.0 } else { 989.4 }
    } else if name.contains("A100") {
        312.0
    } else if name.contains("B200") {
        2250.0
    } else {
        return None;
    };
    Some(if fp8 && !name.contains("A100") {
        2.0 * bf16
    } else {
        bf16
    })
}
