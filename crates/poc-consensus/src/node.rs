//! A replicated chain node: the chain node's REST and storage with consensus in place of
//! the local block producer, plus home set-up for a validator set.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use commonware_cryptography::ed25519;
use poc_chain::genesis::{ConsensusValidator, Genesis};
use poc_chain_node::{NodeConfig, RunningChain, home};

use crate::app::{Behavior, PublicKey};
use crate::keys;
use crate::net::{self, NetConfig, NetNode};
use crate::validator::ValidatorConfig;

/// How to run a replicated node.
#[derive(Clone)]
pub struct ReplicatedConfig {
    /// Home, REST address, block time, snapshots.
    pub node: NodeConfig,
    /// This validator's key.
    pub signer: ed25519::PrivateKey,
    /// p2p listen address.
    pub p2p: SocketAddr,
    /// The other validators: `KEY@HOST:PORT` or `NAME@HOST:PORT` (NAME from genesis).
    pub peers: Vec<String>,
    /// Honest unless a test says otherwise.
    pub behavior: Behavior,
}

/// Why a replicated node cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ReplicatedError {
    /// The chain node.
    #[error(transparent)]
    Node(#[from] poc_chain_node::NodeError),
    /// Consensus set-up.
    #[error(transparent)]
    Net(#[from] net::NetError),
    /// Configuration.
    #[error("{0}")]
    Config(String),
}

impl From<String> for ReplicatedError {
    fn from(s: String) -> Self {
        Self::Config(s)
    }
}

/// The genesis validator set as keys.
pub fn genesis_validators(g: &Genesis) -> Result<Vec<PublicKey>, ReplicatedError> {
    if g.consensus_validators.is_empty() {
        return Err(ReplicatedError::Config(
            "the genesis lists no consensus_validators; create the home with `poc chain init --validators N` or add them to genesis.json"
                .into(),
        ));
    }
    g.consensus_validators
        .iter()
        .map(|v| {
            keys::parse_public(&v.public_key).ok_or_else(|| {
                ReplicatedError::Config(format!(
                    "consensus validator {} has an invalid key",
                    v.name
                ))
            })
        })
        .collect()
}

/// Parses `KEY@HOST:PORT` / `NAME@HOST:PORT` peer specs against the genesis.
pub fn parse_peers(
    g: &Genesis,
    specs: &[String],
) -> Result<Vec<(PublicKey, SocketAddr)>, ReplicatedError> {
    let mut out = Vec::new();
    for spec in specs {
        let (who, addr) = spec.rsplit_once('@').ok_or_else(|| {
            format!("peer {spec:?} must look like KEY@HOST:PORT or NAME@HOST:PORT")
        })?;
        let key_hex = g
            .consensus_validators
            .iter()
            .find(|v| v.name == who || v.public_key == who)
            .map(|v| v.public_key.clone())
            .ok_or_else(|| {
                format!(
                    "peer {who:?} is neither the name nor the key of a genesis consensus validator"
                )
            })?;
        let key = keys::parse_public(&key_hex)
            .ok_or_else(|| format!("peer {who:?} has an invalid key in genesis"))?;
        let addr = addr
            .to_socket_addrs()
            .map_err(|e| format!("peer address {addr:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("peer address {addr:?} resolves to nothing"))?;
        out.push((key, addr));
    }
    Ok(out)
}

/// Adds `n` generated consensus validators to a home's genesis (keys under
/// `keys/validator-N.key`). Refuses a genesis that already has validators, or a home whose
/// database was already created.
pub fn add_validators(
    dir: &Path,
    n: usize,
) -> Result<Vec<(ConsensusValidator, PathBuf)>, ReplicatedError> {
    let h = home::Home::new(dir);
    if h.db_path().exists() {
        return Err(ReplicatedError::Config(format!(
            "{} already holds a chain database; validators can only be added before the first start",
            dir.display()
        )));
    }
    let mut g = h.genesis().map_err(|e| e.to_string())?;
    if !g.consensus_validators.is_empty() {
        return Err(ReplicatedError::Config(
            "the genesis already lists consensus_validators".into(),
        ));
    }
    let mut out = Vec::new();
    for i in 0..n {
        let k = keys::generate().map_err(|e| format!("cannot generate a key: {e}"))?;
        let path = h.keys_dir().join(format!("validator-{i}.key"));
        keys::write(&path, &k).map_err(|e| e.to_string())?;
        let v = ConsensusValidator {
            name: format!("validator-{i}"),
            public_key: keys::public_hex(&k),
        };
        g.consensus_validators.push(v.clone());
        out.push((v, path));
    }
    g.validate().map_err(|e| format!("genesis: {e}"))?;
    let text = serde_json::to_string_pretty(&g).expect("genesis serialises");
    std::fs::write(h.genesis_path(), text + "\n")
        .map_err(|e| format!("cannot write {}: {e}", h.genesis_path().display()))?;
    Ok(out)
}

/// A running replicated node.
pub struct ReplicatedChain {
    /// REST, storage and the shared head.
    pub chain: RunningChain,
    net: Option<NetNode>,
}

impl ReplicatedChain {
    /// Stops consensus, then saves a snapshot and stops REST.
    pub async fn shutdown(mut self) {
        if let Some(n) = self.net.take() {
            let _ = tokio::task::spawn_blocking(move || n.stop()).await;
        }
        self.chain.shutdown().await;
    }
}

/// Starts REST and storage, then consensus on its own thread.
pub async fn start(cfg: ReplicatedConfig) -> Result<ReplicatedChain, ReplicatedError> {
    let h = home::Home::new(&cfg.node.home);
    let genesis = h.genesis()?;
    let validators = genesis_validators(&genesis)?;
    let peers = parse_peers(&genesis, &cfg.peers)?;
    if validators.len() > 1 && peers.is_empty() {
        return Err(ReplicatedError::Config(format!(
            "the genesis has {} consensus validators: list the others with --peers NAME@HOST:PORT,…",
            validators.len()
        )));
    }
    let chain = poc_chain_node::serve(cfg.node.clone()).await?;
    let mut v = ValidatorConfig::new(
        &genesis.chain_id,
        cfg.signer.clone(),
        validators,
        cfg.node.block_time,
    );
    v.snapshot_interval = cfg.node.snapshot_interval;
    v.behavior = cfg.behavior;
    let net_cfg = NetConfig {
        listen: cfg.p2p,
        peers,
        storage: cfg.node.home.join("data").join("consensus"),
        validator: v,
    };
    let services = std::sync::Arc::clone(&chain.services);
    let net = match tokio::task::spawn_blocking(move || net::spawn(services, net_cfg))
        .await
        .expect("start-up does not panic")
    {
        Ok(n) => n,
        Err(e) => {
            chain.shutdown().await;
            return Err(e.into());
        }
    };
    Ok(ReplicatedChain {
        chain,
        net: Some(net),
    })
}
