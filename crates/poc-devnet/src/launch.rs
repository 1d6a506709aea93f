//! Starting a devnet: the models, the chain (one producer or a validator set), and per
//! participant an ML node and an API node.

use std::path::{Path, PathBuf};
use std::time::Duration;

use candle_core::DType;
use poc_api::config::{ApiConfig, MlNodeEntry};
use poc_chain::genesis::{Genesis, GenesisParticipant};
use poc_chain_client::ChainClient;
use poc_chain_node::{NodeConfig, RunningChain, home};
use poc_mlnode::{MlNodeConfig, PocSettings};
use poc_model::presets::{Preset, write_preset};

use crate::cheats::{self, Cheat};
use crate::options::{DevnetOptions, Mode, V1_R_TARGET, devnet_params};
use crate::{Devnet, DevnetError, Member, comp};

/// Writes (or reuses) the tiny-moe checkpoint and its 4-bit-rounded copy.
pub fn ensure_models(home: &Path, model: Option<&Path>) -> Result<(PathBuf, PathBuf), DevnetError> {
    let models = home.join("models");
    let honest = match model {
        Some(m) => m.to_path_buf(),
        None => {
            let d = models.join("tiny-moe");
            if !d.join("config.json").exists() {
                let tmp = models.join("tiny-moe.partial");
                let _ = std::fs::remove_dir_all(&tmp);
                write_preset(Preset::TinyMoe, &tmp)
                    .map_err(|e| comp("writing the tiny-moe checkpoint")(e.to_string()))?;
                std::fs::rename(&tmp, &d)
                    .map_err(|e| comp("caching the checkpoint")(e.to_string()))?;
            }
            d
        }
    };
    let name = honest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let rounded = models.join(format!("{name}-rounded"));
    if !rounded.join("config.json").exists() {
        let tmp = models.join(format!("{name}-rounded.partial"));
        let _ = std::fs::remove_dir_all(&tmp);
        poc_model::quantize::round_4bit(&honest, &tmp)
            .map_err(|e| comp("writing the 4-bit-rounded copy")(e.to_string()))?;
        for entry in std::fs::read_dir(&honest)
            .map_err(|e| comp("reading the model")(e.to_string()))?
            .flatten()
        {
            let to = tmp.join(entry.file_name());
            if !to.exists() && entry.path().is_file() {
                let _ = std::fs::copy(entry.path(), to);
            }
        }
        std::fs::rename(&tmp, &rounded)
            .map_err(|e| comp("caching the rounded copy")(e.to_string()))?;
    }
    Ok((honest, rounded))
}

/// The devnet's chain: one block producer, or a replicated validator set.
pub(crate) enum ChainNodes {
    Single(RunningChain),
    Replicated(Vec<poc_consensus::node::ReplicatedChain>),
}

impl ChainNodes {
    fn nodes(&self) -> Vec<&RunningChain> {
        match self {
            ChainNodes::Single(c) => vec![c],
            ChainNodes::Replicated(v) => v.iter().map(|c| &c.chain).collect(),
        }
    }

    /// Each node's REST URL.
    pub(crate) fn urls(&self) -> Vec<String> {
        self.nodes()
            .iter()
            .map(|c| format!("http://{}", c.addr))
            .collect()
    }

    /// Each node's CometBFT RPC URL (every devnet node serves one).
    pub(crate) fn rpc_urls(&self) -> Vec<Option<String>> {
        self.nodes()
            .iter()
            .map(|c| c.rpc_addr.map(|a| format!("http://{a}")))
            .collect()
    }

    pub(crate) async fn shutdown(self) {
        match self {
            ChainNodes::Single(c) => c.shutdown().await,
            ChainNodes::Replicated(v) => {
                for c in v {
                    c.shutdown().await;
                }
            }
        }
    }
}

