//! `config.json` of Qwen3 and Qwen3-MoE checkpoints (Hugging Face layout).
//!
//! Both spellings of the keys are accepted: the classic ones of the production checkpoints
//! (`rope_theta`, `num_experts`, `torch_dtype`) and the newer ones (`rope_parameters.rope_theta`,
//! `num_local_experts`, `dtype`).

use std::path::Path;

use candle_core::DType;
use serde::Deserialize;

use crate::error::{ModelError, Result};

/// Why a `config.json` text does not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigJsonError {
    /// Not a model config, or a required value missing or out of range.
    #[error("{0}")]
    Malformed(String),
    /// A model this implementation does not compute.
    #[error("unsupported architecture {0}")]
    UnsupportedArchitecture(String),
}

impl From<String> for ConfigJsonError {
    fn from(s: String) -> Self {
        Self::Malformed(s)
    }
}

impl From<&str> for ConfigJsonError {
    fn from(s: &str) -> Self {
        Self::Malformed(s.to_owned())
    }
}

/// Dense or mixture-of-experts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `Qwen3ForCausalLM`.
    Qwen3,
    /// `Qwen3MoeForCausalLM`.
    Qwen3Moe,
}

impl Architecture {
    /// The Hugging Face class name.
    pub fn hf_name(self) -> &'static str {
        match self {
            Self::Qwen3 => "Qwen3ForCausalLM",
            Self::Qwen3Moe => "Qwen3MoeForCausalLM",
        }
    }
}

/// Block-wise FP8 quantization of the checkpoint's linear weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fp8Quantization {
    /// `[rows, cols]` of one scale block (128 × 128 in production).
    pub block: [usize; 2],
}

/// Mixture-of-experts settings.
#[derive(Debug, Clone, PartialEq)]
pub struct MoeConfig {
    /// Experts per MoE layer.
    pub num_experts: usize,
    /// Experts each token is routed to.
    pub experts_per_token: usize,
    /// Intermediate size of one expert.
    pub moe_intermediate_size: usize,
    /// Renormalise the top-k routing weights to sum to 1.
    pub norm_topk_prob: bool,
    /// Every `decoder_sparse_step`-th layer is sparse (MoE).
    pub decoder_sparse_step: usize,
    /// Layers that stay dense.
    pub mlp_only_layers: Vec<usize>,
}

/// A resolved model configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Dense or MoE.
    pub architecture: Architecture,
    /// Hidden size H.
    pub hidden_size: usize,
    /// Dense MLP intermediate size.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (GQA).
    pub num_key_value_heads: usize,
    /// Per-head dimension.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// Longest supported position.
    pub max_position_embeddings: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// The LM head shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Attention projections have biases.
    pub attention_bias: bool,
    /// Dtype the checkpoint declares (`torch_dtype` / `dtype`).
    pub dtype: DType,
    /// MoE settings (MoE architecture only).
    pub moe: Option<MoeConfig>,
    /// FP8 block quantization, if the checkpoint is quantized.
    pub fp8: Option<Fp8Quantization>,
    /// End-of-sequence token ids.
    pub eos_token_ids: Vec<u32>,
}

#[derive(Debug, Deserialize)]
struct RopeParameters {
    rope_theta: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct QuantizationConfig {
    quant_method: Option<String>,
    weight_block_size: Option<Vec<usize>>,
    fmt: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

#[derive(Debug, Deserialize)]
struct RawConfig {
    architectures: Option<Vec<String>>,
    model_type: Option<String>,
    hidden_size: usize,
    intermediate_size: Option<usize>,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_parameters: Option<RopeParameters>,
    max_position_embeddings: Option<usize>,
    vocab_size: usize,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    torch_dtype: Option<String>,
    dtype: Option<String>,
    num_experts: Option<usize>,
    num_local_experts: Option<usize>,
    num_experts_per_tok: Option<usize>,
    moe_intermediate_size: Option<usize>,
    norm_topk_prob: Option<bool>,
    decoder_sparse_step: Option<usize>,
    mlp_only_layers: Option<Vec<usize>>,
    quantization_config: Option<QuantizationConfig>,
    eos_token_id: Option<TokenIds>,
}

/// Parses a dtype name as used in `config.json` and on the command line.
pub fn parse_dtype(name: &str) -> Option<DType> {
    match name.trim_start_matches("torch.") {
        "bfloat16" | "bf16" => Some(DType::BF16),
        "float16" | "f16" | "half" => Some(DType::F16),
        "float32" | "f32" | "float" => Some(DType::F32),
        _ => None,
    }
}

/// The `config.json` name of a dtype.
pub fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        DType::F32 => "float32",
        _ => "unsupported",
    }
}

