//! # poc-devnet: the whole system on one machine
//!
//! Starts a chain node, and per participant an ML node and an API node, all talking real
//! HTTP on loopback ports chosen automatically; some participants cheat ([`cheats`]).
//! Runs the requested regular PoC rounds (and optional confirmation PoCs), watches the
//! chain, and reports per participant what it committed, the votes it received and the
//! weight it got.

pub mod cheats;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::DType;
use poc_api::RunningApi;
use poc_api::config::{ApiConfig, MlNodeEntry};
use poc_chain::api::EpochInfoResponse;
use poc_chain::decimal::Decimal;
use poc_chain::epoch::{EpochContext, Phase};
use poc_chain::genesis::{Genesis, GenesisParticipant};
use poc_chain::keys::PrivateKey;
use poc_chain::params::{Params, StatTestParams};
use poc_chain_client::ChainClient;
use poc_chain_node::{NodeConfig, RunningChain, home};
use poc_mlnode::{MlNodeConfig, PocSettings, RunningNode};
use poc_model::presets::{Preset, write_preset};
use serde::Serialize;

pub use cheats::Cheat;

/// `r_target` of the devnet's v1 rounds: about 40 % of the tiny model's nonces pass.
pub const V1_R_TARGET: f64 = 1.408;

/// Which PoC the network runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// PoC v2 from genesis.
    V2,
    /// PoC v1 (needs the v1 flow).
    V1,
    /// v1 with v2 tracking, then a governance switch (needs the v1 flow).
    Migration,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct DevnetOptions {
    /// Participants (honest + cheaters).
    pub participants: usize,
    /// Cheaters among them (the last ones; kinds round-robin).
    pub cheaters: usize,
    /// Regular PoC rounds to run.
    pub epochs: u64,
    /// Mode.
    pub mode: Mode,
    /// `None`: the embedded tiny-moe checkpoint (cached under the home); else a directory.
    pub model: Option<PathBuf>,
    /// PoC sequence length.
    pub seq_len: i64,
    /// Home (models cached in `models/`; the run in `run/`).
    pub home: PathBuf,
    /// Keep `run/` afterwards.
    pub keep: bool,
    /// Chain block time.
    pub block_time: Duration,
    /// Blocks per epoch.
    pub epoch_length: i64,
    /// Blocks of PoC generation.
    pub stage_blocks: i64,
    /// Blocks of PoC validation.
    pub validation_blocks: i64,
    /// Expected confirmation PoCs per epoch (0: none).
    pub confirmations: u64,
    /// Participants whose ML node goes offline once the last regular PoC's weights are
    /// effective (they fail that epoch's confirmation PoC).
    pub dropouts: Vec<usize>,
    /// Leaves sampled per validated participant.
    pub sample_size: i32,
    /// Migration mode: switch to V2 during the last epoch's first confirmation event
    /// (once it is validating) instead of after half of the epochs, and wait for a second
    /// confirmation event — the grace-epoch scenario.
    pub switch_during_confirmation: bool,
    /// Consensus validators: 0 runs the single-producer chain node; N runs a replicated
    /// chain of N validators (commonware simplex over loopback p2p), with API node `i`
    /// talking to validator `i % N`.
    pub validators: usize,
    /// Live progress on stderr.
    pub progress: bool,
}

impl Default for DevnetOptions {
    fn default() -> Self {
        Self {
            participants: 4,
            cheaters: 1,
            epochs: 2,
            mode: Mode::V2,
            model: None,
            seq_len: 32,
            home: default_home(),
            keep: false,
            block_time: Duration::from_millis(500),
            epoch_length: 40,
            stage_blocks: 10,
            validation_blocks: 10,
            confirmations: 0,
            dropouts: vec![],
            sample_size: 40,
            switch_during_confirmation: false,
            validators: 0,
            progress: true,
        }
    }
}

/// `$HOME/.poc/devnet`, or `.poc-devnet` when there is no home directory.
pub fn default_home() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".poc").join("devnet"),
        None => PathBuf::from(".poc-devnet"),
    }
}

