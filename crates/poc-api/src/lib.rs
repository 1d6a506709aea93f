//! # poc-api: the participant's API node
//!
//! Drives the participant's ML nodes through PoC, keeps the artifacts (one crash-safe
//! store per stage), commits `(count, root)` and the per-node weight distribution to the
//! chain, serves Merkle proofs to validators, and validates every other participant.
//! `chain-and-api.md` §6; the pure parts live in [`sampling`], [`proofs`] and [`phase`].

pub mod chainio;
pub mod config;
pub mod mlnodes;
pub mod phase;
pub mod proofs;
pub mod sampling;
pub mod server;
pub mod v1flow;
pub mod validator;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use poc_chain::api::BroadcastMode;
use poc_chain::confirmation::ConfirmationPhase;
use poc_chain::epoch::Phase;
use poc_chain::msgs::{MlNodeWeight, Msg};
use poc_chain::tx::PrivateKey;
use poc_chain_client::ChainClient;
use poc_store::StageStores;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::chainio::{ChainIo, VoteBatcher};
use crate::config::{ApiConfig, secs};
use crate::mlnodes::{Broker, GenerationSpec};
use crate::phase::{ChainView, scale_distribution};
use crate::validator::StageJob;

/// Errors starting the node.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bad configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// Cannot open the data directory.
    #[error("artifact stores in {dir}: {msg}")]
    Stores {
        /// Directory.
        dir: String,
        /// Why.
        msg: String,
    },
    /// Cannot listen.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
}

/// Prometheus counters.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// Adds to a counter.
    pub fn add(&self, name: &'static str, v: u64) {
        *self
            .counters
            .lock()
            .expect("metrics lock")
            .entry(name)
            .or_default() += v;
    }

    /// A counter's value.
    pub fn get(&self, name: &str) -> u64 {
        self.counters
            .lock()
            .expect("metrics lock")
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for (k, v) in self.counters.lock().expect("metrics lock").iter() {
            s.push_str(&format!("# TYPE {k} counter\n{k} {v}\n"));
        }
        s
    }
}

/// Commit worker memory.
#[derive(Debug, Default)]
struct CommitState {
    stage: i64,
    last_committed: u64,
    distribution_attempt: Option<Instant>,
    distributed: bool,
}

/// Sets `slot` to `v` and says whether it was something else (a one-shot trigger).
fn first_time<T: PartialEq + Copy>(slot: &mut Option<T>, v: T) -> bool {
    if *slot == Some(v) {
        return false;
    }
    *slot = Some(v);
    true
}

/// Which PoC steps were already triggered.
#[derive(Debug, Default)]
struct Triggers {
    generation: Option<i64>,
    validation: Option<i64>,
    conf_generation: Option<i64>,
    conf_validation: Option<i64>,
    seed: Option<u64>,
}

/// Keys allowed to sign for an account: `(address, compressed key)`.
pub type SignerSet = Vec<(String, Vec<u8>)>;

/// Everything the tasks and handlers share.
pub struct Shared {
    /// Configuration.
    pub cfg: ApiConfig,
    /// Chain access and keys.
    pub io: ChainIo,
    /// The operational key (signs proof requests and responses).
    pub operational_key: PrivateKey,
    /// Artifact stores.
    pub stores: StageStores,
    /// ML nodes.
    pub broker: Broker,
    /// Pending votes.
    pub votes: VoteBatcher,
    /// Counters.
    pub metrics: Metrics,
    view: RwLock<Option<ChainView>>,
    authz: Mutex<HashMap<String, (Instant, SignerSet)>>,
    limiter: Mutex<HashMap<IpAddr, (f64, Instant)>>,
    pub(crate) proof_http: reqwest::Client,
    commit: tokio::sync::Mutex<CommitState>,
    triggers: Mutex<Triggers>,
}

impl Shared {
    /// The latest chain view.
    pub fn view(&self) -> Option<ChainView> {
        self.view.read().expect("view lock").clone()
    }

    /// Queues a vote and flushes when due.
    pub async fn vote(self: &Arc<Self>, stage: i64, participant: String, weight: i64) {
        if self.votes.push(stage, participant, weight).await {
            self.flush_votes().await;
        }
    }

