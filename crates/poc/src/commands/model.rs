//! `poc model ...`, `poc artifacts compute` and `poc artifacts bench`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use candle_core::DType;
use indicatif::{ProgressBar, ProgressStyle};
use poc_core::artifact::encode_f16;
use poc_core::{Artifact, Encoding, InputRng};
use poc_model::config::{dtype_name, parse_dtype};
use poc_model::plan::{GIB, PlanRequest, flops_per_token, parse_bytes, plan};
use poc_model::presets::{Preset, write_preset_config, write_preset_with};
use poc_model::quantize::{quantize_fp8, round_4bit};
use poc_model::{
    Checkpoint, Fp8Path, LoadOptions, ModelConfig, PocEngine, PocParams, Qwen3Model,
    SyntheticWeights, WeightSource, parse_devices,
};
use serde_json::json;

use crate::cli::{BenchArgs, ComputeArgs, ModelArgs, ModelCommand, NonceSelection};

pub fn run(cmd: ModelCommand) -> anyhow::Result<()> {
    match cmd {
        ModelCommand::Init {
            preset,
            layers,
            config_only,
            out,
        } => {
            let p = Preset::from_name(&preset).context("unknown preset")?;
            if config_only {
                write_preset_config(p, &out, layers).with_context(|| {
                    format!(
                        "cannot write the {preset} configuration to {}",
                        out.display()
                    )
                })?;
                println!(
                    "{}",
                    json!({ "preset": preset, "dir": out, "config_only": true })
                );
                return Ok(());
            }
            let t = Instant::now();
            let bar = ProgressBar::hidden();
            let s = write_preset_with(p, &out, layers, |done, total| {
                if total > 1 {
                    if bar.is_hidden() {
                        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                        bar.set_length(total as u64);
                        if let Ok(style) = ProgressStyle::with_template(
                            "{elapsed_precise} [{bar:40}] {pos}/{len} shards (eta {eta})",
                        ) {
                            bar.set_style(style);
                        }
                    }
                    bar.set_position(done as u64);
                }
            })
            .with_context(|| {
                format!("cannot write the {preset} checkpoint to {}", out.display())
            })?;
            bar.finish_and_clear();
            eprintln!(
                "wrote {preset} ({} parameters) to {} in {:.1} s",
                s.parameters,
                out.display(),
                t.elapsed().as_secs_f64()
            );
            println!(
                "{}",
                json!({ "preset": preset, "dir": out, "tensors": s.tensors, "parameters": s.parameters })
            );
            Ok(())
        }
        ModelCommand::Info { dir, tensors } => info(&dir, tensors),
        ModelCommand::Plan {
            model,
            preset,
            layers,
            devices,
            device_memory,
            batch_size,
            seq_len,
            dtype,
            fp8_path,
            reserve,
            json,
        } => {
            let cfg = match (&model, &preset) {
                (Some(dir), _) => ModelConfig::from_dir(dir).with_context(|| {
                    format!("cannot read the model config in {}", dir.display())
                })?,
                (None, Some(p)) => Preset::from_name(p)
                    .context("unknown preset")?
                    .config(layers)?,
                (None, None) => bail!("give --model DIR or --preset NAME"),
            };
            let req = PlanRequest {
                devices,
                device_memory: parse_bytes(&device_memory)?,
                batch: batch_size,
                seq_len,
                dtype: parse_dtype(&dtype).context("unknown dtype")?,
                fp8: Fp8Path::from_name(&fp8_path).context("unknown FP8 path")?,
                reserve: parse_bytes(&reserve)?,
            };
            let p = plan(&cfg, &req)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&p)?);
                return Ok(());
            }
            let gib = |b: u64| b as f64 / GIB as f64;
            println!(
                "{} on {} x {:.1} GiB ({} weights, {}, batch {} x {}): {:.1} GiB of weights",
                if p.fits { "fits" } else { "does NOT fit" },
                p.devices,
                gib(p.device_memory_bytes),
                p.fp8_path,
                p.dtype,
                p.batch,
                p.seq_len,
                gib(p.total_weight_bytes)
            );
            for d in &p.per_device {
                println!(
                    "  device {}: layers {:>3}..{:<3} weights {:>7.1} GiB  activations {:>6.1} GiB  free {:>7.1} GiB",
                    d.device,
                    d.layers[0],
                    d.layers[1],
                    gib(d.weight_bytes),
                    gib(d.activation_bytes),
                    d.free_bytes as f64 / GIB as f64
                );
            }
            if let Some(r) = &p.reason {
                println!("  {r}");
            }
            Ok(())
        }
        ModelCommand::Quantize {
            fp8,
            int4_rounded: _,
            block,
            input,
            output,
        } => {
            let s = if fp8 {
                quantize_fp8(&input, &output, [block, block])
            } else {
                round_4bit(&input, &output)
            }
            .with_context(|| {
                format!(
                    "cannot quantize {} into {}",
                    input.display(),
                    output.display()
                )
            })?;
            println!(
                "{}",
                json!({ "output": output, "format": if fp8 { "fp8" } else { "int4-rounded" }, "quantized": s.quantized, "copied": s.copied })
            );
            Ok(())
        }
    }
}

fn info(dir: &std::path::Path, list: bool) -> anyhow::Result<()> {
    let ck = Checkpoint::open(dir)
        .with_context(|| format!("cannot open the checkpoint {}", dir.display()))?;
    let c = ck.config();
    let tensors = ck.tensors();
    let mut by_dtype: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    let mut params = 0u64;
    for (name, dt, shape) in &tensors {
        let n: u64 = shape.iter().map(|&d| d as u64).product();
        if !name.ends_with("_scale_inv") {
            params += n;
        }
        let e = by_dtype.entry(dt.clone()).or_default();
        e.0 += 1;
        e.1 += n;
    }
    let mut out = json!({
        "dir": dir,
        "architecture": c.architecture.hf_name(),
        "dtype": dtype_name(c.dtype),
        "fp8_block": c.fp8.map(|q| q.block),
        "parameters": params,
        "hidden_size": c.hidden_size,
        "layers": c.num_hidden_layers,
        "attention_heads": c.num_attention_heads,
        "kv_heads": c.num_key_value_heads,
        "head_dim": c.head_dim,
        "vocab_size": c.vocab_size,
        "experts": c.moe.as_ref().map(|m| json!({"count": m.num_experts, "per_token": m.experts_per_token, "intermediate": m.moe_intermediate_size})),
        "tensor_count": tensors.len(),
        "stored_dtypes": by_dtype.iter().map(|(k, (t, n))| (k.clone(), json!({"tensors": t, "elements": n}))).collect::<serde_json::Map<_, _>>(),
    });
    if list {
        out["tensors"] = tensors
            .iter()
            .map(|(n, d, s)| json!({"name": n, "dtype": d, "shape": s}))
            .collect();
    }
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
    let mut seen = std::collections::HashSet::new();
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