/// Starts `n` validators, each with its own home holding `genesis` plus the generated
/// validator set.
pub(crate) async fn start_validators(
    run_dir: &Path,
    mut genesis: Genesis,
    n: usize,
    block_time: Duration,
) -> Result<Vec<poc_consensus::node::ReplicatedChain>, DevnetError> {
    let mut keys = Vec::new();
    for i in 0..n {
        let k =
            poc_consensus::keys::generate().map_err(|e| comp("validator key")(e.to_string()))?;
        genesis
            .consensus_validators
            .push(poc_chain::genesis::ConsensusValidator {
                name: format!("validator-{i}"),
                public_key: poc_consensus::keys::public_hex(&k),
            });
        keys.push(k);
    }
    let p2p: Vec<std::net::SocketAddr> = (0..n).map(|_| free_addr()).collect();
    let mut nodes = Vec::new();
    for (i, k) in keys.into_iter().enumerate() {
        let dir = run_dir.join(format!("chain-{i}"));
        home::init(&dir, Some(genesis.clone()), "", 0)
            .map_err(|e| comp("chain home")(e.to_string()))?;
        let peers = (0..n)
            .filter(|&j| j != i)
            .map(|j| format!("validator-{j}@{}", p2p[j]))
            .collect();
        let node = poc_consensus::node::start(poc_consensus::node::ReplicatedConfig {
            node: NodeConfig {
                home: dir,
                rpc: Some("127.0.0.1:0".parse().expect("addr")),
                block_time,
                rest: "127.0.0.1:0".parse().expect("addr"),
                snapshot_interval: 50,
                http: Default::default(),
            },
            signer: k,
            p2p: p2p[i],
            peers,
            behavior: poc_consensus::Behavior::Honest,
        })
        .await
        .map_err(|e| comp("chain validator")(e.to_string()))?;
        nodes.push(node);
    }
    Ok(nodes)
}

pub(crate) fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

