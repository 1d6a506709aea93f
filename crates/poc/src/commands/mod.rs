//! Command implementations: thin shells that read files, call the domain crates and print.

mod api;
mod artifacts;
mod calibrate;
mod chain;
mod devnet;
mod keys;
mod mlnode;
mod model;
mod rng;
mod store;
mod v1;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use api::ApiArgs;
use artifacts::ArtifactsCommand;
use calibrate::CalibrateArgs;
use chain::ChainCommand;
use devnet::DevnetArgs;
use keys::KeysCommand;
use mlnode::MlnodeArgs;
use model::ModelCommand;
use rng::RngCommand;
use store::StoreCommand;
use v1::V1Command;

/// Proof-of-Compute v2: prove GPU compute with the served model.
///
/// One binary for every role of the system. Commands available in this build:
/// `model` (create and inspect checkpoints), `artifacts` (compute, compare and project PoC
/// artifacts), `store` (operate the durable artifact store an API node keeps per PoC stage)
/// and `rng` (inspect the deterministic random inputs, reflection vectors and picks that
/// every node must reproduce bit for bit).
#[derive(Debug, Parser)]
#[command(name = "poc", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an ML node: the PoC v2 API and chat completions on one loaded model.
    Mlnode(MlnodeArgs),
    /// Create and inspect model checkpoints (Hugging Face layout).
    #[command(subcommand)]
    Model(ModelCommand),
    /// Work with PoC artifacts (nonce + k-dim FP16 vector, base64).
    #[command(subcommand)]
    Artifacts(ArtifactsCommand),
    /// Operate an artifact store directory (one PoC stage): append, inspect, prove, check.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Inspect the deterministic PoC random primitives (seeds, inputs, vectors, picks).
    #[command(subcommand)]
    Rng(RngCommand),
    /// Run and operate a PoC chain node (state machine, blocks, REST).
    #[command(subcommand)]
    Chain(ChainCommand),
    /// Create and inspect secp256k1 account keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Run a participant's API node: drive ML nodes through PoC, store artifacts, commit
    /// to the chain, serve proofs and validate other participants.
    ///
    /// Settings come from `--config FILE` (TOML; `examples/api.toml` documents every
    /// field); each flag or environment variable below overrides the file.
    Api(ApiArgs),
    /// Run the whole system on this machine: a chain node, and per participant an ML node
    /// and an API node, talking HTTP on loopback; some participants cheat. Prints a table
    /// of the outcome; exits 0 when every honest participant was accepted and every
    /// cheater rejected, 1 otherwise.
    Devnet(DevnetArgs),
    /// PoC v1 compute: distances of nonces on the random-weight model of a block hash.
    #[command(subcommand)]
    V1(V1Command),
    /// Redo the experiment the PoC v2 thresholds rest on: artifacts of the same nonces
    /// under honest variants (dtypes, FP8, batch composition, files from other machines)
    /// and cheaper or modified ones (4-bit, perturbed layer, swapped experts, skipped
    /// reflections, random); then distances, the threshold at an honest percentile, the
    /// power of the chain's test and weighted vote, and the phase length.
    ///
    /// Writes report.md, report.json, plots/*.svg and artifacts/ under --out
    /// (docs/calibrate.md explains every number).
    Calibrate(CalibrateArgs),
}

/// Runs one parsed command line. `Err` means invalid input (exit status 2).
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Artifacts(ArtifactsCommand::Compare(args)) => artifacts::compare(&args),
        Command::Mlnode(args) => mlnode::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Model(cmd) => model::run(cmd).map(|()| ExitCode::SUCCESS),
        Command::Artifacts(ArtifactsCommand::Compute(args)) => {
            artifacts::compute(&args).map(|()| ExitCode::SUCCESS)
        }
        Command::Artifacts(ArtifactsCommand::Bench(args)) => {
            artifacts::bench(&args).map(|()| ExitCode::SUCCESS)
        }
        Command::Artifacts(ArtifactsCommand::Project(args)) => {
            artifacts::project(&args).map(|()| ExitCode::SUCCESS)
        }
        Command::Store(cmd) => store::run(cmd),
        Command::Rng(cmd) => rng::run(cmd).map(|()| ExitCode::SUCCESS),
        Command::Chain(cmd) => chain::run(cmd).map(|()| ExitCode::SUCCESS),
        Command::Keys(cmd) => keys::run(cmd).map(|()| ExitCode::SUCCESS),
        Command::Api(args) => api::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Devnet(args) => devnet::run(&args),
        Command::V1(cmd) => v1::run(cmd).map(|()| ExitCode::SUCCESS),
        Command::Calibrate(args) => calibrate::run(&args).map(|()| ExitCode::SUCCESS),
    }
}
