//! A validator on real TCP: commonware's tokio runtime on its own thread, the
//! authenticated `lookup` p2p network (encrypted, peers identified by their ed25519
//! keys at configured addresses), the simplex engine and the application. The REST
//! server keeps running on the caller's runtime and shares the chain head with it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use commonware_cryptography::{ChaCha20Poly1305, Signer};
use commonware_p2p::authenticated::lookup;
use commonware_p2p::{Address, AddressableManager};
use commonware_runtime::{Runner, Spawner, Supervisor};
use commonware_stream::{cups, sake};
use commonware_utils::NZUsize;
use commonware_utils::ordered::Map;
use poc_chain_node::ChainServices;

use crate::app::PublicKey;
use crate::codec::MAX_MESSAGE_BYTES;
use crate::validator::{self, ValidatorConfig, channel_quota};

/// Where a validator listens and how to reach the others.
#[derive(Clone)]
pub struct NetConfig {
    /// p2p listen address.
    pub listen: SocketAddr,
    /// Every other validator's key and p2p address.
    pub peers: Vec<(PublicKey, SocketAddr)>,
    /// Directory of the consensus journal.
    pub storage: PathBuf,
    /// The validator itself.
    pub validator: ValidatorConfig,
}

/// Why the network cannot start.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The validator refuses to start.
    #[error(transparent)]
    Start(#[from] validator::StartError),
    /// A peer is listed twice, or is this node.
    #[error("peer {0} is listed twice (or is this node's own key); list each other validator once")]
    DuplicatePeer(String),
    /// A peer's key is not a validator.
    #[error("peer {0} is not in the genesis consensus_validators")]
    UnknownPeer(String),
    /// The consensus thread.
    #[error("cannot start the consensus thread: {0}")]
    Thread(std::io::Error),
}

/// A running replicated validator.
pub struct NetNode {
    thread: Option<std::thread::JoinHandle<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl NetNode {
    /// Stops consensus (the runtime waits up to 5 s for its tasks) and joins the thread.
    /// Blocking: call it from a blocking context.
    pub fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for NetNode {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Starts a validator on its own thread.
pub fn spawn(services: Arc<ChainServices>, cfg: NetConfig) -> Result<NetNode, NetError> {
    let me = cfg.validator.signer.public_key();
    let mut seen = std::collections::BTreeSet::new();
    seen.insert(me.clone());
    for (k, _) in &cfg.peers {
        let hex_key = hex::encode(k.as_ref());
        if !seen.insert(k.clone()) {
            return Err(NetError::DuplicatePeer(hex_key));
        }
        if !cfg.validator.validators.contains(k) {
            return Err(NetError::UnknownPeer(hex_key));
        }
    }
    if !cfg.validator.validators.contains(&me) {
        return Err(validator::StartError::NotAValidator(hex::encode(me.as_ref())).into());
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), NetError>>();
    let thread = std::thread::Builder::new()
        .name("consensus".into())
        .spawn(move || run(services, cfg, stop_rx, ready_tx))
        .map_err(NetError::Thread)?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(NetNode {
            thread: Some(thread),
            stop: Some(stop_tx),
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(NetError::Thread(std::io::Error::other(
                "the consensus thread ended during start-up",
            )))
        }
    }
}

fn run(
    services: Arc<ChainServices>,
    cfg: NetConfig,
    stop: tokio::sync::oneshot::Receiver<()>,
    ready: std::sync::mpsc::Sender<Result<(), NetError>>,
) {
    let rt = commonware_runtime::tokio::Config::new()
        .with_storage_directory(cfg.storage.clone())
        .with_worker_threads(2);
    commonware_runtime::tokio::Runner::new(rt).start(|context| async move {
        let signer = cfg.validator.signer.clone();
        let me = signer.public_key();
        let n = cfg.validator.validators.len();
        let handshake = cups::Cups::<_, ChaCha20Poly1305>::new(
            sake::Sake {
                signer,
                synchrony_bound: Duration::from_secs(5),
                max_handshake_age: Duration::from_secs(10),
                version: sake::Version::V1,
            },
            cups::Version::V1,
        );
        let mut p2p = lookup::Config::recommended(
            handshake,
            &cfg.validator.namespace,
            cfg.listen,
            NZUsize!(n + 1),
            MAX_MESSAGE_BYTES as u32,
            NZUsize!(1024),
        );
        // Validators are listed explicitly, often on private or loopback addresses.
        p2p.allow_private_ips = true;
        p2p.peer_connection_cooldown = Duration::from_secs(1);
        p2p.dial_frequency = Duration::from_millis(500);
        p2p.ping_frequency = Duration::from_secs(5);
        p2p.dial_timeout = Duration::from_secs(5);
        p2p.allowed_handshake_rate_per_ip =
            commonware_runtime::Quota::per_second(std::num::NonZeroU32::new(16).expect("non-zero"));
        p2p.block_duration = Duration::from_secs(60);
        let (mut network, mut oracle) = lookup::Network::new(context.child("network"), p2p);
        let mut book: Vec<(PublicKey, Address)> = cfg
            .peers
            .iter()
            .map(|(k, a)| (k.clone(), Address::from(*a)))
            .collect();
        book.push((me, Address::from(cfg.listen)));
        oracle.track(0, Map::from_iter_dedup(book));
        let votes = network.register(validator::CHANNEL_VOTES, channel_quota());
        let certificates = network.register(validator::CHANNEL_CERTIFICATES, channel_quota());
        let resolver = network.register(validator::CHANNEL_RESOLVER, channel_quota());
        let app = network.register(validator::CHANNEL_APP, channel_quota());
        network.start();
        match validator::start(
            context.child("validator"),
            services,
            cfg.validator,
            oracle,
            votes,
            certificates,
            resolver,
            app,
        ) {
            Ok(_handles) => {
                let _ = ready.send(Ok(()));
                let _ = stop.await;
                tracing::info!("consensus stopping");
            }
            Err(e) => {
                let _ = ready.send(Err(e.into()));
            }
        }
        let _ = context.stop(0, Some(Duration::from_secs(5))).await;
    });
}
