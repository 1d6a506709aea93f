//! The variants of the experiment and how each computes its artifacts on this machine
//! (`docs/calibrate.md`, "Variants"). Honest ones change only what a correct prover may
//! differ in (compute dtype, FP8 weights, batch composition); the others are the cheaper
//! or modified models PoC must tell apart from the served one.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use poc_model::fp8::Fp8Weight;
use poc_model::quantize::{is_quantized_weight, quantize_fp8, round_row_4bit};
use poc_model::{
    Checkpoint, LoadOptions, ModelConfig, PocEngine, PocParams, Qwen3Model, WeightSource,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::CalibrateError;
use crate::artifacts::ArtifactSet;

/// One variant, by its command-line name.
#[derive(Debug, Clone, PartialEq)]
pub enum Variant {
    /// `f32`, `bf16`, `f16`: the model computed in that dtype (honest).
    Dtype(DType),
    /// `fp8`: the FP8 block-quantized copy (`poc model quantize --fp8`) (honest).
    Fp8,
    /// `batch=N`: the reference computed with `N` nonces per forward (honest).
    Batch(usize),
    /// `device=cuda:N` (or `cpu`): the reference computed on that device (honest; a GPU
    /// needs the `cuda` build).
    Device(String),
    /// `int4`: every linear weight rounded to 4 bits per row (cheaper).
    Int4,
    /// `perturb=EPS`: the middle layer's matrices times `1 + EPS·z`, `z ~ N(0, 1)` from a
    /// fixed seed (modified).
    Perturb(f64),
    /// `swap-expert`: experts 0 and 1 of the middle MoE layer exchanged (modified).
    SwapExpert,
    /// `no-reflect`: the Householder reflections skipped (a prover that saves them).
    NoReflect,
    /// `random`: Gaussian vectors of the honest artifacts' scale (no model at all).
    Random,
}

/// The variants run when `--variants` is not given.
pub const DEFAULT_VARIANTS: &str = "f32,bf16,f16,fp8,batch=1,int4,perturb=1e-3,perturb=1e-2,perturb=1e-1,swap-expert,no-reflect,random";

impl Variant {
    /// Parses a name (see the enum), with a clear error for an unknown one. `perturb`
    /// names are canonical in scientific notation (`perturb=0.01` is `perturb=1e-2`).
    pub fn parse(s: &str) -> Result<Self, CalibrateError> {
        let bad = |why: &str| CalibrateError::Variant(format!("{s:?}: {why}"));
        Ok(match s {
            "f32" => Self::Dtype(DType::F32),
            "bf16" => Self::Dtype(DType::BF16),
            "f16" => Self::Dtype(DType::F16),
            "fp8" => Self::Fp8,
            "int4" => Self::Int4,
            "swap-expert" => Self::SwapExpert,
            "no-reflect" => Self::NoReflect,
            "random" => Self::Random,
            _ => match s.split_once('=') {
                Some(("batch", n)) => Self::Batch(
                    n.parse()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| bad("batch=N needs a positive N"))?,
                ),
                Some(("device", d))
                    if d == "cpu"
                        || d == "cuda"
                        || d.strip_prefix("cuda:")
                            .is_some_and(|i| i.parse::<usize>().is_ok()) =>
                {
                    Self::Device(d.to_owned())
                }
                Some(("device", _)) => return Err(bad("device=D takes cpu, cuda or cuda:N")),
                Some(("perturb", e)) => Self::Perturb(
                    e.parse()
                        .ok()
                        .filter(|e: &f64| e.is_finite() && *e > 0.0)
                        .ok_or_else(|| bad("perturb=EPS needs a positive EPS, e.g. 1e-3"))?,
                ),
                _ => {
                    return Err(bad(
                        "unknown variant; known: f32, bf16, f16, fp8, batch=N, device=cuda:N, int4, perturb=EPS, swap-expert, no-reflect, random",
                    ));
                }
            },
        })
    }

    /// Whether a correct prover may compute this way.
    pub fn is_honest(&self) -> bool {
        matches!(
            self,
            Self::Dtype(_) | Self::Fp8 | Self::Batch(_) | Self::Device(_)
        )
    }

    /// The name it was parsed from.
    pub fn name(&self) -> String {
        match self {
            Self::Dtype(d) => match d {
                DType::BF16 => "bf16".into(),
                DType::F16 => "f16".into(),
                _ => "f32".into(),
            },
            Self::Fp8 => "fp8".into(),
            Self::Batch(n) => format!("batch={n}"),
            Self::Device(d) => format!("device={d}"),
            Self::Int4 => "int4".into(),
            Self::Perturb(e) => format!("perturb={e:e}"),
            Self::SwapExpert => "swap-expert".into(),
            Self::NoReflect => "no-reflect".into(),
            Self::Random => "random".into(),
        }
    }
}