/// One participant's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct ParticipantReport {
    /// Index.
    pub index: usize,
    /// Account address.
    pub address: String,
    /// `honest` or the cheat.
    pub role: String,
    /// Committed count in the last regular PoC.
    pub committed_count: u32,
    /// Its weight distribution.
    pub distribution: BTreeMap<String, u32>,
    /// Valid votes received in the last regular PoC.
    pub votes_valid: usize,
    /// Invalid votes received.
    pub votes_invalid: usize,
    /// Whether it earned weight.
    pub accepted: bool,
    /// Resulting weight.
    pub weight: i64,
    /// Confirmation weight in the last epoch.
    pub confirmation_weight: i64,
    /// `ACTIVE` / `INACTIVE`.
    pub status: String,
    /// Whether the outcome is the expected one (honest accepted, cheater rejected).
    pub as_expected: bool,
}

/// Timings of one regular PoC.
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    /// Epoch the PoC was for.
    pub epoch: u64,
    /// Stage height S.
    pub stage: i64,
    /// Per participant: seconds from block S being seen to its first stored artifact.
    pub phase_switch_latency_s: BTreeMap<usize, f64>,
    /// Per participant: artifacts stored per second of generation.
    pub nonces_per_sec: BTreeMap<usize, f64>,
    /// Seconds from the validation start to the last vote on chain.
    pub validation_duration_s: f64,
    /// Votes on chain.
    pub votes: usize,
}

/// Everything the run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Options in short.
    pub mode: Mode,
    /// Participants.
    pub participants: Vec<ParticipantReport>,
    /// Regular PoCs.
    pub stages: Vec<StageReport>,
    /// Confirmation events seen (epoch, sequence, trigger height, phase).
    pub confirmation_events: Vec<(u64, u64, i64, String)>,
    /// Migration mode: the epoch in which governance switched to V2 (the grace epoch).
    pub switched_to_v2_in_epoch: Option<u64>,
    /// Wall time.
    pub wall_s: f64,
    /// Replicated chain: each validator's height and its app hash at the lowest height
    /// they all reached (empty for the single-producer chain).
    pub chain_validators: Vec<ValidatorReport>,
    /// Every participant as expected (and, replicated, every validator agrees).
    pub ok: bool,
}

/// One chain validator at the end of a replicated run.
#[derive(Debug, Clone, Serialize)]
pub struct ValidatorReport {
    /// Its REST URL.
    pub url: String,
    /// Its committed height.
    pub height: i64,
    /// Its block hash at the common height.
    pub block_hash_at_common: String,
    /// Its app hash at the common height.
    pub app_hash_at_common: String,
}

/// Devnet errors.
#[derive(Debug, thiserror::Error)]
pub enum DevnetError {
    /// Bad options.
    #[error("{0}")]
    Options(String),
    /// A component failed.
    #[error("{0}")]
    Component(String),
}

fn comp(what: &str) -> impl Fn(String) -> DevnetError + '_ {
    move |e| DevnetError::Component(format!("{what}: {e}"))
}

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

/// The genesis parameters of a devnet.
pub fn devnet_params(o: &DevnetOptions, model_name: &str) -> Params {
    let mut p = home::local_params();
    let ep = &mut p.epoch_params;
    ep.epoch_length = o.epoch_length;
    // The first PoC starts after 8 blocks: time for registration and grants.
    ep.epoch_shift = o.epoch_length - 8;
    ep.poc_stage_duration = o.stage_blocks;
    ep.poc_exchange_duration = 2;
    ep.poc_validation_delay = 2;
    ep.poc_validation_duration = o.validation_blocks;
    ep.set_new_validators_delay = 1;
    let pp = &mut p.poc_params;
    pp.model_id = model_name.to_owned();
    pp.seq_len = o.seq_len;
    pp.validation_sample_size = o.sample_size;
    pp.poc_v2_enabled = o.mode == Mode::V2;
    pp.confirmation_poc_v2_enabled = o.mode != Mode::V1;
    // Every node computes in f32 on the same code, so honest vectors agree to rounding;
    // a tight threshold separates the cheaper model.
    pp.stat_test = Some(StatTestParams {
        dist_threshold: Some(Decimal::new(5, -2)),
        p_mismatch: Some(Decimal::new(1, -2)),
        p_value_threshold: Some(Decimal::new(5, -2)),
    });
    p.confirmation_poc_params.expected_confirmations_per_epoch = o.confirmations;
    p.confirmation_poc_params.alpha_threshold = Some(Decimal::new(5, -1));
    p
}

