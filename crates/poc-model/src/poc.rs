//! The PoC v2 forward (`docs/protocol/compute-v2.md` §2): deterministic inputs as input embeddings, a
//! Householder reflection of every layer's output, the last position after the final
//! norm, then the model-independent projection to a k-dim FP16 artifact vector.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Tensor};
use half::f16;
use poc_core::InputRng;
use poc_core::householder::householder_vector;
use poc_core::inputs::split_inputs;
use poc_core::projection::project_hidden;
use rayon::prelude::*;

use crate::error::{ModelError, Result};
use crate::model::{ChatRows, PocRows, Qwen3Model};

/// What one PoC computation is seeded with and how it is shaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PocParams {
    /// Block hash of the stage start (used verbatim in every seed string).
    pub block_hash: String,
    /// Participant public key (used verbatim).
    pub public_key: String,
    /// Sequence length L.
    pub seq_len: usize,
    /// Artifact dimensions k.
    pub k_dim: usize,
    /// Input generator (`poc_stronger_rng`).
    pub rng: InputRng,
}

/// One nonce's result: its FP16 vector, or `None` when the model produced a non-finite
/// hidden state for it (such nonces are dropped, as the reference's later branches do).
#[derive(Debug, Clone, PartialEq)]
pub struct NonceVector {
    /// The nonce.
    pub nonce: i64,
    /// The k FP16 values.
    pub vector: Option<Vec<f16>>,
}

/// `x ← x − 2 (x·v) v` per row of `x: [n, H]` with `v: [1, H]` in the activation dtype,
/// rounding like eager PyTorch: `p = x * v` (rounded), `dot = f32 sum of p` (rounded to the
/// dtype), `t = 2 * dot` (exact), `t * v` (rounded), `x − t v` (rounded).
pub fn reflect(x: &Tensor, v: &Tensor) -> Result<Tensor> {
    let dtype = x.dtype();
    let p = x.broadcast_mul(v)?;
    let dot = if dtype == DType::F32 {
        p.sum_keepdim(1)?
    } else {
        p.to_dtype(DType::F32)?.sum_keepdim(1)?.to_dtype(dtype)?
    };
    Ok((x - dot.affine(2.0, 0.0)?.broadcast_mul(v)?)?)
}

/// The artifact vector of one nonce from its last hidden state (f32, after the final
/// norm): `None` when the hidden state or the result is not finite.
pub fn project_nonce(p: &PocParams, nonce: i64, hidden: &[f32]) -> Result<NonceVector> {
    if !hidden.iter().all(|x| x.is_finite()) {
        return Ok(NonceVector {
            nonce,
            vector: None,
        });
    }
    let v = project_hidden(&p.block_hash, &p.public_key, nonce, hidden, p.k_dim)
        .map_err(|e| ModelError::Request(e.to_string()))?;
    let finite = v.iter().all(|x| x.is_finite());
    Ok(NonceVector {
        nonce,
        vector: finite.then_some(v),
    })
}

/// The per-layer hook of a round: both halves of every layer's output reflected with that
/// layer's vector.
fn reflect_hook(
    vs: &[Tensor],
) -> impl Fn(usize, Tensor, Tensor) -> Result<(Tensor, Tensor)> + Sync + '_ {
    move |i, hidden, residual| Ok((reflect(&hidden, &vs[i])?, reflect(&residual, &vs[i])?))
}

/// The artifact vectors of a batch from its last hidden states (in parallel).
fn project_all(p: &PocParams, nonces: &[i64], last: &[Vec<f32>]) -> Result<Vec<NonceVector>> {
    nonces
        .par_iter()
        .zip(last.par_iter())
        .map(|(&nonce, hs)| project_nonce(p, nonce, hs))
        .collect()
}

/// Runs PoC forwards on a loaded model. Reflection vectors are computed once per block hash.
#[derive(Debug)]
pub struct PocEngine {
    model: Arc<Qwen3Model>,
    reflections: Mutex<Option<(String, Arc<Vec<Tensor>>)>>,
}

impl PocEngine {
    /// An engine over a loaded model (shared with generation).
    pub fn new(model: Arc<Qwen3Model>) -> Self {
        Self {
            model,
            reflections: Mutex::new(None),
        }
    }

    /// The model.
    pub fn model(&self) -> &Arc<Qwen3Model> {
        &self.model
    }