    /// Sends every pending vote (one message per stage height, one transaction).
    pub async fn flush_votes(&self) {
        let msgs = self.votes.take(&self.io.address).await;
        if msgs.is_empty() {
            return;
        }
        let n: usize = msgs
            .iter()
            .map(|m| {
                if let Msg::SubmitPocValidationsV2 { validations, .. } = m {
                    validations.len()
                } else {
                    0
                }
            })
            .sum();
        match self.io.send_exec(msgs, BroadcastMode::Sync).await {
            Ok(r) if r.result.code == 0 => {
                self.metrics.add("poc_votes_sent_total", n as u64);
                tracing::info!(votes = n, txhash = %r.result.txhash, "votes submitted");
            }
            Ok(r) => tracing::error!(
                votes = n,
                "votes rejected ({} {}): {}",
                r.result.codespace,
                r.result.code,
                r.result.raw_log
            ),
            Err(e) => tracing::error!(votes = n, "votes could not be sent: {e}"),
        }
    }

    async fn block_hash(&self, h: i64) -> Option<String> {
        let b = self.io.client.block(h).await.ok().flatten()?;
        b["block_id"]["hash"].as_str().map(str::to_owned)
    }

    /// Reacts to a new chain view: seeds, generation start, validation start, for regular
    /// and confirmation PoC.
    async fn on_view(self: &Arc<Self>, v: &ChainView) {
        let ctx = v.latest_ctx();
        let info = &v.info;
        let upcoming = info.latest_epoch.index > info.effective_epoch.index;
        let s = ctx.start_of_poc();
        let phase = v.phase();
        let pp = &info.params.poc_params;
        if upcoming
            && matches!(
                phase,
                Phase::PoCGenerate
                    | Phase::PoCGenerateWindDown
                    | Phase::PoCValidate
                    | Phase::PoCValidateWindDown
            )
        {
            let epoch = info.latest_epoch.index;
            let send = first_time(&mut self.triggers.lock().expect("triggers").seed, epoch);
            if send {
                let seed = Msg::SubmitSeed {
                    creator: self.io.address.clone(),
                    epoch_index: epoch,
                    signature: self.io.seed_for(epoch),
                };
                match self.io.send_exec(vec![seed], BroadcastMode::Sync).await {
                    Ok(r) if r.result.code == 0 => tracing::info!(epoch, "seed submitted"),
                    Ok(r) => tracing::warn!(epoch, "seed rejected: {}", r.result.raw_log),
                    Err(e) => {
                        tracing::warn!(epoch, "seed not sent: {e}");
                        self.triggers.lock().expect("triggers").seed = None;
                    }
                }
            }
        }
        if !v.should_use_v2() {
            self.on_view_v1(v, upcoming, s, phase).await;
            return;
        }
        // Regular PoC.
        if upcoming
            && matches!(phase, Phase::PoCGenerate | Phase::PoCGenerateWindDown)
            && v.accept_generated()
        {
            let go = first_time(&mut self.triggers.lock().expect("triggers").generation, s);
            if go {
                match self.block_hash(s).await {
                    Some(hash) => {
                        let spec = GenerationSpec {
                            block_hash: hash,
                            block_height: s,
                            public_key: self.io.account_hex.clone(),
                            model: pp.model_id.clone(),
                            seq_len: pp.seq_len,
                            url: format!("{}/v2/poc-batches", self.cfg.callback_base()),
                        };
                        let n = self.broker.start_generation(&spec).await;
                        tracing::info!(stage = s, nodes = n, "PoC generation started");
                    }
                    None => self.triggers.lock().expect("triggers").generation = None,
                }
            }
        }
        if upcoming && matches!(phase, Phase::PoCValidate | Phase::PoCValidateWindDown) {
            let go = first_time(&mut self.triggers.lock().expect("triggers").validation, s);
            if go {
                let (seed, sampling) = (
                    self.block_hash(s).await,
                    self.block_hash(ctx.start_of_poc_validation()).await,
                );
                match (seed, sampling) {
                    (Some(seed_hash), Some(sampling_hash)) => {
                        let job = StageJob {
                            stage: s,
                            seed_hash,
                            sampling_hash,
                        };
                        tokio::spawn(validator::validate_stage(Arc::clone(self), job));
                    }
                    _ => self.triggers.lock().expect("triggers").validation = None,
                }
            }
        }
        // Confirmation PoC.
        if let Some(e) = v.event().cloned() {
            let ep = &info.params.epoch_params;
            let t_h = e.trigger_height;
            if e.phase == ConfirmationPhase::Generation && e.in_batch_window(v.height, ep) {
                let go = first_time(
                    &mut self.triggers.lock().expect("triggers").conf_generation,
                    t_h,
                );
                if go {
                    let spec = GenerationSpec {
                        block_hash: e.poc_seed_block_hash.clone(),
                        block_height: t_h,
                        public_key: self.io.account_hex.clone(),
                        model: pp.model_id.clone(),
                        seq_len: pp.seq_len,
                        url: format!("{}/v2/poc-batches", self.cfg.callback_base()),
                    };
                    let n = self.broker.start_generation(&spec).await;
                    tracing::info!(
                        stage = t_h,
                        nodes = n,
                        "confirmation PoC generation started"
                    );
                }
            }
            if e.phase == ConfirmationPhase::Validation {
                let go = first_time(
                    &mut self.triggers.lock().expect("triggers").conf_validation,
                    t_h,
                );
                if go {
                    match self.block_hash(e.validation_start(ep)).await {
                        Some(sampling_hash) => {
                            let job = StageJob {
                                stage: t_h,
                                seed_hash: e.poc_seed_block_hash.clone(),
                                sampling_hash,
                            };
                            tokio::spawn(validator::validate_stage(Arc::clone(self), job));
                        }
                        None => self.triggers.lock().expect("triggers").conf_validation = None,
                    }
                }
            }
        }
    }