/// A stage being watched: its report, when it was first seen, when validation began, and
/// each participant's artifact counter at the start.
type Watch = (StageReport, Instant, Option<Instant>, BTreeMap<usize, u64>);

/// Nonces and artifacts a participant's API node received (v1 and v2).
fn received(m: &Member) -> u64 {
    let metrics = &m.api.shared.metrics;
    metrics.get("poc_artifacts_received_total") + metrics.get("poc_v1_nonces_received_total")
}

struct Member {
    index: usize,
    cheat: Option<Cheat>,
    account: PrivateKey,
    ml: Option<RunningNode>,
    api: RunningApi,
    proxy: Option<tokio::task::JoinHandle<()>>,
}

/// A running devnet.
pub struct Devnet {
    /// Options.
    pub options: DevnetOptions,
    /// Chain REST client.
    pub client: ChainClient,
    chain: Option<ChainNodes>,
    members: Vec<Member>,
    run_dir: PathBuf,
    authority: PrivateKey,
    switched_at: Option<u64>,
}

/// The devnet's chain: one block producer, or a replicated validator set.
enum ChainNodes {
    Single(RunningChain),
    Replicated(Vec<poc_consensus::node::ReplicatedChain>),
}

impl ChainNodes {
    fn urls(&self) -> Vec<String> {
        match self {
            ChainNodes::Single(c) => vec![format!("http://{}", c.addr)],
            ChainNodes::Replicated(v) => v
                .iter()
                .map(|c| format!("http://{}", c.chain.addr))
                .collect(),
        }
    }