/// What every computed variant shares.
pub struct Job<'a> {
    /// The model checkpoint.
    pub model: &'a Path,
    /// Where derived copies (the FP8 one) are written.
    pub scratch: &'a Path,
    pub params: PocParams,
    pub nonces: &'a [i64],
    /// Nonces per forward (the reference's batch composition).
    pub batch: usize,
    /// Compute dtype of every variant that does not set its own.
    pub dtype: DType,
    pub device: Device,
}

/// A weight change applied while the model loads.
#[derive(Debug, Clone, Copy)]
enum Change {
    Round4,
    Perturb { layer: usize, eps: f64 },
    Swap { layer: usize },
}

/// A checkpoint seen through a [`Change`].
struct Modified<'a> {
    inner: &'a dyn WeightSource,
    change: Change,
}

impl Modified<'_> {
    /// The stored tensor a requested name reads (the swap renames).
    fn source_name(&self, name: &str) -> String {
        if let Change::Swap { layer } = self.change {
            let p = format!("model.layers.{layer}.mlp.experts.");
            if let Some(rest) = name.strip_prefix(&p) {
                if let Some(r) = rest.strip_prefix("0.") {
                    return format!("{p}1.{r}");
                }
                if let Some(r) = rest.strip_prefix("1.") {
                    return format!("{p}0.{r}");
                }
            }
        }
        name.to_owned()
    }

    /// Whether the values of `name` change.
    fn rewrites(&self, name: &str, shape: &[usize]) -> bool {
        match self.change {
            Change::Round4 => is_quantized_weight(name, shape),
            Change::Perturb { layer, .. } => {
                shape.len() == 2 && name.starts_with(&format!("model.layers.{layer}."))
            }
            Change::Swap { .. } => false,
        }
    }

    fn rewrite(&self, name: &str, shape: &[usize], v: &mut [f32]) {
        match self.change {
            Change::Round4 => {
                for row in v.chunks_mut(*shape.last().unwrap_or(&1).max(&1)) {
                    round_row_4bit(row);
                }
            }
            Change::Perturb { eps, .. } => {
                let seed = name.bytes().fold(0xcb_f2_9c_e4_84_22_23_25u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
                });
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                for x in v {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    *x = (f64::from(*x) * (1.0 + eps * z)) as f32;
                }
            }
            Change::Swap { .. } => {}
        }
    }
}

impl WeightSource for Modified<'_> {
    fn config(&self) -> &ModelConfig {
        self.inner.config()
    }

    fn contains(&self, name: &str) -> bool {
        self.inner.contains(&self.source_name(name))
    }

    fn tensor(
        &self,
        name: &str,
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> poc_model::Result<Tensor> {
        let src = self.source_name(name);
        if !self.rewrites(name, shape) {
            return self.inner.tensor(&src, shape, dtype, device);
        }
        let t = self.inner.tensor(&src, shape, DType::F32, &Device::Cpu)?;
        let mut v = t.flatten_all()?.to_vec1::<f32>()?;
        self.rewrite(name, shape, &mut v);
        Ok(Tensor::from_vec(v, shape, &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)?)
    }

    fn fp8(
        &self,
        name: &str,
        shape: &[usize],
        device: &Device,
    ) -> poc_model::Result<Option<Fp8Weight>> {
        if self.rewrites(name, shape) {
            // Read through `tensor` (dequantized, then changed).
            return Ok(None);
        }
        self.inner.fp8(&self.source_name(name), shape, device)
    }
}