    /// The v1 flow's triggers (regular PoC and v1 confirmation events).
    async fn on_view_v1(self: &Arc<Self>, v: &ChainView, upcoming: bool, s: i64, phase: Phase) {
        let ctx = v.latest_ctx();
        if upcoming
            && v.accept_generated()
            && matches!(phase, Phase::PoCGenerate | Phase::PoCGenerateWindDown)
        {
            let go = first_time(&mut self.triggers.lock().expect("triggers").generation, s);
            if go {
                match self.block_hash(s).await {
                    Some(hash) => self.v1_start_generation(&hash, s).await,
                    None => self.triggers.lock().expect("triggers").generation = None,
                }
            }
        }
        if upcoming
            && matches!(phase, Phase::PoCValidate | Phase::PoCValidateWindDown)
            && v.height > ctx.start_of_poc_validation()
        {
            let go = first_time(&mut self.triggers.lock().expect("triggers").validation, s);
            if go {
                match (
                    self.block_hash(s).await,
                    self.block_hash(ctx.start_of_poc_validation()).await,
                ) {
                    (Some(seed), Some(sampling)) => {
                        tokio::spawn(Arc::clone(self).v1_validate_stage(s, seed, sampling));
                    }
                    _ => self.triggers.lock().expect("triggers").validation = None,
                }
            }
        }
        if let Some(e) = v.event().cloned() {
            let ep = &v.info.params.epoch_params;
            let t_h = e.trigger_height;
            if e.phase == ConfirmationPhase::Generation && e.in_batch_window(v.height, ep) {
                let go = first_time(
                    &mut self.triggers.lock().expect("triggers").conf_generation,
                    t_h,
                );
                if go {
                    self.v1_start_generation(&e.poc_seed_block_hash, t_h).await;
                }
            }
            if e.phase == ConfirmationPhase::Validation {
                let go = first_time(
                    &mut self.triggers.lock().expect("triggers").conf_validation,
                    t_h,
                );
                if go {
                    match self.block_hash(e.validation_start(ep)).await {
                        Some(sampling) => {
                            tokio::spawn(Arc::clone(self).v1_validate_stage(
                                t_h,
                                e.poc_seed_block_hash.clone(),
                                sampling,
                            ));
                        }
                        None => self.triggers.lock().expect("triggers").conf_validation = None,
                    }
                }
            }
        }
    }

