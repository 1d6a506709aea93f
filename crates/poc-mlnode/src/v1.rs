//! The PoC v1 API of the ML node (`docs/protocol/compute-v1.md` §8, §9): the round's random-weight
//! model built from the block hash, continuous generation of `(nonce, dist)` with
//! `dist < r_target`, validation of submitted batches with the binomial test, and the
//! reference's callbacks (`{url}/generated`, `{url}/validated`) every callback interval.
//! v1 and v2 never run at the same time: starting one stops the other.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use poc_core::NonceIterator;
use poc_v1::compute::{V1Round, verdict};
use poc_v1::params::V1Params;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Largest model (parameters) this node agrees to build.
pub const MAX_V1_PARAMETERS: u64 = 4_000_000_000;
/// Nonces per generation step.
const STEP: usize = 8;

/// `PowInitRequestUrl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct V1Init {
    /// Node number (−1 = unset).
    #[serde(default = "minus_one")]
    pub node_id: i64,
    /// Node count (−1 = unset).
    #[serde(default = "minus_one")]
    pub node_count: i64,
    /// Round block hash.
    pub block_hash: String,
    /// Round height.
    pub block_height: i64,
    /// The participant's key.
    pub public_key: String,
    /// Ignored (the reference computes its own).
    #[serde(default)]
    pub batch_size: Option<i64>,
    /// Distance threshold.
    pub r_target: f64,
    /// Fraud threshold of the binomial test.
    pub fraud_threshold: f64,
    /// Model shape.
    pub params: V1Params,
    /// Callback base.
    pub url: String,
}

fn minus_one() -> i64 {
    -1
}

/// `ProofBatch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProofBatch {
    /// Prover's key.
    pub public_key: String,
    /// Round block hash.
    pub block_hash: String,
    /// Round height.
    pub block_height: i64,
    pub nonces: Vec<i64>,
    /// Claimed distances.
    pub dist: Vec<f64>,
    /// Prover's node number.
    #[serde(default)]
    pub node_id: i64,
}

/// Phase of the v1 service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V1Phase {
    /// Nothing initialised.
    NotLoaded,
    /// Building the model.
    Loading,
    /// Model ready, idle.
    Idle,
    Generating,
    Validating,
}

impl V1Phase {
    fn name(self) -> &'static str {
        match self {
            Self::NotLoaded => "NOT_LOADED",
            Self::Loading => "LOADING",
            Self::Idle => "IDLE",
            Self::Generating => "GENERATING",
            Self::Validating => "VALIDATING",
        }
    }
}

struct State {
    phase: V1Phase,
    init: Option<V1Init>,
    round: Option<Arc<V1Round>>,
    generated: Vec<(i64, f64)>,
    validated: Vec<Value>,
    stop: Arc<AtomicBool>,
}

/// The v1 service.
pub struct V1Service {
    state: Mutex<State>,
    http: reqwest::Client,
}

/// Errors with the HTTP status they map to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Error(pub u16, pub String);

impl Default for V1Service {
    fn default() -> Self {
        Self::new()
    }
}

