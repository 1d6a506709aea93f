//! Starting and stopping the node: keys, stores, listeners, the servers and the periodic tasks.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use poc_chain::keys::PrivateKey;
use poc_chain_client::ChainClient;
use poc_store::StageStores;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::callbacks::{AllowList, CallbackTokens};
use crate::chainio::ChainIo;
use crate::config::{ApiConfig, ConfigError, secs};
use crate::metrics::Count;
use crate::mlnodes::Broker;
use crate::signers::SignerCache;
use crate::timing::{BlockClock, VoteQueue};
use crate::{ApiError, ApiNode, Metrics, commit, generation, server, tracker};

/// A running API node.
pub struct RunningApi {
    /// Public server address.
    pub public_addr: SocketAddr,
    /// ML callback server address.
    pub ml_addr: SocketAddr,
    /// ApiNode state.
    pub shared: Arc<ApiNode>,
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
    cfg.validate()?;
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
        AllowList::parse(&cfg.callback_allow).map_err(ConfigError::from)?
    };
    let tokens = CallbackTokens::open(&cfg.data_dir)?;
    let client = match &cfg.chain_rpc_url {
        Some(rpc) => ChainClient::new(&cfg.chain_url).with_rpc(rpc),
        None => ChainClient::new(&cfg.chain_url),
    };
    let shared = Arc::new(ApiNode {
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
        signers: SignerCache::default(),
        limiter: server::ProofLimiter::new(cfg.proof_rate_per_sec, cfg.proof_rate_burst),
        proof_http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(secs(cfg.validation.request_timeout_s))
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .expect("HTTP client builds"),
        generation: generation::Keeper::default(),
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
                st.metrics.add(Count::CallbacksRefused, 1);
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
    tasks.push(tokio::spawn(commit::worker(
        Arc::clone(&shared),
        stop_rx.clone(),
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

type Tick = fn(Arc<ApiNode>) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

async fn periodic(st: Arc<ApiNode>, mut stop: watch::Receiver<bool>, every: Duration, f: Tick) {
    let mut iv = tokio::time::interval(every);
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = iv.tick() => f(Arc::clone(&st)).await,
        }
    }
}
