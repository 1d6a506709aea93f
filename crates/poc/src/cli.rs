//! Command-line definitions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
}

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

#[derive(Debug, clap::Args)]
pub struct DevnetArgs {
    /// Participants in total.
    #[arg(long, default_value_t = 4)]
    pub participants: usize,
    /// How many of them cheat, one kind each, round-robin: (a) the 4-bit-rounded model,
    /// (b) random vectors for 40 % of its nonces, (c) an inflated count (every vector
    /// also reported under a fabricated nonce).
    #[arg(long, default_value_t = 1)]
    pub cheaters: usize,
    /// Regular PoC rounds to run.
    #[arg(long, default_value_t = 2)]
    pub epochs: u64,
    /// `v2`; `v1` (PoC v1 on the tiny v1 model); `migration` (v1 with v2 tracking, then a
    /// governance switch to v2 halfway, without restarts).
    #[arg(long, default_value = "v2", value_parser = ["v2", "v1", "migration"])]
    pub mode: String,
    /// `tiny-moe` (embedded, generated and cached under the home) or a checkpoint directory.
    #[arg(long, default_value = "tiny-moe")]
    pub model: String,
    /// PoC sequence length.
    #[arg(long, default_value_t = 32)]
    pub seq_len: i64,
    /// Write the JSON report here (the table's data plus timings).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Home directory: `models/` (cached) and `run/` (this run's chain, stores, keys).
    #[arg(long, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Keep `run/` afterwards (otherwise it is deleted).
    #[arg(long)]
    pub keep: bool,
    /// Chain block time (`500ms`, `1s`).
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub block_time: std::time::Duration,
    /// Blocks per epoch.
    #[arg(long, default_value_t = 40)]
    pub epoch_length: i64,
    /// Expected confirmation PoCs per epoch (0: none; needs epochs of about 100 blocks).
    #[arg(long, default_value_t = 0)]
    pub confirmations: u64,
    /// Run the chain as N replicated validators (commonware simplex BFT over loopback
    /// p2p) instead of one block producer; API nodes spread over them.
    #[arg(long, default_value_t = 0)]
    pub validators: usize,
    /// No live progress view.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE", env = "POC_API_CONFIG")]
    pub config: Option<PathBuf>,
    /// Chain node REST URL.
    #[arg(long, env = "POC_API_CHAIN_URL")]
    pub chain_url: Option<String>,
    /// Account (cold) key file.
    #[arg(long, value_name = "FILE", env = "POC_API_ACCOUNT_KEY")]
    pub account_key: Option<PathBuf>,
    /// Operational (warm) key file.
    #[arg(long, value_name = "FILE", env = "POC_API_OPERATIONAL_KEY")]
    pub operational_key: Option<PathBuf>,
    /// Public URL of this node's proof API.
    #[arg(long, env = "POC_API_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Public server listen address.
    #[arg(long, env = "POC_API_PUBLIC_LISTEN")]
    pub public_listen: Option<String>,
    /// ML callback server listen address.
    #[arg(long, env = "POC_API_ML_LISTEN")]
    pub ml_listen: Option<String>,
    /// Base URL the ML nodes call back.
    #[arg(long, env = "POC_API_CALLBACK_URL")]
    pub callback_url: Option<String>,
    /// Data directory for the artifact stores.
    #[arg(long, value_name = "DIR", env = "POC_API_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// An ML node as `ID=URL` (repeatable; replaces the file's list).
    #[arg(
        long = "ml-node",
        value_name = "ID=URL",
        env = "POC_API_ML_NODES",
        value_delimiter = ','
    )]
    pub ml_nodes: Vec<String>,
    /// Seconds between flush + commit attempts.
    #[arg(long, env = "POC_API_COMMIT_INTERVAL")]
    pub commit_interval: Option<f64>,
    /// Allow proof requests to private/loopback addresses (devnets).
    #[arg(long, env = "POC_API_ALLOW_PRIVATE_TARGETS")]
    pub allow_private_targets: Option<bool>,
    /// Networks the ML callback server accepts requests from, comma-separated
    /// (`10.0.0.0/8,192.168.1.7`); default: loopback and the ML nodes' addresses.
    #[arg(
        long,
        value_name = "NETS",
        env = "POC_API_CALLBACK_ALLOW",
        value_delimiter = ','
    )]
    pub callback_allow: Vec<String>,
    /// Limits of the public and callback servers.
    #[command(flatten)]
    pub http: HttpArgs,
    /// Print the example configuration and exit.
    #[arg(long)]
    pub print_example: bool,
}