    /// One commit-worker tick (§6.6): flush, commit the flushed `(count, root)` while the
    /// chain accepts it and the count grew, then the weight distribution when due.
    pub async fn commit_tick(self: &Arc<Self>) {
        let st = Arc::clone(self);
        let _ = tokio::task::spawn_blocking(move || {
            for (h, r) in st.stores.flush_all() {
                if let Err(e) = r {
                    tracing::error!(stage = h, "flush failed: {e}");
                }
            }
        })
        .await;
        let Some(v) = self.view() else { return };
        if !v.should_use_v2() {
            return;
        }
        let stage = v.current_stage().height();
        let mut cs = self.commit.lock().await;
        if cs.stage != stage {
            *cs = CommitState {
                stage,
                ..CommitState::default()
            };
        }
        let Ok(store) = self.stores.get(stage as u64) else {
            return;
        };
        if v.accept_store_commit(stage) {
            let snap = store.flushed();
            if let (Some(root), true) =
                (snap.root, snap.count > 0 && snap.count != cs.last_committed)
            {
                let count = u32::try_from(snap.count).unwrap_or(u32::MAX);
                let msg = Msg::PocV2StoreCommit {
                    creator: self.io.address.clone(),
                    poc_stage_start_block_height: stage,
                    count,
                    root_hash: root.to_vec(),
                };
                match self.io.send_exec(vec![msg], BroadcastMode::Sync).await {
                    Ok(r) if r.result.code == 0 => {
                        cs.last_committed = snap.count;
                        self.metrics.add("poc_commits_sent_total", 1);
                        tracing::info!(stage, count, "store commit sent");
                    }
                    Ok(r) => tracing::warn!(
                        stage,
                        count,
                        "store commit rejected ({} {}): {}",
                        r.result.codespace,
                        r.result.code,
                        r.result.raw_log
                    ),
                    Err(e) => tracing::warn!(stage, count, "store commit not sent: {e}"),
                }
            }
        }
        if v.should_distribute()
            && !cs.distributed
            && cs
                .distribution_attempt
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(30))
        {
            cs.distribution_attempt = Some(Instant::now());
            if let Err(e) = self.distribute(stage, &store).await {
                tracing::warn!(stage, "weight distribution: {e}");
            } else {
                cs.distributed = true;
            }
        }
    }

    async fn distribute(
        &self,
        stage: i64,
        store: &Arc<poc_store::ArtifactStore>,
    ) -> Result<(), String> {
        let c = &self.io.client;
        if c.distribution(stage, &self.io.address)
            .await
            .map_err(|e| e.to_string())?
            .found
        {
            return Ok(());
        }
        let commit = c
            .store_commit(stage, &self.io.address)
            .await
            .map_err(|e| e.to_string())?;
        if !commit.found || commit.count == 0 {
            return Err("no store commit on chain".into());
        }
        let s2 = Arc::clone(store);
        let counts =
            tokio::task::spawn_blocking(move || s2.flush().map(|_| s2.flushed_node_counts()))
                .await
                .expect("flush does not panic")
                .map_err(|e| e.to_string())?;
        let weights = scale_distribution(&counts, commit.count);
        if weights.is_empty() {
            return Err("no per-node counts in the store".into());
        }
        let msg = Msg::MlNodeWeightDistribution {
            creator: self.io.address.clone(),
            poc_stage_start_block_height: stage,
            weights: weights
                .into_iter()
                .map(|(node_id, weight)| MlNodeWeight { node_id, weight })
                .collect(),
        };
        let r = self
            .io
            .send_exec(vec![msg], BroadcastMode::Block)
            .await
            .map_err(|e| e.to_string())?;
        if r.result.code != 0 {
            return Err(format!(
                "rejected ({} {}): {}",
                r.result.codespace, r.result.code, r.result.raw_log
            ));
        }
        self.metrics.add("poc_distributions_sent_total", 1);
        tracing::info!(stage, count = commit.count, "weight distribution sent");
        Ok(())
    }
}

/// A running API node.
pub struct RunningApi {
    /// Public server address.
    pub public_addr: SocketAddr,
    /// ML callback server address.
    pub ml_addr: SocketAddr,
    /// Shared state.
    pub shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningApi {
    /// Stops the loops and servers, sends pending votes, stops generation and flushes
    /// every store.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.shared.flush_votes().await;
        self.shared.broker.stop_all().await;
        let st = Arc::clone(&self.shared);
        let _ = tokio::task::spawn_blocking(move || st.stores.flush_all()).await;
    }
}

fn load_key(path: &std::path::Path, what: &str) -> Result<PrivateKey, ApiError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ApiError::Config(format!(
            "cannot read the {what} key {}: {e} (create one with `poc keys new --out FILE`)",
            path.display()
        ))
    })?;
    PrivateKey::from_hex(&text)
        .map_err(|e| ApiError::Config(format!("{what} key {}: {e}", path.display())))
}

