//! The tensors of a Qwen3 / Qwen3-MoE checkpoint as this crate generates them: every
//! tensor's name, shape and initialisation, the deterministic initial values, and a
//! plain safetensors writer. Shared by the preset writer ([`crate::presets`]) and the
//! in-memory synthetic weights ([`crate::synthetic`]).

use std::path::Path;

use poc_core::rng::normals;
use poc_core::seed::seed_from_string;
use safetensors::tensor::TensorView;

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};

/// How a tensor is initialised.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Init {
    /// `N(0, 1/fan_in)`: keeps activations of random layers of order 1.
    Linear(usize),
    /// `1 + 0.1 N(0, 1)`.
    Norm,
    /// `N(0, 0.02²)`.
    Embedding,
}

/// Every tensor of a model: name, shape, initialisation.
pub(crate) fn tensor_specs(cfg: &ModelConfig) -> Vec<(String, Vec<usize>, Init)> {
    let (h, hd, nh, nkv) = (
        cfg.hidden_size,
        cfg.head_dim,
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
    );
    let mut v = vec![(
        "model.embed_tokens.weight".to_owned(),
        vec![cfg.vocab_size, h],
        Init::Embedding,
    )];
    if !cfg.tie_word_embeddings {
        v.push((
            "lm_head.weight".into(),
            vec![cfg.vocab_size, h],
            Init::Linear(h),
        ));
    }
    v.push(("model.norm.weight".into(), vec![h], Init::Norm));
    for i in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{i}");
        let mut lin = |name: String, out: usize, inp: usize| {
            v.push((format!("{name}.weight"), vec![out, inp], Init::Linear(inp)))
        };
        lin(format!("{p}.self_attn.q_proj"), nh * hd, h);
        lin(format!("{p}.self_attn.k_proj"), nkv * hd, h);
        lin(format!("{p}.self_attn.v_proj"), nkv * hd, h);
        lin(format!("{p}.self_attn.o_proj"), h, nh * hd);
        if cfg.is_moe_layer(i) {
            let m = cfg.moe.as_ref().expect("moe layer");
            lin(format!("{p}.mlp.gate"), m.num_experts, h);
            for e in 0..m.num_experts {
                lin(
                    format!("{p}.mlp.experts.{e}.gate_proj"),
                    m.moe_intermediate_size,
                    h,
                );
                lin(
                    format!("{p}.mlp.experts.{e}.up_proj"),
                    m.moe_intermediate_size,
                    h,
                );
                lin(
                    format!("{p}.mlp.experts.{e}.down_proj"),
                    h,
                    m.moe_intermediate_size,
                );
            }
        } else {
            lin(format!("{p}.mlp.gate_proj"), cfg.intermediate_size, h);
            lin(format!("{p}.mlp.up_proj"), cfg.intermediate_size, h);
            lin(format!("{p}.mlp.down_proj"), h, cfg.intermediate_size);
        }
        for n in ["input_layernorm", "post_attention_layernorm"] {
            v.push((format!("{p}.{n}.weight"), vec![h], Init::Norm));
        }
        v.push((format!("{p}.self_attn.q_norm.weight"), vec![hd], Init::Norm));
        v.push((format!("{p}.self_attn.k_norm.weight"), vec![hd], Init::Norm));
    }
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

pub(crate) fn init_values(preset: &str, name: &str, numel: usize, init: Init) -> Vec<f32> {
    let mut x = normals(
        seed_from_string(&format!("poc-model-preset/{preset}/{name}")),
        numel,
    );
    let (scale, shift) = match init {
        Init::Linear(fan_in) => ((1.0 / fan_in as f64).sqrt() as f32, 0.0),
        Init::Norm => (0.1, 1.0),
        Init::Embedding => (0.02, 0.0),
    };
    for v in &mut x {
        *v = *v * scale + shift;
    }
    x
}

/// A tensor to write: name, stored dtype, shape, little-endian bytes.
pub(crate) type RawTensor = (String, safetensors::Dtype, Vec<usize>, Vec<u8>);

/// Writes `tensors` to a safetensors file.
pub(crate) fn write_safetensors(path: &Path, tensors: &[RawTensor]) -> Result<()> {
    let views = tensors
        .iter()
        .map(|(n, dt, shape, bytes)| {
            TensorView::new(*dt, shape.clone(), bytes)
                .map(|v| (n.clone(), v))
                .map_err(|e| ModelError::Request(format!("cannot build tensor {n}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::tensor::serialize_to_file(views, None, path).map_err(|e| ModelError::Weights {
        dir: path.parent().map(Path::to_owned).unwrap_or_default(),
        reason: format!("cannot write {}: {e}", path.display()),
    })
}

/// The decoder layer a tensor belongs to (`model.layers.{i}.…`), if any.
pub(crate) fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("model.layers.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}