/// Limits of an HTTP server (docs/http.md). Unset values keep the configuration's, or
/// the defaults: 10 s header/idle timeout, 60 s body and write timeouts, 1024
/// connections, 256 per client address.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpArgs {
    /// Seconds a client has to send a request head after connecting or after its previous
    /// response (so also the keep-alive idle timeout); then the connection is closed
    /// [default: 10].
    #[arg(long, value_name = "SECS", env = "POC_HTTP_HEADER_TIMEOUT")]
    pub http_header_timeout: Option<f64>,
    /// Seconds a client has to send a request body after its head [default: 60].
    #[arg(long, value_name = "SECS", env = "POC_HTTP_BODY_TIMEOUT")]
    pub http_body_timeout: Option<f64>,
    /// Seconds a response write may make no progress (the client stopped reading) before
    /// the connection is closed [default: 60].
    #[arg(long, value_name = "SECS", env = "POC_HTTP_WRITE_TIMEOUT")]
    pub http_write_timeout: Option<f64>,
    /// Connections served at once; further clients wait in the kernel's accept queue
    /// [default: 1024].
    #[arg(long, value_name = "N", env = "POC_HTTP_MAX_CONNECTIONS")]
    pub http_max_connections: Option<usize>,
    /// Connections served at once from one client address; more are closed at once
    /// [default: 256].
    #[arg(long, value_name = "N", env = "POC_HTTP_MAX_CONNECTIONS_PER_IP")]
    pub http_max_connections_per_ip: Option<usize>,
}

impl HttpArgs {
    /// `base` with the flags applied, checked.
    pub fn apply(&self, base: poc_http::HttpLimits) -> anyhow::Result<poc_http::HttpLimits> {
        let l = poc_http::HttpLimits {
            header_timeout_s: self.http_header_timeout.unwrap_or(base.header_timeout_s),
            body_timeout_s: self.http_body_timeout.unwrap_or(base.body_timeout_s),
            write_timeout_s: self.http_write_timeout.unwrap_or(base.write_timeout_s),
            max_connections: self.http_max_connections.unwrap_or(base.max_connections),
            max_connections_per_ip: self
                .http_max_connections_per_ip
                .unwrap_or(base.max_connections_per_ip),
        };
        l.validate()
            .map_err(|e| anyhow::anyhow!("invalid HTTP limit: {e}"))?;
        Ok(l)
    }
}

