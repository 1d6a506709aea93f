//! Deterministic random-weight checkpoints in the Hugging Face layout: `config.json`,
//! `model.safetensors`, a small byte-level `tokenizer.json`, `tokenizer_config.json` with a
//! chat template, and `generation_config.json`. Nothing is downloaded; the same preset
//! always gives the same bytes.

use std::path::{Path, PathBuf};

use half::bf16;
use rayon::prelude::*;
use serde_json::{Value, json};

use crate::config::{ModelConfig, dtype_name};
use crate::error::{ModelError, Result};
use crate::synthetic::SyntheticWeights;
use crate::tensors::{RawTensor, init_values, layer_of, tensor_specs, write_safetensors};
use crate::weights::WeightSource;

/// Token ids of the special tokens of the preset tokenizer.
pub const ENDOFTEXT: u32 = 256;
/// `<|im_start|>`.
pub const IM_START: u32 = 257;
/// `<|im_end|>`.
pub const IM_END: u32 = 258;

/// The built-in checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// A small Qwen3-MoE (8 experts, 4 layers): the devnet's default model.
    TinyMoe,
    /// A small dense Qwen3 (4 layers).
    TinyDense,
    /// Qwen3-0.6B shapes (28 layers, hidden 1024, real vocabulary), random weights.
    BenchDense06b,
    /// Qwen3-30B-A3B shapes (128 experts, 8 active, hidden 2048) with 2 layers.
    BenchMoe30bA3b2l,
    /// The production model's configuration (`Qwen/Qwen3-235B-A22B-Instruct-2507-FP8`: 94
    /// layers, hidden 4096, 128 experts of 1536, 8 active, FP8 128×128 blocks) with random
    /// weights from [`crate::synthetic`]. Usually written with fewer layers
    /// ([`write_preset_with`]); 2.5 GB per layer.
    Qwen3_235bA22bFp8,
}

impl Preset {
    /// Every preset.
    pub const ALL: [Preset; 5] = [
        Self::TinyMoe,
        Self::TinyDense,
        Self::BenchDense06b,
        Self::BenchMoe30bA3b2l,
        Self::Qwen3_235bA22bFp8,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Self::TinyMoe => "tiny-moe",
            Self::TinyDense => "tiny-dense",
            Self::BenchDense06b => "bench-dense-0.6b",
            Self::BenchMoe30bA3b2l => "bench-moe-30b-a3b-2l",
            Self::Qwen3_235bA22bFp8 => "qwen3-235b-a22b-fp8",
        }
    }

    /// Looks a preset up by name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The preset's configuration with `layers` decoder layers (the preset's own count when
    /// `None`).
    pub fn config(self, layers: Option<usize>) -> Result<ModelConfig> {
        let json = self.config_json_with(layers)?;
        Ok(ModelConfig::from_json(&json.to_string()).expect("preset configs are valid"))
    }

    /// The `config.json` with `layers` decoder layers (the preset's own count when `None`).
    pub fn config_json_with(self, layers: Option<usize>) -> Result<Value> {
        let mut json = self.config_json();
        if let Some(n) = layers {
            if n == 0 {
                return Err(ModelError::Request(
                    "a model needs at least one layer".into(),
                ));
            }
            json["num_hidden_layers"] = json!(n);
            if json.get("max_window_layers").is_some() {
                json["max_window_layers"] = json!(n);
            }
        }
        Ok(json)
    }

    /// The preset's `config.json`.
    pub fn config_json(self) -> Value {
        let eos = json!([IM_END, ENDOFTEXT]);
        match self {
            Self::TinyMoe => json!({
                "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
                "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4,
                "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
                "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 4096,
                "vocab_size": 512, "tie_word_embeddings": false, "attention_bias": false,
                "torch_dtype": "bfloat16", "num_experts": 8, "num_experts_per_tok": 2,
                "moe_intermediate_size": 64, "norm_topk_prob": true, "decoder_sparse_step": 1,
                "mlp_only_layers": [], "bos_token_id": ENDOFTEXT, "eos_token_id": eos,
            }),
            Self::TinyDense => json!({
                "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
                "hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 4,
                "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
                "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 4096,
                "vocab_size": 512, "tie_word_embeddings": false, "attention_bias": false,
                "torch_dtype": "bfloat16", "bos_token_id": ENDOFTEXT, "eos_token_id": eos,
            }),
            Self::BenchDense06b => json!({
                "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
                "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28,
                "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
                "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 40960,
                "vocab_size": 151936, "tie_word_embeddings": true, "attention_bias": false,
                "torch_dtype": "bfloat16", "bos_token_id": ENDOFTEXT, "eos_token_id": eos,
            }),
            Self::BenchMoe30bA3b2l => json!({
                "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
                "hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 2,
                "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
                "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 40960,
                "vocab_size": 151936, "tie_word_embeddings": false, "attention_bias": false,
                "torch_dtype": "bfloat16", "num_experts": 128, "num_experts_per_tok": 8,
                "moe_intermediate_size": 768, "norm_topk_prob": true, "decoder_sparse_step": 1,
                "mlp_only_layers": [], "bos_token_id": ENDOFTEXT, "eos_token_id": eos,
            }),
            Self::Qwen3_235bA22bFp8 => json!({
                "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
                "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 94,
                "max_window_layers": 94,
                "num_attention_heads": 64, "num_key_value_heads": 4, "head_dim": 128,
                "rms_norm_eps": 1e-6, "rope_theta": 5000000.0, "max_position_embeddings": 262144,
                "vocab_size": 151936, "tie_word_embeddings": false, "attention_bias": false,
                "torch_dtype": "bfloat16", "num_experts": 128, "num_experts_per_tok": 8,
                "moe_intermediate_size": 1536, "norm_topk_prob": true, "decoder_sparse_step": 1,
                "mlp_only_layers": [], "bos_token_id": ENDOFTEXT, "eos_token_id": eos,
                "quantization_config": {
                    "quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                    "weight_block_size": [128, 128],
                    "modules_to_not_convert": ["lm_head", "mlp.gate", "embed_tokens", "norm"],
                },
            }),
        }
    }
}

