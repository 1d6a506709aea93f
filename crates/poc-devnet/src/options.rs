//! What a devnet runs: its options, and the genesis parameters they make.

use std::path::PathBuf;
use std::time::Duration;

use poc_chain::decimal::Decimal;
use poc_chain::params::{Params, StatTestParams};
use poc_chain_node::home;
use serde::Serialize;

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
