//! `poc chain …` and `poc keys …`.

use anyhow::{Context, bail};
use poc_chain::api::BroadcastMode;
use poc_chain::genesis::Genesis;
use poc_chain::msgs::Msg;
use poc_chain::params::Params;
use poc_chain::tx::TxMsg;
use poc_chain_client::{ChainClient, TxSigner};
use poc_chain_node::{NodeConfig, home};
use serde_json::{Value, json};

use crate::cli::{HttpArgs, parse_duration};
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum ChainCommand {
    /// Create a chain home: `genesis.json`, `data/`, `keys/`.
    ///
    /// Without `--genesis`, writes the default local network (documented in
    /// docs/chain.md): chain id `poc-local`, 40-block epochs, PoC v2 on, a generated
    /// governance authority (`keys/authority.key`) and `--participants` generated
    /// participants of weight 10 (`keys/participant-N.key`). Refuses an existing home.
    Init {
        /// Home directory.
        #[arg(long, value_name = "DIR")]
        home: PathBuf,
        /// Use this genesis JSON instead of the default.
        #[arg(long, value_name = "FILE")]
        genesis: Option<PathBuf>,
        /// Chain id of the default genesis.
        #[arg(long, default_value = "poc-local")]
        chain_id: String,
        /// Genesis participants to generate for the default genesis.
        #[arg(long, default_value_t = 0)]
        participants: usize,
        /// Consensus validators to generate (`keys/validator-N.key`, added to the genesis
        /// as `consensus_validators`) for a replicated chain; copy the genesis to every
        /// validator's home with `--genesis`.
        #[arg(long, default_value_t = 0)]
        validators: usize,
    },
    /// Run the node: produce a block every `--block-time`, serve REST, persist to
    /// `DIR/data/chain.redb`. Restarts where it stopped. Ctrl-C / SIGTERM stop it cleanly.
    ///
    /// With `--validator-key`, the node is one validator of a replicated chain: blocks come
    /// from BFT consensus (commonware simplex) among the genesis `consensus_validators`
    /// over authenticated, encrypted p2p (`--p2p`, `--peers`), at most one per
    /// `--block-time`. A restarted validator replays its own storage and fetches what it
    /// missed from its peers.
    Start {
        /// Home directory (from `poc chain init`).
        #[arg(long, value_name = "DIR")]
        home: PathBuf,
        /// Time between blocks (`1s`, `500ms`, `2.5s`).
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        block_time: std::time::Duration,
        /// REST listen address.
        #[arg(long, default_value = "127.0.0.1:1317")]
        rest: std::net::SocketAddr,
        /// CometBFT RPC listen address (`status`, `block`, `abci_info`), or `off`.
        #[arg(long, default_value = "127.0.0.1:26657", value_parser = parse_rpc_addr)]
        rpc: RpcAddr,
        /// Blocks between state snapshots (restart replays at most this many).
        #[arg(long, default_value_t = 100)]
        snapshot_interval: i64,
        /// This validator's ed25519 key file (from `poc chain init --validators N`):
        /// run as one validator of a replicated chain.
        #[arg(long, value_name = "FILE")]
        validator_key: Option<PathBuf>,
        /// p2p listen address (replicated mode).
        #[arg(long, default_value = "127.0.0.1:26656")]
        p2p: std::net::SocketAddr,
        /// The other validators, comma-separated `NAME@HOST:PORT` (NAME as in genesis, e.g.
        /// `validator-1`) or `PUBKEY@HOST:PORT` (replicated mode).
        #[arg(long, value_delimiter = ',', value_name = "PEERS")]
        peers: Vec<String>,
        /// Limits of the REST server.
        #[command(flatten)]
        http: HttpArgs,
    },
    /// Replay every stored block from genesis and check each app hash (read-only; stop
    /// the node first).
    Replay {
        /// Home directory.
        #[arg(long, value_name = "DIR")]
        home: PathBuf,
    },
    /// Print a node's status and epoch info as JSON.
    Status {
        /// Node REST URL.
        #[arg(long, default_value = "http://127.0.0.1:1317")]
        node: String,
    },
    /// Governance: replace the chain parameters (signed by the genesis authority).
    ///
    /// `--set` edits the node's current parameters, e.g. `--set poc_params.poc_v2_enabled=true`
    /// (the value is JSON; plain words are taken as strings). Prints the transaction result.
    UpdateParams {
        /// Node REST URL.
        #[arg(long, default_value = "http://127.0.0.1:1317")]
        node: String,
        /// The authority's key file.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// A complete parameters JSON file (as `GET …/params` answers under `params`).
        #[arg(long, value_name = "FILE")]
        params: Option<PathBuf>,
        /// `path.to.field=value` edits (repeatable).
        #[arg(long = "set", value_name = "PATH=JSON")]
        set: Vec<String>,
    },
}

fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn run(cmd: ChainCommand) -> anyhow::Result<()> {
    match cmd {
        ChainCommand::Init {
            home: dir,
            genesis,
            chain_id,
            participants,
            validators,
        } => {
            let g = match genesis {
                Some(p) => {
                    let text = std::fs::read_to_string(&p)
                        .with_context(|| format!("cannot read {}", p.display()))?;
                    Some(
                        serde_json::from_str::<Genesis>(&text)
                            .with_context(|| format!("{} is not a genesis JSON", p.display()))?,
                    )
                }
                None => None,
            };
            let r = home::init(&dir, g, &chain_id, participants)?;
            let mut keys = r.keys.clone();
            let mut names = Vec::new();
            if validators > 0 {
                let added = poc_consensus::node::add_validators(&dir, validators)
                    .map_err(|e| anyhow::anyhow!(e))?;
                for (v, p) in added {
                    names.push(json!({"name": v.name, "public_key": v.public_key}));
                    keys.push(p);
                }
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "home": dir,
                    "chain_id": r.genesis.chain_id,
                    "authority": r.genesis.authority,
                    "participants": r.genesis.participants.iter().map(|p| &p.address).collect::<Vec<_>>(),
                    "consensus_validators": names,
                    "keys": keys,
                }))?
            );
            Ok(())
        }
        ChainCommand::Start {
            home: dir,
            block_time,
            rest,
            rpc,
            snapshot_interval,
            validator_key,
            p2p,
            peers,
            http,
        } => {
            init_logging();
            let http = http.apply(poc_http::HttpLimits::default())?;
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            if let Some(key) = validator_key {
                let signer = poc_consensus::keys::read(&key)?;
                return rt.block_on(async move {
                    let cfg = poc_consensus::node::ReplicatedConfig {
                        node: NodeConfig { home: dir.clone(), block_time, rest, rpc: rpc.0, snapshot_interval, http },
                        signer,
                        p2p,
                        peers,
                        behavior: poc_consensus::Behavior::Honest,
                    };
                    let node = poc_consensus::node::start(cfg).await.with_context(|| {
                        format!("cannot start the replicated chain node in {}", dir.display())
                    })?;
                    tracing::info!(
                        "validator serving REST on http://{} and p2p on {p2p} (height {}, {} blocks replayed); Ctrl-C stops it",
                        node.chain.addr,
                        node.chain.services.head().state.height,
                        node.chain.replayed
                    );
                    super::mlnode::shutdown_signal().await;
                    tracing::info!("shutting down: stopping consensus, saving a state snapshot");
                    node.shutdown().await;
                    anyhow::Ok(())
                });
            }
            rt.block_on(async move {
                let node = poc_chain_node::start(NodeConfig { home: dir.clone(), block_time, rest, rpc: rpc.0, snapshot_interval, http })
                    .await
                    .with_context(|| format!("cannot start the chain node in {}", dir.display()))?;
                tracing::info!(
                    "chain node serving REST on http://{} (height {}, {} blocks replayed); Ctrl-C stops it",
                    node.addr,
                    node.services.head().state.height,
                    node.replayed
                );
                super::mlnode::shutdown_signal().await;
                tracing::info!("shutting down: saving a state snapshot");
                node.shutdown().await;
                anyhow::Ok(())
            })
        }
        ChainCommand::Replay { home: dir } => {
            let h = home::Home::new(&dir);
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "replay {bar:40} {pos}/{len} blocks ({per_sec})",
                )
                .expect("template"),
            );
            let r = poc_chain_node::replay_all(&h, |at, last| {
                bar.set_length(last as u64);
                bar.set_position(at as u64);
            })?;
            bar.finish_and_clear();
            let secs = r.elapsed.as_secs_f64();
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "blocks": r.blocks,
                    "txs": r.txs,
                    "seconds": secs,
                    "blocks_per_second": if secs > 0.0 { r.blocks as f64 / secs } else { 0.0 },
                    "app_hash": r.app_hash,
                    "every_app_hash_matches": true,
                }))?
            );
            Ok(())
        }
        ChainCommand::Status { node } => {
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(async move {
                let c = ChainClient::new(&node);
                let status = c.status().await?;
                let info = c.epoch_info().await?;
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({"status": status, "epoch_info": info}))?
                );
                anyhow::Ok(())
            })
        }
        ChainCommand::UpdateParams {
            node,
            key,
            params,
            set,
        } => {
            let key = home::read_key(&key)?;
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(async move {
                let c = ChainClient::new(&node);
                let mut value: Value = match params {
                    Some(p) => serde_json::from_str(
                        &std::fs::read_to_string(&p)
                            .with_context(|| format!("cannot read {}", p.display()))?,
                    )
                    .with_context(|| format!("{} is not JSON", p.display()))?,
                    None => serde_json::to_value(c.params().await?.params)?,
                };
                for edit in &set {
                    apply_edit(&mut value, edit)?;
                }
                let params: Params =
                    serde_json::from_value(value).context("the edited parameters do not parse")?;
                params
                    .validate()
                    .map_err(|e| anyhow::anyhow!("invalid parameters: {e}"))?;
                let signer = TxSigner::new(c, key.clone());
                let r = signer
                    .send(
                        &[TxMsg::Direct(Msg::UpdateParams {
                            authority: key.address(),
                            params: Box::new(params),
                        })],
                        BroadcastMode::Block,
                    )
                    .await?;
                println!("{}", serde_json::to_string_pretty(&r)?);
                if r.result.code != 0 {
                    bail!(
                        "the chain rejected the update ({} {}): {}",
                        r.result.codespace,
                        r.result.code,
                        r.result.raw_log
                    );
                }
                anyhow::Ok(())
            })
        }
    }
}

/// Applies `a.b.c=JSON` to a JSON value.
fn apply_edit(v: &mut Value, edit: &str) -> anyhow::Result<()> {
    let (path, raw) = edit
        .split_once('=')
        .with_context(|| format!("--set {edit:?}: expected PATH=VALUE"))?;
    let new: Value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
    let mut cur = v;
    for part in path.split('.') {
        cur = cur.get_mut(part).with_context(|| {
            format!("--set {edit:?}: no field {part:?} (see `GET …/params` for the names)")
        })?;
    }
    *cur = new;
    Ok(())
}

/// `--rpc`: an address, or `off` for no RPC server.
#[derive(Debug, Clone, Copy)]
pub struct RpcAddr(Option<std::net::SocketAddr>);

fn parse_rpc_addr(s: &str) -> Result<RpcAddr, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(RpcAddr(None));
    }
    s.parse()
        .map(|a| RpcAddr(Some(a)))
        .map_err(|e| format!("{s:?} is neither HOST:PORT nor `off`: {e}"))
}
