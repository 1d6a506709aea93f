//! Command implementations: thin shells that read files, call the domain crates and print.

mod api;
mod artifacts;
mod chain;
mod devnet;
mod mlnode;
mod model;
mod rng;
mod store;
mod v1;

use std::process::ExitCode;

use crate::cli::{ArtifactsCommand, Cli, Command};

/// Runs one parsed command line. `Err` means invalid input (exit status 2).
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Artifacts(ArtifactsCommand::Compare(args)) => artifacts::compare(&args),
        Command::Mlnode(args) => mlnode::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Model(cmd) => model::run(cmd).map(|()| ExitCode::SUCCESS),
        Command::Artifacts(ArtifactsCommand::Compute(args)) => {
            model::compute(&args).map(|()| ExitCode::SUCCESS)
        }
        Command::Artifacts(ArtifactsCommand::Bench(args)) => {
            model::bench(&args).map(|()| ExitCode::SUCCESS)
        }
        Command::Artifacts(ArtifactsCommand::Project(args)) => {
            artifacts::project(&args).map(|()| ExitCode::SUCCESS)
        }
        Command::Store(cmd) => store::run(cmd),
        Command::Rng(cmd) => rng::run(cmd).map(|()| ExitCode::SUCCESS),
        Command::Chain(cmd) => chain::run(cmd).map(|()| ExitCode::SUCCESS),
        Command::Keys(cmd) => chain::keys(cmd).map(|()| ExitCode::SUCCESS),
        Command::Api(args) => api::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Devnet(args) => devnet::run(&args),
        Command::V1(cmd) => v1::run(cmd).map(|()| ExitCode::SUCCESS),
    }
}
