//! # poc-mlnode: the ML node
//!
//! One process loads the served model once and serves, on the same weights:
//! the PoC v2 API of the reference ML node (`/api/v1/inference/pow/*`, and the backend
//! layer `/api/v1/pow/*`): continuous artifact generation with callbacks, validation
//! recompute with the statistical verdict, a FIFO queue with results by request id; and
//! OpenAI-style chat completions (`/v1/chat/completions`, streaming included). Switching
//! between them never reloads the model. While continuous PoC generation runs, chat keeps
//! being served: by default PoC and chat rows share every forward pass ([`schedule`]).
//!
//! The model runs on one compute thread ([`compute`]); HTTP handling, callbacks and
//! timers are async (tokio). This crate wires `poc-model` and `poc-core` to HTTP and knows
//! nothing of the chain or the artifact store.

pub mod bench;
pub mod callbacks;
pub mod chat;
pub mod compute;
pub mod metrics;
pub mod schedule;
mod server;
pub mod settings;
pub mod v1;
pub mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use candle_core::DType;
use poc_model::{Checkpoint, PocEngine, Qwen3Model};
use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use schedule::ChatPolicy;
pub use settings::PocSettings;

/// How to run the node.
#[derive(Debug, Clone)]
pub struct MlNodeConfig {
    /// Model directory.
    pub model: PathBuf,
    /// Extra names the model answers to (requests may use these or the model path).
    pub served_model_names: Vec<String>,
    /// Listen address (port 0 = any free port).
    pub listen: SocketAddr,
    /// Compute dtype (`None` = the checkpoint's).
    pub dtype: Option<DType>,
    /// Devices of the layer pipeline, in order (empty = [`poc_model::default_device`]).
    pub devices: Vec<candle_core::Device>,
    /// How FP8 weights are kept (`None` = the default for the first device).
    pub fp8: Option<poc_model::Fp8Path>,
    /// PoC tunables.
    pub settings: PocSettings,
    /// Largest request body.
    pub body_limit: usize,
    /// Header/idle and body timeouts and the connection cap of the HTTP server.
    pub http: poc_http::HttpLimits,
}

/// Why the node cannot start (or a benchmark of it failed).
#[derive(Debug, Error)]
pub enum MlNodeError {
    /// The model could not be loaded.
    #[error("cannot load the model: {0}")]
    Model(#[from] poc_model::ModelError),
    /// The tokenizer or chat template could not be loaded.
    #[error("cannot load the chat tokenizer: {0}")]
    Chat(String),
    /// A benchmark could not measure (the node did not answer as expected).
    #[error("benchmark failed: {0}")]
    Bench(String),
    /// The listen address is unusable.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
}

/// A running node.
pub struct RunningNode {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// How long loading the model took.
    pub load_time: Duration,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
}

impl RunningNode {
    /// Stops accepting requests, stops PoC generation after delivering its artifacts, and
    /// waits for everything to finish.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.server.await;
    }
}

/// Loads the model and starts serving.
pub async fn start(config: MlNodeConfig) -> Result<RunningNode, MlNodeError> {
    let started = std::time::Instant::now();
    let dir = config.model.clone();
    let dtype = config.dtype;
    let (devices, fp8) = (config.devices.clone(), config.fp8);
    let (model, chat) = tokio::task::spawn_blocking(move || -> Result<_, MlNodeError> {
        let ck = Checkpoint::open(&dir)?;
        let dtype = dtype.unwrap_or(ck.config().dtype);
        let mut opts = poc_model::LoadOptions::new(dtype, &poc_model::default_device());
        if !devices.is_empty() {
            opts.devices = devices;
        }
        opts.fp8 = fp8;
        let model = Qwen3Model::load_with(&ck, &opts)?;
        let chat = chat::ChatModel::load(&dir, &ck.config().eos_token_ids)
            .map_err(|e| MlNodeError::Chat(e.0))?;
        Ok((model, chat))
    })
    .await
    .expect("model loading does not panic")?;
    let load_time = started.elapsed();
    let engine = Arc::new(PocEngine::new(Arc::new(model)));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| MlNodeError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| MlNodeError::Listen {
            addr: config.listen,
            source,
        })?;
    let mut names = vec![config.model.to_string_lossy().into_owned()];
    names.extend(config.served_model_names.iter().cloned());
    let metrics = Arc::new(metrics::Metrics::default());
    let callbacks = callbacks::Callbacks::new(config.settings.clone(), Arc::clone(&metrics));
    let compute = compute::Compute::start(
        Arc::clone(&engine),
        Arc::clone(&metrics),
        config.settings.scheduler(),
    );
    let state = Arc::new(server::AppState {
        compute,
        engine,
        names,
        settings: config.settings.clone(),
        callbacks: Arc::clone(&callbacks),
        metrics,
        chat,
        port: addr.port(),
        jobs: Default::default(),
        queued_nonces: Default::default(),
        v1: Arc::new(v1::V1Service::new()),
    });
    let (shutdown, rx) = watch::channel(false);
    tokio::spawn(Arc::clone(&callbacks).run(rx.clone()));
    let v1_sender = Arc::clone(&state.v1);
    let v1_interval = config.settings.callback_interval;
    let mut v1_rx = rx.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(v1_interval) => v1_sender.send_pending().await,
                _ = v1_rx.changed() => return,
            }
        }
    });
    let evict_state = Arc::clone(&state);
    let mut evict_rx = rx.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(30)) => evict_state.evict_expired(),
                _ = evict_rx.changed() => return,
            }
        }
    });
    let app = server::router(Arc::clone(&state), config.body_limit);
    let http = config.http;
    let mut stop_rx = rx;
    let server = tokio::spawn(async move {
        let graceful = async move {
            let _ = stop_rx.changed().await;
        };
        if let Err(e) = poc_http::serve(listener, app, http, Arc::default(), None, graceful).await {
            tracing::error!("server not started: {e}");
        }
        state.stop_all().await;
        state.compute.shutdown();
    });
    Ok(RunningNode {
        addr,
        load_time,
        shutdown,
        server,
    })
}
