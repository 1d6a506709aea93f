//! Command-line definitions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Proof-of-Compute v2: prove GPU compute with the served model.
///
/// One binary for every role of the system. Commands available in this build:
/// `artifacts` (work with PoC artifact files), `store` (operate the durable artifact store
/// an API node keeps per PoC stage) and `rng` (inspect the deterministic random inputs,
/// reflection vectors and picks that every node must reproduce bit for bit).
#[derive(Debug, Parser)]
#[command(name = "poc", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work with PoC artifacts (nonce + k-dim FP16 vector, base64).
    #[command(subcommand)]
    Artifacts(ArtifactsCommand),
    /// Operate an artifact store directory (one PoC stage): append, inspect, prove, check.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Inspect the deterministic PoC random primitives (seeds, inputs, vectors, picks).
    #[command(subcommand)]
    Rng(RngCommand),
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Append artifacts read as JSON lines from stdin, flush, print the snapshot.
    ///
    /// Each line is `{"nonce": n, "vector_b64": "..."}` (nonce a 32-bit integer, vector
    /// standard base64); blank lines are skipped. The store is created if needed. On the
    /// first bad line (malformed JSON, bad base64, duplicate nonce, ...) appending stops:
    /// everything before it is flushed, the error is printed with its line number and
    /// the exit status is 2. Prints `{"count": n, "root": "<base64>"}` of the flushed
    /// snapshot.
    Append {
        /// The stage directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// ML node id the artifacts are attributed to (per-node counts).
        #[arg(long, value_name = "ID")]
        node_id: Option<String>,
    },
    /// Print `{count, flushed_count, root, per_node_counts, ...}` of a store (read-only).
    ///
    /// `count` includes complete artifacts written after the last flush; `root` and
    /// `per_node_counts` are those of the flushed snapshot, the only state ever reported.
    Info {
        /// The stage directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print the base64 root of the snapshot of the first N artifacts (N ≤ flushed count).
    Root {
        /// The stage directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Snapshot size (a count committed earlier, for example).
        #[arg(long, value_name = "N")]
        count: u64,
    },
    /// Print one artifact with its inclusion proof against the snapshot of N artifacts,
    /// as an item of the proof API: `{leaf_index, nonce_value, vector_bytes, proof}`.
    Proof {
        /// The stage directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Leaf index (0-based order of appends).
        #[arg(long, value_name = "I")]
        leaf: u64,
        /// Snapshot size.
        #[arg(long, value_name = "N")]
        count: u64,
    },
    /// Check a store (fsck): re-read every record, verify checksums and record rules,
    /// rebuild the tree and compare the root with the metadata. Prints a JSON report.
    /// Exit status 0 when sound, 1 when not. Changes nothing.
    Verify {
        /// The stage directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Measure ingest, recovery, proof and memory figures on this machine.
    ///
    /// Creates a store of N artifacts (24-byte vectors) in a temporary directory (or
    /// --dir, which must not exist), then reports: ingest rate including hashing and the
    /// final fsync, reopen (recovery) time and resident memory of a fresh process holding
    /// the reopened store, single proof generate+verify time, and 200-leaf batch proof time.
    Bench {
        /// Number of artifacts.
        #[arg(long, default_value_t = 1_000_000, value_name = "N")]
        artifacts: u64,
        /// Where to build the store (default: a temporary directory, removed afterwards).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Internal: open a store and print the open time and resident memory (used by bench).
    #[command(hide = true)]
    OpenStats {
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ArtifactsCommand {
    /// Validate received artifacts against recomputed ones, as a validator's ML node does.
    ///
    /// Both files hold the ML node's response shape,
    /// `{"artifacts": [{"nonce": n, "vector_b64": "..."}, ...]}` (other top-level keys such
    /// as `encoding` or `status` are allowed). Nonces are matched by value. A received
    /// nonce mismatches when its vector is malformed (bad base64, wrong length, NaN/Inf) or
    /// its L2 distance to the recomputed vector is strictly greater than
    /// `--dist-threshold`. `n_total` is the number of received artifacts. The verdict is
    /// printed as JSON on stdout:
    /// `{n_total, n_mismatch, mismatch_nonces, p_value, fraud_detected}`.
    ///
    /// Exit status: 0 when the comparison ran (whatever the verdict, unless
    /// `--fail-on-fraud`), 1 with `--fail-on-fraud` when fraud was detected, 2 when an
    /// input file or option is invalid.
    Compare(CompareArgs),
    /// Turn last-token hidden states into artifacts (normalise, pick, Haar, FP16, base64).
    ///
    /// This is the model-independent tail of the PoC pipeline (spec §2.6–§2.10). Feed it
    /// hidden states dumped from any implementation (after the final norm, last position,
    /// as f32) to check that both produce the same artifacts. The input file is
    /// `{"hidden_states": [{"nonce": n, "values": [h_0, ..., h_{H-1}]}, ...]}`; the output
    /// on stdout is the ML node's shape, `{"artifacts": [...], "encoding": {...}}`.
    Project(ProjectArgs),
}

#[derive(Debug, Args)]
pub struct ProjectArgs {
    #[command(flatten)]
    pub seeds: SeedArgs,
    /// JSON file with the hidden states (see the command's help).
    #[arg(long, value_name = "FILE")]
    pub hidden: PathBuf,
    /// Number of dimensions per artifact.
    #[arg(long, default_value_t = 12)]
    pub k_dim: usize,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Artifacts recomputed by the validator (trusted side).
    #[arg(long, value_name = "FILE")]
    pub computed: PathBuf,
    /// Artifacts received from the participant being validated.
    #[arg(long, value_name = "FILE")]
    pub received: PathBuf,
    /// A nonce mismatches when the L2 distance is strictly greater than this.
    #[arg(long, default_value_t = 0.02, value_name = "DIST")]
    pub dist_threshold: f64,
    /// Probability that an honest nonce mismatches (null hypothesis of the binomial test).
    #[arg(long, default_value_t = 0.001, value_name = "P")]
    pub p_mismatch: f64,
    /// Fraud is detected when the one-sided binomial p-value is strictly below this.
    #[arg(
        long,
        default_value_t = 0.01,
        value_name = "P",
        alias = "p-value-threshold"
    )]
    pub fraud_threshold: f64,
    /// Exit with status 1 when fraud is detected.
    #[arg(long)]
    pub fail_on_fraud: bool,
}

/// The round and participant every PoC seed string is built from.
#[derive(Debug, Args)]
pub struct SeedArgs {
    /// Block hash of the PoC stage start, used verbatim (case matters).
    #[arg(long)]
    pub block_hash: String,
    /// Participant public key, used verbatim (case matters).
    #[arg(long)]
    pub public_key: String,
}

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