impl Devnet {
    /// Starts every component.
    pub async fn start(o: DevnetOptions) -> Result<Self, DevnetError> {
        if o.participants == 0 || o.cheaters >= o.participants {
            return Err(DevnetError::Options(
                "need at least one honest participant (--cheaters < --participants)".into(),
            ));
        }
        if o.epochs == 0 {
            return Err(DevnetError::Options("--epochs must be at least 1".into()));
        }
        std::fs::create_dir_all(&o.home).map_err(|e| comp("creating the home")(e.to_string()))?;
        let (honest_model, rounded_model) = {
            let (home, model) = (o.home.clone(), o.model.clone());
            tokio::task::spawn_blocking(move || ensure_models(&home, model.as_deref()))
                .await
                .expect("model writing does not panic")?
        };
        let model_name = "devnet-model".to_owned();
        let run_dir = o.home.join("run");
        let _ = std::fs::remove_dir_all(&run_dir);
        std::fs::create_dir_all(run_dir.join("keys"))
            .map_err(|e| comp("creating the run directory")(e.to_string()))?;
        let n = o.participants;
        let honest = n - o.cheaters;
        let mut accounts = Vec::new();
        let mut warms = Vec::new();
        for i in 0..n {
            let (a, w) = (
                home::generate_key().map_err(|e| comp("key")(e.to_string()))?,
                home::generate_key().map_err(|e| comp("key")(e.to_string()))?,
            );
            home::write_key(&run_dir.join("keys").join(format!("p{i}-account.key")), &a)
                .map_err(|e| comp("key file")(e.to_string()))?;
            home::write_key(
                &run_dir.join("keys").join(format!("p{i}-operational.key")),
                &w,
            )
            .map_err(|e| comp("key file")(e.to_string()))?;
            accounts.push(a);
            warms.push(w);
        }
        let authority = home::generate_key().map_err(|e| comp("key")(e.to_string()))?;
        let genesis = Genesis {
            chain_id: "poc-devnet".into(),
            genesis_time: 0,
            authority: authority.address(),
            params: devnet_params(&o, &model_name),
            consensus_validators: Vec::new(),
            participants: accounts
                .iter()
                .enumerate()
                .map(|(i, a)| GenesisParticipant {
                    address: a.address(),
                    hex_pub_key: a.public_key_hex(),
                    inference_url: String::new(),
                    validator_key: format!("devnet-validator-{i}"),
                    weight: 10,
                })
                .collect(),
        };
        let chain = if o.validators == 0 {
            let chain_home = run_dir.join("chain");
            home::init(&chain_home, Some(genesis), "", 0)
                .map_err(|e| comp("chain home")(e.to_string()))?;
            ChainNodes::Single(
                poc_chain_node::start(NodeConfig {
                    home: chain_home,
                    rpc: Some("127.0.0.1:0".parse().expect("addr")),
                    block_time: o.block_time,
                    rest: "127.0.0.1:0".parse().expect("addr"),
                    snapshot_interval: 50,
                    http: Default::default(),
                })
                .await
                .map_err(|e| comp("chain node")(e.to_string()))?,
            )
        } else {
            ChainNodes::Replicated(
                start_validators(&run_dir, genesis, o.validators, o.block_time).await?,
            )
        };
        let chain_urls = chain.urls();
        let rpc_urls = chain.rpc_urls();
        let chain_url = chain_urls[0].clone();
        let mut members = Vec::new();
        for (i, account) in accounts.iter().enumerate() {
            let cheat = (i >= honest).then(|| Cheat::nth(i - honest));
            let ml = poc_mlnode::start(MlNodeConfig {
                model: if cheat == Some(Cheat::RoundedModel) {
                    rounded_model.clone()
                } else {
                    honest_model.clone()
                },
                served_model_names: vec![model_name.clone()],
                listen: "127.0.0.1:0".parse().expect("addr"),
                dtype: Some(DType::F32),
                devices: vec![],
                fp8: None,
                settings: PocSettings {
                    callback_interval: Duration::from_millis(500),
                    ..PocSettings::default()
                },
                body_limit: 64 << 20,
                http: Default::default(),
            })
            .await
            .map_err(|e| comp("ML node")(e.to_string()))?;
            let slot = match cheat {
                Some(c) if c.proxied(o.mode != Mode::V2) => Some(
                    cheats::ProxySlot::bind(c)
                        .await
                        .map_err(|e| comp("cheat proxy")(e.to_string()))?,
                ),
                _ => None,
            };
            let public = free_addr();
            // The API node's own defaults for every timing: commits and votes are timed
            // from the chain (`poc_api::timing`). Only what a loopback network needs
            // differs: private targets allowed, a proof rate limit for many validators
            // sharing one address, the tiny PoC v1 model.
            let cfg = ApiConfig {
                callback_url: slot.as_ref().map(|s| format!("http://{}", s.addr)),
                ml_nodes: vec![MlNodeEntry {
                    id: format!("ml-{i}"),
                    url: format!("http://{}", ml.addr),
                }],
                allow_private_targets: true,
                proof_rate_per_sec: 50.0,
                proof_rate_burst: 100.0,
                v1: poc_api::config::V1Config {
                    params: "tiny".into(),
                    r_target: V1_R_TARGET,
                    fraud_threshold: 1e-7,
                },
                chain_rpc_url: rpc_urls[i % rpc_urls.len()].clone(),
                ..ApiConfig::new(
                    chain_urls[i % chain_urls.len()].clone(),
                    run_dir.join("keys").join(format!("p{i}-account.key")),
                    run_dir.join("keys").join(format!("p{i}-operational.key")),
                    public,
                    "127.0.0.1:0".parse().expect("addr"),
                    run_dir.join(format!("api-{i}")),
                )
            };
            let api = poc_api::start(cfg)
                .await
                .map_err(|e| comp("API node")(e.to_string()))?;
            let proxy = slot.map(|s| s.start(api.ml_addr));
            members.push(Member {
                index: i,
                cheat,
                account: account.clone(),
                ml: Some(ml),
                api,
                proxy,
            });
        }
        Ok(Self {
            client: ChainClient::new(&chain_url),
            options: o,
            chain: Some(chain),
            members,
            run_dir,
            authority,
            switched_at: None,
        })
    }
}
