//! # poc-api: the participant's API node
//!
//! Drives the participant's ML nodes through PoC, keeps the artifacts (one crash-safe
//! store per stage), commits `(count, root)` and the per-node weight distribution to the
//! chain, serves Merkle proofs to validators, and validates every other participant.
//! `docs/protocol/chain-and-api.md` §6. Decisions are pure and apart from effects:
//! [`plan`] (what to start at each block), [`phase`] (what the chain's timeline allows),
//! [`timing`] (when to commit and vote), [`sampling`] and [`proofs`] (what to ask and
//! check). The shells carry them out: the chain tracker, the commit worker, the proof
//! server ([`server`]) and the [`validator`].

pub mod callbacks;
pub mod chainio;
mod commit;
pub mod config;
mod http;
pub mod mlnodes;
pub mod phase;
pub mod plan;
pub mod proofs;
pub mod sampling;
pub mod server;
pub mod timing;
mod tracker;
pub mod v1flow;
pub mod validator;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use poc_chain::api::BroadcastMode;
use poc_chain::keys::PrivateKey;
use poc_chain_client::ChainClient;
use poc_http::ServerStats;
use poc_store::StageStores;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::callbacks::{AllowList, CallbackTokens, Grant};
use crate::chainio::ChainIo;
use crate::commit::window_closed;
use crate::config::{ApiConfig, secs};
use crate::mlnodes::{Broker, GenerationSpec};
use crate::phase::ChainView;
use crate::timing::{BlockClock, VoteBatch, VoteQueue, Window};

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

/// The PoC v2 generation the ML nodes should be running: what to send to a node that
/// is not generating (restarted, or back after a failure) while the stage accepts
/// artifacts.
#[derive(Debug, Clone)]
struct GenerationPlan {
    /// The `init/generate` body (its `url` is set per node).
    spec: GenerationSpec,
    /// Last height at which the stage accepts artifacts.
    expires: i64,
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
    /// Counters.
    pub metrics: Metrics,
    /// Callback tokens issued to the ML nodes.
    pub tokens: CallbackTokens,
    /// Where callbacks are accepted from (the default list is resolved again with every
    /// health check, so an ML node that moved is let in).
    pub callback_allow: Arc<RwLock<AllowList>>,
    /// Connection counters of the public server.
    pub public_stats: Arc<ServerStats>,
    /// Connection counters of the ML callback server.
    pub callback_stats: Arc<ServerStats>,
    votes: Mutex<VoteQueue>,
    view: RwLock<Option<ChainView>>,
    clock: Mutex<BlockClock>,
    authz: Mutex<HashMap<String, (Instant, SignerSet)>>,
    limiter: Mutex<HashMap<IpAddr, (f64, Instant)>>,
    pub(crate) proof_http: reqwest::Client,
    commit: tokio::sync::Mutex<commit::CommitState>,
    triggers: Mutex<plan::Triggers>,
    generation: Mutex<Option<GenerationPlan>>,
    /// One pass of [`Shared::keep_generating`] at a time (validation takes it to stop
    /// the nodes).
    pub(crate) keeping: tokio::sync::Mutex<()>,
    /// Highest nonce stored per `(stage, ML node number)`: where a restarted node resumes.
    progress: Mutex<HashMap<(i64, u64), i32>>,
}

impl Shared {
    /// The latest chain view.
    pub fn view(&self) -> Option<ChainView> {
        self.view.read().expect("view lock").clone()
    }

    /// The block time observed on the chain.
    pub fn block_time(&self) -> Duration {
        self.clock.lock().expect("clock lock").block_time()
    }

    /// Votes waiting to be sent.
    pub fn pending_votes(&self) -> usize {
        self.votes.lock().expect("votes lock").len()
    }

