//! `poc rng ...`: print the deterministic primitives for cross-checking other nodes.

use anyhow::{Context, bail, ensure};
use poc_core::InputRng;
use poc_core::householder::householder_vector;
use poc_core::inputs::split_inputs;
use poc_core::pick::pick_indices;
use poc_core::seed::{inputs_seed_string, pick_seed_string, seed_from_string};
use serde_json::json;

use crate::cli::SeedArgs;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum RngCommand {
    /// Print the 32-bit seed (first 4 SHA-256 bytes, big-endian) of any seed string.
    Seed {
        /// The seed string, e.g. `TEST_BLOCK_test_pub_keys_nonce0`.
        string: String,
    },
    /// Generate the input embeddings of one nonce and print a summary and a slice as JSON.
    Inputs {
        #[command(flatten)]
        seeds: SeedArgs,
        /// The nonce.
        #[arg(long, allow_negative_numbers = true)]
        nonce: i64,
        /// Sequence length L.
        #[arg(long, default_value_t = 1024)]
        seq_len: usize,
        /// Hidden size H of the served model.
        #[arg(long)]
        hidden: usize,
        /// Use the stronger (concat-murmur) generator (`poc_stronger_rng`).
        #[arg(long)]
        stronger: bool,
        /// First element (row-major [L, H] index) to print.
        #[arg(long, default_value_t = 0)]
        offset: usize,
        /// Number of elements to print.
        #[arg(long, default_value_t = 8)]
        count: usize,
    },
    /// Print the first values of the unit Householder vector of a decoder layer.
    Householder {
        /// Block hash of the PoC stage start.
        #[arg(long)]
        block_hash: String,
        /// Global decoder-layer index.
        #[arg(long)]
        layer: usize,
        /// Hidden size H.
        #[arg(long)]
        hidden: usize,
        /// Number of elements to print.
        #[arg(long, default_value_t = 8)]
        count: usize,
    },
    /// Print the k picked dimensions of a nonce, in the normative (CUDA) order.
    Pick {
        #[command(flatten)]
        seeds: SeedArgs,
        /// The nonce.
        #[arg(long, allow_negative_numbers = true)]
        nonce: i64,
        /// Number of dimensions picked.
        #[arg(long, default_value_t = 12)]
        k_dim: usize,
        /// Hidden size H.
        #[arg(long)]
        hidden: usize,
    },
}

/// Draw lengths stay below 2^31: the reference's keys are int32.
const MAX_DRAW: usize = (1 << 31) - 1;

pub fn run(cmd: RngCommand) -> anyhow::Result<()> {
    let out = match cmd {
        RngCommand::Seed { string } => json!({
            "string": string,
            "seed": seed_from_string(&string),
        }),
        RngCommand::Inputs {
            seeds,
            nonce,
            seq_len,
            hidden,
            stronger,
            offset,
            count,
        } => {
            let n = seq_len
                .checked_mul(hidden)
                .filter(|&n| n <= MAX_DRAW && n > 0)
                .with_context(|| {
                    format!(
                        "seq_len x hidden = {seq_len} x {hidden} must be between 1 and 2^31 - 1"
                    )
                })?;
            let end = offset
                .checked_add(count)
                .filter(|&e| e <= n)
                .with_context(|| {
                    format!("--offset {offset} --count {count} runs past the {n} input values")
                })?;
            let rng = InputRng::from_stronger_flag(stronger);
            let mut x = vec![0f32; n];
            for chunk in split_inputs(
                &seeds.block_hash,
                &seeds.public_key,
                nonce,
                rng,
                &mut x,
                usize::MAX,
            ) {
                chunk.fill();
            }
            let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
            let var = x
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / n as f64;
            let seed_string = inputs_seed_string(&seeds.block_hash, &seeds.public_key, nonce);
            json!({
                "seed_string": seed_string,
                "seed": seed_from_string(&seed_string),
                "rng": rng,
                "seq_len": seq_len,
                "hidden": hidden,
                "offset": offset,
                "values": &x[offset..end],
                "mean": mean,
                "std": var.sqrt(),
            })
        }
        RngCommand::Householder {
            block_hash,
            layer,
            hidden,
            count,
        } => {
            ensure!(
                hidden > 0 && hidden <= MAX_DRAW,
                "--hidden must be between 1 and 2^31 - 1"
            );
            if count > hidden {
                bail!("--count {count} exceeds --hidden {hidden}");
            }
            let v = householder_vector(&block_hash, layer, hidden);
            json!({ "layer": layer, "hidden": hidden, "values": &v[..count] })
        }
        RngCommand::Pick {
            seeds,
            nonce,
            k_dim,
            hidden,
        } => {
            ensure!(hidden <= MAX_DRAW, "--hidden must be below 2^31");
            let picked = pick_indices(&seeds.block_hash, &seeds.public_key, nonce, k_dim, hidden)?;
            let s = pick_seed_string(&seeds.block_hash, &seeds.public_key, nonce, k_dim);
            json!({ "seed_string": s, "seed": seed_from_string(&s), "indices": picked })
        }
    };
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}
