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
mod generation;
mod http;
pub mod metrics;
pub mod mlnodes;
mod node;
pub mod phase;
pub mod plan;
pub mod proofs;
pub mod sampling;
pub mod server;
pub mod signers;
pub mod timing;
mod tracker;
pub mod v1flow;
pub mod validator;
mod votes;

pub use node::{RunningApi, start};

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use poc_chain::keys::PrivateKey;
use poc_http::ServerStats;
use poc_store::StageStores;

use crate::callbacks::{AllowList, CallbackTokens, Grant};
use crate::chainio::ChainIo;
use crate::config::ApiConfig;
use crate::metrics::Metrics;
use crate::mlnodes::Broker;
use crate::phase::ChainView;
use crate::signers::SignerCache;
use crate::timing::{BlockClock, VoteQueue};

/// Errors starting the node.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bad configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// A configuration value breaks a rule.
    #[error("configuration: {0}")]
    Invalid(#[from] config::ConfigError),
    /// The callback token secret cannot be read or made.
    #[error(transparent)]
    Tokens(#[from] callbacks::TokenSecretError),
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

/// Everything the tasks and handlers share.
pub struct ApiNode {
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
    /// Who may sign for each validator (proof requests and responses).
    pub(crate) signers: SignerCache,
    /// Proof requests allowed per client.
    limiter: server::ProofLimiter,
    pub(crate) proof_http: reqwest::Client,
    /// The generation the ML nodes are kept running.
    pub(crate) generation: generation::Keeper,
}

impl ApiNode {
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

    /// The hash of block `h` as the PoC seed uses it: CometBFT's `Hash().String()`,
    /// uppercase hex (`docs/protocol/chain-and-api.md` §6.3), read through the SDK
    /// gateway.
    async fn block_hash(&self, h: i64) -> Option<String> {
        self.io.client.block_hash(h).await.ok().flatten()
    }
}
