//! Qwen3 (dense) and Qwen3-MoE decoder stacks on candle, with the per-layer access the PoC
//! forward needs.
//!
//! The layer structure follows the reference server (vLLM): each decoder layer returns the
//! pair `(hidden, residual)`, and the next layer (or the final norm) adds them. RMSNorm
//! normalises in f32, rounds to the compute dtype, then multiplies by the weight; attention
//! runs in f32 (scores, softmax and the value product) whatever the compute dtype.

use std::ops::Range;

use candle_core::{DType, Device, IndexOp, Tensor};

mod attention;
mod ffn;
mod linear;

use attention::{Attention, Rotary, Segment};
use ffn::Ffn;
pub(crate) use linear::{Linear, rms_norm};

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::fp8::Fp8Path;
use crate::weights::WeightSource;

/// What a component is loaded with: compute dtype, FP8 handling, device.
#[derive(Debug, Clone, Copy)]
struct Ctx<'a> {
    dtype: DType,
    fp8: Fp8Path,
    dev: &'a Device,
}

/// Keys and values of earlier positions (generation only).
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map_or(0, |(k, _)| k.dim(2).unwrap_or(0))
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    input_norm: Tensor,
    attn: Attention,
    post_norm: Tensor,
    ffn: Ffn,
    eps: f64,
}

impl DecoderLayer {
    fn load(ck: &dyn WeightSource, cfg: &ModelConfig, i: usize, ctx: Ctx<'_>) -> Result<Self> {
        let h = cfg.hidden_size;
        let p = format!("model.layers.{i}");
        let ffn = Ffn::load(ck, cfg, i, &p, ctx)?;
        let norm = |n: &str| ck.tensor(&format!("{p}.{n}.weight"), &[h], ctx.dtype, ctx.dev);
        Ok(Self {
            input_norm: norm("input_layernorm")?,
            attn: Attention::load(ck, &format!("{p}.self_attn"), cfg, ctx)?,
            post_norm: norm("post_attention_layernorm")?,
            ffn,
            eps: cfg.rms_norm_eps,
        })
    }

    fn resident_bytes(&self) -> usize {
        self.attn.resident_bytes() + self.ffn.resident_bytes()
    }

    /// vLLM-style layer: returns `(ffn output, residual)`; their sum is the layer output.
    /// The rows of all segments go through the norms, projections and the MoE block
    /// together (each row on its own: routing, norms and products are per row); only
    /// attention looks at the segments ([`Attention::forward`]).
    fn forward(
        &self,
        hidden: &Tensor,
        residual: Option<&Tensor>,
        segs: &mut [Segment<'_>],
        rotary: &Rotary,
    ) -> Result<(Tensor, Tensor)> {
        let res = match residual {
            None => hidden.clone(),
            Some(r) => (hidden + r)?,
        };
        let h = rms_norm(&res, &self.input_norm, self.eps)?;
        let a = self.attn.forward(&h, segs, rotary)?;
        let res = (a + res)?;
        let h = rms_norm(&res, &self.post_norm, self.eps)?;
        Ok((self.ffn.forward(&h)?, res))
    }
}

/// How to load a model: compute dtype, the devices of the layer pipeline, FP8 handling.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Compute dtype (f32, bf16 or f16).
    pub dtype: DType,
    /// One device per pipeline stage, in order (at least one). The embedding lives on the
    /// first, the final norm and the LM head on the last.
    pub devices: Vec<Device>,
    /// How FP8 checkpoint weights are kept; `None`: [`Fp8Path::default_for`] the first
    /// device.
    pub fp8: Option<Fp8Path>,
    /// The decoder layers of each device (contiguous, covering every layer); `None`: as
    /// the memory planner balances them ([`crate::plan`]).
    pub layers: Option<Vec<Range<usize>>>,
}

impl LoadOptions {
    /// One device, default FP8 handling.
    pub fn new(dtype: DType, device: &Device) -> Self {
        Self {
            dtype,
            devices: vec![device.clone()],
            fp8: None,
            layers: None,
        }
    }
}

/// One pipeline stage: a device and the contiguous decoder layers it holds.
#[derive(Debug)]
struct Stage {
    device: Device,
    layers: Range<usize>,
    rotary: Rotary,
}