    async fn shutdown(self) {
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
async fn start_validators(
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

fn free_addr() -> std::net::SocketAddr {
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

    /// The chain's REST URL.
    pub fn chain_url(&self) -> &str {
        self.client.base()
    }

    /// Account addresses, by participant.
    pub fn addresses(&self) -> Vec<String> {
        self.members.iter().map(|m| m.account.address()).collect()
    }

    /// A participant's public (proof API) URL.
    pub fn public_url(&self, i: usize) -> String {
        format!("http://{}", self.members[i].api.public_addr)
    }

    /// Runs until `epochs` regular PoCs have set weights (and the last epoch is effective),
    /// and, with confirmations on, until a confirmation event of the last epoch completed.
    pub async fn run(&mut self) -> Result<Report, DevnetError> {
        let started = Instant::now();
        let o = self.options.clone();
        let n = self.members.len();
        let ui = Progress::new(o.progress, &self.members);
        let mut stages: Vec<StageReport> = Vec::new();
        let mut current: Option<Watch> = None;
        let per_epoch = o.epoch_length as f64 * o.block_time.as_secs_f64();
        let limit = Duration::from_secs_f64(per_epoch * (o.epochs as f64 + 2.5) + 60.0);
        let mut dropped = false;
        loop {
            if started.elapsed() > limit {
                return Err(DevnetError::Component(format!(
                    "the devnet did not finish in {limit:?}"
                )));
            }
            let info: EpochInfoResponse = match self.client.epoch_info().await {
                Ok(i) => i,
                Err(e) => return Err(DevnetError::Component(format!("chain node: {e}"))),
            };
            let h = info.block_height;
            let ctx = EpochContext::new(info.latest_epoch, info.params.epoch_params.clone());
            let phase = ctx.phase(h);
            let upcoming = info.latest_epoch.index > info.effective_epoch.index;
            // Stage bookkeeping.
            if upcoming
                && current
                    .as_ref()
                    .is_none_or(|c| c.0.stage != ctx.start_of_poc())
            {
                if let Some((s, ..)) = current.take() {
                    stages.push(s);
                }
                let base: BTreeMap<usize, u64> = self
                    .members
                    .iter()
                    .map(|m| (m.index, received(m)))
                    .collect();
                current = Some((
                    StageReport {
                        epoch: info.latest_epoch.index,
                        stage: ctx.start_of_poc(),
                        phase_switch_latency_s: BTreeMap::new(),
                        nonces_per_sec: BTreeMap::new(),
                        validation_duration_s: 0.0,
                        votes: 0,
                    },
                    Instant::now(),
                    None,
                    base,
                ));
            }
            if let Some((s, t0, tv, base)) = current.as_mut() {
                for m in &self.members {
                    let got = received(m).saturating_sub(base.get(&m.index).copied().unwrap_or(0));
                    if got > 0 && !s.phase_switch_latency_s.contains_key(&m.index) {
                        s.phase_switch_latency_s
                            .insert(m.index, t0.elapsed().as_secs_f64());
                    }
                    if matches!(phase, Phase::PoCGenerate | Phase::PoCGenerateWindDown) {
                        s.nonces_per_sec
                            .insert(m.index, got as f64 / t0.elapsed().as_secs_f64().max(1e-3));
                    }
                }
                if matches!(phase, Phase::PoCValidate | Phase::PoCValidateWindDown) {
                    let start = *tv.get_or_insert_with(Instant::now);
                    let votes = self.votes_at(s.stage).await;
                    if votes > s.votes {
                        s.votes = votes;
                        s.validation_duration_s = start.elapsed().as_secs_f64();
                    }
                }
            }
            // Dropouts lose their ML node once the last regular PoC's weights are effective
            // (so they fail that epoch's confirmation PoC).
            if !dropped && !o.dropouts.is_empty() && info.effective_epoch.index >= o.epochs {
                dropped = true;
                for m in self
                    .members
                    .iter_mut()
                    .filter(|m| o.dropouts.contains(&m.index))
                {
                    if let Some(ml) = m.ml.take() {
                        ml.shutdown().await;
                    }
                }
            }
            // Migration: governance switches to V2 once half of the epochs ran on V1.
            let switch_now = if o.switch_during_confirmation {
                info.effective_epoch.index >= o.epochs
                    && info
                        .active_confirmation_poc_event
                        .as_ref()
                        .is_some_and(|e| {
                            e.epoch_index == o.epochs
                                && e.phase == poc_chain::confirmation::ConfirmationPhase::Validation
                        })
            } else {
                info.effective_epoch.index >= o.epochs.div_ceil(2) && !upcoming
            };
            if o.mode == Mode::Migration && self.switched_at.is_none() && switch_now {
                self.switch_to_v2(&info).await?;
            }
            ui.update(h, &info, phase, &self.members, &self.client)
                .await;
            let regular_done = info.effective_epoch.index >= o.epochs && !upcoming;
            let conf_done = o.confirmations == 0 || {
                let evs = self
                    .client
                    .confirmation_events(o.epochs)
                    .await
                    .map(|e| e.events)
                    .unwrap_or_default();
                let want = if o.switch_during_confirmation { 2 } else { 1 };
                evs.iter()
                    .filter(|e| e.phase == poc_chain::confirmation::ConfirmationPhase::Completed)
                    .count()
                    >= want
            };
            if regular_done && conf_done {
                break;
            }
            tokio::time::sleep(o.block_time / 2).await;
        }
        if let Some((s, ..)) = current.take() {
            stages.push(s);
        }
        ui.finish();
        let report = self.report(stages, started.elapsed(), n).await?;
        Ok(report)
    }

    /// Votes on chain for a stage (v2 and v1).
    async fn votes_at(&self, stage: i64) -> usize {
        let v2: usize = self
            .client
            .validations_v2(stage)
            .await
            .map(|v| {
                v.poc_validation
                    .iter()
                    .map(|p| p.poc_validation.len())
                    .sum()
            })
            .unwrap_or(0);
        let v1: usize = self
            .client
            .validations_v1(stage)
            .await
            .map(|v| {
                v.poc_validation
                    .iter()
                    .map(|p| p.poc_validation.len())
                    .sum()
            })
            .unwrap_or(0);
        v1 + v2
    }

    /// Governance `MsgUpdateParams` turning `poc_v2_enabled` on (no restart).
    async fn switch_to_v2(&mut self, info: &EpochInfoResponse) -> Result<(), DevnetError> {
        let mut params = info.params.clone();
        params.poc_params.poc_v2_enabled = true;
        let signer = poc_chain_client::TxSigner::new(self.client.clone(), self.authority.clone());
        let msg = poc_chain::msgs::Msg::UpdateParams {
            authority: self.authority.address(),
            params: Box::new(params),
        };
        let r = signer
            .send(
                &[poc_chain::tx::TxMsg::Direct(msg)],
                poc_chain::api::BroadcastMode::Block,
            )
            .await
            .map_err(|e| DevnetError::Component(format!("governance: {e}")))?;
        if r.result.code != 0 {
            return Err(DevnetError::Component(format!(
                "governance switch rejected: {}",
                r.result.raw_log
            )));
        }
        self.switched_at = Some(info.effective_epoch.index);
        Ok(())
    }

    /// Each validator's height and hashes at the lowest height all of them reached.
    fn validator_reports(&self) -> Vec<ValidatorReport> {
        let Some(ChainNodes::Replicated(nodes)) = &self.chain else {
            return Vec::new();
        };
        let common = nodes
            .iter()
            .map(|n| n.chain.shared.head().state.height)
            .min()
            .unwrap_or(0);
        nodes
            .iter()
            .map(|n| {
                let db = n.chain.shared.db();
                let block = db.as_ref().and_then(|d| d.block(common).ok().flatten());
                let result = db.as_ref().and_then(|d| d.result(common).ok().flatten());
                ValidatorReport {
                    url: format!("http://{}", n.chain.addr),
                    height: n.chain.shared.head().state.height,
                    block_hash_at_common: block
                        .map(|b| hex::encode(b.header.hash()))
                        .unwrap_or_default(),
                    app_hash_at_common: result.map(|r| hex::encode(r.app_hash)).unwrap_or_default(),
                }
            })
            .collect()
    }

    /// The epoch in which governance switched to V2 (the grace epoch), in migration mode.
    pub fn switched_at(&self) -> Option<u64> {
        self.switched_at
    }

    async fn report(
        &self,
        stages: Vec<StageReport>,
        wall: Duration,
        n: usize,
    ) -> Result<Report, DevnetError> {
        let c = &self.client;
        let e =
            |x: poc_chain_client::ClientError| DevnetError::Component(format!("chain query: {x}"));
        let info = c.epoch_info().await.map_err(e)?;
        let stage = info.latest_epoch.poc_start_block_height;
        let group = c.epoch_group(info.effective_epoch.index).await.map_err(e)?;
        let v2 = info.params.poc_params.poc_v2_enabled;
        let votes = c.validations_v2(stage).await.map_err(e)?;
        let votes_v1 = c.validations_v1(stage).await.map_err(e)?;
        let batches = c.batches(stage).await.map_err(e)?;
        let mut participants = Vec::new();
        for m in &self.members {
            let addr = m.account.address();
            let (count, distribution, valid, invalid) = if v2 {
                let commit = c.store_commit(stage, &addr).await.map_err(e)?;
                let dist = c.distribution(stage, &addr).await.map_err(e)?;
                let rec = votes.poc_validation.iter().find(|r| r.participant == addr);
                let (valid, invalid) = rec
                    .map(|r| {
                        (
                            r.poc_validation
                                .iter()
                                .filter(|v| v.validated_weight > 0)
                                .count(),
                            r.poc_validation
                                .iter()
                                .filter(|v| v.validated_weight <= 0)
                                .count(),
                        )
                    })
                    .unwrap_or((0, 0));
                let d: BTreeMap<String, u32> = dist
                    .weights
                    .iter()
                    .map(|w| (w.node_id.clone(), w.weight))
                    .collect();
                (commit.count, d, valid, invalid)
            } else {
                // v1: unique nonces over the participant's batches, split by ML node.
                let mut seen = std::collections::BTreeSet::new();
                let mut by_node: BTreeMap<String, u32> = BTreeMap::new();
                for b in batches
                    .poc_batch
                    .iter()
                    .filter(|p| p.participant == addr)
                    .flat_map(|p| &p.poc_batch)
                {
                    for n in &b.nonces {
                        if seen.insert(*n) {
                            *by_node.entry(b.node_id.clone()).or_default() += 1;
                        }
                    }
                }
                let rec = votes_v1
                    .poc_validation
                    .iter()
                    .find(|r| r.participant == addr);
                let (valid, invalid) = rec
                    .map(|r| {
                        (
                            r.poc_validation
                                .iter()
                                .filter(|v| !v.fraud_detected)
                                .count(),
                            r.poc_validation.iter().filter(|v| v.fraud_detected).count(),
                        )
                    })
                    .unwrap_or((0, 0));
                (seen.len() as u32, by_node, valid, invalid)
            };
            // The PoC result (a participant deactivated by confirmation PoC keeps it here
            // but leaves the validator set).
            let weight = group
                .as_ref()
                .and_then(|g| g.active_participants.iter().find(|p| p.index == addr))
                .map(|p| p.weight)
                .unwrap_or(0);
            let cw = group
                .as_ref()
                .and_then(|g| g.confirmation_weights.iter().find(|w| w.address == addr))
                .map(|w| w.weight)
                .unwrap_or(0);
            let status = c
                .participant(&addr)
                .await
                .map_err(e)?
                .map(|p| p.participant.status)
                .unwrap_or_default();
            let accepted = weight > 0;
            let expect_accepted = m.cheat.is_none() && !self.options.dropouts.contains(&m.index);
            participants.push(ParticipantReport {
                index: m.index,
                address: addr,
                role: m.cheat.map(|c| c.name().to_owned()).unwrap_or_else(|| {
                    if self.options.dropouts.contains(&m.index) {
                        "honest, goes offline".into()
                    } else {
                        "honest".into()
                    }
                }),
                committed_count: count,
                distribution,
                votes_valid: valid,
                votes_invalid: invalid,
                accepted,
                weight,
                confirmation_weight: cw,
                status,
                as_expected: accepted == expect_accepted
                    || (self.options.dropouts.contains(&m.index)),
            });
        }
        let mut confirmation_events = Vec::new();
        for ep in 1..=info.effective_epoch.index {
            for ev in c.confirmation_events(ep).await.map_err(e)?.events {
                confirmation_events.push((
                    ev.epoch_index,
                    ev.event_sequence,
                    ev.trigger_height,
                    format!("{:?}", ev.phase),
                ));
            }
        }
        let chain_validators = self.validator_reports();
        let chain_agrees = chain_validators.windows(2).all(|w| {
            w[0].app_hash_at_common == w[1].app_hash_at_common
                && w[0].block_hash_at_common == w[1].block_hash_at_common
        });
        let ok =
            participants.iter().all(|p| p.as_expected) && participants.len() == n && chain_agrees;
        Ok(Report {
            mode: self.options.mode,
            participants,
            stages,
            confirmation_events,
            switched_to_v2_in_epoch: self.switched_at,
            wall_s: wall.as_secs_f64(),
            chain_validators,
            ok,
        })
    }

    /// Stops everything cleanly and removes the run directory unless `keep`.
    pub async fn shutdown(mut self) {
        for m in self.members.drain(..) {
            m.api.shutdown().await;
            if let Some(ml) = m.ml {
                ml.shutdown().await;
            }
            if let Some(p) = m.proxy {
                p.abort();
            }
        }
        if let Some(c) = self.chain.take() {
            c.shutdown().await;
        }
        if !self.options.keep {
            let _ = std::fs::remove_dir_all(&self.run_dir);
        }
    }
}

/// The live view on stderr.
struct Progress {
    bars: Option<(
        indicatif::MultiProgress,
        indicatif::ProgressBar,
        Vec<indicatif::ProgressBar>,
    )>,
}

impl Progress {
    fn new(on: bool, members: &[Member]) -> Self {
        if !on {
            return Self { bars: None };
        }
        let mp = indicatif::MultiProgress::with_draw_target(
            indicatif::ProgressDrawTarget::stderr_with_hz(4),
        );
        let style = indicatif::ProgressStyle::with_template("{spinner} {msg}").expect("template");
        let head = mp.add(indicatif::ProgressBar::new_spinner().with_style(style.clone()));
        let rows = members
            .iter()
            .map(|m| {
                let b = mp.add(indicatif::ProgressBar::new_spinner().with_style(style.clone()));
                b.set_message(format!(
                    "p{} {}",
                    m.index,
                    m.cheat.map(|c| c.name()).unwrap_or("honest")
                ));
                b
            })
            .collect();
        Self {
            bars: Some((mp, head, rows)),
        }
    }

    async fn update(
        &self,
        h: i64,
        info: &EpochInfoResponse,
        phase: Phase,
        members: &[Member],
        c: &ChainClient,
    ) {
        let Some((_, head, rows)) = &self.bars else {
            return;
        };
        let ev = info
            .active_confirmation_poc_event
            .as_ref()
            .map(|e| {
                format!(
                    " | confirmation {}/{} {:?}",
                    e.epoch_index, e.event_sequence, e.phase
                )
            })
            .unwrap_or_default();
        head.set_message(format!(
            "height {h} | epoch {} (effective {}) | {}{ev}",
            info.latest_epoch.index,
            info.effective_epoch.index,
            phase.as_str()
        ));
        head.tick();
        let stage = info.latest_epoch.poc_start_block_height;
        let votes = c.validations_v2(stage).await.ok();
        for (m, b) in members.iter().zip(rows) {
            let addr = m.account.address();
            let committed = c
                .store_commit(stage, &addr)
                .await
                .map(|s| s.count)
                .unwrap_or(0);
            let (v, i) = votes
                .as_ref()
                .and_then(|v| v.poc_validation.iter().find(|r| r.participant == addr))
                .map(|r| {
                    (
                        r.poc_validation
                            .iter()
                            .filter(|x| x.validated_weight > 0)
                            .count(),
                        r.poc_validation
                            .iter()
                            .filter(|x| x.validated_weight <= 0)
                            .count(),
                    )
                })
                .unwrap_or((0, 0));
            b.set_message(format!(
                "p{} {:<15} artifacts {:>7} | committed {:>7} | votes +{v} -{i}",
                m.index,
                m.cheat.map(|c| c.name()).unwrap_or("honest"),
                received(m),
                committed
            ));
            b.tick();
        }
    }

    fn finish(&self) {
        if let Some((mp, head, rows)) = &self.bars {
            head.finish_and_clear();
            for r in rows {
                r.finish_and_clear();
            }
            let _ = mp.clear();
        }
    }
}

/// The table printed at the end.
pub fn table(r: &Report) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "{:<3} {:<22} {:<46} {:>9} {:<24} {:>6} {:>8} {:>8} {:>8} {:<9}\n",
        "#",
        "role",
        "address",
        "committed",
        "distribution",
        "valid",
        "invalid",
        "accepted",
        "weight",
        "status"
    ));
    for p in &r.participants {
        let dist = p
            .distribution
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect::<Vec<_>>()
            .join(",");
        s.push_str(&format!(
            "{:<3} {:<22} {:<46} {:>9} {:<24} {:>6} {:>8} {:>8} {:>8} {:<9}{}\n",
            p.index,
            p.role,
            p.address,
            p.committed_count,
            dist,
            p.votes_valid,
            p.votes_invalid,
            if p.accepted { "yes" } else { "no" },
            p.weight,
            p.status,
            if p.as_expected {
                ""
            } else {
                "  <-- unexpected"
            }
        ));
    }
    for (i, v) in r.chain_validators.iter().enumerate() {
        s.push_str(&format!(
            "validator-{i} {} height {}, app hash at the common height {}\n",
            v.url,
            v.height,
            &v.app_hash_at_common[..v.app_hash_at_common.len().min(16)],
        ));
    }
    for st in &r.stages {
        let lat: Vec<String> = st
            .phase_switch_latency_s
            .iter()
            .map(|(i, l)| format!("p{i} {l:.2}s"))
            .collect();
        let rate: Vec<String> = st
            .nonces_per_sec
            .iter()
            .map(|(i, v)| format!("p{i} {v:.0}"))
            .collect();
        s.push_str(&format!(
            "epoch {} (stage {}): first artifact after [{}]; nonces/s [{}]; {} votes in {:.1} s\n",
            st.epoch,
            st.stage,
            lat.join(", "),
            rate.join(", "),
            st.votes,
            st.validation_duration_s
        ));
    }
    if let Some(e) = r.switched_to_v2_in_epoch {
        s.push_str(&format!(
            "governance switched to PoC v2 in epoch {e} (its grace epoch), without a restart\n"
        ));
    }
    for (e, q, t, ph) in &r.confirmation_events {
        s.push_str(&format!("confirmation PoC {e}/{q} at height {t}: {ph}\n"));
    }
    s.push_str(&format!(
        "{} in {:.0} s\n",
        if r.ok {
            "OK: every honest participant accepted, every cheater rejected"
        } else {
            "FAILED: see the rows marked unexpected"
        },
        r.wall_s
    ));
    s
}