    /// The layer reflection vectors of a round, `[1, H]` each in the compute dtype.
    fn reflections(&self, block_hash: &str) -> Result<Arc<Vec<Tensor>>> {
        let mut cache = self.reflections.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((bh, v)) = cache.as_ref()
            && bh == block_hash
        {
            return Ok(Arc::clone(v));
        }
        let cfg = self.model.config();
        let h = cfg.hidden_size;
        let vs: Vec<Vec<f32>> = (0..cfg.num_hidden_layers)
            .into_par_iter()
            .map(|i| householder_vector(block_hash, i, h))
            .collect();
        let tensors = vs
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                Ok(Tensor::from_vec(v, (1, h), self.model.layer_device(i))?
                    .to_dtype(self.model.dtype())?)
            })
            .collect::<Result<Vec<_>>>()?;
        let tensors = Arc::new(tensors);
        *cache = Some((block_hash.to_owned(), Arc::clone(&tensors)));
        Ok(tensors)
    }

    /// Checks a request against the model.
    pub fn check(&self, p: &PocParams) -> Result<()> {
        let h = self.model.config().hidden_size;
        if p.k_dim == 0 || p.k_dim > h {
            return Err(ModelError::Request(format!(
                "k_dim {} must be between 1 and the hidden size {h}",
                p.k_dim
            )));
        }
        if p.seq_len == 0 || p.seq_len > self.model.max_len() {
            return Err(ModelError::Request(format!(
                "seq_len {} must be between 1 and {}",
                p.seq_len,
                self.model.max_len()
            )));
        }
        Ok(())
    }

    /// The f32 inputs of a batch, `[b * L, H]` row-major, generated on all cores.
    pub fn inputs(&self, p: &PocParams, nonces: &[i64]) -> Vec<f32> {
        let h = self.model.config().hidden_size;
        let per = p.seq_len * h;
        let mut data = vec![0f32; nonces.len() * per];
        let chunks: Vec<_> = data
            .chunks_mut(per)
            .zip(nonces)
            .flat_map(|(out, &n)| {
                split_inputs(&p.block_hash, &p.public_key, n, p.rng, out, 1 << 16)
            })
            .collect();
        chunks.into_par_iter().for_each(|c| c.fill());
        data
    }

    /// One forward over a batch of nonces.
    pub fn compute_batch(&self, p: &PocParams, nonces: &[i64]) -> Result<Vec<NonceVector>> {
        self.check(p)?;
        if nonces.is_empty() {
            return Ok(vec![]);
        }
        let model = &self.model;
        let (b, l, h) = (nonces.len(), p.seq_len, model.config().hidden_size);
        let vs = self.reflections(&p.block_hash)?;
        let inputs = Tensor::from_vec(self.inputs(p, nonces), (b * l, h), model.device())?
            .to_dtype(model.dtype())?;
        let last = model
            .forward_embeds_last(&inputs, b, l, &reflect_hook(&vs))?
            .to_vec2::<f32>()?;
        project_all(p, nonces, &last)
    }

    /// One step of PoC rows beside chat rows ([`Qwen3Model::forward_mixed`]): the artifact
    /// vectors of `poc`'s nonces (those [`PocEngine::compute_batch`] gives) and, per chat
    /// sequence, the logits of its last new position.
    pub fn compute_mixed(
        &self,
        poc: Option<(&PocParams, &[i64])>,
        chats: &mut [ChatRows<'_>],
    ) -> Result<(Vec<NonceVector>, Vec<Vec<f32>>)> {
        let poc = poc.filter(|(_, nonces)| !nonces.is_empty());
        let model = &self.model;
        let h = model.config().hidden_size;
        let (vs, inputs) = match poc {
            Some((p, nonces)) => {
                self.check(p)?;
                let inputs = Tensor::from_vec(
                    self.inputs(p, nonces),
                    (nonces.len() * p.seq_len, h),
                    model.device(),
                )?
                .to_dtype(model.dtype())?;
                (Some(self.reflections(&p.block_hash)?), Some(inputs))
            }
            None => (None, None),
        };
        let hook = vs.as_deref().map(|vs| reflect_hook(vs));
        let rows = match (poc, inputs, &hook) {
            (Some((p, nonces)), Some(inputs), Some(hook)) => Some(PocRows {
                inputs,
                b: nonces.len(),
                l: p.seq_len,
                hook,
            }),
            _ => None,
        };
        let out = model.forward_mixed(rows, chats)?;
        let vectors = match (poc, out.poc_last) {
            (Some((p, nonces)), Some(last)) => project_all(p, nonces, &last.to_vec2::<f32>()?)?,
            _ => vec![],
        };
        let logits = match out.chat_logits {
            Some(l) => l.to_vec2::<f32>()?,
            None => vec![],
        };
        Ok((vectors, logits))
    }

    /// Many nonces in consecutive batches of `batch_size` (in the given order);
    /// `progress` is called with the number of nonces done after each batch. With several
    /// pipeline stages, batches flow from stage to stage so that every device works on a
    /// different batch at once (and on a GPU inputs are generated while the device works);
    /// the results are those of [`PocEngine::compute_batch`].
    pub fn compute(
        &self,
        p: &PocParams,
        nonces: &[i64],
        batch_size: usize,
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<NonceVector>> {
        self.check(p)?;
        let batch_size = batch_size.max(1);
        // On GPUs the next batch's inputs are generated on the CPU while the device runs
        // the current one; CPUs have no cores to spare for that.
        let overlap = self.model.stage_count() > 1 || !self.model.device().is_cpu();
        if overlap && nonces.len() > batch_size {
            return self.compute_pipelined(p, nonces, batch_size, progress);
        }
        let mut out = Vec::with_capacity(nonces.len());
        for chunk in nonces.chunks(batch_size) {
            out.extend(self.compute_batch(p, chunk)?);
            progress(out.len());
        }
        Ok(out)
    }

    /// [`PocEngine::compute`] over several stages, or one GPU stage: one thread generates
    /// inputs, one thread per stage runs its layers, the caller's thread projects the
    /// results; stages
    /// hand batches on through channels of depth one (bounded memory: at most two batches
    /// per stage alive).
    fn compute_pipelined(
        &self,
        p: &PocParams,
        nonces: &[i64],
        batch_size: usize,
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<NonceVector>> {
        use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
        type Item = Result<(usize, Tensor, Option<Tensor>)>;
        let model = &self.model;
        let (l, h) = (p.seq_len, model.config().hidden_size);
        let vs = self.reflections(&p.block_hash)?;
        let hook = reflect_hook(&vs);
        let chunks: Vec<&[i64]> = nonces.chunks(batch_size).collect();
        let stages = model.stage_count();
        std::thread::scope(|scope| -> Result<Vec<NonceVector>> {
            let (feed_tx, mut rx): (SyncSender<Item>, Receiver<Item>) = sync_channel(1);
            let chunks_ref = &chunks;
            scope.spawn(move || {
                for (i, chunk) in chunks_ref.iter().enumerate() {
                    let item = Tensor::from_vec(
                        self.inputs(p, chunk),
                        (chunk.len() * l, h),
                        model.device(),
                    )
                    .and_then(|t| t.to_dtype(model.dtype()))
                    .map(|t| (i, t, None))
                    .map_err(Into::into);
                    let failed = item.is_err();
                    if feed_tx.send(item).is_err() || failed {
                        return;
                    }
                }
            });
            for s in 0..stages {
                let (tx, next_rx) = sync_channel::<Item>(1);
                let input = std::mem::replace(&mut rx, next_rx);
                let hook = &hook;
                scope.spawn(move || {
                    for item in input {
                        let out = item.and_then(|(i, hidden, residual)| {
                            let b = chunks_ref[i].len();
                            model
                                .forward_stage(s, hidden, residual, (b, l), hook)
                                .map(|(h, r)| (i, h, Some(r)))
                        });
                        let failed = out.is_err();
                        if tx.send(out).is_err() || failed {
                            return;
                        }
                    }
                });
            }
            let mut out = Vec::with_capacity(nonces.len());
            for item in rx {
                let (i, hidden, residual) = item?;
                let chunk = chunks[i];
                let residual = residual.expect("a stage ran");
                let last = model
                    .finish_last(&hidden, &residual, (chunk.len(), l))?
                    .to_vec2::<f32>()?;
                out.extend(project_all(p, chunk, &last)?);
                progress(out.len());
            }
            if out.len() != nonces.len() {
                return Err(ModelError::Request(
                    "the pipeline stopped before every batch was done".into(),
                ));
            }
            Ok(out)
        })
    }
}