/// A loaded Qwen3 or Qwen3-MoE model, possibly split over several devices.
#[derive(Debug)]
pub struct Qwen3Model {
    config: ModelConfig,
    dtype: DType,
    fp8: Fp8Path,
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    stages: Vec<Stage>,
    norm: Tensor,
    lm_head: Linear,
}

/// Per-layer hook of the PoC forward: receives the layer index and `(hidden, residual)`,
/// returns the transformed pair.
pub type LayerHook<'a> = dyn Fn(usize, Tensor, Tensor) -> Result<(Tensor, Tensor)> + 'a;

/// Checks that `ranges` split `0..layers` into contiguous, non-empty, ordered pieces.
fn check_ranges(ranges: &[Range<usize>], layers: usize) -> Result<()> {
    let mut next = 0;
    for r in ranges {
        if r.start != next || r.end <= r.start {
            return Err(ModelError::Request(format!(
                "layer ranges {ranges:?} must be non-empty, contiguous and cover 0..{layers}"
            )));
        }
        next = r.end;
    }
    if next != layers {
        return Err(ModelError::Request(format!(
            "layer ranges {ranges:?} must cover 0..{layers}"
        )));
    }
    Ok(())
}

impl Qwen3Model {
    /// Loads every weight of `ck` in `dtype` onto `device`. Missing tensors and wrong shapes
    /// are reported with the tensor's name.
    pub fn load(ck: &dyn WeightSource, dtype: DType, device: &Device) -> Result<Self> {
        Self::load_with(ck, &LoadOptions::new(dtype, device))
    }

