//! `poc model ...`: create, plan, quantize and inspect checkpoints.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use poc_model::config::{dtype_name, parse_dtype};
use poc_model::plan::{GIB, PlanRequest, parse_bytes, plan};
use poc_model::presets::{Preset, write_preset_config, write_preset_with};
use poc_model::quantize::{quantize_fp8, round_4bit};
use poc_model::{Checkpoint, Fp8Path, ModelConfig};
use serde_json::json;

use crate::cli::PRESETS;

use clap::Subcommand;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Write a built-in random-weight checkpoint (deterministic; nothing is downloaded).
    ///
    /// Presets: `tiny-moe` (Qwen3-MoE, 8 experts, 4 layers, the devnet's model),
    /// `tiny-dense` (Qwen3, 4 layers), `bench-dense-0.6b` (Qwen3-0.6B shapes, ~1.2 GB),
    /// `bench-moe-30b-a3b-2l` (Qwen3-30B-A3B shapes with 2 layers, ~3.7 GB). Each comes with
    /// config.json, model.safetensors, a byte-level tokenizer.json and a chat template.
    ///
    /// `qwen3-235b-a22b-fp8` is the production model's configuration (94 layers of hidden
    /// 4096, 128 experts, FP8 128x128 blocks) with random FP8 weights, written as one shard
    /// per layer (2.5 GB each); `--layers N` keeps the real widths with fewer layers.
    Init {
        /// Which preset.
        #[arg(long, value_parser = PRESETS)]
        preset: String,
        /// Decoder layers (default: the preset's own count).
        #[arg(long)]
        layers: Option<usize>,
        /// Write only config.json and the tokenizer files (e.g. for a framework that builds
        /// its own random weights of the same shapes).
        #[arg(long)]
        config_only: bool,
        /// Output directory (created; existing files are overwritten).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Say whether a model fits on N devices and how its layers would be placed, before
    /// loading anything.
    ///
    /// Counts the resident weight bytes from the configuration (FP8 matrices at one byte
    /// plus their scales when they stay FP8) and estimates the activations of one batch.
    /// Prints `{fits, per_device: [{layers, weight_bytes, activation_bytes, ...}], ...}`
    /// (JSON with `--json`); exits 0 whether it fits or not.
    #[command(group(clap::ArgGroup::new("source").required(true).args(["model", "preset"])))]
    Plan {
        /// Model directory (only config.json is read).
        #[arg(long, value_name = "DIR")]
        model: Option<PathBuf>,
        /// A built-in preset instead of a directory.
        #[arg(long, value_parser = PRESETS)]
        preset: Option<String>,
        /// With `--preset`: decoder layers.
        #[arg(long, requires = "preset")]
        layers: Option<usize>,
        /// Number of devices (pipeline stages).
        #[arg(long, default_value_t = 1)]
        devices: usize,
        /// Memory of each device, e.g. `141GiB`, `80GB`.
        #[arg(long, default_value = "80GiB")]
        device_memory: String,
        /// Nonces per batch the activations are estimated for.
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        /// Sequence length the activations are estimated for.
        #[arg(long, default_value_t = 1024)]
        seq_len: usize,
        /// Compute dtype.
        #[arg(long, default_value = "bf16", value_parser = ["bf16", "f16", "f32"])]
        dtype: String,
        /// How FP8 weights are kept (`dequantize`, `w8a16`, `w8a8`).
        #[arg(long, default_value = "w8a16", value_parser = ["dequantize", "w8a16", "w8a8"])]
        fp8_path: String,
        /// Memory kept free on every device for the runtime.
        #[arg(long, default_value = "2GiB")]
        reserve: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a checkpoint's architecture, dtypes, parameter count and tensors as JSON.
    Info {
        /// The model directory.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// Also list every tensor with its dtype and shape.
        #[arg(long)]
        tensors: bool,
    },
    /// Write a quantized copy of a checkpoint.
    ///
    /// `--fp8`: block-wise FP8 (e4m3) weights with per-block scales, the layout of the
    /// production FP8 models (loaded back with dequantization). `--int4-rounded`: linear
    /// weights rounded to 4 bits per row but stored in the original dtype, the "cheaper
    /// model" a PoC validator must be able to tell apart.
    #[command(group(clap::ArgGroup::new("format").required(true).args(["fp8", "int4_rounded"])))]
    Quantize {
        /// Block-wise FP8 e4m3.
        #[arg(long)]
        fp8: bool,
        /// Linear weights rounded to 4 bits per row.
        #[arg(long)]
        int4_rounded: bool,
        /// Block size of the scales (rows = columns).
        #[arg(long, default_value_t = 128)]
        block: usize,
        /// The checkpoint to quantize.
        #[arg(value_name = "IN")]
        input: PathBuf,
        /// Output directory.
        #[arg(value_name = "OUT")]
        output: PathBuf,
    },
}

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