/// The GPT-2 byte-to-character map that byte-level BPE vocabularies use.
fn byte_chars() -> Vec<char> {
    let printable: Vec<u32> = (u32::from('!')..=u32::from('~'))
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut extra = 0;
    (0..256u32)
        .map(|b| {
            if printable.contains(&b) {
                char::from_u32(b).expect("latin-1")
            } else {
                extra += 1;
                char::from_u32(255 + extra).expect("valid code point")
            }
        })
        .collect()
}

/// A byte-level BPE `tokenizer.json` with one token per byte (ids 0..=255) and the chat
/// special tokens (256..=258).
pub fn tokenizer_json() -> Value {
    let vocab: serde_json::Map<String, Value> = byte_chars()
        .into_iter()
        .enumerate()
        .map(|(i, c)| (c.to_string(), json!(i)))
        .collect();
    let special = |id: u32, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
               "normalized": false, "special": true})
    };
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(ENDOFTEXT, "<|endoftext|>"), special(IM_START, "<|im_start|>"), special(IM_END, "<|im_end|>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": []}
    })
}

/// The chat template of the preset tokenizer (the ChatML layout Qwen models use).
pub const CHAT_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

fn write_json(path: PathBuf, v: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).expect("serialisable") + "\n";
    std::fs::write(&path, text)
        .map_err(|e| ModelError::io(format!("cannot write {}", path.display()), e))
}

/// Writes the tokenizer, its config (with the chat template) and the generation config.
pub fn write_tokenizer_files(out: &Path) -> Result<()> {
    write_json(out.join("tokenizer.json"), &tokenizer_json())?;
    write_json(
        out.join("tokenizer_config.json"),
        &json!({
            "tokenizer_class": "Qwen2Tokenizer", "model_max_length": 4096,
            "bos_token": null, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
            "unk_token": null, "add_prefix_space": false, "chat_template": CHAT_TEMPLATE,
        }),
    )?;
    write_json(
        out.join("generation_config.json"),
        &json!({"eos_token_id": [IM_END, ENDOFTEXT], "pad_token_id": ENDOFTEXT, "do_sample": false}),
    )
}

/// What [`write_preset`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresetSummary {
    /// Tensors written.
    pub tensors: usize,
    /// Parameters written.
    pub parameters: u64,
}

/// Writes `preset` as a checkpoint directory `out` (created if needed).
pub fn write_preset(preset: Preset, out: &Path) -> Result<PresetSummary> {
    write_preset_with(preset, out, None, |_, _| {})
}