/// Starts the node.
pub async fn start(cfg: ApiConfig) -> Result<RunningApi, ApiError> {
    cfg.validate().map_err(ApiError::Config)?;
    let account = load_key(&cfg.account_key, "account")?;
    let operational = load_key(&cfg.operational_key, "operational")?;
    if account.address() == operational.address() {
        return Err(ApiError::Config(
            "account_key and operational_key must be different keys".into(),
        ));
    }
    let stores =
        StageStores::new(&cfg.data_dir, cfg.keep_stages).map_err(|e| ApiError::Stores {
            dir: cfg.data_dir.display().to_string(),
            msg: e.to_string(),
        })?;
    let public = tokio::net::TcpListener::bind(cfg.public_listen)
        .await
        .map_err(|source| ApiError::Listen {
            addr: cfg.public_listen,
            source,
        })?;
    let ml = tokio::net::TcpListener::bind(cfg.ml_listen)
        .await
        .map_err(|source| ApiError::Listen {
            addr: cfg.ml_listen,
            source,
        })?;
    let public_addr = public.local_addr().map_err(|source| ApiError::Listen {
        addr: cfg.public_listen,
        source,
    })?;
    let ml_addr = ml.local_addr().map_err(|source| ApiError::Listen {
        addr: cfg.ml_listen,
        source,
    })?;
    let mut cfg = cfg;
    if cfg.callback_url.is_none() {
        cfg.callback_url = Some(format!("http://{ml_addr}"));
    }
    let client = ChainClient::new(&cfg.chain_url);
    let shared = Arc::new(Shared {
        io: ChainIo::new(client, account, operational.clone()),
        operational_key: operational,
        stores,
        broker: Broker::new(&cfg.ml_nodes),
        votes: VoteBatcher::new(
            cfg.validation.flush_size,
            secs(cfg.validation.flush_timeout_s),
        ),
        metrics: Metrics::default(),
        view: RwLock::new(None),
        authz: Mutex::new(HashMap::new()),
        limiter: Mutex::new(HashMap::new()),
        proof_http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(secs(cfg.validation.request_timeout_s))
            .build()
            .expect("HTTP client builds"),
        commit: tokio::sync::Mutex::new(CommitState::default()),
        triggers: Mutex::new(Triggers::default()),
        cfg,
    });
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let serve =
        |listener: tokio::net::TcpListener, app: axum::Router, mut rx: watch::Receiver<bool>| {
            tokio::spawn(async move {
                let _ = axum::serve(
                    listener,
                    app.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|v| *v).await;
                })
                .await;
            })
        };
    tasks.push(serve(
        public,
        server::public_router(Arc::clone(&shared)),
        stop_rx.clone(),
    ));
    tasks.push(serve(
        ml,
        server::callback_router(Arc::clone(&shared)),
        stop_rx.clone(),
    ));
    tasks.push(tokio::spawn(tracker(Arc::clone(&shared), stop_rx.clone())));
    tasks.push(tokio::spawn(periodic(
        Arc::clone(&shared),
        stop_rx.clone(),
        secs(shared.cfg.commit_interval_s),
        |st| Box::pin(async move { st.commit_tick().await }),
    )));
    tasks.push(tokio::spawn(periodic(
        Arc::clone(&shared),
        stop_rx.clone(),
        Duration::from_millis(500),
        |st| {
            Box::pin(async move {
                if st.votes.due().await {
                    st.flush_votes().await;
                }
            })
        },
    )));
    tasks.push(tokio::spawn(periodic(
        Arc::clone(&shared),
        stop_rx.clone(),
        secs(shared.cfg.health_interval_s),
        |st| Box::pin(async move { st.broker.check_health().await }),
    )));
    tasks.push(tokio::spawn(periodic(
        Arc::clone(&shared),
        stop_rx,
        Duration::from_secs(30),
        |st| {
            Box::pin(async move {
                let s = Arc::clone(&st);
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.stores.prune()).await {
                    tracing::warn!("pruning old stages failed: {e}");
                }
            })
        },
    )));
    tracing::info!(%public_addr, %ml_addr, address = %shared.io.address, "API node started");
    Ok(RunningApi {
        public_addr,
        ml_addr,
        shared,
        stop,
        tasks,
    })
}

type Tick = fn(Arc<Shared>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

async fn periodic(st: Arc<Shared>, mut stop: watch::Receiver<bool>, every: Duration, f: Tick) {
    let mut iv = tokio::time::interval(every);
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = iv.tick() => f(Arc::clone(&st)).await,
        }
    }
}

/// Follows the chain: registration first, then a new view on every new height.
async fn tracker(st: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let poll = secs(st.cfg.chain_poll_s);
    loop {
        match st.io.ensure_setup(&st.cfg.public_url).await {
            Ok(()) => break,
            Err(e) => tracing::warn!("chain setup (registration, grants) failed: {e}; retrying"),
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
    st.broker.check_health().await;
    let mut last = -1;
    loop {
        if let Ok(s) = st.io.client.status().await
            && s.height != last
            && let Ok(info) = st.io.client.epoch_info().await
        {
            last = s.height;
            let v = ChainView {
                height: info.block_height,
                hash: s.hash,
                info,
            };
            *st.view.write().expect("view lock") = Some(v.clone());
            st.on_view(&v).await;
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(poll) => {}
        }
    }
}
