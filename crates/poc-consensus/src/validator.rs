//! One validator: the simplex engine plus the application, over any commonware runtime
//! (deterministic simulation or tokio) and any p2p network (simulated or authenticated).

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use commonware_consensus::simplex::Engine;
use commonware_consensus::simplex::config::{Config, Floor, ForwardPolicy, SkipPolicy};
use commonware_consensus::simplex::elector::RoundRobin;
use commonware_consensus::simplex::scheme::ed25519::Scheme;
use commonware_consensus::types::{Epoch, ViewDelta};
use commonware_cryptography::{Signer, ed25519};
use commonware_p2p::{Blocker, Receiver, Sender};
use commonware_parallel::Sequential;
use commonware_runtime::buffer::paged::CacheRef;
use commonware_runtime::{Clock, Handle, Metrics, Quota, Spawner, Storage};
use commonware_utils::ordered::Set;
use commonware_utils::{NZDuration, NZU16, NZU32, NZUsize};
use poc_chain_node::ChainServices;
use rand_core::CryptoRng;

use crate::app::{App, AppConfig, Behavior, GENESIS, PublicKey};

/// p2p channel ids.
pub const CHANNEL_VOTES: u64 = 0;
/// Certificates.
pub const CHANNEL_CERTIFICATES: u64 = 1;
/// Simplex's own fetcher (missing certificates).
pub const CHANNEL_RESOLVER: u64 = 2;
/// Blocks, block fetch, hellos and transaction gossip.
pub const CHANNEL_APP: u64 = 3;

/// Per-peer message rate allowed on every channel.
pub fn channel_quota() -> Quota {
    Quota::per_second(NZU32!(10_000))
}

/// Settings of one validator.
#[derive(Clone)]
pub struct ValidatorConfig {
    /// Domain separation of every signature (derived from the chain id).
    pub namespace: Vec<u8>,
    /// This validator's key.
    pub signer: ed25519::PrivateKey,
    /// The validator set, from genesis.
    pub validators: Vec<PublicKey>,
    /// Storage partition of the consensus journal.
    pub partition: String,
    /// Least time between blocks.
    pub block_time: Duration,
    /// How long to wait for a leader's proposal before voting to skip the view.
    pub leader_timeout: Duration,
    /// Blocks between state snapshots.
    pub snapshot_interval: i64,
    /// Honest, or a fault for tests.
    pub behavior: Behavior,
}

impl ValidatorConfig {
    /// Defaults for a chain id: timeouts derived from the block time.
    pub fn new(
        chain_id: &str,
        signer: ed25519::PrivateKey,
        validators: Vec<PublicKey>,
        block_time: Duration,
    ) -> Self {
        Self {
            namespace: namespace(chain_id),
            signer,
            validators,
            partition: "poc-consensus".into(),
            block_time,
            leader_timeout: block_time + Duration::from_secs(2),
            snapshot_interval: 100,
            behavior: Behavior::Honest,
        }
    }
}

/// The signature namespace of a chain.
pub fn namespace(chain_id: &str) -> Vec<u8> {
    format!("poc-chain/{chain_id}").into_bytes()
}

/// Why a validator cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The key is not a validator.
    #[error(
        "this node's key {0} is not in the genesis consensus_validators; use one of their keys"
    )]
    NotAValidator(String),
    #[error("the genesis lists no consensus_validators")]
    NoValidators,
}

/// The running tasks of one validator.
pub struct ValidatorHandles {
    /// The consensus engine.
    pub engine: Handle<()>,
    /// The application.
    pub app: Handle<()>,
}

impl ValidatorHandles {
    /// Stops both at once (a crash, for tests).
    pub fn abort(self) {
        self.engine.abort();
        self.app.abort();
    }
}

type Net<S, R> = (S, R);

/// Starts the application and the engine. `blocker` lets the engine block peers that
/// misbehave at the protocol level.
#[allow(clippy::too_many_arguments)]
pub fn start<E, B, S, R>(
    context: E,
    services: Arc<ChainServices>,
    cfg: ValidatorConfig,
    blocker: B,
    votes: Net<S, R>,
    certificates: Net<S, R>,
    resolver: Net<S, R>,
    app_net: Net<S, R>,
) -> Result<ValidatorHandles, StartError>
where
    E: Clock + CryptoRng + Spawner + Storage + Metrics,
    B: Blocker<PublicKey = PublicKey>,
    S: Sender<PublicKey = PublicKey>,
    R: Receiver<PublicKey = PublicKey>,
{
    if cfg.validators.is_empty() {
        return Err(StartError::NoValidators);
    }
    let me = cfg.signer.public_key();
    let participants = Set::from_iter_dedup(cfg.validators.iter().cloned());
    let scheme = Scheme::signer(&cfg.namespace, participants, cfg.signer.clone())
        .ok_or_else(|| StartError::NotAValidator(hex::encode(me.as_ref())))?;
    let (app, mailbox) = App::new(
        context.child("application"),
        AppConfig {
            me,
            validators: cfg.validators.len(),
            block_time: cfg.block_time,
            snapshot_interval: cfg.snapshot_interval,
            behavior: cfg.behavior,
        },
        services,
    );
    let (app_sender, app_receiver) = app_net;
    let app = context
        .child("application")
        .spawn(move |_| app.run(app_sender, app_receiver));
    let leader_timeout = cfg.leader_timeout;
    let engine = Engine::new(
        context.child("engine"),
        Config {
            scheme,
            elector: RoundRobin::<commonware_cryptography::Sha256>::default(),
            blocker,
            automaton: mailbox.clone(),
            relay: mailbox.clone(),
            reporter: mailbox,
            track_historical_votes: false,
            strategy: Sequential,
            partition: cfg.partition,
            mailbox_size: NZUsize!(1024),
            epoch: Epoch::zero(),
            floor: Floor::Genesis(GENESIS),
            replay_buffer: NZUsize!(1024 * 1024),
            write_buffer: NZUsize!(1024 * 1024),
            page_cache: CacheRef::new(NZU16!(4096), NonZeroUsize::new(256).expect("non-zero")),
            leader_timeout,
            certification_timeout: leader_timeout + Duration::from_secs(1),
            timeout_retry: Duration::from_secs(5),
            view_retention: ViewDelta::new(64),
            skip: SkipPolicy::Disabled,
            fetch_timeout: NZDuration!(Duration::from_secs(1)),
            fetch_retry_delay: Duration::from_millis(100),
            forward: ForwardPolicy::SilentVoters,
        },
    );
    let engine = engine.start(votes, certificates, resolver);
    Ok(ValidatorHandles { engine, app })
}
