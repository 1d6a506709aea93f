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
use poc_model::presets::{Preset, write_preset};
use poc_model::quantize::{quantize_fp8, round_4bit};
use poc_model::{Checkpoint, PocEngine, PocParams, Qwen3Model, default_device};
use serde_json::json;

use crate::cli::{BenchArgs, ComputeArgs, ModelArgs, ModelCommand, NonceSelection};

pub fn run(cmd: ModelCommand) -> anyhow::Result<()> {
    match cmd {
        ModelCommand::Init { preset, out } => {
            let p = Preset::from_name(&preset).context("unknown preset")?;
            let t = Instant::now();
            let s = write_preset(p, &out).with_context(|| {
                format!("cannot write the {preset} checkpoint to {}", out.display())
            })?;
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

/// Loads the model of `args` on the default device.
fn load(args: &ModelArgs) -> anyhow::Result<Arc<Qwen3Model>> {
    let ck = Checkpoint::open(&args.model)
        .with_context(|| format!("cannot open the checkpoint {}", args.model.display()))?;
    let dtype = match args.dtype.as_str() {
        "auto" => ck.config().dtype,
        other => parse_dtype(other).context("unknown dtype")?,
    };
    let device = default_device();
    let t = Instant::now();
    let model = Qwen3Model::load(&ck, dtype, &device)
        .with_context(|| format!("cannot load {}", args.model.display()))?;
    eprintln!(
        "loaded {} ({}, {:?}, {:?}) in {:.2} s",
        args.model.display(),
        ck.config().architecture.hf_name(),
        dtype,
        device,
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
    if args.nonces == 0 || args.batch_size == 0 {
        bail!("--nonces and --batch-size must be positive");
    }
    let model = load(&args.model)?;
    let dtype: DType = model.dtype();
    let engine = PocEngine::new(Arc::clone(&model));
    let params = PocParams {
        block_hash: "BENCH_BLOCK".into(),
        public_key: "bench_key".into(),
        seq_len: args.seq_len,
        k_dim: 12,
        rng: InputRng::Standard,
    };
    let warm: Vec<i64> = (0..args.batch_size as i64).collect();
    engine.compute(&params, &warm, args.batch_size, |_| {})?;
    let nonces: Vec<i64> = (1_000..1_000 + args.nonces as i64).collect();
    let start = Instant::now();
    let _ = engine.inputs(&params, &nonces[..args.batch_size.min(nonces.len())]);
    let input_seconds = start.elapsed().as_secs_f64();
    let start = Instant::now();
    engine.compute(&params, &nonces, args.batch_size, |_| {})?;
    let t = start.elapsed().as_secs_f64();
    let nps = args.nonces as f64 / t;
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "model": args.model.model,
            "dtype": format!("{dtype:?}"),
            "seq_len": args.seq_len,
            "batch_size": args.batch_size,
            "nonces": args.nonces,
            "seconds": t,
            "nonces_per_second": nps,
            "tokens_per_second": nps * args.seq_len as f64,
            "input_generation_seconds_per_batch": input_seconds,
            "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        }))?
    );
    Ok(())
}