#[derive(Debug, Subcommand)]
pub enum ChainCommand {
    /// Create a chain home: `genesis.json`, `data/`, `keys/`.
    ///
    /// Without `--genesis`, writes the default local network (documented in
    /// docs/chain.md): chain id `poc-local`, 40-block epochs, PoC v2 on, a generated
    /// governance authority (`keys/authority.key`) and `--participants` generated
    /// participants of weight 10 (`keys/participant-N.key`). Refuses an existing home.
    Init {
        /// Home directory.
        #[arg(long, value_name = "DIR")]
        home: PathBuf,
        /// Use this genesis JSON instead of the default.
        #[arg(long, value_name = "FILE")]
        genesis: Option<PathBuf>,
        /// Chain id of the default genesis.
        #[arg(long, default_value = "poc-local")]
        chain_id: String,
        /// Genesis participants to generate for the default genesis.
        #[arg(long, default_value_t = 0)]
        participants: usize,
        /// Consensus validators to generate (`keys/validator-N.key`, added to the genesis
        /// as `consensus_validators`) for a replicated chain; copy the genesis to every
        /// validator's home with `--genesis`.
        #[arg(long, default_value_t = 0)]
        validators: usize,
    },
    /// Run the node: produce a block every `--block-time`, serve REST, persist to
    /// `DIR/data/chain.redb`. Restarts where it stopped. Ctrl-C / SIGTERM stop it cleanly.
    ///
    /// With `--validator-key`, the node is one validator of a replicated chain: blocks come
    /// from BFT consensus (commonware simplex) among the genesis `consensus_validators`
    /// over authenticated, encrypted p2p (`--p2p`, `--peers`), at most one per
    /// `--block-time`. A restarted validator replays its own storage and fetches what it
    /// missed from its peers.
    Start {
        /// Home directory (from `poc chain init`).
        #[arg(long, value_name = "DIR")]
        home: PathBuf,
        /// Time between blocks (`1s`, `500ms`, `2.5s`).
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        block_time: std::time::Duration,
        /// REST listen address.
        #[arg(long, default_value = "127.0.0.1:1317")]
        rest: std::net::SocketAddr,
        /// Blocks between state snapshots (restart replays at most this many).
        #[arg(long, default_value_t = 100)]
        snapshot_interval: i64,
        /// This validator's ed25519 key file (from `poc chain init --validators N`):
        /// run as one validator of a replicated chain.
        #[arg(long, value_name = "FILE")]
        validator_key: Option<PathBuf>,
        /// p2p listen address (replicated mode).
        #[arg(long, default_value = "127.0.0.1:26656")]
        p2p: std::net::SocketAddr,
        /// The other validators, comma-separated `NAME@HOST:PORT` (NAME as in genesis, e.g.
        /// `validator-1`) or `PUBKEY@HOST:PORT` (replicated mode).
        #[arg(long, value_delimiter = ',', value_name = "PEERS")]
        peers: Vec<String>,
        /// Limits of the REST server.
        #[command(flatten)]
        http: HttpArgs,
    },
    /// Replay every stored block from genesis and check each app hash (read-only; stop
    /// the node first).
    Replay {
        /// Home directory.
        #[arg(long, value_name = "DIR")]
        home: PathBuf,
    },
    /// Print a node's status and epoch info as JSON.
    Status {
        /// Node REST URL.
        #[arg(long, default_value = "http://127.0.0.1:1317")]
        node: String,
    },
    /// Governance: replace the chain parameters (signed by the genesis authority).
    ///
    /// `--set` edits the node's current parameters, e.g. `--set poc_params.poc_v2_enabled=true`
    /// (the value is JSON; plain words are taken as strings). Prints the transaction result.
    UpdateParams {
        /// Node REST URL.
        #[arg(long, default_value = "http://127.0.0.1:1317")]
        node: String,
        /// The authority's key file.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// A complete parameters JSON file (as `GET …/params` answers under `params`).
        #[arg(long, value_name = "FILE")]
        params: Option<PathBuf>,
        /// `path.to.field=value` edits (repeatable).
        #[arg(long = "set", value_name = "PATH=JSON")]
        set: Vec<String>,
    },
}

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

/// Parses `1s`, `500ms`, `2.5s`, `1m`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        return Err(format!("{s:?}: give a unit, e.g. 1s, 500ms, 1m"));
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("{s:?} must be positive"));
    }
    Ok(std::time::Duration::from_secs_f64(v * mult))
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