fn model_err(what: &str) -> impl Fn(poc_model::ModelError) -> CalibrateError + '_ {
    move |e| CalibrateError::Model(format!("{what}: {e}"))
}

/// The artifacts of `v` (not [`Variant::Random`], which needs the reference's scale:
/// [`random_set`]) and the nonces per second it ran at. `progress` gets the number of
/// nonces done.
pub fn compute(
    v: &Variant,
    job: &Job<'_>,
    mut progress: impl FnMut(usize),
) -> Result<(ArtifactSet, f64), CalibrateError> {
    let ck = Checkpoint::open(job.model).map_err(model_err("opening the model"))?;
    let cfg = ck.config().clone();
    let middle = cfg.num_hidden_layers / 2;
    let mut dtype = job.dtype;
    let mut batch = job.batch;
    let mut change = None;
    let mut fp8_copy: Option<Checkpoint> = None;
    let mut device = job.device.clone();
    match v {
        Variant::Device(d) => {
            device = poc_model::parse_devices(&[d])
                .map_err(model_err("the device"))?
                .remove(0)
        }
        Variant::Dtype(d) => dtype = *d,
        Variant::Batch(n) => batch = *n,
        Variant::Int4 => change = Some(Change::Round4),
        Variant::Perturb(eps) => {
            change = Some(Change::Perturb {
                layer: middle,
                eps: *eps,
            })
        }
        Variant::SwapExpert => {
            let layer = (0..cfg.num_hidden_layers)
                .map(|i| (middle + i) % cfg.num_hidden_layers)
                .find(|&i| cfg.is_moe_layer(i))
                .filter(|_| cfg.moe.as_ref().is_some_and(|m| m.num_experts >= 2))
                .ok_or_else(|| {
                    CalibrateError::Variant(
                        "swap-expert needs a mixture-of-experts model with at least 2 experts"
                            .into(),
                    )
                })?;
            change = Some(Change::Swap { layer })
        }
        Variant::Fp8 => {
            if cfg.fp8.is_some() {
                return Err(CalibrateError::Variant(
                    "fp8: the model is FP8 already; calibrate from its bf16 original".into(),
                ));
            }
            let dir = job.scratch.join("fp8-copy");
            if !dir.join("config.json").exists() {
                let tmp: PathBuf = job.scratch.join("fp8-copy.partial");
                let _ = std::fs::remove_dir_all(&tmp);
                quantize_fp8(job.model, &tmp, [128, 128])
                    .map_err(model_err("writing the FP8 copy"))?;
                std::fs::rename(&tmp, &dir).map_err(|e| CalibrateError::Io(e.to_string()))?;
            }
            fp8_copy = Some(Checkpoint::open(&dir).map_err(model_err("opening the FP8 copy"))?);
        }
        Variant::NoReflect => {}
        Variant::Random => {
            return Err(CalibrateError::Variant(
                "random vectors are drawn, not computed".into(),
            ));
        }
    }
    let modified = change.map(|change| Modified { inner: &ck, change });
    let source: &dyn WeightSource = match (&fp8_copy, &modified) {
        (Some(f), _) => f,
        (None, Some(m)) => m,
        (None, None) => &ck,
    };
    let model = Qwen3Model::load_with(source, &LoadOptions::new(dtype, &device))
        .map_err(model_err(&format!("loading the {} variant", v.name())))?;
    let engine = PocEngine::new(std::sync::Arc::new(model));
    engine
        .check(&job.params)
        .map_err(model_err("the request"))?;
    let t = Instant::now();
    let results = if *v == Variant::NoReflect {
        unreflected(&engine, &job.params, job.nonces, batch, &mut progress)?
    } else {
        engine
            .compute(&job.params, job.nonces, batch, &mut progress)
            .map_err(model_err("computing"))?
    };
    let rate = job.nonces.len() as f64 / t.elapsed().as_secs_f64().max(1e-9);
    let mut set = ArtifactSet::default();
    for r in results {
        set.vectors.insert(
            r.nonce,
            r.vector
                .map(|v| v.into_iter().map(half::f16::to_f32).collect()),
        );
    }
    Ok((set, rate))
}