/// Writes `preset` with `layers` decoder layers (the preset's own count when `None`) to
/// `out`. FP8 presets are written as one shard per layer plus an index, generated by
/// [`SyntheticWeights`]; `progress(done, total)` is called after each shard.
pub fn write_preset_with(
    preset: Preset,
    out: &Path,
    layers: Option<usize>,
    mut progress: impl FnMut(usize, usize),
) -> Result<PresetSummary> {
    std::fs::create_dir_all(out)
        .map_err(|e| ModelError::io(format!("cannot create {}", out.display()), e))?;
    let config_json = preset.config_json_with(layers)?;
    let cfg = preset.config(layers)?;
    if cfg.fp8.is_some() {
        let src = SyntheticWeights::new(cfg, preset.name());
        let summary = write_synthetic(&src, out, &mut progress)?;
        write_json(out.join("config.json"), &config_json)?;
        write_tokenizer_files(out)?;
        return Ok(summary);
    }
    let dtype = cfg.dtype;
    let specs = tensor_specs(&cfg);
    let tensors: Vec<RawTensor> = specs
        .par_iter()
        .map(|(name, shape, init)| {
            let numel = shape.iter().product();
            let values = init_values(preset.name(), name, numel, *init);
            let (dt, bytes) = match dtype_name(dtype) {
                "float32" => (
                    safetensors::Dtype::F32,
                    values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                ),
                _ => (
                    safetensors::Dtype::BF16,
                    values
                        .iter()
                        .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
                        .collect(),
                ),
            };
            (name.clone(), dt, shape.clone(), bytes)
        })
        .collect();
    let parameters = specs
        .iter()
        .map(|(_, s, _)| s.iter().product::<usize>() as u64)
        .sum();
    write_safetensors(&out.join("model.safetensors"), &tensors)?;
    write_json(out.join("config.json"), &config_json)?;
    write_tokenizer_files(out)?;
    progress(1, 1);
    Ok(PresetSummary {
        tensors: tensors.len(),
        parameters,
    })
}

/// Writes only `config.json` and the tokenizer files of `preset` (with `layers` decoder
/// layers) to `out`.
pub fn write_preset_config(preset: Preset, out: &Path, layers: Option<usize>) -> Result<()> {
    std::fs::create_dir_all(out)
        .map_err(|e| ModelError::io(format!("cannot create {}", out.display()), e))?;
    write_json(out.join("config.json"), &preset.config_json_with(layers)?)?;
    write_tokenizer_files(out)
}

/// Writes generated weights as shards (the non-layer tensors, then one shard per layer)
/// with `model.safetensors.index.json`; at most one shard is in memory at a time. The
/// configuration and tokenizer files are the caller's.
pub fn write_synthetic(
    src: &SyntheticWeights,
    out: &Path,
    mut progress: impl FnMut(usize, usize),
) -> Result<PresetSummary> {
    let names = src.names();
    let layers = src.config().num_hidden_layers;
    let total = layers + 1;
    let mut weight_map = serde_json::Map::new();
    let (mut count, mut parameters, mut bytes) = (0usize, 0u64, 0u64);
    for shard in 0..total {
        let file = format!("model-{:05}-of-{total:05}.safetensors", shard + 1);
        let wanted = |n: &str| match layer_of(n) {
            None => shard == 0,
            Some(l) => l + 1 == shard,
        };
        let mut tensors = Vec::new();
        for (name, shape) in names.iter().filter(|(n, _)| wanted(n)) {
            if name.ends_with("_scale_inv") {
                continue;
            }
            parameters += shape.iter().product::<usize>() as u64;
            tensors.extend(src.raw(name)?);
        }
        for (name, _, _, b) in &tensors {
            weight_map.insert(name.clone(), json!(file));
            bytes += b.len() as u64;
        }
        count += tensors.len();
        write_safetensors(&out.join(&file), &tensors)?;
        progress(shard + 1, total);
    }
    write_json(
        out.join("model.safetensors.index.json"),
        &json!({"metadata": {"total_size": bytes}, "weight_map": weight_map}),
    )?;
    Ok(PresetSummary {
        tensors: count,
        parameters,
    })
}

impl SyntheticWeights {
    /// The weights `poc model init --preset` writes for `preset` (with `layers` decoder
    /// layers), generated in memory instead.
    pub fn preset(preset: Preset, layers: Option<usize>) -> Result<Self> {
        let config = preset.config(layers)?;
        let fp8 = config.fp8.is_some();
        let mut s = Self::new(config, preset.name());
        s.preset_values = !fp8;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_map_is_a_bijection_onto_printable_chars() {
        let chars = byte_chars();
        let mut sorted = chars.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 256);
        assert_eq!(chars[b'A' as usize], 'A');
        assert_eq!(chars[b' ' as usize], 'Ġ');
        assert_eq!(chars[b'\n' as usize], 'Ċ');
    }

    #[test]
    fn names_round_trip() {
        for p in Preset::ALL {
            assert_eq!(Preset::from_name(p.name()), Some(p));
            let c = ModelConfig::from_json(&p.config_json().to_string()).unwrap();
            assert!(c.hidden_size >= 12);
        }
        assert_eq!(Preset::from_name("nope"), None);
    }
}