/// `poc mlnode`.
///
/// Loads the model once and serves, on the same weights: the ML node's PoC v2 API under
/// `/api/v1/inference/pow/` (init/generate, generate, generate/{id}, status, stop; the
/// backend layer under `/api/v1/pow/`), OpenAI-style `/v1/chat/completions` and
/// `/v1/models`, `/health` and Prometheus `/metrics`. While continuous PoC generation
/// runs, chat answers 503. The reference's environment variables apply:
/// POC_BATCH_SIZE_DEFAULT, POC_CALLBACK_INTERVAL_SEC, POC_CALLBACK_MAX_ARTIFACTS,
/// POC_CALLBACK_MAX_RETRIES, POC_GENERATE_RESULT_TTL_SEC, POC_MAX_QUEUED_NONCES,
/// POC_GENERATE_CHUNK_TIMEOUT_SEC. Stops gracefully on Ctrl-C / SIGTERM, delivering
/// generated artifacts first.
#[derive(Debug, Args)]
pub struct MlnodeArgs {
    /// Model directory (config.json, safetensors, tokenizer.json for chat).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Another name requests may use for the model (repeatable).
    #[arg(long = "served-model-name", value_name = "NAME")]
    pub served_model_names: Vec<String>,
    /// Listen host.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Listen port (0 = any free port).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Compute dtype; `auto` is the checkpoint's dtype.
    #[arg(long, default_value = "auto", value_parser = ["auto", "bf16", "f16", "f32"])]
    pub dtype: String,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// How chat and continuous PoC generation share the model. `mixed` (the default):
    /// every step is one forward over PoC sequences and chat rows together, within
    /// `--max-batch-tokens`, PoC taking at most `--poc-share` of it while chat waits.
    /// `chat-priority`: chat is served during PoC and PoC batches wait while any chat is
    /// pending or running (the reference's gm/poc-layers node). `poc-priority`: chat gets
    /// 503 and running chats are aborted while PoC generates (the reference's vLLM node).
    /// Also `POC_CHAT_POLICY`.
    #[arg(long, value_parser = ["mixed", "chat-priority", "poc-priority"])]
    pub poc_chat_policy: Option<String>,
    /// Most tokens (rows) of one engine step: PoC rows count seq_len per nonce, chat rows
    /// one per decode token or prompt token (prompts are fed in chunks). Bounds the
    /// latency of a step. Also `POC_MAX_BATCH_TOKENS` [default: 8192].
    #[arg(long)]
    pub max_batch_tokens: Option<usize>,
    /// The fraction of the step budget PoC rows may take while chat waits (`mixed`);
    /// chat gets at least the rest. Also `POC_SHARE` [default: 0.8].
    #[arg(long)]
    pub poc_share: Option<f64>,
    /// Largest batch_size a request may use.
    #[arg(long, default_value_t = 32)]
    pub max_batch_size: usize,
    /// Longest seq_len a request may use.
    #[arg(long, default_value_t = 4096)]
    pub max_seq_len: usize,
    /// Instead of serving, measure the node through its own HTTP API on a free loopback
    /// port and print JSON: PoC nonces/s through the server vs. the direct forward,
    /// phase-switch latency with a chat running, chat tokens/s.
    #[arg(long)]
    pub bench: bool,
    /// Benchmark: sequence length.
    #[arg(long, default_value_t = 256, requires = "bench")]
    pub bench_seq_len: usize,
    /// Benchmark: nonces per batch.
    #[arg(long, default_value_t = 8, requires = "bench")]
    pub bench_batch_size: usize,
    /// Benchmark: seconds of timed continuous generation (and of each chat-load window).
    #[arg(long, default_value_t = 10.0, requires = "bench")]
    pub bench_seconds: f64,
    /// Benchmark, chat load: concurrent streaming chat clients per window; each count is
    /// measured with PoC generating and (above 0) without. Empty: skip the chat load.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0,1,4,16",
        requires = "bench"
    )]
    pub bench_chats: Vec<usize>,
    /// Benchmark, chat load: the policies to measure side by side.
    #[arg(long, value_delimiter = ',', default_value = "mixed,chat-priority", requires = "bench",
          value_parser = ["mixed", "chat-priority", "poc-priority"])]
    pub bench_policies: Vec<String>,
    /// Benchmark, chat load: tokens per chat completion.
    #[arg(long, default_value_t = 64, requires = "bench")]
    pub bench_chat_tokens: usize,
    /// Limits of the HTTP server.
    #[command(flatten)]
    pub http: HttpArgs,
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Write a built-in random-weight checkpoint (deterministic; nothing is downloaded).
    ///
    /// Presets: `tiny-moe` (Qwen3-MoE, 8 experts, 4 layers, the devnet's model),
    /// `tiny-dense` (Qwen3, 4 layers), `bench-dense-0.6b` (Qwen3-0.6B shapes, ~1.2 GB),
    /// `bench-moe-30b-a3b-2l` (Qwen3-30B-A3B shapes with 2 layers, ~3.7 GB). Each comes with
    /// config.json, model.safetensors, a byte-level tokenizer.json and a chat template.
    ///
    /// `qwen3-235b-a22b-fp8` is the production model's configuration (94 layers of hidden
    /// 4096, 128 experts, FP8 128x128 blocks) with random FP8 weights, written as one shard
    /// per layer (2.5 GB each); `--layers N` keeps the real widths with fewer layers.
    Init {
        /// Which preset.
        #[arg(long, value_parser = PRESETS)]
        preset: String,
        /// Decoder layers (default: the preset's own count).
        #[arg(long)]
        layers: Option<usize>,
        /// Write only config.json and the tokenizer files (e.g. for a framework that builds
        /// its own random weights of the same shapes).
        #[arg(long)]
        config_only: bool,
        /// Output directory (created; existing files are overwritten).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Say whether a model fits on N devices and how its layers would be placed, before
    /// loading anything.
    ///
    /// Counts the resident weight bytes from the configuration (FP8 matrices at one byte
    /// plus their scales when they stay FP8) and estimates the activations of one batch.
    /// Prints `{fits, per_device: [{layers, weight_bytes, activation_bytes, ...}], ...}`
    /// (JSON with `--json`); exits 0 whether it fits or not.
    #[command(group(clap::ArgGroup::new("source").required(true).args(["model", "preset"])))]
    Plan {
        /// Model directory (only config.json is read).
        #[arg(long, value_name = "DIR")]
        model: Option<PathBuf>,
        /// A built-in preset instead of a directory.
        #[arg(long, value_parser = PRESETS)]
        preset: Option<String>,
        /// With `--preset`: decoder layers.
        #[arg(long, requires = "preset")]
        layers: Option<usize>,
        /// Number of devices (pipeline stages).
        #[arg(long, default_value_t = 1)]
        devices: usize,
        /// Memory of each device, e.g. `141GiB`, `80GB`.
        #[arg(long, default_value = "80GiB")]
        device_memory: String,
        /// Nonces per batch the activations are estimated for.
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        /// Sequence length the activations are estimated for.
        #[arg(long, default_value_t = 1024)]
        seq_len: usize,
        /// Compute dtype.
        #[arg(long, default_value = "bf16", value_parser = ["bf16", "f16", "f32"])]
        dtype: String,
        /// How FP8 weights are kept (`dequantize`, `w8a16`, `w8a8`).
        #[arg(long, default_value = "w8a16", value_parser = ["dequantize", "w8a16", "w8a8"])]
        fp8_path: String,
        /// Memory kept free on every device for the runtime.
        #[arg(long, default_value = "2GiB")]
        reserve: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a checkpoint's architecture, dtypes, parameter count and tensors as JSON.
    Info {
        /// The model directory.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// Also list every tensor with its dtype and shape.
        #[arg(long)]
        tensors: bool,
    },
    /// Write a quantized copy of a checkpoint.
    ///
    /// `--fp8`: block-wise FP8 (e4m3) weights with per-block scales, the layout of the
    /// production FP8 models (loaded back with dequantization). `--int4-rounded`: linear
    /// weights rounded to 4 bits per row but stored in the original dtype, the "cheaper
    /// model" a PoC validator must be able to tell apart.
    #[command(group(clap::ArgGroup::new("format").required(true).args(["fp8", "int4_rounded"])))]
    Quantize {
        /// Block-wise FP8 e4m3.
        #[arg(long)]
        fp8: bool,
        /// Linear weights rounded to 4 bits per row.
        #[arg(long)]
        int4_rounded: bool,
        /// Block size of the scales (rows = columns).
        #[arg(long, default_value_t = 128)]
        block: usize,
        /// The checkpoint to quantize.
        #[arg(value_name = "IN")]
        input: PathBuf,
        /// Output directory.
        #[arg(value_name = "OUT")]
        output: PathBuf,
    },
}

/// Which nonces to compute: an explicit list or a half-open range.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct NonceSelection {
    /// Comma-separated nonces, e.g. `0,5,9`.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub nonces: Vec<i64>,
    /// A half-open range `START..END`, e.g. `0..100`.
    #[arg(long, value_name = "START..END")]
    pub nonce_range: Option<String>,
}

