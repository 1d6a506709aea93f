//! `poc v1 …`.

use anyhow::{Context, bail};
use poc_v1::compute::V1Round;
use poc_v1::params::V1Params;
use serde_json::json;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum V1Command {
    /// Build the round's model and print `{nonce, dist, valid}` per nonce as JSON
    /// (valid = dist < r_target), with the build and compute times on stderr.
    Distances {
        /// Parameter set: `tiny`, `testnet`, `mainnet` (the last two need tens of GB).
        #[arg(long, default_value = "tiny")]
        params: String,
        /// The round's block hash.
        #[arg(long)]
        block_hash: String,
        /// The node's public key.
        #[arg(long)]
        public_key: String,
        /// Nonces `a..b`.
        #[arg(long, default_value = "0..8")]
        nonces: String,
        /// Distance threshold.
        #[arg(long, default_value_t = 1.4013564660458173)]
        r_target: f64,
    },
}

pub fn run(cmd: V1Command) -> anyhow::Result<()> {
    match cmd {
        V1Command::Distances {
            params,
            block_hash,
            public_key,
            nonces,
            r_target,
        } => {
            let p = V1Params::by_name(&params).with_context(|| {
                format!("unknown parameter set {params:?}: use tiny, testnet or mainnet")
            })?;
            let (a, b) = nonces
                .split_once("..")
                .with_context(|| format!("--nonces {nonces:?}: expected a..b"))?;
            let (a, b): (i64, i64) = (
                a.trim().parse().context("--nonces start")?,
                b.trim().parse().context("--nonces end")?,
            );
            if b <= a || b - a > 100_000 {
                bail!("--nonces must be a non-empty range of at most 100,000 nonces");
            }
            let t = std::time::Instant::now();
            let round = V1Round::build(&p, &block_hash, &candle_core::Device::Cpu)?;
            eprintln!(
                "model built in {:.3} s ({} parameters)",
                t.elapsed().as_secs_f64(),
                p.total_parameters()
            );
            let t = std::time::Instant::now();
            let list: Vec<i64> = (a..b).collect();
            let d = round.distances(&public_key, &list)?;
            eprintln!(
                "{} nonces in {:.3} s",
                list.len(),
                t.elapsed().as_secs_f64()
            );
            let out: Vec<_> = list
                .iter()
                .zip(&d)
                .map(|(n, d)| json!({"nonce": n, "dist": d, "valid": *d < r_target}))
                .collect();
            println!("{}", serde_json::to_string(&out)?);
            Ok(())
        }
    }
}
