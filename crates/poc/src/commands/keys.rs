//! `poc keys`: create and inspect secp256k1 account keys.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use poc_chain_node::home;
use serde_json::json;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate a key into FILE (hex secret, mode 0600; never overwrites) and print its
    /// address and public key.
    New {
        /// Key file to create.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Print the address and public key of a key file.
    Show {
        /// Key file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// Runs `poc keys …`.
pub fn run(cmd: KeysCommand) -> anyhow::Result<()> {
    let (key, file) = match cmd {
        KeysCommand::New { out } => {
            let k = home::generate_key().context("cannot read the system's random generator")?;
            home::write_key(&out, &k).with_context(|| {
                format!("cannot create {} (it must not exist yet)", out.display())
            })?;
            (k, out)
        }
        KeysCommand::Show { file } => (home::read_key(&file)?, file),
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "file": file,
            "address": key.address(),
            "hex_pub_key": key.public_key_hex(),
        }))?
    );
    Ok(())
}