/// Names of the built-in presets.
pub const PRESETS: [&str; 5] = [
    "tiny-moe",
    "tiny-dense",
    "bench-dense-0.6b",
    "bench-moe-30b-a3b-2l",
    "qwen3-235b-a22b-fp8",
];

/// Where the model runs and how FP8 weights are kept.
#[derive(Debug, Args, Clone)]
pub struct DeviceArgs {
    /// Devices, comma-separated: `cpu`, `cuda`, `cuda:N`. Several devices form a layer
    /// pipeline in that order (contiguous layer ranges placed by the memory planner,
    /// batches flowing from device to device), e.g. `cuda:0,cuda:1`. Default: the first
    /// GPU in a CUDA build, else the CPU (or `POC_DEVICE`).
    #[arg(long, env = "POC_DEVICES", value_delimiter = ',', value_name = "LIST")]
    pub devices: Vec<String>,
    /// How FP8 checkpoint weights are kept: `dequantize` (widened at load), `w8a16` (FP8
    /// resident, dequantized just before each product; same artifacts as `dequantize`),
    /// `w8a8` (FP8 resident, activations quantized per token group of 128 as well);
    /// `auto`: `w8a16` on GPUs, `dequantize` on CPUs.
    #[arg(long, default_value = "auto", value_parser = ["auto", "dequantize", "w8a16", "w8a8"])]
    pub fp8_path: String,
}