impl V1Service {
    /// An idle service.
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State {
                phase: V1Phase::NotLoaded,
                init: None,
                round: None,
                generated: vec![],
                validated: vec![],
                stop: Arc::new(AtomicBool::new(false)),
            }),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .pool_idle_timeout(Duration::from_secs(5))
                .build()
                .expect("HTTP client builds"),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether v1 holds the node (initialised or running).
    pub fn active(&self) -> bool {
        !matches!(self.lock().phase, V1Phase::NotLoaded)
    }

    /// `{"status": …, "is_model_initialized": …}`.
    pub fn status(&self) -> Value {
        let s = self.lock();
        match s.phase {
            V1Phase::NotLoaded => json!({"status": "NOT_LOADED"}),
            p => json!({"status": p.name(), "is_model_initialized": s.round.is_some()}),
        }
    }

    /// Builds the model if the round changed (blocking work off the async threads).
    async fn ensure_round(&self, init: &V1Init) -> Result<(), V1Error> {
        init.params
            .validate()
            .map_err(|e| V1Error(400, format!("params: {e}")))?;
        if init.params.total_parameters() > MAX_V1_PARAMETERS {
            return Err(V1Error(
                400,
                format!(
                    "params describe {} parameters; this node builds at most {MAX_V1_PARAMETERS}",
                    init.params.total_parameters()
                ),
            ));
        }
        {
            let s = self.lock();
            if let (Some(old), Some(_)) = (&s.init, &s.round)
                && old.params == init.params
                && old.block_hash == init.block_hash
            {
                drop(s);
                self.lock().init = Some(init.clone());
                return Ok(());
            }
        }
        self.halt();
        self.lock().phase = V1Phase::Loading;
        let (p, bh) = (init.params.clone(), init.block_hash.clone());
        let started = std::time::Instant::now();
        let round =
            tokio::task::spawn_blocking(move || V1Round::build(&p, &bh, &candle_core::Device::Cpu))
                .await
                .map_err(|e| V1Error(500, e.to_string()))?
                .map_err(|e| V1Error(500, format!("cannot build the v1 model: {e}")))?;
        tracing::info!(
            block_height = init.block_height,
            "v1 model built in {:.3} s",
            started.elapsed().as_secs_f64()
        );
        let mut s = self.lock();
        s.round = Some(Arc::new(round));
        s.init = Some(init.clone());
        s.phase = V1Phase::Idle;
        Ok(())
    }

    fn halt(&self) {
        let mut s = self.lock();
        s.stop.store(true, Ordering::SeqCst);
        s.stop = Arc::new(AtomicBool::new(false));
    }

    /// `POST /pow/init`.
    pub async fn init(&self, init: V1Init) -> Result<Value, V1Error> {
        self.ensure_round(&init).await?;
        self.halt();
        self.lock().phase = V1Phase::Idle;
        Ok(self.ok())
    }

    fn ok(&self) -> Value {
        json!({"status": "OK", "pow_status": self.status()})
    }

    /// `POST /pow/init/generate`.
    pub async fn init_generate(self: &Arc<Self>, init: V1Init) -> Result<Value, V1Error> {
        if init.node_id < 0 || init.node_count <= 0 || init.node_id >= init.node_count {
            return Err(V1Error(
                400,
                "node_id and node_count must be set (0 <= node_id < node_count)".into(),
            ));
        }
        {
            let s = self.lock();
            if s.phase == V1Phase::Generating && s.init.as_ref() == Some(&init) {
                drop(s);
                return Ok(self.ok());
            }
        }
        self.ensure_round(&init).await?;
        self.start_generation()
    }

    /// `POST /pow/phase/generate`.
    pub fn phase_generate(self: &Arc<Self>) -> Result<Value, V1Error> {
        let s = self.lock();
        let Some(init) = &s.init else {
            return Err(V1Error(400, "PoW is not initialised".into()));
        };
        if init.node_id < 0 || init.node_count <= 0 {
            return Err(V1Error(400, "node_id and node_count are not set".into()));
        }
        drop(s);
        self.start_generation()
    }

    fn start_generation(self: &Arc<Self>) -> Result<Value, V1Error> {
        self.halt();
        let (round, init, stop) = {
            let mut s = self.lock();
            let (Some(r), Some(i)) = (s.round.clone(), s.init.clone()) else {
                return Err(V1Error(400, "PoW is not initialised".into()));
            };
            s.phase = V1Phase::Generating;
            (r, i, Arc::clone(&s.stop))
        };
        let me = Arc::clone(self);
        let mut nonces = NonceIterator::new(init.node_id as u64, init.node_count as u64, 0, 1)
            .map_err(|e| V1Error(400, e.to_string()))?;
        std::thread::Builder::new()
            .name("v1-generate".into())
            .spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let batch: Vec<i64> = nonces.by_ref().take(STEP).collect();
                    match round.distances(&init.public_key, &batch) {
                        Ok(d) => {
                            let valid: Vec<(i64, f64)> = batch
                                .into_iter()
                                .zip(d)
                                .filter(|(_, d)| *d < init.r_target)
                                .collect();
                            if !stop.load(Ordering::SeqCst) {
                                me.lock().generated.extend(valid);
                            }
                        }
                        Err(e) => {
                            tracing::error!("v1 generation failed: {e}");
                            return;
                        }
                    }
                }
            })
            .map_err(|e| V1Error(500, e.to_string()))?;
        Ok(self.ok())
    }

    /// `POST /pow/init/validate` and `POST /pow/phase/validate`.
    pub async fn init_validate(&self, init: Option<V1Init>) -> Result<Value, V1Error> {
        if let Some(i) = init {
            self.ensure_round(&i).await?;
        }
        self.halt();
        let mut s = self.lock();
        if s.round.is_none() {
            return Err(V1Error(400, "PoW is not initialised".into()));
        }
        s.phase = V1Phase::Validating;
        drop(s);
        Ok(self.ok())
    }

    /// `POST /pow/validate`: recomputes the batch and queues the verdict.
    pub async fn validate(self: &Arc<Self>, batch: ProofBatch) -> Result<(), V1Error> {
        let (round, init) = {
            let s = self.lock();
            let (Some(r), Some(i)) = (s.round.clone(), s.init.clone()) else {
                return Err(V1Error(400, "PoW is not running".into()));
            };
            (r, i)
        };
        if batch.block_hash != init.block_hash {
            return Err(V1Error(
                400,
                format!(
                    "batch is for block {}, the model is for {}",
                    batch.block_hash, init.block_hash
                ),
            ));
        }
        if batch.nonces.len() != batch.dist.len() || batch.nonces.len() > 100_000 {
            return Err(V1Error(
                400,
                "nonces and dist must have the same length (at most 100000)".into(),
            ));
        }
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let computed = match round.distances(&batch.public_key, &batch.nonces) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!("v1 validation failed: {e}");
                    return;
                }
            };
            let v = verdict(&computed, init.r_target, init.fraud_threshold);
            let body = json!({
                "public_key": batch.public_key, "block_hash": batch.block_hash, "block_height": batch.block_height,
                "nonces": batch.nonces, "dist": computed, "node_id": batch.node_id, "received_dist": batch.dist,
                "r_target": init.r_target, "fraud_threshold": init.fraud_threshold, "n_invalid": v.n_invalid,
                "probability_honest": v.probability_honest, "fraud_detected": v.fraud_detected,
            });
            me.lock().validated.push(body);
        });
        Ok(())
    }

    /// `POST /pow/stop`.
    pub fn stop(&self) -> Value {
        let was = self.active();
        self.halt();
        let mut s = self.lock();
        s.phase = if s.round.is_some() {
            V1Phase::Idle
        } else {
            V1Phase::NotLoaded
        };
        drop(s);
        if was {
            json!({"status": "OK", "pow_status": self.status()})
        } else {
            json!({"status": "OK", "pow_status": "PoW is not running"})
        }
    }

    /// Releases the node for v2: stops v1 and forgets the round.
    pub fn release(&self) {
        self.halt();
        let mut s = self.lock();
        s.phase = V1Phase::NotLoaded;
        s.generated.clear();
    }

    /// One sender tick: posts pending generated nonces (one batch) and verdicts; failed
    /// posts stay queued for the next tick.
    pub async fn send_pending(&self) {
        let (init, gen_batch, validated) = {
            let mut s = self.lock();
            let Some(init) = s.init.clone() else { return };
            (
                init,
                std::mem::take(&mut s.generated),
                std::mem::take(&mut s.validated),
            )
        };
        if !gen_batch.is_empty() {
            let body = json!({
                "public_key": init.public_key, "block_hash": init.block_hash, "block_height": init.block_height,
                "nonces": gen_batch.iter().map(|x| x.0).collect::<Vec<_>>(), "dist": gen_batch.iter().map(|x| x.1).collect::<Vec<_>>(),
                "node_id": init.node_id,
            });
            if !self.post(&init.url, "generated", &body).await {
                let mut s = self.lock();
                let newer = std::mem::take(&mut s.generated);
                s.generated = gen_batch;
                s.generated.extend(newer);
            }
        }
        let mut failed = Vec::new();
        for v in validated {
            if !self.post(&init.url, "validated", &v).await {
                failed.push(v);
            }
        }
        if !failed.is_empty() {
            self.lock().validated.splice(0..0, failed);
        }
    }

    async fn post(&self, url: &str, path: &str, body: &Value) -> bool {
        let u = format!("{}/{path}", url.trim_end_matches('/'));
        match self.http.post(&u).json(body).send().await {
            Ok(r) if r.status().is_success() => true,
            Ok(r) => {
                tracing::warn!("v1 callback {u} answered {}", r.status());
                false
            }
            Err(e) => {
                tracing::warn!("v1 callback {u}: {e}");
                false
            }
        }
    }
}

/// Whether an `init/generate` body is a v1 one (it carries `r_target` or a `params.dim`).
pub fn is_v1_body(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .is_ok_and(|v| v.get("r_target").is_some() || v["params"].get("dim").is_some())
}