impl ModelConfig {
    /// Reads and resolves `<dir>/config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ModelError::io(format!("cannot read {}", path.display()), e))?;
        Self::from_json(&text).map_err(|e| match e {
            ConfigJsonError::Malformed(reason) => ModelError::Config { path, reason },
            ConfigJsonError::UnsupportedArchitecture(a) => ModelError::UnsupportedArchitecture(a),
        })
    }

    /// Resolves a `config.json` text.
    pub fn from_json(text: &str) -> std::result::Result<Self, ConfigJsonError> {
        let raw: RawConfig =
            serde_json::from_str(text).map_err(|e| format!("not a valid model config: {e}"))?;
        let arch_name = raw
            .architectures
            .as_ref()
            .and_then(|a| a.first().cloned())
            .or_else(|| raw.model_type.clone())
            .ok_or("config has neither `architectures` nor `model_type`")?;
        let architecture = match arch_name.as_str() {
            "Qwen3ForCausalLM" | "qwen3" => Architecture::Qwen3,
            "Qwen3MoeForCausalLM" | "qwen3_moe" => Architecture::Qwen3Moe,
            other => return Err(ConfigJsonError::UnsupportedArchitecture(other.to_owned())),
        };
        let need = |v: Option<usize>, key: &str| v.ok_or_else(|| format!("`{key}` is required"));
        let positive = |v: usize, key: &str| {
            if v == 0 {
                Err(ConfigJsonError::Malformed(format!(
                    "`{key}` must be positive"
                )))
            } else {
                Ok(v)
            }
        };
        let heads = positive(raw.num_attention_heads, "num_attention_heads")?;
        let kv_heads = positive(
            raw.num_key_value_heads.unwrap_or(heads),
            "num_key_value_heads",
        )?;
        if heads % kv_heads != 0 {
            return Err(ConfigJsonError::Malformed(format!(
                "num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"
            )));
        }
        let hidden = positive(raw.hidden_size, "hidden_size")?;
        let head_dim = positive(raw.head_dim.unwrap_or(hidden / heads), "head_dim")?;
        if head_dim % 2 != 0 {
            return Err(ConfigJsonError::Malformed(format!(
                "head_dim {head_dim} must be even (rotary embedding)"
            )));
        }
        let dtype_str = raw
            .torch_dtype
            .as_deref()
            .or(raw.dtype.as_deref())
            .unwrap_or("bfloat16");
        let dtype = parse_dtype(dtype_str).ok_or_else(|| {
            format!("unsupported dtype {dtype_str:?} (bfloat16, float16 or float32)")
        })?;
        let rope_theta = raw
            .rope_theta
            .or_else(|| raw.rope_parameters.as_ref().and_then(|r| r.rope_theta))
            .unwrap_or(1_000_000.0);
        let moe = match architecture {
            Architecture::Qwen3 => None,
            Architecture::Qwen3Moe => {
                let num_experts = positive(
                    need(raw.num_experts.or(raw.num_local_experts), "num_experts")?,
                    "num_experts",
                )?;
                let experts_per_token = positive(
                    need(raw.num_experts_per_tok, "num_experts_per_tok")?,
                    "num_experts_per_tok",
                )?;
                if experts_per_token > num_experts {
                    return Err(ConfigJsonError::Malformed(format!(
                        "num_experts_per_tok {experts_per_token} exceeds num_experts {num_experts}"
                    )));
                }
                Some(MoeConfig {
                    num_experts,
                    experts_per_token,
                    moe_intermediate_size: positive(
                        need(raw.moe_intermediate_size, "moe_intermediate_size")?,
                        "moe_intermediate_size",
                    )?,
                    norm_topk_prob: raw.norm_topk_prob.unwrap_or(false),
                    decoder_sparse_step: positive(
                        raw.decoder_sparse_step.unwrap_or(1),
                        "decoder_sparse_step",
                    )?,
                    mlp_only_layers: raw.mlp_only_layers.unwrap_or_default(),
                })
            }
        };
        let intermediate_size = match (&moe, raw.intermediate_size) {
            (_, Some(i)) => positive(i, "intermediate_size")?,
            (Some(m), None) => m.moe_intermediate_size,
            (None, None) => {
                return Err(ConfigJsonError::Malformed(
                    "`intermediate_size` is required".into(),
                ));
            }
        };
        let fp8 = match &raw.quantization_config {
            None => None,
            Some(q) => {
                let method = q.quant_method.as_deref().unwrap_or("");
                if method != "fp8" {
                    return Err(ConfigJsonError::Malformed(format!(
                        "unsupported quantization method {method:?} (only block-wise fp8)"
                    )));
                }
                if let Some(fmt) = q.fmt.as_deref()
                    && fmt != "e4m3"
                {
                    return Err(ConfigJsonError::Malformed(format!(
                        "unsupported fp8 format {fmt:?} (only e4m3)"
                    )));
                }
                let block = match q.weight_block_size.as_deref() {
                    Some([r, c]) if *r > 0 && *c > 0 => [*r, *c],
                    other => {
                        return Err(ConfigJsonError::Malformed(format!(
                            "fp8 weight_block_size must be two positive numbers, got {other:?}"
                        )));
                    }
                };
                Some(Fp8Quantization { block })
            }
        };
        Ok(Self {
            architecture,
            hidden_size: hidden,
            intermediate_size,
            num_hidden_layers: positive(raw.num_hidden_layers, "num_hidden_layers")?,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta,
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(40_960),
            vocab_size: positive(raw.vocab_size, "vocab_size")?,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            attention_bias: raw.attention_bias.unwrap_or(false),
            dtype,
            moe,
            fp8,
            eos_token_ids: match raw.eos_token_id {
                None => vec![],
                Some(TokenIds::One(t)) => vec![t],
                Some(TokenIds::Many(t)) => t,
            },
        })
    }

    /// Whether decoder layer `layer` has a sparse (MoE) MLP.
    pub fn is_moe_layer(&self, layer: usize) -> bool {
        match &self.moe {
            None => false,
            Some(m) => {
                !m.mlp_only_layers.contains(&layer)
                    && (layer + 1).is_multiple_of(m.decoder_sparse_step)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLASSIC_MOE: &str = r#"{
        "architectures": ["Qwen3MoeForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "vocab_size": 300, "torch_dtype": "bfloat16",
        "num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 32, "norm_topk_prob": true,
        "decoder_sparse_step": 1, "mlp_only_layers": [0], "eos_token_id": 2,
        "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128]}
    }"#;

    #[test]
    fn classic_keys() {
        let c = ModelConfig::from_json(CLASSIC_MOE).unwrap();
        assert_eq!(c.architecture, Architecture::Qwen3Moe);
        assert_eq!(c.dtype, DType::BF16);
        assert_eq!(c.rope_theta, 1e6);
        let m = c.moe.as_ref().unwrap();
        assert_eq!(
            (m.num_experts, m.experts_per_token, m.moe_intermediate_size),
            (8, 2, 32)
        );
        assert!(m.norm_topk_prob);
        assert_eq!(c.fp8, Some(Fp8Quantization { block: [128, 128] }));
        assert!(!c.is_moe_layer(0));
        assert!(c.is_moe_layer(1));
        assert_eq!(c.eos_token_ids, vec![2]);
    }

    #[test]
    fn newer_keys() {
        let text = CLASSIC_MOE
            .replace(
                "\"rope_theta\": 1000000.0",
                "\"rope_parameters\": {\"rope_theta\": 5000.0, \"rope_type\": \"default\"}",
            )
            .replace("\"num_experts\"", "\"num_local_experts\"")
            .replace("\"torch_dtype\"", "\"dtype\"");
        let c = ModelConfig::from_json(&text).unwrap();
        assert_eq!(c.rope_theta, 5000.0);
        assert_eq!(c.moe.unwrap().num_experts, 8);
        assert_eq!(c.dtype, DType::BF16);
    }

    #[test]
    fn sparse_step_and_dense() {
        let text = CLASSIC_MOE
            .replace("\"decoder_sparse_step\": 1", "\"decoder_sparse_step\": 2")
            .replace("[0]", "[]");
        let c = ModelConfig::from_json(&text).unwrap();
        assert_eq!(
            (0..4).map(|l| c.is_moe_layer(l)).collect::<Vec<_>>(),
            vec![false, true, false, true]
        );
        let dense = r#"{"architectures": ["Qwen3ForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100, "torch_dtype": "float32"}"#;
        let c = ModelConfig::from_json(dense).unwrap();
        assert_eq!(
            (c.num_key_value_heads, c.head_dim, c.dtype),
            (4, 16, DType::F32)
        );
        assert!(!c.is_moe_layer(0));
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        assert_eq!(
            ModelConfig::from_json(r#"{"architectures": ["LlamaForCausalLM"], "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 1, "vocab_size": 4}"#).unwrap_err(),
            ConfigJsonError::UnsupportedArchitecture("LlamaForCausalLM".to_owned())
        );
        let e = ModelConfig::from_json("{").unwrap_err();
        assert!(e.to_string().contains("not a valid model config"), "{e}");
        let e =
            ModelConfig::from_json(&CLASSIC_MOE.replace("\"num_experts\": 8,", "")).unwrap_err();
        assert!(e.to_string().contains("num_experts"), "{e}");
        let e = ModelConfig::from_json(
            &CLASSIC_MOE.replace("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("multiple"), "{e}");
        let e = ModelConfig::from_json(&CLASSIC_MOE.replace("bfloat16", "int8")).unwrap_err();
        assert!(e.to_string().contains("unsupported dtype"), "{e}");
        let e = ModelConfig::from_json(&CLASSIC_MOE.replace("\"fp8\"", "\"gptq\"")).unwrap_err();
        assert!(e.to_string().contains("quantization"), "{e}");
    }
}