    /// A callback base URL carrying a token for `grant`, valid through `expires`.
    pub fn callback_url(&self, grant: Grant, expires: i64) -> String {
        let family = match grant {
            Grant::Generation { .. } | Grant::Validation { .. } => "v2",
            Grant::V1Generation { .. } | Grant::V1Validation { .. } => "v1",
        };
        let token = self.tokens.issue(grant, expires);
        format!(
            "{}/cb/{token}/{family}/poc-batches",
            self.cfg.callback_base().trim_end_matches('/')
        )
    }

    /// Records the highest nonce stored from an ML node in a stage.
    pub(crate) fn note_progress(&self, stage: i64, node: u64, max_nonce: i32) {
        let mut p = self.progress.lock().expect("progress lock");
        let e = p.entry((stage, node)).or_insert(max_nonce);
        *e = (*e).max(max_nonce);
    }

    /// Queues a vote on `participant` for `stage` (whose votes the chain accepts inside
    /// `window`) and sends what is due, in the background (a verdict callback is answered
    /// without waiting for the chain).
    pub fn vote(self: &Arc<Self>, stage: i64, window: Window, participant: String, weight: i64) {
        self.votes.lock().expect("votes lock").push(
            stage,
            window,
            participant,
            weight,
            Instant::now(),
        );
        let st = Arc::clone(self);
        tokio::spawn(async move { st.flush_votes(false).await });
    }

    /// Sends the pending votes when due (or all of them with `force`): one
    /// `MsgSubmitPocValidationsV2` per stage, each in its own transaction, retried once
    /// while the window is open. Votes whose window has closed are dropped and logged.
    pub async fn flush_votes(&self, force: bool) {
        let height = self.view().map_or(0, |v| v.height);
        let bt = self.block_time();
        let flush = {
            let mut q = self.votes.lock().expect("votes lock");
            if !force && !q.due(Instant::now(), height, bt) {
                return;
            }
            q.take(height, &self.io.address)
        };
        for (stage, n) in flush.expired {
            self.metrics.add("poc_votes_missed_window_total", n as u64);
            tracing::error!(
                stage,
                votes = n,
                height,
                "votes missed the validation window and were dropped: they will not count"
            );
        }
        for batch in flush.send {
            self.send_votes(batch).await;
        }
    }

    async fn send_votes(&self, batch: VoteBatch) {
        let VoteBatch {
            stage,
            votes: n,
            window,
            msg,
        } = batch;
        for attempt in 1..=2 {
            let height = self.view().map_or(0, |v| v.height);
            let deadline = Instant::now() + window.time_left(height, self.block_time());
            let why = match self
                .io
                .send_exec_before(vec![msg.clone()], BroadcastMode::Sync, Some(deadline))
                .await
            {
                Ok(r) if r.result.code == 0 => {
                    self.metrics.add("poc_votes_sent_total", n as u64);
                    tracing::info!(stage, votes = n, txhash = %r.result.txhash, "votes submitted");
                    return;
                }
                Ok(r) if window_closed(&r) => {
                    self.metrics.add("poc_votes_missed_window_total", n as u64);
                    tracing::error!(
                        stage,
                        votes = n,
                        window_end = window.end,
                        "votes missed the validation window ({} {}): {}",
                        r.result.codespace,
                        r.result.code,
                        r.result.raw_log
                    );
                    return;
                }
                Ok(r) => format!(
                    "rejected ({} {}): {}",
                    r.result.codespace, r.result.code, r.result.raw_log
                ),
                Err(e) => format!("not sent: {e}"),
            };
            let height = self.view().map_or(0, |v| v.height);
            if attempt == 1 && window.open_at(height) {
                tracing::warn!(stage, votes = n, "votes {why}; retrying once");
                continue;
            }
            self.metrics.add("poc_votes_rejected_total", n as u64);
            tracing::error!(stage, votes = n, "votes {why}; they will not count");
        }
    }

    async fn block_hash(&self, h: i64) -> Option<String> {
        let b = self.io.client.block(h).await.ok().flatten()?;
        b["block_id"]["hash"].as_str().map(str::to_owned)
    }