/// What a prover that skips the per-layer reflections computes: the same inputs and
/// projection, with an identity layer hook.
fn unreflected(
    engine: &PocEngine,
    p: &PocParams,
    nonces: &[i64],
    batch: usize,
    progress: &mut impl FnMut(usize),
) -> Result<Vec<poc_model::NonceVector>, CalibrateError> {
    let model = engine.model();
    let h = model.config().hidden_size;
    let mut out = Vec::with_capacity(nonces.len());
    let identity = |_: usize, hidden: Tensor, residual: Tensor| Ok((hidden, residual));
    for chunk in nonces.chunks(batch.max(1)) {
        let err = model_err("computing without reflections");
        let inputs = Tensor::from_vec(
            engine.inputs(p, chunk),
            (chunk.len() * p.seq_len, h),
            model.device(),
        )
        .and_then(|t| t.to_dtype(model.dtype()))
        .map_err(|e| err(e.into()))?;
        let last = model
            .forward_embeds_last(&inputs, chunk.len(), p.seq_len, &identity)
            .and_then(|t| Ok(t.to_vec2::<f32>()?))
            .map_err(&err)?;
        for (&n, hs) in chunk.iter().zip(&last) {
            out.push(poc_model::poc::project_nonce(p, n, hs).map_err(&err)?);
        }
        progress(out.len());
    }
    Ok(out)
}

/// Random vectors for `nonces`: each value `N(0, σ²)` with `σ` the root mean square of
/// the reference's values, rounded through FP16 as artifacts are, from `seed`.
pub fn random_set(reference: &ArtifactSet, seed: u64) -> ArtifactSet {
    let (mut sum, mut count, mut k) = (0f64, 0usize, 0usize);
    for v in reference.vectors.values().flatten() {
        k = v.len();
        sum += v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>();
        count += v.len();
    }
    let sigma = if count == 0 {
        1.0
    } else {
        (sum / count as f64).sqrt()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = ArtifactSet::default();
    for &n in reference.vectors.keys() {
        let v = (0..k)
            .map(|_| {
                let z: f64 = StandardNormal.sample(&mut rng);
                half::f16::from_f64(z * sigma).to_f32()
            })
            .collect();
        out.vectors.insert(n, Some(v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_refused() {
        for name in DEFAULT_VARIANTS.split(',') {
            assert_eq!(Variant::parse(name).unwrap().name(), name);
        }
        assert!(Variant::parse("f32").unwrap().is_honest());
        assert!(Variant::parse("batch=4").unwrap().is_honest());
        assert!(!Variant::parse("int4").unwrap().is_honest());
        assert!(Variant::parse("device=cuda:1").unwrap().is_honest());
        for bad in [
            "int3",
            "batch=0",
            "perturb=-1",
            "perturb=x",
            "fp7",
            "device=tpu",
        ] {
            let e = Variant::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn random_vectors_have_the_references_scale_and_a_fixed_seed() {
        let mut r = ArtifactSet::default();
        for n in 0..400 {
            r.vectors.insert(n, Some(vec![0.5, -0.5, 0.5, -0.5]));
        }
        let a = random_set(&r, 7);
        assert_eq!(a, random_set(&r, 7));
        assert_ne!(a, random_set(&r, 8));
        let vals: Vec<f32> = a.vectors.values().flatten().flatten().copied().collect();
        let rms = (vals.iter().map(|x| x * x).sum::<f32>() / vals.len() as f32).sqrt();
        assert!((rms - 0.5).abs() < 0.03, "{rms}");
    }
}