    /// Loads with explicit options (several devices, FP8 handling, layer placement).
    pub fn load_with(ck: &dyn WeightSource, opts: &LoadOptions) -> Result<Self> {
        let cfg = ck.config().clone();
        let dtype = opts.dtype;
        if !matches!(dtype, DType::F32 | DType::BF16 | DType::F16) {
            return Err(ModelError::Request(format!(
                "compute dtype {dtype:?} is not supported (f32, bf16, f16)"
            )));
        }
        let Some(first) = opts.devices.first() else {
            return Err(ModelError::Request("at least one device is needed".into()));
        };
        let fp8 = opts.fp8.unwrap_or_else(|| Fp8Path::default_for(first));
        let ranges = match &opts.layers {
            Some(r) => r.clone(),
            None if opts.devices.len() == 1 => std::iter::once(0..cfg.num_hidden_layers).collect(),
            None => {
                let mut req = crate::plan::PlanRequest::new(opts.devices.len(), u64::MAX / 4);
                req.dtype = dtype;
                req.fp8 = fp8;
                crate::plan::plan(&cfg, &req)?
                    .per_device
                    .iter()
                    .map(|d| d.range())
                    .collect()
            }
        };
        if ranges.len() != opts.devices.len() {
            return Err(ModelError::Request(format!(
                "{} layer ranges for {} devices",
                ranges.len(),
                opts.devices.len()
            )));
        }
        check_ranges(&ranges, cfg.num_hidden_layers)?;
        let h = cfg.hidden_size;
        let max_len = cfg.max_position_embeddings.min(1 << 16);
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        let mut stages = Vec::with_capacity(ranges.len());
        for (device, range) in opts.devices.iter().zip(&ranges) {
            let ctx = Ctx {
                dtype,
                fp8,
                dev: device,
            };
            for i in range.clone() {
                layers.push(DecoderLayer::load(ck, &cfg, i, ctx)?);
            }
            stages.push(Stage {
                device: device.clone(),
                layers: range.clone(),
                rotary: Rotary::new(&cfg, max_len, dtype, device)?,
            });
        }
        if dtype != DType::F32 && opts.devices.iter().any(|d| !d.is_cpu()) {
            // Attention products on GPUs run in f32 over operands that are bf16/f16 values:
            // TF32 tensor cores multiply those exactly (and keep 10 mantissa bits of the
            // probabilities, more than the 16-bit types). f32 models keep full-precision
            // products.
            candle_core::cuda::set_gemm_reduced_precision_f32(true);
        }
        let last = opts.devices.last().expect("at least one device");
        let embed_tokens = ck.tensor(
            "model.embed_tokens.weight",
            &[cfg.vocab_size, h],
            dtype,
            first,
        )?;
        let lm_head = Linear::from_weight(
            if cfg.tie_word_embeddings && !ck.contains("lm_head.weight") {
                embed_tokens.to_device(last)?
            } else {
                ck.tensor("lm_head.weight", &[cfg.vocab_size, h], dtype, last)?
            },
            None,
        )?;
        let norm = ck.tensor("model.norm.weight", &[h], dtype, last)?;
        Ok(Self {
            config: cfg,
            dtype,
            fp8,
            embed_tokens,
            layers,
            stages,
            norm,
            lm_head,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The compute dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// How FP8 weights are kept.
    pub fn fp8_path(&self) -> Fp8Path {
        self.fp8
    }

    /// The first device (where inputs go in).
    pub fn device(&self) -> &Device {
        &self.stages[0].device
    }

    /// Number of pipeline stages.
    pub fn stage_count(&self) -> usize {
        self.stages.len()
    }

    /// Device and decoder layers of each stage.
    pub fn stages(&self) -> Vec<(Device, Range<usize>)> {
        self.stages
            .iter()
            .map(|s| (s.device.clone(), s.layers.clone()))
            .collect()
    }

    /// The device holding decoder layer `layer`.
    pub fn layer_device(&self, layer: usize) -> &Device {
        let s = self
            .stages
            .iter()
            .find(|s| s.layers.contains(&layer))
            .unwrap_or_else(|| self.stages.last().expect("a stage"));
        &s.device
    }

    /// Bytes the weights of decoder layer `layer` hold on its device.
    pub fn layer_resident_bytes(&self, layer: usize) -> usize {
        self.layers
            .get(layer)
            .map_or(0, DecoderLayer::resident_bytes)
    }

    /// Longest sequence the position tables cover.
    pub fn max_len(&self) -> usize {
        self.stages[0].rotary.max_len()
    }

    fn check_len(&self, len: usize) -> Result<()> {
        if len == 0 || len > self.max_len() {
            return Err(ModelError::Request(format!(
                "sequence length {len} is outside 1..={} supported by this model",
                self.max_len()
            )));
        }
        Ok(())
    }

    /// Runs the decoder layers of stage `stage` on a PoC prefill batch (`b` sequences of
    /// `l` positions from 0, no cache): `hidden` (and the `residual` of the previous layer,
    /// `None` before the first) are moved to the stage's device, and `hook` runs after
    /// every layer. Returns the last layer's `(hidden, residual)`.
    pub fn forward_stage(
        &self,
        stage: usize,
        hidden: Tensor,
        residual: Option<Tensor>,
        (b, l): (usize, usize),
        hook: &LayerHook<'_>,
    ) -> Result<(Tensor, Tensor)> {
        self.check_len(l)?;
        self.run_stage(
            stage,
            hidden,
            residual,
            Some((b, l)),
            Some(hook),
            &mut [],
            &[],
        )
    }

    /// The decoder layers of one stage over a step's rows: the PoC rows (`poc`: `b`
    /// sequences of `l`) first, then each chat segment at its cache position `starts[i]`.
    /// `hook` sees the PoC rows only.
    #[allow(clippy::too_many_arguments)]
    fn run_stage(
        &self,
        stage: usize,
        hidden: Tensor,
        residual: Option<Tensor>,
        poc: Option<(usize, usize)>,
        hook: Option<&LayerHook<'_>>,
        chats: &mut [ChatRows<'_>],
        starts: &[usize],
    ) -> Result<(Tensor, Tensor)> {
        let st = self.stages.get(stage).ok_or_else(|| {
            ModelError::Request(format!("stage {stage} of {}", self.stages.len()))
        })?;
        let mut hidden = hidden.to_device(&st.device)?;
        let mut residual = residual.map(|r| r.to_device(&st.device)).transpose()?;
        let total = hidden.dim(0)?;
        let poc_rows = poc.map_or(0, |(b, l)| b * l);
        for i in st.layers.clone() {
            let mut segs = Vec::with_capacity(chats.len() + 1);
            if let Some((b, l)) = poc {
                segs.push(Segment {
                    b,
                    l,
                    start: 0,
                    cache: None,
                });
            }
            for (c, &start) in chats.iter_mut().zip(starts) {
                segs.push(Segment {
                    b: 1,
                    l: c.tokens.len(),
                    start,
                    cache: Some(&mut c.cache.layers[i]),
                });
            }
            let (h, r) =
                self.layers[i].forward(&hidden, residual.as_ref(), &mut segs, &st.rotary)?;
            let (h, r) = match hook {
                Some(hook) if poc_rows == total => hook(i, h, r)?,
                Some(hook) if poc_rows > 0 => {
                    // The PoC transform touches the PoC rows only.
                    let rest = total - poc_rows;
                    let (ph, pr) = hook(i, h.narrow(0, 0, poc_rows)?, r.narrow(0, 0, poc_rows)?)?;
                    (
                        Tensor::cat(&[&ph, &h.narrow(0, poc_rows, rest)?], 0)?,
                        Tensor::cat(&[&pr, &r.narrow(0, poc_rows, rest)?], 0)?,
                    )
                }
                _ => (h, r),
            };
            hidden = h;
            residual = Some(r);
        }
        Ok((hidden, residual.expect("every stage has a layer")))
    }

    /// The last position of every sequence after the final norm, `[b, H]` in f32, from the
    /// last layer's `(hidden, residual)`.
    pub fn finish_last(
        &self,
        hidden: &Tensor,
        residual: &Tensor,
        (b, l): (usize, usize),
    ) -> Result<Tensor> {
        let dev = &self.stages.last().expect("a stage").device;
        let last = |t: &Tensor| -> Result<Tensor> {
            Ok(t.to_device(dev)?
                .reshape((b, l, self.config.hidden_size))?
                .i((.., l - 1, ..))?
                .contiguous()?)
        };
        let total = (last(hidden)? + last(residual)?)?;
        Ok(rms_norm(&total, &self.norm, self.config.rms_norm_eps)?.to_dtype(DType::F32)?)
    }

    /// The PoC prefill: `inputs: [b * l, H]` in the compute dtype are fed as input embeddings
    /// (positions 0..l-1, causal attention within each sequence, no cache); `hook` runs
    /// after every layer on its `(hidden, residual)` output. Returns the last position of
    /// every sequence after the final norm, `[b, H]` in f32. The stages run one after the
    /// other; [`crate::poc::PocEngine::compute`] overlaps them across batches.
    pub fn forward_embeds_last(
        &self,
        inputs: &Tensor,
        b: usize,
        l: usize,
        hook: &LayerHook<'_>,
    ) -> Result<Tensor> {
        let mut hidden = inputs.clone();
        let mut residual = None;
        for s in 0..self.stages.len() {
            let (h, r) = self.forward_stage(s, hidden, residual, (b, l), hook)?;
            hidden = h;
            residual = Some(r);
        }
        self.finish_last(&hidden, &residual.expect("a stage"), (b, l))
    }

    /// Runs `tokens` (one sequence) through the model, extending `cache`; returns the
    /// logits of the last position in f32, `[vocab]`.
    pub fn forward_tokens(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        let out = self.forward_mixed(None, &mut [ChatRows { tokens, cache }])?;
        Ok(out.chat_logits.expect("one chat sequence").squeeze(0)?)
    }

    /// One step over a mixed token batch (`docs/mlnode.md`, "Scheduling"): PoC prefill rows
    /// (`poc`, reflections applied to those rows only, no cache) and chat rows (each
    /// sequence's next tokens: a prefill chunk or one decode token, appended to its cache).
    /// Linear and MoE layers run once over all rows; attention runs per segment. The PoC
    /// result is that of [`Qwen3Model::forward_embeds_last`] on the PoC rows alone, and each
    /// chat's logits those of [`Qwen3Model::forward_tokens`] on its tokens alone, up to the
    /// matrix products' summation order (`tests/engine.rs` measures it).
    pub fn forward_mixed(
        &self,
        poc: Option<PocRows<'_>>,
        chats: &mut [ChatRows<'_>],
    ) -> Result<MixedOutput> {
        let shape = poc.as_ref().map(|p| (p.b, p.l));
        if let Some((b, l)) = shape {
            self.check_len(l)?;
            if b == 0 {
                return Err(ModelError::Request("a PoC part needs a sequence".into()));
            }
        }
        let mut starts = Vec::with_capacity(chats.len());
        for c in chats.iter_mut() {
            if c.tokens.is_empty() {
                return Err(ModelError::Request("a chat part needs a token".into()));
            }
            let start = c.cache.len();
            self.check_len(start + c.tokens.len())?;
            if c.cache.layers.len() != self.layers.len() {
                c.cache.layers = vec![None; self.layers.len()];
            }
            starts.push(start);
        }
        if shape.is_none() && chats.is_empty() {
            return Ok(MixedOutput {
                poc_last: None,
                chat_logits: None,
            });
        }
        let mut parts = Vec::with_capacity(2);
        if let Some(p) = &poc {
            parts.push(p.inputs.to_device(self.device())?);
        }
        if !chats.is_empty() {
            let ids: Vec<u32> = chats
                .iter()
                .flat_map(|c| c.tokens.iter().copied())
                .collect();
            let n = ids.len();
            let ids = Tensor::from_vec(ids, n, self.device())?;
            parts.push(self.embed_tokens.index_select(&ids, 0)?);
        }
        let mut hidden = if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Tensor::cat(&parts, 0)?
        };
        let hook = poc.as_ref().map(|p| p.hook);
        let mut residual = None;
        for s in 0..self.stages.len() {
            let (h, r) = self.run_stage(s, hidden, residual, shape, hook, chats, &starts)?;
            hidden = h;
            residual = Some(r);
        }
        let residual = residual.expect("a stage");
        let poc_rows = shape.map_or(0, |(b, l)| b * l);
        let poc_last = match shape {
            Some(bl) if chats.is_empty() => Some(self.finish_last(&hidden, &residual, bl)?),
            Some(bl) => Some(self.finish_last(
                &hidden.narrow(0, 0, poc_rows)?,
                &residual.narrow(0, 0, poc_rows)?,
                bl,
            )?),
            None => None,
        };
        let chat_logits = if chats.is_empty() {
            None
        } else {
            let mut last = Vec::with_capacity(chats.len());
            let mut end = poc_rows;
            for c in chats.iter() {
                end += c.tokens.len();
                last.push((end - 1) as u32);
            }
            let n = last.len();
            let idx = Tensor::from_vec(last, n, hidden.device())?;
            let total = (hidden.index_select(&idx, 0)? + residual.index_select(&idx, 0)?)?;
            let h = rms_norm(&total, &self.norm, self.config.rms_norm_eps)?;
            Some(self.lm_head.forward(&h)?.to_dtype(DType::F32)?)
        };
        Ok(MixedOutput {
            poc_last,
            chat_logits,
        })
    }
}

/// One chat sequence's share of a [`Qwen3Model::forward_mixed`] step.
pub struct ChatRows<'a> {
    /// Its next tokens: a prefill chunk or one decode token.
    pub tokens: &'a [u32],
    /// Its cache, extended by `tokens`.
    pub cache: &'a mut KvCache,
}

/// The PoC share of a [`Qwen3Model::forward_mixed`] step.
pub struct PocRows<'a> {
    /// `[b * l, H]` input embeddings in the compute dtype, on the first device.
    pub inputs: Tensor,
    /// Sequences.
    pub b: usize,
    /// Positions per sequence.
    pub l: usize,
    /// Runs after every layer on the PoC rows' `(hidden, residual)` only.
    pub hook: &'a LayerHook<'a>,
}

/// What a [`Qwen3Model::forward_mixed`] step returns.
#[derive(Debug)]
pub struct MixedOutput {
    /// The last position of every PoC sequence after the final norm, `[b, H]` in f32.
    pub poc_last: Option<Tensor>,
    /// The logits of each chat sequence's last new position, `[chats, vocab]` in f32.
    pub chat_logits: Option<Tensor>,
}