impl DeviceArgs {
    /// The FP8 path (`None` = the device's default).
    pub fn fp8(&self) -> Option<poc_model::Fp8Path> {
        poc_model::Fp8Path::from_name(&self.fp8_path)
    }
}

/// The model and how to run it.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Model directory (config.json + safetensors).
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "preset",
        conflicts_with = "preset"
    )]
    pub model: Option<PathBuf>,
    /// Instead of a directory: a built-in preset generated in memory, never written (the
    /// same weights `poc model init --preset` writes), e.g. `qwen3-235b-a22b-fp8` with
    /// `--layers 4` to measure real-width layers without a 236 GB checkpoint.
    #[arg(long, value_parser = PRESETS)]
    pub preset: Option<String>,
    /// With `--preset`: the number of decoder layers (default: the preset's).
    #[arg(long, requires = "preset")]
    pub layers: Option<usize>,
    /// Compute dtype; `auto` is the checkpoint's dtype.
    #[arg(long, default_value = "auto", value_parser = ["auto", "bf16", "f16", "f32"])]
    pub dtype: String,
    #[command(flatten)]
    pub device: DeviceArgs,
}

impl ModelArgs {
    /// A name for reports: the directory or `preset:NAME[:LAYERS]`.
    pub fn label(&self) -> String {
        match (&self.model, &self.preset) {
            (Some(m), _) => m.display().to_string(),
            (None, Some(p)) => match self.layers {
                Some(n) => format!("preset:{p}:{n}l"),
                None => format!("preset:{p}"),
            },
            (None, None) => String::new(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ArtifactsCommand {
    /// Compute PoC artifacts with a model, as an ML node does.
    ///
    /// Prints the ML node's shape on stdout: `{"artifacts": [{"nonce", "vector_b64"}],
    /// "encoding": {...}}`, with a progress bar on stderr for long runs. Nonces whose hidden
    /// state is not finite are left out (with a warning).
    Compute(ComputeArgs),
    /// Measure the PoC forward: nonces/s and tokens/s.
    Bench(BenchArgs),
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
pub struct ComputeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub seeds: SeedArgs,
    #[command(flatten)]
    pub nonces: NonceSelection,
    /// Sequence length L.
    #[arg(long)]
    pub seq_len: usize,
    /// Artifact dimensions k.
    #[arg(long, default_value_t = 12)]
    pub k_dim: usize,
    /// Nonces per forward.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Use the stronger (concat-murmur) input generator.
    #[arg(long)]
    pub stronger_rng: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Sequence length L.
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    /// Nonces per forward; a comma-separated list measures each on the same loaded model
    /// (e.g. `8,16,32`).
    #[arg(long, value_delimiter = ',', default_value = "8")]
    pub batch_size: Vec<usize>,
    /// Nonces to compute in each timed run (after one warm-up batch).
    #[arg(long, default_value_t = 32)]
    pub nonces: usize,
    /// Peak dense TFLOPS of one device at the compute precision, for the share-of-peak
    /// figure (default: known for H100/H200, else not reported).
    #[arg(long, value_name = "TFLOPS")]
    pub peak_tflops: Option<f64>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
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
