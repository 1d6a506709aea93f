//! The feed-forward blocks: the SwiGLU MLP and the sparse MoE block.

use candle_core::{DType, Tensor};

use super::Ctx;
use super::linear::Linear;
use crate::config::ModelConfig;
use crate::error::Result;
use crate::fp8::Fp8Path;
use crate::routing::{group_by_expert, top_k};
use crate::weights::WeightSource;

/// SwiGLU MLP: `down(silu(gate(x)) * up(x))`, with the gate and up projections fused
/// into one `[in, 2 * inter]` product (the same sums per output, one call instead of two).
#[derive(Debug, Clone)]
pub(crate) struct Mlp {
    gate_up: Linear,
    down: Linear,
    inter: usize,
}

impl Mlp {
    pub(super) fn load(
        ck: &dyn WeightSource,
        p: &str,
        h: usize,
        inter: usize,
        ctx: Ctx<'_>,
    ) -> Result<Self> {
        let gate_up = Linear::load_stacked(
            ck,
            &[
                (format!("{p}.gate_proj.weight"), inter),
                (format!("{p}.up_proj.weight"), inter),
            ],
            h,
            None,
            ctx,
        )?;
        Ok(Self {
            gate_up,
            down: Linear::load(ck, &format!("{p}.down_proj"), h, inter, false, ctx)?,
            inter,
        })
    }

    pub(super) fn resident_bytes(&self) -> usize {
        self.gate_up.resident_bytes() + self.down.resident_bytes()
    }

    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gu = self.gate_up.forward(x)?;
        let g = gu.narrow(1, 0, self.inter)?.silu()?;
        self.down
            .forward(&(g * gu.narrow(1, self.inter, self.inter)?)?)
    }
}

/// Sparse MoE block: softmax router, top-k experts per token.
#[derive(Debug, Clone)]
pub(super) struct Moe {
    router: Linear,
    experts: Vec<Mlp>,
    top_k: usize,
    norm_topk_prob: bool,
}

impl Moe {
    /// Routing on the device ([`crate::routing`]): softmax, top-k, renormalisation and the
    /// grouping by expert stay tensors; only the expert counts are read back. Each expert
    /// takes its rows in ascending token order and the weighted outputs are added back in
    /// ascending expert order, as the scalar definition does.
    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let logits = self.router.forward(x)?.to_dtype(DType::F32)?;
        let probs = candle_nn::ops::softmax_last_dim(&logits)?;
        let (ids, weights) = top_k(&probs, self.top_k, self.norm_topk_prob)?;
        let e = self.experts.len();
        let groups = group_by_expert(&ids, e)?;
        let weights = weights.flatten_all()?;
        let mut ys = Vec::new();
        for (ex, start) in groups.offsets().into_iter().enumerate() {
            let count = groups.counts[ex];
            if count == 0 {
                continue;
            }
            let rows = groups.tokens.narrow(0, start, count)?;
            let w = weights
                .index_select(&groups.slots.narrow(0, start, count)?, 0)?
                .reshape((count, 1))?
                .to_dtype(dtype)?;
            ys.push(
                self.experts[ex]
                    .forward(&x.index_select(&rows, 0)?)?
                    .broadcast_mul(&w)?,
            );
        }
        let out = Tensor::zeros(x.dims(), dtype, x.device())?;
        if ys.is_empty() {
            return Ok(out);
        }
        Ok(out.index_add(&groups.tokens, &Tensor::cat(&ys, 0)?, 0)?)
    }
}

#[derive(Debug, Clone)]
pub(super) enum Ffn {
    Dense(Mlp),
    Sparse(Moe),
}

impl Ffn {
    /// The feed-forward block of decoder layer `i` (weights under `p`): sparse where the
    /// configuration says so, dense otherwise.
    pub(super) fn load(
        ck: &dyn WeightSource,
        cfg: &ModelConfig,
        i: usize,
        p: &str,
        ctx: Ctx<'_>,
    ) -> Result<Self> {
        let h = cfg.hidden_size;
        let Some(m) = cfg.moe.as_ref().filter(|_| cfg.is_moe_layer(i)) else {
            return Ok(Self::Dense(Mlp::load(
                ck,
                &format!("{p}.mlp"),
                h,
                cfg.intermediate_size,
                ctx,
            )?));
        };
        let experts = (0..m.num_experts)
            .map(|e| {
                Mlp::load(
                    ck,
                    &format!("{p}.mlp.experts.{e}"),
                    h,
                    m.moe_intermediate_size,
                    ctx,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        // The router stays in the compute dtype (never FP8 in the reference layout).
        let router = Linear::load(
            ck,
            &format!("{p}.mlp.gate"),
            m.num_experts,
            h,
            false,
            Ctx {
                fp8: Fp8Path::Dequantize,
                ..ctx
            },
        )?;
        Ok(Self::Sparse(Moe {
            router,
            experts,
            top_k: m.experts_per_token,
            norm_topk_prob: m.norm_topk_prob,
        }))
    }

    /// Bytes its weights hold on their device.
    pub(super) fn resident_bytes(&self) -> usize {
        match self {
            Self::Dense(m) => m.resident_bytes(),
            Self::Sparse(m) => {
                m.router.resident_bytes() + m.experts.iter().map(Mlp::resident_bytes).sum::<usize>()
            }
        }
    }

    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Dense(m) => m.forward(x),
            Self::Sparse(m) => m.forward(x),
        }
    }
}