    /// Sets the generation the ML nodes should run and starts it where it is not running.
    async fn start_generation(self: &Arc<Self>, spec: GenerationSpec, expires: i64) {
        let stage = spec.block_height;
        *self.generation.lock().expect("generation lock") = Some(GenerationPlan { spec, expires });
        let n = self.keep_generating_now(self.keeping.lock().await).await;
        tracing::info!(stage, nodes = n, "PoC generation started");
    }

    /// Forgets the generation plan (validation begins: the ML nodes are stopped).
    pub(crate) fn end_generation(&self) {
        *self.generation.lock().expect("generation lock") = None;
    }

    /// Makes every reachable ML node run the current generation plan, while its stage
    /// still accepts artifacts: a node that restarted, or came back after a failure, or
    /// was down when the stage began, is started again and resumes after the highest
    /// nonce stored from it. Returns how many nodes generate.
    pub async fn keep_generating(&self) -> usize {
        match self.keeping.try_lock() {
            Ok(one) => self.keep_generating_now(one).await,
            // A pass is running already.
            Err(_) => 0,
        }
    }

    async fn keep_generating_now(&self, _one: tokio::sync::MutexGuard<'_, ()>) -> usize {
        let Some(plan) = self.generation.lock().expect("generation lock").clone() else {
            return 0;
        };
        let stage = plan.spec.block_height;
        let Some(v) = self.view() else { return 0 };
        if v.height > plan.expires {
            self.end_generation();
            return 0;
        }
        if !(v.accept_generated() && v.current_stage().height() == stage) {
            return 0;
        }
        let starts = self.broker.nodes().iter().map(|n| {
            let mut spec = plan.spec.clone();
            spec.url = self.callback_url(
                Grant::Generation {
                    stage,
                    node: n.number,
                },
                plan.expires,
            );
            let resume = self
                .progress
                .lock()
                .expect("progress lock")
                .get(&(stage, n.number))
                .map(|m| i64::from(*m) + 1);
            let was_usable = n.usable();
            async move {
                match self.broker.start_one(n, &spec, resume).await {
                    Ok(started) => {
                        if started {
                            self.metrics.add("poc_generation_starts_total", 1);
                            tracing::info!(node = %n.id, stage, resume_from = ?resume, "PoC generation started on the ML node");
                        }
                        true
                    }
                    Err(e) => {
                        if was_usable {
                            tracing::warn!(node = %n.id, stage, "cannot start PoC generation: {e}");
                        }
                        false
                    }
                }
            }
        });
        futures_util::future::join_all(starts)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count()
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
        self.shared.flush_votes(true).await;
        self.shared.end_generation();
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

/// The default callback allow-list: loopback and the addresses the ML nodes' hosts
/// resolve to now.
async fn default_allow_list(cfg: &ApiConfig) -> AllowList {
    let mut addrs = Vec::new();
    for n in &cfg.ml_nodes {
        let Ok(url) = reqwest::Url::parse(&n.url) else {
            continue;
        };
        let Some(host) = url.host_str() else { continue };
        let host = host.trim_matches(|c| c == '[' || c == ']');
        match tokio::net::lookup_host((host, url.port_or_known_default().unwrap_or(80))).await {
            Ok(found) => addrs.extend(found.map(|a| a.ip())),
            Err(e) => tracing::warn!(
                node = %n.id,
                "cannot resolve {host} ({e}): its callbacks will be refused unless callback_allow lists it"
            ),
        }
    }
    AllowList::loopback_and(addrs)
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
    let callback_allow = if cfg.callback_allow.is_empty() {
        default_allow_list(&cfg).await
    } else {
        AllowList::parse(&cfg.callback_allow).map_err(ApiError::Config)?
    };
    let tokens = CallbackTokens::open(&cfg.data_dir).map_err(ApiError::Config)?;
    let client = ChainClient::new(&cfg.chain_url);
    let shared = Arc::new(Shared {
        io: ChainIo::new(client, account, operational.clone()),
        operational_key: operational,
        stores,
        broker: Broker::new(&cfg.ml_nodes),
        votes: Mutex::new(VoteQueue::new(
            cfg.validation.flush_size,
            secs(cfg.validation.flush_timeout_s),
        )),
        metrics: Metrics::default(),
        tokens,
        callback_allow: Arc::new(RwLock::new(callback_allow)),
        public_stats: Arc::default(),
        callback_stats: Arc::default(),
        view: RwLock::new(None),
        clock: Mutex::new(BlockClock::default()),
        authz: Mutex::new(HashMap::new()),
        limiter: Mutex::new(HashMap::new()),
        proof_http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(secs(cfg.validation.request_timeout_s))
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .expect("HTTP client builds"),
        commit: tokio::sync::Mutex::new(commit::CommitState::default()),
        triggers: Mutex::new(plan::Triggers::default()),
        generation: Mutex::new(None),
        keeping: tokio::sync::Mutex::new(()),
        progress: Mutex::new(HashMap::new()),
        cfg,
    });
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    tasks.push(poc_http::spawn(
        public,
        server::public_router(Arc::clone(&shared)),
        shared.cfg.http,
        Arc::clone(&shared.public_stats),
        None,
        stopped(stop_rx.clone()),
    ));
    // Connections to the callback server from addresses outside the allow-list are
    // closed before anything is read.
    let allowed: poc_http::AcceptFilter = {
        let st = Arc::clone(&shared);
        Arc::new(move |ip| {
            let ok = st.callback_allow.read().expect("allow lock").allows(ip);
            if !ok {
                st.metrics.add("poc_callbacks_refused_total", 1);
            }
            ok
        })
    };
    tasks.push(poc_http::spawn(
        ml,
        server::callback_router(Arc::clone(&shared)),
        shared.cfg.http,
        Arc::clone(&shared.callback_stats),
        Some(allowed),
        stopped(stop_rx.clone()),
    ));
    tasks.push(tokio::spawn(tracker::tracker(
        Arc::clone(&shared),
        stop_rx.clone(),
    )));
    // Commits and votes are checked often; whether to send is decided from the chain's
    // timing (`timing`).
    tasks.push(tokio::spawn(periodic(
        Arc::clone(&shared),
        stop_rx.clone(),
        Duration::from_millis(200),
        |st| {
            Box::pin(async move {
                st.commit_tick().await;
                st.flush_votes(false).await;
            })
        },
    )));
    tasks.push(tokio::spawn(periodic(
        Arc::clone(&shared),
        stop_rx.clone(),
        secs(shared.cfg.commit_interval_s),
        |st| {
            Box::pin(async move {
                let s = Arc::clone(&st);
                let _ = tokio::task::spawn_blocking(move || {
                    for (h, r) in s.stores.flush_all() {
                        if let Err(e) = r {
                            tracing::error!(stage = h, "flush failed: {e}");
                        }
                    }
                })
                .await;
            })
        },
    )));
    tasks.push(tokio::spawn(periodic(
        Arc::clone(&shared),
        stop_rx.clone(),
        secs(shared.cfg.health_interval_s),
        |st| {
            Box::pin(async move {
                st.broker.check_health().await;
                if st.cfg.callback_allow.is_empty() {
                    let fresh = default_allow_list(&st.cfg).await;
                    *st.callback_allow.write().expect("allow lock") = fresh;
                }
            })
        },
    )));
    // While a stage accepts artifacts, every ML node is kept generating.
    tasks.push(tokio::spawn(periodic(
        Arc::clone(&shared),
        stop_rx.clone(),
        secs(shared.cfg.health_interval_s.min(1.0)),
        |st| {
            Box::pin(async move {
                st.keep_generating().await;
            })
        },
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

type Tick = fn(Arc<Shared>) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

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
