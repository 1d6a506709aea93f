//! v1 model parameters (`docs/protocol/compute-v1.md` §2), with the reference's JSON field names.

use serde::{Deserialize, Serialize};

/// A model shape this implementation does not compute; the message names the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnsupportedShape(pub String);

/// The random-weight transformer's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct V1Params {
    /// Model width.
    pub dim: usize,
    pub n_layers: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// KV heads (equal to `n_heads` in every reference set).
    pub n_kv_heads: usize,
    /// Vocabulary (logit count).
    pub vocab_size: usize,
    /// FFN multiplier.
    pub ffn_dim_multiplier: f64,
    /// FFN rounding.
    pub multiple_of: usize,
    /// RMSNorm epsilon.
    pub norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// Llama 3.1 RoPE scaling (false in every reference set; not supported when true).
    #[serde(default)]
    pub use_scaled_rope: bool,
    /// Sequence length.
    pub seq_len: usize,
}

impl V1Params {
    /// `PARAMS_V2` = MainNet = the chain default (17.8 B parameters).
    pub fn mainnet() -> Self {
        Self {
            dim: 1792,
            n_layers: 64,
            n_heads: 64,
            n_kv_heads: 64,
            vocab_size: 8196,
            ffn_dim_multiplier: 10.0,
            multiple_of: 8192,
            norm_eps: 1e-5,
            rope_theta: 10000.0,
            use_scaled_rope: false,
            seq_len: 256,
        }
    }

    /// `PARAMS_V1` = TestNet.
    pub fn testnet() -> Self {
        Self {
            dim: 1024,
            n_layers: 32,
            n_heads: 32,
            n_kv_heads: 32,
            vocab_size: 8196,
            ffn_dim_multiplier: 10.0,
            multiple_of: 2048,
            norm_eps: 1e-5,
            rope_theta: 10000.0,
            use_scaled_rope: false,
            seq_len: 128,
        }
    }

    /// A tiny set for tests and CPU devnets (same structure, 0.9 M parameters).
    pub fn tiny() -> Self {
        Self {
            dim: 64,
            n_layers: 2,
            n_heads: 4,
            n_kv_heads: 4,
            vocab_size: 8196,
            ffn_dim_multiplier: 1.0,
            multiple_of: 64,
            norm_eps: 1e-5,
            rope_theta: 10000.0,
            use_scaled_rope: false,
            seq_len: 16,
        }
    }

    /// A set by name: `mainnet`, `testnet`, `tiny`.
    pub fn by_name(name: &str) -> Option<Self> {
        match name {
            "mainnet" => Some(Self::mainnet()),
            "testnet" => Some(Self::testnet()),
            "tiny" => Some(Self::tiny()),
            _ => None,
        }
    }

    /// Head width.
    pub fn head_dim(&self) -> usize {
        self.dim / self.n_heads
    }

    /// FFN hidden width: `int(2·4·dim/3)`, `× multiplier`, rounded up to `multiple_of`.
    pub fn ffn_hidden(&self) -> usize {
        let h = (2.0 * (4 * self.dim) as f64 / 3.0) as usize;
        let h = (self.ffn_dim_multiplier * h as f64) as usize;
        self.multiple_of * h.div_ceil(self.multiple_of)
    }

    /// Checks the shape is one this implementation computes.
    pub fn validate(&self) -> Result<(), UnsupportedShape> {
        if self.dim == 0
            || self.n_heads == 0
            || !self.dim.is_multiple_of(self.n_heads)
            || !self.head_dim().is_multiple_of(2)
        {
            return Err(UnsupportedShape(
                "dim must be a positive multiple of n_heads with an even head_dim".into(),
            ));
        }
        if self.n_kv_heads != self.n_heads {
            return Err(UnsupportedShape("n_kv_heads must equal n_heads".into()));
        }
        if self.use_scaled_rope {
            return Err(UnsupportedShape("use_scaled_rope is not supported".into()));
        }
        if self.vocab_size < 2 || self.seq_len == 0 || self.n_layers == 0 || self.multiple_of == 0 {
            return Err(UnsupportedShape(
                "vocab_size, seq_len, n_layers and multiple_of must be positive".into(),
            ));
        }
        Ok(())
    }

    /// `(name, shape)` of every parameter (PyTorch names, `[out, in]` layouts).
    pub fn parameters(&self) -> Vec<(String, Vec<usize>)> {
        let (d, v, h, hd) = (
            self.dim,
            self.vocab_size,
            self.ffn_hidden(),
            self.head_dim(),
        );
        let mut out = vec![("tok_embeddings.weight".to_owned(), vec![v, d])];
        for i in 0..self.n_layers {
            let p = format!("layers.{i}");
            out.push((
                format!("{p}.attention.wq.weight"),
                vec![self.n_heads * hd, d],
            ));
            out.push((
                format!("{p}.attention.wk.weight"),
                vec![self.n_kv_heads * hd, d],
            ));
            out.push((
                format!("{p}.attention.wv.weight"),
                vec![self.n_kv_heads * hd, d],
            ));
            out.push((
                format!("{p}.attention.wo.weight"),
                vec![d, self.n_heads * hd],
            ));
            out.push((format!("{p}.feed_forward.w1.weight"), vec![h, d]));
            out.push((format!("{p}.feed_forward.w2.weight"), vec![d, h]));
            out.push((format!("{p}.feed_forward.w3.weight"), vec![h, d]));
            out.push((format!("{p}.attention_norm.weight"), vec![d]));
            out.push((format!("{p}.ffn_norm.weight"), vec![d]));
        }
        out.push(("norm.weight".to_owned(), vec![d]));
        out.push(("output.weight".to_owned(), vec![v, d]));
        out
    }

    /// Total parameter count.
    pub fn total_parameters(&self) -> u64 {
        self.parameters()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>() as u64)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_sizes_match_the_spec() {
        let m = V1Params::mainnet();
        assert_eq!(m.head_dim(), 28);
        assert_eq!(m.ffn_hidden(), 49152);
        assert_eq!(m.total_parameters(), 17_763_122_944);
        assert_eq!(V1Params::testnet().ffn_hidden(), 28672);
        assert!(V1Params::tiny().validate().is_ok());
        let j = serde_json::to_value(V1Params::mainnet()).unwrap();
        assert_eq!(j["multiple_of"], 8192);
    }
}
